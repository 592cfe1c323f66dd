//! Checkpoint cost at 1M users (and 10M with `CXPULSE_BENCH_10M=1`): snapshot
//! time, file size, atomic write time (tmp + fsync + rename), and read +
//! checksum + restore time. Each user gets a signup, a deposit and a trade
//! over 7 days, fed through the engine directly.
//! Then the handover of one input partition holding all of them (issue 10):
//! `Engine::snapshot_partition` time and size, `restore_partition` into
//! another engine, and the size of its fleet partial (`Engine::partials`).
//! Then checkpoints off the loop (issue 12), as `run` writes them: the time
//! [`Engine::freeze`] stops the loop, the time the file takes on another
//! thread while the loop goes on applying events, and the extra memory held
//! meanwhile (the dedup queue is shared too, and encoded by the writer; the
//! second run's freezes follow the first run's deposits, one a millisecond
//! of event time, so 600k ids inside the 10-minute dedup horizon at 10M
//! users): the chunks the loop copied because the frozen view still
//! shared them (after a tenth of the users made a deposit, with nothing
//! written yet), and the peak RSS growth while writing. Twice: streamed
//! into the file through a bounded buffer (`FrozenEngine::write_to`, as
//! `run` does), and encoded into one whole buffer first (as before), whose
//! peak RSS growth includes that full copy.
//! Run: `cargo bench --bench checkpoint` (a 20k-user smoke run under `cargo test`).

mod common;

use std::borrow::Cow;
use std::time::Instant;

use common::proc_status_bytes;
use cxpulse::checkpoint::{self, Checkpoint, CheckpointStore, SavedOffset};
use cxpulse::config::Config;
use cxpulse::engine::Engine;
use cxpulse::event::{Event, EventBody};

const START_MS: i64 = 1_767_225_600_000;
const SPAN_MS: i64 = 7 * 86_400_000;

/// `users` users spread over `partitions` input partitions (by user).
fn build(users: u64, partitions: u64) -> Engine {
    let cfg = Config::default();
    let mut engine = Engine::new(cfg.params().expect("valid config"));
    let events = users * 3;
    let channels = ["organic", "paid_search", "social", "affiliate"];
    for k in 0..events {
        let (u, step) = (k / 3, k % 3);
        let ts = START_MS + (k as i128 * SPAN_MS as i128 / events as i128) as i64;
        let body = match step {
            0 => EventBody::Signup {
                channel: Some(Cow::Borrowed(channels[(u % 4) as usize])),
                campaign: None,
                referrer_id: None,
                country: None,
            },
            1 => EventBody::Deposit { amount_usd: 100.0 },
            _ => EventBody::Trade {
                notional_usd: 1000.0,
                fee_usd: 1.0,
            },
        };
        let ev = Event {
            event_id: Cow::Owned(format!("ev-{k}")),
            ts,
            user_id: Some(Cow::Owned(format!("user-{u:07}"))),
            body,
        };
        engine.offer((u % partitions) as u32, &ev, None);
    }
    engine
}

/// Event `k` after the build: a deposit by a user picked pseudo-randomly
/// among `users`, a little after the built span.
fn later_deposit(users: u64, k: u64) -> (u32, Event<'static>) {
    let u = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) % users;
    let ev = Event {
        event_id: Cow::Owned(format!("later-{k}")),
        ts: START_MS + SPAN_MS + k as i64,
        user_id: Some(Cow::Owned(format!("user-{u:07}"))),
        body: EventBody::Deposit { amount_usd: 10.0 },
    };
    ((u % 4) as u32, ev)
}

/// How a frozen view becomes a checkpoint file.
#[derive(Clone, Copy, PartialEq)]
enum Write {
    /// Encoded into one whole buffer, then written (as main did before the
    /// snapshot was streamed): a full second copy while it is written.
    Whole,
    /// Encoded straight into the temporary file through a bounded buffer
    /// (`CheckpointStore::write_streamed` + `FrozenEngine::write_to`, as `run` does).
    Streamed,
}

/// Freezes, lets the loop go on, writes the checkpoint file on another
/// thread while the loop goes on again: see the module doc.
fn off_the_loop(engine: &mut Engine, users: u64, how: Write, k: &mut u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = CheckpointStore::new(dir.path(), 1);
    let offsets = offsets();
    // The first freeze after a long stretch of applying (here: the build,
    // or the previous run's deposits) finds the chunk tables' reference
    // counts gone cold: the pause `run` sees at each checkpoint interval.
    let t = Instant::now();
    drop(engine.freeze());
    let cold = t.elapsed().as_secs_f64() * 1e3;
    let want = xxhash_rust::xxh3::xxh3_64(&checkpoint::encode(&Checkpoint {
        offsets: offsets.clone(),
        engine: engine.snapshot(),
    }));
    let state = engine.state_bytes();
    let ids = engine.dedup_ids_held();
    // Five freezes let go at once: one pause figure is easily a scheduling
    // hiccup on a shared machine. The first of them follows the whole
    // snapshot taken above for the hash (the state read end to end, a full
    // buffer allocated and freed), so it is often the slowest.
    let mut again: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let f = engine.freeze();
            let took = t.elapsed();
            drop(f);
            took.as_secs_f64() * 1e3
        })
        .collect();
    let in_order = again
        .iter()
        .map(|ms| format!("{ms:.3}"))
        .collect::<Vec<_>>()
        .join(", ");
    again.sort_by(f64::total_cmp);
    let t = Instant::now();
    let frozen = engine.freeze();
    let freeze = t.elapsed();
    let own = frozen.held_bytes();
    let mut part_freeze = std::time::Duration::ZERO;
    for p in 0..4 {
        let t = Instant::now();
        let f = engine.freeze_partition(p).expect("held");
        part_freeze = part_freeze.max(t.elapsed());
        drop(f);
    }
    // The loop goes on: a tenth of the users make a deposit.
    let stop = *k + users / 10;
    while *k < stop {
        let (p, ev) = later_deposit(users, *k);
        engine.offer(p, &ev, None);
        *k += 1;
    }
    let copied = frozen.held_bytes();
    // Written on another thread while the loop goes on again.
    let rss0 = proc_status_bytes("VmRSS");
    let t = Instant::now();
    let writer = std::thread::spawn(move || {
        let written = match how {
            Write::Whole => {
                let mut bytes = Vec::new();
                frozen
                    .write_to(&mut bytes)
                    .expect("a Vec takes every write");
                let cp = Checkpoint {
                    offsets,
                    engine: bytes,
                };
                store.write(&cp)
            }
            Write::Streamed => store.write_streamed(&offsets, |out| frozen.write_to(out)),
        }
        .expect("written");
        (written, t.elapsed())
    });
    let (mut peak, mut during) = (rss0, 0u64);
    while !writer.is_finished() {
        for _ in 0..1000 {
            let (p, ev) = later_deposit(users, *k);
            engine.offer(p, &ev, None);
            *k += 1;
            during += 1;
        }
        peak = peak.max(proc_status_bytes("VmRSS"));
    }
    let (written, took) = writer.join().expect("writes");
    let file = std::fs::read(&written.path).expect("readable");
    assert_eq!(
        xxhash_rust::xxh3::xxh3_64(&file),
        want,
        "the file holds the snapshot at the freeze"
    );
    drop(file);
    drop(dir);
    let mb = |b: f64| b / 1e6;
    println!(
        "snapshot off the loop, {}: {users} users: freeze {:.3} ms (the loop's pause; after a long stretch of applying {cold:.3} ms; 5 more: min {:.3}, median {:.3}, max {:.3} ms, in order {in_order}; largest freeze_partition of 4: {:.3} ms), \
         the view's own bytes at the freeze {:.2} MB (small parts encoded, chunk tables; {ids} dedup ids held, {:.1} MB encoded by the writer); \
         encode+write {:.0} ms on another thread while the loop applied {during} events; \
         chunks copied after {} deposits: {:.1} MB ({:.1}% of the {:.1} MB state); \
         peak RSS growth while writing {:.1} MB ({:.1}% of the state; the file is {:.1} MB)",
        match how {
            Write::Whole => "whole buffer (before)",
            Write::Streamed => "streamed (after)",
        },
        freeze.as_secs_f64() * 1e3,
        again[0],
        again[2],
        again[4],
        part_freeze.as_secs_f64() * 1e3,
        mb(own as f64),
        mb((ids * 24) as f64),
        took.as_secs_f64() * 1e3,
        users / 10,
        mb(copied as f64),
        100.0 * copied as f64 / state as f64,
        mb(state as f64),
        mb(peak.saturating_sub(rss0) as f64),
        100.0 * peak.saturating_sub(rss0) as f64 / state as f64,
        mb(written.bytes as f64),
    );
}

fn offsets() -> Vec<SavedOffset> {
    (0..4)
        .map(|p| SavedOffset {
            topic: "events".into(),
            partition: p,
            next_offset: 1_000_000,
        })
        .collect()
}

fn run(users: u64) {
    let cfg = Config::default();
    let mut engine = build(users, 4);
    let t = Instant::now();
    let bytes = engine.snapshot();
    let snap = t.elapsed();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = CheckpointStore::new(dir.path(), 2);
    let cp = Checkpoint {
        offsets: offsets(),
        engine: bytes,
    };
    let t = Instant::now();
    let written = store.write(&cp).expect("write");
    let write = t.elapsed();
    let t = Instant::now();
    let loaded = store.load_latest().checkpoint.expect("loads").1;
    let read = t.elapsed();
    let t = Instant::now();
    let restored =
        Engine::restore(cfg.params().expect("valid config"), &loaded.engine).expect("restores");
    let restore = t.elapsed();
    assert_eq!(restored.tracked_users(), engine.tracked_users());
    println!(
        "checkpoint: {users} users: snapshot {:.0} ms, file {:.1} MB ({:.1} B/user), write {:.0} ms, read+verify {:.0} ms, restore {:.0} ms",
        snap.as_secs_f64() * 1e3,
        written.bytes as f64 / 1e6,
        written.bytes as f64 / users as f64,
        write.as_secs_f64() * 1e3,
        read.as_secs_f64() * 1e3,
        restore.as_secs_f64() * 1e3,
    );
    drop(restored);
    drop(loaded);
    drop(cp);
    drop(dir);
    // Streamed first: it does not find the heap the other left behind.
    let mut k = 0;
    off_the_loop(&mut engine, users, Write::Streamed, &mut k);
    off_the_loop(&mut engine, users, Write::Whole, &mut k);
}

/// One partition holding `users` users moves to another engine.
fn handover(users: u64) {
    let cfg = Config::default();
    let mut engine = build(users, 1);
    let t = Instant::now();
    let bytes = engine.snapshot_partition(0).expect("held");
    let snap = t.elapsed();
    let mut other = Engine::new(cfg.params().expect("valid config"));
    let t = Instant::now();
    other.restore_partition(0, &bytes).expect("restores");
    let restore = t.elapsed();
    assert_eq!(other.tracked_users(), engine.tracked_users());
    drop(other);
    let size = bytes.len();
    let partial = engine.partials().remove(0).1;
    let (whole, streamed) = partition_save_memory(&mut engine, &bytes);
    drop(bytes);
    println!(
        "partition handover: {users} users in one partition: snapshot_partition {:.0} ms, {:.1} MB ({:.1} B/user), restore_partition {:.0} ms; its fleet partial {} bytes; \
         a state-store save of the frozen partition holds, besides the state (peak RSS growth while encoding into chunks of 512 KB, no broker): \
         encoded whole first (before) {:.1} MB, streamed (after) {:.1} MB",
        snap.as_secs_f64() * 1e3,
        size as f64 / 1e6,
        size as f64 / users as f64,
        restore.as_secs_f64() * 1e3,
        partial.len(),
        whole as f64 / 1e6,
        streamed as f64 / 1e6,
    );
}

/// Peak RSS growth while partition 0, frozen, is encoded into 512 KB
/// chunks with nowhere to send them (what a state-store save holds apart
/// from the records in flight, at most 8 MB): encoded whole then cut (as
/// before), and streamed through `FrozenPartition::write_to` (as now).
/// Both are checked against `want`, the partition's snapshot bytes.
fn partition_save_memory(engine: &mut Engine, want: &[u8]) -> (u64, u64) {
    struct Chunks {
        data: Vec<u8>,
        hash: xxhash_rust::xxh3::Xxh3,
    }
    impl std::io::Write for Chunks {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(524_288 - self.data.len());
            self.data.extend_from_slice(&buf[..n]);
            if self.data.len() == 524_288 {
                self.hash.update(&self.data);
                self.data.clear();
            }
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let want = xxhash_rust::xxh3::xxh3_64(want);
    let mut measure = |streamed: bool| {
        let view = engine.freeze_partition(0).expect("held");
        // Resets VmHWM (the peak RSS) to the RSS now.
        std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
        let rss0 = proc_status_bytes("VmRSS");
        let mut out = Chunks {
            data: Vec::with_capacity(524_288),
            hash: xxhash_rust::xxh3::Xxh3::new(),
        };
        if streamed {
            view.write_to(&mut out).expect("encodes");
        } else {
            let bytes = view.encode();
            for c in bytes.chunks(524_288) {
                std::io::Write::write_all(&mut out, c).expect("takes");
            }
        }
        let peak = proc_status_bytes("VmHWM");
        out.hash.update(&out.data);
        assert_eq!(out.hash.digest(), want, "the partition's bytes");
        peak.saturating_sub(rss0)
    };
    (measure(false), measure(true))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        run(20_000);
        handover(20_000);
        return;
    }
    run(1_000_000);
    handover(1_000_000);
    if std::env::var("CXPULSE_BENCH_10M").is_ok_and(|v| v == "1") {
        run(10_000_000);
    } else {
        println!("checkpoint: 10M users skipped (set CXPULSE_BENCH_10M=1 to run it)");
    }
}
