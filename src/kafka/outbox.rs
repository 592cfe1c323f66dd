//! Output and alert records waiting for delivery, and when they go.
//!
//! Per stream, at most one batch is in flight: while a topic is down, no
//! task is spawned per interval and nothing piles up but the waiting
//! records. For the output topic (compacted, keyed by series) a newer value
//! of a series replaces the waiting older one, and a failed record goes back
//! only if no newer value of its series is waiting: with one batch in flight
//! and one record per key in a batch (which the idempotent producer keeps in
//! order), an older value can never land after a newer one. Alerts keep their
//! order (first in, first out); each is tried `kafka.delivery_attempts`
//! times. After a batch with a failure, the next one waits for the next
//! publish tick, so a failing topic is tried once per `publish_interval`.
//! Records that can never be accepted (too large, invalid) are dropped and
//! counted. Plain data, no I/O: the consumer loop sends the batches.

use std::collections::{BTreeMap, VecDeque};

use super::publish::OutRecord;
use crate::telemetry::FailureReason;

/// Most alert records waiting at once; beyond it the oldest are dropped
/// (counted as `queue_full`). Output records are bounded by the series count.
pub const MAX_WAITING_ALERTS: usize = 100_000;

/// A record and the delivery attempts it has had.
#[derive(Clone, Debug)]
pub struct Attempted {
    pub record: OutRecord,
    pub attempts: u32,
}

#[derive(Debug)]
enum Queue {
    /// Output: one waiting record per key.
    Keyed(BTreeMap<Vec<u8>, Attempted>),
    /// Alerts: in order.
    Fifo(VecDeque<Attempted>),
}

/// The waiting records of one stream and its batch in flight.
#[derive(Debug)]
pub struct Outbox {
    queue: Queue,
    /// Records of the batch in flight (0: none in flight).
    in_flight: usize,
    /// The last batch had a failure: the next waits for [`Outbox::tick`].
    hold: bool,
    /// Attempts per record before it is dropped (alerts only: an output
    /// record is retried until a newer value of its series replaces it).
    max_attempts: u32,
}

/// Records dropped by [`Outbox::push`] or [`Outbox::done`], by reason.
pub type Dropped = BTreeMap<FailureReason, u64>;

impl Outbox {
    /// The output topic's outbox: merged by key, retried until superseded.
    pub fn keyed() -> Outbox {
        Outbox {
            queue: Queue::Keyed(BTreeMap::new()),
            in_flight: 0,
            hold: false,
            max_attempts: u32::MAX,
        }
    }

    /// The alerts topic's outbox: in order, `max_attempts` each.
    pub fn fifo(max_attempts: u32) -> Outbox {
        Outbox {
            queue: Queue::Fifo(VecDeque::new()),
            in_flight: 0,
            hold: false,
            max_attempts: max_attempts.max(1),
        }
    }

    /// Records waiting, plus those in flight.
    pub fn pending(&self) -> usize {
        self.waiting() + self.in_flight
    }

    pub fn waiting(&self) -> usize {
        match &self.queue {
            Queue::Keyed(m) => m.len(),
            Queue::Fifo(q) => q.len(),
        }
    }

    pub fn is_busy(&self) -> bool {
        self.in_flight > 0
    }

    /// New records: a newer value replaces a waiting one of the same key
    /// (output); alerts beyond [`MAX_WAITING_ALERTS`] push out the oldest.
    pub fn push(&mut self, records: Vec<OutRecord>) -> Dropped {
        let mut dropped = Dropped::new();
        match &mut self.queue {
            Queue::Keyed(m) => {
                for record in records {
                    let key = record.key.clone().unwrap_or_default();
                    m.insert(
                        key,
                        Attempted {
                            record,
                            attempts: 0,
                        },
                    );
                }
            }
            Queue::Fifo(q) => {
                q.extend(records.into_iter().map(|record| Attempted {
                    record,
                    attempts: 0,
                }));
                while q.len() > MAX_WAITING_ALERTS {
                    q.pop_front();
                    *dropped.entry(FailureReason::QueueFull).or_default() += 1;
                }
            }
        }
        dropped
    }

    /// Forgets the records waiting (not those in flight); returns how many.
    /// The output topic's outbox when this instance stops publishing the
    /// fleet totals: another instance publishes newer ones.
    pub fn clear_waiting(&mut self) -> usize {
        let n = self.waiting();
        match &mut self.queue {
            Queue::Keyed(m) => m.clear(),
            Queue::Fifo(q) => q.clear(),
        }
        n
    }

    /// A publish tick: a batch held back after a failure may go now.
    pub fn tick(&mut self) {
        self.hold = false;
    }

    /// The next batch to send (at most `max` records), unless one is in
    /// flight, the last one failed and no tick came since, or none waits.
    pub fn next_batch(&mut self, max: usize) -> Option<Vec<Attempted>> {
        if self.in_flight > 0 || self.hold || self.waiting() == 0 {
            return None;
        }
        let batch: Vec<Attempted> = match &mut self.queue {
            Queue::Keyed(m) => {
                if m.len() <= max {
                    std::mem::take(m).into_values().collect()
                } else {
                    let rest = m
                        .keys()
                        .nth(max)
                        .cloned()
                        .map(|k| m.split_off(&k))
                        .unwrap_or_default();
                    std::mem::replace(m, rest).into_values().collect()
                }
            }
            Queue::Fifo(q) => {
                let n = q.len().min(max);
                q.drain(..n).collect()
            }
        };
        self.in_flight = batch.len();
        Some(batch)
    }

    /// The batch in flight finished with these results. Failed records go
    /// back (output: unless a newer value of the key waits; alerts: at the
    /// front, in order, while attempts remain) or are dropped; returns those
    /// dropped by reason.
    pub fn done(&mut self, results: Vec<(Attempted, Result<(), FailureReason>)>) -> Dropped {
        self.in_flight = 0;
        let mut dropped = Dropped::new();
        let mut again = Vec::new();
        for (mut a, result) in results {
            let Err(reason) = result else { continue };
            self.hold = true;
            a.attempts = a.attempts.saturating_add(1);
            if reason.is_hopeless() || a.attempts >= self.max_attempts {
                *dropped.entry(reason).or_default() += 1;
            } else {
                again.push(a);
            }
        }
        match &mut self.queue {
            Queue::Keyed(m) => {
                for a in again {
                    let key = a.record.key.clone().unwrap_or_default();
                    m.entry(key).or_insert(a);
                }
            }
            Queue::Fifo(q) => {
                for a in again.into_iter().rev() {
                    q.push_front(a);
                }
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: &str) -> OutRecord {
        OutRecord {
            topic: "out".into(),
            key: Some(key.as_bytes().to_vec()),
            payload: Some(value.as_bytes().to_vec()),
            headers: None,
        }
    }

    fn values(batch: &[Attempted]) -> Vec<(String, String)> {
        batch
            .iter()
            .map(|a| {
                (
                    String::from_utf8_lossy(a.record.key.as_deref().unwrap_or_default()).into(),
                    String::from_utf8_lossy(a.record.payload.as_deref().unwrap_or_default()).into(),
                )
            })
            .collect()
    }

    fn all(
        batch: Vec<Attempted>,
        r: Result<(), FailureReason>,
    ) -> Vec<(Attempted, Result<(), FailureReason>)> {
        batch.into_iter().map(|a| (a, r)).collect()
    }

    #[test]
    fn a_newer_value_is_never_overtaken_by_an_older_one_and_one_batch_flies_at_a_time() {
        let mut o = Outbox::keyed();
        o.push(vec![rec("a", "1"), rec("b", "1")]);
        let first = o.next_batch(1000).expect("a batch");
        assert_eq!(
            values(&first),
            [("a".into(), "1".into()), ("b".into(), "1".into())]
        );
        // The topic is down: ten more publish ticks while the batch flies.
        for v in 2..=11 {
            o.push(vec![rec("a", &v.to_string())]);
            o.tick();
            assert!(o.next_batch(1000).is_none(), "one batch in flight at most");
        }
        // Only the newest value of `a` waits: 10 pushes, 1 record.
        assert_eq!(o.waiting(), 1);
        assert_eq!(o.pending(), 3);
        // The first batch fails: `a`=1 does not go back (11 is newer),
        // `b`=1 does (nothing newer of b).
        let dropped = o.done(all(first, Err(FailureReason::UnknownTopic)));
        assert!(dropped.is_empty());
        assert!(
            o.next_batch(1000).is_none(),
            "after a failure, wait for the tick"
        );
        o.tick();
        let second = o.next_batch(1000).expect("a batch");
        assert_eq!(
            values(&second),
            [("a".into(), "11".into()), ("b".into(), "1".into())]
        );
        // A newer b arrives while the retry of b=1 flies; the retry fails
        // again: b=2 is sent next, b=1 never again.
        o.push(vec![rec("b", "2")]);
        o.done(all(second, Err(FailureReason::Timeout)));
        o.tick();
        let third = o.next_batch(1000).expect("a batch");
        assert_eq!(
            values(&third),
            [("a".into(), "11".into()), ("b".into(), "2".into())]
        );
        assert!(o.done(all(third, Ok(()))).is_empty());
        assert_eq!(o.pending(), 0);
        assert!(o.next_batch(1000).is_none());
    }

    #[test]
    fn an_output_record_too_large_is_dropped_not_retried() {
        let mut o = Outbox::keyed();
        o.push(vec![rec("a", "1"), rec("b", "1")]);
        let mut batch = o.next_batch(1000).expect("a batch");
        let b = batch.pop().expect("b");
        let a = batch.pop().expect("a");
        let dropped = o.done(vec![(a, Ok(())), (b, Err(FailureReason::TooLarge))]);
        assert_eq!(dropped, Dropped::from([(FailureReason::TooLarge, 1)]));
        assert_eq!(o.pending(), 0);
    }

    #[test]
    fn a_big_keyed_backlog_goes_in_bounded_batches() {
        let mut o = Outbox::keyed();
        o.push((0..5).map(|i| rec(&format!("k{i}"), "v")).collect());
        let b1 = o.next_batch(2).expect("a batch");
        assert_eq!(b1.len(), 2);
        assert_eq!(o.waiting(), 3);
        o.done(all(b1, Ok(())));
        let b2 = o.next_batch(2).expect("no hold after success");
        assert_eq!(values(&b2)[0].0, "k2");
    }

    #[test]
    fn alerts_keep_their_order_and_are_dropped_after_their_attempts() {
        let mut o = Outbox::fifo(2);
        o.push(vec![rec("t1", "x"), rec("t1", "y"), rec("t2", "z")]);
        // Same key, two alerts: both kept (alerts are not merged).
        assert_eq!(o.waiting(), 3);
        let b = o.next_batch(2).expect("a batch");
        assert_eq!(
            values(&b),
            [("t1".into(), "x".into()), ("t1".into(), "y".into())]
        );
        assert!(o.done(all(b, Err(FailureReason::Timeout))).is_empty());
        o.tick();
        // The failed ones go first again, in order.
        let b = o.next_batch(10).expect("a batch");
        assert_eq!(
            values(&b),
            [
                ("t1".into(), "x".into()),
                ("t1".into(), "y".into()),
                ("t2".into(), "z".into())
            ]
        );
        // Second failure: x and y are out of attempts (2), z has one left.
        let dropped = o.done(all(b, Err(FailureReason::Authorization)));
        assert_eq!(dropped, Dropped::from([(FailureReason::Authorization, 2)]));
        assert_eq!(o.waiting(), 1);
        // A hopeless error drops at once.
        o.tick();
        let b = o.next_batch(10).expect("a batch");
        let dropped = o.done(all(b, Err(FailureReason::Invalid)));
        assert_eq!(dropped, Dropped::from([(FailureReason::Invalid, 1)]));
        assert_eq!(o.pending(), 0);
    }

    #[test]
    fn clear_waiting_forgets_the_waiting_records_not_the_batch_in_flight() {
        let mut o = Outbox::keyed();
        o.push(vec![rec("a", "1")]);
        let flying = o.next_batch(10).expect("a batch");
        o.push(vec![rec("b", "1"), rec("c", "1")]);
        assert_eq!(o.clear_waiting(), 2);
        assert_eq!(o.pending(), 1, "the batch in flight still counts");
        assert!(o.done(all(flying, Ok(()))).is_empty());
        assert_eq!(o.pending(), 0);
        assert!(o.next_batch(10).is_none());
    }

    #[test]
    fn waiting_alerts_are_capped() {
        let mut o = Outbox::fifo(3);
        let n = MAX_WAITING_ALERTS + 7;
        let dropped = o.push((0..n).map(|i| rec(&i.to_string(), "v")).collect());
        assert_eq!(dropped, Dropped::from([(FailureReason::QueueFull, 7)]));
        assert_eq!(o.waiting(), MAX_WAITING_ALERTS);
        // The oldest went: the first waiting is number 7.
        let b = o.next_batch(1).expect("a batch");
        assert_eq!(values(&b)[0].0, "7");
    }
}
