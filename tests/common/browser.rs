//! A real headless browser for tests: Debian's `chromium` (installed by
//! `scripts/setup-tools.sh`, path in `CXPULSE_CHROMIUM`), driven through
//! the DevTools protocol over `--remote-debugging-pipe` ([`Browser`]).
//!
//! Why the protocol and not `--dump-dom --enable-logging=stderr`: chromium
//! logs every console message of a web page at INFO level on stderr (the
//! level of `console.error` is lost), and network failures (a 404 of an
//! asset) do not show there at all. The protocol reports both with their
//! level (`Runtime.consoleAPICalled`, `Runtime.exceptionThrown`,
//! `Log.entryAdded`), lets the test read the DOM after the page's
//! JavaScript ran (`Runtime.evaluate`) and takes screenshots
//! (`Page.captureScreenshot`).
//!
//! The pipe: chromium reads commands from fd 3 and writes replies and events
//! to fd 4, one JSON message each, terminated by a NUL byte. The harness
//! makes two FIFOs and starts chromium through `sh` with `3<IN 4>OUT`; it
//! opens both FIFOs read-write (which never blocks on Linux), so neither
//! side waits for the other to open. Only std, `serde_json` and `base64`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::process::{log_dir, spawn_watchdog, tail, unique_name};
use super::tools::tool;

/// Debian's `chromium`: env `CXPULSE_CHROMIUM`, else `chromium` on PATH.
/// Panics when neither exists (the test fails, it never skips): run
/// `scripts/setup-tools.sh`, which installs it.
pub fn chromium() -> PathBuf {
    tool("chromium", "CXPULSE_CHROMIUM")
}

/// How long one protocol command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// One headless chromium with one page (tab), driven over the DevTools pipe.
/// Killed on drop.
pub struct Browser {
    child: Child,
    watchdog: Option<Child>,
    to_browser: File,
    from_browser: Receiver<Value>,
    next_id: u64,
    /// The page's flat session id.
    session: String,
    /// Every event received so far (method, params), in order.
    pub events: Vec<Value>,
    /// chromium's own stderr.
    pub log: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromium headless with a fresh profile and a `width` x
    /// `height` page, with the Runtime, Log and Page domains enabled.
    pub fn start(width: u32, height: u32) -> Browser {
        let bin = chromium();
        let profile = tempfile::tempdir().expect("harness: browser profile dir");
        let fifo_in = profile.path().join("cdp-in");
        let fifo_out = profile.path().join("cdp-out");
        for f in [&fifo_in, &fifo_out] {
            let st = Command::new("mkfifo")
                .arg(f)
                .status()
                .expect("harness: run mkfifo");
            assert!(st.success(), "harness: mkfifo {} failed", f.display());
        }
        // Read-write opens of a FIFO do not wait for the other end (Linux).
        let open_rw = |p: &Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .unwrap_or_else(|e| panic!("harness: open {}: {e}", p.display()))
        };
        let to_browser = open_rw(&fifo_in);
        let from = open_rw(&fifo_out);

        let log = log_dir().join(format!("{}.log", unique_name("chromium")));
        let log_file = File::create(&log).expect("harness: chromium log");
        let child = Command::new("sh")
            .args(["-c", r#"exec "$@" 3<"$CDP_IN" 4>"$CDP_OUT""#, "sh"])
            .arg(&bin)
            .args([
                "--headless",
                // Tests run as root in containers, where the sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .env("CDP_IN", &fifo_in)
            .env("CDP_OUT", &fifo_out)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("harness: log fd"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("harness: cannot start {}: {e}", bin.display()));
        let watchdog = spawn_watchdog(child.id());

        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                let Ok(v) = serde_json::from_slice::<Value>(&buf) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    return;
                }
            }
        });

        let mut b = Browser {
            child,
            watchdog: Some(watchdog),
            to_browser,
            from_browser: rx,
            next_id: 0,
            session: String::new(),
            events: Vec::new(),
            log,
            _profile: profile,
        };
        let target = b.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"]
            .as_str()
            .unwrap_or_else(|| panic!("harness: createTarget answered {target}"))
            .to_string();
        let attached = b.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        b.session = attached["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("harness: attachToTarget answered {attached}"))
            .to_string();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(domain, json!({}));
        }
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// A browser-level command (no session).
    pub fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A command to the page's session; its `result`. Panics on an error
    /// answer, on timeout, or when chromium exits.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("harness: encode command");
        bytes.push(0);
        if let Err(e) = self.to_browser.write_all(&bytes) {
            panic!("harness: write to chromium: {e}\n{}", self.log_excerpt());
        }
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            match self.from_browser.recv_timeout(Duration::from_millis(200)) {
                Ok(v) if v["id"].as_u64() == Some(id) => {
                    if let Some(err) = v.get("error") {
                        panic!("harness: chromium {method} failed: {err}");
                    }
                    return v["result"].clone();
                }
                Ok(v) => {
                    if v.get("method").is_some() {
                        self.events.push(v);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("harness: chromium closed its pipe\n{}", self.log_excerpt())
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("harness: chromium exited ({st})\n{}", self.log_excerpt());
            }
            assert!(
                Instant::now() < deadline,
                "harness: chromium did not answer {method} within {COMMAND_TIMEOUT:?}\n{}",
                self.log_excerpt()
            );
        }
    }

    /// Takes the events that arrived since the last command.
    fn pump(&mut self) {
        while let Ok(v) = self.from_browser.try_recv() {
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    /// The tail of chromium's stderr, without its D-Bus noise.
    pub fn log_excerpt(&self) -> String {
        let t = tail(&self.log, 20_000);
        let lines: Vec<&str> = t.lines().filter(|l| !l.contains("dbus")).collect();
        format!(
            "--- chromium log {} ---\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    /// Opens `url` in the page (returns once the navigation is committed;
    /// wait for what the page does with [`Browser::wait_until`]).
    pub fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}));
        if let Some(e) = r.get("errorText") {
            panic!("harness: navigate to {url}: {e}");
        }
    }

    /// Evaluates the JavaScript expression `expr` in the page; its value (a
    /// promise is awaited). Panics when it throws.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("harness: evaluating {expr:?} threw: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is `true`; panics with `what` and the last
    /// value of `show` after `timeout`.
    pub fn wait_until(&mut self, what: &str, expr: &str, show: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.eval(expr) != Value::Bool(true) {
            if Instant::now() > deadline {
                let seen = self.eval(show);
                panic!(
                    "harness: timed out after {timeout:?} waiting for {what} ({expr}); {show} = {seen}\n\
                     console errors: {:?}",
                    self.console_errors()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every error the page reported so far, as text: `console.error` and
    /// `console.assert` calls, uncaught exceptions, and `Log` entries at
    /// level error (failed loads, e.g. a 404 of an asset or the favicon).
    pub fn console_errors(&mut self) -> Vec<String> {
        self.pump();
        let mut out = Vec::new();
        for ev in &self.events {
            let p = &ev["params"];
            match ev["method"].as_str() {
                Some("Runtime.consoleAPICalled")
                    if matches!(p["type"].as_str(), Some("error" | "assert")) =>
                {
                    let args: Vec<String> = p["args"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|x| {
                                    x.get("value")
                                        .map(|v| v.to_string())
                                        .or_else(|| x["description"].as_str().map(str::to_string))
                                        .unwrap_or_default()
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(format!(
                        "console.{}: {}",
                        p["type"].as_str().unwrap_or(""),
                        args.join(" ")
                    ));
                }
                Some("Runtime.exceptionThrown") => {
                    let d = &p["exceptionDetails"];
                    out.push(format!(
                        "uncaught: {} {}",
                        d["text"].as_str().unwrap_or(""),
                        d["exception"]["description"].as_str().unwrap_or("")
                    ));
                }
                Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                    let e = &p["entry"];
                    out.push(format!(
                        "log {}: {} {}",
                        e["source"].as_str().unwrap_or(""),
                        e["text"].as_str().unwrap_or(""),
                        e["url"].as_str().unwrap_or("")
                    ));
                }
                _ => {}
            }
        }
        out
    }

    /// Saves a PNG screenshot of the page's viewport to `path` (parent
    /// directories created).
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let data = r["data"].as_str().expect("harness: screenshot data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("harness: screenshot base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("harness: screenshot dir");
        }
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("harness: write {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}
