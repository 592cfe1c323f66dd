//! Events of the produced streams: dead-letter, output and alert records.

use std::time::Duration;

use tracing::{debug, error, trace, warn};

use super::{RATE_LIMIT, metrics};

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
