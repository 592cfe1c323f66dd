//! `checkpoint.on_corrupt` end to end, against a real Kafka-protocol broker
//! (tansu, from the harness). A first `cxpulse run` consumes a batch and
//! writes several checkpoints; one byte of the newest file is then flipped.
//!
//! - `on_corrupt = "fail"`: `run` refuses to start: exit status 2 (a startup
//!   error), stderr names the corrupt file, nothing is consumed or written,
//!   although older good checkpoints are there.
//! - `on_corrupt = "empty"`: `run` starts, logs an error naming the corrupt
//!   file, and starts with empty state from the group's committed offsets:
//!   `cxpulse_events_total` counts exactly the events produced after the
//!   first run. An older checkpoint, checked to be good and to cover the
//!   first batch, is not restored.
//!
//! (`"previous"`, the default, is covered by `checkpoint_restart.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    CxConfig, CxRun, Tansu, checkpoint_files, events_seen, free_addr, generated, sum, value,
};
use cxpulse::checkpoint;

const TOPIC: &str = "events";
/// Events of the first run, and of the batch produced after it.
const FIRST: usize = 300;
const SECOND: usize = 200;

/// [`CxConfig::restartable`] with checkpoints in `dir` every 200 ms (3 kept)
/// and `checkpoint.on_corrupt`.
fn config(brokers: &str, group: &str, http: &str, dir: &Path, on_corrupt: &str) -> CxConfig {
    CxConfig::restartable(brokers, group, http, TOPIC)
        .checkpoint(dir, "200ms")
        .checkpoint_keep(3)
        .on_corrupt(on_corrupt)
}

/// Spawns `cxpulse run` without waiting: polls every 50 ms, and failures
/// show `log_brief` (the log without the checkpoint lines).
fn spawn(cfg: &Path, log: PathBuf, http: &str) -> CxRun {
    CxRun::spawn(cfg, log, http)
        .poll_every(Duration::from_millis(50))
        .excerpt_with(CxRun::log_brief)
}

/// Spawns and waits until `/healthz` answers (panics at once if it exits).
fn start(cfg: &Path, log: PathBuf, http: &str) -> CxRun {
    let mut r = spawn(cfg, log, http);
    r.wait_alive("/healthz answers", Duration::from_secs(30), |r| {
        r.status("/healthz") == 200
    });
    r
}

/// Waits until `n` events have an outcome in the engine and the lag is 0;
/// returns `/metrics`.
fn wait_events(run: &mut CxRun, n: f64) -> String {
    let mut last = String::new();
    run.wait_alive(
        &format!("{n} events taken, lag 0"),
        Duration::from_secs(30),
        |r| {
            last = r.metrics();
            events_seen(&last) >= n
                && value(&last, "cxpulse_assigned_partitions") == Some(2.0)
                && sum(&last, "cxpulse_consumer_lag{") == 0.0
        },
    );
    last
}

/// The `cxpulse_events_total` lines, for assertion messages.
fn events_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("cxpulse_events_total{"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The checkpoint files of `dir` with their contents.
fn files_with_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    checkpoint_files(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// What a test starts from: a broker whose topic holds `FIRST` events, all
/// consumed by a first run that wrote several checkpoints and stopped
/// cleanly; then one byte of the newest checkpoint is flipped.
struct Corrupted {
    broker: Tansu,
    dir: tempfile::TempDir,
    ckpt: PathBuf,
    cfg: PathBuf,
    http: String,
    /// The corrupt newest file and the older files, all intact.
    newest: PathBuf,
    older: Vec<PathBuf>,
    /// The first run's `/metrics` once it had taken every event.
    first_metrics: String,
}

fn first_run_then_corrupt(on_corrupt: &str) -> Corrupted {
    let broker = Tansu::start();
    broker.create_topic(TOPIC, 2);
    broker.produce_owned(TOPIC, &generated(FIRST));
    let dir = tempfile::tempdir().expect("tempdir");
    let ckpt = dir.path().join("checkpoints");
    let http = free_addr();
    let group = format!("corrupt-{on_corrupt}");
    let cfg = config(&broker.addr, &group, &http, &ckpt, on_corrupt)
        .write(&dir.path().join("cxpulse.toml"));

    let mut first = start(&cfg, dir.path().join("first.log"), &http);
    let first_metrics = wait_events(&mut first, FIRST as f64);
    // Two more checkpoints after every event was taken: the older files kept
    // then hold the whole first batch.
    let n = checkpoint_files(&ckpt).len();
    let mut seen = Vec::new();
    first.wait_alive(
        "two checkpoints after the batch",
        Duration::from_secs(10),
        |_| {
            for f in checkpoint_files(&ckpt) {
                if !seen.contains(&f) {
                    seen.push(f);
                }
            }
            seen.len() >= n + 2
        },
    );
    assert_eq!(first.sigterm(), Some(0), "{}", first.log_brief());
    assert!(
        first.log_text().contains("no checkpoint yet"),
        "the first run must start without a checkpoint:\n{}",
        first.log_brief()
    );

    let mut files = checkpoint_files(&ckpt);
    assert!(files.len() >= 2, "want an older file too: {files:?}");
    let newest = files.pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    assert!(
        matches!(
            checkpoint::decode(&bytes),
            Err(checkpoint::CheckpointError::ChecksumMismatch)
        ),
        "the flipped byte must make {} corrupt",
        newest.display()
    );
    Corrupted {
        broker,
        dir,
        ckpt,
        cfg,
        http,
        newest,
        older: files,
        first_metrics,
    }
}

/// The newest older file: it must read back intact and cover the whole
/// first batch (so restoring it would be visible).
fn good_older(c: &Corrupted) -> (PathBuf, checkpoint::Checkpoint) {
    let path = c.older.last().expect("an older checkpoint").clone();
    let cp = checkpoint::decode(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("older checkpoint {} is not good: {e}", path.display()));
    let covered: i64 = cp.offsets.iter().map(|o| o.next_offset).sum();
    assert_eq!(
        covered,
        FIRST as i64,
        "older checkpoint {} covers {covered} of {FIRST} events: {:?}",
        path.display(),
        cp.offsets
    );
    (path, cp)
}

#[test]
fn on_corrupt_fail_refuses_to_start_with_status_2_naming_the_file() {
    let t0 = Instant::now();
    let c = first_run_then_corrupt("fail");
    let (older, _) = good_older(&c);
    let before = files_with_bytes(&c.ckpt);
    // Input that a run which did start would consume.
    c.broker
        .produce_owned(TOPIC, &generated(FIRST + SECOND)[FIRST..]);

    let mut second = spawn(&c.cfg, c.dir.path().join("second.log"), &c.http);
    let status = second.wait_exit(Duration::from_secs(20));
    let stderr = second.log_text();
    assert_eq!(
        status.code(),
        Some(2),
        "a startup error must exit with status 2 (README, src/run.rs); got {status}\n{stderr}"
    );
    let newest = c.newest.display().to_string();
    let error = stderr
        .lines()
        .find(|l| l.starts_with("cxpulse: error:"))
        .unwrap_or_else(|| panic!("no `cxpulse: error:` line on stderr:\n{stderr}"));
    assert!(
        error.contains(&newest),
        "error does not name {newest}: {error}"
    );
    assert!(error.contains("on_corrupt"), "{error}");
    assert!(error.contains("checksum"), "{error}");
    let refused = second.log_line("checkpoint file refused");
    assert!(refused.contains("ERROR"), "{refused}");
    assert!(refused.contains(&newest), "{refused}");
    // No fallback to the good older file, no consumption, nothing written.
    assert!(
        !stderr.contains("engine restored from checkpoint")
            && !stderr.contains("consuming;")
            && !stderr.contains(&older.display().to_string()),
        "{stderr}"
    );
    let after = files_with_bytes(&c.ckpt);
    assert!(
        before == after,
        "the checkpoint directory changed: {:?} -> {:?}",
        before.iter().map(|f| &f.0).collect::<Vec<_>>(),
        after.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    eprintln!(
        "fail: refused with status 2 naming {newest}; {} good older file(s) left alone; {:?}",
        c.older.len(),
        t0.elapsed()
    );
}

#[test]
fn on_corrupt_empty_starts_empty_from_the_committed_offsets_ignoring_older_files() {
    let t0 = Instant::now();
    let c = first_run_then_corrupt("empty");
    let (older, _) = good_older(&c);
    assert_eq!(events_seen(&c.first_metrics), FIRST as f64);
    // The second batch, after the first run committed the first.
    c.broker
        .produce_owned(TOPIC, &generated(FIRST + SECOND)[FIRST..]);

    let mut second = start(&c.cfg, c.dir.path().join("second.log"), &c.http);
    let m = wait_events(&mut second, SECOND as f64);
    // A little longer: anything consumed again would show by now.
    std::thread::sleep(Duration::from_millis(500));
    let later = second.metrics();
    let log = second.log_text();
    let newest = c.newest.display().to_string();

    // Empty state, from the committed offsets: only the second batch counts
    // (restoring the older file, or reading from the start, would count
    // the first batch too).
    assert_eq!(events_seen(&m), SECOND as f64, "{}", events_lines(&m));
    assert_eq!(
        events_seen(&later),
        SECOND as f64,
        "{}",
        events_lines(&later)
    );
    let empty = second.log_line("STARTING WITH EMPTY STATE");
    assert!(empty.contains("ERROR"), "{empty}");
    assert!(empty.contains(&newest), "{empty}");
    assert!(empty.contains("on_corrupt"), "{empty}");
    let refused = second.log_line("checkpoint file refused");
    assert!(
        refused.contains("ERROR") && refused.contains(&newest),
        "{refused}"
    );
    // The good older file was not restored (nor named).
    assert!(
        !log.contains("engine restored from checkpoint"),
        "{}",
        second.log_brief()
    );
    assert!(
        !log.contains(&older.display().to_string()),
        "the older checkpoint {} appears in the log:\n{}",
        older.display(),
        second.log_brief()
    );
    // It goes on checkpointing after the corrupt file.
    second.wait_alive("a new checkpoint", Duration::from_secs(10), |_| {
        checkpoint_files(&c.ckpt)
            .last()
            .is_some_and(|f| *f > c.newest)
    });
    assert_eq!(second.sigterm(), Some(0), "{}", second.log_brief());
    let (_, cp) = {
        let last = checkpoint_files(&c.ckpt).pop().unwrap();
        let cp = checkpoint::decode(&std::fs::read(&last).unwrap()).unwrap();
        (last, cp)
    };
    let covered: i64 = cp.offsets.iter().map(|o| o.next_offset).sum();
    assert_eq!(covered, (FIRST + SECOND) as i64, "{:?}", cp.offsets);
    eprintln!(
        "empty: started empty past the corrupt {newest} (older good {} ignored), \
         took {} events; {:?}",
        older.display(),
        events_seen(&later),
        t0.elapsed()
    );
}
