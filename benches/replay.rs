//! `cxpulse replay` as a whole process (issue 12, target 2: >= 2.3M events/s
//! on the 2-core machine over `cxpulse gen --seed 1 --events 1000000`).
//!
//! Each run, interleaved so that the machine's noise hits all alike:
//! - `replay`: the release binary, `cxpulse replay FILE --format json`, wall
//!   time of the whole process (start, read, decode, apply, export, exit);
//! - `decode_1core`, the same-run reference: [`Decoder::decode`] of every line
//!   of the same file on one thread, in this process (the file already in
//!   memory): the decode work alone that a one-core replay has to do;
//! - `before` (only with `REPLAY_BENCH_BEFORE=/path/to/an/older/cxpulse`): that
//!   binary's replay of the same file, and whether its output is byte-identical.
//!
//! Prints min and median of each over the runs, events/s (lines / wall time)
//! and the ratios replay / decode_1core and replay / before (> 1: faster).
//!
//! Run: `cargo bench --bench replay`. Knobs: `REPLAY_BENCH_FILE` (an NDJSON
//! file; default: generated into a temporary directory), `REPLAY_BENCH_RUNS`
//! (default 3), `REPLAY_BENCH_BEFORE` (see above).
//!
//! The figure is about using every core: on a machine whose cores are busy
//! with other work (other builds), replay gets no second core and the ratios
//! say so. There, give the bench its own session with a high scheduling
//! weight (Linux autogroups; as root), e.g.
//! `cargo bench --bench replay --no-run && setsid sh -c 'echo -19 >
//! /proc/self/autogroup; exec cargo bench --bench replay'`: every process of
//! the run, the reference and `before` included, gets the same weight.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cxpulse::event::{Decoder, Mapping};

const TARGET_EVENTS_PER_S: f64 = 2.3e6;

fn main() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_cxpulse"));
    // Under `cargo test --all-targets` (no `--bench`): a smoke run of 20k
    // lines, once, on the unoptimised binary.
    let full = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("REPLAY_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 3 } else { 1 })
        .max(1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = match std::env::var_os("REPLAY_BENCH_FILE") {
        Some(f) => PathBuf::from(f),
        None => generate(&bin, dir.path(), if full { 1_000_000 } else { 20_000 }),
    };
    let before = std::env::var_os("REPLAY_BENCH_BEFORE").map(PathBuf::from);
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let lines = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count() as f64;
    println!(
        "replay bench: {} ({} lines, {} MB), {runs} runs, {} cores",
        file.display(),
        lines,
        bytes.len() / 1_000_000,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let mut replay = Vec::new();
    let mut floor = Vec::new();
    let mut old = Vec::new();
    let mut identical = true;
    for _ in 0..runs {
        floor.push(decode_1core(&bytes));
        let (t, out) = run_replay(&bin, &file);
        replay.push(t);
        if let Some(b) = &before {
            let (t, old_out) = run_replay(b, &file);
            old.push(t);
            identical &= old_out == out;
        }
    }

    let eps = |d: Duration| lines / d.as_secs_f64();
    let report = |name: &str, v: &mut Vec<Duration>| -> (Duration, Duration) {
        v.sort();
        let (min, med) = (v[0], v[v.len() / 2]);
        println!(
            "  {name:<13} min {:>7.3} s  median {:>7.3} s  = {:>5.2}M / {:>5.2}M events/s (best / median)",
            min.as_secs_f64(),
            med.as_secs_f64(),
            eps(min) / 1e6,
            eps(med) / 1e6,
        );
        (min, med)
    };
    let (r_min, r_med) = report("replay", &mut replay);
    let (f_min, f_med) = report("decode_1core", &mut floor);
    println!(
        "  replay / decode_1core (events/s): {:.2} best, {:.2} median",
        f_min.as_secs_f64() / r_min.as_secs_f64(),
        f_med.as_secs_f64() / r_med.as_secs_f64(),
    );
    if before.is_some() {
        let (b_min, b_med) = report("before", &mut old);
        println!(
            "  replay / before (events/s): {:.2} best, {:.2} median; output byte-identical: {}",
            b_min.as_secs_f64() / r_min.as_secs_f64(),
            b_med.as_secs_f64() / r_med.as_secs_f64(),
            if identical { "yes" } else { "NO" }
        );
    }
    println!(
        "  target {:.1}M events/s: median {:.2}M -> {}",
        TARGET_EVENTS_PER_S / 1e6,
        eps(r_med) / 1e6,
        if eps(r_med) >= TARGET_EVENTS_PER_S {
            "reached"
        } else {
            "NOT reached"
        }
    );
    assert!(identical, "the two binaries' outputs differ");
}

/// `cxpulse gen --seed 1 --events EVENTS` into `dir`.
fn generate(bin: &Path, dir: &Path, events: u64) -> PathBuf {
    let path = dir.join("s1.ndjson");
    let out = std::fs::File::create(&path).expect("create the input file");
    let status = Command::new(bin)
        .args(["gen", "--seed", "1", "--events", &events.to_string()])
        .stdout(out)
        .status()
        .expect("cxpulse gen runs");
    assert!(status.success(), "cxpulse gen failed");
    path
}

/// Wall time of one whole `replay FILE --format json` process, and its output.
fn run_replay(bin: &Path, file: &Path) -> (Duration, Vec<u8>) {
    let t = Instant::now();
    let out = Command::new(bin)
        .arg("replay")
        .arg(file)
        .args(["--format", "json", "--quiet"])
        .stderr(Stdio::null())
        .output()
        .expect("cxpulse replay runs");
    let t = t.elapsed();
    assert!(out.status.success(), "{} replay failed", bin.display());
    (t, out.stdout)
}

/// One thread decoding every non-blank line of `bytes`, as today's one-core
/// replay does before it applies (canonical schema, default limits).
fn decode_1core(bytes: &[u8]) -> Duration {
    let d = Decoder::new(&Mapping::default(), 64 * 1024, false);
    let t = Instant::now();
    let mut valid = 0u64;
    for l in bytes.split(|&b| b == b'\n') {
        if !l.iter().all(u8::is_ascii_whitespace) {
            valid += u64::from(d.decode(std::hint::black_box(l), None).is_ok());
        }
    }
    std::hint::black_box(valid);
    t.elapsed()
}
