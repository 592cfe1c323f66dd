//! The Kafka adapters of the live service (`cxpulse run`, `cxpulse demo`).
//!
//! # Delivery rule
//!
//! An input offset is stored for commit only after the event's effect has
//! been applied to the engine (the engine has taken it: applied, possibly
//! still in its lateness buffer, or counted as a duplicate), and, for an
//! event sent to the dead-letter topic, only after that record was
//! acknowledged. Offsets are committed every `kafka.commit_interval`,
//! synchronously before partitions are revoked, and synchronously at
//! shutdown. So a restart never re-applies a committed event, and an event
//! not yet applied or not yet dead-lettered is consumed again (at least
//! once). Without checkpoints, engine state is in memory: a restart starts
//! from empty state at the committed offsets.
//!
//! A dead-letter record that cannot be delivered (missing topic, record too
//! large, authorization, or `kafka.delivery_attempts` failed attempts) keeps
//! its offset held: by default (`kafka.dead_letter_on_failure = "pause"`)
//! consumption of that partition pauses, `/readyz` fails with the reason, and
//! the record is sent again every `kafka.dead_letter_retry_interval` until
//! it is delivered, when the partition resumes; with `"skip"` it is dropped,
//! counted, and the offset moves on (see [`pipeline`]'s `dead_letters`).
//! Output and alert records have no input offset: one batch of each is in
//! flight at a time ([`outbox`]).
//!
//! # State in Kafka (`checkpoint.store = "kafka"`, the default)
//!
//! Each input partition's engine state is snapshotted with the offset it
//! covers into the state store ([`state_store`]) and moves with the
//! partition when the group rebalances: restored (paused meanwhile) on
//! assignment, a final snapshot on revoke, dropped when lost; offsets are
//! stored only as snapshots covering them are written. See
//! `pipeline::handover` and docs/semantics.md ("Rebalances").
//!
//! # Checkpoints (`checkpoint.store = "dir"`)
//!
//! Every `checkpoint.interval` and at shutdown the loop snapshots the engine
//! with, per partition, the next offset after the last message the engine
//! took, and writes both on a blocking thread ([`crate::checkpoint`]). Only
//! then are those offsets stored and committed (the revoke callback commits
//! nothing of its own). On start the newest good checkpoint is restored, and
//! the rebalance callback starts each partition it lists exactly at its
//! saved offset, over the group's committed offset; partitions it does not
//! list start at the committed offset, which is recorded so that every later
//! checkpoint lists them (falling back to an older checkpoint never skips
//! input). A crash thus neither loses nor repeats an effect.
//!
//! # Modules
//!
//! - [`client`]: librdkafka settings (defaults, passthrough, redaction).
//! - [`context`]: librdkafka callbacks (logs, errors, statistics, rebalances).
//! - [`offsets`]: which offsets may be committed.
//! - [`live`]: connection, assignment and lag, shared with `/readyz`.
//! - [`latency`]: the event-to-metric latency histogram's bookkeeping.
//! - [`publish`]: dead-letter, output and alert records and their delivery.
//! - [`outbox`]: output and alert records waiting, one batch in flight.
//! - [`fleet`]: fleet totals: partials topic, folding duty (docs/fleet.md).
//! - [`state_store`]: each input partition's state in a compacted Kafka
//!   topic (`checkpoint.store = "kafka"`), fenced by ownership epochs.
//! - [`pipeline`]: the consumer loop that owns the engine: a `select!` over
//!   its parts (client building, restore, per-message decision, checkpoints,
//!   commits, shutdown), each in its own file.

pub mod client;
pub mod context;
pub mod fleet;
pub mod latency;
pub mod live;
pub mod offsets;
pub mod outbox;
pub mod pipeline;
pub mod publish;
pub mod state_store;

pub use live::LiveState;
pub use pipeline::{RenderRequest, Rendered, ShutdownReport};
pub use state_store::{Claim, SaveStats, StateStore, StoredSnapshot};
