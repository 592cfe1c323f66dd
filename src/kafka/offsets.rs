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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rdkafka::TopicPartitionList;
use rdkafka::topic_partition_list::Offset;

use crate::checkpoint::SavedOffset;

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
    /// With checkpoints on: where the engine's state of each partition it has
    /// seen resumes (one past the last message it took), from the restored
    /// checkpoint and from consumption since. `None` with checkpoints off.
    positions: Option<BTreeMap<(String, i32), i64>>,
    /// With checkpoints off: where the engine's state of each partition
    /// revoked from this process resumes, should it be assigned here again
    /// (e.g. the group dropped this member during a broker outage and took
    /// it back): the engine's state is still in memory, so consumption goes
    /// on from there rather than from the last commit, which would deliver
    /// events it already took a second time.
    resume: BTreeMap<(String, i32), i64>,
}

/// Identifies a held message, to release it when its acknowledgement comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldTicket {
    pid: u32,
    epoch: u64,
    offset: i64,
}

impl HoldTicket {
    /// The engine partition number of the held message.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }
}

impl OffsetBook {
    pub fn new(topics: &[String]) -> OffsetBook {
        OffsetBook {
            ids: PartitionIds::new(topics),
            ..OffsetBook::default()
        }
    }

    /// Checkpoints are on: track the engine's positions, starting from those
    /// of the restored checkpoint.
    pub fn track_positions(&mut self, saved: &[SavedOffset]) {
        self.positions = Some(
            saved
                .iter()
                .map(|o| ((o.topic.clone(), o.partition), o.next_offset))
                .collect(),
        );
    }

    /// Whether checkpoints are on (engine positions are tracked).
    pub fn tracks_positions(&self) -> bool {
        self.positions.is_some()
    }

    /// Sets the start offset of every partition of `tpl` whose engine
    /// position is known (they win over the group's committed offsets):
    /// with checkpoints, every partition the engine has state of; without,
    /// partitions revoked from this process earlier. Returns (those set, the
    /// others when checkpoints are on), for the log and for
    /// [`Self::record_start`].
    pub fn apply_positions(
        &self,
        tpl: &mut TopicPartitionList,
    ) -> (TopicPartitionList, TopicPartitionList) {
        let mut set = TopicPartitionList::new();
        let mut unknown = TopicPartitionList::new();
        let pos = self.positions.as_ref().unwrap_or(&self.resume);
        for e in tpl.elements() {
            match pos.get(&(e.topic().to_string(), e.partition())) {
                Some(&o) => {
                    let _ = set.add_partition_offset(e.topic(), e.partition(), Offset::from_raw(o));
                }
                None if self.positions.is_some() => {
                    unknown.add_partition(e.topic(), e.partition());
                }
                None => {}
            }
        }
        for e in set.elements() {
            let _ = tpl.set_partition_offset(e.topic(), e.partition(), e.offset());
        }
        (set, unknown)
    }

    /// Records where a newly assigned partition without an engine position
    /// starts (its committed offset, or the beginning when there is none),
    /// so that every checkpoint lists every partition the engine may have
    /// consumed: falling back to an older checkpoint then never skips input.
    pub fn record_start(&mut self, topic: &str, partition: i32, start: Offset) {
        let Some(pos) = &mut self.positions else {
            return;
        };
        let raw = match start {
            Offset::Offset(o) => o,
            // auto.offset.reset = earliest
            _ => Offset::Beginning.to_raw().unwrap_or(-2),
        };
        pos.entry((topic.to_string(), partition)).or_insert(raw);
    }

    /// The engine's positions (checkpoints on), brought up to date with
    /// every message taken so far, sorted by topic and partition.
    pub fn engine_positions(&mut self) -> Vec<SavedOffset> {
        let Some(pos) = &mut self.positions else {
            return Vec::new();
        };
        for p in self.parts.values() {
            if let Some(n) = p.next {
                pos.insert((p.topic.clone(), p.partition), n);
            }
        }
        pos.iter()
            .map(|((topic, partition), &next_offset)| SavedOffset {
                topic: topic.clone(),
                partition: *partition,
                next_offset,
            })
            .collect()
    }

    /// Whether (topic, partition) is currently assigned (has bookkeeping).
    pub fn is_assigned(&mut self, topic: &str, partition: i32) -> bool {
        let pid = self.ids.id(topic, partition);
        self.parts.contains_key(&pid)
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
            let removed = self.parts.remove(&pid);
            if let Some(p) = &removed
                && let Some(n) = p.next
            {
                let pos = self.positions.as_mut().unwrap_or(&mut self.resume);
                pos.insert((p.topic.clone(), p.partition), n);
            }
            if let Some(p) = removed
                && let Some(c) = p.committable()
                && Some(c) != p.stored
            {
                let _ = out.add_partition_offset(&p.topic, p.partition, Offset::Offset(c));
            }
        }
        if self.positions.is_some() {
            // With checkpoints, only positions a checkpoint covers are
            // committed (when it is written).
            return TopicPartitionList::new();
        }
        out
    }

    /// Whether `t` is of the current assignment of its partition (it was not
    /// revoked since the message was held).
    pub fn is_current(&self, t: &HoldTicket) -> bool {
        self.parts.get(&t.pid).is_some_and(|p| p.epoch == t.epoch)
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
    fn engine_positions_start_from_the_checkpoint_and_win_over_committed_offsets() {
        let mut b = OffsetBook::new(&["in".into()]);
        b.track_positions(&[SavedOffset {
            topic: "in".into(),
            partition: 0,
            next_offset: 40,
        }]);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("in", 0);
        tpl.add_partition("in", 1);
        let (set, unknown) = b.apply_positions(&mut tpl);
        assert_eq!(positions(&set), [("in".into(), 0, 40)]);
        assert_eq!(positions(&unknown), [("in".into(), 1, -1001)]);
        assert_eq!(
            positions(&tpl),
            [("in".into(), 0, 40), ("in".into(), 1, -1001)]
        );
        b.assign(&tpl);
        // Partition 1 has nothing committed: it starts at the beginning.
        b.record_start("in", 1, Offset::Invalid);
        let at = |b: &mut OffsetBook| {
            b.engine_positions()
                .into_iter()
                .map(|o| (o.partition, o.next_offset))
                .collect::<Vec<_>>()
        };
        assert_eq!(at(&mut b), [(0, 40), (1, -2)]);
        b.handled("in", 0, 40);
        b.hold("in", 1, 0);
        // Held (dead-lettered) messages are in the engine's counts: the
        // position moves past them.
        assert_eq!(at(&mut b), [(0, 41), (1, 1)]);
        // With checkpoints, the revoke commits nothing of its own and the
        // positions survive for a later assignment.
        assert_eq!(b.revoke(&tpl).count(), 0);
        let mut again = TopicPartitionList::new();
        again.add_partition("in", 1);
        let (set, _) = b.apply_positions(&mut again);
        assert_eq!(positions(&set), [("in".into(), 1, 1)]);
    }

    #[test]
    fn without_checkpoints_a_partition_assigned_here_again_resumes_where_the_engine_is() {
        let mut b = OffsetBook::new(&["in".into()]);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("in", 0);
        // First assignment: the committed offset (nothing set here).
        let (set, unknown) = b.apply_positions(&mut tpl);
        assert_eq!((set.count(), unknown.count()), (0, 0));
        b.record_start("in", 0, Offset::Offset(5));
        assert!(b.engine_positions().is_empty());
        b.assign(&tpl);
        for o in 5..12 {
            b.handled("in", 0, o);
        }
        let _ = b.take_moved();
        b.handled("in", 0, 12);
        b.hold("in", 0, 13);
        // The revoke commits what is handled (13: the dead letter of 13 is
        // not acknowledged yet)...
        assert_eq!(positions(&b.revoke(&tpl)), [("in".into(), 0, 13)]);
        // ...but if the partition comes back here, the engine took 5..=13
        // already: it resumes at 14, not at the committed 13.
        let mut again = TopicPartitionList::new();
        again.add_partition("in", 0);
        again.add_partition("in", 1);
        let (set, unknown) = b.apply_positions(&mut again);
        assert_eq!(positions(&set), [("in".into(), 0, 14)]);
        assert_eq!(unknown.count(), 0);
        assert_eq!(
            positions(&again),
            [("in".into(), 0, 14), ("in".into(), 1, -1001)]
        );
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
