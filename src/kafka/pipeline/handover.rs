//! Partition state that moves with its partition (`checkpoint.store =
//! "kafka"`): the input partition is the unit of state. Each owned
//! partition's engine state is written to the state store
//! ([`crate::kafka::state_store`]) with the next input offset it covers, and
//! moves through it when the group moves the partition:
//!
//! - **Assign** (rebalance callback): the new partitions are paused and
//!   marked restoring; their messages are ignored (not applied, offsets not
//!   stored). The loop loads each one's newest complete snapshot on a
//!   blocking thread, restores it into the engine (or, with none, gives the
//!   partition empty state and consumes it from its **beginning**, since its
//!   state must cover the partition from its start), seeks to the
//!   snapshot's offset (the snapshot wins over the group's committed
//!   offset), and resumes it. While any partition restores, `/readyz` fails
//!   naming them.
//! - **Periodically** (`checkpoint.interval`): every restored partition whose
//!   state moved is frozen on the loop ([`Engine::freeze_partition`]: the
//!   loop stops only for that), then encoded and written on a blocking
//!   thread, chunk by chunk as the encoder fills them; only then is the offset it covers stored for the next commit.
//! - **Revoke** (not lost; rebalance callback): the dead-letter records of
//!   the revoked partitions still unacknowledged are waited for (half of
//!   `kafka.revoke_timeout` at most; a partition with one still
//!   unacknowledged then gets no final snapshot: its last periodic one,
//!   written with nothing held, stands), then a final snapshot of each
//!   revoked partition, all within `kafka.revoke_timeout`, then a
//!   synchronous commit of the offsets they cover, then the partitions'
//!   state is dropped: they are no longer exported, fire no timer, and are
//!   not snapshotted again here.
//! - **Lost** (the group fenced this member: another may own the partitions
//!   already): the state is dropped without a snapshot; whatever this
//!   process still writes carries an older ownership epoch and never wins.
//!
//! The engine is shared with the consumer context ([`SharedEngine`]): the
//! rebalance callbacks run on the loop's own task inside `recv()`, so the
//! lock is never contended; it is never held across an `.await` nor across a
//! `recv()`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::Offset;

use super::state::Loop;
use crate::config::{Config, OnCorrupt};
use crate::engine::Engine;
use crate::engine::snapshot::FrozenPartition;
use crate::kafka::live::LiveState;
use crate::kafka::offsets::{GivenUp, OffsetBook, SnapshotDue};
use crate::kafka::state_store::{Claim, StateStore};
use crate::telemetry::{self, Restored, SaveResult, SaveTrigger};

/// The engine, shared by the consumer loop and the rebalance callbacks.
pub type SharedEngine = Arc<Mutex<Engine>>;

/// The engine behind `e`, also when a panic elsewhere poisoned the lock.
pub fn lock_engine(e: &Mutex<Engine>) -> MutexGuard<'_, Engine> {
    e.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long to wait before loading a partition's state again after the
/// state store could not be read.
const RESTORE_RETRY: Duration = Duration::from_secs(1);
/// Longest a state load may take before it is tried again.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a seek of a restored partition may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the rebalance callbacks and the loop share to move state.
pub struct Handover {
    pub store: Arc<StateStore>,
    /// The budget of a revoke's final snapshots (`kafka.revoke_timeout`).
    pub revoke_timeout: Duration,
    /// The budget of one periodic snapshot write (`checkpoint.interval`).
    pub save_timeout: Duration,
    /// Partitions assigned whose restore the loop has not started yet.
    assigned: Mutex<Vec<(String, i32)>>,
    /// Engine partitions given up since the loop last looked (for its own
    /// per-partition bookkeeping).
    gone: Mutex<Vec<u32>>,
    /// Shutting down: every partition's final snapshot is written already;
    /// the revoke of the closing consumer only drops state.
    closing: AtomicBool,
    /// The state topic was checked (created if missing) once.
    topic_ready: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handover {
    pub fn new(store: Arc<StateStore>, revoke_timeout: Duration, save_timeout: Duration) -> Self {
        Handover {
            store,
            revoke_timeout,
            save_timeout,
            assigned: Mutex::new(Vec::new()),
            gone: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            topic_ready: AtomicBool::new(false),
        }
    }

    /// Blocking: the state topic is checked (created if missing) before the
    /// first load; until that succeeds, every load tries it again.
    fn load(&self, topic: &str, partition: i32) -> anyhow::Result<Claim> {
        if !self.topic_ready.load(Ordering::Relaxed) {
            self.store.ensure_topic(LOAD_TIMEOUT)?;
            self.topic_ready.store(true, Ordering::Relaxed);
        }
        self.store.load(topic, partition, LOAD_TIMEOUT)
    }

    /// Assign callback: the partitions of `tpl` (already in the offset book,
    /// restoring) wait for the loop to restore them.
    pub fn assigned(&self, tpl: &TopicPartitionList, live: &LiveState) {
        let mut q = lock(&self.assigned);
        for e in tpl.elements() {
            live.restoring(e.topic(), e.partition(), true);
            q.push((e.topic().to_string(), e.partition()));
        }
    }

    fn take_assigned(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *lock(&self.assigned))
    }

    fn take_gone(&self) -> Vec<u32> {
        std::mem::take(&mut *lock(&self.gone))
    }

    /// Writes one snapshot (blocking), reports it, and says whether it was
    /// written. The store writes one snapshot of a partition at a time; a
    /// periodic write that loses the race against a revoke's final one is
    /// still a consistent (state, offset) pair, and once the next owner has
    /// claimed its epoch, it cannot win.
    /// The frozen view is encoded here, on the thread that writes (never
    /// the loop's, except inside a revoke callback, which blocks the loop
    /// anyway), straight into the chunk records as they fill.
    fn write(
        &self,
        t: Target<'_>,
        frozen: Frozen,
        timeout: Duration,
        trigger: SaveTrigger,
    ) -> bool {
        let Target {
            topic,
            partition,
            epoch,
            next_offset,
        } = t;
        let t0 = Instant::now();
        let (ok, result) = if timeout.is_zero() {
            (false, Err(None))
        } else {
            let view = frozen.view;
            match self
                .store
                .save_streamed(topic, partition, epoch, next_offset, timeout, |out| {
                    view.write_to(out)
                }) {
                Ok(s) => (true, Ok(s)),
                Err(e) => (false, Err(Some(e))),
            }
        };
        let result = match &result {
            Ok(s) => SaveResult::Ok {
                bytes: s.bytes,
                chunks: s.chunks,
            },
            Err(Some(e)) => SaveResult::Failed { error: e },
            Err(None) => SaveResult::NoTimeLeft,
        };
        telemetry::PartitionStateSaved {
            topic,
            partition,
            epoch,
            next_offset,
            trigger,
            result,
            froze: frozen.took,
            took: t0.elapsed(),
        }
        .emit();
        ok
    }

    /// Revoke (or lost) callback, before the partitions are unassigned:
    /// final snapshots within `revoke_timeout` (none when `lost`), then the
    /// state is dropped. Returns the offsets the written snapshots cover, to
    /// store and commit before the callback returns.
    pub fn give_up(
        &self,
        engine: &Mutex<Engine>,
        book: &Mutex<OffsetBook>,
        live: &LiveState,
        tpl: &TopicPartitionList,
        lost: bool,
    ) -> TopicPartitionList {
        let now = Instant::now();
        let deadline = now + self.revoke_timeout;
        let closing = self.closing.load(Ordering::Relaxed);
        if !lost && !closing {
            // Half the budget at most: the final snapshots need the rest.
            await_dead_letters(book, tpl, now + self.revoke_timeout / 2);
        }
        let given_up = lock(book).give_up(tpl);
        let mut covered = TopicPartitionList::new();
        for g in &given_up {
            if !lost
                && !closing
                && let Some(next) = self.final_snapshot(engine, g, deadline)
            {
                let _ = covered.add_partition_offset(&g.topic, g.partition, Offset::Offset(next));
            }
            lock_engine(engine).drop_partition(g.pid);
            telemetry::partition_owned(&g.topic, g.partition, false);
            live.restoring(&g.topic, g.partition, false);
            telemetry::PartitionStateDropped {
                topic: &g.topic,
                partition: g.partition,
                lost,
                restoring: g.restoring,
            }
            .emit();
        }
        lock(&self.gone).extend(given_up.iter().map(|g| g.pid));
        covered
    }

    /// The final snapshot of a revoked partition, when it has state that
    /// moved since its last one; the offset its newest snapshot covers (to
    /// commit), once written.
    fn final_snapshot(
        &self,
        engine: &Mutex<Engine>,
        g: &GivenUp,
        deadline: Instant,
    ) -> Option<i64> {
        let (Some(claim), Some(next)) = (g.claim, g.next_offset) else {
            return None;
        };
        if g.restoring {
            return None;
        }
        if g.unchanged {
            // Its last snapshot (written or restored) covers it already.
            return Some(next);
        }
        if g.held > 0 {
            // A snapshot would cover their messages as handled, and a record
            // never delivered would be lost with this owner: no final
            // snapshot, no commit past the last one (written only with
            // nothing held); the next owner replays from there and sends
            // those records again.
            telemetry::DeadLettersAtRevoke {
                topic: &g.topic,
                partition: g.partition,
                held: g.held,
            }
            .emit();
            return None;
        }
        let frozen = Frozen::take(&mut lock_engine(engine), g.pid)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let target = Target {
            topic: &g.topic,
            partition: g.partition,
            epoch: claim,
            next_offset: next,
        };
        self.write(target, frozen, left, SaveTrigger::Revoke)
            .then_some(next)
    }
}

/// A partition's state frozen on the loop (see
/// [`Engine::freeze_partition`]), to encode and write on a blocking thread;
/// with the time the loop was stopped to take it.
pub struct Frozen {
    view: FrozenPartition,
    took: Duration,
}

impl Frozen {
    /// Freezes partition `pid` (None if not held).
    fn take(engine: &mut Engine, pid: u32) -> Option<Frozen> {
        let t0 = Instant::now();
        let view = engine.freeze_partition(pid)?;
        Some(Frozen {
            view,
            took: t0.elapsed(),
        })
    }
}

/// Waits (blocking, inside the revoke callback) until the dead-letter records
/// of the partitions of `tpl` are acknowledged, or `until`. The deliveries
/// release their offsets themselves (see `dead_letters.rs`), so this needs
/// no turn of the loop.
fn await_dead_letters(book: &Mutex<OffsetBook>, tpl: &TopicPartitionList, until: Instant) {
    let held = || -> usize {
        let mut b = lock(book);
        tpl.elements()
            .iter()
            .map(|e| b.held_of(e.topic(), e.partition()))
            .sum()
    };
    while held() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a snapshot write is of: the partition, the ownership epoch it is
/// written with, and the input offsets it covers (those below `next_offset`).
#[derive(Clone, Copy)]
struct Target<'a> {
    topic: &'a str,
    partition: i32,
    epoch: u64,
    next_offset: i64,
}

/// A state load finished (on a blocking thread).
pub struct RestoreDone {
    topic: String,
    partition: i32,
    /// The assignment it was started for.
    assignment: u64,
    /// When the partition was assigned (for the restore time).
    since: Instant,
    claim: anyhow::Result<Claim>,
}

/// Periodic snapshot writes finished: the ones written.
pub struct SavesDone {
    written: Vec<SnapshotDue>,
}

/// The loop's side of state moves.
#[derive(Default)]
pub struct Moves {
    pub handover: Option<Arc<Handover>>,
    /// The ownership epoch (state store claim) of each restored partition,
    /// written into its partials (0 without a state store).
    claims: HashMap<u32, u64>,
    /// Holds writes back after the loop was stopped for long (see
    /// [`StallGuard`]).
    pub stall: StallGuard,
    /// State loads in flight.
    pub restores: tokio::task::JoinSet<RestoreDone>,
    /// Loads to try again: (when, topic, partition, assigned since).
    retries: Vec<(Instant, String, i32, Instant)>,
    /// The periodic snapshot writes in flight (one batch at a time).
    pub saves: tokio::task::JoinSet<SavesDone>,
    /// `checkpoint.on_corrupt`, for a snapshot the engine refuses.
    on_corrupt: Option<OnCorrupt>,
    /// Set when a refused snapshot must stop the process
    /// (`checkpoint.on_corrupt = "fail"`).
    pub fatal: Option<String>,
}

impl Moves {
    pub fn new(handover: Option<Arc<Handover>>, cfg: &Config) -> Moves {
        Moves {
            handover,
            on_corrupt: Some(cfg.checkpoint.on_corrupt),
            stall: StallGuard::new(stall_threshold(cfg)),
            ..Moves::default()
        }
    }

    /// The ownership epoch partition `pid`'s partials are written with: the
    /// state store's claim for it, 0 without a state store (or not
    /// restored yet).
    pub fn epoch(&self, pid: u32) -> u64 {
        self.claims.get(&pid).copied().unwrap_or(0)
    }

    /// Whether the loop must not write partials, totals or state now: it was
    /// stopped for long just before (see [`StallGuard`]).
    pub fn holding(&mut self) -> bool {
        self.stall.holding(Instant::now())
    }
}

/// Half the consumer's `session.timeout.ms` (librdkafka's default 45 s):
/// a loop stopped that long may have lost its partitions.
fn stall_threshold(cfg: &Config) -> Duration {
    let ms = crate::kafka::client::settings(&cfg.kafka, crate::kafka::client::Role::Consumer)
        .ok()
        .and_then(|s| s.get("session.timeout.ms")?.parse::<u64>().ok())
        .unwrap_or(45_000);
    Duration::from_millis(ms / 2)
}

/// How long writes are held after a stall: librdkafka checks the session
/// about every second, and the loop dispatches the resulting "lost"
/// rebalance at its next `recv()`.
const STALL_HOLD: Duration = Duration::from_secs(3);

/// A process stopped (SIGSTOP, a frozen VM, a long pause) for longer than
/// its session timeout was removed from the group and its partitions are
/// another member's, but it learns so only when librdkafka's session check
/// runs and the loop dispatches the "lost" rebalance, after the timers due
/// meanwhile (publish, periodic snapshots) have fired. Their writes would
/// carry the old ownership epoch (the state store and the partials fold
/// refuse them), but the output topic's totals carry none. So: when the
/// loop sees a gap of more than the threshold since its previous turn, it
/// holds partials, totals and state writes back for [`STALL_HOLD`].
#[derive(Debug)]
pub struct StallGuard {
    threshold: Duration,
    last: Instant,
    until: Option<Instant>,
}

impl Default for StallGuard {
    fn default() -> Self {
        StallGuard::new(Duration::from_secs(22))
    }
}

impl StallGuard {
    pub fn new(threshold: Duration) -> Self {
        StallGuard {
            threshold,
            last: Instant::now(),
            until: None,
        }
    }

    /// The loop takes a turn at `now`. Returns the gap when it is a stall
    /// (and says so in the log).
    pub fn turn(&mut self, now: Instant) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.last);
        self.last = now;
        if gap < self.threshold {
            return None;
        }
        self.until = Some(now + STALL_HOLD);
        telemetry::LoopStalled {
            stopped: gap,
            hold: STALL_HOLD,
        }
        .emit();
        Some(gap)
    }

    /// Whether writes are held at `now` (a turn is taken first).
    pub fn holding(&mut self, now: Instant) -> bool {
        self.turn(now);
        self.until.is_some_and(|u| now < u)
    }
}

impl Loop {
    /// After the rebalance callbacks may have run: restores of newly
    /// assigned partitions start, and the loop forgets what it kept of
    /// partitions given up.
    pub fn follow_rebalance(&mut self) {
        self.moves.stall.turn(Instant::now());
        let Some(h) = self.moves.handover.clone() else {
            return;
        };
        for pid in h.take_gone() {
            self.latency.forget(pid);
            self.moves.claims.remove(&pid);
        }
        let now = Instant::now();
        for (topic, partition) in h.take_assigned() {
            self.start_restore(&h, topic, partition, now);
        }
        if !self.moves.retries.is_empty() {
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.moves.retries)
                .into_iter()
                .partition(|r| r.0 <= now);
            self.moves.retries = later;
            for (_, topic, partition, since) in due {
                self.start_restore(&h, topic, partition, since);
            }
        }
    }

    fn start_restore(&mut self, h: &Arc<Handover>, topic: String, partition: i32, since: Instant) {
        let Some(assignment) = self.book().assignment(&topic, partition) else {
            return;
        };
        let h = h.clone();
        self.moves.restores.spawn_blocking(move || {
            let claim = h.load(&topic, partition);
            RestoreDone {
                topic,
                partition,
                assignment,
                since,
                claim,
            }
        });
    }

    /// A state load finished: restore the state, seek, resume.
    pub fn restore_done(&mut self, r: Result<RestoreDone, tokio::task::JoinError>) {
        let d = match r {
            Ok(d) => d,
            Err(e) => {
                // The partition stays paused; a panic in a load is a bug.
                telemetry::TaskFailed {
                    task: "state load",
                    error: &e,
                }
                .emit();
                return;
            }
        };
        let (topic, partition) = (d.topic.as_str(), d.partition);
        if self.book().assignment(topic, partition) != Some(d.assignment) {
            // Revoked (perhaps assigned again) meanwhile.
            return;
        }
        let claim = match d.claim {
            Ok(c) => c,
            Err(e) => {
                telemetry::RestoreFailed {
                    topic,
                    partition,
                    error: &e,
                    retry_in: RESTORE_RETRY,
                }
                .emit();
                self.moves.retries.push((
                    Instant::now() + RESTORE_RETRY,
                    d.topic,
                    d.partition,
                    d.since,
                ));
                return;
            }
        };
        for why in &claim.refused {
            telemetry::StateRecordRefused {
                topic,
                partition,
                why,
            }
            .emit();
        }
        let pid = self.book().pid(topic, partition);
        // The snapshot's state and the offset it covers, or empty state
        // from the beginning (no snapshot, or one the engine refuses).
        let mut refusal = None;
        let next = match &claim.loaded {
            Some(s) => match self.engine().restore_partition(pid, &s.bytes) {
                Ok(()) => Some(s.next_offset),
                Err(e) => {
                    refusal = Some(e.to_string());
                    None
                }
            },
            None => None,
        };
        if let Some(why) = &refusal {
            telemetry::StateRecordRefused {
                topic,
                partition,
                why,
            }
            .emit();
            if self.moves.on_corrupt == Some(OnCorrupt::Fail) {
                self.moves.fatal = Some(format!(
                    "the state snapshot of {topic}/{partition} is refused ({why}) and checkpoint.on_corrupt = \"fail\""
                ));
                return;
            }
        }
        if next.is_none() {
            // Nothing of an earlier assignment can be left, but if it
            // were, it would not match consumption from the beginning.
            let mut engine = self.engine();
            engine.drop_partition(pid);
            engine.ensure_partition(pid);
        }
        if !self
            .book()
            .restored(topic, partition, d.assignment, claim.epoch, next)
        {
            return;
        }
        self.moves.claims.insert(pid, claim.epoch);
        let start = next.map_or(Offset::Beginning, Offset::Offset);
        self.start_consuming(topic, partition, start);
        self.live.restoring(topic, partition, false);
        telemetry::partition_owned(topic, partition, true);
        let how = match (&claim.loaded, &refusal) {
            (Some(s), None) => Restored::Snapshot {
                next_offset: s.next_offset,
                snapshot_epoch: s.epoch,
                seq: s.seq,
            },
            (_, Some(why)) => Restored::Refused { error: why },
            (None, None) => Restored::Empty,
        };
        telemetry::PartitionRestored {
            topic,
            partition,
            epoch: claim.epoch,
            how,
            bytes_read: claim.bytes_read,
            records_read: claim.records_read,
            took: d.since.elapsed(),
        }
        .emit();
    }

    /// Seeks a restored partition to `start` and resumes it.
    fn start_consuming(&self, topic: &str, partition: i32, start: Offset) {
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(topic, partition, start);
        match self.consumer.seek_partitions(tpl.clone(), SEEK_TIMEOUT) {
            Ok(r) => {
                for e in r.elements() {
                    if let Err(err) = e.error() {
                        telemetry::PartitionStartFailed {
                            topic,
                            partition,
                            what: "seek",
                            error: &err,
                        }
                        .emit();
                    }
                }
            }
            Err(e) => telemetry::PartitionStartFailed {
                topic,
                partition,
                what: "seek",
                error: &e,
            }
            .emit(),
        }
        if let Err(e) = self.consumer.resume(&tpl) {
            telemetry::PartitionStartFailed {
                topic,
                partition,
                what: "resume",
                error: &e,
            }
            .emit();
        }
    }

    /// Every `checkpoint.interval`: snapshots of the restored partitions
    /// whose state moved, written on a blocking thread (one batch at a time).
    pub fn save_partitions(&mut self) {
        let Some(h) = self.moves.handover.clone() else {
            return;
        };
        if !self.moves.saves.is_empty() || self.moves.holding() {
            return;
        }
        let due = self.book().snapshots_due(false);
        if due.is_empty() {
            return;
        }
        let jobs = self.freeze_jobs(due);
        let book = self.book.clone();
        let timeout = h.save_timeout;
        self.moves.saves.spawn_blocking(move || SavesDone {
            written: write_all(&h, &book, jobs, timeout, SaveTrigger::Periodic, None),
        });
    }

    /// Each due partition frozen now (encoded later, by the task that
    /// writes it).
    fn freeze_jobs(&self, due: Vec<SnapshotDue>) -> Vec<(SnapshotDue, Frozen)> {
        let mut engine = self.engine();
        due.into_iter()
            .filter_map(|d| Frozen::take(&mut engine, d.pid).map(|f| (d, f)))
            .collect()
    }

    /// Periodic writes finished: store the offsets the written snapshots
    /// cover (for partitions still in the same assignment).
    pub fn saves_done(&mut self, r: Result<SavesDone, tokio::task::JoinError>) {
        match r {
            Ok(done) => self.store_covered(&done.written),
            Err(e) => telemetry::TaskFailed {
                task: "state snapshot write",
                error: &e,
            }
            .emit(),
        }
    }

    fn store_covered(&mut self, written: &[SnapshotDue]) {
        let mut tpl = TopicPartitionList::new();
        {
            let mut book = self.book();
            for d in written {
                if book.saved(&d.topic, d.partition, d.assignment, d.next_offset) {
                    let _ = tpl.add_partition_offset(
                        &d.topic,
                        d.partition,
                        Offset::Offset(d.next_offset),
                    );
                }
            }
        }
        if tpl.count() > 0 {
            self.store(&tpl, "snapshot offsets");
        }
    }

    /// At shutdown, before the final commit: the periodic writes in flight
    /// finish, then every restored partition whose state moved gets its
    /// final snapshot, all by `deadline`. Returns the problems.
    pub async fn final_saves(&mut self, deadline: tokio::time::Instant) -> Vec<String> {
        let Some(h) = self.moves.handover.clone() else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        while let Ok(Some(done)) =
            tokio::time::timeout_at(deadline, self.moves.saves.join_next()).await
        {
            self.saves_done(done);
        }
        // Not of a partition with a dead-letter record still unacknowledged
        // (the shutdown waited for them already): its offsets stay
        // uncommitted, and its last snapshot, written with nothing held,
        // stands (as at a revoke).
        let due = self.book().snapshots_due(false);
        let held = self.book().held_count();
        if held > 0 {
            problems.push(format!(
                "{held} dead-letter records unacknowledged: their partitions get no final snapshot"
            ));
        }
        let jobs = self.freeze_jobs(due);
        let wanted = jobs.len();
        let book = self.book.clone();
        let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
        let until = Instant::now() + budget;
        let hh = h.clone();
        let task = tokio::task::spawn_blocking(move || {
            write_all(&hh, &book, jobs, budget, SaveTrigger::Shutdown, Some(until))
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(written)) => {
                if written.len() < wanted {
                    problems.push(format!(
                        "{} of {wanted} final partition snapshots not written",
                        wanted - written.len()
                    ));
                }
                self.store_covered(&written);
            }
            Ok(Err(e)) => problems.push(format!("final partition snapshots panicked: {e}")),
            Err(_) => problems.push("final partition snapshots did not finish in time".into()),
        }
        // The closing consumer's revoke has nothing left to write.
        h.closing.store(true, Ordering::Relaxed);
        problems
    }
}

/// Writes `jobs` one after the other (skipping partitions whose assignment
/// ended meanwhile), each within `timeout` (and all by `until`, if given);
/// returns those written.
fn write_all(
    h: &Handover,
    book: &Mutex<OffsetBook>,
    jobs: Vec<(SnapshotDue, Frozen)>,
    timeout: Duration,
    trigger: SaveTrigger,
    until: Option<Instant>,
) -> Vec<SnapshotDue> {
    let mut written = Vec::new();
    for (d, frozen) in jobs {
        if lock(book).assignment(&d.topic, d.partition) != Some(d.assignment) {
            continue;
        }
        let t = until.map_or(timeout, |u| {
            timeout.min(u.saturating_duration_since(Instant::now()))
        });
        let target = Target {
            topic: &d.topic,
            partition: d.partition,
            epoch: d.claim,
            next_offset: d.next_offset,
        };
        if h.write(target, frozen, t, trigger) {
            written.push(d);
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Turns closer than the threshold hold nothing; a gap of the threshold
    /// or more (a stopped process) holds writes for `STALL_HOLD` after it.
    #[test]
    fn a_stall_holds_writes_for_a_moment() {
        let t0 = Instant::now();
        let mut g = StallGuard::new(Duration::from_secs(3));
        g.last = t0;
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(!g.holding(at(200)));
        assert_eq!(g.turn(at(2_900)), None, "2.7 s since the last turn");
        assert!(!g.holding(at(3_000)));
        // Stopped 10 s: held from then for 3 s.
        assert_eq!(g.turn(at(13_000)), Some(Duration::from_secs(10)));
        assert!(g.holding(at(13_100)));
        assert!(g.holding(at(15_900)));
        assert!(!g.holding(at(16_000)));
        // `holding` takes a turn too: a stall seen there holds at once.
        assert!(g.holding(at(30_000)));
    }
}
