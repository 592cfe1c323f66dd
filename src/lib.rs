//! cxpulse: live customer-experience and customer-acquisition metrics from
//! business events on Kafka.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, defaults, environment overrides, validation,
//!   and the engine parameters built from it (`Config::params`).
//! - [`event`]: the canonical event model, decoding, schema mapping (JSON Pointers).
//! - [`engine`]: the pure core: clock, lateness, dedup, the reorder buffer,
//!   timers, per-partition state (users, tickets and every family's state)
//!   merged at export; snapshots; the pipeline's own series (`engine/pipeline.rs`).
//! - [`metrics`]: one file per metric family of docs/METRICS.md, each with its
//!   update on an applied event, its timers, its snapshot encoding, its
//!   per-partition partial (`merge`, `finish` into series), and its tests in
//!   the folder of the same name:
//!   acquisition (`metrics/acquisition.rs`), retention and churn
//!   (`metrics/retention.rs`), surveys (`metrics/surveys.rs`), support and
//!   SLAs (`metrics/support.rs`); `metrics/scan.rs` is the pass over users
//!   shared by acquisition and retention. Series by series: docs/code-map.md.
//! - [`state`]: what the families and the engine share below both: users,
//!   tickets, dedup, channel labels, bucket rings, [`state::params::Params`],
//!   the snapshot codec. `engine` uses `metrics` uses `state`; never the reverse.
//! - [`checkpoint`]: durable checkpoint files (engine snapshot + offsets), atomic, checksummed.
//! - [`export`]: the series model rendered as Prometheus text and JSON.
//! - [`replay`]: `cxpulse replay`, the engine over NDJSON files.
//! - [`gen`]: `cxpulse gen`, a deterministic generator of exchange traffic.
//! - [`kafka`], [`http`], [`run`], [`demo`], [`telemetry`]: the live service (adapters).
//! - [`web`]: the live page at `/` and its JSON, `/api/series` (docs/live-page.md).
//! - [`web_config`]: TLS and basic auth of the HTTP listener (`--web.config.file`).

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
pub mod web;
pub mod web_config;
