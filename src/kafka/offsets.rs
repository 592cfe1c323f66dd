//! Which input offsets may be committed: the bookkeeping behind the delivery
//! rule (see [`crate::kafka`]).
//!
//! Per assigned partition, messages arrive in offset order. A message is
//! *handled* once the engine has taken it (applied, or counted as duplicate)
//! or, for a dead-lettered one, once the dead-letter record is acknowledged;
//! until then it is *held*. The committable position is the lowest held
//! offset, or else one past the last message seen: everything below it is
//! handled. Plain data, no I/O: the consumer loop and the revoke callback
//! share it behind a mutex and hand its positions to librdkafka.

use std::collections::{BTreeSet, HashMap};

use rdkafka::TopicPartitionList;
use rdkafka::topic_partition_list::Offset;

/// Offsets of one assigned partition.
#[derive(Debug)]
struct PartitionOffsets {
    topic: String,
    partition: i32,
    /// Distinguishes this assignment from an earlier one of the same
    /// partition, so a late dead-letter acknowledgement from before a
    /// revoke cannot release an offset of the new assignment.
    epoch: u64,
    /// One past the last message seen.
    next: Option<i64>,
    /// Messages seen but waiting for their dead-letter acknowledgement.
    held: BTreeSet<i64>,
    /// The position last handed to librdkafka's offset store.
    stored: Option<i64>,
}

impl PartitionOffsets {
    fn committable(&self) -> Option<i64> {
        self.held.first().copied().or(self.next)
    }
}

/// A stable engine partition number per (topic, partition): the topic's index
/// (configured topics first, in config order) times 2^20 plus the partition.
#[derive(Debug, Default)]
pub struct PartitionIds {
    topics: HashMap<String, u32>,
}

impl PartitionIds {
    pub fn new(topics: &[String]) -> PartitionIds {
        let mut ids = PartitionIds::default();
        for t in topics {
            ids.id(t, 0);
        }
        ids
    }

    pub fn id(&mut self, topic: &str, partition: i32) -> u32 {
        let next = self.topics.len() as u32;
        let t = match self.topics.get(topic) {
            Some(t) => *t,
            None => {
                self.topics.insert(topic.to_string(), next);
                next
            }
        };
        (t << 20) | (partition.max(0) as u32 & 0xF_FFFF)
    }
}

/// The offset bookkeeping of every assigned partition.
#[derive(Debug, Default)]
pub struct OffsetBook {
    parts: HashMap<u32, PartitionOffsets>,
    ids: PartitionIds,
    next_epoch: u64,
}

/// Identifies a held message, to release it when its acknowledgement comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldTicket {
    pid: u32,
    epoch: u64,
    offset: i64,
}

impl OffsetBook {
    pub fn new(topics: &[String]) -> OffsetBook {
        OffsetBook {
            ids: PartitionIds::new(topics),
            ..OffsetBook::default()
        }
    }

    /// The engine partition number of (topic, partition).
    pub fn pid(&mut self, topic: &str, partition: i32) -> u32 {
        self.ids.id(topic, partition)
    }

    fn entry(&mut self, topic: &str, partition: i32) -> (u32, &mut PartitionOffsets) {
        let pid = self.ids.id(topic, partition);
        if !self.parts.contains_key(&pid) {
            self.next_epoch += 1;
            self.parts.insert(
                pid,
                PartitionOffsets {
                    topic: topic.to_string(),
                    partition,
                    epoch: self.next_epoch,
                    next: None,
                    held: BTreeSet::new(),
                    stored: None,
                },
            );
        }
        let p = self.parts.get_mut(&pid).expect("inserted above");
        (pid, p)
    }

    /// Starts fresh bookkeeping for newly assigned partitions.
    pub fn assign(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            let pid = self.ids.id(e.topic(), e.partition());
            self.parts.remove(&pid);
            self.entry(e.topic(), e.partition());
        }
    }

    /// The message at `offset` is handled.
    pub fn handled(&mut self, topic: &str, partition: i32, offset: i64) {
        let (_, p) = self.entry(topic, partition);
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// The message at `offset` is seen but not handled until [`Self::release`].
    pub fn hold(&mut self, topic: &str, partition: i32, offset: i64) -> HoldTicket {
        let (pid, p) = self.entry(topic, partition);
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
        p.held.insert(offset);
        HoldTicket {
            pid,
            epoch: p.epoch,
            offset,
        }
    }

    /// The held message is handled. Ignored when its partition was revoked
    /// (and perhaps assigned again) since it was held.
    pub fn release(&mut self, t: HoldTicket) {
        if let Some(p) = self.parts.get_mut(&t.pid)
            && p.epoch == t.epoch
        {
            p.held.remove(&t.offset);
        }
    }

    /// Positions that moved since they were last taken, as a list for
    /// librdkafka's offset store; marks them taken. Empty when nothing moved.
    pub fn take_moved(&mut self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for p in self.parts.values_mut() {
            if let Some(c) = p.committable()
                && Some(c) != p.stored
            {
                p.stored = Some(c);
                let _ = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(c));
            }
        }
        tpl
    }

    /// Forgets revoked partitions; returns their positions that moved since
    /// last taken, to store before the revoke commit.
    pub fn revoke(&mut self, tpl: &TopicPartitionList) -> TopicPartitionList {
        let mut out = TopicPartitionList::new();
        for e in tpl.elements() {
            let pid = self.ids.id(e.topic(), e.partition());
            if let Some(p) = self.parts.remove(&pid)
                && let Some(c) = p.committable()
                && Some(c) != p.stored
            {
                let _ = out.add_partition_offset(&p.topic, p.partition, Offset::Offset(c));
            }
        }
        out
    }

    /// Messages held, over all partitions.
    pub fn held_count(&self) -> usize {
        self.parts.values().map(|p| p.held.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(tpl: &TopicPartitionList) -> Vec<(String, i32, i64)> {
        let mut v: Vec<_> = tpl
            .elements()
            .iter()
            .map(|e| {
                (
                    e.topic().to_string(),
                    e.partition(),
                    e.offset().to_raw().unwrap_or(-1),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn committable_position_stops_at_the_first_held_offset() {
        let mut b = OffsetBook::new(&["in".into()]);
        b.handled("in", 0, 0);
        let t1 = b.hold("in", 0, 1);
        b.handled("in", 0, 2);
        let t3 = b.hold("in", 0, 3);
        b.handled("in", 0, 4);
        assert_eq!(positions(&b.take_moved()), [("in".into(), 0, 1)]);
        // Releasing the later hold first does not move the position past 1.
        b.release(t3);
        assert!(b.take_moved().count() == 0);
        b.release(t1);
        assert_eq!(positions(&b.take_moved()), [("in".into(), 0, 5)]);
        assert_eq!(b.held_count(), 0);
    }

    #[test]
    fn acknowledgement_from_before_a_revoke_is_ignored() {
        let mut b = OffsetBook::new(&["in".into()]);
        let old = b.hold("in", 2, 7);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("in", 2);
        assert_eq!(positions(&b.revoke(&tpl)), [("in".into(), 2, 7)]);
        b.assign(&tpl);
        let new = b.hold("in", 2, 7);
        b.release(old);
        assert_eq!(
            b.held_count(),
            1,
            "stale ticket must not release the new hold"
        );
        b.release(new);
        assert_eq!(positions(&b.take_moved()), [("in".into(), 2, 8)]);
    }

    #[test]
    fn engine_partition_numbers_are_stable_per_topic_and_partition() {
        let mut ids = PartitionIds::new(&["a".into(), "b".into()]);
        assert_eq!(ids.id("a", 3), 3);
        assert_eq!(ids.id("b", 3), (1 << 20) | 3);
        assert_eq!(ids.id("c", 0), 2 << 20);
        assert_eq!(ids.id("a", 3), 3);
    }
}
