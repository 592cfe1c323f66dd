//! Logging setup and the live service's own instrumentation.
//!
//! Every internal event the live service reports is a small struct whose
//! `emit()` writes one log line and moves its metric (if it has one), so
//! every pipeline metric name and label lives in this module (the engine's
//! own series, such as `cxpulse_events_total`, come from
//! [`crate::engine::Engine::families`]). The events are grouped by what
//! reports them:
//!
//! - [`metrics`](mod@metrics): the [`PipelineMetrics`] registry and its series.
//! - [`kafka`]: librdkafka clients, the consumer group and offset commits.
//! - [`delivery`]: dead-letter, output and alert records.
//! - [`fleet`]: fleet totals (partials topic, folding duty).
//! - [`checkpoint`]: checkpoint writes and restores.
//! - [`pipeline`]: the consumer loop's own moments (start, clock, shutdown).
//! - [`state`](mod@state): partition state moving through the state store.
//!
//! The pipeline metrics live in one process-wide [`PipelineMetrics`]
//! (a `prometheus` registry): a process runs one pipeline, and a global lets
//! librdkafka callbacks, delivery tasks and the consumer loop report without
//! threading a handle through each of them.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

pub mod checkpoint;
pub mod delivery;
pub mod fleet;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod state;

pub use checkpoint::*;
pub use delivery::*;
pub use fleet::*;
pub use kafka::*;
pub use metrics::{PipelineMetrics, latency_buckets, metrics};
pub use pipeline::*;
pub use state::*;

/// Sets up `tracing` on standard error. `RUST_LOG` filters (default `info`);
/// `CXPULSE_LOG_FORMAT=json` switches to one JSON object per line.
/// Calling it twice is harmless (the second call does nothing).
pub fn init_tracing() {
    init_tracing_with_default("info");
}

/// [`init_tracing`] with another filter when `RUST_LOG` is not set.
pub fn init_tracing_with_default(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("CXPULSE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Keeps repeated warnings (a broker that stays down, a topic that stays
/// missing) to one line per key per interval; their counters still count each.
struct RateLimit {
    last: Mutex<HashMap<String, Instant>>,
}

impl RateLimit {
    fn allow(&self, key: &str, every: Duration) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return true;
        };
        let now = Instant::now();
        match last.get(key) {
            Some(t) if now.duration_since(*t) < every => false,
            _ => {
                last.insert(key.to_string(), now);
                true
            }
        }
    }
}

static RATE_LIMIT: LazyLock<RateLimit> = LazyLock::new(|| RateLimit {
    last: Mutex::new(HashMap::new()),
});

/// How often one repeated client error or consume error is logged.
const REPEAT_LOG_EVERY: Duration = Duration::from_secs(30);
