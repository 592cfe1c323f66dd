//! Events of the Kafka clients and the consumer group: librdkafka logs and
//! errors, connectivity, consume errors, rebalances and offset commits.

use std::time::Duration;

use tracing::{debug, error, info, trace, warn};

use super::{RATE_LIMIT, REPEAT_LOG_EVERY, metrics};

/// `topic/partition@offset, ...` for log lines.
pub fn describe(tpl: &rdkafka::TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| match e.offset().to_raw() {
            Some(o) if o >= 0 => format!("{}/{}@{o}", e.topic(), e.partition()),
            _ => format!("{}/{}", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `code` label of an error: librdkafka's error code, or `other`.
fn error_code(e: &rdkafka::error::KafkaError) -> String {
    e.rdkafka_error_code()
        .map_or_else(|| "other".to_string(), |c| format!("{c:?}"))
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

/// Which way partitions moved in a rebalance.
#[derive(Clone, Copy, Debug)]
pub enum PartitionMove {
    /// The group coordinator assigned them to this consumer.
    Assigned,
    /// They were taken away from this consumer (after their final commit).
    Revoked,
    /// The group fenced this consumer and they may be owned elsewhere
    /// already: nothing of theirs was written or committed.
    Lost,
}

/// Partitions were assigned to or revoked from this consumer.
pub struct PartitionsMoved<'a> {
    pub direction: PartitionMove,
    pub partitions: &'a rdkafka::TopicPartitionList,
}

impl PartitionsMoved<'_> {
    pub fn emit(self) {
        let (verb, kind) = match self.direction {
            PartitionMove::Assigned => ("assigned", "assign"),
            PartitionMove::Revoked => ("revoked", "revoke"),
            PartitionMove::Lost => ("lost", "lost"),
        };
        info!(
            partitions = describe(self.partitions),
            count = self.partitions.count(),
            "partitions {verb}"
        );
        metrics().rebalances.with_label_values(&[kind]).inc();
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
        let code = error_code(self.error);
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
        let code = error_code(self.error);
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

/// The librdkafka settings a client is built with (sensitive values
/// already redacted by the caller).
pub struct ClientSettings<'a> {
    pub client: &'static str,
    pub redacted: &'a str,
    /// The consumer's input topics, comma-separated.
    pub topics: Option<&'a str>,
}

impl ClientSettings<'_> {
    pub fn emit(self) {
        info!(
            settings = self.redacted,
            topics = self.topics,
            "{} settings",
            self.client
        );
    }
}

/// The consumer returned an error it cannot recover from: the loop stops
/// and shuts down.
pub struct ConsumerFatal<'a> {
    pub error: &'a rdkafka::error::KafkaError,
}

impl ConsumerFatal<'_> {
    pub fn emit(self) {
        error!(error = %self.error, "fatal consumer error: stopping");
    }
}

/// librdkafka refused positions handed to its offset store (typically a
/// partition revoked meanwhile, whose offsets the revoke callback stored).
pub struct OffsetsNotStored<'a> {
    /// Which positions: "offsets" or "checkpoint offsets".
    pub what: &'static str,
    pub error: &'a rdkafka::error::KafkaError,
    pub offsets: &'a str,
}

impl OffsetsNotStored<'_> {
    pub fn emit(self) {
        debug!(error = %self.error, offsets = self.offsets, "cannot store {}", self.what);
    }
}

/// The rebalance callback could not read the group's committed offsets of
/// newly assigned partitions.
pub struct CommittedOffsetsUnread<'a> {
    /// The partitions were assigned to this process before (checkpoints
    /// off), rather than new to the engine (checkpoints on).
    pub assigned_again: bool,
    pub partitions: &'a str,
    pub error: &'a rdkafka::error::KafkaError,
}

impl CommittedOffsetsUnread<'_> {
    pub fn emit(self) {
        let (error, partitions) = (self.error, self.partitions);
        if self.assigned_again {
            warn!(
                error = %error,
                partitions,
                "cannot read the committed offsets of partitions assigned here again; \
                 they resume where this process left them"
            );
        } else {
            warn!(
                error = %error,
                partitions,
                "cannot read the committed offsets of newly assigned partitions; \
                 checkpoints list them once a message of theirs is taken"
            );
        }
    }
}

/// Assigned partitions start where the engine's state of them ends (a
/// checkpoint, or an earlier assignment here), not at the committed offsets.
pub struct PartitionsResumed<'a> {
    pub offsets: &'a str,
}

impl PartitionsResumed<'_> {
    pub fn emit(self) {
        info!(
            offsets = self.offsets,
            "assigned partitions resume where the engine's state of them ends \
             (checkpoint or earlier assignment here), not at the committed offsets"
        );
    }
}

/// librdkafka refused to apply an assignment or revocation.
pub struct RebalanceNotApplied<'a> {
    pub partitions: &'a str,
    pub error: &'a rdkafka::error::KafkaError,
}

impl RebalanceNotApplied<'_> {
    pub fn emit(self) {
        warn!(error = %self.error, partitions = self.partitions, "applying the rebalance failed");
    }
}

/// The handled positions of partitions being revoked could not be stored
/// before the revoke commit.
pub struct RevokedOffsetsNotStored<'a> {
    pub error: &'a rdkafka::error::KafkaError,
}

impl RevokedOffsetsNotStored<'_> {
    pub fn emit(self) {
        warn!(error = %self.error, "cannot store offsets of revoked partitions");
    }
}

/// librdkafka's echo of a commit (every commit is synchronous and reported
/// by [`CommitCompleted`] where it is made; this is only traced).
pub struct CommitEchoed<'a> {
    pub ok: bool,
    pub offsets: &'a rdkafka::TopicPartitionList,
}

impl CommitEchoed<'_> {
    pub fn emit(self) {
        // `describe` runs only when the line is logged.
        trace!(
            ok = self.ok,
            offsets = describe(self.offsets),
            "commit callback"
        );
    }
}

/// A librdkafka statistics document could not be parsed (it is skipped).
pub struct StatsUnreadable<'a> {
    pub error: &'a serde_json::Error,
}

impl StatsUnreadable<'_> {
    pub fn emit(self) {
        debug!(error = %self.error, "cannot parse librdkafka statistics");
    }
}

/// A broker connection is up but stopped answering, or answers again
/// (from librdkafka statistics; `/readyz` follows it).
pub enum BrokersStalled<'a> {
    /// `brokers`: which ones, with their waiting requests and idle time.
    Stalled {
        brokers: &'a str,
    },
    Answering,
}

impl BrokersStalled<'_> {
    pub fn emit(self) {
        match self {
            BrokersStalled::Stalled { brokers } => warn!(
                brokers,
                "Kafka broker connection up but not answering: not ready until it does \
                 (librdkafka times the requests out after socket.timeout.ms and reconnects)"
            ),
            BrokersStalled::Answering => info!("Kafka brokers answering again"),
        }
    }
}
