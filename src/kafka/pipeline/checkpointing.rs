//! Checkpoints (`[checkpoint] dir` set): freeze the engine with the
//! offsets it covers (on the loop), encode them straight into the file (a
//! bounded buffer at a time, never the whole snapshot in memory) on a
//! blocking thread, and only then hand
//! those offsets to librdkafka's offset store for the next commit (see
//! [`crate::kafka`]).

use std::time::{Duration, Instant};

use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::state::Loop;
use crate::checkpoint::{CheckpointError, SavedOffset, Written};
use crate::telemetry;
use crate::telemetry::describe;

/// A due checkpoint waits at most this long (consumption paused) for the
/// dead-letter records in flight to be acknowledged.
const CHECKPOINT_DRAIN_MAX: Duration = Duration::from_secs(10);

/// A checkpoint write finished (on a blocking thread).
pub struct CheckpointDone {
    result: Result<Written, CheckpointError>,
    snapshot: Duration,
    write: Duration,
    offsets: Vec<SavedOffset>,
}

impl Loop {
    /// Freezes the engine with the offsets it covers, then encodes and
    /// writes them on a blocking thread; skipped while the previous write is
    /// in flight.
    pub fn checkpoint(&mut self) {
        let Some(store) = self.checkpoint.clone() else {
            return;
        };
        if !self.checkpoint_writes.is_empty() {
            return;
        }
        // A checkpoint covers dead-lettered messages as handled: while a
        // dead-letter record is unacknowledged, consumption pauses and the
        // checkpoint waits for it (briefly: acknowledgements take
        // milliseconds), so a crash cannot lose that record.
        if !self.paused.is_empty() {
            // Paused for an undeliverable dead-letter record: a checkpoint
            // would cover it as handled. The next interval tries again.
            self.checkpoint_due = None;
            telemetry::CheckpointPostponed {
                paused_partitions: self.paused.len(),
            }
            .emit();
            return;
        }
        if self.book().held_count() > 0 {
            let due = *self
                .checkpoint_due
                .get_or_insert_with(|| Instant::now() + CHECKPOINT_DRAIN_MAX);
            if Instant::now() < due {
                return;
            }
            telemetry::CheckpointOverdue {
                held: self.book().held_count(),
                waited: CHECKPOINT_DRAIN_MAX,
            }
            .emit();
        }
        self.checkpoint_due = None;
        let t0 = Instant::now();
        let offsets = self.book().engine_positions();
        if offsets.is_empty() {
            // Before the first assignment nothing was consumed: the newest
            // checkpoint (if any) still holds.
            return;
        }
        // Frozen on the loop (it stops only for that); encoded into the
        // file by the task that writes.
        let frozen = self.engine().freeze();
        let snapshot = t0.elapsed();
        self.checkpoint_writes.spawn_blocking(move || {
            let t = Instant::now();
            let result = store.write_streamed(&offsets, |out| frozen.write_to(out));
            CheckpointDone {
                result,
                snapshot,
                write: t.elapsed(),
                offsets,
            }
        });
    }

    /// Reports a finished checkpoint write and, when it succeeded, stores its
    /// offsets for the next commit. Returns whether it succeeded.
    pub fn checkpoint_done(&mut self, r: Result<CheckpointDone, tokio::task::JoinError>) -> bool {
        let dir = self
            .checkpoint
            .as_ref()
            .map(|s| s.dir().to_path_buf())
            .unwrap_or_default();
        let failed = |error: &dyn std::fmt::Display| {
            telemetry::CheckpointFailed { dir: &dir, error }.emit();
            false
        };
        let done = match r {
            Ok(d) => d,
            Err(e) => return failed(&e),
        };
        let written = match &done.result {
            Ok(w) => w,
            Err(e) => return failed(e),
        };
        let mut tpl = TopicPartitionList::new();
        {
            let mut book = self.book();
            for o in &done.offsets {
                if o.next_offset >= 0 && book.is_assigned(&o.topic, o.partition) {
                    let _ = tpl.add_partition_offset(
                        &o.topic,
                        o.partition,
                        Offset::Offset(o.next_offset),
                    );
                }
            }
        }
        telemetry::CheckpointWritten {
            path: &written.path,
            bytes: written.bytes,
            snapshot: done.snapshot,
            write: done.write,
            offsets: &describe(&tpl),
        }
        .emit();
        if tpl.count() > 0 {
            self.store(&tpl, "checkpoint offsets");
        }
        true
    }
}
