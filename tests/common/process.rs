//! Child processes and loopback plumbing: `cxpulse run` as a child
//! ([`CxRun`]), free ports, a minimal HTTP GET, unique names, log files, and
//! the watchdog that kills a child if the test process dies without running
//! destructors.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::tools::cxpulse_command;

/// A free TCP port on 127.0.0.1 (bound and released; not reserved).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("harness: no free loopback port")
}

/// `"127.0.0.1:PORT"` with a free port (see [`free_port`]).
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Holds the lock of the tests of this test binary that must run one at a
/// time (one broker and one cxpulse, for the timing assertions); a test that
/// failed holding it does not stop the others.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
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

/// Where the harness keeps the logs of the processes it starts.
pub fn log_dir() -> PathBuf {
    let dir = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("cxpulse-harness");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The last `max` bytes of the file at `path` (empty if unreadable).
pub fn tail(path: &Path, max: u64) -> String {
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

/// A tiny shell loop that kills process `pid` (SIGKILL) if this test process
/// dies without running destructors (abort, SIGKILL, a child kept in a
/// static...). Kill and wait for it when the child is stopped.
pub fn spawn_watchdog(pid: u32) -> Child {
    Command::new("sh")
        .args([
            "-c",
            r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; kill -9 "$2" 2>/dev/null"#,
            "cxpulse-harness-watchdog",
        ])
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("harness: cannot spawn sh for a watchdog")
}

/// Sends `kill -s SIG` (`"STOP"`, `"CONT"`, `"TERM"`, ...) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("sh")
        .args(["-c", r#"kill -s "$1" "$2""#, "sh", sig])
        .arg(pid.to_string())
        .status()
        .expect("harness: cannot run sh to send a signal");
    assert!(status.success(), "harness: kill -s {sig} {pid} failed");
}

/// A minimal HTTP/1.0 GET (no chunked encoding to decode): (status, body),
/// or `None` when the server cannot be reached or answers garbage.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
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
        CxRun::spawn_with_env(cfg, log, http, &[])
    }

    /// [`CxRun::spawn`] with `env` added to the (stripped) environment, e.g.
    /// a secret given as `CXPULSE__KAFKA__LIBRDKAFKA__SASL_PASSWORD`.
    pub fn spawn_with_env(cfg: &Path, log: PathBuf, http: &str, env: &[(&str, &str)]) -> CxRun {
        let log_file = File::create(&log).expect("create log");
        let child = cxpulse_command()
            .args(["run", "--config"])
            .arg(cfg)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
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

    /// The first line of the log that contains `what`; panics with the log
    /// excerpt when there is none.
    pub fn log_line(&self, what: &str) -> String {
        self.log_text()
            .lines()
            .find(|l| l.contains(what))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no log line with {what:?}:\n{}", (self.excerpt)(self)))
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
        signal(self.child.id(), sig);
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

/// Writes `lines` (one a line) to `input`, runs `cxpulse replay --quiet
/// --config CFG INPUT` and returns its standard output (Prometheus text);
/// panics with its standard error unless it succeeds.
pub fn replay_lines<'a>(
    cfg: &Path,
    input: &Path,
    lines: impl IntoIterator<Item = &'a str>,
) -> String {
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(input, text)
        .unwrap_or_else(|e| panic!("harness: write {}: {e}", input.display()));
    let replay = cxpulse_command()
        .args(["replay", "--quiet", "--config"])
        .arg(cfg)
        .arg(input)
        .output()
        .expect("harness: run cxpulse replay");
    assert!(
        replay.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&replay.stderr)
    );
    String::from_utf8_lossy(&replay.stdout).into_owned()
}
