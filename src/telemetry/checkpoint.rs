//! Events of checkpoints: written, failed, and what a start restored.

use std::path::Path;
use std::time::Duration;

use tracing::{error, info, warn};

use super::metrics;

/// A checkpoint file was written.
pub struct CheckpointWritten<'a> {
    pub path: &'a std::path::Path,
    pub bytes: usize,
    /// Snapshot time in the consumer loop.
    pub snapshot: Duration,
    /// Write time on the blocking thread.
    pub write: Duration,
    pub offsets: &'a str,
}

impl CheckpointWritten<'_> {
    pub fn emit(self) {
        info!(
            path = %self.path.display(),
            bytes = self.bytes,
            snapshot_ms = self.snapshot.as_secs_f64() * 1e3,
            write_ms = self.write.as_secs_f64() * 1e3,
            offsets = self.offsets,
            "checkpoint written"
        );
        let m = metrics();
        m.checkpoints.inc();
        m.checkpoint_bytes.set(self.bytes as i64);
        m.checkpoint_write_seconds.observe(self.write.as_secs_f64());
    }
}

/// A checkpoint could not be written; processing continues and the next
/// interval tries again.
pub struct CheckpointFailed<'a> {
    pub dir: &'a std::path::Path,
    pub error: &'a dyn std::fmt::Display,
}

impl CheckpointFailed<'_> {
    pub fn emit(self) {
        error!(
            dir = %self.dir.display(),
            error = %self.error,
            "checkpoint write failed; processing continues, the next interval tries again"
        );
        metrics().checkpoint_failures.inc();
    }
}

/// A checkpoint file was refused at start (bad checksum, unknown version,
/// ...); it is never loaded.
pub struct CheckpointRefused<'a> {
    pub path: &'a Path,
    pub error: &'a dyn std::fmt::Display,
}

impl CheckpointRefused<'_> {
    pub fn emit(self) {
        error!(
            path = %self.path.display(),
            error = %self.error,
            "checkpoint file refused (never loaded)"
        );
    }
}

/// The engine was restored from a checkpoint.
pub struct CheckpointRestored<'a> {
    pub path: &'a Path,
    /// `topic/partition@next_offset, ...`
    pub offsets: &'a str,
    /// The restored clock T (RFC 3339), empty when it has none.
    pub clock: &'a str,
}

impl CheckpointRestored<'_> {
    pub fn emit(self) {
        info!(
            path = %self.path.display(),
            offsets = self.offsets,
            clock = self.clock,
            "engine restored from checkpoint"
        );
    }
}

/// Checkpoints are on but the directory holds none yet.
pub struct NoCheckpointYet<'a> {
    pub dir: &'a Path,
}

impl NoCheckpointYet<'_> {
    pub fn emit(self) {
        info!(dir = %self.dir.display(), "no checkpoint yet: starting with empty state");
    }
}

/// Checkpoints exist but none is used: the engine starts empty from the
/// group's committed offsets. Loud, because state is lost.
pub enum StartingEmpty<'a> {
    /// The newest file was refused and `checkpoint.on_corrupt = "empty"`.
    NewestRefused {
        path: &'a Path,
        error: &'a dyn std::fmt::Display,
    },
    /// The file was read but does not fit this config.
    NotRestorable {
        path: &'a Path,
        error: &'a dyn std::fmt::Display,
    },
    /// Every file was refused.
    NoneUsable { dir: &'a Path, refused: usize },
}

impl StartingEmpty<'_> {
    pub fn emit(self) {
        match self {
            StartingEmpty::NewestRefused { path, error } => error!(
                path = %path.display(),
                error = %error,
                "newest checkpoint refused and checkpoint.on_corrupt = \"empty\": STARTING WITH EMPTY STATE from the committed offsets"
            ),
            StartingEmpty::NotRestorable { path, error } => error!(
                path = %path.display(),
                error = %error,
                "checkpoint cannot be restored under this config: STARTING WITH EMPTY STATE from the committed offsets"
            ),
            StartingEmpty::NoneUsable { dir, refused } => error!(
                dir = %dir.display(),
                refused,
                "no usable checkpoint: STARTING WITH EMPTY STATE from the committed offsets"
            ),
        }
    }
}

/// A due checkpoint waited its longest for unacknowledged dead-letter
/// records and is written anyway.
pub struct CheckpointOverdue {
    pub held: usize,
    pub waited: Duration,
}

impl CheckpointOverdue {
    pub fn emit(self) {
        warn!(
            held = self.held,
            waited_s = self.waited.as_secs(),
            "checkpoint written while dead-letter records are unacknowledged: a crash before they are may lose them"
        );
    }
}
