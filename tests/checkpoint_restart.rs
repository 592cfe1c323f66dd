//! Durable state of `cxpulse run` (checkpoints) against a real
//! Kafka-protocol broker (tansu, from the harness):
//!
//! - killed with SIGKILL at many random points while it consumes and started
//!   again each time, `run` ends with exactly the engine series of a run that
//!   was never interrupted over the same input (nothing lost, nothing applied
//!   twice), and its output topic, read as a compacted topic (latest record
//!   per key, tombstones removing keys), holds exactly those series with
//!   those values;
//! - a corrupt newest checkpoint is refused with an error naming the file,
//!   and `run` falls back to the previous one.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    CxConfig, CxRun, SplitMix, Tansu, checkpoint_files, differences, engine_series, events_seen,
    free_addr, generated, is_pipeline, json_key, replay_lines, serial, series_key, sum,
    top_level_number, value,
};
use cxpulse::checkpoint;
use cxpulse::event::time::{format_rfc3339, parse_rfc3339};

const TOPIC: &str = "events";
/// The output topic of the killed/restarted runs.
const OUTPUT: &str = "series";
/// Their `kafka.publish_interval`, out of phase with the 200 ms checkpoint
/// interval, so kills fall between a checkpoint and the next publication:
/// a series published and then gone before the kill must still end up
/// tombstoned by the restarted run (before the first publication of a
/// process tombstoned every absent series it can name, this failed in 2 runs
/// out of 2 at this interval).
const PUBLISH_INTERVAL: &str = "700ms";

/// The config of the runs here ([`CxConfig::restartable`]): with
/// checkpoints in `checkpoint_dir` every 200 ms (3 kept), and publishing the
/// series to `output` every `PUBLISH_INTERVAL` (`None`: no checkpoints,
/// nothing published).
fn config(
    brokers: &str,
    group: &str,
    http: &str,
    checkpoint_dir: Option<&Path>,
    output: Option<&str>,
) -> CxConfig {
    let c = CxConfig::restartable(brokers, group, http, TOPIC);
    let c = match checkpoint_dir {
        Some(d) => c.checkpoint(d, "200ms").checkpoint_keep(3),
        None => c,
    };
    match output {
        Some(t) => c.output_topic(t).publish_interval(PUBLISH_INTERVAL),
        None => c,
    }
}

/// Takes the lock, starts a broker with the input topic (2 partitions),
/// makes a temporary directory.
fn setup() -> (MutexGuard<'static, ()>, Tansu, tempfile::TempDir) {
    let guard = serial();
    let broker = Tansu::start();
    broker.create_topic(TOPIC, 2);
    (guard, broker, tempfile::tempdir().expect("tempdir"))
}

/// Spawns `cxpulse run` (the log excerpt in failures: `log_head_tail`) and
/// waits up to 30 s for `/healthz`.
fn start(cfg: &Path, log: PathBuf, http: &str) -> CxRun {
    CxRun::spawn(cfg, log, http)
        .excerpt_with(CxRun::log_head_tail)
        .healthy_within(Duration::from_secs(30))
}

/// Waits until both partitions are assigned.
fn wait_assigned(run: &CxRun) {
    run.wait_for("2 partitions assigned", Duration::from_secs(60), || {
        value(&run.metrics(), "cxpulse_assigned_partitions") == Some(2.0)
    });
}

/// Waits until every one of `n` events has an outcome in the engine and
/// nothing is left to consume, then returns `/metrics`.
fn wait_all(run: &CxRun, n: f64) -> String {
    let mut last = String::new();
    run.wait_for(
        &format!("{n} events taken, lag 0"),
        Duration::from_secs(60),
        || {
            last = run.metrics();
            events_seen(&last) >= n && sum(&last, "cxpulse_consumer_lag{") == 0.0
        },
    );
    last
}

/// An output record's `as_of` (T, RFC 3339) in epoch milliseconds.
fn as_of(v: &serde_json::Value) -> Option<i64> {
    v.get("as_of")?.as_str().and_then(parse_rfc3339)
}

/// The output topic folded as a compacted topic's reader sees it: the latest
/// record of every key, a tombstone (empty value) removing the key.
struct Folded {
    latest: BTreeMap<String, serde_json::Value>,
    records: usize,
    tombstones: usize,
    /// Keys with more than one record.
    keys_republished: usize,
    /// Records whose value equals the previous record of their key (a run
    /// only publishes changes: these come from restarts).
    same_value_again: usize,
    /// Records whose `as_of` is earlier than the previous one of their key
    /// (a restarted run publishing from an older checkpoint).
    as_of_back: usize,
    /// Records whose key is not the one built from their name and labels.
    bad_keys: Vec<String>,
}

fn fold(records: &[common::Record]) -> Folded {
    // `consume_all` sorts by (partition, offset), and a key has one
    // partition: this is each key's order of publication.
    let mut f = Folded {
        latest: BTreeMap::new(),
        records: records.len(),
        tombstones: 0,
        keys_republished: 0,
        same_value_again: 0,
        as_of_back: 0,
        bad_keys: Vec::new(),
    };
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut prev: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    for r in records {
        let key = r.key.as_deref().expect("an output record without key");
        *count.entry(key).or_default() += 1;
        if r.value.is_empty() {
            f.tombstones += 1;
            f.latest.remove(key);
            prev.remove(key);
            continue;
        }
        let mut v: serde_json::Value = serde_json::from_str(&r.value)
            .unwrap_or_else(|e| panic!("output record {key} is not JSON ({e}): {}", r.value));
        // serde_json (without `float_roundtrip`) may read a float 1 ulp
        // off: the value is read from its text instead, exactly.
        v["value"] = top_level_number(&r.value, "value")
            .and_then(serde_json::Number::from_f64)
            .map_or(serde_json::Value::Null, serde_json::Value::Number);
        if json_key(&v).as_deref() != Some(key) {
            f.bad_keys.push(format!("{key} -> {}", r.value));
        }
        if let Some(p) = prev.get(key) {
            if p["value"] == v["value"] {
                f.same_value_again += 1;
            }
            if as_of(&v) < as_of(p) {
                f.as_of_back += 1;
            }
        }
        prev.insert(key, v.clone());
        f.latest.insert(key.to_string(), v);
    }
    f.keys_republished = count.values().filter(|n| **n > 1).count();
    f
}

#[test]
fn killed_at_random_points_it_ends_with_the_series_of_an_uninterrupted_run() {
    let _g = serial();
    let t0 = Instant::now();
    let broker = Tansu::start();
    broker.create_topic(TOPIC, 2);
    broker.create_topic(OUTPUT, 2);
    const EVENTS: u64 = 20_000;
    const KILLS: usize = 11;
    const PRODUCE_SLICES: usize = 40;
    const PRODUCE_PAUSE: Duration = Duration::from_millis(2_200);
    let lines = generated(EVENTS as usize);
    let dir = tempfile::tempdir().expect("tempdir");
    let ckpt = dir.path().join("checkpoints");
    let http = free_addr();
    let cfg = config(&broker.addr, "killed", &http, Some(&ckpt), Some(OUTPUT))
        .write(&dir.path().join("cxpulse.toml"));

    // The input arrives over time (a producer thread), while `run` is killed
    // with SIGKILL at random moments and started again with the same config.
    let produced = AtomicUsize::new(0);
    let mut rng = SplitMix(20_261_122);
    let mut mid_consumption = 0;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for slice in lines.chunks(lines.len().div_ceil(PRODUCE_SLICES)) {
                broker.produce_owned(TOPIC, slice);
                produced.fetch_add(slice.len(), Ordering::SeqCst);
                std::thread::sleep(PRODUCE_PAUSE);
            }
        });
        for round in 0..KILLS {
            let mut run = start(&cfg, dir.path().join(format!("run-{round}.log")), &http);
            wait_assigned(&run);
            std::thread::sleep(Duration::from_millis(100 + rng.below(1_200) as u64));
            let seen = events_seen(&run.metrics());
            let sent = produced.load(Ordering::SeqCst);
            run.kill9();
            if sent < lines.len() {
                mid_consumption += 1;
            }
            eprintln!(
                "round {round} at {:?}: killed with {seen} events seen, {sent} produced, {} checkpoint files",
                t0.elapsed(),
                checkpoint_files(&ckpt).len()
            );
        }
    });
    assert_eq!(produced.load(Ordering::SeqCst), lines.len());
    let mut last = start(&cfg, dir.path().join("run-last.log"), &http);
    let killed_metrics = wait_all(&last, EVENTS as f64);
    // Idle: let a few more checkpoints happen; nothing may change.
    std::thread::sleep(Duration::from_millis(600));
    let killed_metrics_later = last.metrics();
    let last_log = last.log_text();
    let restored = last_log.contains("engine restored from checkpoint");
    // Snapshot time in the consumer loop, from the "checkpoint written" lines.
    let snapshot_ms_max = last_log
        .lines()
        .filter_map(|l| l.split("snapshot_ms=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .fold(0.0f64, f64::max);
    let write_hist_sum = value(
        &killed_metrics_later,
        "cxpulse_checkpoint_write_seconds_sum",
    );
    let write_hist_count = value(
        &killed_metrics_later,
        "cxpulse_checkpoint_write_seconds_count",
    );
    let bytes = value(&killed_metrics_later, "cxpulse_checkpoint_bytes");
    let failures = value(&killed_metrics_later, "cxpulse_checkpoint_failures_total");
    // The output topic is read after the last run has stopped: its shutdown
    // publishes the last changes (and `Some(0)` says they were delivered), so
    // the topic is then complete.
    assert_eq!(last.sigterm(), Some(0), "{}", last.log_head_tail());
    let output = fold(&broker.consume_all(OUTPUT, 1, Duration::from_secs(60)));
    // T when the last run restored its checkpoint: its first publication
    // (everything, nothing published yet in that run) is at least that late.
    let restored_t = last_log
        .lines()
        .find(|l| l.contains("engine restored from checkpoint"))
        .and_then(|l| l.split("clock=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| parse_rfc3339(v.trim_matches('"')));

    // The reference: one uninterrupted run (no checkpoints) of the same input.
    let http_ref = free_addr();
    let cfg_ref = config(&broker.addr, "reference", &http_ref, None, None)
        .write(&dir.path().join("reference.toml"));
    let mut reference = start(&cfg_ref, dir.path().join("reference.log"), &http_ref);
    let reference_metrics = wait_all(&reference, EVENTS as f64);
    assert_eq!(reference.sigterm(), Some(0));

    // And `cxpulse replay` of the same lines (one partition): informational.
    let replay_cfg = CxConfig::steady_engine().write(&dir.path().join("replay.toml"));
    let replay_text = replay_lines(
        &replay_cfg,
        &dir.path().join("input.ndjson"),
        lines.iter().map(|(_, l)| l.as_str()),
    );

    let killed = engine_series(&killed_metrics);
    let killed_later = engine_series(&killed_metrics_later);
    let uninterrupted = engine_series(&reference_metrics);
    let replayed = engine_series(&replay_text);
    eprintln!(
        "{} engine series; {KILLS} kills ({mid_consumption} while input was still arriving); \
         checkpoint: last {} bytes, {} writes in the last run, mean write {:.2} ms, \
         snapshot at most {snapshot_ms_max:.2} ms, failures {:?}; \
         replay differs in {} series (one partition vs two); elapsed {:?}",
        killed.len(),
        bytes.unwrap_or(-1.0),
        write_hist_count.unwrap_or(0.0),
        1e3 * write_hist_sum.unwrap_or(0.0) / write_hist_count.unwrap_or(1.0).max(1.0),
        failures,
        differences(&uninterrupted, &replayed, usize::MAX).len(),
        t0.elapsed()
    );
    assert!(restored, "the last run did not restore a checkpoint");
    assert!(killed.len() > 50, "too few engine series: {killed:?}");
    assert_eq!(
        events_seen(&killed_metrics),
        EVENTS as f64,
        "every event taken exactly once"
    );
    let d = differences(&killed, &uninterrupted, 20);
    assert!(
        d.is_empty(),
        "killed/restarted run differs from the uninterrupted run:\n{}",
        d.join("\n")
    );
    let d = differences(&killed, &killed_later, 20);
    assert!(d.is_empty(), "series changed while idle:\n{}", d.join("\n"));
    assert_eq!(failures, Some(0.0));
    assert!(
        mid_consumption >= 10,
        "at least 10 kills must land while input is still arriving"
    );

    // The output topic, folded to the latest record per key, is the final
    // state of the last run: every engine series with its final value, and
    // nothing else (a series gone by the end has its tombstone).
    let final_t_ms = value(&killed_metrics, "cxpulse_clock_timestamp_seconds")
        .map(|s| (s * 1000.0).round() as i64)
        .expect("the final T");
    let final_t = format_rfc3339(final_t_ms);
    let expected: BTreeMap<String, (&String, f64)> = killed
        .iter()
        .map(|(s, v)| {
            let v = v.parse::<f64>().unwrap_or_else(|e| panic!("{s} {v}: {e}"));
            (series_key(s), (s, v))
        })
        .collect();
    assert_eq!(expected.len(), killed.len(), "two series with one key");
    let at_final_t = output
        .latest
        .values()
        .filter(|v| as_of(v) == Some(final_t_ms))
        .count();
    eprintln!(
        "output topic: {} records ({} tombstones), {} keys now; {} keys published more \
         than once, {} records repeating their key's previous value, {} with an as_of \
         earlier than their key's previous one; {at_final_t} latest records as of the \
         final T {final_t}, the last run restored T {}",
        output.records,
        output.tombstones,
        output.latest.len(),
        output.keys_republished,
        output.same_value_again,
        output.as_of_back,
        restored_t.map(format_rfc3339).unwrap_or_default(),
    );
    assert!(
        output.bad_keys.is_empty(),
        "output keys that are not the series key of their record:\n{}",
        output.bad_keys[..output.bad_keys.len().min(20)].join("\n")
    );
    let restored_t = restored_t.expect("the restored T in the last run's log");
    let mut wrong = Vec::new();
    for (key, (s, v)) in &expected {
        let Some(rec) = output.latest.get(key) else {
            wrong.push(format!("{s} = {v}: no record for {key}"));
            continue;
        };
        let got = rec["value"].as_f64();
        let t = as_of(rec);
        if got != Some(*v) || t.is_none_or(|t| t < restored_t || t > final_t_ms) {
            wrong.push(format!(
                "{s} = {v} (T {final_t}, restored {}): latest record {rec}",
                format_rfc3339(restored_t)
            ));
        }
    }
    // T itself changed with every applied event: published as of T.
    let clock = output.latest.get("cxpulse_clock_timestamp_seconds{}");
    if clock.and_then(as_of) != Some(final_t_ms) {
        wrong.push(format!("T {final_t}: latest record {clock:?}"));
    }
    for (key, rec) in &output.latest {
        let published = rec["name"].as_str().unwrap_or_default();
        if !expected.contains_key(key) && !is_pipeline(published) {
            wrong.push(format!("{key}: stale on the output topic: {rec}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "the output topic does not end with the final series ({} problems):\n{}",
        wrong.len(),
        wrong[..wrong.len().min(30)].join("\n")
    );
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one() {
    falls_back_past("corrupt", "checksum", |newest| {
        let mut bytes = std::fs::read(newest).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(newest, bytes).unwrap();
    });
}

/// A crafted newest file whose checksum is right (recomputed) but whose
/// engine state does not validate is refused the same way, naming what is
/// wrong, and never panics the process.
#[test]
fn a_crafted_newest_checkpoint_with_a_good_checksum_falls_back_too() {
    falls_back_past(
        "crafted",
        "checkpoint engine state is invalid: snapshot holds an out-of-range clock",
        |newest| {
            let mut cp = checkpoint::decode(&std::fs::read(newest).unwrap()).expect("good");
            // The engine snapshot begins with the bucket (i64) and the clock
            // (a tag byte, then i64): a clock in the year 292 million.
            assert_eq!(cp.engine[8], 1, "the clock is set");
            cp.engine[9..17].copy_from_slice(&i64::MAX.to_le_bytes());
            std::fs::write(newest, checkpoint::encode(&cp)).unwrap();
        },
    );
}

/// A first run writes checkpoints; `corrupt` damages the newest; a second
/// run refuses it (the log line says `refusal`), restores the previous one
/// and ends with the same state.
fn falls_back_past(group: &str, refusal: &str, corrupt: impl Fn(&Path)) {
    let (_g, broker, dir) = setup();
    const EVENTS: u64 = 2_000;
    let lines = generated(EVENTS as usize);
    let ckpt = dir.path().join("checkpoints");
    let http = free_addr();
    let cfg = config(&broker.addr, group, &http, Some(&ckpt), None)
        .write(&dir.path().join("cxpulse.toml"));
    broker.produce_owned(TOPIC, &lines);

    let mut first = start(&cfg, dir.path().join("first.log"), &http);
    let before = wait_all(&first, EVENTS as f64);
    first.wait_for("two checkpoints", Duration::from_secs(10), || {
        checkpoint_files(&ckpt).len() >= 2
    });
    assert_eq!(first.sigterm(), Some(0), "{}", first.log_head_tail());
    let files = checkpoint_files(&ckpt);
    assert!(files.len() >= 2, "{files:?}");
    let newest = files.last().unwrap().clone();
    let previous = files[files.len() - 2].clone();
    corrupt(&newest);

    let second = start(&cfg, dir.path().join("second.log"), &http);
    wait_assigned(&second);
    let after = wait_all(&second, EVENTS as f64);
    let refused = second.log_line("checkpoint file refused");
    assert!(refused.contains("ERROR"), "{refused}");
    assert!(refused.contains(&newest.display().to_string()), "{refused}");
    assert!(refused.contains(refusal), "{refused}");
    let restored = second.log_line("engine restored from checkpoint");
    assert!(
        restored.contains(&previous.display().to_string()),
        "{restored}"
    );
    let d = differences(&engine_series(&before), &engine_series(&after), 20);
    assert!(
        d.is_empty(),
        "state after the fallback differs:\n{}",
        d.join("\n")
    );
    assert_eq!(events_seen(&after), EVENTS as f64);
}

#[test]
fn a_failed_checkpoint_write_is_counted_and_processing_continues() {
    let (_g, broker, dir) = setup();
    const EVENTS: u64 = 500;
    // A regular file where the checkpoint directory's parent should be.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let ckpt = blocker.join("checkpoints");
    let http = free_addr();
    let cfg = config(&broker.addr, "unwritable", &http, Some(&ckpt), None)
        .write(&dir.path().join("cxpulse.toml"));
    broker.produce_owned(TOPIC, &generated(EVENTS as usize));
    let mut run = start(&cfg, dir.path().join("run.log"), &http);
    wait_all(&run, EVENTS as f64);
    run.wait_for(
        "a counted checkpoint failure",
        Duration::from_secs(10),
        || value(&run.metrics(), "cxpulse_checkpoint_failures_total").is_some_and(|v| v >= 1.0),
    );
    let m = run.metrics();
    assert_eq!(value(&m, "cxpulse_checkpoints_total"), Some(0.0));
    let line = run.log_line("checkpoint write failed");
    assert!(line.contains("ERROR"), "{line}");
    // Shutdown reports the failed final checkpoint: exit status 1.
    assert_eq!(run.sigterm(), Some(1), "{}", run.log_head_tail());
}
