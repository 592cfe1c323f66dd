//! cxpulse's live pipeline against one tansu broker: consume-and-apply
//! throughput as a ratio to a bare rdkafka consumer on the same topic, and
//! event-to-metric latency (p50, p99) at a rate the broker sustains.
//!
//! Run: `scripts/setup-tools.sh` once (it installs tansu), then
//! `cargo bench --bench kafka_throughput`. Knobs (environment):
//! `KAFKA_BENCH_EVENTS` (default 300000) lines for the throughput part,
//! `KAFKA_BENCH_ROUNDS` (default 3) bare/cxpulse pairs of it,
//! `KAFKA_BENCH_DEAD_LETTER` (default 1; 0 runs it without a dead-letter
//! topic, to see what dead-lettering costs the broker),
//! `KAFKA_BENCH_CX_LIBRDKAFKA` (`key=value,...` added to cxpulse's
//! `[kafka.librdkafka]` in that part, e.g.
//! `consumer.max.partition.fetch.bytes=4194304`, to try fetch settings),
//! `KAFKA_BENCH_COMMIT_INTERVAL` (default `50ms`: cxpulse's
//! `kafka.commit_interval` in that part; `5s`, cxpulse's default, made no
//! difference to the broker's CPU on 2026-11-27);
//! `KAFKA_BENCH_CKPT_EVENTS` (default 4000000), `KAFKA_BENCH_CKPT_INTERVALS`
//! (default `1s,30s`, the values of `checkpoint.interval` to compare with
//! checkpoints off; empty skips the part), `KAFKA_BENCH_CKPT_ROUNDS`
//! (default 3) and `KAFKA_BENCH_CKPT_DEAD_LETTER` (default 1; 0 runs that
//! part without a dead-letter topic) for the checkpoint-cost part;
//! `KAFKA_BENCH_RATE` (default 3000) events/s, `KAFKA_BENCH_SECS` (default
//! 20) and `KAFKA_BENCH_LATENESS` (default `1s,30s`, the values of
//! `engine.allowed_lateness` to run; empty skips it) for the latency part.
//!
//! Method:
//! - Throughput: N generated lines (`cxpulse gen` model, 7 days, 0.2 %
//!   invalid, 1 % out of order, 0.5 % duplicates) are produced to a
//!   3-partition topic first. A bare `BaseConsumer` (consumer group,
//!   earliest, touching each payload) reads all N; then cxpulse (in this
//!   process, the real `run::serve`, its own consumer group from scratch)
//!   decodes, applies, stores offsets and dead-letters them. Each rate is N
//!   over the time from the partition assignment to the last message
//!   handled, so group-join time is excluded. The bare consumer ends at its
//!   last message polled. cxpulse's assignment is seen on /metrics (polled
//!   every 10 ms); its end is when its pipeline counter
//!   `cxpulse_input_messages_total` (read in this process, an atomic: no
//!   /metrics scrape, no engine lock, polled every 1 ms; it moves once per
//!   turn, after the turn's messages are applied and booked) has grown by
//!   N. Only then is the run checked further: the group's committed offsets
//!   must cover all N (cxpulse commits every 50 ms here, read from the
//!   broker every 50 ms) before the run is accepted. Both end points are
//!   printed: rounds before 2026-11-27 ended at the committed offsets (up to
//!   ~100 ms more per run, which the bare consumer does not pay; a
//!   measurement fix, not a speed-up), so the ratio by that end point is
//!   printed too, comparable with those figures. Each cxpulse run also
//!   prints its turns by path (`cxpulse_apply_turns_total`: serial or
//!   applied apart) and what it asked of the broker besides fetching.
//! - Checkpoint cost: the same cxpulse measurement with no durable state
//!   (`store = "off"`), with `[checkpoint] dir` (a fresh temporary directory
//!   per run) and with per-partition snapshots to the Kafka state topic
//!   (`store = "kafka"`, the default of `run`; printed as "Kafka snapshots",
//!   the issue's "snapshots on / off" ratio, target >= 0.95) at each
//!   interval, alternating, `ROUNDS` times each, on a topic of
//!   `CKPT_EVENTS` generated lines (the 300k-line topic is consumed in well
//!   under a second: no periodic checkpoint would fall inside the run).
//!   With checkpoints on, offsets are committed only as checkpoints are
//!   written, so committed offsets cannot mark the end here: every run of
//!   this part (off included) ends when cxpulse's own consumer-lag gauge
//!   (read in this process, from librdkafka statistics every 50 ms, the
//!   position being the last message handed to the consumer loop, which
//!   applies it in the same turn) is 0 on every partition. After the stop,
//!   the group's committed offsets must cover every line (the final commit,
//!   or the final checkpoint's). Checkpoint figures are the run's deltas of
//!   `cxpulse_checkpoints_total`, `cxpulse_checkpoint_bytes` and
//!   `cxpulse_checkpoint_write_seconds`, plus the snapshot time (the part
//!   that pauses the consumer loop) from the "checkpoint written" log
//!   events. An interval longer than the run without checkpoints is skipped
//!   (no periodic checkpoint would fall inside it); its cost is then
//!   estimated from the measured pause per checkpoint. A due checkpoint
//!   waits, consumption paused, for the dead-letter records in flight to
//!   be acknowledged (the generated input has 0.2 % invalid lines), which
//!   is part of its cost; `KAFKA_BENCH_CKPT_DEAD_LETTER=0` runs without a
//!   dead-letter topic.
//! - Latency: generated traffic with event time = now, produced at the
//!   given rate, each line when its time comes, for `SECS` plus the
//!   lateness. An event's effect is visible once T has passed its time by
//!   `allowed_lateness` (events are buffered in event-time order until
//!   then), so the figure is the lateness plus what the pipeline adds. The
//!   figures are quantiles of cxpulse's own `cxpulse_event_to_metric_seconds`
//!   histogram (Kafka append time to the effect being visible at /metrics),
//!   interpolated inside buckets as Prometheus' `histogram_quantile` does.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{CxConfig, OffsetReader, Tansu, free_addr, http_get, send, values};
use cxpulse::r#gen::{DEFAULT_START_MS, GenConfig, Generator};
use cxpulse::run::{self, Shutdown};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, Producer};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not:
    // then a short smoke run (small input, one latency phase) keeps CI quick.
    let full = std::env::args().any(|a| a == "--bench");
    let events: u64 = env_or("KAFKA_BENCH_EVENTS", if full { 300_000 } else { 5_000 });
    let rate: f64 = env_or("KAFKA_BENCH_RATE", 3000.0);
    let secs: u64 = env_or("KAFKA_BENCH_SECS", if full { 20 } else { 3 });
    let default_lateness = if full { "1s,30s" } else { "1s" };
    let lateness: String = env_or("KAFKA_BENCH_LATENESS", default_lateness.to_string());
    // Smoke: the 5000-line topic again, one round, a short interval (the run
    // is about as short: the path is exercised, the figures mean little).
    let ckpt_events: u64 = env_or(
        "KAFKA_BENCH_CKPT_EVENTS",
        if full { 4_000_000 } else { events },
    );
    let default_intervals = if full { "1s,30s" } else { "200ms" };
    let ckpt_intervals: String =
        env_or("KAFKA_BENCH_CKPT_INTERVALS", default_intervals.to_string());
    let ckpt_rounds: usize = env_or("KAFKA_BENCH_CKPT_ROUNDS", if full { 3 } else { 1 });
    let ckpt_dead_letters = env_or("KAFKA_BENCH_CKPT_DEAD_LETTER", 1u8) != 0;
    let rounds: usize = env_or("KAFKA_BENCH_ROUNDS", if full { 3 } else { 1 }).max(1);
    let dead_letters = env_or("KAFKA_BENCH_DEAD_LETTER", 1u8) != 0;
    ckpt_log::install();

    let broker = Tansu::start();
    println!("tansu broker at {}", broker.addr);
    broker.create_topics(&[
        ("bench", 3),
        ("bench-dlq", 1),
        ("bench-out", 1),
        ("bench-alerts", 1),
        ("live", 3),
    ]);

    // --- Throughput -------------------------------------------------------
    let t0 = Instant::now();
    produce_all(&broker.addr, "bench", events);
    println!(
        "produced {events} generated lines to `bench` (3 partitions) in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    // Bare then cxpulse, `rounds` times (each with consumer groups of its
    // own): the machine is shared and noisy, so each pair gives a ratio and
    // the summary their min and median.
    let mut ratios = Vec::new();
    let mut ratios_committed = Vec::new();
    let mut accounts = Vec::new();
    let mut tooks = Vec::new();
    for round in 0..rounds {
        let (bare, bare_cpu) = bare_consume(
            &broker.addr,
            "bench",
            events,
            &format!("bench-bare-{round}"),
            broker.pid(),
        );
        println!(
            "round {}: bare rdkafka consumer: {events} messages in {:.2}s = {:.0} msg/s",
            round + 1,
            bare.as_secs_f64(),
            events as f64 / bare.as_secs_f64()
        );
        bare_cpu.print("bare consumer", events);
        let run = cxpulse_consume(
            &broker.addr,
            "bench",
            events,
            &format!("bench-cxpulse-{round}"),
            broker.pid(),
            dead_letters,
        );
        let (cx, cx_cpu) = (run.handled, run.cpu);
        println!(
            "round {}: cxpulse consume+apply: {events} messages in {:.2}s = {:.0} msg/s \
             (to the last message handled; all committed at {:.2}s = {:.0} msg/s, the old end point)",
            round + 1,
            cx.as_secs_f64(),
            events as f64 / cx.as_secs_f64(),
            run.committed.as_secs_f64(),
            events as f64 / run.committed.as_secs_f64(),
        );
        let ratio = bare.as_secs_f64() / cx.as_secs_f64();
        let ratio_committed = bare.as_secs_f64() / run.committed.as_secs_f64();
        println!(
            "round {}: throughput ratio cxpulse / bare consumer: {ratio:.2} \
             (by the old end point, all committed: {ratio_committed:.2}) (load average {})",
            round + 1,
            load_average()
        );
        cx_cpu.print("cxpulse", events);
        ratios.push(ratio);
        ratios_committed.push(ratio_committed);
        accounts.push((bare_cpu, cx_cpu));
        tooks.push(bare.as_secs_f64());
    }
    ceiling(&accounts, &tooks, events);
    ratios.sort_by(f64::total_cmp);
    ratios_committed.sort_by(f64::total_cmp);
    if let (Some(min), Some(median)) = (ratios.first(), ratios.get(ratios.len() / 2)) {
        println!(
            "throughput ratio cxpulse / bare consumer over {rounds} round(s): min {min:.2}, median {median:.2} \
             (by the old end point, all committed: min {:.2}, median {:.2})",
            ratios_committed[0],
            ratios_committed[ratios_committed.len() / 2],
        );
    }

    // --- Checkpoint cost --------------------------------------------------
    let intervals: Vec<(String, Duration)> = ckpt_intervals
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let ms = cxpulse::config::Dur::parse(l)
                .expect("KAFKA_BENCH_CKPT_INTERVALS")
                .ms();
            (l.to_string(), Duration::from_millis(ms.max(1) as u64))
        })
        .collect();
    if !intervals.is_empty() {
        let topic = if ckpt_events == events {
            "bench"
        } else {
            broker.create_topic("bench-ckpt", 3);
            let t0 = Instant::now();
            produce_all(&broker.addr, "bench-ckpt", ckpt_events);
            println!(
                "produced {ckpt_events} generated lines to `bench-ckpt` (3 partitions) in {:.1}s",
                t0.elapsed().as_secs_f64()
            );
            "bench-ckpt"
        };
        checkpoint_cost(
            &broker.addr,
            topic,
            ckpt_events,
            &intervals,
            ckpt_rounds,
            ckpt_dead_letters,
        );
    }

    // --- Latency ----------------------------------------------------------
    for (i, l) in lateness
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let ms = cxpulse::config::Dur::parse(l)
            .expect("KAFKA_BENCH_LATENESS")
            .ms();
        let topic = format!("live{i}");
        broker.create_topic(&topic, 3);
        let run_secs = secs + (ms as u64).div_ceil(1000);
        let (p50, p99, n, produced) = latency(&broker.addr, &topic, rate, run_secs, l);
        println!(
            "event-to-metric latency, allowed_lateness {l}, {rate} events/s for {run_secs}s \
             ({produced} produced, {n} effects visible): p50 {:.3} s, p99 {:.3} s",
            p50, p99
        );
    }
}

// ---------------------------------------------------------------------------

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

fn produce_all(brokers: &str, topic: &str, events: u64) {
    let p = producer(brokers);
    let cfg = GenConfig {
        seed: 7,
        events,
        days: 7,
        start_ms: DEFAULT_START_MS,
        extra_channels: 0,
    };
    for line in Generator::new(&cfg) {
        send(&p, topic, line.key.as_deref(), &line.payload);
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60)).expect("flush");
}

/// Records when the group assigned partitions.
struct AssignClock(std::sync::Mutex<Option<Instant>>);
impl rdkafka::ClientContext for AssignClock {}
impl rdkafka::consumer::ConsumerContext for AssignClock {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Assign(_) = r
            && let Ok(mut t) = self.0.lock()
        {
            t.get_or_insert_with(Instant::now);
        }
    }
}

/// Time from the partition assignment to the last of `events` messages,
/// and the CPU accounting from the first message to the last.
fn bare_consume(
    brokers: &str,
    topic: &str,
    events: u64,
    group: &str,
    tansu: u32,
) -> (Duration, cpu::Account) {
    let c: BaseConsumer<AssignClock> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create_with_context(AssignClock(std::sync::Mutex::new(None)))
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut n = 0u64;
    let mut bytes = 0usize;
    let mut first = None;
    while n < events {
        assert!(Instant::now() < deadline, "bare consumer got only {n}");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            if n == 0 {
                first = Some(cpu::sample(tansu));
            }
            bytes += std::hint::black_box(m.payload().map_or(0, <[u8]>::len));
            n += 1;
        }
    }
    let end = cpu::sample(tansu);
    std::hint::black_box(bytes);
    let assigned = c.context().0.lock().ok().and_then(|t| *t);
    let took = assigned.expect("assigned").elapsed();
    (took, cpu::account(&first.expect("a first message"), &end))
}

/// Runs `cxpulse run` in this process until `stop` is triggered.
fn start_cxpulse(cfg: &CxConfig) -> (cxpulse::run::ShutdownTrigger, std::thread::JoinHandle<()>) {
    let cfg = cfg.load();
    let (trigger, shutdown) = Shutdown::manual();
    // Named: the consumer loop runs on this thread (`block_on`), which the
    // CPU accounting shows apart.
    let spawn = std::thread::Builder::new().name("cxpulse-run".into());
    let handle = spawn.spawn(move || {
        let rt = run::runtime().expect("runtime");
        let code = rt.block_on(run::serve(cfg, shutdown, |_| {}));
        rt.shutdown_timeout(Duration::from_millis(500));
        if let Err(e) = code {
            panic!("cxpulse failed: {e:#}");
        }
    });
    (trigger, handle.expect("cxpulse thread"))
}

/// The config of every cxpulse run here: all topics (dead-letter, output,
/// alerts), a quick group join.
fn config(brokers: &str, topic: &str, group: &str, listen: &str, lateness: &str) -> CxConfig {
    CxConfig::new()
        .allowed_lateness(lateness)
        .idle_timeout("1h")
        .kafka(brokers, group, &[topic])
        .dead_letter_topic("bench-dlq")
        .output_topic("bench-out")
        .alerts_topic("bench-alerts")
        .quick_group_join()
        .listen(listen)
        // No durable state unless a run asks for it (state in Kafka is the
        // default of `run`; the bare-consumer comparison is without it).
        .set("checkpoint", "store", "off")
}

/// Where a checkpoint-cost run keeps its state.
#[derive(Clone, Copy)]
enum State<'a> {
    Off,
    /// `[checkpoint] store = "dir"`: whole-engine files in this directory,
    /// every interval.
    Dir(&'a std::path::Path, &'a str),
    /// `store = "kafka"`: per-partition snapshots to the state topic, every
    /// interval.
    Kafka(&'a str),
}

/// How a cxpulse throughput run ended.
struct CxRun {
    /// From the partition assignment to the last of the messages handled
    /// (`cxpulse_input_messages_total` grown by `events`): the end point.
    handled: Duration,
    /// From the assignment to the group's committed offsets covering every
    /// message (the end point of rounds before 2026-11-27).
    committed: Duration,
    /// CPU from the assignment to `handled`.
    cpu: cpu::Account,
}

/// Runs cxpulse over `events` messages with a new group: see [`CxRun`].
/// The assignment is seen on /metrics (polled every 10 ms until then);
/// the messages handled are read from this process's pipeline metrics
/// every 1 ms (an atomic load: rendering every series on /metrics costs
/// the consumer loop time, and scraping it every ms would measure the
/// scraping); the committed offsets from the broker every 50 ms, after.
fn cxpulse_consume(
    brokers: &str,
    topic: &str,
    events: u64,
    group: &str,
    tansu: u32,
    dead_letters: bool,
) -> CxRun {
    let listen = free_addr();
    let commit_every = env_or("KAFKA_BENCH_COMMIT_INTERVAL", "50ms".to_string());
    let mut cfg = config(brokers, topic, group, &listen, "30s").commit_interval(&commit_every);
    if !dead_letters {
        cfg = cfg.dead_letter_topic("");
    }
    let extra = std::env::var("KAFKA_BENCH_CX_LIBRDKAFKA").unwrap_or_default();
    for kv in extra.split(',').filter(|kv| !kv.trim().is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .expect("KAFKA_BENCH_CX_LIBRDKAFKA: key=value,...");
        cfg = cfg.librdkafka(k.trim(), v.trim());
    }
    let counters_before = pipeline_metrics();
    let handled_counter = &cxpulse::telemetry::metrics().input_messages;
    let handled_before = handled_counter.get();
    let (stop, handle) = start_cxpulse(&cfg);
    let deadline = Instant::now() + Duration::from_secs(600);
    let assigned = loop {
        if metric(&scrape(&listen), "cxpulse_assigned_partitions") > 0.0 {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "cxpulse got no assignment");
        std::thread::sleep(Duration::from_millis(10));
    };
    let first = cpu::sample(tansu);
    loop {
        let done = handled_counter.get() - handled_before;
        if done >= events {
            break;
        }
        assert!(Instant::now() < deadline, "cxpulse handled only {done}");
        std::thread::sleep(Duration::from_millis(1));
    }
    let handled = assigned.elapsed();
    let end = cpu::sample(tansu);
    // Every line must also be committed before the run is accepted.
    let reader = OffsetReader::new(brokers, group, topic, 3);
    loop {
        let done = reader.total(Duration::from_secs(5)).unwrap_or(0);
        if done as u64 >= events {
            break;
        }
        assert!(Instant::now() < deadline, "cxpulse committed only {done}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let committed = assigned.elapsed();
    // What cxpulse asked of the broker besides fetching (the bare consumer
    // does none of it): records produced, offset commits.
    let counters = pipeline_metrics();
    let produced: Vec<String> = counters
        .iter()
        .filter(|(k, _)| {
            k.starts_with("cxpulse_dead_letter_records_total")
                || k.starts_with("cxpulse_published_records_total")
                || k.starts_with("cxpulse_offset_commits_total")
        })
        .map(|(k, v)| (k, v - metric(&counters_before, k)))
        .filter(|(_, d)| *d > 0.0)
        .map(|(k, d)| format!("{k} +{d}"))
        .collect();
    println!("  cxpulse broker work in the run: {}", produced.join(", "));
    // How the loop took the messages: turns (up to 2048 ready messages
    // each) by path, from the pipeline counters.
    let turns = |path: &str| {
        let k = format!("cxpulse_apply_turns_total{{path=\"{path}\"}}");
        metric(&counters, &k) - metric(&counters_before, &k)
    };
    let (serial, apart) = (turns("serial"), turns("apart"));
    println!(
        "  cxpulse turns in the run: {serial} serial, {apart} applied apart; {:.0} messages per turn",
        events as f64 / (serial + apart).max(1.0)
    );
    let t = Instant::now();
    let m = scrape(&listen);
    let users = metric(&m, "cxpulse_tracked_users");
    println!(
        "one /metrics scrape with {users} tracked users: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    stop.trigger();
    handle.join().expect("cxpulse thread");
    CxRun {
        handled,
        committed,
        cpu: cpu::account(&first, &end),
    }
}

/// One run of the checkpoint-cost part.
struct Drain {
    took: Duration,
    /// State in Kafka: from the assignment to every partition restored
    /// (not part of `took`).
    restore: Duration,
    /// Deltas over the run, from the pipeline metrics: checkpoint files
    /// written before the end of the measurement, and in all (with the final
    /// one at shutdown).
    in_run: f64,
    total: f64,
    /// `cxpulse_checkpoint_bytes` at the end (the final checkpoint's size).
    last_bytes: f64,
    /// Mean of `cxpulse_checkpoint_write_seconds` over the run, in ms.
    write_mean_ms: f64,
    /// From the "checkpoint written" events of this run, in order (the last
    /// one is the final checkpoint at shutdown).
    log: Vec<ckpt_log::Written>,
    /// State in Kafka: partition snapshots written during the measurement
    /// (`cxpulse_state_saves_total{result="ok"}`), and in all.
    saves_in_run: f64,
    saves_total: f64,
    /// State in Kafka: the "partition state saved" events of this run, in
    /// order (the periodic ones first, those at shutdown last).
    saved: Vec<ckpt_log::Saved>,
}

impl Drain {
    fn rate(&self, events: u64) -> f64 {
        events as f64 / self.took.as_secs_f64()
    }

    /// Consumer-loop time spent taking snapshots for the checkpoints written
    /// during the measurement, in ms.
    /// State in Kafka: consumer-loop time spent freezing partitions for
    /// the snapshots written during the measurement, in ms.
    fn frozen_ms(&self) -> f64 {
        0.0 + self
            .saved
            .iter()
            .take(self.saves_in_run as usize)
            .map(|w| w.freeze_ms)
            .sum::<f64>()
    }

    fn paused_ms(&self) -> f64 {
        // (`0.0 +`: the sum of nothing is -0.0.)
        0.0 + self
            .log
            .iter()
            .take(self.in_run as usize)
            .map(|w| w.snapshot_ms)
            .sum::<f64>()
    }
}

/// Checkpoints off, then on at each interval, alternating, `rounds` times;
/// prints each run and a side-by-side summary.
fn checkpoint_cost(
    brokers: &str,
    topic: &str,
    events: u64,
    intervals: &[(String, Duration)],
    rounds: usize,
    dead_letters: bool,
) {
    println!(
        "checkpoint cost: {events} lines on `{topic}`, dead-letter topic {}, {rounds} round(s); \
         each run: new group, assignment..consumer lag 0 on every partition (statistics every 50 ms)",
        if dead_letters { "on" } else { "off" }
    );
    let mut off: Vec<Drain> = Vec::new();
    let mut on: Vec<Vec<Drain>> = intervals.iter().map(|_| Vec::new()).collect();
    let mut in_kafka: Vec<Vec<Drain>> = intervals.iter().map(|_| Vec::new()).collect();
    let mut skipped: Vec<bool> = vec![false; intervals.len()];
    for round in 1..=rounds {
        let d = cxpulse_drain(
            brokers,
            topic,
            events,
            &format!("off-{round}"),
            dead_letters,
            State::Off,
        );
        println!(
            "  round {round}, checkpoints off:         {events} in {:.2}s = {:.0} events/s",
            d.took.as_secs_f64(),
            d.rate(events)
        );
        let off_took = d.took;
        off.push(d);
        for (i, (label, every)) in intervals.iter().enumerate() {
            if round == 1 && *every >= off_took {
                skipped[i] = true;
            }
            // Too long for a periodic checkpoint within the run: dir is
            // estimated below; Kafka runs all the same (no snapshot falls in
            // it: the cost of the mode itself, the restore apart).
            if !skipped[i] {
                let dir = tempfile::tempdir().expect("checkpoint tempdir");
                let d = cxpulse_drain(
                    brokers,
                    topic,
                    events,
                    &format!("{label}-{round}"),
                    dead_letters,
                    State::Dir(dir.path(), label),
                );
                let snap: Vec<f64> = d.log.iter().map(|w| w.snapshot_ms).collect();
                let write: Vec<f64> = d.log.iter().map(|w| w.write_ms).collect();
                let bytes: Vec<f64> = d.log.iter().map(|w| w.bytes as f64).collect();
                println!(
                    "  round {round}, checkpoints every {label:<5}: {events} in {:.2}s = {:.0} events/s\n    \
                 {} checkpoints during the run (about {:.0} intervals long), {} in all (with the one at shutdown)\n    \
                 size {:.2}..{:.2} MB (last {:.2} MB); write off the loop (encode, write, fsync, rename) \
                 mean {:.1} ms, max {:.1} ms\n    \
                 snapshot in the consumer loop mean {:.1} ms, max {:.1} ms; loop paused {:.0} ms during the run = {:.2} % of it",
                    d.took.as_secs_f64(),
                    d.rate(events),
                    d.in_run,
                    d.took.as_secs_f64() / every.as_secs_f64(),
                    d.total,
                    min(&bytes) / 1e6,
                    max(&bytes) / 1e6,
                    d.last_bytes / 1e6,
                    d.write_mean_ms,
                    max(&write),
                    mean(&snap),
                    max(&snap),
                    d.paused_ms(),
                    100.0 * d.paused_ms() / d.took.as_secs_f64() / 1e3,
                );
                on[i].push(d);
            }
            let d = cxpulse_drain(
                brokers,
                topic,
                events,
                &format!("kafka-{label}-{round}"),
                dead_letters,
                State::Kafka(label),
            );
            let freeze: Vec<f64> = d.saved.iter().map(|w| w.freeze_ms).collect();
            let write: Vec<f64> = d.saved.iter().map(|w| w.ms).collect();
            println!(
                "  round {round}, Kafka snapshots every {label:<5}: {events} in {:.2}s = {:.0} events/s; \
                 {} partition snapshots during the run, {} in all; restore of the 3 partitions \
                 (empty state) before it {:.0} ms\n    \
                 freeze in the consumer loop mean {:.1} ms, max {:.1} ms; encode + write off the loop \
                 mean {:.1} ms, max {:.1} ms; loop paused {:.0} ms during the run = {:.2} % of it",
                d.took.as_secs_f64(),
                d.rate(events),
                d.saves_in_run,
                d.saves_total,
                d.restore.as_secs_f64() * 1e3,
                mean(&freeze),
                max(&freeze),
                mean(&write),
                max(&write),
                d.frozen_ms(),
                100.0 * d.frozen_ms() / d.took.as_secs_f64() / 1e3,
            );
            in_kafka[i].push(d);
        }
    }
    let rates = |v: &[Drain]| {
        let r: Vec<f64> = v.iter().map(|d| d.rate(events)).collect();
        (max(&r), median(&r))
    };
    let (off_best, off_median) = rates(&off);
    println!(
        "checkpoint cost, {rounds} round(s) each: events/s best (median), ratio to off best (median)"
    );
    println!("  checkpoints off:          {off_best:.0} ({off_median:.0}) events/s");
    // The pause of a checkpoint of the final state (the largest), for the
    // intervals too long to measure.
    let final_pause: Vec<f64> = on
        .iter()
        .flatten()
        .filter_map(|d| d.log.last().map(|w| w.snapshot_ms))
        .collect();
    let kafka_line = |i: usize, label: &str| {
        let (best, med) = rates(&in_kafka[i]);
        let n: Vec<f64> = in_kafka[i].iter().map(|d| d.saves_in_run).collect();
        let paused: Vec<f64> = in_kafka[i]
            .iter()
            .map(|d| 100.0 * d.frozen_ms() / d.took.as_secs_f64() / 1e3)
            .collect();
        println!(
            "  Kafka snapshots every {label:<5}: {best:.0} ({med:.0}) events/s, ratio on/off {:.3} ({:.3}); \
             {}..{} partition snapshots during a run; loop paused to freeze {:.2} % of the run (mean)",
            best / off_best,
            med / off_median,
            min(&n),
            max(&n),
            mean(&paused),
        );
    };
    for (i, (label, every)) in intervals.iter().enumerate() {
        if skipped[i] {
            println!(
                "  checkpoints every {label:<5}:  skipped: the run without checkpoints took {:.2}s, \
                 so no periodic checkpoint would fall inside it; a snapshot of the final state \
                 ({:.2} MB) paused the loop {:.1} ms (median), about {:.3} % of the loop at this interval",
                off[0].took.as_secs_f64(),
                on.iter()
                    .flatten()
                    .map(|d| d.last_bytes)
                    .fold(0.0, f64::max)
                    / 1e6,
                median(&final_pause),
                100.0 * median(&final_pause) / every.as_secs_f64() / 1e3
            );
            kafka_line(i, label);
            continue;
        }
        let (best, med) = rates(&on[i]);
        let n: Vec<f64> = on[i].iter().map(|d| d.in_run).collect();
        let paused: Vec<f64> = on[i]
            .iter()
            .map(|d| 100.0 * d.paused_ms() / d.took.as_secs_f64() / 1e3)
            .collect();
        let snap: Vec<f64> = on[i]
            .iter()
            .flat_map(|d| d.log.iter().map(|w| w.snapshot_ms))
            .collect();
        let write: Vec<f64> = on[i].iter().map(|d| d.write_mean_ms).collect();
        let last = on[i].iter().map(|d| d.last_bytes).fold(0.0, f64::max);
        println!(
            "  checkpoints every {label:<5}:  {best:.0} ({med:.0}) events/s, ratio {:.3} ({:.3}); \
             {}..{} checkpoints during a run; final file {:.2} MB; write mean {:.1} ms; \
             snapshot mean {:.1} ms; loop paused {:.2} % of the run (mean)",
            best / off_best,
            med / off_median,
            min(&n),
            max(&n),
            last / 1e6,
            mean(&write),
            mean(&snap),
            mean(&paused),
        );
        kafka_line(i, label);
    }
}

/// What the CPU accounting of the throughput rounds implies: the CPU each
/// side needs per 1M messages (medians over the rounds), and the best
/// ratio cxpulse could reach if its run had both cores to itself: its wall
/// time is at least its total CPU over 2 and at least the CPU of its
/// busiest thread (the consumer loop, which is serial).
///
/// The ratio's times run from the assignment, the bare consumer's CPU
/// accounting from its first message: the gap between them (group join
/// done, first fetch) is taken to be the same for cxpulse.
fn ceiling(accounts: &[(cpu::Account, cpu::Account)], bare_took: &[f64], events: u64) {
    if accounts.is_empty() {
        return;
    }
    let per_m = 1e6 / events as f64;
    let med = |f: &dyn Fn(&cpu::Account) -> f64, bare: bool| {
        let v: Vec<f64> = accounts
            .iter()
            .map(|(b, c)| f(if bare { b } else { c }) * per_m)
            .collect();
        median(&v)
    };
    let kafka = |a: &cpu::Account| {
        a.groups
            .iter()
            .filter(|(n, _)| n.starts_with("rdk:") || n.starts_with("tansu"))
            .map(|(_, g)| g.cpu_s)
            .sum::<f64>()
    };
    let tansu = |a: &cpu::Account| a.get("tansu (broker process)");
    let total = |a: &cpu::Account| a.cpu();
    let wall = |a: &cpu::Account| a.wall_s;
    let busiest = |a: &cpu::Account| {
        a.groups
            .iter()
            .filter(|(n, _)| n.starts_with("cxpulse"))
            .map(|(_, g)| g.top_s)
            .fold(0.0, f64::max)
    };
    let (bw, cw) = (med(&wall, true), med(&wall, false));
    let (bt, ct) = (med(&total, true), med(&total, false));
    let floor = (ct / 2.0).max(med(&busiest, false));
    println!(
        "cpu per 1M messages (median of {} round(s)): bare: wall {bw:.3}s, cpu {bt:.3} core-s \
         (tansu {:.3}, tansu + librdkafka {:.3}); cxpulse: wall {cw:.3}s, cpu {ct:.3} core-s \
         (tansu {:.3}, tansu + librdkafka {:.3}, busiest cxpulse thread {:.3})",
        accounts.len(),
        med(&tansu, true),
        med(&kafka, true),
        med(&tansu, false),
        med(&kafka, false),
        med(&busiest, false),
    );
    for (side, bare) in [("bare", true), ("cxpulse", false)] {
        let mut names: Vec<&String> = accounts
            .iter()
            .flat_map(|(b, c)| if bare { b } else { c }.groups.keys())
            .collect();
        names.sort();
        names.dedup();
        let parts: Vec<String> = names
            .iter()
            .map(|n| (n, med(&|a: &cpu::Account| a.get(n), bare)))
            .filter(|(_, v)| *v >= 0.005)
            .map(|(n, v)| format!("{n} {v:.3}"))
            .collect();
        println!("  {side} core-s per 1M messages: {}", parts.join("; "));
    }
    let gaps: Vec<f64> = accounts
        .iter()
        .zip(bare_took)
        .map(|((b, _), t)| (t - b.wall_s).max(0.0))
        .collect();
    let gap = median(&gaps);
    let took = median(bare_took);
    println!(
        "ceiling: with both cores to itself cxpulse needs at least max(cpu / 2, busiest thread) \
         = {floor:.3}s per 1M to process them, where the bare consumer took {bw:.3}s (first \
         message to last): at most {:.2} for those windows; with the {gap:.3}s from the \
         assignment to the first message that the ratio also counts, at most {:.2} \
         (bare {took:.3}s / ({gap:.3}s + {floor:.3}s))",
        bw / floor,
        (took * 1e6 / events as f64) / (gap * 1e6 / events as f64 + floor),
    );
}

/// The first three fields of /proc/loadavg (the machine is shared).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median(v: &[f64]) -> f64 {
    let mut r = v.to_vec();
    r.sort_by(f64::total_cmp);
    match r.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => r[n / 2],
        n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The pipeline metrics of this process (what `/metrics` shows after the
/// engine's series), as (series, value). Reading them does not involve the
/// consumer loop.
fn pipeline_metrics() -> BTreeMap<String, f64> {
    values(&cxpulse::telemetry::metrics().render())
}

/// The value of `series` in `m`, 0 when absent.
fn metric(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// Consumes all `events` of `topic` with a new consumer group, checkpoints
/// off or (`checkpoint`: directory, interval) on, and stops cxpulse.
fn cxpulse_drain(
    brokers: &str,
    topic: &str,
    events: u64,
    run: &str,
    dead_letters: bool,
    state: State<'_>,
) -> Drain {
    let listen = free_addr();
    let group = format!("bench-ckpt-{run}");
    let mut cfg = config(brokers, topic, &group, &listen, "30s")
        .commit_interval("50ms")
        .librdkafka("consumer.statistics.interval.ms", "50");
    if !dead_letters {
        cfg = cfg.dead_letter_topic("");
    }
    match state {
        State::Off => {}
        State::Dir(dir, every) => {
            cfg = cfg.checkpoint(dir, every).set("checkpoint", "store", "dir");
        }
        State::Kafka(every) => {
            cfg = cfg
                .set("checkpoint", "store", "kafka")
                .set("checkpoint", "interval", every);
        }
    }
    // The pipeline metrics are process-wide: what a previous run left in
    // them must not end this one early.
    let m = cxpulse::telemetry::metrics();
    m.assigned_partitions.set(0);
    for p in 0..3 {
        let _ = m.consumer_lag.remove_label_values(&[topic, &p.to_string()]);
        let _ = m
            .partition_owned
            .remove_label_values(&[topic, &p.to_string()]);
    }
    let before = pipeline_metrics();
    let log_from = ckpt_log::count();
    let saved_from = ckpt_log::saved_count();
    let (stop, handle) = start_cxpulse(&cfg);
    let deadline = Instant::now() + Duration::from_secs(600);
    while m.assigned_partitions.get() == 0 {
        assert!(Instant::now() < deadline, "cxpulse got no assignment");
        std::thread::sleep(Duration::from_millis(10));
    }
    // State in Kafka: the partitions restore first (here: load an empty
    // state partition), a one-time cost at assignment reported apart; the
    // drain is timed from the moment they are all consumed.
    let t = Instant::now();
    if matches!(state, State::Kafka(_)) {
        let owned = |p: i32| {
            m.partition_owned
                .with_label_values(&[topic, &p.to_string()])
                .get()
        };
        while m.state_restoring.get() > 0 || (0..3).any(|p| owned(p) != 1) {
            assert!(Instant::now() < deadline, "cxpulse did not restore");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let restore = t.elapsed();
    let assigned = Instant::now();
    let lag_series: Vec<String> = (0..3)
        .map(|p| format!("cxpulse_consumer_lag{{partition=\"{p}\",topic=\"{topic}\"}}"))
        .collect();
    let at_end = loop {
        let now = pipeline_metrics();
        let lags: Vec<Option<f64>> = lag_series.iter().map(|s| now.get(s).copied()).collect();
        if lags.iter().all(|l| *l == Some(0.0)) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "cxpulse did not drain {topic}: lag {lags:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = assigned.elapsed();
    stop.trigger();
    handle.join().expect("cxpulse thread");
    let after = pipeline_metrics();
    let delta = |m: &BTreeMap<String, f64>, s: &str| metric(m, s) - metric(&before, s);
    let committed = OffsetReader::new(brokers, &group, topic, 3)
        .total(Duration::from_secs(10))
        .unwrap_or(0);
    assert_eq!(
        committed, events as i64,
        "after the stop, group {group} has committed {committed} of {events} offsets"
    );
    let writes = delta(&after, "cxpulse_checkpoint_write_seconds_count");
    Drain {
        took,
        restore,
        in_run: delta(&at_end, "cxpulse_checkpoints_total"),
        total: delta(&after, "cxpulse_checkpoints_total"),
        last_bytes: metric(&after, "cxpulse_checkpoint_bytes"),
        write_mean_ms: 1e3 * delta(&after, "cxpulse_checkpoint_write_seconds_sum")
            / writes.max(1.0),
        log: ckpt_log::since(log_from),
        saves_in_run: delta(&at_end, SAVES_OK),
        saves_total: delta(&after, SAVES_OK),
        saved: ckpt_log::saved_since(saved_from),
    }
}

/// Partition snapshots written to the state topic.
const SAVES_OK: &str = r#"cxpulse_state_saves_total{result="ok"}"#;

/// The "checkpoint written" events of cxpulse (its other events are not
/// even built), kept for the figures that are not in the metrics: the
/// snapshot time in the consumer loop and the size of each file.
mod ckpt_log {
    use std::sync::Mutex;

    use tracing::field::{Field, Visit};
    use tracing::subscriber::Interest;
    use tracing::{Event, Metadata, Subscriber};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    #[derive(Clone, Copy, Debug, Default)]
    pub struct Written {
        pub bytes: u64,
        pub snapshot_ms: f64,
        pub write_ms: f64,
    }

    static WRITTEN: Mutex<Vec<Written>> = Mutex::new(Vec::new());

    /// A "partition state saved" event (state in Kafka): the time the loop
    /// stopped to freeze the partition, and the encode + write off the loop.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Saved {
        pub freeze_ms: f64,
        pub ms: f64,
    }

    static SAVED: Mutex<Vec<Saved>> = Mutex::new(Vec::new());

    pub fn saved_count() -> usize {
        SAVED.lock().map_or(0, |w| w.len())
    }

    pub fn saved_since(from: usize) -> Vec<Saved> {
        SAVED
            .lock()
            .map(|w| w.get(from..).unwrap_or_default().to_vec())
            .unwrap_or_default()
    }

    /// Installs the capture as the process's tracing subscriber.
    pub fn install() {
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::set_global_default(subscriber).expect("tracing subscriber");
    }

    pub fn count() -> usize {
        WRITTEN.lock().map_or(0, |w| w.len())
    }

    pub fn since(from: usize) -> Vec<Written> {
        WRITTEN
            .lock()
            .map(|w| w.get(from..).unwrap_or_default().to_vec())
            .unwrap_or_default()
    }

    struct Capture;

    fn wanted(m: &Metadata<'_>) -> bool {
        m.is_event()
            && (m.fields().field("snapshot_ms").is_some()
                || m.fields().field("freeze_ms").is_some())
    }

    impl<S: Subscriber> Layer<S> for Capture {
        fn register_callsite(&self, m: &'static Metadata<'static>) -> Interest {
            if wanted(m) {
                Interest::always()
            } else {
                Interest::never()
            }
        }

        fn enabled(&self, m: &Metadata<'_>, _: Context<'_, S>) -> bool {
            wanted(m)
        }

        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            if event.metadata().fields().field("freeze_ms").is_some() {
                let mut w = Saved::default();
                event.record(&mut w);
                if let Ok(mut all) = SAVED.lock() {
                    all.push(w);
                }
                return;
            }
            let mut w = Written::default();
            event.record(&mut w);
            if let Ok(mut all) = WRITTEN.lock() {
                all.push(w);
            }
        }
    }

    impl Visit for Written {
        fn record_u64(&mut self, f: &Field, v: u64) {
            if f.name() == "bytes" {
                self.bytes = v;
            }
        }

        fn record_f64(&mut self, f: &Field, v: f64) {
            match f.name() {
                "snapshot_ms" => self.snapshot_ms = v,
                "write_ms" => self.write_ms = v,
                _ => {}
            }
        }

        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }

    impl Visit for Saved {
        fn record_f64(&mut self, f: &Field, v: f64) {
            match f.name() {
                "freeze_ms" => self.freeze_ms = v,
                "ms" => self.ms = v,
                _ => {}
            }
        }

        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }
}

/// Returns (p50 s, p99 s, effects observed, events produced).
fn latency(
    brokers: &str,
    topic: &str,
    rate: f64,
    secs: u64,
    lateness: &str,
) -> (f64, f64, u64, u64) {
    let listen = free_addr();
    let (stop, handle) = start_cxpulse(&config(
        brokers,
        topic,
        &format!("bench-{topic}"),
        &listen,
        lateness,
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(&listen, "/readyz").is_none_or(|(c, _)| c != 200) {
        assert!(Instant::now() < deadline, "cxpulse not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = histogram(&scrape(&listen));
    let p = producer(brokers);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let cfg = GenConfig {
        seed: 11,
        events: u64::MAX,
        days: 1,
        start_ms: now_ms,
        extra_channels: 0,
    };
    let origin = Instant::now();
    let mut produced = 0u64;
    for line in Generator::with_rate(&cfg, rate) {
        let due = Duration::from_millis((line.ts_ms - now_ms).max(0) as u64);
        if due > Duration::from_secs(secs) {
            break;
        }
        if let Some(wait) = due.checked_sub(origin.elapsed()) {
            p.poll(Duration::ZERO);
            std::thread::sleep(wait);
        }
        send(&p, topic, line.key.as_deref(), &line.payload);
        p.poll(Duration::ZERO);
        produced += 1;
    }
    p.flush(Duration::from_secs(10)).expect("flush");
    std::thread::sleep(Duration::from_secs(3));
    let after = histogram(&scrape(&listen));
    stop.trigger();
    handle.join().expect("cxpulse thread");
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, v)| {
            let was = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, w)| *w);
            (*le, v - was)
        })
        .collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    (
        quantile(&delta, 0.5),
        quantile(&delta, 0.99),
        total as u64,
        produced,
    )
}

/// Cumulative buckets of `cxpulse_event_to_metric_seconds`: (upper bound,
/// count), by upper bound (`+Inf` last).
fn histogram(m: &BTreeMap<String, f64>) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("cxpulse_event_to_metric_seconds_bucket{le=\"")?;
            let le = rest.trim_end_matches("\"}");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            Some((le, *v))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// `histogram_quantile`: linear inside the bucket holding the q-th rank.
fn quantile(cum: &[(f64, f64)], q: f64) -> f64 {
    let total = cum.last().map_or(0.0, |c| c.1);
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, c) in cum {
        if c >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let in_bucket = c - lower.1;
            let frac = if in_bucket > 0.0 {
                (rank - lower.1) / in_bucket
            } else {
                1.0
            };
            return lower.0 + (le - lower.0) * frac;
        }
        lower = (le, c);
    }
    lower.0
}

/// `/metrics` of the cxpulse at `addr` (empty unless it answers 200).
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    match http_get(addr, "/metrics") {
        Some((200, body)) => values(&body),
        _ => BTreeMap::new(),
    }
}

/// CPU accounting of a throughput run: CPU time of the broker (tansu) and
/// of each thread of this process (which hosts both the bare consumer and
/// cxpulse), grouped by thread name, between two samples; plus the wall
/// time. Per-thread time is `/proc/self/task/*/schedstat` (ns on a CPU,
/// ns waiting in the run queue); threads that exited between the samples
/// (e.g. a decode thread of one turn) show up as the difference between
/// the process total (`getrusage`) and the threads still alive. Tansu's
/// total is its `/proc/PID/stat` utime + stime (clock ticks, exited
/// threads included) and its run-queue wait the sum over its threads.
mod cpu {
    use std::collections::BTreeMap;
    use std::time::Instant;

    /// One thread: (name, ns on CPU, ns waiting for a CPU).
    type Thread = (String, u64, u64);

    pub struct Sample {
        at: Instant,
        threads: BTreeMap<u32, Thread>,
        process_ns: u64,
        tansu_ns: u64,
        tansu_wait_ns: u64,
    }

    /// Core-seconds of one group over a run.
    #[derive(Clone, Debug, Default)]
    pub struct Group {
        pub cpu_s: f64,
        pub wait_s: f64,
        /// Threads in the group, and the CPU of the busiest one.
        pub threads: usize,
        pub top_s: f64,
    }

    pub struct Account {
        pub wall_s: f64,
        pub groups: BTreeMap<String, Group>,
    }

    fn read(path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    /// (ns on CPU, ns waiting) from a schedstat file.
    fn schedstat(path: &str) -> Option<(u64, u64)> {
        let s = read(path)?;
        let mut it = s.split_whitespace().map(|f| f.parse::<u64>().ok());
        Some((it.next()??, it.next()??))
    }

    fn threads(pid: &str) -> BTreeMap<u32, Thread> {
        let mut out = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return out;
        };
        for e in dir.flatten() {
            let tid = e.file_name().to_string_lossy().to_string();
            let Ok(n) = tid.parse::<u32>() else { continue };
            let name = if pid == "self" && n == std::process::id() {
                // Named after the executable, which may be renamed.
                "bench main thread".to_string()
            } else {
                read(&format!("/proc/{pid}/task/{tid}/comm"))
                    .map(|s| s.trim_end().to_string())
                    .unwrap_or_default()
            };
            if let Some((run, wait)) = schedstat(&format!("/proc/{pid}/task/{tid}/schedstat")) {
                out.insert(n, (name, run, wait));
            }
        }
        out
    }

    fn process_ns() -> u64 {
        // SAFETY: getrusage writes into the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
            return 0;
        }
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        (us(u.ru_utime) + us(u.ru_stime)) * 1000
    }

    /// utime + stime of process `pid` in ns (exited threads included).
    fn stat_ns(pid: u32) -> u64 {
        let Some(s) = read(&format!("/proc/{pid}/stat")) else {
            return 0;
        };
        // Fields after the command name (which may hold spaces), from field 3.
        let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime is field 14, stime 15: indices 11 and 12 here.
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        (ticks(11) + ticks(12)) * 1_000_000_000 / hz
    }

    pub fn sample(tansu: u32) -> Sample {
        let tansu_wait_ns = threads(&tansu.to_string()).values().map(|t| t.2).sum();
        Sample {
            at: Instant::now(),
            threads: threads("self"),
            process_ns: process_ns(),
            tansu_ns: stat_ns(tansu),
            tansu_wait_ns,
        }
    }

    /// The group of a thread name (names are cut to 15 bytes by Linux).
    fn group(name: &str) -> String {
        match name {
            n if n.starts_with("rdk:broker") => "rdk:broker*".into(),
            n if n.starts_with("rdk:") => n.into(),
            "cxpulse-run" => "cxpulse-run (the consumer loop)".into(),
            "cxpulse" => "cxpulse (tokio workers: tasks)".into(),
            "cxpulse-decode" => "cxpulse-decode".into(),
            "cxpulse-apply" => "cxpulse-apply (partitions applied apart)".into(),
            n => n.into(),
        }
    }

    /// What happened between `a` and `b`.
    pub fn account(a: &Sample, b: &Sample) -> Account {
        let s = |ns: u64| ns as f64 / 1e9;
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut alive = 0u64;
        for (tid, (name, run, wait)) in &b.threads {
            let (run0, wait0) = a.threads.get(tid).map_or((0, 0), |t| (t.1, t.2));
            let (run, wait) = (run.saturating_sub(run0), wait.saturating_sub(wait0));
            alive += run;
            if run == 0 && wait == 0 {
                continue;
            }
            let g = groups.entry(group(name)).or_default();
            g.cpu_s += s(run);
            g.wait_s += s(wait);
            g.threads += 1;
            g.top_s = g.top_s.max(s(run));
        }
        let total = b.process_ns.saturating_sub(a.process_ns);
        let exited = total.saturating_sub(alive);
        if exited > 0 {
            let g = groups
                .entry("(threads exited during the run)".into())
                .or_default();
            g.cpu_s = s(exited);
        }
        groups.insert(
            "tansu (broker process)".into(),
            Group {
                cpu_s: s(b.tansu_ns.saturating_sub(a.tansu_ns)),
                wait_s: s(b.tansu_wait_ns.saturating_sub(a.tansu_wait_ns)),
                threads: 0,
                top_s: 0.0,
            },
        );
        Account {
            wall_s: (b.at - a.at).as_secs_f64(),
            groups,
        }
    }

    impl Account {
        pub fn cpu(&self) -> f64 {
            self.groups.values().map(|g| g.cpu_s).sum()
        }

        pub fn get(&self, group: &str) -> f64 {
            self.groups.get(group).map_or(0.0, |g| g.cpu_s)
        }

        /// Prints the table, per million messages and as a share of the
        /// two cores over the run's wall time.
        pub fn print(&self, label: &str, events: u64) {
            let per_m = 1e6 / events as f64;
            println!(
                "  cpu {label}: wall {:.3}s; {:.3} core-s in all = {:.2} of 2 cores",
                self.wall_s,
                self.cpu(),
                self.cpu() / (2.0 * self.wall_s)
            );
            for (name, g) in &self.groups {
                let top = if g.threads > 1 {
                    format!(", {} threads, busiest {:.3}s", g.threads, g.top_s)
                } else {
                    String::new()
                };
                println!(
                    "    {name:<40} {:>7.3} core-s ({:>6.3} per 1M msgs) {:>5.1}% of 2 cores; \
                     waited for a CPU {:.3}s{top}",
                    g.cpu_s,
                    g.cpu_s * per_m,
                    100.0 * g.cpu_s / (2.0 * self.wall_s),
                    g.wait_s,
                );
            }
        }
    }
}
