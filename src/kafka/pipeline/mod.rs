//! The consumer loop: Kafka messages in, engine updated, offsets stored,
//! dead-letter records, alerts and changed series out. The delivery rule and
//! the checkpoint semantics it keeps are in [`crate::kafka`].
//!
//! One task owns the engine (plain single-threaded data) and everything that
//! touches it. `/metrics` and `/api/series` ask this task for the engine's
//! series through a channel, so a scrape always sees every effect applied so
//! far and never races an update; computing them costs a few ms per million
//! users, once per scrape (the text or JSON is formatted in the HTTP task).
//!
//! [`run`] is a `select!` over what can happen next; each part lives apart:
//!
//! - `clients`: building the consumer and producer.
//! - `restore`: the engine from the newest good checkpoint at start.
//! - `state`: what the loop owns; tick, publish, render, acknowledgements.
//! - `receive`: a turn of ready messages, consumer errors.
//! - `decide`: the per-message decision (pure, unit-tested).
//! - `dead_letters`: dead-letter records, and a partition paused (or the
//!   record skipped) when one cannot be delivered.
//! - `checkpointing`: snapshot, write, then store the covered offsets.
//! - [`handover`]: partition state moving through the state store
//!   (restores on assignment, periodic and final snapshots).
//! - `commit`: the offset store and periodic commits.
//! - `shutdown`: the bounded shutdown.

mod checkpointing;
mod clients;
mod commit;
mod dead_letters;
mod decide;
pub mod handover;
mod receive;
mod restore;
mod shutdown;
mod state;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinError;
use tokio::time::{Interval, MissedTickBehavior, interval, sleep_until};

use self::checkpointing::CheckpointDone;
use self::dead_letters::{DeadLetterDone, MAX_DEAD_LETTERS_IN_FLIGHT};
use self::handover::{Handover, Moves, RestoreDone, SavesDone};
use self::receive::Turn;
use self::state::{Flight, Loop};
use super::live::LiveState;
use super::offsets::OffsetBook;
use anyhow::Context as _;

use super::state_store::StateStore;
use crate::config::{Config, StoreKind};
use crate::engine::Engine;
use crate::event::Millis;
use crate::telemetry;

/// `/metrics` and `/api/series` ask the loop for the engine's series; the
/// HTTP task formats them (text or JSON), off the loop.
pub struct RenderRequest {
    pub reply: oneshot::Sender<Rendered>,
}

/// The engine's series at one instant, and that instant.
pub struct Rendered {
    pub families: Vec<crate::export::Family>,
    /// The engine's clock T in ms; `None` before any event.
    pub clock_ms: Option<Millis>,
}

/// How the shutdown went; clean when `problems` is empty.
#[derive(Debug, Default)]
pub struct ShutdownReport {
    pub problems: Vec<String>,
}

impl ShutdownReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
    }
}

/// How often the loop checks idleness, stores offsets and drains timers.
const TICK: Duration = Duration::from_millis(200);
/// Most events tracked at once for the latency histogram.
const LATENCY_TRACK_CAP: usize = 2_000_000;

/// Runs the live pipeline until `shutdown` completes, then drains within
/// `kafka.shutdown_timeout`. Errors only when the clients cannot be built
/// (bad settings); a broker that is down is waited for.
pub async fn run(
    cfg: &Config,
    live: Arc<LiveState>,
    mut render_rx: mpsc::Receiver<RenderRequest>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<ShutdownReport> {
    let k = &cfg.kafka;
    anyhow::ensure!(
        !k.input_topics.is_empty(),
        "kafka.input_topics is empty: nothing to consume"
    );
    let state_in_kafka = state_in_kafka(cfg);
    let (engine, checkpoint) = if state_in_kafka {
        (Engine::new(cfg.params()?), None)
    } else {
        restore::restore(cfg)?
    };
    let mut offset_book = OffsetBook::new(&k.input_topics);
    if let Some((_, saved)) = &checkpoint {
        offset_book.track_positions(saved);
    }
    let handover = if state_in_kafka {
        offset_book.gate_until_restored();
        let store = StateStore::new(cfg).context("cannot set up the state store")?;
        Some(Arc::new(Handover::new(
            Arc::new(store),
            duration(k.revoke_timeout.ms()),
            duration(cfg.checkpoint.interval.ms()),
        )))
    } else {
        None
    };
    let book = Arc::new(Mutex::new(offset_book));
    let engine = Arc::new(Mutex::new(engine));
    let clients = clients::build(k, &live, &book, &engine, handover.clone())?;
    let store = checkpoint.map(|(store, _)| store);
    let moves = Moves::new(handover, cfg);
    let mut lp = Loop::new(cfg, clients, book, live, engine, store, moves)?;

    let consumer = lp.consumer.clone();
    let mut tick = ticker(TICK);
    let mut commit_tick = ticker(duration(k.commit_interval.ms()));
    let mut publish_tick = ticker(duration(k.publish_interval.ms()));
    let mut checkpoint_tick = ticker(duration(cfg.checkpoint.interval.ms()));
    // The first tick is immediate: skip it (nothing to save yet).
    checkpoint_tick.reset();
    let mut fatal: Option<String> = None;
    let mut resume_at: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    telemetry::Consuming.emit();

    loop {
        let step = tokio::select! {
            biased;
            () = &mut shutdown => Step::Shutdown,
            Some(req) = render_rx.recv() => Step::Render(req),
            Some(done) = lp.dead_letters.join_next(), if !lp.dead_letters.is_empty() => Step::DeadLetterDone(done),
            Some(done) = lp.flights.join_next(), if !lp.flights.is_empty() => Step::FlightDone(done),
            Some(done) = lp.commits.join_next(), if !lp.commits.is_empty() => Step::CommitDone(done),
            Some(done) = lp.checkpoint_writes.join_next(), if !lp.checkpoint_writes.is_empty() => Step::CheckpointDone(done),
            Some(done) = lp.moves.restores.join_next(), if !lp.moves.restores.is_empty() => Step::RestoreDone(done),
            Some(done) = lp.moves.saves.join_next(), if !lp.moves.saves.is_empty() => Step::SavesDone(done),
            _ = tick.tick() => Step::Tick,
            _ = commit_tick.tick() => Step::Commit,
            _ = publish_tick.tick() => Step::Publish,
            _ = checkpoint_tick.tick(), if lp.checkpoint.is_some() || lp.moves.handover.is_some() => Step::Checkpoint,
            () = sleep_until(resume_at.unwrap_or_else(tokio::time::Instant::now)), if resume_at.is_some() => {
                resume_at = None;
                Step::Idle
            }
            m = consumer.recv(), if resume_at.is_none()
                && lp.checkpoint_due.is_none()
                && lp.dead_letters.len() < MAX_DEAD_LETTERS_IN_FLIGHT => Step::Message(m),
        };
        match step {
            Step::Shutdown => break,
            Step::Render(req) => lp.render(req),
            Step::DeadLetterDone(Ok(done)) => lp.dead_letter_done(done),
            Step::DeadLetterDone(Err(e)) => telemetry::TaskFailed {
                task: "dead-letter delivery",
                error: &e,
            }
            .emit(),
            Step::FlightDone(Ok(done)) => lp.flight_done(done),
            Step::FlightDone(Err(e)) => telemetry::TaskFailed {
                task: "output or alerts delivery",
                error: &e,
            }
            .emit(),
            Step::Idle => {}
            Step::Tick => lp.tick(),
            Step::Commit => lp.commit(),
            Step::CommitDone(done) => lp.commit_done(done),
            Step::Publish => lp.publish(),
            Step::Checkpoint if lp.moves.handover.is_some() => lp.save_partitions(),
            Step::Checkpoint => lp.checkpoint(),
            Step::RestoreDone(done) => lp.restore_done(done),
            Step::SavesDone(done) => lp.saves_done(done),
            Step::CheckpointDone(done) => {
                lp.checkpoint_done(done);
            }
            Step::Message(first) => match lp.receive(&consumer, first) {
                Turn::Done => {}
                Turn::Pause(until) => resume_at = Some(until),
                Turn::Fatal(e) => {
                    fatal = Some(e);
                    break;
                }
            },
        }
        // The rebalance callbacks run inside `recv()`.
        lp.follow_rebalance();
        if let Some(f) = lp.moves.fatal.take() {
            fatal = Some(f);
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + duration(k.shutdown_timeout.ms());
    // The loop's handle is the last one: closing happens off the runtime.
    drop(consumer);
    let mut report = lp.finish(deadline).await;
    if let Some(f) = fatal {
        report
            .problems
            .insert(0, format!("fatal consumer error: {f}"));
    }
    Ok(report)
}

/// What the loop does next.
enum Step<'m> {
    Shutdown,
    Render(RenderRequest),
    DeadLetterDone(Result<DeadLetterDone, JoinError>),
    FlightDone(Result<Flight, JoinError>),
    CommitDone(Result<(KafkaResult<()>, String), JoinError>),
    Checkpoint,
    CheckpointDone(Result<CheckpointDone, JoinError>),
    RestoreDone(Result<RestoreDone, JoinError>),
    SavesDone(Result<SavesDone, JoinError>),
    Idle,
    Tick,
    Commit,
    Publish,
    Message(KafkaResult<BorrowedMessage<'m>>),
}

/// Whether partition state lives in the state store (`checkpoint.store =
/// "kafka"`): it then moves with its partition (see [`handover`]).
pub fn state_in_kafka(cfg: &Config) -> bool {
    cfg.checkpoint.store == StoreKind::Kafka
}

/// An interval that, when the loop falls behind, delays the next tick
/// rather than firing a burst.
fn ticker(every: Duration) -> Interval {
    let mut t = interval(every);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

fn duration(ms: Millis) -> Duration {
    Duration::from_millis(ms.max(1) as u64)
}

/// The wall clock in milliseconds since the epoch (0 if the clock is before it).
pub(crate) fn wall_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}
