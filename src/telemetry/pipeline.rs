//! Events of the consumer loop itself.

use tracing::{debug, info, trace, warn};

use super::metrics;

/// T was moved to the wall clock: no backlog and nothing arrived for `idle_timeout`.
pub struct ClockFollowedWall {
    pub from: Option<i64>,
    pub to: i64,
}

impl ClockFollowedWall {
    pub fn emit(self) {
        trace!(
            from = self.from,
            to = self.to,
            "clock follows the wall clock"
        );
        metrics().wall_clock_advances.inc();
    }
}

/// The loop starts consuming.
pub struct Consuming;

impl Consuming {
    pub fn emit(self) {
        info!("consuming; offsets are committed only for events already applied");
    }
}

/// A task the loop spawned (a dead-letter delivery, a periodic commit)
/// panicked or was cancelled instead of returning its result.
pub struct TaskFailed<'a> {
    /// What the task did, e.g. "dead-letter delivery".
    pub task: &'static str,
    pub error: &'a tokio::task::JoinError,
}

impl TaskFailed<'_> {
    pub fn emit(self) {
        warn!(error = %self.error, "{} task failed", self.task);
    }
}

/// Shutdown began: deliveries finish, then the final checkpoint and commit.
pub struct ShuttingDown {
    pub dead_letters_in_flight: usize,
}

impl ShuttingDown {
    pub fn emit(self) {
        info!(
            dead_letters_in_flight = self.dead_letters_in_flight,
            "shutting down: finishing deliveries, final commit"
        );
    }
}

/// A rebalance callback ran while the loop was taking a turn's messages:
/// messages taken before it, of partitions it revoked, are not applied
/// (they were not booked; the partition's next owner consumes them again).
pub struct MessagesDroppedOnRebalance {
    pub messages: usize,
}

impl MessagesDroppedOnRebalance {
    pub fn emit(self) {
        debug!(
            messages = self.messages,
            "messages of partitions revoked during the turn not applied; their next owner consumes them"
        );
    }
}

/// The consumer loop handled a turn of input messages (counted once per
/// turn, not per message: two atomic adds, no log line).
pub struct TurnHandled {
    pub messages: usize,
    /// Whether the turn was applied apart (each partition on a thread of
    /// its own) rather than in order on the loop thread.
    pub apart: bool,
}

impl TurnHandled {
    /// The values of `cxpulse_apply_turns_total{path}`.
    pub const PATHS: [&'static str; 2] = ["serial", "apart"];

    pub fn emit(self) {
        let m = metrics();
        m.input_messages.inc_by(self.messages as u64);
        m.apply_turns
            .with_label_values(&[Self::PATHS[usize::from(self.apart)]])
            .inc();
    }
}

/// A turn of the consumer loop was applied apart, each partition's
/// messages on a thread of its own (the first such turn of the process is
/// logged at info, the others at trace).
pub struct PartitionsAppliedApart {
    pub messages: usize,
    pub partitions: usize,
    pub threads: usize,
}

impl PartitionsAppliedApart {
    pub fn emit(self) {
        static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            info!(
                messages = self.messages,
                partitions = self.partitions,
                threads = self.threads,
                "applying a turn's partitions apart, each on a thread of its own (logged once)"
            );
        } else {
            trace!(
                messages = self.messages,
                partitions = self.partitions,
                threads = self.threads,
                "turn applied apart"
            );
        }
    }
}

/// No thread could be started to apply some of a turn's partitions: the
/// loop applies them itself (slower, same result).
pub struct ApplyThreadUnavailable;

impl ApplyThreadUnavailable {
    pub fn emit(self) {
        warn!("cannot start a thread to apply partitions; applying them on the consumer loop");
    }
}

/// No thread could be started to decode a turn's messages ahead: the loop
/// decodes them itself (slower, same result).
pub struct DecodeAheadUnavailable;

impl DecodeAheadUnavailable {
    pub fn emit(self) {
        warn!("cannot start a thread to decode ahead; decoding on the consumer loop");
    }
}
