//! Logging setup and the live service's own instrumentation.
//!
//! Every internal event the live service reports is a small struct here whose
//! `emit()` writes one log line and moves one metric, so every pipeline metric
//! name and label lives in this one file (the engine's own series, such as
//! `cxpulse_events_total`, come from [`crate::engine::Engine::families`]).
//!
//! The pipeline metrics live in one process-wide [`PipelineMetrics`]
//! (a `prometheus` registry): a process runs one pipeline, and a global lets
//! librdkafka callbacks, delivery tasks and the consumer loop report without
//! threading a handle through each of them.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tracing::{debug, error, info, trace, warn};
use tracing_subscriber::EnvFilter;

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

/// Bucket bounds of `cxpulse_event_to_metric_seconds`, in seconds: a
/// general ladder plus a fine one just above `allowed_lateness`, because an
/// event's effect becomes visible only once T has passed its time by the
/// lateness, so that is where the values sit.
pub fn latency_buckets(allowed_lateness_ms: i64) -> Vec<f64> {
    const LADDER: &[f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        120.0, 300.0, 600.0,
    ];
    const ABOVE_LATENESS: &[f64] = &[
        0.0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
    ];
    let l = allowed_lateness_ms.max(0) as f64 / 1000.0;
    let mut b: Vec<f64> = LADDER.to_vec();
    if l > 0.0 {
        b.extend(ABOVE_LATENESS.iter().map(|d| l + d));
    }
    b.sort_by(f64::total_cmp);
    b.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    b
}

/// The pipeline's own series (METRICS.md, "The pipeline itself"), apart from
/// those the engine exports.
pub struct PipelineMetrics {
    registry: Registry,
    /// Messages not yet handed to the consumer loop, per assigned partition,
    /// from librdkafka statistics.
    pub consumer_lag: IntGaugeVec,
    /// Kafka append time of an applied event to the moment its effect is
    /// visible at `/metrics` (released from the engine's reorder buffer).
    /// Its buckets depend on the lateness: see [`PipelineMetrics::latency_histogram`].
    event_to_metric: Mutex<(i64, Histogram)>,
    dead_letters: IntCounterVec,
    published: IntCounterVec,
    delivery_failures: IntCounterVec,
    /// Records handed to the producer and not yet acknowledged, per stream.
    pub delivery_pending: IntGaugeVec,
    delivery_abandoned: IntCounterVec,
    commits: IntCounterVec,
    rebalances: IntCounterVec,
    /// Partitions currently assigned to this consumer.
    pub assigned_partitions: IntGauge,
    /// 1 while the latest librdkafka statistics show a broker connection up.
    pub kafka_connected: IntGauge,
    client_errors: IntCounterVec,
    client_logs: IntCounterVec,
    consume_errors: IntCounterVec,
    wall_clock_advances: IntCounter,
    /// Events accepted by the engine and waiting for `allowed_lateness`.
    pub pending_events: IntGauge,
    /// Approximate heap bytes of the engine state.
    pub engine_state_bytes: IntGauge,
    checkpoints: IntCounter,
    checkpoint_failures: IntCounter,
    checkpoint_bytes: IntGauge,
    checkpoint_write_seconds: Histogram,
}

impl PipelineMetrics {
    fn new() -> PipelineMetrics {
        let registry = Registry::new();
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let checkpoint_write_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "cxpulse_checkpoint_write_seconds",
                "Time to write one checkpoint file (encode, write, fsync, rename), off the consumer loop.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(checkpoint_write_seconds.clone()))
            .expect("unique metric");
        let event_to_metric = latency_histogram(30_000);
        registry
            .register(Box::new(event_to_metric.clone()))
            .expect("unique metric");
        let m = PipelineMetrics {
            consumer_lag: gauge_vec(
                "cxpulse_consumer_lag",
                "Messages on the broker not yet handed to cxpulse, per assigned partition (librdkafka statistics).",
                &["topic", "partition"],
            ),
            event_to_metric: Mutex::new((30_000, event_to_metric)),
            dead_letters: counter_vec(
                "cxpulse_dead_letter_records_total",
                "Records acknowledged on the dead-letter topic, by reason.",
                &["reason"],
            ),
            published: counter_vec(
                "cxpulse_published_records_total",
                "Records acknowledged by the broker, by stream (output, alerts, dead_letter).",
                &["stream"],
            ),
            delivery_failures: counter_vec(
                "cxpulse_delivery_failures_total",
                "Failed delivery attempts (each is retried), by stream.",
                &["stream"],
            ),
            delivery_pending: gauge_vec(
                "cxpulse_delivery_pending",
                "Records handed to the producer and not yet acknowledged, by stream.",
                &["stream"],
            ),
            delivery_abandoned: counter_vec(
                "cxpulse_delivery_abandoned_total",
                "Records still undelivered when the shutdown deadline passed, by stream.",
                &["stream"],
            ),
            commits: counter_vec(
                "cxpulse_offset_commits_total",
                "Offset commits by trigger (periodic, revoke, shutdown) and result (ok, noop, error).",
                &["trigger", "result"],
            ),
            rebalances: counter_vec(
                "cxpulse_rebalances_total",
                "Consumer group rebalances seen, by kind (assign, revoke, error).",
                &["kind"],
            ),
            assigned_partitions: gauge(
                "cxpulse_assigned_partitions",
                "Partitions currently assigned to this consumer.",
            ),
            kafka_connected: gauge(
                "cxpulse_kafka_connected",
                "1 while the latest librdkafka statistics show a broker connection up.",
            ),
            client_errors: counter_vec(
                "cxpulse_kafka_client_errors_total",
                "Errors reported by librdkafka clients, by client and error code.",
                &["client", "code"],
            ),
            client_logs: counter_vec(
                "cxpulse_kafka_client_log_messages_total",
                "librdkafka log messages, by level.",
                &["level"],
            ),
            consume_errors: counter_vec(
                "cxpulse_consume_errors_total",
                "Errors returned by the consumer instead of a message, by error code.",
                &["code"],
            ),
            wall_clock_advances: {
                let c = IntCounter::new(
                    "cxpulse_clock_wall_advances_total",
                    "Times T was moved to the wall clock because the consumer was idle and caught up.",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(c.clone()))
                    .expect("unique metric");
                c
            },
            pending_events: gauge(
                "cxpulse_pending_events",
                "Events accepted by the engine and waiting for allowed_lateness before they are applied.",
            ),
            engine_state_bytes: gauge(
                "cxpulse_engine_state_bytes",
                "Approximate heap bytes of the engine state.",
            ),
            checkpoints: counter(
                "cxpulse_checkpoints_total",
                "Checkpoint files written (engine snapshot plus input offsets).",
            ),
            checkpoint_failures: counter(
                "cxpulse_checkpoint_failures_total",
                "Checkpoint writes that failed (unwritable directory, full disk, ...); processing continues.",
            ),
            checkpoint_bytes: gauge(
                "cxpulse_checkpoint_bytes",
                "Size of the last checkpoint file written.",
            ),
            checkpoint_write_seconds,
            registry,
        };
        // Series that exist from the start, so dashboards see zeros, not gaps.
        for s in Stream::ALL {
            m.published.with_label_values(&[s.as_str()]);
            m.delivery_failures.with_label_values(&[s.as_str()]);
            m.delivery_pending.with_label_values(&[s.as_str()]);
        }
        for r in ["ok", "error"] {
            m.commits.with_label_values(&["periodic", r]);
        }
        m
    }

    /// The event-to-metric histogram, with buckets for `allowed_lateness_ms`
    /// (re-registered when the lateness differs from the last call's).
    pub fn latency_histogram(&self, allowed_lateness_ms: i64) -> Histogram {
        let mut h = self
            .event_to_metric
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if h.0 != allowed_lateness_ms {
            let new = latency_histogram(allowed_lateness_ms);
            let _ = self.registry.unregister(Box::new(h.1.clone()));
            if self.registry.register(Box::new(new.clone())).is_ok() {
                *h = (allowed_lateness_ms, new);
            }
        }
        h.1.clone()
    }

    /// The Prometheus text exposition of every pipeline metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            warn!(error = %e, "cannot encode pipeline metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn latency_histogram(allowed_lateness_ms: i64) -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(
            "cxpulse_event_to_metric_seconds",
            "Kafka append time of an applied event to the moment its effect is visible at /metrics.",
        )
        .buckets(latency_buckets(allowed_lateness_ms)),
    )
    .expect("valid metric")
}

static METRICS: LazyLock<PipelineMetrics> = LazyLock::new(PipelineMetrics::new);

/// The process-wide pipeline metrics.
pub fn metrics() -> &'static PipelineMetrics {
    &METRICS
}

/// Where a produced record goes; the `stream` label of the delivery metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    DeadLetter,
    Output,
    Alerts,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::DeadLetter, Stream::Output, Stream::Alerts];
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::DeadLetter => "dead_letter",
            Stream::Output => "output",
            Stream::Alerts => "alerts",
        }
    }
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

// ---------------------------------------------------------------------------
// Typed events.
// ---------------------------------------------------------------------------

/// An invalid or late event's record was acknowledged by the dead-letter topic.
pub struct DeadLettered<'a> {
    pub reason: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl DeadLettered<'_> {
    pub fn emit(self) {
        debug!(
            reason = self.reason,
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            "event dead-lettered"
        );
        metrics()
            .dead_letters
            .with_label_values(&[self.reason])
            .inc();
    }
}

/// One record was acknowledged by the broker.
pub struct RecordPublished {
    pub stream: Stream,
}

impl RecordPublished {
    pub fn emit(self) {
        trace!(stream = self.stream.as_str(), "record delivered");
        metrics()
            .published
            .with_label_values(&[self.stream.as_str()])
            .inc();
    }
}

/// A delivery attempt failed; the record will be sent again.
pub struct DeliveryFailed<'a> {
    pub stream: Stream,
    pub topic: &'a str,
    pub error: &'a rdkafka::error::KafkaError,
    pub retry_in: Duration,
}

impl DeliveryFailed<'_> {
    pub fn emit(self) {
        let key = format!("delivery:{}:{}", self.stream.as_str(), self.topic);
        if RATE_LIMIT.allow(&key, Duration::from_secs(5)) {
            warn!(
                stream = self.stream.as_str(),
                topic = self.topic,
                error = %self.error,
                retry_in_ms = self.retry_in.as_millis() as u64,
                "delivery failed; retrying"
            );
        }
        metrics()
            .delivery_failures
            .with_label_values(&[self.stream.as_str()])
            .inc();
    }
}

/// Records still undelivered at the shutdown deadline: they are lost, and said so.
pub struct DeliveryAbandoned {
    pub stream: Stream,
    pub records: u64,
}

impl DeliveryAbandoned {
    pub fn emit(self) {
        error!(
            stream = self.stream.as_str(),
            records = self.records,
            "records still undelivered at the shutdown deadline were abandoned"
        );
        metrics()
            .delivery_abandoned
            .with_label_values(&[self.stream.as_str()])
            .inc_by(self.records);
    }
}

/// Why an offset commit was requested.
#[derive(Clone, Copy, Debug)]
pub enum CommitTrigger {
    Periodic,
    Revoke,
    Shutdown,
}

impl CommitTrigger {
    fn as_str(self) -> &'static str {
        match self {
            CommitTrigger::Periodic => "periodic",
            CommitTrigger::Revoke => "revoke",
            CommitTrigger::Shutdown => "shutdown",
        }
    }
}

/// What a commit came to.
pub enum CommitResult<'a> {
    /// Committed; the positions stored since the previous commit, as text.
    Ok(&'a str),
    /// Nothing new to commit.
    Noop,
    Error(&'a rdkafka::error::KafkaError),
}

/// A synchronous offset commit returned. (Periodic commits run on a
/// blocking thread, revoke commits in the rebalance callback, the final one
/// at shutdown: every result is seen here, once.)
pub struct CommitCompleted<'a> {
    pub trigger: CommitTrigger,
    pub result: CommitResult<'a>,
}

impl CommitCompleted<'_> {
    pub fn emit(self) {
        let trigger = self.trigger.as_str();
        let label = match self.result {
            CommitResult::Ok(offsets) => {
                match self.trigger {
                    CommitTrigger::Periodic => debug!(trigger, offsets, "offsets committed"),
                    _ => info!(trigger, offsets, "offsets committed"),
                }
                "ok"
            }
            CommitResult::Noop => {
                debug!(trigger, "offset commit: nothing new to commit");
                "noop"
            }
            CommitResult::Error(e) => {
                warn!(trigger, error = %e, "offset commit failed");
                "error"
            }
        };
        metrics().commits.with_label_values(&[trigger, label]).inc();
    }
}

/// The group coordinator assigned partitions to this consumer.
pub struct PartitionsAssigned<'a> {
    pub partitions: &'a str,
    pub count: usize,
}

impl PartitionsAssigned<'_> {
    pub fn emit(self) {
        info!(
            partitions = self.partitions,
            count = self.count,
            "partitions assigned"
        );
        metrics().rebalances.with_label_values(&["assign"]).inc();
    }
}

/// Partitions were taken away from this consumer (after their final commit).
pub struct PartitionsRevoked<'a> {
    pub partitions: &'a str,
    pub count: usize,
}

impl PartitionsRevoked<'_> {
    pub fn emit(self) {
        info!(
            partitions = self.partitions,
            count = self.count,
            "partitions revoked"
        );
        metrics().rebalances.with_label_values(&["revoke"]).inc();
    }
}

/// A rebalance failed.
pub struct RebalanceFailed<'a> {
    pub error: &'a rdkafka::error::KafkaError,
}

impl RebalanceFailed<'_> {
    pub fn emit(self) {
        warn!(error = %self.error, "consumer group rebalance failed");
        metrics().rebalances.with_label_values(&["error"]).inc();
    }
}

/// An error reported by a librdkafka client through its error callback
/// (a broker that is down, authentication failures, ...). librdkafka keeps
/// retrying with backoff (`reconnect.backoff.ms` .. `reconnect.backoff.max.ms`).
pub struct KafkaClientError<'a> {
    pub client: &'static str,
    pub brokers: &'a str,
    pub error: &'a rdkafka::error::KafkaError,
    pub reason: &'a str,
}

impl KafkaClientError<'_> {
    pub fn emit(self) {
        let code = self
            .error
            .rdkafka_error_code()
            .map_or_else(|| "other".to_string(), |c| format!("{c:?}"));
        let key = format!("client:{}:{code}", self.client);
        if RATE_LIMIT.allow(&key, REPEAT_LOG_EVERY) {
            warn!(
                client = self.client,
                brokers = self.brokers,
                code = code.as_str(),
                reason = self.reason,
                "Kafka client error; librdkafka retries with backoff (repeats of this error are logged at most every 30s)"
            );
        }
        metrics()
            .client_errors
            .with_label_values(&[self.client, &code])
            .inc();
    }
}

/// A checkpoint file was written.
pub struct CheckpointWritten<'a> {
    pub path: &'a std::path::Path,
    pub bytes: usize,
    /// Snapshot time in the consumer loop.
    pub snapshot: Duration,
    /// Write time on the blocking thread.
    pub write: Duration,
    pub offsets: &'a str,
}

impl CheckpointWritten<'_> {
    pub fn emit(self) {
        info!(
            path = %self.path.display(),
            bytes = self.bytes,
            snapshot_ms = self.snapshot.as_secs_f64() * 1e3,
            write_ms = self.write.as_secs_f64() * 1e3,
            offsets = self.offsets,
            "checkpoint written"
        );
        let m = metrics();
        m.checkpoints.inc();
        m.checkpoint_bytes.set(self.bytes as i64);
        m.checkpoint_write_seconds.observe(self.write.as_secs_f64());
    }
}

/// A checkpoint could not be written; processing continues and the next
/// interval tries again.
pub struct CheckpointFailed<'a> {
    pub dir: &'a std::path::Path,
    pub error: &'a dyn std::fmt::Display,
}

impl CheckpointFailed<'_> {
    pub fn emit(self) {
        tracing::error!(
            dir = %self.dir.display(),
            error = %self.error,
            "checkpoint write failed; processing continues, the next interval tries again"
        );
        metrics().checkpoint_failures.inc();
    }
}

/// A log line from librdkafka itself.
pub struct ClientLog<'a> {
    pub client: &'static str,
    pub level: rdkafka::config::RDKafkaLogLevel,
    pub facility: &'a str,
    pub message: &'a str,
}

impl ClientLog<'_> {
    pub fn emit(self) {
        use rdkafka::config::RDKafkaLogLevel as L;
        let (c, f, m) = (self.client, self.facility, self.message);
        let label = match self.level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                warn!(target: "librdkafka", client = c, facility = f, "{m}");
                "error"
            }
            L::Warning => {
                warn!(target: "librdkafka", client = c, facility = f, "{m}");
                "warning"
            }
            L::Notice | L::Info => {
                info!(target: "librdkafka", client = c, facility = f, "{m}");
                "info"
            }
            L::Debug => {
                debug!(target: "librdkafka", client = c, facility = f, "{m}");
                "debug"
            }
        };
        metrics().client_logs.with_label_values(&[label]).inc();
    }
}

/// The consumer returned an error instead of a message.
pub struct ConsumeError<'a> {
    pub error: &'a rdkafka::error::KafkaError,
    /// Pause before the next receive (zero but after a long run of errors).
    pub backoff: Duration,
}

impl ConsumeError<'_> {
    pub fn emit(self) {
        let code = self
            .error
            .rdkafka_error_code()
            .map_or_else(|| "other".to_string(), |c| format!("{c:?}"));
        // The same errors reach the client error callback, which warns
        // (rate-limited); here they are only counted and logged at debug.
        debug!(
            error = %self.error,
            pause_ms = self.backoff.as_millis() as u64,
            "consumer returned an error; continuing"
        );
        metrics().consume_errors.with_label_values(&[&code]).inc();
    }
}

/// Broker connectivity changed, as seen in librdkafka statistics.
pub struct BrokerConnectivity<'a> {
    pub connected: bool,
    pub brokers: &'a str,
}

impl BrokerConnectivity<'_> {
    pub fn emit(self) {
        if self.connected {
            info!(brokers = self.brokers, "connected to Kafka");
        } else {
            warn!(
                brokers = self.brokers,
                "no Kafka broker connection is up; librdkafka reconnects with backoff, consumption resumes when one is"
            );
        }
        metrics().kafka_connected.set(i64::from(self.connected));
    }
}

/// T was moved to the wall clock: no backlog and nothing arrived for `idle_timeout`.
pub struct ClockFollowedWall {
    pub from: Option<i64>,
    pub to: i64,
}

impl ClockFollowedWall {
    pub fn emit(self) {
        trace!(
            from = self.from,
            to = self.to,
            "clock follows the wall clock"
        );
        metrics().wall_clock_advances.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_fine_just_above_the_lateness() {
        let b = latency_buckets(30_000);
        assert!(
            b.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates: {b:?}"
        );
        for want in [0.001, 1.0, 30.0, 30.1, 30.5, 31.0, 600.0] {
            assert!(
                b.iter().any(|x| (x - want).abs() < 1e-9),
                "{want} missing: {b:?}"
            );
        }
        assert_eq!(latency_buckets(0).len(), 18);
    }
}
