//! 120k random and mutated messages through decode + engine: nothing panics,
//! every message gets exactly one outcome, and every exported value is finite.

mod common;

use common::{SplitMix as Rng, generated_with};
use cxpulse::config::Config;
use cxpulse::engine::{Engine, Outcome};
use cxpulse::event::Decoder;

const TOKENS: &[&str] = &[
    "null",
    "-1",
    "1e400",
    "\"\"",
    "{}",
    "[]",
    "\"x\"",
    "true",
    "9",
    "0",
    "-0.0",
    "\"2026-13-01T00:00:00Z\"",
    "\"\\u0000\"",
    "18446744073709551616",
    "\"opened\"",
    "\"urgent\"",
    "\"rated\"",
];

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut m = base.to_vec();
    match rng.below(7) {
        0 => {
            // Flip a few bits.
            for _ in 0..1 + rng.below(4) {
                if !m.is_empty() {
                    let i = rng.below(m.len());
                    m[i] ^= 1 << rng.below(8);
                }
            }
        }
        1 => m.truncate(rng.below(m.len() + 1)),
        2 => {
            // Replace a JSON value after a colon with a hostile token.
            let colons: Vec<usize> = m
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b':')
                .map(|(i, _)| i)
                .collect();
            if !colons.is_empty() {
                let at = colons[rng.below(colons.len())] + 1;
                let end = m[at..]
                    .iter()
                    .position(|b| *b == b',' || *b == b'}')
                    .map_or(m.len(), |p| at + p);
                let tok = TOKENS[rng.below(TOKENS.len())].as_bytes();
                m.splice(at..end, tok.iter().copied());
            }
        }
        3 => {
            // Random bytes.
            let n = rng.below(300);
            m = (0..n).map(|_| rng.next() as u8).collect();
        }
        // Duplicate a chunk (repeated keys, nested garbage).
        4 if m.len() > 2 => {
            let a = rng.below(m.len());
            let b = (a + rng.below(40)).min(m.len());
            let chunk = m[a..b].to_vec();
            let at = rng.below(m.len());
            m.splice(at..at, chunk);
        }
        5 => m = vec![b'x'; 70_000 + rng.below(1000)],
        _ => {} // unchanged: a duplicate of a valid line
    }
    m
}

#[test]
fn mutated_messages_never_panic_and_each_gets_one_outcome() {
    let cfg = Config::default();
    let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, true);
    let mut engine = Engine::new(cfg.params().expect("valid config"));
    let base: Vec<String> = generated_with(3, 20_000, 20)
        .into_iter()
        .map(|(_, payload)| payload)
        .collect();
    let mut rng = Rng(42);
    let total = 120_000u64;
    let mut decoded_ok = 0u64;
    for i in 0..total {
        let src = &base[(i as usize) % base.len()];
        let msg = mutate(&mut rng, src.as_bytes());
        let partition = (i % 4) as u32;
        match decoder.decode(&msg, Some(1_767_225_600_000 + i as i64)) {
            Ok(ev) => {
                decoded_ok += 1;
                engine.offer(partition, &ev, None);
            }
            Err(f) => engine.record_invalid(partition, f.event_type),
        }
        if i % 30_000 == 0 {
            // Exports mid-stream must not panic either.
            let _ = engine.families();
        }
    }
    engine.finish();
    let c = engine.event_counts();
    let counted: u64 = Outcome::ALL.iter().map(|o| c.total(*o)).sum();
    assert_eq!(counted, total, "every message counted exactly once");
    assert!(
        decoded_ok > 10_000 && decoded_ok < total,
        "a real mix of valid and invalid: {decoded_ok}"
    );
    assert!(c.total(Outcome::Invalid) > 10_000);
    for f in engine.families() {
        for s in &f.samples {
            assert!(
                s.value.is_finite(),
                "{} {:?} = {}",
                s.name,
                s.labels,
                s.value
            );
        }
    }
}
