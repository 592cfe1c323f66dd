//! The per-partition stores and parameters every metric family and the
//! engine share: users, tickets, dedup fingerprints, channel labels, bucket
//! rings, the engine parameters, and the snapshot encoding. Imports nothing
//! above it (no `engine`, no `metrics`).

pub mod chunked;
pub mod codec;
pub mod dedup;
pub mod histogram;
pub mod params;
pub mod queue;
pub mod registry;
pub mod ring;
pub mod tickets;
pub mod users;
