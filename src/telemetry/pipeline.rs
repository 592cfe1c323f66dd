//! Events of the consumer loop itself.

use tracing::{info, trace, warn};

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
