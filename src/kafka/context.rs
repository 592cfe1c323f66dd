//! librdkafka callbacks: logs and errors to telemetry, statistics to
//! [`LiveState`], and the rebalance protocol (incremental with
//! `cooperative-sticky`, every assign/unassign checked). With state in the
//! state store, partition state moves with the partition (see
//! [`super::pipeline::handover`]); otherwise, before partitions are taken
//! away, their handled positions are stored and committed synchronously.
//!
//! The consumer's callbacks run inside `StreamConsumer::recv`, that is on the
//! consumer loop's own task between two messages, so the offset book they
//! touch is never mid-update.

use std::sync::{Arc, Mutex};

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;

use super::live::LiveState;
use super::offsets::OffsetBook;
use super::pipeline::handover::{Handover, SharedEngine};
use crate::telemetry::{self, CommitResult, CommitTrigger, PartitionMove, describe};

/// How long the rebalance callback waits for committed offsets.
const COMMITTED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Context of the input consumer.
pub struct ConsumerCtx {
    pub live: Arc<LiveState>,
    pub book: Arc<Mutex<OffsetBook>>,
    /// `bootstrap.servers`, for log lines.
    pub brokers: String,
    /// The engine: a revoked partition's final snapshot is taken from it
    /// and its state dropped, inside the callback.
    pub engine: SharedEngine,
    /// State in the state store (`checkpoint.store = "kafka"`): partition
    /// state moves with the partition.
    pub handover: Option<Arc<Handover>>,
}

impl ConsumerCtx {
    fn book(&self) -> std::sync::MutexGuard<'_, OffsetBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn pairs(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// Maps a commit result onto telemetry, treating "no offset stored" as
/// nothing to do rather than a failure.
pub fn commit_result<'a>(r: &'a KafkaResult<()>, offsets: &'a str) -> CommitResult<'a> {
    match r {
        Ok(()) => CommitResult::Ok(offsets),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => CommitResult::Noop,
        Err(e) => CommitResult::Error(e),
    }
}

impl ClientContext for ConsumerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        client_log("consumer", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // "All brokers down" follows the error that brought them down:
        // `/readyz` names that one.
        if let Some(code) = error.rdkafka_error_code()
            && code != RDKafkaErrorCode::AllBrokersDown
        {
            self.live.client_error(&format!("{code:?}"));
        }
        client_error("consumer", &self.brokers, &error, reason);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if let Some(connected) = self.live.apply_stats(statistics) {
            telemetry::BrokerConnectivity {
                connected,
                brokers: &self.brokers,
            }
            .emit();
        }
    }
}

impl ConsumerContext for ConsumerCtx {
    /// rdkafka's default rebalance handling, except that newly assigned
    /// partitions with a known engine position (from the checkpoint, or
    /// from an earlier assignment to this process) start exactly there
    /// instead of at the group's committed offset.
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        if let Some(h) = &self.handover {
            self.move_state(h, base, err, tpl);
            return;
        }
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            let (mut set, unknown) = self.book().apply_positions(tpl);
            if set.count() > 0 && !self.book().tracks_positions() {
                // Checkpoints off: an earlier assignment here. If another
                // member consumed (and committed) further since, its commit
                // wins: this process holds no state of what it consumed.
                match base.committed_offsets(set.clone(), COMMITTED_TIMEOUT) {
                    Ok(committed) => {
                        let mut kept = TopicPartitionList::new();
                        for e in set.elements() {
                            let own = e.offset().to_raw().unwrap_or(-1);
                            let theirs = committed
                                .find_partition(e.topic(), e.partition())
                                .map(|c| c.offset());
                            if let Some(rdkafka::Offset::Offset(c)) = theirs
                                && c > own
                            {
                                let _ = tpl.set_partition_offset(
                                    e.topic(),
                                    e.partition(),
                                    rdkafka::Offset::Offset(c),
                                );
                            } else {
                                let _ =
                                    kept.add_partition_offset(e.topic(), e.partition(), e.offset());
                            }
                        }
                        set = kept;
                    }
                    Err(e) => telemetry::CommittedOffsetsUnread {
                        assigned_again: true,
                        partitions: &describe(&set),
                        error: &e,
                    }
                    .emit(),
                }
            }
            if set.count() > 0 {
                telemetry::PartitionsResumed {
                    offsets: &describe(&set),
                }
                .emit();
            }
            if unknown.count() > 0 {
                // Checkpoints on, partitions the engine has not seen: they
                // start at the committed offset; remember it.
                match base.committed_offsets(unknown.clone(), COMMITTED_TIMEOUT) {
                    Ok(committed) => {
                        let mut book = self.book();
                        for e in committed.elements() {
                            book.record_start(e.topic(), e.partition(), e.offset());
                        }
                    }
                    Err(e) => telemetry::CommittedOffsetsUnread {
                        assigned_again: false,
                        partitions: &describe(&unknown),
                        error: &e,
                    }
                    .emit(),
                }
            }
        }
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            _ => Rebalance::Error(KafkaError::Rebalance(err.into())),
        };
        self.pre_rebalance(base, &rebalance);
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let r = match (err, cooperative) {
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, true) => {
                base.incremental_assign(tpl)
            }
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, false) => base.assign(tpl),
            (_, true) => base.incremental_unassign(tpl),
            (_, false) => base.unassign(),
        };
        not_applied(tpl, r);
        self.post_rebalance(base, &rebalance);
    }

    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Everything handled so far on these partitions is committed
                // before another member can start on them.
                let moved = self.book().revoke(tpl);
                revoke_commit(base, &moved);
                self.live.revoke(&pairs(tpl));
                for (topic, partition) in pairs(tpl) {
                    telemetry::partition_owned(&topic, partition, false);
                }
                telemetry::PartitionsMoved {
                    direction: PartitionMove::Revoked,
                    partitions: tpl,
                }
                .emit();
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => telemetry::RebalanceFailed { error: e }.emit(),
        }
    }

    fn post_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.book().assign(tpl);
            self.live.assign(&pairs(tpl));
            // One instance (`store = "dir"` or `"off"`): the partitions it
            // consumes are those assigned.
            for (topic, partition) in pairs(tpl) {
                telemetry::partition_owned(&topic, partition, true);
            }
            if tpl.count() > 0 {
                telemetry::PartitionsMoved {
                    direction: PartitionMove::Assigned,
                    partitions: tpl,
                }
                .emit();
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        // Every commit is synchronous and reported where it is made; this
        // echo of it is only traced.
        telemetry::CommitEchoed {
            ok: result.is_ok(),
            offsets,
        }
        .emit();
    }
}

impl ConsumerCtx {
    /// The rebalance with state in the state store. Assign: the partitions
    /// are assigned, paused and left to the loop to restore. Revoke: final
    /// snapshots (not when lost), a synchronous commit of the offsets they
    /// cover, the state dropped, then the partitions unassigned.
    fn move_state(
        &self,
        h: &Handover,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &TopicPartitionList,
    ) {
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            let r = if cooperative {
                base.incremental_assign(tpl)
            } else {
                base.assign(tpl)
            };
            if !not_applied(tpl, r) {
                return;
            }
            self.book().assign(tpl);
            self.live.assign(&pairs(tpl));
            // Nothing is consumed until the state is restored; messages
            // fetched before the pause takes effect are ignored.
            not_applied(tpl, base.pause(tpl));
            h.assigned(tpl, &self.live);
            // A cooperative round that moves nothing here is no news.
            if tpl.count() > 0 {
                telemetry::PartitionsMoved {
                    direction: PartitionMove::Assigned,
                    partitions: tpl,
                }
                .emit();
            }
            return;
        }
        let lost = if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
            base.assignment_lost()
        } else {
            telemetry::RebalanceFailed {
                error: &KafkaError::Rebalance(err.into()),
            }
            .emit();
            true
        };
        let covered = h.give_up(&self.engine, &self.book, &self.live, tpl, lost);
        if covered.count() > 0 {
            revoke_commit(base, &covered);
        }
        self.live.revoke(&pairs(tpl));
        telemetry::PartitionsMoved {
            direction: if lost {
                PartitionMove::Lost
            } else {
                PartitionMove::Revoked
            },
            partitions: tpl,
        }
        .emit();
        let r = if cooperative {
            base.incremental_unassign(tpl)
        } else {
            base.unassign()
        };
        not_applied(tpl, r);
    }
}

/// Reports a rebalance step (assign, unassign, pause) that failed; returns
/// whether it succeeded.
fn not_applied(tpl: &TopicPartitionList, r: KafkaResult<()>) -> bool {
    match r {
        Ok(()) => true,
        Err(e) => {
            telemetry::RebalanceNotApplied {
                partitions: &describe(tpl),
                error: &e,
            }
            .emit();
            false
        }
    }
}

/// Stores `offsets` and commits synchronously, inside the revoke callback
/// (while the partitions are still assigned here: a commit after the
/// unassign fails).
fn revoke_commit(base: &BaseConsumer<ConsumerCtx>, offsets: &TopicPartitionList) {
    if offsets.count() > 0
        && let Err(e) = base.store_offsets(offsets)
    {
        telemetry::RevokedOffsetsNotStored { error: &e }.emit();
    }
    let r = base.commit_consumer_state(CommitMode::Sync);
    let described = describe(offsets);
    telemetry::CommitCompleted {
        trigger: CommitTrigger::Revoke,
        result: commit_result(&r, &described),
    }
    .emit();
}

/// Context of the producer (dead-letter, output and alerts topics).
pub struct ProducerCtx {
    pub brokers: String,
}

impl ClientContext for ProducerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        client_log("producer", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error("producer", &self.brokers, &error, reason);
    }
}

/// librdkafka's log callback of either client.
fn client_log(client: &'static str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    telemetry::ClientLog {
        client,
        level,
        facility,
        message,
    }
    .emit();
}

/// librdkafka's error callback of either client.
fn client_error(client: &'static str, brokers: &str, error: &KafkaError, reason: &str) {
    telemetry::KafkaClientError {
        client,
        brokers,
        error,
        reason,
    }
    .emit();
}
