//! What the consumer loop owns ([`Loop`]) and its smaller duties: the
//! periodic tick (heartbeat, wall-clock following), alerts and latency after
//! the engine moved, output and alert batches (one in flight each, see
//! [`crate::kafka::outbox`]), `/metrics` renderings.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;
use tokio::task::JoinSet;

use super::checkpointing::CheckpointDone;
use super::clients::Clients;
use super::dead_letters::{DeadLetterDone, DeadLetterPolicy, Paused};
use super::handover::{Moves, SharedEngine, lock_engine};
use super::{LATENCY_TRACK_CAP, RenderRequest, Rendered, wall_ms};
use crate::checkpoint::CheckpointStore;
use crate::config::Config;
use crate::engine::Engine;
use crate::event::{Decoder, Millis};
use crate::kafka::context::{ConsumerCtx, ProducerCtx};
use crate::kafka::fleet::{self, FleetTotals};
use crate::kafka::latency::LatencyTracker;
use crate::kafka::live::LiveState;
use crate::kafka::offsets::OffsetBook;
use crate::kafka::outbox::{Attempted, Dropped, Outbox};
use crate::kafka::publish::{self, OutRecord, SeriesDiff};
use crate::telemetry::{self, FailureReason, Stream};

/// Everything the consumer loop owns.
pub struct Loop {
    pub consumer: Arc<StreamConsumer<ConsumerCtx>>,
    pub producer: FutureProducer<ProducerCtx>,
    /// Shared with the revoke callback, which runs inside `recv`.
    pub book: Arc<Mutex<OffsetBook>>,
    pub live: Arc<LiveState>,
    /// Shared with the rebalance callbacks (see [`super::handover`]).
    pub engine: SharedEngine,
    /// State in the state store: restores, periodic snapshots (empty
    /// otherwise).
    pub moves: Moves,
    /// Checkpoints on: where they are written.
    pub checkpoint: Option<CheckpointStore>,
    /// The checkpoint write in flight (at most one).
    pub checkpoint_writes: JoinSet<CheckpointDone>,
    /// A checkpoint is due but waits, with consumption paused, for the
    /// dead-letter records in flight to be acknowledged; until this instant
    /// at most.
    pub checkpoint_due: Option<Instant>,
    /// Shared with the thread that decodes a turn's messages ahead.
    pub decoder: Arc<Decoder>,
    /// The assignment of each partition when the current turn started
    /// (see `receive`), kept to reuse its allocation.
    pub turn_assignments: Vec<(u32, u64)>,
    pub latency: LatencyTracker,
    /// `cxpulse_event_to_metric_seconds`, with buckets for this lateness.
    pub latency_histogram: prometheus::Histogram,
    pub diff: SeriesDiff,
    /// Dead-letter deliveries; each completes with the offset it releases.
    pub dead_letters: JoinSet<DeadLetterDone>,
    /// What happens when a dead-letter record cannot be delivered, and the
    /// partitions paused for that.
    pub dead_letter_policy: DeadLetterPolicy,
    pub paused: Paused,
    /// Output records waiting (one per series) and alerts waiting.
    pub output: Outbox,
    pub alerts: Outbox,
    /// Fleet totals (output topic set): partials published, folding duty.
    pub fleet: Option<FleetTotals>,
    /// Partials records waiting (one per input partition).
    pub partials: Outbox,
    /// The batch in flight of each of them (at most one each).
    pub flights: JoinSet<Flight>,
    /// Shutting down: failed dead letters are not sent again.
    pub shutting_down: bool,
    /// When the last message arrived (for wall-clock following).
    pub last_message: Instant,
    /// Consumer errors since the last message, to pause after a long run.
    pub errors_in_a_row: u64,
    /// Offsets were stored since the last commit request.
    pub stored_since_commit: bool,
    /// The positions last stored, for the commit log line.
    pub stored_text: String,
    /// The periodic commit in flight (at most one).
    pub commits: JoinSet<(KafkaResult<()>, String)>,
    pub dlq_topic: String,
    pub output_topic: String,
    pub alerts_topic: String,
    /// The first input topic: its partition 0's owner folds the totals.
    pub input_topic: String,
    pub idle_timeout: Duration,
}

impl Loop {
    pub fn new(
        cfg: &Config,
        clients: Clients,
        book: Arc<Mutex<OffsetBook>>,
        live: Arc<LiveState>,
        engine: SharedEngine,
        checkpoint: Option<CheckpointStore>,
        moves: Moves,
    ) -> anyhow::Result<Loop> {
        let k = &cfg.kafka;
        let fleet = if k.output_topic.is_empty() {
            None
        } else {
            Some(FleetTotals::new(
                k,
                fleet::instance_id(&k.group_instance_id),
                fleet::validator(lock_engine(&engine).prm.clone()),
            )?)
        };
        Ok(Loop {
            consumer: Arc::new(clients.consumer),
            producer: clients.producer,
            book,
            live,
            engine,
            moves,
            checkpoint,
            checkpoint_writes: JoinSet::new(),
            checkpoint_due: None,
            decoder: Arc::new(Decoder::new(
                &cfg.mapping,
                cfg.engine.max_message_bytes,
                cfg.engine.kafka_timestamp_fallback,
            )),
            turn_assignments: Vec::new(),
            latency: LatencyTracker::new(LATENCY_TRACK_CAP),
            latency_histogram: telemetry::metrics()
                .latency_histogram(cfg.engine.allowed_lateness.ms()),
            diff: SeriesDiff::default(),
            dead_letters: JoinSet::new(),
            dead_letter_policy: DeadLetterPolicy::new(k),
            paused: Paused::default(),
            output: Outbox::keyed(),
            alerts: Outbox::fifo(k.delivery_attempts),
            fleet,
            partials: Outbox::keyed(),
            flights: JoinSet::new(),
            shutting_down: false,
            last_message: Instant::now(),
            errors_in_a_row: 0,
            stored_since_commit: false,
            stored_text: String::new(),
            commits: JoinSet::new(),
            dlq_topic: k.dead_letter_topic.clone(),
            output_topic: k.output_topic.clone(),
            alerts_topic: k.alerts_topic.clone(),
            input_topic: k.input_topics.first().cloned().unwrap_or_default(),
            idle_timeout: Duration::from_millis(cfg.engine.idle_timeout.ms().max(0) as u64),
        })
    }

    pub fn book(&self) -> MutexGuard<'_, OffsetBook> {
        lock(&self.book)
    }

    /// The engine (never held across an `.await` or a `recv()`).
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        lock_engine(&self.engine)
    }

    /// After the clock of partition `pid` (of every partition: `None`) may
    /// have moved: publish new breach alerts and record the latency of
    /// effects that became visible.
    pub fn after_engine_change(&mut self, pid: Option<u32>, now: Millis) {
        match pid {
            Some(p) => self.after_partitions_changed(&[p], now),
            None => {
                let pids = self.latency.partitions();
                self.after_partitions_changed(&pids, now);
            }
        }
    }

    /// [`Self::after_engine_change`] for the clocks of partitions `pids`.
    pub fn after_partitions_changed(&mut self, pids: &[u32], now: Millis) {
        let alerts = self.engine().drain_alerts();
        if !alerts.is_empty() && !self.alerts_topic.is_empty() {
            let records: Vec<OutRecord> = alerts
                .iter()
                .map(|a| publish::alert_record(&self.alerts_topic, a))
                .collect();
            let dropped = self.alerts.push(records);
            report_dropped(Stream::Alerts, &self.alerts_topic, &dropped);
            self.start_deliveries();
        }
        // Counted locally and added to the histogram once (its `observe`
        // is a few atomic operations per event).
        let hist = self.latency_histogram.local();
        let mut observe = |s: f64| hist.observe(s);
        let engine = lock_engine(&self.engine);
        for &p in pids {
            if let Some(through) = applied_through(&engine, p) {
                self.latency.release(p, through, now, &mut observe);
            }
        }
        hist.flush();
    }

    /// Sends the next batch of output, alerts and partials, where none is in flight.
    pub fn start_deliveries(&mut self) {
        for stream in [Stream::Output, Stream::Alerts, Stream::Partials] {
            let outbox = match stream {
                Stream::Output => &mut self.output,
                Stream::Partials => &mut self.partials,
                _ => &mut self.alerts,
            };
            if let Some(batch) = outbox.next_batch(MAX_BATCH) {
                let producer = self.producer.clone();
                self.flights.spawn(async move {
                    Flight {
                        stream,
                        results: publish::send_batch(producer, stream, batch).await,
                    }
                });
            }
        }
        self.sync_pending();
    }

    /// A batch of output or alerts finished: failures go back or are
    /// dropped (see [`Outbox::done`]); the next batch goes at once after a
    /// success, at the next publish tick after a failure.
    pub fn flight_done(&mut self, f: Flight) {
        let partials_topic = self.fleet.as_ref().map(|f| f.partials_topic.as_str());
        let (outbox, topic) = match f.stream {
            Stream::Output => (&mut self.output, self.output_topic.as_str()),
            Stream::Partials => (&mut self.partials, partials_topic.unwrap_or_default()),
            _ => (&mut self.alerts, self.alerts_topic.as_str()),
        };
        let dropped = outbox.done(f.results);
        report_dropped(f.stream, topic, &dropped);
        self.start_deliveries();
    }

    /// `cxpulse_delivery_pending` of output and alerts: waiting plus in flight.
    fn sync_pending(&self) {
        let g = &telemetry::metrics().delivery_pending;
        g.with_label_values(&[Stream::Output.as_str()])
            .set(self.output.pending() as i64);
        g.with_label_values(&[Stream::Alerts.as_str()])
            .set(self.alerts.pending() as i64);
        g.with_label_values(&[Stream::Partials.as_str()])
            .set(self.partials.pending() as i64);
    }

    pub fn tick(&mut self) {
        let now = wall_ms();
        self.live.beat(now);
        if self.checkpoint_due.is_some_and(|d| Instant::now() >= d) {
            self.checkpoint();
        }
        if self.last_message.elapsed() >= self.idle_timeout
            && self.live.caught_up_since(self.last_message)
        {
            // Whole seconds: instances idling together agree on T.
            let to = whole_second(now);
            let mut engine = self.engine();
            let from = engine.clock();
            if from.is_none_or(|t| to > t) {
                engine.advance_to(to);
                telemetry::ClockFollowedWall { from, to }.emit();
            }
        }
        self.after_engine_change(None, now);
        self.reconcile_paused();
        self.store_moved();
    }

    /// Every `publish_interval`: this instance's partials join the partials
    /// outbox; the folder (owner of input partition 0) folds the latest
    /// partials of every partition and the changed series of the totals join
    /// the output outbox (replacing older waiting values); batches held
    /// back after a failure may go again. See [`crate::kafka::fleet`].
    pub fn publish(&mut self) {
        self.output.tick();
        self.alerts.tick();
        self.partials.tick();
        // Just after a stall this instance may have lost its partitions
        // without knowing it yet: nothing is published until it knows.
        let holding = self.moves.holding();
        if let Some(fleet) = self.fleet.as_mut().filter(|_| !holding) {
            let assigned = assigned(&self.consumer);
            let mut engine = lock_engine(&self.engine);
            let owned: Vec<u32> = {
                let mut book = lock(&self.book);
                assigned.iter().map(|(t, p)| book.pid(t, *p)).collect()
            };
            if self.moves.handover.is_none() {
                // State not moved through the state store: a partition is
                // held from its first message. Every assigned partition has
                // a partial (empty until its first event), so the totals are
                // not held back by a partition without events.
                for pid in &owned {
                    engine.ensure_partition(*pid);
                }
            }
            let t = engine.clock();
            // Only partitions assigned now (state kept of a partition
            // revoked earlier is not this instance's to publish); in the
            // state-store mode a restoring partition is not held yet.
            let mut own = engine.partials();
            own.retain(|(pid, _)| owned.contains(pid));
            // Also without T (no event yet): the partition then counts, with
            // its counters only, instead of holding the totals back.
            let t = t.unwrap_or(fleet::NO_T);
            let epoch = |pid: u32| self.moves.epoch(pid);
            self.partials.push(fleet.partial_records(t, &own, &epoch));
            let folder = assigned
                .iter()
                .any(|(topic, p)| *topic == self.input_topic && *p == 0);
            if fleet.set_folder(folder) {
                // A new duty starts from nothing published; a duty given
                // up leaves the totals to the new folder.
                self.diff = SeriesDiff::default();
                if !folder {
                    self.output.clear_waiting();
                }
            }
            let prm = &engine.prm;
            let fold = |t: Millis, parts: &[(u32, &[u8])]| {
                crate::engine::fold_partials(prm, t, parts).map_err(|e| e.to_string())
            };
            if let Some(totals) = fleet.totals(&fold, &own, t, &epoch) {
                let records = self
                    .diff
                    .changed(&self.output_topic, &totals.families, totals.t);
                self.output.push(records);
            }
        }
        self.start_deliveries();
    }

    pub fn render(&mut self, req: RenderRequest) {
        let m = telemetry::metrics();
        let (families, clock_ms) = {
            let engine = self.engine();
            m.pending_events.set(engine.pending_events() as i64);
            m.engine_state_bytes.set(engine.state_bytes() as i64);
            (engine.families(), engine.clock())
        };
        // The export guard counts process-wide; the counter follows it.
        let dropped = crate::export::non_finite_dropped();
        let shown = m.engine_non_finite_values.get();
        if dropped > shown {
            m.engine_non_finite_values.inc_by(dropped - shown);
        }
        let _ = req.reply.send(Rendered { families, clock_ms });
    }
}

/// A finished batch of output or alert records.
pub struct Flight {
    pub stream: Stream,
    pub results: Vec<(Attempted, Result<(), FailureReason>)>,
}

/// Most records in one output or alerts batch.
const MAX_BATCH: usize = 10_000;

fn report_dropped(stream: Stream, topic: &str, dropped: &Dropped) {
    for (reason, n) in dropped {
        telemetry::DeliveryDropped {
            stream,
            topic,
            reason: *reason,
            records: *n,
            source: None,
        }
        .emit();
    }
}

/// The (topic, partition) pairs in the consumer's assignment.
fn assigned(consumer: &StreamConsumer<ConsumerCtx>) -> Vec<(String, i32)> {
    use rdkafka::consumer::Consumer as _;
    consumer.assignment().map_or_else(
        |_| Vec::new(),
        |tpl| {
            tpl.elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect()
        },
    )
}

/// The offset book, also when a panic elsewhere poisoned its lock (it is
/// plain data, consistent between calls).
pub fn lock(book: &Mutex<OffsetBook>) -> MutexGuard<'_, OffsetBook> {
    book.lock().unwrap_or_else(|e| e.into_inner())
}

/// `ms` rounded down to the whole second (towards the past, also before 1970).
pub fn whole_second(ms: Millis) -> Millis {
    ms - ms.rem_euclid(1000)
}

/// How far partition `pid` of the engine has applied its effects (its clock
/// less `allowed_lateness`); `None` before its first event.
fn applied_through(engine: &Engine, pid: u32) -> Option<Millis> {
    engine.parts.get(&pid).map(|p| p.applied_through)
}

#[cfg(test)]
mod tests {
    use super::whole_second;

    #[test]
    fn idle_following_rounds_down_to_the_whole_second() {
        // 2026-01-05T10:00:00.999Z -> 10:00:00Z.
        assert_eq!(whole_second(1_767_607_200_999), 1_767_607_200_000);
        assert_eq!(whole_second(1_767_607_200_000), 1_767_607_200_000);
        assert_eq!(whole_second(-1), -1000);
    }
}
