//! cxpulse: live customer-experience and customer-acquisition metrics from
//! business events on Kafka.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, defaults, environment overrides, validation.
//! - [`event`]: the canonical event model, decoding, schema mapping (JSON Pointers).
//! - [`engine`]: the pure core: clock, lateness, dedup, buckets and windows,
//!   timers, per-user and per-ticket state, per-partition state merged at export.
//! - [`checkpoint`]: durable checkpoint files (engine snapshot + offsets), atomic, checksummed.
//! - [`export`]: the series model rendered as Prometheus text and JSON.
//! - [`replay`]: `cxpulse replay`, the engine over NDJSON files.
//! - [`gen`]: `cxpulse gen`, a deterministic generator of exchange traffic.
//! - [`kafka`], [`http`], [`run`], [`demo`], [`telemetry`]: the live service (adapters).

pub mod checkpoint;
pub mod config;
pub mod demo;
pub mod engine;
pub mod event;
pub mod export;
pub mod r#gen;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod replay;
pub mod run;
pub mod state;
pub mod telemetry;
