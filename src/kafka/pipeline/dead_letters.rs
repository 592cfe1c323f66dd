//! Dead-letter records: sent with their input offset held, and what happens
//! when one cannot be delivered (`kafka.dead_letter_on_failure`).
//!
//! A record is tried `kafka.delivery_attempts` times, or once on a permanent
//! error (missing topic, record too large, authorization). Then:
//!
//! - `pause` (default): consumption of its input partition pauses, its
//!   offset stays held (commits of that partition stop before it; with
//!   checkpoints on, no checkpoint is written meanwhile), `/readyz` fails
//!   naming the partition, the dead-letter topic and the reason, and the
//!   record is sent again every `kafka.dead_letter_retry_interval`. Once every
//!   held record of the partition is delivered, consumption resumes where it
//!   stopped. Nothing is lost and nothing skipped.
//! - `skip`: the record is dropped and counted
//!   (`cxpulse_delivery_dropped_total{stream="dead_letter"}`) and the offset
//!   moves on.
//!
//! Values too large for `kafka.dead_letter_max_bytes` are truncated first,
//! with a `cxpulse.truncated` header (their original length).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};

use super::state::Loop;
use crate::config::{DeadLetterOnFailure, KafkaSection};
use crate::kafka::offsets::HoldTicket;
use crate::kafka::publish::{self, DeadLetter, OutRecord};
use crate::telemetry::{self, FailureReason, PartitionDeliveryPause, Stream};

/// Most dead-letter records in delivery at once: at this many, consumption
/// waits for some to finish.
pub const MAX_DEAD_LETTERS_IN_FLIGHT: usize = 10_000;

/// librdkafka's default `message.max.bytes`.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The dead-letter settings the loop needs.
#[derive(Clone, Debug)]
pub struct DeadLetterPolicy {
    pub on_failure: DeadLetterOnFailure,
    pub retry_every: Duration,
    pub attempts: u32,
    /// Largest record; longer values are truncated.
    pub max_bytes: usize,
}

impl DeadLetterPolicy {
    pub fn new(k: &KafkaSection) -> DeadLetterPolicy {
        DeadLetterPolicy {
            on_failure: k.dead_letter_on_failure,
            retry_every: Duration::from_millis(k.dead_letter_retry_interval.ms().max(1) as u64),
            attempts: k.delivery_attempts.max(1),
            max_bytes: max_record_bytes(k),
        }
    }
}

/// `kafka.dead_letter_max_bytes`, or else the producer's `message.max.bytes`
/// (passthrough `message.max.bytes` or `producer.message.max.bytes`), or
/// librdkafka's default.
pub fn max_record_bytes(k: &KafkaSection) -> usize {
    if k.dead_letter_max_bytes > 0 {
        return k.dead_letter_max_bytes as usize;
    }
    ["producer.message.max.bytes", "message.max.bytes"]
        .iter()
        .find_map(|key| k.librdkafka.get(*key)?.trim().parse().ok())
        .unwrap_or(LIBRDKAFKA_MESSAGE_MAX_BYTES)
}

/// A dead-letter delivery finished, delivered or not.
pub struct DeadLetterDone {
    pub ticket: HoldTicket,
    pub reason: &'static str,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record, to send again when it failed.
    pub record: OutRecord,
    pub result: Result<(), FailureReason>,
}

/// Input partitions paused for undeliverable dead-letter records.
#[derive(Debug, Default)]
pub struct Paused {
    parts: BTreeMap<u32, PausedPartition>,
}

#[derive(Debug)]
struct PausedPartition {
    topic: String,
    partition: i32,
    /// A ticket of the assignment that was paused (to notice a revoke).
    ticket: HoldTicket,
    /// Offsets of its undelivered dead-letter records.
    offsets: BTreeSet<i64>,
}

impl Paused {
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }
}

impl Loop {
    /// Sends `m` to the dead-letter topic; the delivery completes with the
    /// ticket that releases its held offset.
    pub fn dead_letter(
        &mut self,
        m: &BorrowedMessage<'_>,
        reason: &'static str,
        detail: &str,
        ticket: HoldTicket,
    ) {
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let mut record = publish::dead_letter_record(
            &self.dlq_topic,
            m.key(),
            m.payload(),
            m.headers().map(|h| h.detach()),
            &DeadLetter {
                reason,
                detail,
                topic,
                partition,
                offset,
                timestamp: m.timestamp().to_millis(),
            },
        );
        if let Some(original) =
            publish::fit_dead_letter(&mut record, self.dead_letter_policy.max_bytes)
        {
            telemetry::DeadLetterTruncated {
                topic,
                partition,
                offset,
                original_bytes: original,
                max_bytes: self.dead_letter_policy.max_bytes,
            }
            .emit();
        }
        telemetry::metrics()
            .delivery_pending
            .with_label_values(&[Stream::DeadLetter.as_str()])
            .inc();
        self.spawn_dead_letter(
            DeadLetterDone {
                ticket,
                reason,
                topic: topic.to_string(),
                partition,
                offset,
                record,
                result: Ok(()),
            },
            Duration::ZERO,
        );
    }

    /// Sends `d.record` after `delay`.
    fn spawn_dead_letter(&mut self, d: DeadLetterDone, delay: Duration) {
        let producer = self.producer.clone();
        let attempts = self.dead_letter_policy.attempts;
        let book = self.book.clone();
        self.dead_letters.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let (record, result) = publish::deliver_dead_letter(producer, d.record, attempts).await;
            if result.is_ok() {
                // Released here too (again by `dead_letter_done`, a no-op):
                // a revoke waits for it while the loop is inside `recv()`.
                book.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .release(d.ticket);
            }
            DeadLetterDone {
                record,
                result,
                ..d
            }
        });
    }

    /// A dead-letter delivery finished: release its offset when delivered
    /// (resuming its partition if that was the last one holding it), else
    /// pause or skip by `kafka.dead_letter_on_failure`.
    pub fn dead_letter_done(&mut self, d: DeadLetterDone) {
        let pending = telemetry::metrics()
            .delivery_pending
            .with_label_values(&[Stream::DeadLetter.as_str()]);
        match d.result {
            Ok(()) => {
                pending.dec();
                self.book().release(d.ticket);
                telemetry::DeadLettered {
                    reason: d.reason,
                    topic: &d.topic,
                    partition: d.partition,
                    offset: d.offset,
                }
                .emit();
                self.delivered_while_paused(&d.ticket);
            }
            Err(_) if self.shutting_down => {
                // Counted as undelivered by the shutdown (the gauge stays up).
            }
            Err(failure) => match self.dead_letter_policy.on_failure {
                DeadLetterOnFailure::Skip => {
                    pending.dec();
                    self.book().release(d.ticket);
                    telemetry::DeliveryDropped {
                        stream: Stream::DeadLetter,
                        topic: &self.dlq_topic,
                        reason: failure,
                        records: 1,
                        source: Some((&d.topic, d.partition, d.offset)),
                    }
                    .emit();
                }
                DeadLetterOnFailure::Pause => {
                    self.pause_for(&d, failure);
                    let every = self.dead_letter_policy.retry_every;
                    self.spawn_dead_letter(d, every);
                }
            },
        }
        if self.checkpoint_due.is_some() && self.book().held_count() == 0 {
            self.checkpoint();
        }
    }

    /// Pauses consumption of `d`'s partition (if still assigned here under
    /// the same assignment) and says why on `/readyz`.
    fn pause_for(&mut self, d: &DeadLetterDone, failure: FailureReason) {
        if !self.book().is_current(&d.ticket) {
            // Revoked since: its commit stopped before this offset, so the
            // partition's next owner reads it again; the record is still
            // sent again here (this process may get the partition back).
            return;
        }
        let pid = d.ticket.pid();
        let first = !self.paused.parts.contains_key(&pid);
        let entry = self
            .paused
            .parts
            .entry(pid)
            .or_insert_with(|| PausedPartition {
                topic: d.topic.clone(),
                partition: d.partition,
                ticket: d.ticket,
                offsets: BTreeSet::new(),
            });
        entry.offsets.insert(d.offset);
        let held_at = entry.offsets.first().copied().unwrap_or(d.offset);
        let every = self.dead_letter_policy.retry_every;
        self.live.dead_letter_paused(
            &d.topic,
            d.partition,
            Some(format!(
                "consumption of {}/{} paused at offset {held_at}: its dead-letter record cannot be delivered to {} ({}); sent again every {} ms",
                d.topic,
                d.partition,
                self.dlq_topic,
                failure.as_str(),
                every.as_millis()
            )),
        );
        if first {
            self.set_paused(&d.topic, d.partition, true);
            PartitionDeliveryPause::Paused {
                topic: &d.topic,
                partition: d.partition,
                offset: d.offset,
                dead_letter_topic: &self.dlq_topic,
                reason: failure,
                retry_every: every,
            }
            .emit(self.paused.len());
        }
    }

    /// A held record of a paused partition was delivered: resume the
    /// partition once none of its held records is left undelivered.
    fn delivered_while_paused(&mut self, t: &HoldTicket) {
        let pid = t.pid();
        let Some(p) = self.paused.parts.get_mut(&pid) else {
            return;
        };
        p.offsets.remove(&t.offset());
        if p.offsets.is_empty() {
            self.resume(pid);
        }
    }

    fn resume(&mut self, pid: u32) {
        let Some(p) = self.paused.parts.remove(&pid) else {
            return;
        };
        self.live.dead_letter_paused(&p.topic, p.partition, None);
        if self.book().is_current(&p.ticket) {
            self.set_paused(&p.topic, p.partition, false);
        }
        PartitionDeliveryPause::Resumed {
            topic: &p.topic,
            partition: p.partition,
        }
        .emit(self.paused.len());
    }

    /// A paused partition revoked since (perhaps assigned here again): it is
    /// no longer paused for its old records (still sent again); make sure a
    /// new assignment of it consumes.
    pub fn reconcile_paused(&mut self) {
        let stale: Vec<u32> = {
            let book = self.book();
            self.paused
                .parts
                .iter()
                .filter(|(_, p)| !book.is_current(&p.ticket))
                .map(|(pid, _)| *pid)
                .collect()
        };
        for pid in stale {
            if let Some(p) = self.paused.parts.get(&pid) {
                let (topic, partition) = (p.topic.clone(), p.partition);
                // A partition whose state is restoring stays paused until
                // its restore resumes it.
                let assigned = {
                    let mut book = self.book();
                    book.is_assigned(&topic, partition) && !book.is_restoring(&topic, partition)
                };
                if assigned {
                    self.set_paused(&topic, partition, false);
                }
            }
            self.resume(pid);
        }
    }

    fn set_paused(&self, topic: &str, partition: i32, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let r = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = r {
            telemetry::PartitionPauseFailed {
                topic,
                partition,
                pause,
                error: &e,
            }
            .emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_limit_is_the_key_or_the_producers_message_max_bytes() {
        let mut k = KafkaSection::default();
        assert_eq!(max_record_bytes(&k), 1_000_000);
        k.librdkafka
            .insert("message.max.bytes".into(), "200000".into());
        assert_eq!(max_record_bytes(&k), 200_000);
        k.librdkafka
            .insert("producer.message.max.bytes".into(), "50000".into());
        assert_eq!(max_record_bytes(&k), 50_000, "the producer's own wins");
        k.dead_letter_max_bytes = 4096;
        assert_eq!(max_record_bytes(&k), 4096);
    }
}
