//! Fleet totals on the output topic (docs/fleet.md), against a real tansu
//! broker and real `cxpulse run` processes:
//!
//! - two instances in one group on a 4-partition input topic publish, on the
//!   output topic, exactly what one instance holding all four partitions
//!   publishes (and shows on `/metrics`), with hand-checked values: signups
//!   by channel, the CSAT ratio, a first-response quantile;
//! - exactly one of them (the owner of partition 0) publishes on the output
//!   topic; the other publishes nothing there;
//! - garbage records on the partials topic are skipped and counted by
//!   reason, and the totals stay right.
//!
//! The event set is produced to explicit partitions, each user's events on
//! one partition, and every partition's last event at the same instant X,
//! so every instance's T is X and the totals are exact (docs/fleet.md,
//! "When the partials' T differ").

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use common::{
    CxConfig, CxRun, OutputValue, Tansu, close, events_seen, fold_output, free_addr, serial,
    series_key, value,
};

/// Event time base: 2025-06-02T10:00:00Z.
const B: i64 = 1_748_858_400_000;
const MIN: i64 = 60_000;
/// Every partition's last event: T of every instance.
const X: i64 = B + 60 * MIN;
const PARTITIONS: i32 = 4;
const INPUT: &str = "events";

fn ts(ms: i64) -> String {
    cxpulse::event::time::format_rfc3339(ms)
}

fn signup(id: &str, user: &str, channel: &str, at: i64) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"signup","ts":"{}","user_id":"{user}","channel":"{channel}"}}"#,
        ts(at)
    )
}

fn support(id: &str, user: &str, ticket: &str, action: &str, at: i64) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"support","ts":"{}","user_id":"{user}","ticket_id":"{ticket}","action":"{action}","priority":"high"}}"#,
        ts(at)
    )
}

fn rated(id: &str, user: &str, ticket: &str, csat: u8, at: i64) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"support","ts":"{}","user_id":"{user}","ticket_id":"{ticket}","action":"rated","csat":{csat}}}"#,
        ts(at)
    )
}

fn deposit(id: &str, user: &str, at: i64) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"deposit","ts":"{}","user_id":"{user}","amount_usd":10}}"#,
        ts(at)
    )
}

/// (partition, user key, value): user u1 on partition 0, u2 on 1, u3 and u5
/// on 2, u4 on 3. Hand-computed at T = X (allowed_lateness 2 s: the deposits
/// at X are still pending, everything else is applied):
///
/// - signups: u1, u2, u5 by `ads`, u3 by `seo`, u4 by `organic`;
/// - CSAT: 5, 2, 4, 1: two of four answers in {4, 5}, ratio 0.5;
/// - first responses (high): t1 600 s, t2 300 s, t3 1200 s: the median
///   (nearest rank, 2nd of 3) is 600 s, the 0.9 quantile 1200 s.
fn event_set() -> Vec<(i32, &'static str, String)> {
    vec![
        (0, "u1", signup("e1", "u1", "ads", B)),
        (0, "u1", support("e2", "u1", "t1", "opened", B + MIN)),
        (
            0,
            "u1",
            support("e3", "u1", "t1", "agent_replied", B + 11 * MIN),
        ),
        (0, "u1", rated("e4", "u1", "t1", 5, B + 20 * MIN)),
        (0, "u1", deposit("e5", "u1", X)),
        (1, "u2", signup("e6", "u2", "ads", B + MIN)),
        (1, "u2", support("e7", "u2", "t2", "opened", B + 2 * MIN)),
        (
            1,
            "u2",
            support("e8", "u2", "t2", "agent_replied", B + 7 * MIN),
        ),
        (1, "u2", rated("e9", "u2", "t2", 2, B + 21 * MIN)),
        (1, "u2", deposit("e10", "u2", X)),
        (2, "u3", signup("e11", "u3", "seo", B + 2 * MIN)),
        (2, "u5", signup("e12", "u5", "ads", B + 4 * MIN)),
        (2, "u3", rated("e13", "u3", "t9", 4, B + 22 * MIN)),
        (2, "u3", deposit("e14", "u3", X)),
        (3, "u4", signup("e15", "u4", "organic", B + 3 * MIN)),
        (3, "u4", support("e16", "u4", "t3", "opened", B + 3 * MIN)),
        (
            3,
            "u4",
            support("e17", "u4", "t3", "agent_replied", B + 23 * MIN),
        ),
        (3, "u4", rated("e18", "u4", "t3", 1, B + 24 * MIN)),
        (3, "u4", deposit("e19", "u4", X)),
    ]
}

/// Produces each record to its partition; blocks until all are acknowledged.
fn produce_to_partitions(broker: &Tansu, topic: &str, records: &[(i32, &str, String)]) {
    let producer: BaseProducer = broker
        .client_config()
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    for (p, key, value) in records {
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(*p)
                    .key(key.as_bytes())
                    .payload(value.as_bytes()),
            )
            .unwrap_or_else(|(e, _)| panic!("enqueue to {topic}/{p}: {e}"));
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Produces raw (key, value) records to partition 0 of `topic`.
fn produce_raw(broker: &Tansu, topic: &str, records: &[(Option<&[u8]>, &[u8])]) {
    let producer: BaseProducer = broker.client_config().create().expect("producer");
    for (key, value) in records {
        let mut r = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(0)
            .payload(*value);
        if let Some(k) = key {
            r = r.key(*k);
        }
        producer
            .send(r)
            .unwrap_or_else(|(e, _)| panic!("enqueue to {topic}: {e}"));
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

struct Instance {
    run: CxRun,
    _dir: tempfile::TempDir,
}

impl Instance {
    /// `cxpulse run` in `group`, publishing every 500 ms to `output`, T
    /// moved by events only.
    fn start(broker: &Tansu, group: &str, output: &str) -> Instance {
        Instance::start_with(broker, group, output, "30s")
    }

    /// The same, with partition snapshots every `snapshots`.
    fn start_with(broker: &Tansu, group: &str, output: &str, snapshots: &str) -> Instance {
        let dir = tempfile::tempdir().expect("tempdir");
        let http = free_addr();
        let cfg = CxConfig::steady_engine()
            .kafka(&broker.addr, group, &[INPUT])
            .dead_letter_topic("")
            .output_topic(output)
            .alerts_topic("")
            .publish_interval("500ms")
            .commit_interval("1s")
            .shutdown_timeout("5s")
            .quick_group_join()
            .listen(&http)
            .ready_max_lag(100_000_000)
            .set("checkpoint", "interval", snapshots)
            .write(&dir.path().join("cxpulse.toml"));
        let run = CxRun::spawn(&cfg, dir.path().join("cxpulse.log"), &http)
            .healthy_within(Duration::from_secs(30));
        Instance { run, _dir: dir }
    }

    fn metric(&self, series: &str) -> Option<f64> {
        value(&self.run.metrics(), series)
    }
}

/// Differences between two folded output topics (values and as_of).
fn differences(
    a: &BTreeMap<String, OutputValue>,
    b: &BTreeMap<String, OutputValue>,
) -> Vec<String> {
    differences_in(a, b, true)
}

/// Differences of values only (`as_of` apart: a folder that took the duty
/// over republishes unchanged series at its own T).
fn value_differences(
    a: &BTreeMap<String, OutputValue>,
    b: &BTreeMap<String, OutputValue>,
) -> Vec<String> {
    differences_in(a, b, false)
}

fn differences_in(
    a: &BTreeMap<String, OutputValue>,
    b: &BTreeMap<String, OutputValue>,
    as_of_too: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for k in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if close(x.value, y.value) && (!as_of_too || x.as_of == y.as_of) => {
            }
            (x, y) => out.push(format!("{k}: {x:?} vs {y:?}")),
        }
    }
    out
}

/// Polls `f` until it returns `Some`, or panics with `what` and the logs of
/// `instances` after `timeout`.
fn wait<T>(
    what: &str,
    timeout: Duration,
    instances: &[&Instance],
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if let Some(v) = f() {
            eprintln!("waited {:.1} s: {what}", start.elapsed().as_secs_f64());
            return v;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = instances
                .iter()
                .map(|i| format!("--- {} ---\n{}", i.run.log.display(), i.run.log_tail()))
                .collect();
            panic!("timed out waiting: {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

const SIGNUPS_ADS: &str = r#"cxpulse_signups_total{channel="ads"}"#;

#[test]
fn two_instances_publish_the_totals_of_one_and_garbage_partials_are_skipped() {
    let _g = serial();
    let broker = Tansu::start();
    broker.create_topics(&[(INPUT, PARTITIONS), ("out-fleet", 1), ("out-one", 1)]);

    // The fleet: two instances in one group, two partitions each, settled
    // before any event is produced (no state has to move).
    let a = Instance::start(&broker, "fleet", "out-fleet");
    let b = Instance::start(&broker, "fleet", "out-fleet");
    settled_two_and_two(&a, &b);
    // The reference: one instance holding all four partitions.
    let one = Instance::start(&broker, "one", "out-one");

    let events = event_set();
    // Every partition gets events (the test's premise).
    for p in 0..PARTITIONS {
        assert!(
            events.iter().any(|(q, _, _)| *q == p),
            "partition {p} has no event"
        );
    }
    produce_to_partitions(&broker, INPUT, &events);
    let n = events.len() as f64;
    wait(
        "every event seen by the fleet and by the reference",
        Duration::from_secs(60),
        &[&a, &b, &one],
        || {
            let fleet = events_seen(&a.run.metrics()) + events_seen(&b.run.metrics());
            let reference = events_seen(&one.run.metrics());
            (fleet == n && reference == n).then_some(())
        },
    );

    // Exactly one folder per group: the owner of partition 0.
    let folders: Vec<f64> = [&a, &b]
        .iter()
        .map(|i| i.metric("cxpulse_fleet_folder").unwrap_or(-1.0))
        .collect();
    assert_eq!(
        folders.iter().sum::<f64>(),
        1.0,
        "cxpulse_fleet_folder of the two: {folders:?}"
    );
    wait(
        "the reference instance folds",
        Duration::from_secs(10),
        &[&one],
        || (one.metric("cxpulse_fleet_folder") == Some(1.0)).then_some(()),
    );
    let (mut folder, other) = if folders[0] == 1.0 { (a, b) } else { (b, a) };

    // The folded output topics agree, stated at T = X.
    let (fleet_out, one_out) = wait(
        "the fleet's output equals the one instance's, as of X",
        Duration::from_secs(60),
        &[&folder, &other, &one],
        || {
            let f = fold_output(&broker.consume_all("out-fleet", 1, Duration::from_secs(10)));
            let o = fold_output(&broker.consume_all("out-one", 1, Duration::from_secs(10)));
            let done = f
                .get(SIGNUPS_ADS)
                .is_some_and(|v| v.as_of == X && v.value == 3.0);
            (done && differences(&f, &o).is_empty()).then_some((f, o))
        },
    );
    assert!(fleet_out.len() > 20, "few series: {fleet_out:#?}");

    // Hand-checked values.
    let get = |k: &str| {
        fleet_out
            .get(k)
            .map(|v| v.value)
            .unwrap_or_else(|| panic!("no {k} on the output topic: {:#?}", fleet_out.keys()))
    };
    assert_eq!(get(SIGNUPS_ADS), 3.0);
    assert_eq!(get(r#"cxpulse_signups_total{channel="seo"}"#), 1.0);
    assert_eq!(get(r#"cxpulse_signups_total{channel="organic"}"#), 1.0);
    assert_eq!(get(r#"cxpulse_signups{channel="ads",window="24h"}"#), 3.0);
    assert_eq!(get(r#"cxpulse_csat_responses{window="24h"}"#), 4.0);
    assert_eq!(get(r#"cxpulse_csat_ratio{window="24h"}"#), 0.5);
    let p50 = get(
        r#"cxpulse_support_first_response_quantile_seconds{priority="high",quantile="0.5",window="24h"}"#,
    );
    let p90 = get(
        r#"cxpulse_support_first_response_quantile_seconds{priority="high",quantile="0.9",window="24h"}"#,
    );
    // HdrHistogram with 3 significant digits: within 0.1%.
    assert!((p50 - 600.0).abs() <= 0.6, "median first response {p50}");
    assert!((p90 - 1200.0).abs() <= 1.2, "0.9 first response {p90}");
    assert_eq!(get("cxpulse_clock_timestamp_seconds{}"), X as f64 / 1000.0);

    // Every series on the fleet's output topic has the value one instance
    // holding every partition shows on /metrics.
    let reference: BTreeMap<String, f64> = common::values(&one.run.metrics())
        .into_iter()
        .map(|(s, v)| (series_key(&s), v))
        .collect();
    let wrong: Vec<String> = fleet_out
        .iter()
        .filter(|(k, v)| !reference.get(*k).is_some_and(|r| close(*r, v.value)))
        .map(|(k, v)| format!("{k}: output {} vs /metrics {:?}", v.value, reference.get(k)))
        .collect();
    assert!(
        wrong.is_empty(),
        "output vs one instance's /metrics:\n{}",
        wrong.join("\n")
    );
    assert_eq!(one_out.len(), fleet_out.len());

    // Only the folder published on the output topic.
    let published = |i: &Instance| i.metric(r#"cxpulse_published_records_total{stream="output"}"#);
    assert!(published(&folder).is_some_and(|v| v > 0.0));
    assert_eq!(
        published(&other),
        Some(0.0),
        "the other instance published output"
    );
    // Both published partials.
    for i in [&folder, &other] {
        assert!(
            i.metric(r#"cxpulse_published_records_total{stream="partials"}"#)
                .is_some_and(|v| v >= 2.0)
        );
    }

    // Garbage on the partials topic: skipped, counted by reason, totals
    // unchanged, the folder alive.
    let partials_topic = "fleet-cxpulse-partials";
    let mut corrupt = b"CXPP\x01".to_vec();
    corrupt.extend_from_slice(&X.to_le_bytes());
    corrupt.extend_from_slice(&4u32.to_le_bytes());
    corrupt.extend_from_slice(&0u16.to_le_bytes());
    corrupt.extend_from_slice(b"\xde\xad\xbe\xef not a partial");
    produce_raw(
        &broker,
        partials_topic,
        &[
            (Some(&b"events/1"[..]), &b"{\"not\":\"a partial\"}"[..]),
            (Some(&b"no-partition"[..]), &b"CXPP"[..]),
            (Some(&b"events/2"[..]), &corrupt[..]),
            (Some(&b"events/3"[..]), &b"CXPP\x07"[..]),
        ],
    );
    for reason in ["bad_magic", "bad_key", "undecodable", "bad_version"] {
        let series = format!(r#"cxpulse_fleet_partials_refused_total{{reason="{reason}"}}"#);
        wait(
            &format!("{series} is 1 on the folder"),
            Duration::from_secs(30),
            &[&folder],
            || (folder.metric(&series) == Some(1.0)).then_some(()),
        );
    }
    assert!(
        folder
            .run
            .log_text()
            .contains("a record on the partials topic was skipped")
    );
    // A few more publish intervals: the totals still equal the reference.
    std::thread::sleep(Duration::from_secs(2));
    let after = fold_output(&broker.consume_all("out-fleet", 1, Duration::from_secs(10)));
    let d = differences(&after, &one_out);
    assert!(d.is_empty(), "after garbage partials:\n{}", d.join("\n"));
    assert_eq!(folder.metric("cxpulse_fleet_folder"), Some(1.0));
    assert_eq!(folder.metric("cxpulse_fleet_partitions_missing"), Some(0.0));

    // The folder stops (SIGTERM): its partitions, partition 0 among them,
    // move to the other instance with their state; the duty moves along,
    // and the totals stay those of one instance.
    assert_eq!(folder.run.sigterm(), Some(0), "{}", folder.run.log_tail());
    wait(
        "the other instance holds all 4 partitions and folds",
        Duration::from_secs(60),
        &[&other],
        || {
            (other.metric("cxpulse_assigned_partitions") == Some(4.0)
                && other.metric("cxpulse_state_restoring_partitions") == Some(0.0)
                && other.metric("cxpulse_fleet_folder") == Some(1.0))
            .then_some(())
        },
    );
    // It published nothing on the output topic before (checked above).
    wait(
        "the new folder's output equals the one instance's",
        Duration::from_secs(60),
        &[&other],
        || {
            let f = fold_output(&broker.consume_all("out-fleet", 1, Duration::from_secs(10)));
            (published(&other).is_some_and(|v| v > 0.0) && differences(&f, &one_out).is_empty())
                .then_some(())
        },
    );
    assert_eq!(
        events_seen(&other.run.metrics()),
        n,
        "{}",
        other.run.log_tail()
    );
}

/// One instance (the folder of its group): records on the partials topic
/// that are not partials, some there before it starts and some after, are
/// skipped and counted by reason; the process keeps running and ready.
#[test]
fn garbage_on_the_partials_topic_is_skipped_and_counted() {
    let _g = serial();
    let broker = Tansu::start();
    broker.create_topics(&[(INPUT, 2), ("out-g", 1)]);
    // Before the start: the partials topic exists with garbage in it.
    broker.create_topic("g-cxpulse-partials", 1);
    produce_raw(
        &broker,
        "g-cxpulse-partials",
        &[
            (None, &b"no key"[..]),
            (Some(&b"other-topic/0"[..]), &b"CXPP\x01"[..]),
        ],
    );
    let one = Instance::start(&broker, "g", "out-g");
    wait(
        "the instance folds",
        Duration::from_secs(30),
        &[&one],
        || (one.metric("cxpulse_fleet_folder") == Some(1.0)).then_some(()),
    );
    produce_raw(
        &broker,
        "g-cxpulse-partials",
        &[
            (Some(&b"events/0"[..]), &b"garbage"[..]),
            (Some(&b"events/1"[..]), &b"CXPP\x01\x00\x00"[..]),
        ],
    );
    for (reason, n) in [
        ("bad_key", 1.0),
        ("unknown_topic", 1.0),
        ("bad_magic", 1.0),
        ("truncated", 1.0),
    ] {
        let series = format!(r#"cxpulse_fleet_partials_refused_total{{reason="{reason}"}}"#);
        wait(
            &format!("{series} is {n}"),
            Duration::from_secs(30),
            &[&one],
            || (one.metric(&series) == Some(n)).then_some(()),
        );
    }
    assert_eq!(one.run.status("/healthz"), 200);
    let log = one.run.log_text();
    assert!(
        log.contains("reason=\"bad_key\"") || log.contains("reason=bad_key"),
        "{log}"
    );
    assert!(!log.contains("garbage"), "a refused value is never logged");
}

/// From partition 0 of the partials topic `topic`, raw (value): the first
/// partial of `key`, and the first later one with a higher ownership epoch.
fn partials_of_two_epochs(broker: &Tansu, topic: &str, key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "cxpulse-test-raw-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("assignment");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut first: Option<Vec<u8>> = None;
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200))
            && m.key() == Some(key)
        {
            let v = m.payload().unwrap_or_default().to_vec();
            match &first {
                None => first = Some(v),
                Some(f) if partial_epoch(&v) > partial_epoch(f) => return (f.clone(), v),
                Some(_) => {}
            }
        }
    }
    panic!(
        "no two epochs of {} on {topic} in 20 s (first: {:?})",
        String::from_utf8_lossy(key),
        first.as_deref().map(partial_epoch)
    );
}

/// The ownership epoch in a partials record's header (format version 2:
/// magic, version, T, then the epoch; docs/fleet.md).
fn partial_epoch(value: &[u8]) -> u64 {
    assert_eq!(
        (&value[..4], value[4]),
        (&b"CXPP"[..], 2),
        "a version-2 partial"
    );
    u64::from_le_bytes(value[13..21].try_into().expect("8 bytes"))
}

/// Waits until `a` and `b` hold 2 partitions each, for 3 s in a row.
fn settled_two_and_two(a: &Instance, b: &Instance) {
    let mut stable_since: Option<Instant> = None;
    wait(
        "each fleet instance holds 2 restored partitions",
        Duration::from_secs(60),
        &[a, b],
        || {
            let two = |i: &Instance| {
                i.metric("cxpulse_assigned_partitions") == Some(2.0)
                    && i.metric("cxpulse_state_restoring_partitions") == Some(0.0)
            };
            if two(a) && two(b) {
                let since = *stable_since.get_or_insert_with(Instant::now);
                (since.elapsed() > Duration::from_secs(3)).then_some(())
            } else {
                stable_since = None;
                None
            }
        },
    );
}

const STALE: &str = r#"cxpulse_fleet_partials_refused_total{reason="stale_epoch"}"#;

/// A frozen zombie (issue 10): the folder of a two-instance fleet is stopped
/// with SIGSTOP past its session timeout; its partitions move to the other
/// instance (from the zombie's snapshots and the input after them), which
/// takes the folding duty and applies the events produced meanwhile. After
/// SIGCONT the zombie notices the loss (a "lost" rebalance), drops its state
/// and rejoins; nothing it writes wins: the output topic still equals one
/// instance holding every partition, the fleet's applied events add up to
/// the input, and a zombie's old partial produced again is refused
/// (`stale_epoch`) by every instance.
#[test]
fn a_frozen_zombie_never_wins_and_drops_its_state() {
    let _g = serial();
    let broker = Tansu::start();
    broker.create_topics(&[(INPUT, PARTITIONS), ("out-z", 1), ("out-one", 1)]);
    let a = Instance::start_with(&broker, "z", "out-z", "1s");
    let b = Instance::start_with(&broker, "z", "out-z", "1s");
    settled_two_and_two(&a, &b);
    let one = Instance::start(&broker, "one", "out-one");

    // Everything but the last event of each partition (at X) first.
    let (last, first): (Vec<_>, Vec<_>) = event_set()
        .into_iter()
        .partition(|(_, _, v)| v.contains(&ts(X)));
    assert_eq!(
        last.len(),
        PARTITIONS as usize,
        "one event at X per partition"
    );
    produce_to_partitions(&broker, INPUT, &first);
    let n1 = first.len() as f64;
    let n = n1 + last.len() as f64;
    let fleet_seen = |is: &[&Instance]| {
        is.iter()
            .map(|i| events_seen(&i.run.metrics()))
            .sum::<f64>()
    };
    wait(
        "the first events seen by the fleet and the reference",
        Duration::from_secs(60),
        &[&a, &b, &one],
        || (fleet_seen(&[&a, &b]) == n1 && fleet_seen(&[&one]) == n1).then_some(()),
    );
    let out = |topic: &str| fold_output(&broker.consume_all(topic, 1, Duration::from_secs(10)));
    wait(
        "the fleet's totals equal the reference's",
        Duration::from_secs(30),
        &[&a, &b, &one],
        || {
            let f = out("out-z");
            (!f.is_empty() && value_differences(&f, &out("out-one")).is_empty()).then_some(())
        },
    );
    // The zombie-to-be: the folder (owner of partition 0), with snapshots
    // of its partitions written (every second).
    let (zombie, survivor) = if a.metric("cxpulse_fleet_folder") == Some(1.0) {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(zombie.metric("cxpulse_fleet_folder"), Some(1.0));
    wait(
        "the zombie-to-be has written snapshots",
        Duration::from_secs(10),
        &[&zombie],
        || {
            zombie
                .metric(r#"cxpulse_state_saves_total{result="ok"}"#)
                .is_some_and(|v| v >= 2.0)
                .then_some(())
        },
    );

    zombie.run.signal("STOP");
    wait(
        "the survivor holds all 4 partitions, restored, and folds",
        Duration::from_secs(60),
        &[&survivor],
        || {
            (survivor.metric("cxpulse_assigned_partitions") == Some(4.0)
                && survivor.metric("cxpulse_state_restoring_partitions") == Some(0.0)
                && survivor.metric("cxpulse_fleet_folder") == Some(1.0))
            .then_some(())
        },
    );
    // From the zombie's snapshots (written every second before it froze).
    assert!(
        survivor
            .run
            .log_text()
            .contains("partition state restored; consuming from the snapshot's offset"),
        "{}",
        survivor.run.log_tail()
    );
    // The last events, while the zombie is frozen: only the survivor
    // applies them; its totals reach X and equal the reference's.
    produce_to_partitions(&broker, INPUT, &last);
    let x_secs = X as f64 / 1000.0;
    let clock = "cxpulse_clock_timestamp_seconds{}";
    wait(
        "the survivor's totals at X equal the reference's",
        Duration::from_secs(60),
        &[&survivor, &one],
        || {
            let f = out("out-z");
            let o = out("out-one");
            (fleet_seen(&[&survivor]) == n
                && f.get(clock).is_some_and(|v| v.value == x_secs)
                && o.get(clock).is_some_and(|v| v.value == x_secs)
                && value_differences(&f, &o).is_empty())
            .then_some(())
        },
    );

    // The zombie wakes up: it notices the loss, drops the state it held,
    // and rejoins; the fleet settles at 2 + 2 again, the state of the
    // partitions it gets back restored from the survivor's final snapshots.
    zombie.run.signal("CONT");
    wait(
        "the zombie notices it lost its partitions",
        Duration::from_secs(30),
        &[&zombie],
        || {
            zombie
                .metric(r#"cxpulse_rebalances_total{kind="lost"}"#)
                .is_some_and(|v| v >= 1.0)
                .then_some(())
        },
    );
    let log = zombie.run.log_text();
    assert!(
        log.contains("the consumer loop was stopped"),
        "{}",
        zombie.run.log_tail()
    );
    assert!(
        log.contains("partition state dropped"),
        "{}",
        zombie.run.log_tail()
    );
    settled_two_and_two(&zombie, &survivor);
    wait(
        "the fleet's applied events equal the input, and its totals the reference's",
        Duration::from_secs(30),
        &[&zombie, &survivor],
        || {
            let f = out("out-z");
            (fleet_seen(&[&zombie, &survivor]) == n
                && f.get(clock).is_some_and(|v| v.value == x_secs)
                && value_differences(&f, &out("out-one")).is_empty())
            .then_some(())
        },
    );
    // Nothing the zombie wrote after waking up was refused as stale: it
    // held its writes until it knew (a stale partial would count here).
    for i in [&zombie, &survivor] {
        assert_eq!(i.metric(STALE), Some(0.0), "{}", i.run.log_tail());
    }

    // The zombie's old partial of partition 0 (its first epoch), produced
    // again as a late write would land: refused by both, totals unchanged.
    let (oldest, newer) = partials_of_two_epochs(&broker, "z-cxpulse-partials", b"events/0");
    assert!(partial_epoch(&oldest) < partial_epoch(&newer));
    produce_raw(
        &broker,
        "z-cxpulse-partials",
        &[(Some(&b"events/0"[..]), &oldest[..])],
    );
    for i in [&zombie, &survivor] {
        wait(
            "the zombie's old partial is refused as stale",
            Duration::from_secs(20),
            &[i],
            || (i.metric(STALE) == Some(1.0)).then_some(()),
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let d = value_differences(&out("out-z"), &out("out-one"));
    assert!(
        d.is_empty(),
        "after the zombie's partial:\n{}",
        d.join("\n")
    );
}
