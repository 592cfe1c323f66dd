//! The pipeline's own series: one process-wide `prometheus` registry and the
//! bucket layout of the event-to-metric histogram. Only the typed events of
//! this module's siblings move them (except the gauges the loop sets).

use std::sync::{LazyLock, Mutex};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use tracing::warn;

use super::Stream;

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
    pub(super) event_to_metric: Mutex<(i64, Histogram)>,
    pub(super) dead_letters: IntCounterVec,
    pub(super) published: IntCounterVec,
    pub(super) delivery_failures: IntCounterVec,
    pub(super) delivery_dropped: IntCounterVec,
    pub(super) dead_letter_paused: IntGauge,
    pub(super) dead_letters_truncated: IntCounter,
    pub(super) fleet_partials_refused: IntCounterVec,
    pub(super) fleet_folder: IntGauge,
    pub(super) fleet_partitions_missing: IntGauge,
    pub(super) fleet_partials_spread_seconds: Gauge,
    /// Records handed to the producer and not yet acknowledged, per stream.
    pub delivery_pending: IntGaugeVec,
    pub(super) delivery_abandoned: IntCounterVec,
    pub(super) commits: IntCounterVec,
    pub(super) rebalances: IntCounterVec,
    /// Partitions currently assigned to this consumer.
    pub assigned_partitions: IntGauge,
    /// 1 while the latest librdkafka statistics show a broker connection up.
    pub kafka_connected: IntGauge,
    pub(super) client_errors: IntCounterVec,
    pub(super) client_logs: IntCounterVec,
    pub(super) consume_errors: IntCounterVec,
    /// Input messages handled by the consumer loop (one add per turn): a
    /// plain atomic, read in-process by the throughput bench.
    pub input_messages: IntCounter,
    /// Turns of the consumer loop by how they were applied (`serial`,
    /// `apart`).
    pub apply_turns: IntCounterVec,
    pub(super) wall_clock_advances: IntCounter,
    /// Events accepted by the engine and waiting for `allowed_lateness`.
    pub pending_events: IntGauge,
    /// Approximate heap bytes of the engine state.
    pub engine_state_bytes: IntGauge,
    /// Series values that came out NaN or infinite at export and were left
    /// absent (`export::non_finite_dropped`); 0 unless something is wrong.
    pub engine_non_finite_values: IntCounter,
    pub(super) checkpoints: IntCounter,
    pub(super) checkpoint_failures: IntCounter,
    pub(super) checkpoint_bytes: IntGauge,
    pub(super) checkpoint_write_seconds: Histogram,
    /// Assigned partitions whose state is being restored (not consumed,
    /// not exported meanwhile).
    pub state_restoring: IntGauge,
    pub(super) state_restore_seconds: Histogram,
    pub(super) state_restore_bytes: IntCounter,
    pub(super) state_saves: IntCounterVec,
    pub(super) state_refused: IntCounter,
    /// 1 for every input partition whose state this process holds and
    /// exports.
    pub partition_owned: IntGaugeVec,
}

impl PipelineMetrics {
    fn new() -> PipelineMetrics {
        let registry = Registry::new();
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let gauge = |name: &str, help: &str| register(&registry, IntGauge::new(name, help));
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let counter = |name: &str, help: &str| register(&registry, IntCounter::new(name, help));
        let checkpoint_write_seconds = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "cxpulse_checkpoint_write_seconds",
                    "Time to write one checkpoint file (encode, write, fsync, rename), off the consumer loop.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ]),
            ),
        );
        let state_restore_seconds = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "cxpulse_state_restore_seconds",
                    "Time from a partition's assignment to its state being restored from the state store (load and restore).",
                )
                .buckets(vec![
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                ]),
            ),
        );
        let event_to_metric = register(&registry, Ok(latency_histogram(30_000)));
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
                "Failed delivery attempts, by stream and reason (unknown_topic, too_large, authorization, invalid, timeout, other).",
                &["stream", "reason"],
            ),
            delivery_dropped: counter_vec(
                "cxpulse_delivery_dropped_total",
                "Records given up without delivery before shutdown, by stream and reason (dead letters only with kafka.dead_letter_on_failure = skip).",
                &["stream", "reason"],
            ),
            dead_letters_truncated: counter(
                "cxpulse_delivery_truncated_total",
                "Dead-letter records whose value was truncated to fit the record size limit (header cxpulse.truncated).",
            ),
            fleet_partials_refused: counter_vec(
                "cxpulse_fleet_partials_refused_total",
                "Records on the partials topic skipped because they are not a readable partial, by reason (bad_key, unknown_topic, bad_magic, bad_version, truncated, undecodable, stale_epoch: written with an older ownership epoch than the partial kept, by an instance that lost the partition).",
                &["reason"],
            ),
            fleet_folder: gauge(
                "cxpulse_fleet_folder",
                "1 while this instance publishes the fleet totals on the output topic (it owns input partition 0).",
            ),
            fleet_partitions_missing: gauge(
                "cxpulse_fleet_partitions_missing",
                "On the folder: input partitions without a partial at the last publish interval (totals are held back while > 0).",
            ),
            fleet_partials_spread_seconds: register(
                &registry,
                Gauge::new(
                    "cxpulse_fleet_partials_spread_seconds",
                    "On the folder: newest minus oldest T of the partials in the last totals published.",
                ),
            ),
            dead_letter_paused: gauge(
                "cxpulse_delivery_paused_partitions",
                "Input partitions whose consumption is paused because a dead-letter record of theirs cannot be delivered.",
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
                "Consumer group rebalances seen, by kind (assign, revoke, lost, error).",
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
            input_messages: counter(
                "cxpulse_input_messages_total",
                "Input messages handled by the consumer loop: applied, duplicate, invalid, late, dead-lettered, or ignored while their partition's state is restored (not those of a partition revoked during the turn, which its next owner consumes).",
            ),
            apply_turns: counter_vec(
                "cxpulse_apply_turns_total",
                "Turns of the consumer loop (each up to 2048 ready messages), by path: serial (applied in order on the loop thread) or apart (each partition's messages on a thread of its own).",
                &["path"],
            ),
            wall_clock_advances: counter(
                "cxpulse_clock_wall_advances_total",
                "Times T was moved to the wall clock because the consumer was idle and caught up.",
            ),
            pending_events: gauge(
                "cxpulse_pending_events",
                "Events accepted by the engine and waiting for allowed_lateness before they are applied.",
            ),
            engine_state_bytes: gauge(
                "cxpulse_engine_state_bytes",
                "Approximate heap bytes of the engine state.",
            ),
            engine_non_finite_values: counter(
                "cxpulse_engine_non_finite_values_total",
                "Series values that came out NaN or infinite at export and were left absent instead of rendered (0 unless something is wrong).",
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
            state_restoring: gauge(
                "cxpulse_state_restoring_partitions",
                "Assigned partitions whose state is being restored from the state store (paused, not exported).",
            ),
            state_restore_seconds,
            state_restore_bytes: counter(
                "cxpulse_state_restore_bytes_total",
                "Bytes read from the state store to restore assigned partitions.",
            ),
            state_saves: counter_vec(
                "cxpulse_state_saves_total",
                "Partition state snapshots written to the state store, by result (ok, error, timeout).",
                &["result"],
            ),
            state_refused: counter(
                "cxpulse_state_refused_total",
                "State store records or snapshots skipped while restoring (bad record, incomplete or corrupt snapshot, refused by the engine).",
            ),
            partition_owned: gauge_vec(
                "cxpulse_partition_owned",
                "1 for every input partition whose state this process holds and exports.",
                &["topic", "partition"],
            ),
            registry,
        };
        // Series that exist from the start, so dashboards see zeros, not gaps.
        for s in Stream::ALL {
            m.published.with_label_values(&[s.as_str()]);
            for r in super::FailureReason::ALL {
                m.delivery_failures
                    .with_label_values(&[s.as_str(), r.as_str()]);
            }
            m.delivery_pending.with_label_values(&[s.as_str()]);
        }
        for r in [
            "bad_key",
            "unknown_topic",
            "bad_magic",
            "bad_version",
            "truncated",
            "undecodable",
            "stale_epoch",
        ] {
            m.fleet_partials_refused.with_label_values(&[r]);
        }
        for r in ["ok", "error"] {
            m.commits.with_label_values(&["periodic", r]);
        }
        for p in super::TurnHandled::PATHS {
            m.apply_turns.with_label_values(&[p]);
        }
        for r in super::SaveResult::LABELS {
            m.state_saves.with_label_values(&[r]);
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

    /// Every pipeline metric as samples (see [`samples`]).
    pub fn samples(&self) -> Vec<crate::export::Sample> {
        samples(&self.registry.gather())
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

/// The pipeline metrics as samples of the export model (for `/api/series`):
/// counters and gauges by their value, histograms and summaries by their
/// `_sum` and `_count` (no buckets); non-finite values are left out.
pub fn samples(families: &[prometheus::proto::MetricFamily]) -> Vec<crate::export::Sample> {
    use prometheus::proto::MetricType;
    let mut out = Vec::new();
    for mf in families {
        let name = mf.name();
        for m in mf.get_metric() {
            let labels: Vec<(String, String)> = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            let mut push = |name: String, value: f64| {
                if value.is_finite() {
                    out.push(crate::export::Sample {
                        name,
                        labels: labels.clone(),
                        value,
                    });
                }
            };
            match mf.get_field_type() {
                MetricType::COUNTER => push(name.to_string(), m.get_counter().value()),
                MetricType::GAUGE => push(name.to_string(), m.get_gauge().value()),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    push(format!("{name}_sum"), h.get_sample_sum());
                    push(format!("{name}_count"), h.get_sample_count() as f64);
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    push(format!("{name}_sum"), s.sample_sum());
                    push(format!("{name}_count"), s.sample_count() as f64);
                }
                MetricType::UNTYPED => {}
            }
        }
    }
    out
}

/// Registers a newly made metric in `registry` and returns it. Both steps
/// fail only on a programming error (a bad name, a name used twice).
fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    made: prometheus::Result<C>,
) -> C {
    let c = made.expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
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
