//! Throughput of the pure core on a generated mixed stream.
//!
//! - `parse_floor`: `serde_json::from_slice` of every line into a plain typed
//!   struct of borrowed fields (the canonical fields, no validation): the
//!   floor any JSON decoder of these bytes has to pay.
//! - `decode_only`: [`Decoder::decode`] (canonical fast path, full validation).
//! - `decode_apply`: decode + [`Engine::offer`] of every line into a fresh
//!   engine (created outside the timed part), then [`Engine::finish`].
//!
//! After the criterion group, one summary line with events/s of each (own
//! `Instant` timing, best of interleaved full passes) and the ratio
//! decode_apply / parse_floor, then the same on a warm engine (see the end of
//! `main`). Run: `cargo bench --bench core`. Knobs: `CXPULSE_BENCH_DAYS`
//! (event-time span of the stream, default 60), `CXPULSE_BENCH_QUICK=1` (no
//! criterion group, summary lines only), `CXPULSE_BENCH_PASSES` (default 5),
//! `CXPULSE_BENCH_ONLY` (one part alone, for a profiler: `parse_floor`,
//! `decode_only`, `decode_apply` on the fresh stream; `warm_setup`,
//! `warm_apply`, `warm_floor` for the warm line, see [`profile_warm`]).
//! Instructions per event of the warm line's timed part, e.g.:
//! `CXPULSE_BENCH_ONLY=warm_apply valgrind --tool=callgrind
//! --collect-atstart=no --toggle-collect='*decode_apply*' <bench binary>`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use cxpulse::config::Config;
use cxpulse::engine::Engine;
use cxpulse::event::Decoder;
use cxpulse::r#gen::{GenConfig, Generator};
use serde::Deserialize;

const LINES: u64 = 200_000;

/// `ts`: RFC 3339 text or integer epoch milliseconds.
#[derive(Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Ts<'a> {
    Text(&'a str),
    Millis(i64),
}

/// The canonical fields, typed but not validated.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Typed<'a> {
    event_id: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(borrow)]
    ts: Ts<'a>,
    user_id: Option<&'a str>,
    channel: Option<&'a str>,
    referrer_id: Option<&'a str>,
    amount_usd: Option<f64>,
    notional_usd: Option<f64>,
    fee_usd: Option<f64>,
    action: Option<&'a str>,
    reward_usd: Option<f64>,
    ticket_id: Option<&'a str>,
    priority: Option<&'a str>,
    csat: Option<f64>,
    ces: Option<f64>,
    nps: Option<f64>,
}

/// Days of event time of the [`LINES`]-line stream: the generator's default
/// (60), or `CXPULSE_BENCH_DAYS` (fewer days: denser traffic, fewer window
/// buckets per event).
fn stream_days() -> u32 {
    std::env::var("CXPULSE_BENCH_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(GenConfig::default().days)
}

/// `events` generated lines (seed 1) over `days` days of event time.
fn lines(events: u64, days: u32) -> Vec<Vec<u8>> {
    let cfg = GenConfig {
        seed: 1,
        events,
        days,
        ..GenConfig::default()
    };
    Generator::new(&cfg)
        .map(|l| l.payload.into_bytes())
        .collect()
}

#[inline(never)]
fn parse_floor(lines: &[Vec<u8>]) -> usize {
    let mut ok = 0;
    for l in lines {
        if let Ok(t) = serde_json::from_slice::<Typed<'_>>(l) {
            black_box(&t);
            ok += 1;
        }
    }
    ok
}

fn decode_only(decoder: &Decoder, lines: &[Vec<u8>]) -> usize {
    let mut ok = 0;
    for l in lines {
        if let Ok(ev) = decoder.decode(l, None) {
            black_box(&ev);
            ok += 1;
        }
    }
    ok
}

#[inline(never)]
fn decode_apply(decoder: &Decoder, engine: &mut Engine, lines: &[Vec<u8>]) {
    feed(decoder, engine, lines);
    engine.finish();
}

/// Checks the stream once and prints its shape.
fn prologue(cfg: &Config, decoder: &Decoder, lines: &[Vec<u8>]) {
    let days = stream_days();
    let n = lines.len();
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let typed_ok = parse_floor(lines);
    let decoded_ok = decode_only(decoder, lines);
    let mut engine = Engine::new(cfg.params().expect("valid config"));
    decode_apply(decoder, &mut engine, lines);
    println!(
        "core: {n} generated lines (seed 1, {days} days), mean {:.1} bytes/line; typed parse ok {typed_ok}, decode ok {decoded_ok}; tracked users {}, state {} bytes",
        bytes as f64 / n as f64,
        engine.tracked_users(),
        engine.state_bytes(),
    );
}

/// One part alone, for a profiler (see `CXPULSE_BENCH_ONLY` in `main`).
fn profile_only(only: &str, cfg: &Config, decoder: &Decoder, lines: &[Vec<u8>]) {
    let passes: usize = std::env::var("CXPULSE_BENCH_PASSES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5);
    let t = Instant::now();
    for _ in 0..passes {
        match only {
            "parse_floor" => drop(black_box(parse_floor(lines))),
            "decode_only" => drop(black_box(decode_only(decoder, lines))),
            "decode_apply" => {
                let mut engine = Engine::new(cfg.params().expect("valid config"));
                decode_apply(decoder, &mut engine, lines);
                drop(black_box(engine));
            }
            other => panic!(
                "CXPULSE_BENCH_ONLY={other}: parse_floor, decode_only, decode_apply, warm_setup, warm_apply or warm_floor"
            ),
        }
    }
    let per = t.elapsed().as_secs_f64() / passes as f64;
    println!(
        "core: {only} alone, {passes} passes: {:.0} ev/s",
        lines.len() as f64 / per
    );
}

/// The warm-engine part alone, for a profiler: `warm_setup` feeds only the
/// untimed first half of the warm stream (see the end of `main`),
/// `warm_apply` that and then [`decode_apply`] of the second half,
/// `warm_floor` that and then [`parse_floor`] of the second half. The
/// difference of the two (e.g. instructions counted by cachegrind) is the
/// cost of the warm line's timed part; under callgrind,
/// `--toggle-collect='*decode_apply*'` counts it directly.
fn profile_warm(only: &str, cfg: &Config, decoder: &Decoder) {
    let both = lines(2 * LINES, 2 * stream_days());
    let (warmup, timed) = both.split_at(both.len() / 2);
    let mut engine = Engine::new(cfg.params().expect("valid config"));
    feed(decoder, &mut engine, warmup);
    let t = Instant::now();
    match only {
        "warm_apply" => decode_apply(decoder, &mut engine, timed),
        "warm_floor" => drop(black_box(parse_floor(timed))),
        "warm_setup" => {}
        other => panic!("CXPULSE_BENCH_ONLY={other}: warm_setup, warm_apply or warm_floor"),
    }
    println!(
        "core: {only} alone: lines {}..{} in {:?}",
        warmup.len(),
        both.len(),
        t.elapsed()
    );
    drop(black_box(engine));
}

/// Decodes `lines` and offers them to `engine` (partition 0), without
/// finishing: the untimed half of the warm line, and [`decode_apply`]'s loop.
#[inline(never)]
fn feed(decoder: &Decoder, engine: &mut Engine, lines: &[Vec<u8>]) {
    for l in lines {
        match decoder.decode(l, None) {
            Ok(ev) => {
                black_box(engine.offer(0, &ev, None));
            }
            Err(f) => engine.record_invalid(0, f.event_type),
        }
    }
}

fn main() {
    let cfg = Config::default();
    let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
    let lines = lines(LINES, stream_days());
    let n = lines.len();
    // `--profile-time` (under a profiler): only the selected criterion runs.
    let profiling = std::env::args().any(|a| a == "--profile-time");
    // `CXPULSE_BENCH_ONLY=parse_floor|decode_only|decode_apply|warm_setup|warm_apply|warm_floor`: that part
    // alone, `CXPULSE_BENCH_PASSES` times, nothing else (for perf/callgrind).
    if let Ok(only) = std::env::var("CXPULSE_BENCH_ONLY") {
        if only.starts_with("warm_") {
            drop(lines);
            profile_warm(&only, &cfg, &decoder);
        } else {
            profile_only(&only, &cfg, &decoder, &lines);
        }
        return;
    }
    if !profiling {
        prologue(&cfg, &decoder, &lines);
    }

    // `CXPULSE_BENCH_QUICK=1`: only the summary line (for quick A/B comparisons).
    let quick = std::env::var("CXPULSE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(2))
        .configure_from_args();
    if !quick {
        let mut g = c.benchmark_group("core");
        g.throughput(Throughput::Elements(n as u64));
        // Each iteration is a whole pass (~0.1 s): equal-sized samples.
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("parse_floor", |b| b.iter(|| parse_floor(black_box(&lines))));
        g.bench_function("decode_only", |b| {
            b.iter(|| decode_only(&decoder, black_box(&lines)))
        });
        g.bench_function("decode_apply", |b| {
            b.iter_batched(
                || Engine::new(cfg.params().expect("valid config")),
                |mut engine| {
                    decode_apply(&decoder, &mut engine, black_box(&lines));
                    engine
                },
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }
    c.final_summary();
    if profiling {
        return;
    }

    let passes: usize = std::env::var("CXPULSE_BENCH_PASSES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5);
    // Rounds of one pass each, interleaved, so that all three see the same
    // machine load (this is a shared box); the best pass of each counts.
    let mut best = [Duration::MAX; 3];
    for _ in 0..passes {
        let t = Instant::now();
        black_box(parse_floor(&lines));
        best[0] = best[0].min(t.elapsed());
        let t = Instant::now();
        black_box(decode_only(&decoder, &lines));
        best[1] = best[1].min(t.elapsed());
        let mut engine = Engine::new(cfg.params().expect("valid config"));
        let t = Instant::now();
        decode_apply(&decoder, &mut engine, &lines);
        best[2] = best[2].min(t.elapsed());
        drop(black_box(engine));
    }
    let [floor, dec, apply] = best.map(|d| n as f64 / d.as_secs_f64());
    println!(
        "core: parse_floor {floor:.0} ev/s, decode_only {dec:.0} ev/s, decode_apply {apply:.0} ev/s, ratio Z/X = {:.2}",
        apply / floor
    );

    // The same, on an engine already warm: twice the lines over twice the days
    // (same density), the first half fed untimed, the second half timed. A
    // fresh engine pays once for growing its window rings (one slot per
    // bucket over the longest window) and the first touch of that memory.
    drop(lines);
    let both = self::lines(2 * LINES, 2 * stream_days());
    let (warmup, timed) = both.split_at(both.len() / 2);
    let mut best = [Duration::MAX; 2];
    for _ in 0..passes {
        let t = Instant::now();
        black_box(parse_floor(timed));
        best[0] = best[0].min(t.elapsed());
        let mut engine = Engine::new(cfg.params().expect("valid config"));
        feed(&decoder, &mut engine, warmup);
        let t = Instant::now();
        decode_apply(&decoder, &mut engine, timed);
        best[1] = best[1].min(t.elapsed());
        drop(black_box(engine));
    }
    let [floor, apply] = best.map(|d| timed.len() as f64 / d.as_secs_f64());
    println!(
        "core: warm engine (lines {}..{} of a {}-line stream over {} days): parse_floor {floor:.0} ev/s, decode_apply {apply:.0} ev/s, ratio = {:.2}",
        warmup.len(),
        both.len(),
        both.len(),
        2 * stream_days(),
        apply / floor
    );
}
