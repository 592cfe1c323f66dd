//! Taking messages off the consumer: a turn handles every message that is
//! ready (up to [`BATCH`]) without going back through `select!`, carries out
//! each message's [`Decision`], and keeps a run of consumer errors from
//! spinning the loop.

use std::time::{Duration, Instant};

use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};

use super::decide::{Decision, MessageView, decide};
use super::handover::lock_engine;
use super::state::{Loop, lock};
use super::wall_ms;
use crate::event::Millis;
use crate::kafka::context::ConsumerCtx;
use crate::telemetry;

/// At most this many ready messages are handled per turn of the loop before
/// timers, `/metrics` requests and acknowledgements get their turn.
const BATCH: usize = 512;
/// After this many consumer errors in a row (no message between them) the
/// loop pauses for [`ERROR_RUN_PAUSE`], so a flood of errors cannot spin it.
const ERROR_RUN: u64 = 100;
const ERROR_RUN_PAUSE: Duration = Duration::from_millis(10);

/// How a turn of receiving ended.
pub enum Turn {
    /// Nothing more ready now (or the batch is full).
    Done,
    /// A long run of errors: stop receiving until this instant.
    Pause(tokio::time::Instant),
    /// The consumer cannot go on: shut down.
    Fatal(String),
}

impl Loop {
    /// Handles `first` and whatever else is ready on `consumer`.
    pub fn receive(
        &mut self,
        consumer: &StreamConsumer<ConsumerCtx>,
        first: KafkaResult<BorrowedMessage<'_>>,
    ) -> Turn {
        let turn = Instant::now();
        let now_ms = wall_ms();
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(m) = next.take() {
            match m {
                Ok(m) => {
                    self.errors_in_a_row = 0;
                    self.last_message = turn;
                    self.handle(&m, now_ms);
                }
                Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
                    telemetry::ConsumerFatal { error: &e }.emit();
                    return Turn::Fatal(e.to_string());
                }
                Err(e) => {
                    // Errors are events librdkafka queues at its own
                    // (backed-off) pace, e.g. one per failed reconnect; they
                    // queue up in front of rebalance events, so they are
                    // drained, not waited on. Only an unbroken run of them
                    // gets a short pause.
                    self.errors_in_a_row += 1;
                    let pause = self.errors_in_a_row.is_multiple_of(ERROR_RUN);
                    telemetry::ConsumeError {
                        error: &e,
                        backoff: if pause {
                            ERROR_RUN_PAUSE
                        } else {
                            Duration::ZERO
                        },
                    }
                    .emit();
                    if pause {
                        return Turn::Pause(tokio::time::Instant::now() + ERROR_RUN_PAUSE);
                    }
                }
            }
            handled += 1;
            if handled < BATCH {
                next = try_recv(consumer);
            }
        }
        Turn::Done
    }

    /// Decides one message and carries the decision out.
    fn handle(&mut self, m: &BorrowedMessage<'_>, now: Millis) {
        let view = MessageView {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            payload: m.payload().unwrap_or_default(),
            timestamp: m.timestamp().to_millis(),
        };
        let (pid, decision) = decide(
            &view,
            &self.decoder,
            &mut lock_engine(&self.engine),
            &mut lock(&self.book),
            !self.dlq_topic.is_empty(),
            now,
        );
        match decision {
            // Its partition's state is restoring (or covers it already).
            Decision::Ignored => return,
            Decision::Applied { event_ts } => {
                self.latency.accepted(pid, event_ts, view.timestamp);
            }
            Decision::Duplicate => {}
            Decision::DeadLetter {
                reason,
                detail,
                ticket,
            } => self.dead_letter(m, reason, &detail, ticket),
            Decision::Dropped { reason, detail } => telemetry::InvalidDropped {
                reason,
                topic: view.topic,
                partition: view.partition,
                offset: view.offset,
                detail: &detail,
            }
            .emit(),
        }
        self.after_engine_change(Some(pid), now);
    }
}

/// The next message if one is ready now, without waiting.
fn try_recv(c: &StreamConsumer<ConsumerCtx>) -> Option<KafkaResult<BorrowedMessage<'_>>> {
    let mut fut = std::pin::pin!(c.recv());
    match fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(m) => Some(m),
        std::task::Poll::Pending => None,
    }
}
