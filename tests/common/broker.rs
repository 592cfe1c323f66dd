//! A real Kafka-compatible broker for tests and benches: tansu, in-memory
//! storage, on a free loopback port ([`Tansu`]), with small blocking helpers
//! to create topics, produce, consume, and read a group's committed offsets.
//!
//! Keep a `Tansu` in a local variable (not in a static): its `Drop` kills the
//! broker. A watchdog process also kills the broker if the test process dies
//! without running destructors.

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::Offset;

use super::process::{free_port, log_dir, signal, spawn_watchdog, tail, unique_name};
use super::tools::tansu_bin;

/// How long `Tansu::start` waits for the broker to answer metadata requests.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<String>,
    pub value: String,
    pub headers: Vec<(String, String)>,
    pub partition: i32,
    pub offset: i64,
}

/// A running tansu broker on `127.0.0.1:PORT`, in-memory storage.
/// Killed on drop.
pub struct Tansu {
    /// `"127.0.0.1:PORT"`, usable as `bootstrap.servers`.
    pub addr: String,
    child: Child,
    watchdog: Option<Child>,
    port: u16,
    bin: PathBuf,
    log_path: PathBuf,
    stopped: bool,
}

impl Tansu {
    /// Starts a broker on a free loopback port and waits until it answers
    /// Kafka metadata requests. Panics (with the log path) if it cannot.
    pub fn start() -> Tansu {
        let bin = tansu_bin();
        let mut last_err = String::new();
        // A free port can be taken by someone else between our probe and the
        // broker's bind: retry with a fresh port a few times.
        for _ in 0..5 {
            let port = free_port();
            match spawn_ready(&bin, port) {
                Ok((child, watchdog, log_path)) => {
                    eprintln!(
                        "harness: tansu pid {} on 127.0.0.1:{port}, log {}",
                        child.id(),
                        log_path.display()
                    );
                    return Tansu {
                        addr: format!("127.0.0.1:{port}"),
                        child,
                        watchdog: Some(watchdog),
                        port,
                        bin,
                        log_path,
                        stopped: false,
                    };
                }
                Err(e) => last_err = e,
            }
        }
        panic!(
            "harness: could not start tansu ({}): {last_err}",
            bin.display()
        );
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the broker's stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Creates a topic (replication factor 1) and waits until its metadata
    /// shows all partitions with a leader. Panics on any error, including
    /// "already exists".
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let log = format!("broker log {}", self.log_path.display());
        create_topic_via(&self.client_config(), name, partitions, &log);
    }

    /// [`Tansu::create_topic`] of each (name, partitions).
    pub fn create_topics(&self, topics: &[(&str, i32)]) {
        for (name, partitions) in topics {
            self.create_topic(name, *partitions);
        }
    }

    /// [`Tansu::produce`] of owned (key, value) pairs.
    pub fn produce_owned(&self, topic: &str, records: &[(Option<String>, String)]) {
        let recs: Vec<(Option<&str>, &str)> = records
            .iter()
            .map(|(k, v)| (k.as_deref(), v.as_str()))
            .collect();
        self.produce(topic, &recs);
    }

    /// Produces the records (key, value) to `topic` with the default
    /// partitioner (keyed records go to the partition of their key) and
    /// blocks until every one is acknowledged. Panics on any failure.
    pub fn produce(&self, topic: &str, records: &[(Option<&str>, &str)]) {
        produce_via(&self.client_config(), topic, records);
    }

    /// Reads `topic` from the beginning of every partition (explicit
    /// assignment, fresh group id, nothing committed) until at least
    /// `expected_at_least` records were read AND every partition is at its
    /// end, or until `timeout`. Returns what was read, sorted by
    /// (partition, offset). Never panics on timeout: assert on the result.
    pub fn consume_all(
        &self,
        topic: &str,
        expected_at_least: usize,
        timeout: Duration,
    ) -> Vec<Record> {
        let deadline = Instant::now() + timeout;
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", unique_name("cxpulse-test-reader"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("harness: create consumer");

        // Wait for the topic to exist.
        let partitions = loop {
            if let Some(n) = partition_count(consumer.client(), topic)
                && n > 0
            {
                break n;
            }
            if Instant::now() > deadline {
                eprintln!("harness: consume_all: topic {topic} does not exist");
                return Vec::new();
            }
            std::thread::sleep(Duration::from_millis(50));
        };

        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("harness: build assignment");
        }
        consumer.assign(&tpl).expect("harness: assign");

        let mut out = Vec::new();
        let mut at_eof = vec![false; partitions];
        loop {
            let now = Instant::now();
            if now >= deadline {
                eprintln!(
                    "harness: consume_all({topic}) timed out with {} records (wanted at least {expected_at_least})",
                    out.len()
                );
                break;
            }
            let wait = (deadline - now).min(Duration::from_millis(200));
            match consumer.poll(wait) {
                None => {}
                Some(Ok(m)) => {
                    if let Some(e) = at_eof.get_mut(m.partition() as usize) {
                        *e = false;
                    }
                    let headers = m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| {
                                    (
                                        h.key.to_string(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(Record {
                        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                        value: String::from_utf8_lossy(m.payload().unwrap_or_default())
                            .into_owned(),
                        headers,
                        partition: m.partition(),
                        offset: m.offset(),
                    });
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Some(e) = at_eof.get_mut(p as usize) {
                        *e = true;
                    }
                }
                Some(Err(e)) => eprintln!("harness: consume_all({topic}): {e}"),
            }
            if out.len() >= expected_at_least && at_eof.iter().all(|e| *e) {
                break;
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        out
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }

    /// Kills the broker and waits for it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.stopped = true;
        }
    }

    /// Stops the broker (if running) and starts a new one on the same port.
    /// Storage is in memory: topics and records are gone afterwards.
    pub fn restart_on_same_port(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match spawn_ready(&self.bin, self.port) {
                Ok((child, watchdog, log_path)) => {
                    eprintln!(
                        "harness: tansu restarted, pid {} on {}, log {}",
                        child.id(),
                        self.addr,
                        log_path.display()
                    );
                    self.child = child;
                    self.watchdog = Some(watchdog);
                    self.log_path = log_path;
                    self.stopped = false;
                    return;
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("harness: could not restart tansu on {}: {e}", self.addr)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// A client config with `bootstrap.servers` pointing at this broker.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.addr);
        c
    }

    /// A reader of `group`'s committed offsets on partitions
    /// `0..partitions` of `topic`.
    pub fn offsets(&self, group: &str, topic: &str, partitions: i32) -> OffsetReader {
        OffsetReader::new(&self.addr, group, topic, partitions)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "harness: test failed; tansu log {}:\n{}",
                self.log_path.display(),
                tail(&self.log_path, 4000)
            );
        }
    }
}

/// Spawns tansu on `port` and waits until it answers metadata requests.
/// Returns (broker, watchdog, log path), or an error text after killing it.
fn spawn_ready(bin: &Path, port: u16) -> Result<(Child, Child, PathBuf), String> {
    let log_path = log_dir().join(format!("{}.log", unique_name(&format!("tansu-{port}"))));
    let log = File::create(&log_path)
        .map_err(|e| format!("cannot create log {}: {e}", log_path.display()))?;
    let url = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.arg("broker")
        .args(["--listener-url", &url])
        .args(["--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        // tansu reads defaults for its other options from these variables.
        .env_remove("SCHEMA_REGISTRY")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env(
            "RUST_LOG",
            std::env::var("CXPULSE_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let mut watchdog = spawn_watchdog(child.id());

    match wait_ready(&mut child, port) {
        Ok(()) => Ok((child, watchdog, log_path)),
        Err(why) => {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{why}; log {}:\n{}",
                log_path.display(),
                tail(&log_path, 2000)
            ))
        }
    }
}

/// Waits until the tansu `child` listens on `port` and answers a metadata
/// request, within `READY_TIMEOUT`.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let pid = child.id();
    // 1. Our child listens on the port (not some other process that holds
    //    it: tansu exits, with status 0, when the port is taken).
    poll_child(child, deadline, "listen", Duration::from_millis(20), || {
        match pid_listens_on(pid, port) {
            Some(ours) => ours,
            // No /proc: settle for the port accepting connections.
            None => TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )
            .is_ok(),
        }
    })?;
    // 2. It answers a metadata request with itself as a broker.
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("group.id", "cxpulse-harness-probe")
        .create()
        .map_err(|e| format!("probe client: {e}"))?;
    poll_child(
        child,
        deadline,
        "answer metadata",
        Duration::from_millis(50),
        || {
            probe
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok_and(|md| !md.brokers().is_empty())
        },
    )
}

/// Polls `ready` every `pause` until it holds; an error once `child` has
/// exited or `deadline` has passed.
fn poll_child(
    child: &mut Child,
    deadline: Instant,
    what: &str,
    pause: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("tansu exited early ({status})"));
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "tansu did not {what} within {}s",
                READY_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(pause);
    }
}

/// Whether process `pid` holds a listening TCP socket on `port`, from /proc.
/// `None` when /proc cannot tell (not Linux).
fn pid_listens_on(pid: u32, port: u16) -> Option<bool> {
    let mut inodes = Vec::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if !readable {
        return None;
    }
    if inodes.is_empty() {
        return Some(false);
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
            .unwrap_or(false)
    }))
}

/// Runs a future to completion on a private runtime in its own thread, so it
/// works from plain `#[test]`s and from inside `#[tokio::test]`s alike.
pub fn block_on<F: std::future::Future + Send>(fut: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("harness: tokio runtime")
                .block_on(fut)
        })
        .join()
        .expect("harness: block_on thread panicked")
    })
}

#[derive(Default)]
struct DeliveryTracker {
    delivered: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::SeqCst);
            }
            Err((e, _)) => self.failures.lock().unwrap().push(e.to_string()),
        }
    }
}

/// Enqueues one record (`key`, `value`) to `topic`, waiting while the
/// producer's queue is full. Panics on any other error.
pub fn send<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    topic: &str,
    key: Option<&str>,
    value: &str,
) {
    let mut rec = BaseRecord::<str, str>::to(topic).payload(value);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    loop {
        match producer.send(rec) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("harness: produce to {topic} failed to enqueue: {e}"),
        }
    }
}

/// Reads a consumer group's committed offsets on some partitions of a topic
/// (a client of the group that never joins it, nor commits).
pub struct OffsetReader {
    consumer: BaseConsumer,
    partitions: TopicPartitionList,
}

impl OffsetReader {
    /// For `group` on partitions `0..partitions` of `topic` at `brokers`.
    pub fn new(brokers: &str, group: &str, topic: &str, partitions: i32) -> OffsetReader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("harness: create offset reader");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        OffsetReader {
            consumer,
            partitions: tpl,
        }
    }

    /// The committed offset of each partition, in order; -1 where none.
    pub fn committed(&self, timeout: Duration) -> KafkaResult<Vec<i64>> {
        let t = self
            .consumer
            .committed_offsets(self.partitions.clone(), timeout)?;
        Ok(t.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            })
            .collect())
    }

    /// The committed offsets summed (a partition without one counts 0).
    pub fn total(&self, timeout: Duration) -> KafkaResult<i64> {
        Ok(self.committed(timeout)?.iter().map(|o| (*o).max(0)).sum())
    }
}

/// Creates a topic (replication factor 1) through a client made from `cfg`
/// and waits until its metadata shows all partitions with a leader. Panics
/// on any error, including "already exists"; `log` says where to look.
pub fn create_topic_via(cfg: &ClientConfig, name: &str, partitions: i32, log: &str) {
    let admin: AdminClient<DefaultClientContext> =
        cfg.create().expect("harness: create AdminClient");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = block_on(admin.create_topics([&topic], &opts))
        .unwrap_or_else(|e| panic!("harness: create_topics({name}) failed: {e}; {log}"));
    for r in results {
        if let Err((t, code)) = r {
            panic!("harness: creating topic {t} failed: {code:?}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = partition_count(admin.inner(), name);
        if n == Some(partitions as usize) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "harness: topic {name} not visible with {partitions} partitions after 20s (saw {n:?}); {log}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Produces the records (key, value) to `topic` through a producer made
/// from `cfg` (default partitioner: keyed records go to the partition of
/// their key) and blocks until every one is acknowledged. Panics on any
/// failure.
pub fn produce_via(cfg: &ClientConfig, topic: &str, records: &[(Option<&str>, &str)]) {
    let tracker = DeliveryTracker::default();
    let producer: BaseProducer<DeliveryTracker> = cfg
        .clone()
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create_with_context(tracker)
        .expect("harness: create producer");
    for (key, value) in records {
        send(&producer, topic, *key, value);
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("harness: flush to {topic} failed: {e}"));
    let ctx = producer.context();
    let failures = ctx.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "harness: {} of {} records to {topic} failed: {:?}",
        failures.len(),
        records.len(),
        &failures[..failures.len().min(5)]
    );
    let delivered = ctx.delivered.load(Ordering::SeqCst);
    assert_eq!(
        delivered,
        records.len(),
        "harness: only {delivered} of {} records to {topic} acknowledged",
        records.len()
    );
}

/// The number of partitions of `topic` once every one has a leader.
fn partition_count<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Option<usize> {
    let md = client
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() {
        return None;
    }
    let ps = t.partitions();
    if ps.iter().any(|p| p.error().is_some() || p.leader() < 0) {
        return None;
    }
    Some(ps.len())
}
