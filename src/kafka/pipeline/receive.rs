//! Taking messages off the consumer: a turn takes every message that is
//! ready (up to [`BATCH`]) without going back through `select!`, decodes
//! them (a large turn on a second thread, ahead of the engine), carries out
//! each message's [`Decision`] in offset order, and keeps a run of consumer
//! errors from spinning the loop.
//!
//! The engine and the offset book are locked once per [`CHUNK`] of
//! messages, and alerts and latency are followed once per chunk, not per
//! message. Decoding ahead overlaps the JSON decode of later messages with
//! the engine's apply of earlier ones (the two are about equal in cost).
//!
//! A large turn holding several input partitions, with cores to spare and
//! no cap set, is applied apart instead (`handle_parallel`): each
//! partition's messages are decoded and applied on a thread of its own
//! (the loop thread takes one share), with `&mut` that partition's state
//! alone ([`crate::engine::Engine::split`]). The offset book stays with
//! the loop thread: messages are admitted before and booked after, in the
//! turn's order, as on the serial path (see docs/semantics.md, "Applied
//! apart"). librdkafka hands over a backlog's messages in long runs of one
//! partition, so most turns of a backlog hold a single partition and take
//! the serial path.
//!
//! Rebalance callbacks run inside a poll of the consumer. A message taken
//! before a poll is applied after it, so a turn notices a callback that
//! ran (through [`crate::kafka::LiveState::assignment_changes`]) and drops
//! the messages it took earlier whose partition was revoked (or revoked
//! and assigned again) by it: they were not applied nor booked, so their
//! offsets were neither stored nor covered by a snapshot, and whoever owns
//! the partition next consumes them again (the delivery rule holds).
//! Messages of partitions still assigned are applied as usual.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_core::Stream;
use rdkafka::consumer::{MessageStream, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};

use super::decide::{Decision, MessageView, Offered, book_offered, decide_decoded, offer_decoded};
use super::handover::lock_engine;
use super::state::{Loop, lock};
use super::wall_ms;
use crate::engine::{Applied, PartApply};
use crate::event::{DecodeFailure, Decoder, Event, Millis};
use crate::kafka::context::ConsumerCtx;
use crate::kafka::offsets::OffsetBook;
use crate::telemetry;

/// At most this many ready messages are handled per turn of the loop before
/// timers, `/metrics` requests and acknowledgements get their turn.
const BATCH: usize = 2048;
/// Messages decided under one lock of the engine and the offset book, and
/// handed over at once by the thread that decodes ahead.
const CHUNK: usize = 128;
/// A turn with at least this many messages decodes them on a second thread
/// (starting a thread costs about as much as decoding a few dozen).
const DECODE_AHEAD_MIN: usize = 2 * CHUNK;
/// A turn with at least this many messages, of several partitions, applies
/// each partition on a thread of its own when there are cores.
const PARALLEL_MIN: usize = 2 * CHUNK;
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

/// What the turn needs of a message, read off librdkafka's message once,
/// in one pass over the turn: its payload and Kafka timestamp (what
/// decoding needs) and where it is from. Read again later, interleaved with
/// the engine's work, the message (a librdkafka allocation of its own) has
/// left the cache by then: those loads were most of `handle_chunk`'s own
/// time.
#[derive(Clone, Copy)]
struct Input<'m> {
    payload: &'m [u8],
    timestamp: Option<Millis>,
    /// The librdkafka topic handle's address ([`topic_handle`]), only
    /// compared (an integer: inputs go to other threads).
    rkt: usize,
    partition: i32,
    offset: i64,
}

impl<'m> Input<'m> {
    fn of(m: &'m BorrowedMessage<'_>) -> Input<'m> {
        Input {
            payload: m.payload().unwrap_or_default(),
            timestamp: m.timestamp().to_millis(),
            rkt: topic_handle(m),
            partition: m.partition(),
            offset: m.offset(),
        }
    }
}

type Decoded<'m> = Result<Event<'m>, DecodeFailure>;

impl Loop {
    /// Handles `first` and whatever else is ready on `consumer`.
    pub fn receive(
        &mut self,
        consumer: &StreamConsumer<ConsumerCtx>,
        first: KafkaResult<BorrowedMessage<'_>>,
    ) -> Turn {
        let turn = Instant::now();
        let now_ms = wall_ms();
        // Sized for a full turn at once (growing it by doubling cost a
        // realloc and a copy every few hundred messages).
        let mut batch: Vec<BorrowedMessage<'_>> = Vec::with_capacity(BATCH);
        let mut changes = self.live.assignment_changes();
        self.note_assignments();
        // One stream for the whole turn: `recv()` registers (and removes) a
        // waker slot under a mutex for every message it returns.
        let mut stream = consumer.stream();
        let mut next = Some(first);
        let mut taken = 0;
        let mut end = Turn::Done;
        while let Some(m) = next.take() {
            match m {
                Ok(m) => {
                    self.errors_in_a_row = 0;
                    self.last_message = turn;
                    batch.push(m);
                }
                Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
                    telemetry::ConsumerFatal { error: &e }.emit();
                    end = Turn::Fatal(e.to_string());
                    break;
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
                        end = Turn::Pause(tokio::time::Instant::now() + ERROR_RUN_PAUSE);
                        break;
                    }
                }
            }
            taken += 1;
            if taken < BATCH {
                next = try_next(&mut stream);
                let now_changes = self.live.assignment_changes();
                if now_changes != changes {
                    changes = now_changes;
                    self.drop_moved(&mut batch);
                    self.note_assignments();
                }
            }
        }
        if !batch.is_empty() {
            let apart = self.handle_batch(&batch, now_ms);
            telemetry::TurnHandled {
                messages: batch.len(),
                apart,
            }
            .emit();
        }
        end
    }

    /// Notes the assignment of every partition as the turn (or the part of
    /// it after a rebalance) starts.
    fn note_assignments(&mut self) {
        let book = self.book.clone();
        lock(&book).assignments(&mut self.turn_assignments);
    }

    /// A rebalance callback ran: drops the messages of `batch` whose
    /// partition's assignment changed since [`Self::note_assignments`].
    fn drop_moved(&mut self, batch: &mut Vec<BorrowedMessage<'_>>) {
        if batch.is_empty() {
            return;
        }
        let book = self.book.clone();
        let mut book = lock(&book);
        let before = batch.len();
        let noted = &self.turn_assignments;
        batch.retain(|m| book.same_assignment(noted, m.topic(), m.partition()));
        let dropped = before - batch.len();
        if dropped > 0 {
            telemetry::MessagesDroppedOnRebalance { messages: dropped }.emit();
        }
    }

    /// Decodes `batch` (ahead, on a second thread, when it is large) and
    /// decides its messages in order, a chunk at a time. Returns whether it
    /// was applied apart (`handle_parallel`).
    fn handle_batch(&mut self, batch: &[BorrowedMessage<'_>], now: Millis) -> bool {
        if batch.is_empty() {
            return false;
        }
        let inputs: Vec<Input<'_>> = batch.iter().map(Input::of).collect();
        if inputs.len() >= PARALLEL_MIN
            && cores() >= 2
            && several_partitions(&inputs)
            && self.handle_parallel(batch, &inputs, now)
        {
            return true;
        }
        let decoder = self.decoder.clone();
        // One for the turn: a partition's topic name and id are looked up
        // once per turn, not once per chunk.
        let mut viewer = Viewer::default();
        if inputs.len() < DECODE_AHEAD_MIN {
            for (msgs, ins) in batch.chunks(CHUNK).zip(inputs.chunks(CHUNK)) {
                self.handle_chunk(msgs, ins, decode_all(&decoder, ins), &mut viewer, now);
            }
            return false;
        }
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel::<Vec<Decoded<'_>>>();
            let ahead = &inputs[CHUNK..];
            let decoder_ahead = &*decoder;
            let worker = std::thread::Builder::new()
                .name("cxpulse-decode".into())
                .spawn_scoped(s, move || {
                    for ins in ahead.chunks(CHUNK) {
                        if tx.send(decode_all(decoder_ahead, ins)).is_err() {
                            break;
                        }
                    }
                });
            if worker.is_err() {
                // No thread to be had: decode here (`rx` then yields nothing).
                telemetry::DecodeAheadUnavailable.emit();
            }
            for (i, (msgs, ins)) in batch.chunks(CHUNK).zip(inputs.chunks(CHUNK)).enumerate() {
                // Chunk 0 is decoded here while the thread starts on the
                // others, which it hands over in order.
                let ahead = if i == 0 { None } else { rx.recv().ok() };
                let decoded = match ahead {
                    Some(d) if d.len() == ins.len() => d,
                    // The decoding thread is gone (it cannot panic on bad
                    // input; this is only a guard): decode here.
                    _ => decode_all(&decoder, ins),
                };
                self.handle_chunk(msgs, ins, decoded, &mut viewer, now);
            }
        });
        false
    }

    /// Applies each partition's messages of a large turn on a thread of its
    /// own (as many threads as cores, the loop thread one of them), when
    /// the turn holds several partitions and the engine can be split (no
    /// cap set). Returns false, having done nothing, when it cannot.
    ///
    /// The offset book stays with the loop thread, locked with the engine
    /// for the whole turn: each message is admitted (or ignored) before,
    /// and booked (handled, held for its dead letter) after the partitions
    /// are applied, in the turn's order (offset order per partition), as
    /// on the serial path. Each thread decodes and offers its partitions'
    /// messages in that order with `&mut` to their state alone.
    fn handle_parallel(
        &mut self,
        batch: &[BorrowedMessage<'_>],
        inputs: &[Input<'_>],
        now: Millis,
    ) -> bool {
        let (engine, book) = (self.engine.clone(), self.book.clone());
        let mut engine = lock_engine(&engine);
        if !engine.splits() {
            return false;
        }
        let mut book = lock(&book);
        // Each message's engine partition and admission, and the messages
        // of each partition in order (indices into `batch`).
        let mut views: Vec<MessageView<'_>> = Vec::with_capacity(batch.len());
        let mut pids: Vec<u32> = Vec::with_capacity(batch.len());
        let mut admitted: Vec<bool> = Vec::with_capacity(batch.len());
        let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
        let mut viewer = Viewer::default();
        // The group of the previous message's partition.
        let mut last: Option<(u32, usize)> = None;
        for (i, (m, input)) in batch.iter().zip(inputs).enumerate() {
            let (view, pid) = viewer.view(m, input, &mut book);
            let g = match last {
                Some((p, g)) if p == pid => g,
                _ => {
                    let g = match groups.iter().position(|(p, _)| *p == pid) {
                        Some(g) => g,
                        None => {
                            groups.push((pid, Vec::new()));
                            groups.len() - 1
                        }
                    };
                    last = Some((pid, g));
                    g
                }
            };
            pids.push(pid);
            let admits = book.admits(pid, view.offset);
            views.push(view);
            admitted.push(admits);
            if admits {
                groups[g].1.push(i);
            }
        }
        groups.retain(|(_, g)| !g.is_empty());
        if groups.len() < 2 {
            return false;
        }
        let group_pids: Vec<u32> = groups.iter().map(|(p, _)| *p).collect();
        let Some(appliers) = engine.split(&group_pids) else {
            return false;
        };
        // Partitions to threads: the largest first, each to the thread with
        // the fewest messages so far.
        let workers = cores().min(groups.len());
        let mut by_size: Vec<(PartApply<'_>, &[usize])> = appliers
            .into_iter()
            .map(|a| {
                let g = groups.iter().find(|(p, _)| *p == a.pid());
                (a, g.map_or(&[][..], |(_, g)| &g[..]))
            })
            .collect();
        by_size.sort_by_key(|(_, g)| std::cmp::Reverse(g.len()));
        let mut bins: Vec<Vec<(PartApply<'_>, &[usize])>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut load = vec![0usize; workers];
        for w in by_size {
            let b = (0..workers).min_by_key(|&b| load[b]).unwrap_or(0);
            load[b] += w.1.len();
            bins[b].push(w);
        }
        // The loop thread takes the lightest: it also books the turn.
        let lightest = (0..workers).min_by_key(|&b| load[b]).unwrap_or(0);
        bins.swap(0, lightest);
        let decoder = &*self.decoder;
        let mut offered: Vec<Option<Offered>> = (0..batch.len()).map(|_| None).collect();
        let mut done: Vec<(u32, Applied)> = Vec::with_capacity(groups.len());
        std::thread::scope(|s| {
            let mut bins = bins.into_iter();
            let own = bins.next().unwrap_or_default();
            let mut handles = Vec::new();
            let mut here = vec![own];
            for bin in bins {
                // The bin comes back if no thread could be had.
                let (tx, rx) = mpsc::channel();
                let spawned = std::thread::Builder::new()
                    .name("cxpulse-apply".into())
                    .spawn_scoped(s, move || {
                        let bin = rx.recv().unwrap_or_default();
                        apply_bin(bin, inputs, decoder, now)
                    });
                match spawned {
                    Ok(h) => {
                        // The thread waits on `rx`, alive while `tx` is sent.
                        let _ = tx.send(bin);
                        handles.push(h);
                    }
                    Err(_) => {
                        telemetry::ApplyThreadUnavailable.emit();
                        here.push(bin);
                    }
                }
            }
            let mut results = Vec::new();
            for bin in here {
                results.push(apply_bin(bin, inputs, decoder, now));
            }
            for h in handles {
                match h.join() {
                    Ok(r) => results.push(r),
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
            for (applied, parts) in results {
                for (i, o) in applied {
                    offered[i] = Some(o);
                }
                done.extend(parts);
            }
        });
        telemetry::PartitionsAppliedApart {
            messages: batch.len(),
            partitions: groups.len(),
            threads: workers,
        }
        .emit();
        // Alerts queued in partition order, whatever thread found them.
        done.sort_by_key(|(pid, _)| *pid);
        engine.join(done.into_iter().map(|(_, a)| a));
        let mut touched: Vec<u32> = Vec::new();
        let mut refused: Vec<(usize, Decision)> = Vec::new();
        let dead_letters = !self.dlq_topic.is_empty();
        for (i, (view, o)) in views.iter().zip(offered).enumerate() {
            let pid = pids[i];
            let decision = match o {
                Some(o) if admitted[i] => book_offered(view, pid, o, &mut book, dead_letters),
                // Not admitted (its partition's state is restoring).
                _ => Decision::Ignored,
            };
            self.note_decision(i, pid, view, decision, &mut refused, &mut touched);
        }
        drop(book);
        drop(engine);
        self.carry_out(batch, refused, &touched, now);
        true
    }

    /// Decides the messages of one chunk, in order, under one lock of the
    /// engine and the offset book; then carries out dead letters and drops,
    /// publishes new alerts and follows the latency of the partitions moved.
    fn handle_chunk<'m>(
        &mut self,
        msgs: &'m [BorrowedMessage<'_>],
        inputs: &[Input<'_>],
        decoded: Vec<Decoded<'_>>,
        viewer: &mut Viewer<'m>,
        now: Millis,
    ) {
        let mut touched: Vec<u32> = Vec::new();
        let mut refused: Vec<(usize, Decision)> = Vec::new();
        let dead_letters = !self.dlq_topic.is_empty();
        {
            let (engine, book) = (self.engine.clone(), self.book.clone());
            let mut engine = lock_engine(&engine);
            let mut book = lock(&book);
            for (i, ((m, input), decoded)) in msgs.iter().zip(inputs).zip(&decoded).enumerate() {
                let (view, pid) = viewer.view(m, input, &mut book);
                let decision = decide_decoded(
                    &view,
                    pid,
                    || decoded,
                    &mut engine,
                    &mut book,
                    dead_letters,
                    now,
                );
                self.note_decision(i, pid, &view, decision, &mut refused, &mut touched);
            }
        }
        self.carry_out(msgs, refused, &touched, now);
    }

    /// Follows the decision for message `i` of partition `pid`: its
    /// latency when applied, its partition as touched unless ignored, the
    /// decision itself in `refused` when it has more to carry out.
    fn note_decision(
        &mut self,
        i: usize,
        pid: u32,
        view: &MessageView<'_>,
        decision: Decision,
        refused: &mut Vec<(usize, Decision)>,
        touched: &mut Vec<u32>,
    ) {
        match decision {
            // Its partition's state is restoring (or covers it already).
            Decision::Ignored => return,
            Decision::Applied { event_ts } => {
                self.latency.accepted(pid, event_ts, view.timestamp);
            }
            Decision::Duplicate => {}
            other => refused.push((i, other)),
        }
        if !touched.contains(&pid) {
            touched.push(pid);
        }
    }

    /// With the engine and the book unlocked: sends the dead letters and
    /// reports the drops of `refused` (indices into `msgs`), then publishes
    /// new alerts and follows the latency of the partitions `touched`.
    fn carry_out(
        &mut self,
        msgs: &[BorrowedMessage<'_>],
        refused: Vec<(usize, Decision)>,
        touched: &[u32],
        now: Millis,
    ) {
        for (i, decision) in refused {
            let m = &msgs[i];
            match decision {
                Decision::DeadLetter {
                    reason,
                    detail,
                    ticket,
                } => self.dead_letter(m, reason, &detail, ticket),
                Decision::Dropped { reason, detail } => telemetry::InvalidDropped {
                    reason,
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                    detail: &detail,
                }
                .emit(),
                Decision::Applied { .. } | Decision::Duplicate | Decision::Ignored => {}
            }
        }
        if !touched.is_empty() {
            self.after_partitions_changed(touched, now);
        }
    }
}

/// Views of a turn's messages in order, with their engine partition ids.
/// Most messages follow one of the same partition: the topic name (a
/// `strlen` and a UTF-8 check in librdkafka's binding, on the message and
/// topic handle, both out of the cache by then) and the partition id are
/// looked up once per run of one partition.
#[derive(Default)]
struct Viewer<'m> {
    /// The previous message's topic handle, partition, topic name and id.
    last: Option<(usize, i32, &'m str, u32)>,
}

impl<'m> Viewer<'m> {
    /// The view of `m`, `input` its [`Input::of`].
    fn view(
        &mut self,
        m: &'m BorrowedMessage<'_>,
        input: &Input<'_>,
        book: &mut OffsetBook,
    ) -> (MessageView<'m>, u32) {
        let (rkt, partition) = (input.rkt, input.partition);
        let (topic, pid) = match self.last {
            Some((t, p, topic, pid)) if p == partition && t == rkt => (topic, pid),
            _ => {
                let topic = m.topic();
                let pid = book.pid(topic, partition);
                self.last = Some((rkt, partition, topic, pid));
                (topic, pid)
            }
        };
        let view = MessageView {
            topic,
            partition,
            offset: input.offset,
            timestamp: input.timestamp,
        };
        (view, pid)
    }
}

/// The address of the librdkafka topic handle of `m`: one handle per topic
/// per client, so two messages with the same handle are of the same topic.
fn topic_handle(m: &BorrowedMessage<'_>) -> usize {
    // SAFETY: `m.ptr()` is the message librdkafka handed over, valid while
    // `m` is borrowed; only its `rkt` field (a pointer) is read, never
    // dereferenced.
    unsafe { (*m.ptr()).rkt as usize }
}

/// The offers of one thread: the index and outcome of each message, and
/// what each partition learned.
type BinResult = (Vec<(usize, Offered)>, Vec<(u32, Applied)>);

/// Decodes and offers the messages of each partition of `bin` (indices
/// into `inputs`), in order, to that partition's share of the engine.
fn apply_bin(
    bin: Vec<(PartApply<'_>, &[usize])>,
    inputs: &[Input<'_>],
    decoder: &Decoder,
    now: Millis,
) -> BinResult {
    let mut offered = Vec::with_capacity(bin.iter().map(|(_, g)| g.len()).sum());
    let mut parts = Vec::with_capacity(bin.len());
    for (mut part, group) in bin {
        let pid = part.pid();
        for &i in group {
            let Input {
                payload, timestamp, ..
            } = inputs[i];
            let o = offer_decoded(&mut part, pid, &decoder.decode(payload, timestamp), now);
            offered.push((i, o));
        }
        parts.push((pid, part.finish()));
    }
    (offered, parts)
}

/// Whether `inputs` holds messages of more than one partition number (a
/// cheap first look: most turns of a backlog hold one partition).
fn several_partitions(inputs: &[Input<'_>]) -> bool {
    let first = inputs.first().map(|i| i.partition);
    inputs.iter().any(|i| Some(i.partition) != first)
}

/// Cores this process may run on (1 when unknown).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Decodes each of `inputs`.
fn decode_all<'m>(decoder: &Decoder, inputs: &[Input<'m>]) -> Vec<Decoded<'m>> {
    inputs
        .iter()
        .map(|i| decoder.decode(i.payload, i.timestamp))
        .collect()
}

/// The next message of `stream` if one is ready now, without waiting (as
/// `recv()` would: a rebalance or other event handled by the poll instead
/// of a message also ends the turn).
fn try_next<'c>(
    stream: &mut MessageStream<'c, ConsumerCtx>,
) -> Option<KafkaResult<BorrowedMessage<'c>>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(stream).poll_next(&mut cx) {
        // A `MessageStream` never ends.
        std::task::Poll::Ready(m) => m,
        std::task::Poll::Pending => None,
    }
}
