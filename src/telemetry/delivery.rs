//! Events of the produced streams: dead-letter, output and alert records.

use std::time::Duration;

use tracing::{debug, error, info, trace, warn};

use super::{RATE_LIMIT, metrics};

/// Where a produced record goes; the `stream` label of the delivery metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    DeadLetter,
    Output,
    Alerts,
    /// Partition partials on the internal partials topic (fleet totals).
    Partials,
}

impl Stream {
    pub const ALL: [Stream; 4] = [
        Stream::DeadLetter,
        Stream::Output,
        Stream::Alerts,
        Stream::Partials,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::DeadLetter => "dead_letter",
            Stream::Output => "output",
            Stream::Alerts => "alerts",
            Stream::Partials => "partials",
        }
    }
}

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

/// Why a record was not delivered: the `reason` label of the delivery
/// failure metrics. Permanent reasons are not retried by librdkafka and do not
/// heal by waiting alone (an operator creates the topic, grants the ACL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureReason {
    /// The topic or partition does not exist.
    UnknownTopic,
    /// The record is larger than the producer's `message.max.bytes` or the
    /// broker's limit.
    TooLarge,
    /// Topic or cluster authorization, or authentication, failed.
    Authorization,
    /// The broker refused the record itself (invalid record, invalid topic).
    Invalid,
    /// Not acknowledged in time (`message.timeout.ms`, broker down).
    Timeout,
    /// Dropped before any attempt: too many records already waiting.
    QueueFull,
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 7] = [
        FailureReason::UnknownTopic,
        FailureReason::TooLarge,
        FailureReason::Authorization,
        FailureReason::Invalid,
        FailureReason::Timeout,
        FailureReason::QueueFull,
        FailureReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::UnknownTopic => "unknown_topic",
            FailureReason::TooLarge => "too_large",
            FailureReason::Authorization => "authorization",
            FailureReason::Invalid => "invalid",
            FailureReason::Timeout => "timeout",
            FailureReason::QueueFull => "queue_full",
            FailureReason::Other => "other",
        }
    }

    /// Sending the same record again cannot succeed until someone acts.
    pub fn is_permanent(self) -> bool {
        !matches!(
            self,
            FailureReason::Timeout | FailureReason::QueueFull | FailureReason::Other
        )
    }

    /// Sending the same record again can never succeed.
    pub fn is_hopeless(self) -> bool {
        matches!(self, FailureReason::TooLarge | FailureReason::Invalid)
    }

    /// The reason of a producer error.
    pub fn of(e: &rdkafka::error::KafkaError) -> FailureReason {
        use rdkafka::error::RDKafkaErrorCode as C;
        match e.rdkafka_error_code() {
            Some(
                C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::UnknownPartition
                | C::UnknownTopicId,
            ) => FailureReason::UnknownTopic,
            Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize) => {
                FailureReason::TooLarge
            }
            Some(
                C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
                | C::Authentication
                | C::SaslAuthenticationFailed,
            ) => FailureReason::Authorization,
            Some(C::InvalidRecord | C::InvalidMessage | C::InvalidTopic) => FailureReason::Invalid,
            Some(
                C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut | C::TimedOutQueue,
            ) => FailureReason::Timeout,
            _ => FailureReason::Other,
        }
    }
}

/// A delivery attempt failed (what happens next is the caller's: another
/// attempt, a paused partition, a dropped record).
pub struct DeliveryFailed<'a> {
    pub stream: Stream,
    pub topic: &'a str,
    pub reason: FailureReason,
    pub error: &'a rdkafka::error::KafkaError,
}

impl DeliveryFailed<'_> {
    pub fn emit(self) {
        let key = format!(
            "delivery:{}:{}:{}",
            self.stream.as_str(),
            self.topic,
            self.reason.as_str()
        );
        if RATE_LIMIT.allow(&key, Duration::from_secs(5)) {
            warn!(
                stream = self.stream.as_str(),
                topic = self.topic,
                reason = self.reason.as_str(),
                permanent = self.reason.is_permanent(),
                error = %self.error,
                "delivery failed (repeats logged at most every 5s)"
            );
        }
        metrics()
            .delivery_failures
            .with_label_values(&[self.stream.as_str(), self.reason.as_str()])
            .inc();
    }
}

/// Records given up without being delivered (not at shutdown): dead letters
/// under `kafka.dead_letter_on_failure = "skip"` (their input offsets move
/// on), alerts after `kafka.delivery_attempts` or a hopeless error, output
/// records too large to ever be accepted.
pub struct DeliveryDropped<'a> {
    pub stream: Stream,
    pub topic: &'a str,
    pub reason: FailureReason,
    pub records: u64,
    /// For a skipped dead letter: where the input message was.
    pub source: Option<(&'a str, i32, i64)>,
}

impl DeliveryDropped<'_> {
    pub fn emit(self) {
        let (st, sp, so) = self.source.unwrap_or(("", -1, -1));
        let key = format!("dropped:{}:{}", self.stream.as_str(), self.reason.as_str());
        if RATE_LIMIT.allow(&key, Duration::from_secs(1)) {
            error!(
                stream = self.stream.as_str(),
                topic = self.topic,
                reason = self.reason.as_str(),
                records = self.records,
                source_topic = st,
                source_partition = sp,
                source_offset = so,
                "records given up without delivery (repeats logged at most every 1s; all counted)"
            );
        }
        metrics()
            .delivery_dropped
            .with_label_values(&[self.stream.as_str(), self.reason.as_str()])
            .inc_by(self.records);
    }
}

/// Consumption of an input partition paused (`kafka.dead_letter_on_failure =
/// "pause"`): a dead-letter record of it cannot be delivered; or resumed.
pub enum PartitionDeliveryPause<'a> {
    Paused {
        topic: &'a str,
        partition: i32,
        offset: i64,
        dead_letter_topic: &'a str,
        reason: FailureReason,
        retry_every: Duration,
    },
    Resumed {
        topic: &'a str,
        partition: i32,
    },
}

impl PartitionDeliveryPause<'_> {
    pub fn emit(self, paused_now: usize) {
        match self {
            PartitionDeliveryPause::Paused {
                topic,
                partition,
                offset,
                dead_letter_topic,
                reason,
                retry_every,
            } => error!(
                topic,
                partition,
                offset,
                dead_letter_topic,
                reason = reason.as_str(),
                retry_every_ms = retry_every.as_millis() as u64,
                "dead-letter record cannot be delivered: consumption of the partition paused, its offset held; retrying"
            ),
            PartitionDeliveryPause::Resumed { topic, partition } => info!(
                topic,
                partition,
                "held dead-letter records delivered: consumption of the partition resumed"
            ),
        }
        metrics().dead_letter_paused.set(paused_now as i64);
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

/// An invalid or late event was dropped without a dead-letter record
/// because no dead-letter topic is configured (it is counted by the engine).
pub struct InvalidDropped<'a> {
    pub reason: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub detail: &'a str,
}

impl InvalidDropped<'_> {
    pub fn emit(self) {
        debug!(
            reason = self.reason,
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            detail = self.detail,
            "invalid event (no dead-letter topic configured)"
        );
    }
}

/// A dead-letter record's value was cut to fit the record size limit.
pub struct DeadLetterTruncated<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub original_bytes: usize,
    pub max_bytes: usize,
}

impl DeadLetterTruncated<'_> {
    pub fn emit(self) {
        warn!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            original_bytes = self.original_bytes,
            max_bytes = self.max_bytes,
            "dead-letter value truncated to fit the record size limit (header cxpulse.truncated)"
        );
        metrics().dead_letters_truncated.inc();
    }
}

/// librdkafka refused to pause or resume a partition.
pub struct PartitionPauseFailed<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub pause: bool,
    pub error: &'a rdkafka::error::KafkaError,
}

impl PartitionPauseFailed<'_> {
    pub fn emit(self) {
        warn!(
            topic = self.topic,
            partition = self.partition,
            pause = self.pause,
            error = %self.error,
            "cannot pause or resume the partition"
        );
    }
}

/// A checkpoint is not written while a partition is paused for an
/// undeliverable dead-letter record: it would cover that record as handled.
pub struct CheckpointPostponed {
    pub paused_partitions: usize,
}

impl CheckpointPostponed {
    pub fn emit(self) {
        let key = "checkpoint-postponed";
        if RATE_LIMIT.allow(key, Duration::from_secs(60)) {
            warn!(
                paused_partitions = self.paused_partitions,
                "checkpoint postponed: dead-letter records cannot be delivered (repeats logged at most every 60s)"
            );
        }
    }
}
