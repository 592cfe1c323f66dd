//! Engine state per tracked user, and the cost of one export, at 1M users
//! (and 10M with `CXPULSE_BENCH_10M=1`).
//!
//! Each user gets a signup, a deposit and a trade: canonical NDJSON lines with
//! ids like `user-0001234`, in time order over 7 days, fed through
//! [`Decoder`] + [`Engine`] exactly as `replay` does. Reported per tracked user:
//!
//! - `state`: [`Engine::state_bytes`] (the engine's own heap accounting),
//! - `RSS`: growth of `VmRSS` (/proc/self/status) from just before the first
//!   event to after [`Engine::finish`], i.e. what the process really paid,
//!   allocator slack and hash-table headroom included; and the growth of the
//!   peak (`VmHWM`, reset before the run), which also counts what was held
//!   only for a while (the old table while a hash index grows),
//!
//! then the wall time of one [`Engine::families`] (a full scan of the users).
//!
//! A second run spreads the same users over 365 days instead of 7: users
//! whose events are all older than the compaction horizon (92 days by
//! default) are compacted, and the figures show what a long-running instance
//! holds per user.
//! Then the engine's own accounting by part (users, tickets, window buckets,
//! dedup filter, the rest) after a generated 1M-event, 60-day stream spread
//! over 1 and over 12 input partitions: the per-ticket and per-partition
//! figures of docs/performance.md.
//! Run: `cargo bench --bench memory` (each run in a process of its own).
//!
//! The flood (`CXPULSE_BENCH_FLOOD=1 cargo bench --bench memory`, alone so
//! that the peak is its own): 10M distinct new user ids (a signup each) and
//! 1M opened tickets (by the first 1M users) over 10 days, under
//! `engine.hard_max_tracked_users` = `engine.max_tracked_tickets` = 1M.
//! Prints the tracked and untracked counts, the time and the process's peak
//! RSS (`VmHWM`).

mod common;

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use common::proc_status_bytes;
use cxpulse::config::Config;
use cxpulse::engine::{Engine, Outcome};
use cxpulse::event::Decoder;
use cxpulse::r#gen::{DEFAULT_START_MS, GenConfig, Generator};

/// 2026-01-01T00:00:00Z.
const START_MS: i64 = 1_767_225_600_000;
const DAY_MS: i64 = 86_400_000;

fn run(users: u64, span_days: i64) {
    let span_ms = span_days * DAY_MS;
    let cfg = Config::default();
    let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
    let mut engine = Engine::new(cfg.params().expect("valid config"));
    let events = users * 3;
    let mut line = Vec::with_capacity(256);
    let (mut applied, mut other) = (0u64, 0u64);

    // Resets the process's peak RSS (VmHWM) to the current RSS, so that the
    // peak printed below is this run's (Linux >= 4.0; else it stays the process's).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = proc_status_bytes("VmRSS");
    let t0 = Instant::now();
    for k in 0..events {
        let (u, step) = (k / 3, k % 3);
        let ts = START_MS + (k as i128 * span_ms as i128 / events as i128) as i64;
        line.clear();
        let r = match step {
            0 => write!(
                line,
                r#"{{"event_id":"ev-{k}","type":"signup","ts":{ts},"user_id":"user-{u:07}","channel":"{}"}}"#,
                ["organic", "paid_search", "social", "affiliate"][(u % 4) as usize]
            ),
            1 => write!(
                line,
                r#"{{"event_id":"ev-{k}","type":"deposit","ts":{ts},"user_id":"user-{u:07}","amount_usd":{}.50}}"#,
                50 + u % 500
            ),
            _ => write!(
                line,
                r#"{{"event_id":"ev-{k}","type":"trade","ts":{ts},"user_id":"user-{u:07}","notional_usd":{}.25,"fee_usd":0.{:04}}}"#,
                100 + u % 900,
                1 + u % 9999
            ),
        };
        r.expect("writing to a Vec");
        match decoder.decode(&line, None) {
            Ok(ev) => match engine.offer(0, &ev, None) {
                Outcome::Applied => applied += 1,
                _ => other += 1,
            },
            Err(f) => {
                engine.record_invalid(0, f.event_type);
                other += 1;
            }
        }
    }
    engine.finish();
    let ingest = t0.elapsed();
    let rss_after = proc_status_bytes("VmRSS");
    let peak = proc_status_bytes("VmHWM");

    let tracked = engine.tracked_users();
    let state = engine.state_bytes();
    let t1 = Instant::now();
    let families = black_box(engine.families());
    let export = t1.elapsed();
    let nfam = families.len();
    drop(families);

    assert_eq!(other, 0, "every synthetic event must be applied");
    assert_eq!(tracked as u64, users, "one tracked user per user id");
    let per = |b: f64| b / tracked as f64;
    println!(
        "memory: {users} users over {span_days} d: state {:.1} B/user (engine.state_bytes), RSS +{:.1} B/user (peak RSS +{:.1} B/user); export {} ms; {} compacted ({:.0}%)",
        per(state as f64),
        per(rss_after.saturating_sub(rss_before) as f64),
        per(peak.saturating_sub(rss_before) as f64),
        export.as_millis(),
        engine.compacted_users(),
        100.0 * engine.compacted_users() as f64 / tracked as f64,
    );
    println!(
        "memory:   detail: {applied} events applied in {:.2} s ({:.0} ev/s), state_bytes {state}, \
         VmRSS {:.1} -> {:.1} MiB, VmHWM {:.1} MiB, {nfam} families exported",
        ingest.as_secs_f64(),
        applied as f64 / ingest.as_secs_f64(),
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        proc_status_bytes("VmHWM") as f64 / 1048576.0,
    );
}

/// The engine's own accounting by part ([`Engine::state_bytes_by_part`])
/// after a generated stream (`cxpulse gen --seed 1 --events N --days 60`:
/// tickets, spend, referrals, several channels) spread over `partitions`
/// input partitions by user id, as a keyed input topic spreads it: bytes per
/// tracked user, per ticket held, and window buckets per partition.
fn by_part(events: u64, partitions: &[u32]) {
    let cfg = Config::default();
    let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
    for &n in partitions {
        let mut engine = Engine::new(cfg.params().expect("valid config"));
        let stream = GenConfig {
            seed: 1,
            events,
            days: 60,
            start_ms: DEFAULT_START_MS,
            extra_channels: 0,
        };
        for line in Generator::new(&stream) {
            let key = line.key.as_deref().unwrap_or_default();
            let p = (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % u64::from(n)) as u32;
            match decoder.decode(line.payload.as_bytes(), None) {
                Ok(ev) => {
                    engine.offer(p, &ev, None);
                }
                Err(f) => engine.record_invalid(p, f.event_type),
            }
        }
        engine.finish();
        let b = engine.state_bytes_by_part();
        let (users, tickets) = (engine.tracked_users(), engine.tracked_tickets());
        println!(
            "memory: by part, {events} generated events over 60 d in {n} partition(s): \
             users {users} x {:.1} B, tickets {tickets} x {:.1} B, window buckets {:.2} MB per partition, \
             dedup {:.2} MB, other {:.2} MB (state_bytes {})",
            b.users as f64 / users.max(1) as f64,
            b.tickets as f64 / tickets.max(1) as f64,
            b.windows as f64 / f64::from(n) / 1e6,
            b.dedup as f64 / 1e6,
            b.other as f64 / 1e6,
            engine.state_bytes(),
        );
    }
}

/// The flood: `users` new ids, every 10th event also opening a ticket, under hard caps.
fn flood(users: u64, cap: u64) {
    let span_ms = 10 * DAY_MS;
    let toml = format!("[engine]\nhard_max_tracked_users = {cap}\nmax_tracked_tickets = {cap}\n");
    let cfg = Config::from_toml_str(&toml, "flood.toml", std::iter::empty()).expect("valid config");
    let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
    let mut engine = Engine::new(cfg.params().expect("valid config"));
    let mut line = Vec::with_capacity(256);
    let mut applied = 0u64;
    let t0 = Instant::now();
    for u in 0..users {
        let ts = START_MS + (u as i128 * span_ms as i128 / users as i128) as i64;
        let mut offer = |line: &[u8]| match decoder.decode(line, None) {
            Ok(ev) => applied += u64::from(engine.offer(0, &ev, None) == Outcome::Applied),
            Err(_) => panic!("synthetic events decode"),
        };
        line.clear();
        write!(
            line,
            r#"{{"event_id":"s-{u}","type":"signup","ts":{ts},"user_id":"user-{u:08}","channel":"organic"}}"#
        )
        .expect("writing to a Vec");
        offer(&line);
        if u % 10 == 0 {
            line.clear();
            write!(
                line,
                r#"{{"event_id":"t-{u}","type":"support","ts":{ts},"user_id":"user-{:08}","ticket_id":"ticket-{:08}","action":"opened","priority":"normal"}}"#,
                u / 10,
                u / 10
            )
            .expect("writing to a Vec");
            offer(&line);
        }
    }
    engine.finish();
    let took = t0.elapsed();
    let families = black_box(engine.families());
    drop(families);
    println!(
        "memory: flood of {users} user ids and {} opened tickets under caps of {cap}: {applied} applied in {:.1} s; \
         tracked {} users, {} tickets; untracked events: {} (user), {} (ticket); state_bytes {:.1} MiB; \
         peak RSS (VmHWM) {:.1} MiB",
        users.div_ceil(10),
        took.as_secs_f64(),
        engine.tracked_users(),
        engine.tracked_tickets(),
        engine.untracked_events(false),
        engine.untracked_events(true),
        engine.state_bytes() as f64 / 1048576.0,
        proc_status_bytes("VmHWM") as f64 / 1048576.0,
    );
    assert_eq!(engine.tracked_users() as u64, cap);
}

fn main() {
    if std::env::var("CXPULSE_BENCH_FLOOD").is_ok_and(|v| v == "1") {
        flood(10_000_000, 1_000_000);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not:
    // then a small smoke run keeps CI quick (debug build).
    if !std::env::args().any(|a| a == "--bench") {
        run(20_000, 7);
        run(20_000, 365);
        by_part(20_000, &[1, 12]);
        flood(20_000, 2_000);
        return;
    }
    // One run per process: memory freed by a run stays in the allocator's
    // heap (small chunks), and a later run in the same process would reuse
    // it and show too little growth.
    if let Ok(spec) = std::env::var("CXPULSE_BENCH_RUN") {
        let (users, days) = spec.split_once(',').expect("users,days");
        run(users.parse().expect("users"), days.parse().expect("days"));
        return;
    }
    let in_child = |users: u64, days: i64| {
        let exe = std::env::current_exe().expect("own path");
        let ok = std::process::Command::new(exe)
            .arg("--bench")
            .env("CXPULSE_BENCH_RUN", format!("{users},{days}"))
            .status()
            .expect("runs")
            .success();
        assert!(ok, "the run of {users} users over {days} d failed");
    };
    in_child(1_000_000, 7);
    in_child(1_000_000, 365);
    by_part(1_000_000, &[1, 12]);
    if std::env::var("CXPULSE_BENCH_10M").is_ok_and(|v| v == "1") {
        in_child(10_000_000, 7);
        in_child(10_000_000, 365);
    } else {
        println!("memory: 10M users skipped (set CXPULSE_BENCH_10M=1 to run it)");
    }
}
