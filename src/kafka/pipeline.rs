//! The consumer loop: Kafka messages in, engine updated, offsets stored,
//! dead-letter records, alerts and changed series out.
//!
//! One task owns the engine (plain single-threaded data) and everything that
//! touches it. `/metrics` asks this task for a rendering through a channel,
//! so a scrape always sees every effect applied so far and never races an
//! update; rendering costs a few ms per million users, once per scrape.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, interval, sleep_until, timeout_at};
use tracing::{info, warn};

use super::client::{self, Role};
use super::context::{ConsumerCtx, ProducerCtx, commit_result, describe};
use super::latency::LatencyTracker;
use super::live::LiveState;
use super::offsets::{HoldTicket, OffsetBook};
use super::publish::{self, DeadLetter, OutRecord, SeriesDiff};
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, SavedOffset, Written};
use crate::config::{Config, OnCorrupt};
use crate::engine::{Engine, Outcome};
use crate::event::time::format_rfc3339;
use crate::event::{DecodeFailure, Decoder, Event, Millis};
use crate::export::to_prometheus_text;
use crate::telemetry::{self, CommitTrigger, Stream};

/// `/metrics` asks the loop for the engine's series as Prometheus text.
pub struct RenderRequest {
    pub reply: oneshot::Sender<String>,
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
}

/// How often the loop checks idleness, stores offsets and drains timers.
const TICK: Duration = Duration::from_millis(200);
/// After this many consumer errors in a row (no message between them) the
/// loop pauses for [`ERROR_RUN_PAUSE`], so a flood of errors cannot spin it.
const ERROR_RUN: u64 = 100;
const ERROR_RUN_PAUSE: Duration = Duration::from_millis(10);
/// At most this many ready messages are handled per turn of the loop before
/// timers, `/metrics` requests and acknowledgements get their turn.
const BATCH: usize = 512;
/// A due checkpoint waits at most this long (consumption paused) for the
/// dead-letter records in flight to be acknowledged.
const CHECKPOINT_DRAIN_MAX: Duration = Duration::from_secs(10);
/// Most events tracked at once for the latency histogram.
const LATENCY_TRACK_CAP: usize = 2_000_000;

/// A dead-letter record was acknowledged.
struct DeadLetterDone {
    ticket: HoldTicket,
    reason: &'static str,
    topic: String,
    partition: i32,
    offset: i64,
}

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
    let (engine, checkpoint) = restore(cfg)?;
    let mut offset_book = OffsetBook::new(&k.input_topics);
    if let Some((_, saved)) = &checkpoint {
        offset_book.track_positions(saved);
    }
    let book = Arc::new(Mutex::new(offset_book));
    let consumer_settings = client::settings(k, Role::Consumer)?;
    let producer_settings = client::settings(k, Role::Producer)?;
    info!(
        settings = client::redacted(&consumer_settings),
        topics = k.input_topics.join(","),
        "consumer settings"
    );
    info!(
        settings = client::redacted(&producer_settings),
        "producer settings"
    );
    let consumer: StreamConsumer<ConsumerCtx> = client::client_config(&consumer_settings)
        .create_with_context(ConsumerCtx {
            live: live.clone(),
            book: book.clone(),
            brokers: k.brokers.clone(),
        })
        .context("cannot create the Kafka consumer")?;
    let producer: FutureProducer<ProducerCtx> = client::client_config(&producer_settings)
        .create_with_context(ProducerCtx {
            brokers: k.brokers.clone(),
        })
        .context("cannot create the Kafka producer")?;
    let topics: Vec<&str> = k.input_topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .context("cannot subscribe to kafka.input_topics")?;

    let mut lp = Loop {
        consumer: Arc::new(consumer),
        producer,
        book,
        live,
        engine,
        checkpoint: checkpoint.map(|(store, _)| store),
        checkpoint_writes: JoinSet::new(),
        snapshot_buffers: JoinSet::new(),
        snapshot_buffer: None,
        checkpoint_due: None,
        decoder: Decoder::new(
            &cfg.mapping,
            cfg.engine.max_message_bytes,
            cfg.engine.kafka_timestamp_fallback,
        ),
        latency: LatencyTracker::new(LATENCY_TRACK_CAP),
        latency_histogram: telemetry::metrics().latency_histogram(cfg.engine.allowed_lateness.ms()),
        diff: SeriesDiff::default(),
        dead_letters: JoinSet::new(),
        background: JoinSet::new(),
        last_message: Instant::now(),
        stored_since_commit: false,
        stored_text: String::new(),
        commits: JoinSet::new(),
        dlq_topic: k.dead_letter_topic.clone(),
        output_topic: k.output_topic.clone(),
        alerts_topic: k.alerts_topic.clone(),
        idle_timeout: Duration::from_millis(cfg.engine.idle_timeout.ms().max(0) as u64),
    };

    let consumer = lp.consumer.clone();
    let mut tick = interval(TICK);
    let mut commit_tick = interval(duration(cfg.kafka.commit_interval.ms()));
    let mut publish_tick = interval(duration(cfg.kafka.publish_interval.ms()));
    let mut checkpoint_tick = interval(duration(cfg.checkpoint.interval.ms()));
    // The first tick is immediate: skip it (nothing to save yet).
    checkpoint_tick.reset();
    for t in [
        &mut tick,
        &mut commit_tick,
        &mut publish_tick,
        &mut checkpoint_tick,
    ] {
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    let mut errors_in_a_row: u64 = 0;
    let mut fatal: Option<String> = None;
    let mut resume_at: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    info!("consuming; offsets are committed only for events already applied");

    'consume: loop {
        let step = tokio::select! {
            biased;
            () = &mut shutdown => Step::Shutdown,
            Some(req) = render_rx.recv() => Step::Render(req),
            Some(done) = lp.dead_letters.join_next(), if !lp.dead_letters.is_empty() => Step::DeadLetterDone(done),
            Some(_) = lp.background.join_next(), if !lp.background.is_empty() => Step::Idle,
            Some(done) = lp.commits.join_next(), if !lp.commits.is_empty() => Step::CommitDone(done),
            Some(done) = lp.checkpoint_writes.join_next(), if !lp.checkpoint_writes.is_empty() => Step::CheckpointDone(done),
            Some(buf) = lp.snapshot_buffers.join_next(), if !lp.snapshot_buffers.is_empty() => Step::SnapshotBuffer(buf),
            _ = tick.tick() => Step::Tick,
            _ = commit_tick.tick() => Step::Commit,
            _ = publish_tick.tick() => Step::Publish,
            _ = checkpoint_tick.tick(), if lp.checkpoint.is_some() => Step::Checkpoint,
            () = sleep_until(resume_at.unwrap_or_else(tokio::time::Instant::now)), if resume_at.is_some() => {
                resume_at = None;
                Step::Idle
            }
            m = consumer.recv(), if resume_at.is_none() && lp.checkpoint_due.is_none() => Step::Message(m),
        };
        match step {
            Step::Shutdown => break,
            Step::Render(req) => lp.render(req),
            Step::DeadLetterDone(Ok(done)) => lp.dead_letter_done(done),
            Step::DeadLetterDone(Err(e)) => warn!(error = %e, "dead-letter delivery task failed"),
            Step::Idle => {}
            Step::Tick => lp.tick(),
            Step::Commit => lp.commit(),
            Step::CommitDone(done) => lp.commit_done(done),
            Step::Publish => lp.publish(),
            Step::Checkpoint => lp.checkpoint(),
            Step::SnapshotBuffer(buf) => {
                lp.snapshot_buffer = buf.ok();
                lp.checkpoint();
            }
            Step::CheckpointDone(done) => {
                lp.checkpoint_done(done);
            }
            Step::Message(first) => {
                // Whatever else is ready is handled in the same turn, without
                // going back through `select!` for each message.
                let turn = Instant::now();
                let now_ms = wall_ms();
                let mut next = Some(first);
                let mut handled = 0;
                while let Some(m) = next.take() {
                    match m {
                        Ok(m) => {
                            errors_in_a_row = 0;
                            lp.last_message = turn;
                            lp.handle(&m, now_ms);
                        }
                        Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
                            tracing::error!(error = %e, "fatal consumer error: stopping");
                            fatal = Some(e.to_string());
                            break 'consume;
                        }
                        Err(e) => {
                            // Errors are events librdkafka queues at its own
                            // (backed-off) pace, e.g. one per failed reconnect;
                            // they queue up in front of rebalance events, so
                            // they are drained, not waited on. Only an unbroken
                            // run of them gets a short pause.
                            errors_in_a_row += 1;
                            let pause = errors_in_a_row.is_multiple_of(ERROR_RUN);
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
                                resume_at = Some(tokio::time::Instant::now() + ERROR_RUN_PAUSE);
                                break;
                            }
                        }
                    }
                    handled += 1;
                    if handled < BATCH {
                        next = try_recv(&consumer);
                    }
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + duration(cfg.kafka.shutdown_timeout.ms());
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

/// How far partition `pid` of the engine has applied its effects (its clock
/// less `allowed_lateness`); `None` before its first event.
fn applied_through(engine: &Engine, pid: u32) -> Option<Millis> {
    engine.parts.get(&pid).map(|p| p.applied_through)
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

fn duration(ms: Millis) -> Duration {
    Duration::from_millis(ms.max(1) as u64)
}

fn wall_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

enum Step<'m> {
    Shutdown,
    Render(RenderRequest),
    DeadLetterDone(Result<DeadLetterDone, tokio::task::JoinError>),
    CommitDone(Result<(KafkaResult<()>, String), tokio::task::JoinError>),
    Checkpoint,
    CheckpointDone(Result<CheckpointDone, tokio::task::JoinError>),
    SnapshotBuffer(Result<Vec<u8>, tokio::task::JoinError>),
    Idle,
    Tick,
    Commit,
    Publish,
    Message(KafkaResult<BorrowedMessage<'m>>),
}

/// Checkpoints on: the store and the offsets of the restored checkpoint.
type Restored = (CheckpointStore, Vec<SavedOffset>);

/// Restores the engine from the newest good checkpoint (checkpoints on).
/// Returns the engine and, with checkpoints on, the store and the restored
/// offsets (empty when starting without a checkpoint). Errors when
/// `checkpoint.on_corrupt = "fail"` and a checkpoint file is refused.
fn restore(cfg: &Config) -> anyhow::Result<(Engine, Option<Restored>)> {
    let c = &cfg.checkpoint;
    let prm = cfg.params()?;
    if c.dir.is_empty() {
        return Ok((Engine::new(prm), None));
    }
    let store = CheckpointStore::new(&c.dir, c.keep);
    let loaded = match c.on_corrupt {
        OnCorrupt::Previous => store.load_latest(),
        OnCorrupt::Empty | OnCorrupt::Fail => store.load_newest(),
    };
    for (path, e) in &loaded.rejected {
        tracing::error!(
            path = %path.display(),
            error = %e,
            "checkpoint file refused (never loaded)"
        );
    }
    let fail = c.on_corrupt == OnCorrupt::Fail;
    if fail && let Some((path, e)) = loaded.rejected.first() {
        anyhow::bail!(
            "checkpoint {} is unusable ({e}) and checkpoint.on_corrupt = \"fail\"",
            path.display()
        );
    }
    if c.on_corrupt == OnCorrupt::Empty
        && let Some((path, e)) = loaded.rejected.first()
    {
        tracing::error!(
            path = %path.display(),
            error = %e,
            "newest checkpoint refused and checkpoint.on_corrupt = \"empty\": STARTING WITH EMPTY STATE from the committed offsets"
        );
        return Ok((Engine::new(prm.clone()), Some((store, Vec::new()))));
    }
    match loaded.checkpoint {
        Some((path, cp)) => match Engine::restore(prm.clone(), &cp.engine) {
            Ok(engine) => {
                let offsets = cp
                    .offsets
                    .iter()
                    .map(|o| format!("{}/{}@{}", o.topic, o.partition, o.next_offset))
                    .collect::<Vec<_>>()
                    .join(", ");
                info!(
                    path = %path.display(),
                    offsets,
                    clock = engine.clock().map(format_rfc3339).unwrap_or_default(),
                    "engine restored from checkpoint"
                );
                Ok((engine, Some((store, cp.offsets))))
            }
            Err(e) => {
                if fail {
                    anyhow::bail!(
                        "checkpoint {} cannot be restored ({e}) and checkpoint.on_corrupt = \"fail\"",
                        path.display()
                    );
                }
                tracing::error!(
                    path = %path.display(),
                    error = %e,
                    "checkpoint cannot be restored under this config: STARTING WITH EMPTY STATE from the committed offsets"
                );
                Ok((Engine::new(prm.clone()), Some((store, Vec::new()))))
            }
        },
        None if !loaded.rejected.is_empty() => {
            tracing::error!(
                dir = %store.dir().display(),
                refused = loaded.rejected.len(),
                "no usable checkpoint: STARTING WITH EMPTY STATE from the committed offsets"
            );
            Ok((Engine::new(prm.clone()), Some((store, Vec::new()))))
        }
        None => {
            info!(dir = %store.dir().display(), "no checkpoint yet: starting with empty state");
            Ok((Engine::new(prm.clone()), Some((store, Vec::new()))))
        }
    }
}

/// A checkpoint write finished (on a blocking thread).
struct CheckpointDone {
    result: Result<Written, CheckpointError>,
    snapshot: Duration,
    write: Duration,
    offsets: Vec<SavedOffset>,
}

/// Everything the consumer loop owns.
struct Loop {
    consumer: Arc<StreamConsumer<ConsumerCtx>>,
    producer: FutureProducer<ProducerCtx>,
    /// Shared with the revoke callback, which runs inside `recv`.
    book: Arc<Mutex<OffsetBook>>,
    live: Arc<LiveState>,
    engine: Engine,
    /// Checkpoints on: where they are written.
    checkpoint: Option<CheckpointStore>,
    /// The checkpoint write in flight (at most one).
    checkpoint_writes: JoinSet<CheckpointDone>,
    /// A buffer for the next snapshot, allocated and touched on a blocking
    /// thread (at most one in preparation).
    snapshot_buffers: JoinSet<Vec<u8>>,
    snapshot_buffer: Option<Vec<u8>>,
    /// A checkpoint is due but waits, with consumption paused, for the
    /// dead-letter records in flight to be acknowledged; until this instant
    /// at most.
    checkpoint_due: Option<Instant>,
    decoder: Decoder,
    latency: LatencyTracker,
    /// `cxpulse_event_to_metric_seconds`, with buckets for this lateness.
    latency_histogram: prometheus::Histogram,
    diff: SeriesDiff,
    /// Dead-letter deliveries; each completes with the offset it releases.
    dead_letters: JoinSet<DeadLetterDone>,
    /// Output and alert deliveries.
    background: JoinSet<()>,
    /// When the last message arrived (for wall-clock following).
    last_message: Instant,
    /// Offsets were stored since the last commit request.
    stored_since_commit: bool,
    /// The positions last stored, for the commit log line.
    stored_text: String,
    /// The periodic commit in flight (at most one).
    commits: JoinSet<(KafkaResult<()>, String)>,
    dlq_topic: String,
    output_topic: String,
    alerts_topic: String,
    idle_timeout: Duration,
}

impl Loop {
    fn book(&self) -> std::sync::MutexGuard<'_, OffsetBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decodes and applies one message.
    fn handle(&mut self, m: &BorrowedMessage<'_>, now: Millis) {
        let pid = self.book().pid(m.topic(), m.partition());
        let decoder = &self.decoder;
        let decoded = decoder.decode(m.payload().unwrap_or_default(), m.timestamp().to_millis());
        self.apply(m, pid, decoded, now);
    }

    /// Offers one decoded message to the engine. Its offset is released for
    /// commit once the engine has taken it, or, when it is dead-lettered,
    /// once the dead-letter record is acknowledged.
    fn apply(
        &mut self,
        m: &BorrowedMessage<'_>,
        pid: u32,
        decoded: Result<Event<'_>, DecodeFailure>,
        now: Millis,
    ) {
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let append_ms = m.timestamp().to_millis();
        let verdict: Result<(), (&'static str, String)> = match decoded {
            Ok(ev) => match self.engine.offer(pid, &ev, Some(now)) {
                Outcome::Applied => {
                    self.latency.accepted(pid, ev.ts, append_ms);
                    Ok(())
                }
                Outcome::Duplicate => Ok(()),
                Outcome::Late => Err((
                    "late",
                    format!(
                        "event time {} is more than allowed_lateness behind the clock T {}",
                        format_rfc3339(ev.ts),
                        self.engine.clock().map(format_rfc3339).unwrap_or_default()
                    ),
                )),
                Outcome::Invalid => Err((
                    "future_ts",
                    format!(
                        "event time {} is more than max_future_skew ahead of the wall clock {}",
                        format_rfc3339(ev.ts),
                        format_rfc3339(now)
                    ),
                )),
            },
            Err(f) => {
                self.engine.record_invalid(f.event_type);
                Err((f.error.reason(), f.error.to_string()))
            }
        };
        match verdict {
            Ok(()) => self.book().handled(topic, partition, offset),
            Err((reason, detail)) => self.dead_letter(m, reason, &detail),
        }
        self.after_engine_change(Some(pid), now);
    }

    fn dead_letter(&mut self, m: &BorrowedMessage<'_>, reason: &'static str, detail: &str) {
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        if self.dlq_topic.is_empty() {
            tracing::debug!(
                reason,
                topic,
                partition,
                offset,
                detail,
                "invalid event (no dead-letter topic configured)"
            );
            self.book().handled(topic, partition, offset);
            return;
        }
        let ticket = self.book().hold(topic, partition, offset);
        let record = publish::dead_letter_record(
            &self.dlq_topic,
            m.key(),
            m.payload(),
            m.headers().map(|h| h.detach()),
            &DeadLetter {
                reason,
                detail,
                topic,
                partition,
                offset,
                timestamp: m.timestamp().to_millis(),
            },
        );
        let producer = self.producer.clone();
        let topic = topic.to_string();
        self.dead_letters.spawn(async move {
            publish::deliver_all(producer, Stream::DeadLetter, vec![record]).await;
            DeadLetterDone {
                ticket,
                reason,
                topic,
                partition,
                offset,
            }
        });
    }

    fn dead_letter_done(&mut self, d: DeadLetterDone) {
        self.book().release(d.ticket);
        telemetry::DeadLettered {
            reason: d.reason,
            topic: &d.topic,
            partition: d.partition,
            offset: d.offset,
        }
        .emit();
        if self.checkpoint_due.is_some() && self.book().held_count() == 0 {
            self.checkpoint();
        }
    }

    /// After the clock of partition `pid` (of every partition: `None`) may
    /// have moved: publish new breach alerts and record the latency of
    /// effects that became visible.
    fn after_engine_change(&mut self, pid: Option<u32>, now: Millis) {
        let alerts = self.engine.drain_alerts();
        if !alerts.is_empty() && !self.alerts_topic.is_empty() {
            let records: Vec<OutRecord> = alerts
                .iter()
                .map(|a| publish::alert_record(&self.alerts_topic, a))
                .collect();
            self.spawn_delivery(Stream::Alerts, records);
        }
        let hist = &self.latency_histogram;
        let mut observe = |s: f64| hist.observe(s);
        let pids = match pid {
            Some(p) => vec![p],
            None => self.latency.partitions(),
        };
        for p in pids {
            if let Some(through) = applied_through(&self.engine, p) {
                self.latency.release(p, through, now, &mut observe);
            }
        }
    }

    fn spawn_delivery(&mut self, stream: Stream, records: Vec<OutRecord>) {
        let producer = self.producer.clone();
        self.background
            .spawn(publish::deliver_all(producer, stream, records));
    }

    fn tick(&mut self) {
        let now = wall_ms();
        self.live.beat(now);
        if self.checkpoint_due.is_some_and(|d| Instant::now() >= d) {
            self.checkpoint();
        }
        if self.last_message.elapsed() >= self.idle_timeout
            && self.live.caught_up_since(self.last_message)
        {
            let from = self.engine.clock();
            if from.is_none_or(|t| now > t) {
                self.engine.advance_to(now);
                telemetry::ClockFollowedWall { from, to: now }.emit();
            }
        }
        self.after_engine_change(None, now);
        self.store_moved();
    }

    /// Snapshots the engine with the offsets it covers and writes them on a
    /// blocking thread; skipped while the previous write is in flight.
    /// First a buffer for the snapshot is prepared on a blocking thread; the
    /// snapshot is taken when it is ready (this is called again then).
    fn checkpoint(&mut self) {
        self.checkpoint_with(false);
    }

    /// `last`: at shutdown, the snapshot does not wait for a prepared buffer.
    fn checkpoint_with(&mut self, last: bool) {
        let Some(store) = self.checkpoint.clone() else {
            return;
        };
        if !self.checkpoint_writes.is_empty() {
            return;
        }
        if self.snapshot_buffer.is_none() && !last {
            if self.snapshot_buffers.is_empty() {
                let size = self.engine.snapshot_capacity();
                self.snapshot_buffers
                    .spawn_blocking(move || crate::engine::snapshot::prepared_buffer(size));
            }
            return;
        }
        // A checkpoint covers dead-lettered messages as handled: while a
        // dead-letter record is unacknowledged, consumption pauses and the
        // checkpoint waits for it (briefly: acknowledgements take
        // milliseconds), so a crash cannot lose that record.
        if self.book().held_count() > 0 {
            let due = *self
                .checkpoint_due
                .get_or_insert_with(|| Instant::now() + CHECKPOINT_DRAIN_MAX);
            if Instant::now() < due {
                return;
            }
            warn!(
                held = self.book().held_count(),
                waited_s = CHECKPOINT_DRAIN_MAX.as_secs(),
                "checkpoint written while dead-letter records are unacknowledged: a crash before they are may lose them"
            );
        }
        self.checkpoint_due = None;
        let t0 = Instant::now();
        let offsets = self.book().engine_positions();
        if offsets.is_empty() {
            // Before the first assignment nothing was consumed: the newest
            // checkpoint (if any) still holds.
            return;
        }
        let engine = match self.snapshot_buffer.take() {
            Some(buf) => self.engine.snapshot_into(buf),
            None => self.engine.snapshot(),
        };
        let snapshot = t0.elapsed();
        self.checkpoint_writes.spawn_blocking(move || {
            let t = Instant::now();
            let cp = Checkpoint { offsets, engine };
            let result = store.write(&cp);
            CheckpointDone {
                result,
                snapshot,
                write: t.elapsed(),
                offsets: cp.offsets,
            }
        });
    }

    /// Reports a finished checkpoint write and, when it succeeded, stores its
    /// offsets for the next commit. Returns whether it succeeded.
    fn checkpoint_done(&mut self, r: Result<CheckpointDone, tokio::task::JoinError>) -> bool {
        let dir = self
            .checkpoint
            .as_ref()
            .map(|s| s.dir().to_path_buf())
            .unwrap_or_default();
        let done = match r {
            Ok(d) => d,
            Err(e) => {
                telemetry::CheckpointFailed {
                    dir: &dir,
                    error: &e,
                }
                .emit();
                return false;
            }
        };
        let written = match &done.result {
            Ok(w) => w,
            Err(e) => {
                telemetry::CheckpointFailed {
                    dir: &dir,
                    error: e,
                }
                .emit();
                return false;
            }
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
            match self.consumer.store_offsets(&tpl) {
                Ok(()) => {
                    self.stored_since_commit = true;
                    self.stored_text = describe(&tpl);
                }
                Err(e) => {
                    tracing::debug!(error = %e, offsets = describe(&tpl), "cannot store checkpoint offsets")
                }
            }
        }
        true
    }

    /// Hands positions that moved to librdkafka's offset store. With
    /// checkpoints on, only a written checkpoint's offsets are stored.
    fn store_moved(&mut self) {
        if self.checkpoint.is_some() {
            return;
        }
        let moved = self.book().take_moved();
        if moved.count() == 0 {
            return;
        }
        match self.consumer.store_offsets(&moved) {
            Ok(()) => {
                self.stored_since_commit = true;
                self.stored_text = describe(&moved);
            }
            // A partition revoked meanwhile: its offsets were stored by the
            // revoke callback.
            Err(e) => {
                tracing::debug!(error = %e, offsets = describe(&moved), "cannot store offsets")
            }
        }
    }

    /// Stores what moved and, if anything was stored since the last commit,
    /// commits synchronously on a blocking thread (one at a time), so the
    /// result is known without blocking the loop.
    fn commit(&mut self) {
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

    fn commit_done(&mut self, r: Result<(KafkaResult<()>, String), tokio::task::JoinError>) {
        match r {
            Ok((r, offsets)) => telemetry::CommitCompleted {
                trigger: CommitTrigger::Periodic,
                result: commit_result(&r, &offsets),
            }
            .emit(),
            Err(e) => warn!(error = %e, "offset commit task failed"),
        }
    }

    fn publish(&mut self) {
        if self.output_topic.is_empty() {
            return;
        }
        let Some(t) = self.engine.clock() else { return };
        let families = self.engine.families();
        let records = self.diff.changed(&self.output_topic, &families, t);
        if !records.is_empty() {
            self.spawn_delivery(Stream::Output, records);
        }
    }

    fn render(&mut self, req: RenderRequest) {
        let m = telemetry::metrics();
        m.pending_events.set(self.engine.pending_events() as i64);
        m.engine_state_bytes.set(self.engine.state_bytes() as i64);
        let _ = req.reply.send(to_prometheus_text(&self.engine.families()));
    }

    /// The bounded shutdown: wait for dead-letter acknowledgements, publish
    /// the last changes, commit synchronously, deliver what is queued, flush.
    async fn finish(mut self, deadline: tokio::time::Instant) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        info!(
            dead_letters_in_flight = self.dead_letters.len(),
            "shutting down: finishing deliveries, final commit"
        );
        while !self.dead_letters.is_empty() {
            match timeout_at(deadline, self.dead_letters.join_next()).await {
                Ok(Some(Ok(done))) => self.dead_letter_done(done),
                Ok(Some(Err(e))) => warn!(error = %e, "dead-letter delivery task failed"),
                Ok(None) => break,
                Err(_) => {
                    report.problems.push(format!(
                        "{} dead-letter records not acknowledged in time (their offsets stay uncommitted)",
                        self.dead_letters.len()
                    ));
                    self.dead_letters.abort_all();
                    break;
                }
            }
        }
        self.after_engine_change(None, wall_ms());
        self.publish();

        // The final checkpoint (after one still being written), whose
        // offsets the final commit then commits.
        if self.checkpoint.is_some() {
            while let Ok(Some(done)) =
                timeout_at(deadline, self.checkpoint_writes.join_next()).await
            {
                self.checkpoint_done(done);
            }
            self.checkpoint_with(true);
            match timeout_at(deadline, self.checkpoint_writes.join_next()).await {
                Ok(Some(done)) => {
                    if !self.checkpoint_done(done) {
                        report.problems.push("final checkpoint write failed".into());
                    }
                }
                Ok(None) => {}
                Err(_) => report
                    .problems
                    .push("final checkpoint write did not finish in time".into()),
            }
        }

        // A periodic commit still running finishes first.
        if let Ok(Some(done)) = timeout_at(deadline, self.commits.join_next()).await {
            self.commit_done(done);
        }
        self.store_moved();
        let consumer = self.consumer.clone();
        let commit = tokio::task::spawn_blocking(move || {
            let r = consumer.commit_consumer_state(CommitMode::Sync);
            let offsets = consumer
                .committed(Duration::from_secs(1))
                .map(|t| describe(&t))
                .unwrap_or_default();
            (r, offsets)
        });
        match timeout_at(deadline, commit).await {
            Ok(Ok((r, offsets))) => {
                let result = commit_result(&r, &offsets);
                if let telemetry::CommitResult::Error(e) = &result {
                    report
                        .problems
                        .push(format!("final offset commit failed: {e}"));
                }
                telemetry::CommitCompleted {
                    trigger: CommitTrigger::Shutdown,
                    result,
                }
                .emit();
            }
            Ok(Err(e)) => report
                .problems
                .push(format!("final offset commit panicked: {e}")),
            Err(_) => report
                .problems
                .push("final offset commit did not finish in time".into()),
        }

        while !self.background.is_empty() {
            match timeout_at(deadline, self.background.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    self.background.abort_all();
                    break;
                }
            }
        }
        for s in Stream::ALL {
            let left = telemetry::metrics()
                .delivery_pending
                .with_label_values(&[s.as_str()])
                .get();
            if left > 0 {
                telemetry::DeliveryAbandoned {
                    stream: s,
                    records: left as u64,
                }
                .emit();
                report.problems.push(format!(
                    "{left} {} records undelivered at the deadline",
                    s.as_str()
                ));
            }
        }

        // Flush and close the clients off the runtime: librdkafka calls block.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Loop {
            consumer, producer, ..
        } = self;
        let close = tokio::task::spawn_blocking(move || {
            let flushed = producer.flush(remaining);
            drop(producer);
            drop(consumer);
            flushed
        });
        match timeout_at(deadline + Duration::from_millis(500), close).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => report.problems.push(format!("producer flush failed: {e}")),
            Ok(Err(e)) => report
                .problems
                .push(format!("closing the clients panicked: {e}")),
            Err(_) => report
                .problems
                .push("closing the Kafka clients did not finish in time".into()),
        }
        report
    }
}
