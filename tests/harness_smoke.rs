//! Checks the test harness itself against the real tools: a tansu broker and
//! promtool. These fail (never skip) when the tools are missing; run
//! `scripts/setup-tools.sh` (or `scripts/test.sh`) first.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Tansu, promtool};

#[test]
fn tansu_roundtrip_keyed_records_across_partitions() {
    let broker = Tansu::start();
    broker.create_topic("smoke", 3);

    let keys: Vec<String> = (0..10).map(|i| format!("key-{i}")).collect();
    let values: Vec<String> = (0..100).map(|i| format!("value-{i}")).collect();
    let records: Vec<(Option<&str>, &str)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (Some(keys[i % keys.len()].as_str()), v.as_str()))
        .collect();
    broker.produce("smoke", &records);

    let got = broker.consume_all("smoke", 100, Duration::from_secs(30));
    assert_eq!(
        got.len(),
        100,
        "expected exactly 100 records, got {}",
        got.len()
    );

    let mut seen = HashSet::new();
    for r in &got {
        assert!(seen.insert(r.value.clone()), "duplicate value {}", r.value);
    }
    for v in &values {
        assert!(seen.contains(v), "missing value {v}");
    }

    // Every key lands in exactly one partition, and records keep their key.
    let mut key_partition: HashMap<&str, i32> = HashMap::new();
    for r in &got {
        let key = r.key.as_deref().expect("record without key");
        let idx: usize = r.value["value-".len()..].parse().unwrap();
        assert_eq!(
            key,
            keys[idx % keys.len()],
            "key/value mismatch for {}",
            r.value
        );
        let p = *key_partition.entry(key).or_insert(r.partition);
        assert_eq!(
            p, r.partition,
            "key {key} seen in partitions {p} and {}",
            r.partition
        );
        assert!((0..3).contains(&r.partition));
    }
    assert_eq!(key_partition.len(), keys.len());
    // 10 keys over 3 partitions: more than one partition should be used.
    let used: HashSet<i32> = key_partition.values().copied().collect();
    assert!(used.len() > 1, "all keys hashed to one partition: {used:?}");

    // Offsets are dense per partition, starting at 0.
    for p in 0..3 {
        let offs: Vec<i64> = got
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset)
            .collect();
        let want: Vec<i64> = (0..offs.len() as i64).collect();
        assert_eq!(offs, want, "partition {p} offsets");
    }
}

#[test]
fn tansu_pause_resume_and_restart() {
    let mut broker = Tansu::start();
    broker.create_topic("t", 1);
    broker.pause();
    std::thread::sleep(Duration::from_millis(200));
    broker.resume();
    broker.produce("t", &[(None, "a"), (Some("k"), "b")]);
    let got = broker.consume_all("t", 2, Duration::from_secs(20));
    let vals: Vec<&str> = got.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(vals, ["a", "b"]);

    let addr = broker.addr.clone();
    broker.restart_on_same_port();
    assert_eq!(broker.addr, addr);
    // In-memory storage: the topic is gone after a restart; the broker works.
    broker.create_topic("t", 2);
    broker.produce("t", &[(Some("x"), "c")]);
    let got = broker.consume_all("t", 1, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, "c");
    assert_eq!(got[0].key.as_deref(), Some("x"));
    broker.stop();
    broker.stop(); // idempotent
}

#[test]
fn promtool_runs() {
    let out = std::process::Command::new(promtool())
        .arg("--version")
        .output()
        .expect("run promtool --version");
    assert!(out.status.success(), "promtool --version failed: {out:?}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("promtool"), "unexpected output: {text}");
}
