//! Partition state moves with its partition (`checkpoint.store = "kafka"`,
//! the default of `run`), with real `cxpulse run` processes in one consumer
//! group against a real Kafka-protocol broker (tansu, from the harness):
//!
//! - one instance takes a fixed event set over 4 partitions; a second joins
//!   and the cooperative rebalance moves 2 partitions to it, with their
//!   state (the first one's final snapshots on revoke): the two instances'
//!   applied counts and all-time series add up to the one-instance values,
//!   and no partition is owned (exported) by both;
//! - the second is killed with SIGKILL: its partitions move back to the
//!   first through its last periodic snapshot plus a replay of the input
//!   after it, and the first then holds exactly the values of a fresh
//!   single instance over the whole input (nothing lost, nothing twice);
//! - a member restarted with the same `kafka.group_instance_id` within the
//!   session timeout gets its partitions back, and the other member sees no
//!   rebalance at all.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::MutexGuard;
use std::time::Duration;

use common::{CxConfig, CxRun, Tansu, engine_series, events_seen, free_addr, serial, sum, value};

const TOPIC: &str = "events";
const PARTITIONS: i32 = 4;
/// Event time base: 2025-06-02T10:00:00Z.
const B: i64 = 1_748_858_400_000;
const MIN: i64 = 60_000;

/// Series that add up over partitions (all-time counts; `cxpulse_users` with
/// no baseline): what two instances holding disjoint partitions must sum to.
const ADDITIVE: &[&str] = &[
    "cxpulse_events_total{",
    "cxpulse_signups_total{",
    "cxpulse_users ",
];

fn ts(ms: i64) -> String {
    cxpulse::event::time::format_rfc3339(ms)
}

/// Signups of users `u{from}..u{to}` (keyed by user, so a user's events share
/// a partition), channel `ads` for even numbers and `organic` for odd ones,
/// one a minute from `start`; and a deposit of 10 USD by each even user
/// 30 s after their signup.
fn events(from: i64, to: i64, start: i64) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for i in from..to {
        let user = format!("u{i}");
        let at = start + (i - from) * MIN;
        let channel = if i % 2 == 0 { "ads" } else { "organic" };
        out.push((
            Some(user.clone()),
            format!(
                r#"{{"event_id":"s{i}","type":"signup","ts":"{}","user_id":"{user}","channel":"{channel}"}}"#,
                ts(at)
            ),
        ));
        if i % 2 == 0 {
            out.push((
                Some(user.clone()),
                format!(
                    r#"{{"event_id":"d{i}","type":"deposit","ts":"{}","user_id":"{user}","amount_usd":10}}"#,
                    ts(at + 30_000)
                ),
            ));
        }
    }
    out
}

/// The config of the instances: input `events` only, T never follows the
/// wall clock (so all-time series do not depend on when they are read),
/// partition snapshots every `snapshots` (periodic), commits every second, a
/// quick group join (session timeout 6 s).
fn config(brokers: &str, group: &str, http: &str, snapshots: &str) -> CxConfig {
    CxConfig::steady_engine()
        .kafka(brokers, group, &[TOPIC])
        .dead_letter_topic("")
        .output_topic("")
        .alerts_topic("")
        .commit_interval("1s")
        .shutdown_timeout("10s")
        .quick_group_join()
        .set("checkpoint", "interval", snapshots)
        .listen(http)
        .ready_max_lag(0)
}

/// A started instance and its config file.
struct Instance {
    run: CxRun,
    cfg: std::path::PathBuf,
    name: String,
}

impl Instance {
    fn start(dir: &Path, name: &str, cfg: CxConfig, http: &str) -> Instance {
        let cfg = cfg.write(&dir.join(format!("{name}.toml")));
        let run = spawn(&cfg, dir, name, 1, http);
        Instance {
            run,
            cfg,
            name: name.to_string(),
        }
    }

    /// Starts it again (same config, same HTTP port), log `{name}-{n}.log`.
    fn restart(&mut self, dir: &Path, n: u32) {
        let http = self.run.http.clone();
        self.run = spawn(&self.cfg, dir, &self.name, n, &http);
    }

    fn metrics(&self) -> String {
        self.run.metrics()
    }
}

fn spawn(cfg: &Path, dir: &Path, name: &str, n: u32, http: &str) -> CxRun {
    CxRun::spawn(cfg, dir.join(format!("{name}-{n}.log")), http)
        .poll_every(Duration::from_millis(200))
        .excerpt_with(CxRun::log_head_tail)
        .healthy_within(Duration::from_secs(30))
}

/// The partitions an instance exports (`cxpulse_partition_owned` = 1).
fn owned(metrics: &str) -> Vec<i32> {
    let mut v: Vec<i32> = common::values(metrics)
        .into_iter()
        .filter(|(s, v)| s.starts_with("cxpulse_partition_owned{") && *v == 1.0)
        .filter_map(|(s, _)| {
            let p = s.split("partition=\"").nth(1)?.split('"').next()?;
            p.parse().ok()
        })
        .collect();
    v.sort();
    v
}

/// The additive engine series of `metrics`, as numbers.
fn additive(metrics: &str) -> BTreeMap<String, f64> {
    engine_series(metrics)
        .into_iter()
        .filter(|(s, _)| ADDITIVE.iter().any(|p| format!("{s} ").starts_with(p)))
        .filter_map(|(s, v)| Some((s, v.parse::<f64>().ok()?)))
        .collect()
}

/// Per series, the sum over the instances' `metrics`.
fn summed(all: &[&str]) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for m in all {
        for (s, v) in additive(m) {
            *out.entry(s).or_default() += v;
        }
    }
    out
}

/// Takes the lock, starts a broker with the input topic, makes a directory.
fn setup() -> (MutexGuard<'static, ()>, Tansu, tempfile::TempDir) {
    let guard = serial();
    let broker = Tansu::start();
    broker.create_topic(TOPIC, PARTITIONS);
    (guard, broker, tempfile::tempdir().expect("tempdir"))
}

/// Waits until the instances own every partition exactly once between them,
/// each one is ready (no partition restoring), every one of `events` is
/// taken and nothing is left to consume; returns their `/metrics`.
fn wait_settled(all: &[&Instance], events: f64) -> Vec<String> {
    let first = &all[0].run;
    let mut last: Vec<String> = Vec::new();
    first.wait_for(
        &format!("{events} events taken, every partition owned once, all ready"),
        Duration::from_secs(90),
        || {
            last = all.iter().map(|i| i.metrics()).collect();
            let mut parts: Vec<i32> = last.iter().flat_map(|m| owned(m)).collect();
            parts.sort();
            parts == (0..PARTITIONS).collect::<Vec<_>>()
                && all.iter().all(|i| i.run.ready().0 == 200)
                && last.iter().map(|m| events_seen(m)).sum::<f64>() == events
                && last.iter().all(|m| sum(m, "cxpulse_consumer_lag{") == 0.0)
        },
    );
    last
}

fn applied(metrics: &str, ty: &str) -> f64 {
    value(
        metrics,
        &format!(r#"cxpulse_events_total{{type="{ty}",outcome="applied"}}"#),
    )
    .unwrap_or(0.0)
}

/// Lines of `run`'s log that contain every one of `words`.
fn log_lines(run: &CxRun, words: &[&str]) -> usize {
    run.log_text()
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

#[test]
fn partitions_move_with_their_state_and_the_instances_add_up_to_one() {
    let (_g, broker, dir) = setup();
    let dir = dir.path();
    let group = "rb-move";
    // a writes no periodic snapshot (1 h): what b gets of a's partitions is
    // a's final snapshots on revoke. b writes one every second.
    let start = |name: &str, snapshots: &str| {
        let http = free_addr();
        Instance::start(
            dir,
            name,
            config(&broker.addr, group, &http, snapshots),
            &http,
        )
    };
    let a = start("rb-a", "1h");
    // 40 users: 40 signups (20 ads, 20 organic) and 20 deposits.
    broker.produce_owned(TOPIC, &events(0, 40, B));
    let one = wait_settled(&[&a], 60.0).remove(0);
    assert_eq!(owned(&one), [0, 1, 2, 3]);
    assert_eq!(
        (applied(&one, "signup"), applied(&one, "deposit")),
        (40.0, 20.0)
    );
    let truth = additive(&one);
    let signups: f64 = truth
        .iter()
        .filter(|(s, _)| s.starts_with("cxpulse_signups_total{"))
        .map(|(_, v)| v)
        .sum();
    // Every partition's last event stays within the 2 s lateness of its
    // clock (T never follows the wall clock here): at most 4 signups wait.
    assert!(
        (36.0..=40.0).contains(&signups),
        "signups applied: {signups}\n{one}"
    );

    // A second member: the cooperative rebalance moves 2 partitions to it,
    // with their state.
    let mut b = start("rb-b", "1s");
    let two = wait_settled(&[&a, &b], 60.0);
    let (oa, ob) = (owned(&two[0]), owned(&two[1]));
    assert_eq!((oa.len(), ob.len()), (2, 2), "a owns {oa:?}, b owns {ob:?}");
    assert_eq!(
        summed(&[&two[0], &two[1]]),
        truth,
        "the two instances' sums differ from one instance's values"
    );
    assert_eq!(
        log_lines(&a.run, &["partition state saved", "revoke"]),
        2,
        "a's final snapshots on revoke:\n{}",
        a.run.log_text()
    );
    assert_eq!(
        log_lines(&b.run, &["partition state restored"]),
        2,
        "b's restores:\n{}",
        b.run.log_text()
    );
    // The first member kept its two other partitions throughout
    // (cooperative): one revoke, of the two that moved.
    assert_eq!(
        value(&two[0], r#"cxpulse_rebalances_total{kind="revoke"}"#),
        Some(1.0)
    );

    // 20 more users; once b has written periodic snapshots it is killed:
    // its partitions go back to a through them plus a replay of the input.
    broker.produce_owned(TOPIC, &events(40, 60, B + 2 * 3_600_000));
    wait_settled(&[&a, &b], 90.0);
    b.run
        .wait_for("periodic snapshots in b", Duration::from_secs(30), || {
            log_lines(&b.run, &["partition state saved", "periodic"]) >= 2
        });
    b.run.kill9();
    let after = wait_settled(&[&a], 90.0).remove(0);
    assert_eq!(owned(&after), [0, 1, 2, 3]);
    assert_eq!(
        (applied(&after, "signup"), applied(&after, "deposit")),
        (60.0, 30.0)
    );
    assert_eq!(
        sum(
            &after,
            r#"cxpulse_events_total{type="signup",outcome="duplicate""#
        ),
        0.0
    );
    assert_eq!(
        log_lines(&a.run, &["partition state restored"]),
        2,
        "a's restores of b's partitions:\n{}",
        a.run.log_text()
    );

    // The truth: a fresh single instance over the whole input, in its own
    // group with no durable state.
    let http = free_addr();
    let t = Instance::start(
        dir,
        "truth",
        config(&broker.addr, "rb-truth", &http, "1s").set("checkpoint", "store", "off"),
        &http,
    );
    let whole = wait_settled(&[&t], 90.0).remove(0);
    assert_eq!(
        additive(&after),
        additive(&whole),
        "after the SIGKILL, the survivor differs from a fresh instance"
    );
}

/// Static membership (`kafka.group_instance_id`): while a member restarts
/// within the session timeout, its partitions wait for it; no other member
/// takes them over (with dynamic membership the other member would get all
/// of them in between, and move them back).
///
/// Run with the eager `range` assignor: tansu (the test broker) does not
/// start a new generation when a static member rejoins in the second round
/// of a cooperative rebalance, so revoked partitions would stay unassigned.
/// And tansu may answer a static member's rejoin with a rebalance round
/// (Kafka does not, KIP-345) in which every partition stays with its owner:
/// the test checks the owners, not the absence of a round (see
/// docs/semantics.md, "Rebalances").
#[test]
fn a_static_member_restarted_within_the_session_timeout_moves_nothing() {
    let (_g, broker, dir) = setup();
    let dir = dir.path();
    let group = "rb-static";
    let start = |name: &str| {
        let http = free_addr();
        let cfg = config(&broker.addr, group, &http, "1s")
            .set("kafka", "group_instance_id", name)
            .librdkafka("consumer.partition.assignment.strategy", "range");
        Instance::start(dir, name, cfg, &http)
    };
    let a = start("rb-a");
    broker.produce_owned(TOPIC, &events(0, 40, B));
    wait_settled(&[&a], 60.0);
    let mut b = start("rb-b");
    let two = wait_settled(&[&a, &b], 60.0);
    let (oa, ob) = (owned(&two[0]), owned(&two[1]));
    // Lines of a's log so far (assignments after them are b's restart's).
    let a_lines_before = a.run.log_text().lines().count();

    // SIGTERM (a static member leaves no group on close), then the same
    // instance id again well within the 6 s session timeout.
    assert_eq!(b.run.sigterm(), Some(0), "b's shutdown was not clean");
    b.restart(dir, 2);
    // Until everything settles again, and a while after, a never owns one
    // of b's partitions.
    let mut seen_by_a: Vec<Vec<i32>> = Vec::new();
    let mut watch = |a: &Instance| {
        let now = owned(&a.metrics());
        if seen_by_a.last() != Some(&now) {
            seen_by_a.push(now);
        }
    };
    let settle = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        watch(&a);
        let ready = owned(&b.metrics()) == ob && b.run.ready().0 == 200;
        if ready {
            break;
        }
        assert!(
            std::time::Instant::now() < settle,
            "b did not get {ob:?} back; a owned {seen_by_a:?}\n{}",
            b.run.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let until = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < until {
        watch(&a);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen_by_a.iter().all(|o| o.iter().all(|p| oa.contains(p))),
        "a owned some of b's partitions {ob:?} during b's restart: {seen_by_a:?}\n{}",
        a.run.log_text()
    );
    let again = wait_settled(&[&a, &b], 60.0);
    assert_eq!(owned(&again[0]), oa, "a's partitions changed");
    assert_eq!(owned(&again[1]), ob, "b did not get its partitions back");
    let a_now = again[0].clone();
    let a_log = a.run.log_text();
    let taken: Vec<&str> = a_log
        .lines()
        .skip(a_lines_before)
        .filter(|l| {
            l.contains("partitions assigned")
                && ob.iter().any(|p| l.contains(&format!("{TOPIC}/{p}")))
        })
        .collect();
    assert!(
        taken.is_empty(),
        "a was assigned some of b's partitions during its restart: {taken:?}"
    );
    // b restored its partitions from the store.
    assert_eq!(
        log_lines(&b.run, &["partition state restored"]),
        2,
        "{}",
        b.run.log_text()
    );
    assert_eq!(summed(&[&a_now, &b.metrics()]), summed(&[&two[0], &two[1]]));
}
