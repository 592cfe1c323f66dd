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
    /// State in the state store (the book is gated): `None` while the
    /// partition's state is restoring (its messages are ignored), then the
    /// first offset its state does not cover (earlier messages are ignored).
    /// Always `Some(i64::MIN)` when not gated.
    accept_from: Option<i64>,
    /// State in the state store: the ownership epoch this assignment writes
    /// its snapshots with (known once restored).
    claim: Option<u64>,
    /// State in the state store: the `next_offset` of the last snapshot
    /// written (or restored), so an unchanged partition is not written again.
    saved: Option<i64>,
}

impl PartitionOffsets {
    /// The message at `offset` is seen: the next position is past it.
    fn seen(&mut self, offset: i64) {
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

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
    parts: hashbrown::HashMap<u32, PartitionOffsets>,
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
    /// State in the state store (`checkpoint.store = "kafka"`): a newly
    /// assigned partition takes no message until its state is restored.
    gated: bool,
}

/// A restored partition whose state moved since its last snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDue {
    pub topic: String,
    pub partition: i32,
    pub pid: u32,
    /// The assignment it belongs to (see [`OffsetBook::saved`]).
    pub assignment: u64,
    /// The ownership epoch to write with.
    pub claim: u64,
    /// The snapshot covers offsets below this.
    pub next_offset: i64,
}

/// A partition given up (revoked or lost), as the book knew it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GivenUp {
    pub topic: String,
    pub partition: i32,
    pub pid: u32,
    /// Its state was still restoring (there is none here to save).
    pub restoring: bool,
    pub claim: Option<u64>,
    /// One past the last message taken (`None`: none taken, nor restored).
    pub next_offset: Option<i64>,
    /// Nothing moved since the last snapshot written or restored.
    pub unchanged: bool,
    /// Dead-letter records of it still unacknowledged.
    pub held: usize,
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

    /// State moves through the state store: newly assigned partitions take
    /// no message until [`Self::restored`].
    pub fn gate_until_restored(&mut self) {
        self.gated = true;
    }

    /// Whether the message at `offset` of its partition is to be taken:
    /// always when not gated; when gated, only once the partition's state is
    /// restored and only from the first offset that state does not cover.
    /// `pid` is [`Self::pid`] of the message's (topic, partition).
    pub fn admits(&self, pid: u32, offset: i64) -> bool {
        if !self.gated {
            return true;
        }
        self.parts
            .get(&pid)
            .and_then(|p| p.accept_from)
            .is_some_and(|from| offset >= from)
    }

    /// The current assignment of (topic, partition), to recognise it when
    /// a restore started for it completes; `None` when not assigned.
    pub fn assignment(&mut self, topic: &str, partition: i32) -> Option<u64> {
        let pid = self.ids.id(topic, partition);
        self.parts.get(&pid).map(|p| p.epoch)
    }

    /// Whether (topic, partition) is assigned and its state still restoring.
    pub fn is_restoring(&mut self, topic: &str, partition: i32) -> bool {
        let pid = self.ids.id(topic, partition);
        self.parts
            .get(&pid)
            .is_some_and(|p| p.accept_from.is_none())
    }

    /// The state of assignment `assignment` of (topic, partition) is
    /// restored, written from now on with epoch `claim`, covering offsets
    /// below `next_offset` (`None`: empty state, from the beginning).
    /// Returns false (and changes nothing) when that assignment is over.
    pub fn restored(
        &mut self,
        topic: &str,
        partition: i32,
        assignment: u64,
        claim: u64,
        next_offset: Option<i64>,
    ) -> bool {
        let pid = self.ids.id(topic, partition);
        let Some(p) = self.parts.get_mut(&pid).filter(|p| p.epoch == assignment) else {
            return false;
        };
        p.accept_from = Some(next_offset.unwrap_or(i64::MIN));
        p.claim = Some(claim);
        p.next = next_offset;
        p.saved = next_offset;
        true
    }

    /// Restored partitions whose state moved since their last snapshot (and,
    /// unless `with_held`, with no dead-letter record unacknowledged, whose
    /// message the snapshot would cover as handled), ascending.
    pub fn snapshots_due(&mut self, with_held: bool) -> Vec<SnapshotDue> {
        let mut due: Vec<SnapshotDue> = self
            .parts
            .iter()
            .filter_map(|(&pid, p)| {
                let next = p.next?;
                let claim = p.claim?;
                (p.accept_from.is_some()
                    && p.saved != Some(next)
                    && (with_held || p.held.is_empty()))
                .then(|| SnapshotDue {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    pid,
                    assignment: p.epoch,
                    claim,
                    next_offset: next,
                })
            })
            .collect();
        due.sort_by_key(|d| d.pid);
        due
    }

    /// A snapshot of assignment `assignment` covering offsets below
    /// `next_offset` is written. Returns whether that assignment is current
    /// (then its offset may be stored for commit).
    pub fn saved(
        &mut self,
        topic: &str,
        partition: i32,
        assignment: u64,
        next_offset: i64,
    ) -> bool {
        let pid = self.ids.id(topic, partition);
        match self.parts.get_mut(&pid).filter(|p| p.epoch == assignment) {
            Some(p) => {
                p.saved = Some(p.saved.map_or(next_offset, |s| s.max(next_offset)));
                true
            }
            None => false,
        }
    }

    /// Forgets the partitions of `tpl` (revoked or lost) and says, for each
    /// that was assigned, what its final snapshot needs.
    pub fn give_up(&mut self, tpl: &TopicPartitionList) -> Vec<GivenUp> {
        let mut out = Vec::new();
        for e in tpl.elements() {
            let pid = self.ids.id(e.topic(), e.partition());
            if let Some(p) = self.parts.remove(&pid) {
                out.push(GivenUp {
                    topic: p.topic,
                    partition: p.partition,
                    pid,
                    restoring: p.accept_from.is_none(),
                    claim: p.claim,
                    next_offset: p.next,
                    unchanged: p.next.is_none() || p.saved == p.next,
                    held: p.held.len(),
                });
            }
        }
        out
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
                    accept_from: if self.gated { None } else { Some(i64::MIN) },
                    claim: None,
                    saved: None,
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
        self.entry(topic, partition).1.seen(offset);
    }

    /// [`Self::handled`] for a message whose engine partition number
    /// ([`Self::pid`] of its topic and partition) is known: no lookup of the
    /// topic name when the partition has bookkeeping already.
    pub fn handled_at(&mut self, pid: u32, topic: &str, partition: i32, offset: i64) {
        match self.parts.get_mut(&pid) {
            Some(p) => p.seen(offset),
            None => self.handled(topic, partition, offset),
        }
    }

    /// Whether (topic, partition) has the assignment it had in `noted` (from
    /// [`Self::assignments`]): not revoked, nor revoked and assigned again,
    /// since.
    pub fn same_assignment(&mut self, noted: &[(u32, u64)], topic: &str, partition: i32) -> bool {
        let pid = self.ids.id(topic, partition);
        let was = noted.iter().find(|(p, _)| *p == pid).map(|(_, e)| *e);
        was.is_some() && was == self.parts.get(&pid).map(|p| p.epoch)
    }

    /// The current assignment (see [`Self::assignment`]) of every partition
    /// with bookkeeping, by engine partition number, into `out` (cleared).
    pub fn assignments(&self, out: &mut Vec<(u32, u64)>) {
        out.clear();
        out.extend(self.parts.iter().map(|(&pid, p)| (pid, p.epoch)));
    }

    /// The message at `offset` is seen but not handled until [`Self::release`].
    pub fn hold(&mut self, topic: &str, partition: i32, offset: i64) -> HoldTicket {
        let (pid, p) = self.entry(topic, partition);
        p.seen(offset);
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

    /// Dead-letter records of (topic, partition) not acknowledged yet.
    pub fn held_of(&mut self, topic: &str, partition: i32) -> usize {
        let pid = self.ids.id(topic, partition);
        self.parts.get(&pid).map_or(0, |p| p.held.len())
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
    fn gated_partitions_take_messages_only_once_restored_and_from_the_snapshot_offset() {
        let mut b = OffsetBook::new(&["in".into()]);
        b.gate_until_restored();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("in", 0);
        tpl.add_partition("in", 1);
        let (p0, p1) = (b.pid("in", 0), b.pid("in", 1));
        assert!(!b.admits(p0, 0), "not assigned");
        b.assign(&tpl);
        let a0 = b.assignment("in", 0).expect("assigned");
        let a1 = b.assignment("in", 1).expect("assigned");
        assert!(b.is_restoring("in", 0));
        assert!(!b.admits(p0, 100), "restoring");
        // Partition 0 from a snapshot covering offsets < 40, partition 1
        // empty (from its beginning).
        assert!(b.restored("in", 0, a0, 3, Some(40)));
        assert!(b.restored("in", 1, a1, 1, None));
        assert!(!b.is_restoring("in", 0));
        assert!(!b.admits(p0, 39), "covered by the snapshot");
        assert!(b.admits(p0, 40));
        assert!(b.admits(p1, 0));
        // Nothing moved: no snapshot due; then both move.
        assert!(b.snapshots_due(false).is_empty());
        b.handled("in", 0, 40);
        b.handled("in", 1, 0);
        let t = b.hold("in", 1, 1);
        let due = b.snapshots_due(false);
        assert_eq!(
            due.iter()
                .map(|d| (d.partition, d.claim, d.next_offset))
                .collect::<Vec<_>>(),
            [(0, 3, 41)],
            "partition 1 waits for its dead-letter acknowledgement"
        );
        assert_eq!(b.snapshots_due(true).len(), 2, "at shutdown it does not");
        b.release(t);
        assert!(b.saved("in", 0, a0, 41));
        assert_eq!(
            b.snapshots_due(false)
                .iter()
                .map(|d| (d.partition, d.next_offset))
                .collect::<Vec<_>>(),
            [(1, 2)]
        );
        // A restore or save of an assignment that is over changes nothing.
        let mut p0 = TopicPartitionList::new();
        p0.add_partition("in", 0);
        let gone = b.give_up(&p0);
        assert_eq!(gone.len(), 1);
        assert_eq!(
            (
                gone[0].claim,
                gone[0].next_offset,
                gone[0].unchanged,
                gone[0].restoring
            ),
            (Some(3), Some(41), true, false)
        );
        b.assign(&p0);
        assert!(!b.restored("in", 0, a0, 9, Some(50)), "an older assignment");
        assert!(!b.saved("in", 0, a0, 60));
        assert!(b.is_restoring("in", 0));
        let gone = b.give_up(&p0);
        assert!(gone[0].restoring && gone[0].claim.is_none());
    }

    /// The loop's fast path books by engine partition number; a turn notes
    /// each partition's assignment and recognises one that a rebalance
    /// callback revoked (and assigned again) in the meantime.
    #[test]
    fn booking_by_partition_number_and_noting_assignments() {
        let mut b = OffsetBook::new(&["in".into()]);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("in", 0);
        tpl.add_partition("in", 1);
        b.assign(&tpl);
        let (p0, p1) = (b.pid("in", 0), b.pid("in", 1));
        b.handled_at(p0, "in", 0, 7);
        b.handled_at(p1, "in", 1, 3);
        // A partition without bookkeeping yet gets it, as `handled` does.
        let p2 = b.pid("in", 2);
        b.handled_at(p2, "in", 2, 0);
        assert_eq!(
            positions(&b.take_moved()),
            [
                ("in".into(), 0, 8),
                ("in".into(), 1, 4),
                ("in".into(), 2, 1)
            ]
        );
        let mut noted = Vec::new();
        b.assignments(&mut noted);
        noted.sort();
        assert_eq!(noted.len(), 3);
        // Partition 1 is revoked and assigned again, partition 2 revoked.
        let mut one = TopicPartitionList::new();
        one.add_partition("in", 1);
        b.revoke(&one);
        assert!(!b.same_assignment(&noted, "in", 1));
        b.assign(&one);
        let mut two = TopicPartitionList::new();
        two.add_partition("in", 2);
        b.revoke(&two);
        assert!(b.same_assignment(&noted, "in", 0));
        assert!(!b.same_assignment(&noted, "in", 1), "assigned again");
        assert!(b.assignment("in", 1).is_some());
        assert!(!b.same_assignment(&noted, "in", 2), "revoked");
        assert!(!b.same_assignment(&noted, "in", 3), "never assigned");
    }

    #[test]
    fn ungated_books_take_every_message() {
        let mut b = OffsetBook::new(&["in".into()]);
        let p0 = b.pid("in", 0);
        assert!(b.admits(p0, 5));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("in", 0);
        b.assign(&tpl);
        assert!(b.admits(p0, 5) && !b.is_restoring("in", 0));
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
