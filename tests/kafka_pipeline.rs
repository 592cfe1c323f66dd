//! End-to-end tests of `cxpulse run` against a real Kafka-protocol broker
//! (tansu, started by the harness on a free loopback port). Each test runs the
//! real `cxpulse` binary as a child process with a config file in a tempdir,
//! produces with a real Kafka client (librdkafka through the harness), and
//! reads `/metrics` over HTTP and the output, alerts and dead-letter topics.
//!
//! The tests take one lock so that only one broker and one cxpulse run at a
//! time (2-core machines; the timing assertions need the CPU).

mod common;

use common::http_get as get;

use std::collections::BTreeMap;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use common::{CxConfig, CxRun, Record, Tansu, free_addr, serial, series_key, values};

/// A secret in the passthrough settings: must never show in logs or /metrics.
const SECRET: &str = "hunter2-must-not-leak";

/// Event time base: 2025-06-02T10:00:00Z.
const B: i64 = 1_748_858_400_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

fn ts(ms: i64) -> String {
    cxpulse::event::time::format_rfc3339(ms)
}

// ---------------------------------------------------------------------------
// cxpulse as a child process
// ---------------------------------------------------------------------------

struct Cxpulse {
    run: CxRun,
    _dir: tempfile::TempDir,
}

/// The common wrapper (`wait_for`, `ready`, `log_text`, `signal`, ...).
impl std::ops::Deref for Cxpulse {
    type Target = CxRun;
    fn deref(&self) -> &CxRun {
        &self.run
    }
}

impl std::ops::DerefMut for Cxpulse {
    fn deref_mut(&mut self) -> &mut CxRun {
        &mut self.run
    }
}

/// How often `wait_for` polls here.
const POLL: Duration = Duration::from_millis(200);

impl Cxpulse {
    /// `cxpulse run` against `brokers` in `group`, committing every
    /// `commit_interval`; waits until `/healthz` answers.
    fn start(brokers: &str, group: &str, commit_interval: &str) -> Cxpulse {
        let dir = tempfile::tempdir().expect("tempdir");
        let http = free_addr();
        let cfg_path = CxConfig::new()
            .allowed_lateness("1h")
            .idle_timeout("1h")
            .kafka(brokers, group, &["events"])
            .dead_letter_topic("dead-letter")
            .output_topic("metrics-out")
            .alerts_topic("alerts")
            .publish_interval("1s")
            .commit_interval(commit_interval)
            .shutdown_timeout("5s")
            .quick_group_join()
            .librdkafka("sasl.password", SECRET)
            .listen(&http)
            .ready_max_lag(0)
            // These tests pin the delivery rule of the offsets themselves
            // (what a restart from committed offsets applies, what a
            // commit covers): no durable state. State that moves with its
            // partition (the default) is tests/rebalance.rs's.
            .set("checkpoint", "store", "off")
            .write(&dir.path().join("cxpulse.toml"));
        let log = dir.path().join("cxpulse.log");
        let run = CxRun::spawn(&cfg_path, log, &http)
            .poll_every(POLL)
            .healthy_within(Duration::from_secs(20));
        Cxpulse { run, _dir: dir }
    }

    /// Starts again with the same config (same group, same HTTP port).
    fn restart(&mut self) {
        let cfg = self.log.with_file_name("cxpulse.toml");
        let log = self.log.with_file_name("cxpulse-2.log");
        let http = self.http.clone();
        self.run = CxRun::spawn(&cfg, log, &http).poll_every(POLL);
        self.wait_for(
            "/healthz answers after restart",
            Duration::from_secs(20),
            || self.status("/healthz") == 200,
        );
    }

    fn metrics(&self) -> Metrics {
        match get(&self.http, "/metrics") {
            Some((200, body)) => Metrics::parse(&body),
            other => Metrics {
                raw: format!("{other:?}"),
                ..Metrics::default()
            },
        }
    }

    /// Polls until `metric` has `value`, failing with the log's tail.
    fn wait_metric(&self, metric: &str, value: f64, timeout: Duration) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if m.get(metric) == Some(value) {
                return m;
            }
            if Instant::now() > deadline {
                panic!(
                    "{metric} is {:?}, want {value}\n--- cxpulse log tail ---\n{}",
                    m.get(metric),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the exit; returns the exit code and how long it took.
    fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        let st = self.run.wait_exit(timeout);
        (st.code(), start.elapsed())
    }

    /// CPU seconds (user + system) the process uses in the next `d`.
    fn cpu_seconds_during(&self, d: Duration) -> f64 {
        let cpu0 = self.cpu_seconds();
        std::thread::sleep(d);
        self.cpu_seconds() - cpu0
    }

    /// CPU seconds (user + system) the process used so far.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/PID/stat");
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 (1-based), in clock ticks (100 per second here).
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / 100.0
    }
}

/// Parsed Prometheus text: series (name plus sorted labels) to value.
#[derive(Default, Debug)]
struct Metrics {
    values: BTreeMap<String, f64>,
    raw: String,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        Metrics {
            values: values(text)
                .into_iter()
                .map(|(s, v)| (series_key(&s), v))
                .collect(),
            raw: text.to_string(),
        }
    }

    /// `name` or `name{k="v",...}` in any label order.
    fn get(&self, series: &str) -> Option<f64> {
        self.values.get(&series_key(series)).copied()
    }

    fn sum(&self, prefix: &str) -> f64 {
        self.values
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

fn header<'r>(r: &'r Record, key: &str) -> Option<&'r str> {
    r.headers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Committed offsets of `group` on `topic`, per partition (-1: none).
fn committed(broker: &Tansu, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    broker
        .offsets(group, topic, partitions)
        .committed(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("cannot read committed offsets: {e}"))
}

fn wait_committed(broker: &Tansu, group: &str, want_total: i64, timeout: Duration) -> Vec<i64> {
    let deadline = Instant::now() + timeout;
    loop {
        let c = committed(broker, group, "events", 3);
        let total: i64 = c.iter().map(|o| (*o).max(0)).sum();
        if total == want_total {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "committed offsets {c:?} sum to {total}, want {want_total}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn signup(id: &str, user: &str, channel: &str, at: i64) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"signup","ts":"{}","user_id":"{user}","channel":"{channel}"}}"#,
        ts(at)
    )
}

/// `n` signups keyed by user: event `{p}{i}`, user `u{p}{i}`, one a minute from `start`.
fn signups(p: &str, channel: &str, n: i64, start: i64) -> Vec<(Option<String>, String)> {
    (0..n)
        .map(|i| {
            let user = format!("u{p}{i}");
            let line = signup(&format!("{p}{i}"), &user, channel, start + i * MIN);
            (Some(user), line)
        })
        .collect()
}

/// Takes the lock, starts a broker with the topics (`events` with
/// `partitions`) and cxpulse in `group`, committing every `commit_interval`.
fn setup(
    partitions: i32,
    group: &str,
    commit_interval: &str,
) -> (MutexGuard<'static, ()>, Tansu, Cxpulse) {
    let guard = serial();
    let broker = Tansu::start();
    create_topics(&broker, partitions);
    let cx = Cxpulse::start(&broker.addr, group, commit_interval);
    (guard, broker, cx)
}

fn create_topics(broker: &Tansu, event_partitions: i32) {
    broker.create_topics(&[
        ("events", event_partitions),
        ("dead-letter", 1),
        ("metrics-out", 1),
        ("alerts", 1),
    ]);
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// A known event set with valid, duplicate, invalid and late events, on a
/// one-partition topic (the engine judges lateness and applies effects per
/// input partition, so one partition makes every step follow T). Hand-
/// computed expectations from METRICS.md (allowed_lateness 1h, bucket 1m):
/// after the last event T = B+3h00m30s, so E = B+3h, and effects with
/// ts < T - 1h are applied (everything but the last signup, u4).
#[test]
fn known_events_give_the_documented_metrics_output_alerts_and_dead_letters() {
    let (_g, broker, cx) = setup(1, "cx-known", "500ms");

    let e = [
        signup("e1", "u1", "ads", B),
        signup("e2", "u2", "ads", B + MIN),
        signup("e3", "u3", "organic", B + 2 * MIN),
        format!(
            r#"{{"event_id":"e4","type":"deposit","ts":"{}","user_id":"u1","amount_usd":100}}"#,
            ts(B + 3 * MIN)
        ),
        format!(
            r#"{{"event_id":"e5","type":"trade","ts":"{}","user_id":"u1","notional_usd":1000,"fee_usd":2.5}}"#,
            ts(B + 4 * MIN)
        ),
        format!(
            r#"{{"event_id":"e6","type":"support","ts":"{}","user_id":"u2","ticket_id":"t1","action":"opened","priority":"urgent"}}"#,
            ts(B + 5 * MIN)
        ),
        format!(
            r#"{{"event_id":"e7","type":"support","ts":"{}","user_id":"u1","ticket_id":"t0","action":"rated","csat":5}}"#,
            ts(B + 6 * MIN)
        ),
        format!(
            r#"{{"event_id":"e8","type":"support","ts":"{}","user_id":"u2","ticket_id":"t1","action":"rated","csat":2}}"#,
            ts(B + 7 * MIN)
        ),
    ];
    let not_json = "this is not json";
    let no_user = format!(
        r#"{{"event_id":"e9","type":"signup","ts":"{}","channel":"ads"}}"#,
        ts(B)
    );
    // Phase 1: valid events keyed by user, a duplicate of e1, and two
    // invalid messages.
    let mut phase1: Vec<(Option<&str>, &str)> = vec![
        (Some("u1"), &e[0]),
        (Some("u2"), &e[1]),
        (Some("u3"), &e[2]),
        (Some("u1"), &e[3]),
        (Some("u1"), &e[4]),
        (Some("u2"), &e[5]),
        (Some("u1"), &e[6]),
        (Some("u2"), &e[7]),
    ];
    phase1.push((Some("u1"), &e[0]));
    phase1.push((Some("bad"), not_json));
    phase1.push((Some("u9"), &no_user));
    broker.produce("events", &phase1);
    cx.wait_metric(
        r#"cxpulse_events_total{type="support",outcome="applied"}"#,
        3.0,
        Duration::from_secs(60),
    );

    // Phase 2: u4 moves T to B+3h00m30s, then a deposit at B+1h is older
    // than T - 1h: late.
    let advance = signup("e10", "u4", "organic", B + 3 * HOUR + 30_000);
    let late = format!(
        r#"{{"event_id":"e11","type":"deposit","ts":"{}","user_id":"u2","amount_usd":50}}"#,
        ts(B + HOUR)
    );
    broker.produce("events", &[(Some("u4"), &advance), (Some("u4"), &late)]);
    cx.wait_metric(
        r#"cxpulse_events_total{type="deposit",outcome="late"}"#,
        1.0,
        Duration::from_secs(30),
    );

    // The expected values as Prometheus text (T, a float, is added below).
    let mut expect = values(
        r#"
cxpulse_events_total{type="signup",outcome="applied"} 4
cxpulse_events_total{type="signup",outcome="duplicate"} 1
cxpulse_events_total{type="signup",outcome="invalid"} 1
cxpulse_events_total{type="unknown",outcome="invalid"} 1
cxpulse_events_total{type="deposit",outcome="applied"} 1
cxpulse_events_total{type="trade",outcome="applied"} 1
cxpulse_events_total{type="support",outcome="applied"} 3
# Signups in [E-24h, E): u1, u2 (ads) and u3 (organic); u4 is still
# within the lateness and not applied.
cxpulse_signups{window="24h",channel="ads"} 2
cxpulse_signups{window="24h",channel="organic"} 1
cxpulse_signups_total{channel="ads"} 2
cxpulse_signups_total{channel="organic"} 1
cxpulse_users 3
# csat 5 and 2: one of two answers in {4, 5}.
cxpulse_csat_responses{window="24h"} 2
cxpulse_csat_ratio{window="24h"} 0.5
# u1 (ads) traded with a 2.5 USD fee.
cxpulse_revenue_usd{window="24h",channel="ads"} 2.5
# t1 (urgent) opened at B+5m, no reply: first-response deadline
# B+20m, which is <= T - 1h, so the breach is decided.
cxpulse_support_tickets_opened{window="24h",priority="urgent"} 1
cxpulse_sla_breaches{window="24h",priority="urgent",kind="first_response"} 1
# Pipeline metrics: three dead-letter records, acknowledged.
cxpulse_dead_letter_records_total{reason="not_json"} 1
cxpulse_dead_letter_records_total{reason="missing_field"} 1
cxpulse_dead_letter_records_total{reason="late"} 1
# The 8 applied events of phase 1 are visible; u4 is not yet.
cxpulse_event_to_metric_seconds_count 8
"#,
    );
    assert_eq!(expect.len(), 21, "expected series: {expect:?}");
    expect.insert(
        "cxpulse_clock_timestamp_seconds".to_string(),
        (B + 3 * HOUR + 30_000) as f64 / 1000.0,
    );
    // The dead-letter counters move when the broker acknowledges: poll.
    cx.wait_metric(
        r#"cxpulse_dead_letter_records_total{reason="late"}"#,
        1.0,
        Duration::from_secs(30),
    );
    let m = cx.metrics();
    let mut wrong = Vec::new();
    for (series, want) in expect {
        let got = m.get(&series);
        if got.is_none_or(|g| (g - want).abs() > 1e-9) {
            wrong.push(format!("{series}: got {got:?}, want {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong values:\n{}\n\n/metrics:\n{}",
        wrong.join("\n"),
        m.raw
    );
    assert!(!m.raw.contains(SECRET), "the secret appears on /metrics");

    // Dead-letter topic: each bad message with its key, value, reason and
    // source coordinates.
    let source = broker.consume_all("events", 13, Duration::from_secs(30));
    let dlq = broker.consume_all("dead-letter", 3, Duration::from_secs(30));
    assert_eq!(dlq.len(), 3, "dead-letter records: {dlq:#?}");
    for (reason, key, value) in [
        ("not_json", "bad", not_json),
        ("missing_field", "u9", no_user.as_str()),
        ("late", "u4", late.as_str()),
    ] {
        let r = dlq
            .iter()
            .find(|r| header(r, "cxpulse.reason") == Some(reason))
            .unwrap_or_else(|| panic!("no dead-letter record with reason {reason}: {dlq:#?}"));
        assert_eq!(r.key.as_deref(), Some(key));
        assert_eq!(r.value, value);
        let orig = source
            .iter()
            .find(|s| s.value == value)
            .expect("original record");
        assert_eq!(header(r, "cxpulse.source.topic"), Some("events"));
        assert_eq!(
            header(r, "cxpulse.source.partition"),
            Some(orig.partition.to_string().as_str())
        );
        assert_eq!(
            header(r, "cxpulse.source.offset"),
            Some(orig.offset.to_string().as_str())
        );
        assert!(header(r, "cxpulse.error").is_some_and(|e| !e.is_empty()));
    }

    // Alerts topic: one record for the breach, keyed by ticket.
    let alerts = broker.consume_all("alerts", 1, Duration::from_secs(30));
    assert_eq!(alerts.len(), 1, "alerts: {alerts:#?}");
    assert_eq!(alerts[0].key.as_deref(), Some("t1"));
    let a: serde_json::Value = serde_json::from_str(&alerts[0].value).expect("alert JSON");
    assert_eq!(a["ticket_id"], "t1");
    assert_eq!(a["user_id"], "u2");
    assert_eq!(a["priority"], "urgent");
    assert_eq!(a["kind"], "first_response");
    assert_eq!(a["deadline"], B + 20 * MIN);

    // Output topic: the latest record per series key carries the value
    // and as_of = T.
    let want_as_of = ts(B + 3 * HOUR + 30_000);
    let deadline = Instant::now() + Duration::from_secs(30);
    let latest = loop {
        let out = broker.consume_all("metrics-out", 1, Duration::from_secs(10));
        let mut latest: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for r in &out {
            let key = r.key.clone().expect("output key");
            if r.value.is_empty() {
                // A tombstone: the series is gone (e.g. a ratio lost its denominator).
                latest.remove(&key);
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&r.value).expect("output JSON");
            latest.insert(key, v);
        }
        let done = latest
            .get(r#"cxpulse_signups_total{channel="ads"}"#)
            .is_some_and(|v| v["as_of"] == want_as_of.as_str());
        if done || Instant::now() > deadline {
            break latest;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let rec = latest
        .get(r#"cxpulse_signups_total{channel="ads"}"#)
        .unwrap_or_else(|| {
            panic!(
                "no output record for signups_total ads; keys: {:?}",
                latest.keys()
            )
        });
    assert_eq!(rec["name"], "cxpulse_signups_total");
    assert_eq!(rec["labels"]["channel"], "ads");
    assert_eq!(rec["value"], 2.0);
    assert_eq!(rec["as_of"], want_as_of.as_str());
    let breach =
        &latest[r#"cxpulse_sla_breaches{kind="first_response",priority="urgent",window="24h"}"#];
    assert_eq!(breach["value"], 1.0);

    // Ready: connected, assigned, caught up (ready_max_lag = 0); the lag
    // of every partition comes from librdkafka statistics.
    cx.wait_for("/readyz to turn 200", Duration::from_secs(20), || {
        cx.ready().0 == 200
    });
    let m = cx.metrics();
    assert_eq!(
        m.get(r#"cxpulse_consumer_lag{topic="events",partition="0"}"#),
        Some(0.0),
        "lag of the input partition\n{}",
        m.raw
    );
    assert!(
        !cx.log_text().contains(SECRET),
        "the secret appears in the log"
    );
}

/// Events committed before a stop are not applied again after a restart.
/// cxpulse is killed with SIGKILL (no final commit), so what is committed
/// is what the periodic commit stored. After the restart, only the new
/// events are applied: the applied count is 4 (the second batch), not 10,
/// and the signups of the first batch's channel stay absent.
#[test]
fn restart_does_not_apply_committed_events_twice() {
    let (_g, broker, mut cx) = setup(3, "cx-restart", "500ms");
    let recs = signups("a", "first", 6, B);
    broker.produce_owned("events", &recs);
    cx.wait_metric(
        r#"cxpulse_events_total{type="signup",outcome="applied"}"#,
        6.0,
        Duration::from_secs(60),
    );
    let before = wait_committed(&broker, "cx-restart", 6, Duration::from_secs(20));

    cx.signal("KILL");
    let _ = cx.wait_exit(Duration::from_secs(5));
    cx.restart();

    let recs = signups("b", "second", 4, B + 2 * HOUR);
    broker.produce_owned("events", &recs);
    cx.wait_metric(
        r#"cxpulse_events_total{type="signup",outcome="applied"}"#,
        4.0,
        Duration::from_secs(60),
    );
    // Give a re-delivery of the first batch every chance to show up.
    wait_committed(&broker, "cx-restart", 10, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let m = cx.metrics();
    assert_eq!(
        m.get(r#"cxpulse_events_total{type="signup",outcome="applied"}"#),
        Some(4.0),
        "committed offsets before the restart were {before:?}\n{}",
        m.raw
    );
    assert_eq!(m.sum("cxpulse_events_total{outcome=\"duplicate\""), 0.0);
    assert_eq!(
        m.get("cxpulse_clock_timestamp_seconds"),
        Some((B + 2 * HOUR + 3 * MIN) as f64 / 1000.0)
    );
}

/// SIGTERM: cxpulse exits 0 within `kafka.shutdown_timeout` (5 s, plus 3 s
/// margin) and its final commit covers every handled message, including a
/// dead-lettered one. The periodic commit is set to 1h, so nothing is
/// committed before the signal.
#[test]
fn sigterm_exits_in_time_with_a_final_commit() {
    let (_g, broker, mut cx) = setup(3, "cx-term", "1h");
    let mut recs = signups("t", "x", 5, B);
    recs.push((Some("junk".into()), "{not json".into()));
    broker.produce_owned("events", &recs);
    cx.wait_metric(
        r#"cxpulse_events_total{type="signup",outcome="applied"}"#,
        5.0,
        Duration::from_secs(60),
    );
    cx.wait_metric(
        r#"cxpulse_dead_letter_records_total{reason="not_json"}"#,
        1.0,
        Duration::from_secs(30),
    );
    let none: i64 = committed(&broker, "cx-term", "events", 3)
        .iter()
        .map(|o| (*o).max(0))
        .sum();
    assert_eq!(none, 0, "nothing should be committed before the signal");

    cx.signal("TERM");
    let (code, took) = cx.wait_exit(Duration::from_secs(8));
    assert_eq!(code, Some(0), "exit code; log:\n{}", cx.log_tail());
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let log = cx.log_text();
    assert!(log.contains("shutdown complete"), "log:\n{}", cx.log_tail());
    let c = committed(&broker, "cx-term", "events", 3);
    assert_eq!(
        c.iter().map(|o| (*o).max(0)).sum::<i64>(),
        6,
        "committed {c:?}"
    );
}

/// The broker is not up when cxpulse starts: it keeps running without
/// spinning (little CPU), says so in its log, reports not ready, and once the
/// broker appears it becomes ready and applies every event, each once (20
/// applied, 20 committed). Then the broker freezes for 4 s: again no exit and
/// no spinning, and the next event is applied once it is back.
#[test]
fn waits_for_a_broker_that_is_not_up_yet_and_loses_nothing() {
    let _g = serial();
    let mut broker = Tansu::start();
    broker.stop();
    let cx = Cxpulse::start(&broker.addr, "cx-late-broker", "500ms");
    let cpu = cx.cpu_seconds_during(Duration::from_secs(5));
    assert!(
        cpu < 1.0,
        "used {cpu} CPU seconds in 5 s while the broker was down"
    );
    let (code, body) = cx.ready();
    assert_eq!(code, 503, "readyz while the broker is down: {body}");
    assert!(
        cx.log_text().contains(&broker.addr),
        "the log should name the unreachable brokers:\n{}",
        cx.log_tail()
    );

    broker.restart_on_same_port();
    create_topics(&broker, 3);
    let recs = signups("l", "late-broker", 20, B);
    broker.produce_owned("events", &recs);
    cx.wait_for("/readyz to turn 200", Duration::from_secs(60), || {
        cx.ready().0 == 200
    });
    let m = cx.wait_metric(
        r#"cxpulse_events_total{type="signup",outcome="applied"}"#,
        20.0,
        Duration::from_secs(30),
    );
    assert_eq!(m.sum("cxpulse_events_total{outcome=\"late\""), 0.0);
    wait_committed(&broker, "cx-late-broker", 20, Duration::from_secs(20));

    // The broker goes away (frozen with SIGSTOP) and comes back: cxpulse
    // stays up without spinning and carries on where it was.
    broker.pause();
    let cpu = cx.cpu_seconds_during(Duration::from_secs(4));
    assert!(
        cpu < 1.0,
        "used {cpu} CPU seconds in 4 s while the broker was frozen"
    );
    assert_eq!(
        cx.metrics().sum("cxpulse_events_total{outcome=\"applied\""),
        20.0
    );
    broker.resume();
    let more = signup("l20", "ul20", "late-broker", B + 20 * MIN);
    broker.produce("events", &[(Some("ul20"), more.as_str())]);
    cx.wait_metric(
        r#"cxpulse_events_total{type="signup",outcome="applied"}"#,
        21.0,
        Duration::from_secs(60),
    );
    wait_committed(&broker, "cx-late-broker", 21, Duration::from_secs(30));
}

/// A backlog over three partitions, read in turns that hold several of
/// them: each partition's messages are decoded and applied on a thread of
/// its own, and the delivery rule holds as on the serial path: every
/// message counted once, the invalid ones dead-lettered, and every offset
/// committed once the dead letters are acknowledged.
///
/// Which path a turn takes depends on how librdkafka hands the backlog
/// over: it queues a fetch response partition after partition, each
/// partition's data in one run, and a turn (up to 2048 ready messages) is
/// applied apart when it holds 256 or more of two or more partitions. With
/// 1250 records (about 417 per partition) a loaded CI run once took each
/// partition in turns of its own. Here each partition holds about 2043
/// (6130 in all), about one full turn: once two partitions are queued, a
/// full turn holds both. (Smaller fetches per partition, which would
/// interleave the runs, made no difference against tansu.)
#[test]
fn a_backlog_over_three_partitions_is_applied_apart_and_every_offset_booked() {
    let _g = serial();
    let broker = Tansu::start();
    create_topics(&broker, 3);
    // 6000 signups keyed by user (spread over the 3 partitions), 10 ms
    // apart (1 min in all: within engine.dedup_horizon, 10 min, and the
    // lateness), 100 of them sent twice (same key: same partition, a
    // duplicate there), and 30 messages that are not JSON: 6130 records,
    // all in the backlog before cxpulse starts.
    let mut recs: Vec<(Option<String>, String)> = (0..6000)
        .map(|i| {
            let user = format!("up{i}");
            (
                Some(user.clone()),
                signup(&format!("p{i}"), &user, "paid", B + i * 10),
            )
        })
        .collect();
    let again: Vec<_> = recs.iter().step_by(60).cloned().collect();
    assert_eq!(again.len(), 100);
    recs.extend(again);
    for i in 0..30 {
        recs.push((Some(format!("bad{i}")), "{not json".to_string()));
    }
    broker.produce_owned("events", &recs);
    let cx = Cxpulse::start(&broker.addr, "cx-apart", "500ms");
    cx.wait_metric(
        r#"cxpulse_events_total{type="signup",outcome="applied"}"#,
        6000.0,
        Duration::from_secs(90),
    );
    cx.wait_metric(
        r#"cxpulse_dead_letter_records_total{reason="not_json"}"#,
        30.0,
        Duration::from_secs(30),
    );
    let offsets = wait_committed(&broker, "cx-apart", 6130, Duration::from_secs(30));
    assert!(
        offsets.iter().all(|o| *o > 0),
        "every partition had records: {offsets:?}"
    );
    let m = cx.metrics();
    assert_eq!(
        m.get(r#"cxpulse_events_total{type="signup",outcome="duplicate"}"#),
        Some(100.0),
        "{}",
        m.raw
    );
    assert_eq!(m.sum(r#"cxpulse_events_total{outcome="invalid""#), 30.0);
    assert_eq!(m.sum(r#"cxpulse_events_total{outcome="late""#), 0.0);
    // Every message was handled once (one process, no rebalance).
    assert_eq!(
        m.get("cxpulse_input_messages_total"),
        Some(6130.0),
        "{}",
        m.raw
    );
    let apart = m.get(r#"cxpulse_apply_turns_total{path="apart"}"#);
    let serial_turns = m.get(r#"cxpulse_apply_turns_total{path="serial"}"#);
    assert!(
        apart.is_some_and(|n| n >= 1.0),
        "no turn was applied apart (serial turns: {serial_turns:?})"
    );
    eprintln!("turns: {apart:?} applied apart, {serial_turns:?} serial");
    assert!(
        cx.log_text().contains("applying a turn's partitions apart"),
        "the first turn applied apart is logged"
    );
    let dead = broker.consume_all("dead-letter", 30, Duration::from_secs(20));
    assert_eq!(dead.len(), 30);
}
