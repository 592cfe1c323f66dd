//! Delivery failures against a real broker (tansu): a dead-letter topic that
//! does not exist pauses the invalid event's partition (offset held,
//! `/readyz` 503 naming the topic and reason) until the topic is created, or,
//! with `kafka.dead_letter_on_failure = "skip"`, the record is dropped and
//! counted and the offset moves on; a dead-letter record over the size
//! limit is truncated with a `cxpulse.truncated` header.
//!
//! Every count asserted is worked out by hand from the messages produced.

mod common;

use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use common::{CxConfig, CxRun, Tansu, free_addr, serial, value};

/// Event time base: 2025-06-02T10:00:00Z (lateness is 1 h and T never
/// follows the wall clock here, so nothing is late).
const B: i64 = 1_748_858_400_000;

fn deposit(id: &str, user: &str, at: i64) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"deposit","ts":"{}","user_id":"{user}","amount_usd":10}}"#,
        cxpulse::event::time::format_rfc3339(at)
    )
}

/// Produces `values` to partition `partition` of `topic`, in order, and
/// waits for every acknowledgement.
fn produce_to(broker: &Tansu, topic: &str, partition: i32, values: &[String]) {
    let p: BaseProducer = broker
        .client_config()
        .set("acks", "all")
        .create()
        .expect("producer");
    for v in values {
        p.send(
            BaseRecord::<str, str>::to(topic)
                .partition(partition)
                .payload(v),
        )
        .unwrap_or_else(|(e, _)| panic!("produce to {topic}/{partition}: {e}"));
    }
    p.flush(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("flush to {topic}: {e}"));
}

/// `cxpulse run` on input `events` (2 partitions) with dead-letter topic
/// `dead-letter`, committing every second; `extra` adds keys.
fn start(
    broker: &Tansu,
    group: &str,
    dir: &tempfile::TempDir,
    extra: fn(CxConfig) -> CxConfig,
) -> CxRun {
    let http = free_addr();
    let cfg = CxConfig::new()
        .allowed_lateness("1h")
        .idle_timeout("1000d")
        .kafka(&broker.addr, group, &["events"])
        .dead_letter_topic("dead-letter")
        .output_topic("")
        .alerts_topic("")
        .commit_interval("1s")
        .shutdown_timeout("5s")
        .quick_group_join()
        // A missing topic is reported after 1 s (librdkafka's default
        // waits 30 s for a new topic to propagate), and never created by
        // the producer's metadata requests (as on clusters with
        // auto.create.topics.enable=false).
        .librdkafka("producer.topic.metadata.propagation.max.ms", "1000")
        .librdkafka("producer.allow.auto.create.topics", "false")
        .set("kafka", "dead_letter_retry_interval", "1s")
        // The committed offsets these tests check are those of the
        // in-memory pipeline's delivery rule (held dead letters): no
        // durable state.
        .set("checkpoint", "store", "off")
        .listen(&http)
        .ready_max_lag(1000);
    let cfg = extra(cfg).write(&dir.path().join("cxpulse.toml"));
    CxRun::spawn(&cfg, dir.path().join("cxpulse.log"), &http)
        .poll_every(Duration::from_millis(200))
        .healthy_within(Duration::from_secs(20))
}

fn metric(run: &CxRun, series: &str) -> f64 {
    value(&run.metrics(), series).unwrap_or(-1.0)
}

const APPLIED: &str = r#"cxpulse_events_total{type="deposit",outcome="applied"}"#;
const INVALID: &str = r#"cxpulse_events_total{type="unknown",outcome="invalid"}"#;

#[test]
fn a_missing_dead_letter_topic_pauses_the_partition_until_it_exists_and_loses_nothing() {
    let _serial = serial();
    let broker = Tansu::start();
    broker.create_topic("events", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let group = "dl-pause";
    let mut run = start(&broker, group, &dir, |c| c);

    // Partition 0: valid, invalid (offset 1), valid, valid. Partition 1: 3 valid.
    let p0: Vec<String> = vec![
        deposit("a0", "u1", B),
        "{oops".to_string(),
        deposit("a1", "u1", B + 1_000),
        deposit("a2", "u1", B + 2_000),
    ];
    let p1: Vec<String> = (0..3)
        .map(|i| deposit(&format!("b{i}"), "u2", B + i * 1_000))
        .collect();
    produce_to(&broker, "events", 0, &p0);
    produce_to(&broker, "events", 1, &p1);

    // The dead-letter record fails as unknown_topic; partition 0 pauses.
    run.wait_alive(
        "/readyz fails naming the dead-letter topic",
        Duration::from_secs(30),
        |r| {
            let (code, body) = r.ready();
            code == 503 && body.contains("dead-letter") && body.contains("unknown_topic")
        },
    );
    let (_, why) = run.ready();
    assert!(why.contains("events/0 paused at offset 1"), "{why}");
    run.wait_alive(
        "the 6 valid events are applied",
        Duration::from_secs(20),
        |r| metric(r, APPLIED) == 6.0,
    );
    assert!(
        metric(
            &run,
            r#"cxpulse_delivery_failures_total{reason="unknown_topic",stream="dead_letter"}"#
        ) >= 1.0,
        "{}",
        run.metrics()
    );
    assert_eq!(metric(&run, "cxpulse_delivery_paused_partitions"), 1.0);

    // Partition 0 is paused: a new event there waits; one on partition 1 is applied.
    produce_to(&broker, "events", 0, &[deposit("a3", "u1", B + 3_000)]);
    produce_to(&broker, "events", 1, &[deposit("b3", "u2", B + 3_000)]);
    run.wait_alive(
        "the new event of partition 1 is applied",
        Duration::from_secs(20),
        |r| metric(r, APPLIED) == 7.0,
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(metric(&run, APPLIED), 7.0, "partition 0 must stay paused");
    // Committed: partition 0 stops before the invalid record (1); partition
    // 1 has all 4 of its messages handled.
    let offsets = broker.offsets(group, "events", 2);
    run.wait_alive("commits: [1, 4]", Duration::from_secs(20), |_| {
        offsets.committed(Duration::from_secs(5)).ok() == Some(vec![1, 4])
    });
    // The failure is still retried and counted.
    let failures_before = metric(
        &run,
        r#"cxpulse_delivery_failures_total{reason="unknown_topic",stream="dead_letter"}"#,
    );
    run.wait_alive("retries keep failing", Duration::from_secs(20), |r| {
        metric(
            r,
            r#"cxpulse_delivery_failures_total{reason="unknown_topic",stream="dead_letter"}"#,
        ) > failures_before
    });

    // The topic appears: the held record is delivered, partition 0 resumes.
    broker.create_topic("dead-letter", 1);
    let created = std::time::Instant::now();
    run.wait_alive(
        "the partition resumes and a3 is applied",
        Duration::from_secs(60),
        |r| metric(r, APPLIED) == 8.0,
    );
    eprintln!(
        "pause: resumed {:.1} s after the topic was created; {} failed attempts before",
        created.elapsed().as_secs_f64(),
        metric(
            &run,
            r#"cxpulse_delivery_failures_total{reason="unknown_topic",stream="dead_letter"}"#
        )
    );
    run.wait_alive("/readyz is 200 again", Duration::from_secs(20), |r| {
        r.ready().0 == 200
    });
    run.wait_alive("commits: [5, 4]", Duration::from_secs(20), |_| {
        offsets.committed(Duration::from_secs(5)).ok() == Some(vec![5, 4])
    });
    let m = run.metrics();
    // 9 messages, 9 outcomes: 8 applied, 1 invalid; no duplicate.
    assert_eq!(value(&m, APPLIED), Some(8.0), "{m}");
    assert_eq!(value(&m, INVALID), Some(1.0), "{m}");
    assert_eq!(common::events_seen(&m), 9.0, "{m}");
    assert_eq!(value(&m, "cxpulse_delivery_paused_partitions"), Some(0.0));
    assert_eq!(
        value(
            &m,
            r#"cxpulse_dead_letter_records_total{reason="not_json"}"#
        ),
        Some(1.0)
    );
    let dl = broker.consume_all("dead-letter", 1, Duration::from_secs(20));
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0].value, "{oops");
    let h = |k: &str| {
        dl[0]
            .headers
            .iter()
            .find(|(hk, _)| hk == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(h("cxpulse.source.partition").as_deref(), Some("0"));
    assert_eq!(h("cxpulse.source.offset").as_deref(), Some("1"));
    assert_eq!(run.sigterm(), Some(0), "{}", run.log_tail());
}

#[test]
fn with_skip_an_undeliverable_dead_letter_is_counted_and_its_offset_moves_on() {
    let _serial = serial();
    let broker = Tansu::start();
    broker.create_topic("events", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let group = "dl-skip";
    let mut run = start(&broker, group, &dir, |c| {
        c.set("kafka", "dead_letter_on_failure", "skip")
    });
    produce_to(
        &broker,
        "events",
        0,
        &[
            deposit("a0", "u1", B),
            "{oops".into(),
            deposit("a1", "u1", B + 1_000),
        ],
    );
    produce_to(
        &broker,
        "events",
        1,
        &[
            deposit("b0", "u2", B),
            "[]".into(),
            deposit("b1", "u2", B + 1_000),
        ],
    );
    let dropped = r#"cxpulse_delivery_dropped_total{reason="unknown_topic",stream="dead_letter"}"#;
    run.wait_alive("2 dead letters skipped", Duration::from_secs(60), |r| {
        metric(r, dropped) == 2.0
    });
    let offsets = broker.offsets(group, "events", 2);
    run.wait_alive("commits: [3, 3]", Duration::from_secs(20), |_| {
        offsets.committed(Duration::from_secs(5)).ok() == Some(vec![3, 3])
    });
    run.wait_alive("/readyz is 200", Duration::from_secs(20), |r| {
        r.ready().0 == 200
    });
    let m = run.metrics();
    assert_eq!(value(&m, APPLIED), Some(4.0), "{m}");
    assert_eq!(value(&m, INVALID), Some(2.0), "{m}");
    assert_eq!(common::events_seen(&m), 6.0, "{m}");
    assert_eq!(value(&m, "cxpulse_delivery_paused_partitions"), Some(0.0));
    assert_eq!(
        value(
            &m,
            r#"cxpulse_dead_letter_records_total{reason="not_json"}"#
        ),
        None,
        "nothing was dead-lettered"
    );
    assert!(run.log_text().contains("records given up without delivery"));
    assert_eq!(run.sigterm(), Some(0), "{}", run.log_tail());
}

#[test]
fn a_dead_letter_over_the_size_limit_is_truncated_with_a_header() {
    let _serial = serial();
    let broker = Tansu::start();
    broker.create_topic("events", 2);
    broker.create_topic("dead-letter", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    // The producer accepts records up to 10000 bytes; the invalid message
    // (not JSON) is 20000 bytes.
    let mut run = start(&broker, "dl-big", &dir, |c| {
        c.librdkafka("producer.message.max.bytes", "10000")
    });
    let big = "x".repeat(20_000);
    produce_to(&broker, "events", 0, &[big.clone(), deposit("a0", "u1", B)]);
    let dl = broker.consume_all("dead-letter", 1, Duration::from_secs(30));
    assert_eq!(dl.len(), 1, "{}", run.log_tail());
    let r = &dl[0];
    let h = |k: &str| {
        r.headers
            .iter()
            .find(|(hk, _)| hk == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(h("cxpulse.truncated").as_deref(), Some("20000"));
    assert_eq!(h("cxpulse.reason").as_deref(), Some("not_json"));
    let headers: usize = r.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(
        r.value.len() + headers <= 10_000 && r.value.len() >= 8_000,
        "value {} bytes, headers {headers} bytes",
        r.value.len()
    );
    assert!(big.starts_with(&r.value));
    run.wait_alive("the valid event is applied", Duration::from_secs(20), |r| {
        metric(r, APPLIED) == 1.0
    });
    assert_eq!(metric(&run, "cxpulse_delivery_truncated_total"), 1.0);
    assert_eq!(run.sigterm(), Some(0), "{}", run.log_tail());
}

#[test]
fn with_the_output_topic_missing_nothing_piles_up_and_the_topic_ends_with_the_newest_values() {
    let _serial = serial();
    let broker = Tansu::start();
    broker.create_topic("events", 2);
    broker.create_topic("dead-letter", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    // Lateness 0: every event's effect is visible at once, so values change
    // with each produce while the output topic is missing.
    let mut run = start(&broker, "out-missing", &dir, |c| {
        c.allowed_lateness("0s")
            .output_topic("metrics-out")
            .publish_interval("1s")
    });
    produce_to(&broker, "events", 0, &[deposit("a0", "u1", B)]);
    let failed = r#"cxpulse_delivery_failures_total{reason="unknown_topic",stream="output"}"#;
    run.wait_alive(
        "output fails as unknown_topic",
        Duration::from_secs(30),
        |r| metric(r, failed) >= 1.0,
    );
    // More changes while it keeps failing, one publish tick apart.
    let mut pending = Vec::new();
    for i in 1..=4 {
        produce_to(
            &broker,
            "events",
            i % 2,
            &[deposit(&format!("a{i}"), "u1", B + i as i64 * 1_000)],
        );
        std::thread::sleep(Duration::from_millis(1_500));
        pending.push(metric(&run, r#"cxpulse_delivery_pending{stream="output"}"#));
    }
    assert!(pending[0] > 0.0, "{pending:?}");
    broker.create_topic("metrics-out", 1);
    run.wait_alive(
        "every output record delivered",
        Duration::from_secs(60),
        |r| metric(r, r#"cxpulse_delivery_pending{stream="output"}"#) == 0.0,
    );
    std::thread::sleep(Duration::from_secs(2));
    let text = run.metrics();
    let out = broker.consume_all("metrics-out", 1, Duration::from_secs(20));
    let mut latest: std::collections::BTreeMap<String, f64> = Default::default();
    for r in &out {
        let key = r.key.clone().expect("keyed");
        if r.value.is_empty() {
            latest.remove(&key);
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&r.value).expect("JSON");
        latest.insert(key, v["value"].as_f64().expect("a number"));
    }
    // At most one batch flies (one record per series) and one record per
    // series waits: never more than twice the series published.
    let keys: std::collections::BTreeSet<&str> =
        out.iter().filter_map(|r| r.key.as_deref()).collect();
    let most = pending.iter().copied().fold(0.0, f64::max);
    assert!(
        most <= 2.0 * keys.len() as f64,
        "pending {pending:?} for {} series",
        keys.len()
    );
    let mut compared = 0;
    let mut wrong = Vec::new();
    for (series, value) in common::engine_series(&text) {
        let key = common::series_key(&series);
        let Ok(want) = value.parse::<f64>() else {
            continue;
        };
        let name = key.split('{').next().unwrap_or_default().to_string();
        if !latest.keys().any(|k| k.starts_with(&format!("{name}{{"))) {
            continue; // a family the output topic does not carry
        }
        compared += 1;
        match latest.get(&key) {
            Some(got) if (got - want).abs() <= 1e-9 * want.abs().max(1.0) => {}
            got => wrong.push(format!("{key}: topic {got:?}, /metrics {want}")),
        }
    }
    eprintln!(
        "output: pending per tick {pending:?}, {} series on the topic, {} records, {compared} compared",
        keys.len(),
        out.len()
    );
    assert!(compared >= 10, "only {compared} series compared");
    assert!(
        wrong.is_empty(),
        "stale or missing on the output topic:\n{}",
        wrong.join("\n")
    );
    assert_eq!(run.sigterm(), Some(0), "{}", run.log_tail());
}
