//! Events of partition state moving through the state store
//! (`checkpoint.store = "kafka"`): restores on assignment, snapshots
//! (periodic, on revoke, at shutdown), partitions given up.

use std::time::Duration;

use tracing::{error, info, warn};

use super::metrics;

/// Why a partition snapshot was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveTrigger {
    Periodic,
    Revoke,
    Shutdown,
}

impl SaveTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            SaveTrigger::Periodic => "periodic",
            SaveTrigger::Revoke => "revoke",
            SaveTrigger::Shutdown => "shutdown",
        }
    }
}

/// How a partition snapshot write ended.
pub enum SaveResult<'a> {
    Ok {
        bytes: u64,
        chunks: u32,
    },
    /// The write failed (or its time ran out); `next_offset` stays uncommitted.
    Failed {
        error: &'a dyn std::fmt::Display,
    },
    /// No time was left in the revoke (or shutdown) budget to even start it.
    NoTimeLeft,
}

impl SaveResult<'_> {
    pub const LABELS: [&'static str; 3] = ["ok", "error", "timeout"];

    fn label(&self) -> &'static str {
        match self {
            SaveResult::Ok { .. } => "ok",
            SaveResult::Failed { .. } => "error",
            SaveResult::NoTimeLeft => "timeout",
        }
    }
}

/// A partition's state snapshot was written to the state store (or not).
pub struct PartitionStateSaved<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub epoch: u64,
    pub next_offset: i64,
    pub trigger: SaveTrigger,
    pub result: SaveResult<'a>,
    /// How long the consumer loop stopped to freeze the partition's state.
    pub froze: Duration,
    /// Encode and write, off the loop.
    pub took: Duration,
}

impl PartitionStateSaved<'_> {
    pub fn emit(self) {
        let (topic, partition, epoch, next_offset) =
            (self.topic, self.partition, self.epoch, self.next_offset);
        let trigger = self.trigger.as_str();
        let ms = self.took.as_secs_f64() * 1e3;
        let freeze_ms = self.froze.as_secs_f64() * 1e3;
        metrics()
            .state_saves
            .with_label_values(&[self.result.label()])
            .inc();
        match self.result {
            SaveResult::Ok { bytes, chunks } => info!(
                topic,
                partition,
                epoch,
                next_offset,
                trigger,
                bytes,
                chunks,
                freeze_ms,
                ms,
                "partition state saved"
            ),
            SaveResult::Failed { error } => error!(
                topic,
                partition,
                epoch,
                next_offset,
                trigger,
                ms,
                error = %error,
                "partition state not saved; its offsets stay uncommitted (the next owner replays from the previous snapshot)"
            ),
            SaveResult::NoTimeLeft => error!(
                topic,
                partition,
                epoch,
                next_offset,
                trigger,
                "partition state not saved: kafka.revoke_timeout (or the shutdown deadline) ran out; \
                 the next owner replays from the previous snapshot"
            ),
        }
    }
}

/// How an assigned partition's state was set up.
pub enum Restored<'a> {
    /// From the newest complete snapshot in the state store.
    Snapshot {
        next_offset: i64,
        snapshot_epoch: u64,
        seq: u64,
    },
    /// No snapshot: empty state, consumed from the partition's beginning.
    Empty,
    /// The snapshot was refused by the engine and `checkpoint.on_corrupt`
    /// is not `fail`: empty state, from the beginning.
    Refused { error: &'a dyn std::fmt::Display },
}

/// An assigned partition's state is ready; its consumption resumes.
pub struct PartitionRestored<'a> {
    pub topic: &'a str,
    pub partition: i32,
    /// The epoch this owner writes with.
    pub epoch: u64,
    pub how: Restored<'a>,
    pub bytes_read: u64,
    pub records_read: u64,
    pub took: Duration,
}

impl PartitionRestored<'_> {
    pub fn emit(self) {
        let (topic, partition, epoch) = (self.topic, self.partition, self.epoch);
        let (bytes_read, records_read) = (self.bytes_read, self.records_read);
        let s = self.took.as_secs_f64();
        let m = metrics();
        m.state_restore_seconds.observe(s);
        m.state_restore_bytes.inc_by(bytes_read);
        let ms = s * 1e3;
        match self.how {
            Restored::Snapshot {
                next_offset,
                snapshot_epoch,
                seq,
            } => info!(
                topic,
                partition,
                epoch,
                next_offset,
                snapshot_epoch,
                seq,
                bytes_read,
                records_read,
                ms,
                "partition state restored; consuming from the snapshot's offset"
            ),
            Restored::Empty => info!(
                topic,
                partition,
                epoch,
                bytes_read,
                records_read,
                ms,
                "no state snapshot for this partition: empty state, consuming from its beginning"
            ),
            Restored::Refused { error } => error!(
                topic,
                partition,
                epoch,
                error = %error,
                "partition snapshot refused: EMPTY STATE, consuming the partition from its beginning"
            ),
        }
    }
}

/// A record or snapshot of the state store was skipped while loading
/// (bad record, incomplete or corrupt snapshot, refused by the engine).
pub struct StateRecordRefused<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub why: &'a str,
}

impl StateRecordRefused<'_> {
    pub fn emit(self) {
        warn!(
            topic = self.topic,
            partition = self.partition,
            why = self.why,
            "state store record refused (skipped)"
        );
        metrics().state_refused.inc();
    }
}

/// The state store could not be read for an assigned partition; the
/// partition stays paused and the load is tried again.
pub struct RestoreFailed<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub error: &'a dyn std::fmt::Display,
    pub retry_in: Duration,
}

impl RestoreFailed<'_> {
    pub fn emit(self) {
        warn!(
            topic = self.topic,
            partition = self.partition,
            error = %self.error,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "cannot read the partition's state from the state store; it stays paused"
        );
    }
}

/// A partition's state left this process (revoked after its final
/// snapshot, or lost without one).
pub struct PartitionStateDropped<'a> {
    pub topic: &'a str,
    pub partition: i32,
    /// The assignment was lost (another member may own it already): no
    /// final snapshot was attempted.
    pub lost: bool,
    /// The partition was still restoring (it had no state here).
    pub restoring: bool,
}

impl PartitionStateDropped<'_> {
    pub fn emit(self) {
        info!(
            topic = self.topic,
            partition = self.partition,
            lost = self.lost,
            restoring = self.restoring,
            "partition state dropped"
        );
    }
}

/// Seeking or resuming a restored partition failed.
pub struct PartitionStartFailed<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub what: &'static str,
    pub error: &'a dyn std::fmt::Display,
}

impl PartitionStartFailed<'_> {
    pub fn emit(self) {
        error!(
            topic = self.topic,
            partition = self.partition,
            error = %self.error,
            "{} of a restored partition failed",
            self.what
        );
    }
}

/// `cxpulse_partition_owned{topic,partition}`: 1 while this process holds
/// and exports the partition's state; the series is removed when it stops.
pub fn partition_owned(topic: &str, partition: i32, owned: bool) {
    let g = &metrics().partition_owned;
    let p = partition.to_string();
    if owned {
        g.with_label_values(&[topic, &p]).set(1);
    } else {
        let _ = g.remove_label_values(&[topic, &p]);
    }
}

/// A revoked partition still has dead-letter records unacknowledged after
/// the wait: it gets no final snapshot (nor a commit past its last one), so
/// they are not counted as handled; its next owner replays from its last
/// snapshot and sends them again.
pub struct DeadLettersAtRevoke<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub held: usize,
}

impl DeadLettersAtRevoke<'_> {
    pub fn emit(self) {
        warn!(
            topic = self.topic,
            partition = self.partition,
            held = self.held,
            "partition revoked while dead-letter records of it are still unacknowledged after half of kafka.revoke_timeout: \
             no final snapshot and no commit past its last snapshot; the next owner replays from there and sends them again"
        );
    }
}

/// The consumer loop took no turn for longer than half the session timeout
/// (the process was stopped, or a step blocked it): it may have lost its
/// partitions without knowing it yet, so partials, totals and state writes
/// are held back a moment, until a "lost" rebalance would have arrived.
pub struct LoopStalled {
    pub stopped: Duration,
    pub hold: Duration,
}

impl LoopStalled {
    pub fn emit(self) {
        warn!(
            stopped_ms = self.stopped.as_millis() as u64,
            hold_ms = self.hold.as_millis() as u64,
            "the consumer loop was stopped; partials, totals and state writes wait in case its partitions were lost meanwhile"
        );
    }
}
