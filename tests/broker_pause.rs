//! The broker freezes mid-stream: `cxpulse run` consumes the first half of a
//! generated input from a real Kafka-protocol broker (tansu, from the
//! harness), the broker is stopped with SIGSTOP for 30 s (connections stay
//! open, nothing answers), then continued with SIGCONT, and the second half
//! is produced. Checked:
//!
//! - `/readyz` turns 503 while the broker is frozen and 200 again once it is
//!   back and everything is consumed; `/healthz` stays 200 throughout;
//! - nothing is lost and nothing is applied twice: every produced message
//!   gets exactly one outcome, the duplicates counted are exactly those the
//!   generator injected, every invalid message is dead-lettered once, and the
//!   final engine series equal those of `cxpulse replay` of the same input
//!   with the same config, series by series;
//! - the process is never restarted and exits 0 on SIGTERM, with every input
//!   offset committed.
//!
//! Twice: once with a group session timeout longer than the pause (the group
//! keeps the member; `/readyz` is checked there), once with a short one and
//! no commit since the start, so the group drops the member during the pause
//! and hands it the same partitions again when the broker is back: they must
//! resume where the engine's state of them ends (checkpoints are off, but the
//! state is still in memory), not at the far older committed offsets.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    CxConfig, CxRun, Tansu, differences_by, engine_series, free_addr, generated_with, replay_lines,
    series, sum, value,
};
use cxpulse::config::Config;
use cxpulse::event::Decoder;
use cxpulse::event::time::format_rfc3339;
use cxpulse::kafka::live::STALLED_AFTER;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const TOPIC: &str = "events";
const DEAD_LETTER: &str = "dead-letter";
const PARTITIONS: i32 = 3;
const GROUP: &str = "cx-broker-pause";
/// Generated lines (noise included: duplicates, out-of-order and invalid).
const EVENTS: u64 = 30_000;
/// How long the broker stays frozen.
const PAUSE: Duration = Duration::from_secs(30);
/// Event time from the last generated event to the end-of-input markers (6 h:
/// the 1h window of the final state is empty, the others are not). No timer
/// of this input (SLA deadline, churn instant, post-support check) falls in
/// the last `allowed_lateness` before the markers, where it would fire in
/// replay's final flush but not yet in `run`: another seed or size may need
/// another offset.
const MARKER_AFTER_MS: i64 = 6 * 3_600_000;

/// How the consumer group treats the member through the pause, and how far
/// behind the engine the group's committed offsets may be.
struct Group {
    /// `consumer.session.timeout.ms`.
    session_timeout_ms: u64,
    /// `kafka.commit_interval`.
    commit_interval: &'static str,
    /// `checkpoint.store`.
    store: &'static str,
}

/// The first test: the group session timeout (librdkafka's default, written
/// out) is longer than the pause, so the group keeps the member and its
/// partitions throughout and only cxpulse's own view of the broker can make
/// `/readyz` fail, as it would with a production config.
const KEPT: Group = Group {
    session_timeout_ms: 45_000,
    commit_interval: "500ms",
    // The default of `run`: partition state in the Kafka state store.
    store: "kafka",
};

/// The second test: the session times out 6 s into the pause, so the group
/// drops the member and it rejoins once the broker is back; and nothing is
/// committed between the start and the shutdown (the interval's first tick,
/// at the start, finds nothing to commit), so the group's committed offsets
/// are far behind the engine when the partitions come back.
const DROPPED: Group = Group {
    session_timeout_ms: 6_000,
    commit_interval: "1h",
    // What this test pins is the in-memory resume of `store = "off"`. With
    // state in the Kafka store, a lost assignment drops its state and the
    // next assignment restores it from the store (tests/rebalance.rs).
    store: "off",
};

/// The config of `run`, also given to `replay`. T never follows the wall
/// clock (the generated traffic is in the past, and the series must not
/// depend on when they are read); the lateness covers the generator's
/// out-of-order lines (at most 25 s), so no line is late in either
/// (replay judges one stream, run each partition). No checkpoints.
fn config(brokers: &str, http: &str, group: &Group) -> CxConfig {
    CxConfig::new()
        .allowed_lateness("1m")
        .idle_timeout("1000d")
        .kafka(brokers, GROUP, &[TOPIC])
        .dead_letter_topic(DEAD_LETTER)
        .output_topic("")
        .alerts_topic("")
        .commit_interval(group.commit_interval)
        .set("checkpoint", "store", group.store)
        .shutdown_timeout("5s")
        .librdkafka(
            "consumer.session.timeout.ms",
            &group.session_timeout_ms.to_string(),
        )
        .listen(http)
        .ready_max_lag(0)
}

/// The input, in production order: the generated lines (key, line) in two
/// halves, then the end-of-input markers (partition, line).
struct Input {
    first: Vec<(Option<String>, String)>,
    second: Vec<(Option<String>, String)>,
    /// One zero-USD `spend` per partition, `MARKER_AFTER_MS` after the last
    /// event: they move every partition's clock so far that every effect of
    /// the generated lines is final in `run` (effects trail T by
    /// `allowed_lateness`), as it is at the end of a replay, and change no
    /// series themselves.
    markers: Vec<(i32, String)>,
    /// Lines the engine cannot decode (dead-lettered), in all and in the
    /// first half.
    invalid: u64,
    invalid_first: u64,
    /// Decodable lines repeating an earlier event_id.
    duplicates: u64,
}

impl Input {
    fn total(&self) -> usize {
        self.first.len() + self.second.len() + self.markers.len()
    }

    /// Every line, in production order.
    fn lines(&self) -> impl Iterator<Item = &str> {
        let generated = self.first.iter().chain(&self.second).map(|(_, l)| l);
        generated
            .chain(self.markers.iter().map(|(_, l)| l))
            .map(String::as_str)
    }
}

fn input(cfg: &Config) -> Input {
    let lines = generated_with(7, EVENTS, 3);
    // What the engine will make of each line, from the bytes: undecodable
    // lines are invalid, a decodable line repeating an earlier event_id is
    // one of the generator's duplicates.
    let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
    let mut ids = HashSet::new();
    let (mut invalid, mut duplicates) = (0, 0);
    let mut last_ts = i64::MIN;
    let mut channel = None;
    let half = lines.len() / 2;
    let mut invalid_first = 0;
    for (i, (_, l)) in lines.iter().enumerate() {
        match decoder.decode(l.as_bytes(), None) {
            Ok(ev) => {
                if !ids.insert(ev.event_id.to_string()) {
                    duplicates += 1;
                }
                last_ts = last_ts.max(ev.ts);
            }
            Err(_) => {
                invalid += 1;
                if i < half {
                    invalid_first += 1;
                }
            }
        }
        if channel.is_none() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            if v["type"] == "spend" {
                channel = v["channel"].as_str().map(str::to_string);
            }
        }
    }
    let channel = channel.expect("the generated input has a spend line");
    assert!(duplicates > 0 && invalid > 0, "the input has no noise");
    let markers = (0..PARTITIONS)
        .map(|p| {
            (
                p,
                format!(
                    r#"{{"event_id":"end-of-input-{p}","type":"spend","ts":"{}","channel":"{channel}","amount_usd":0}}"#,
                    format_rfc3339(last_ts + MARKER_AFTER_MS)
                ),
            )
        })
        .collect();
    let mut first = lines;
    let second = first.split_off(half);
    Input {
        first,
        second,
        markers,
        invalid,
        invalid_first,
        duplicates,
    }
}

/// Produces each line to its given partition and waits for the acks.
fn produce_to_partitions(broker: &Tansu, lines: &[(i32, String)]) {
    let producer: BaseProducer = broker
        .client_config()
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("create producer");
    for (p, l) in lines {
        producer
            .send(BaseRecord::<str, str>::to(TOPIC).partition(*p).payload(l))
            .unwrap_or_else(|(e, _)| panic!("produce to partition {p}: {e}"));
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("flush the end-of-input markers");
}

// ---------------------------------------------------------------------------
// cxpulse run as a child process
// ---------------------------------------------------------------------------

/// Waits until (at least) `n` messages have an outcome, nothing is left to
/// consume on any of the assigned partitions, (at least) `dead_lettered`
/// dead-letter records are acknowledged and `/readyz` is 200; returns
/// `/metrics`. More than expected is the caller's to assert (with the
/// numbers), not a timeout.
fn wait_consumed(run: &CxRun, n: usize, dead_lettered: u64, timeout: Duration) -> String {
    let mut last = String::new();
    run.wait_for(
        &format!("{n} messages taken, {dead_lettered} dead-lettered, lag 0, ready"),
        timeout,
        || {
            last = run.metrics();
            sum(&last, "cxpulse_events_total{") >= n as f64
                && value(&last, "cxpulse_assigned_partitions") == Some(PARTITIONS as f64)
                && sum(&last, "cxpulse_consumer_lag{") == 0.0
                && sum(&last, "cxpulse_dead_letter_records_total{") >= dead_lettered as f64
                && run.ready().0 == 200
        },
    );
    last
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

/// Whether two sample values are equal. Sums of floats may differ in the
/// last digits: `run` adds up each partition's sums, `replay` one stream's.
fn same(a: Option<&String>, b: Option<&String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) if x.is_finite() && y.is_finite() => {
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
            _ => a == b,
        },
        (a, b) => a == b,
    }
}

/// Committed offsets of the group, summed over the input partitions.
fn committed_total(broker: &Tansu) -> i64 {
    broker
        .offsets(GROUP, TOPIC, PARTITIONS)
        .total(Duration::from_secs(10))
        .expect("read committed offsets")
}

/// One past the last message of every input partition, read back from the
/// topic (tansu's high watermark from ListOffsets can trail the log: it has
/// read below the last produced batch here), after checking the topic holds
/// exactly `n` messages.
fn end_offsets(broker: &Tansu, n: usize) -> Vec<i64> {
    let records = broker.consume_all(TOPIC, n, Duration::from_secs(30));
    assert_eq!(records.len(), n, "messages in {TOPIC}");
    (0..PARTITIONS)
        .map(|p| {
            records
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset + 1)
                .max()
                .unwrap_or(0)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The scenario, shared by the tests
// ---------------------------------------------------------------------------

/// A broker with the topics, the generated input, and `cxpulse run`
/// consuming it.
struct Scenario {
    t0: Instant,
    // Dropped in this order: `run` before the broker, the directory last.
    run: CxRun,
    broker: Tansu,
    input: Input,
    cfg_path: PathBuf,
    dir: tempfile::TempDir,
}

/// What `/readyz` and `/healthz` answered while the broker was frozen.
struct Pause {
    /// When `/readyz` first answered 503, and why.
    unready_at: Option<(Duration, String)>,
    /// When `/readyz` answered 200 again after that.
    ready_again: Vec<Duration>,
    /// Every `/healthz` answer other than 200.
    healthz_failures: Vec<(Duration, u16)>,
    /// `/readyz` at the end of the pause.
    ready_at_end: (u16, String),
    /// cxpulse's log at the end of the pause.
    log_at_end: String,
}

/// Counts of outcomes, compared as a whole so a failure shows them all.
#[derive(Debug, PartialEq)]
struct Outcomes {
    messages: u64,
    applied: u64,
    duplicate: u64,
    invalid: u64,
    late: u64,
    dead_letter_records: u64,
}

impl Scenario {
    /// Starts the broker and `cxpulse run` with `group`, produces the first
    /// half of the input and waits until it is consumed completely (ready).
    fn first_half_consumed(group: &Group) -> Scenario {
        let t0 = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Tansu::start();
        broker.create_topic(TOPIC, PARTITIONS);
        broker.create_topic(DEAD_LETTER, 1);

        let http = free_addr();
        let config = config(&broker.addr, &http, group);
        let cfg_path = config.write(&dir.path().join("cxpulse.toml"));
        let input = input(&config.load());

        let run = CxRun::start(
            &cfg_path,
            dir.path().join("run.log"),
            &http,
            Duration::from_secs(30),
        );
        broker.produce_owned(TOPIC, &input.first);
        wait_consumed(
            &run,
            input.first.len(),
            input.invalid_first,
            Duration::from_secs(60),
        );
        let s = Scenario {
            t0,
            run,
            broker,
            input,
            cfg_path,
            dir,
        };
        s.note(&format!(
            "first half consumed ({} messages), ready",
            s.input.first.len()
        ));
        s
    }

    fn note(&self, what: &str) {
        eprintln!("{:?}: {what}", self.t0.elapsed());
    }

    fn assert_running(&mut self, when: &str) {
        assert!(
            self.run.child.try_wait().expect("try_wait").is_none(),
            "cxpulse exited {when}\n{}",
            self.run.log_tail()
        );
    }

    /// Freezes the broker for `PAUSE`, polling `/readyz` and `/healthz`,
    /// then lets it run again; `cxpulse` must still be running.
    fn freeze_broker(&mut self) -> Pause {
        self.broker.pause();
        let paused = Instant::now();
        let mut unready_at: Option<(Duration, String)> = None;
        let mut ready_again = Vec::new();
        let mut healthz_failures = Vec::new();
        let mut polls = 0;
        while paused.elapsed() < PAUSE {
            let (code, body) = self.run.ready();
            let at = paused.elapsed();
            polls += 1;
            match (&unready_at, code) {
                (None, 503) => unready_at = Some((at, body)),
                (Some(_), 200) => ready_again.push(at),
                _ => {}
            }
            let h = self.run.status("/healthz");
            if h != 200 {
                healthz_failures.push((paused.elapsed(), h));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let ready_at_end = self.run.ready();
        let log_at_end = self.run.log_text();
        self.broker.resume();
        self.note(&format!(
            "broker resumed after {:?}; /readyz turned unready after {:?} ({polls} polls); \
             at the end of the pause: {ready_at_end:?}",
            paused.elapsed(),
            unready_at.as_ref().map(|(d, b)| (d, b.trim().to_string()))
        ));
        self.assert_running("while the broker was frozen");
        Pause {
            unready_at,
            ready_again,
            healthz_failures,
            ready_at_end,
            log_at_end,
        }
    }

    /// Produces the second half and the end-of-input markers, waits until
    /// everything is consumed, and returns `/metrics` then and 2 s later.
    fn rest_consumed(&self) -> (String, String) {
        self.broker.produce_owned(TOPIC, &self.input.second);
        produce_to_partitions(&self.broker, &self.input.markers);
        let total = self.input.total();
        let m = wait_consumed(
            &self.run,
            total,
            self.input.invalid,
            Duration::from_secs(60),
        );
        self.note(&format!(
            "all {total} messages consumed after the pause, ready"
        ));
        // Nothing else arrives later (a re-delivery would be counted).
        std::thread::sleep(Duration::from_secs(2));
        (m, self.run.metrics())
    }

    /// One outcome per produced message; the duplicates are exactly the
    /// generator's; no line is late; every invalid line dead-lettered once;
    /// and the series do not change while idle.
    fn assert_each_message_taken_once(&self, m: &str, m_later: &str) {
        let input = &self.input;
        let total = input.total() as u64;
        let outcome = |o: &str| -> u64 {
            series(m)
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("cxpulse_events_total{")
                        && k.contains(&format!("outcome=\"{o}\""))
                })
                .filter_map(|(_, v)| v.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        let dlq =
            self.broker
                .consume_all(DEAD_LETTER, input.invalid as usize, Duration::from_secs(20));
        let got = Outcomes {
            messages: sum(m, "cxpulse_events_total{") as u64,
            applied: outcome("applied"),
            duplicate: outcome("duplicate"),
            invalid: outcome("invalid"),
            late: outcome("late"),
            // Each invalid message exactly once.
            dead_letter_records: dlq.len() as u64,
        };
        let want = Outcomes {
            messages: total,
            applied: total - input.duplicates - input.invalid,
            duplicate: input.duplicates,
            invalid: input.invalid,
            late: 0,
            dead_letter_records: input.invalid,
        };
        assert_eq!(got, want, "outcomes (left: counted, right: expected)");
        let d = differences_by(&engine_series(m), &engine_series(m_later), usize::MAX, same);
        assert!(d.is_empty(), "series changed while idle:\n{}", d.join("\n"));
    }

    /// The same input through `cxpulse replay` with the same config gives
    /// the same engine series as `m`; returns how many.
    fn assert_series_equal_replay(&self, m: &str) -> usize {
        let replayed = engine_series(&replay_lines(
            &self.cfg_path,
            &self.dir.path().join("input.ndjson"),
            self.input.lines(),
        ));
        let live = engine_series(m);
        assert!(live.len() > 100, "too few engine series: {live:?}");
        let d = differences_by(&live, &replayed, usize::MAX, same);
        assert!(
            d.is_empty(),
            "{} of {} series differ between run (left) and replay (right):\n{}",
            d.len(),
            live.len(),
            d[..d.len().min(30)].join("\n")
        );
        live.len()
    }

    /// Same process all along; SIGTERM: exit 0, every offset committed.
    fn assert_clean_exit_with_everything_committed(&mut self) {
        self.assert_running("");
        let log = self.run.log_text();
        assert_eq!(
            log.matches("starting cxpulse run").count(),
            1,
            "cxpulse started more than once"
        );
        assert_eq!(
            self.run.sigterm(),
            Some(0),
            "exit status\n{}",
            self.run.log_tail()
        );
        assert_eq!(
            committed_total(&self.broker),
            self.input.total() as i64,
            "committed offsets"
        );
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn a_broker_frozen_for_30s_mid_stream_loses_nothing_duplicates_nothing_and_shows_in_readyz() {
    // 1. The first half, consumed completely: ready.
    let mut s = Scenario::first_half_consumed(&KEPT);

    // 2. The broker freezes for 30 s. /readyz must turn 503 within the
    // pause (and stay so to its end); /healthz stays 200.
    let pause = s.freeze_broker();
    let (unready_after, why) = pause.unready_at.clone().unwrap_or_else(|| {
        panic!(
            "/readyz stayed 200 during the {PAUSE:?} pause\n{}",
            s.run.log_tail()
        )
    });
    assert!(
        why.contains("not answering") || why.contains("not connected"),
        "/readyz should blame the broker: {why}"
    );
    // Statistics come every second; allow a few more for a loaded machine.
    assert!(
        unready_after < STALLED_AFTER + Duration::from_secs(5),
        "/readyz turned unready only after {unready_after:?}"
    );
    assert!(
        pause.ready_again.is_empty(),
        "/readyz was 200 again at {:?} while the broker was frozen",
        pause.ready_again
    );
    assert_eq!(pause.ready_at_end.0, 503, "/readyz at the end of the pause");
    assert!(
        pause.healthz_failures.is_empty(),
        "/healthz failed during the pause: {:?}",
        pause.healthz_failures
    );

    // 3. Back: the second half and the end-of-input markers, all consumed.
    let (m, m_later) = s.rest_consumed();

    // 4. One outcome per produced message, nothing late, every invalid
    // line dead-lettered once.
    s.assert_each_message_taken_once(&m, &m_later);

    // 5. The same input through `cxpulse replay` with the same config.
    let n = s.assert_series_equal_replay(&m);

    // 6. Same process all along; SIGTERM: exit 0, every offset committed.
    s.assert_clean_exit_with_everything_committed();
    s.note(&format!(
        "{n} engine series equal to replay; {} duplicates, {} invalid; exit 0",
        s.input.duplicates, s.input.invalid
    ));
}

/// The group drops the member during the pause (its session times out) and
/// takes it back once the broker answers again, with the same partitions.
/// Nothing has been committed since the start, but the engine's state of
/// them is still in memory: they must resume where it ends, not at the
/// committed offsets (which would hand the whole first half to the engine a
/// second time, every event of it counted `late` or `duplicate` and every
/// invalid line dead-lettered again).
#[test]
fn a_member_dropped_by_the_group_during_a_frozen_broker_resumes_where_its_state_ends() {
    // 1. The first half, consumed completely; nothing committed of it.
    let mut s = Scenario::first_half_consumed(&DROPPED);
    let ends = end_offsets(&s.broker, s.input.first.len());
    let committed = committed_total(&s.broker);
    assert!(
        committed < ends.iter().sum::<i64>(),
        "the group's committed offsets ({committed} in all) should be behind the engine ({ends:?})"
    );

    // 2. The broker freezes for 30 s. The group session (6 s) times out
    // within it: librdkafka takes the assignment away as lost, so the revoke
    // commit fails and the committed offsets stay behind. cxpulse is not
    // restarted for it (/healthz stays 200).
    let pause = s.freeze_broker();
    assert!(
        pause.healthz_failures.is_empty(),
        "/healthz failed during the pause: {:?}",
        pause.healthz_failures
    );
    let during = |what: &str| {
        pause
            .log_at_end
            .lines()
            .filter(|l| l.contains(what))
            .count()
    };
    let revoked = during("partitions revoked");
    let revoke_commit_failed = during(r#"offset commit failed trigger="revoke""#);
    assert!(
        revoked >= 1 && revoke_commit_failed >= 1,
        "the group should have dropped the member during the pause, its revoke commit \
         failing: {revoked} revocations, {revoke_commit_failed} failed revoke commits\n{}",
        pause.log_at_end
    );

    // 3. Back: the member rejoins; the second half and the markers, all
    // consumed.
    let (m, m_later) = s.rest_consumed();

    // 4. One outcome per produced message, nothing late, every invalid
    // line dead-lettered once.
    s.assert_each_message_taken_once(&m, &m_later);

    // 5. Because the partitions, assigned here again, resumed exactly where
    // the first half ends (the engine's state of them), not at the
    // committed offsets.
    let log = s.run.log_text();
    let lines = |what: &str| -> Vec<&str> { log.lines().filter(|l| l.contains(what)).collect() };
    let assigned = lines("partitions assigned");
    let resumed = lines("assigned partitions resume where the engine's state of them ends");
    let want: Vec<String> = ends
        .iter()
        .enumerate()
        .map(|(p, o)| format!("{TOPIC}/{p}@{o}"))
        .collect();
    assert!(
        assigned.len() >= 2
            && resumed
                .first()
                .is_some_and(|l| want.iter().all(|w| l.contains(w.as_str()))),
        "the partitions should have been assigned again, resuming at {want:?}:\n{}\n{}",
        assigned.join("\n"),
        resumed.join("\n")
    );
    s.note(&format!(
        "revoked (lost, revoke commit failed) during the pause, assigned again, resumed at {want:?}"
    ));

    // 6. The same input through `cxpulse replay` with the same config.
    let n = s.assert_series_equal_replay(&m);

    // 7. Same process all along; SIGTERM: exit 0, every offset committed.
    s.assert_clean_exit_with_everything_committed();
    s.note(&format!(
        "{n} engine series equal to replay; {} duplicates, {} invalid; exit 0",
        s.input.duplicates, s.input.invalid
    ));
}
