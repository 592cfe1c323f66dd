//! Offsets to librdkafka and commits: positions the offset book says are
//! handled (or, with checkpoints on, those a written checkpoint covers) go
//! to librdkafka's offset store; every `kafka.commit_interval` what was
//! stored is committed synchronously on a blocking thread, one commit at a
//! time. (The revoke commit is in [`crate::kafka::context`], the final one in
//! the shutdown.)

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaResult;

use super::state::Loop;
use crate::kafka::context::commit_result;
use crate::telemetry::describe;
use crate::telemetry::{self, CommitTrigger};

impl Loop {
    /// Hands positions that moved to librdkafka's offset store. With
    /// checkpoints on (or state in the state store), only the offsets a
    /// written checkpoint (snapshot) covers are stored.
    pub fn store_moved(&mut self) {
        if self.checkpoint.is_some() || self.moves.handover.is_some() {
            return;
        }
        let moved = self.book().take_moved();
        if moved.count() == 0 {
            return;
        }
        self.store(&moved, "offsets");
    }

    /// Stores `tpl` in librdkafka's offset store for the next commit.
    /// `what` names the positions in the log line when that fails.
    pub fn store(&mut self, tpl: &TopicPartitionList, what: &'static str) {
        match self.consumer.store_offsets(tpl) {
            Ok(()) => {
                self.stored_since_commit = true;
                self.stored_text = describe(tpl);
            }
            // A partition revoked meanwhile: its offsets were stored by the
            // revoke callback.
            Err(e) => telemetry::OffsetsNotStored {
                what,
                error: &e,
                offsets: &describe(tpl),
            }
            .emit(),
        }
    }

    /// Stores what moved and, if anything was stored since the last commit,
    /// commits synchronously on a blocking thread (one at a time), so the
    /// result is known without blocking the loop.
    pub fn commit(&mut self) {
        self.store_moved();
        if !self.stored_since_commit || !self.commits.is_empty() {
            return;
        }
        self.stored_since_commit = false;
        let consumer = self.consumer.clone();
        let offsets = std::mem::take(&mut self.stored_text);
        self.commits
            .spawn_blocking(move || (consumer.commit_consumer_state(CommitMode::Sync), offsets));
    }

    pub fn commit_done(&mut self, r: Result<(KafkaResult<()>, String), tokio::task::JoinError>) {
        match r {
            Ok((r, offsets)) => telemetry::CommitCompleted {
                trigger: CommitTrigger::Periodic,
                result: commit_result(&r, &offsets),
            }
            .emit(),
            Err(e) => telemetry::TaskFailed {
                task: "offset commit",
                error: &e,
            }
            .emit(),
        }
    }
}
