//! Random mutations of a real checkpoint file, the checksum recomputed each
//! time so that only the engine's validation stands between the bytes and
//! the engine: bit flips, truncations, splices, inserted and deleted
//! chunks, and words overwritten with edge values (0, NEVER, -1, 2^31, ...).
//! Every mutated file is either refused with an error or restored; nothing
//! panics, and a restored engine survives offers, the clock moving ten days
//! (every timer firing), export and a new snapshot. (The hand-crafted cases,
//! one per kind of bad reference, are `engine::tests::snapshot_files`.)

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use common::{SplitMix as Rng, generated_with};
use cxpulse::checkpoint::{self, Checkpoint, SavedOffset};
use cxpulse::config::Config;
use cxpulse::engine::Engine;
use cxpulse::event::Decoder;
use cxpulse::export::to_prometheus_text;

const CFG: &str = "[engine]\nwindows = [\"1h\", \"24h\", \"7d\"]\n[churn]\ninactivity = \"3d\"\n";
const DAY: i64 = 86_400_000;
const MUTATIONS: usize = 20_000;

fn config() -> Config {
    Config::from_toml_str(CFG, "test.toml", std::iter::empty()).expect("valid config")
}

fn engine() -> Engine {
    Engine::new(config().params().expect("valid config"))
}

/// Offers JSON lines, on three partitions by key (as Kafka would).
fn feed(eng: &mut Engine, decoder: &Decoder, lines: &[(Option<String>, String)]) {
    for (key, line) in lines {
        let key = key.as_deref().unwrap_or("");
        let partition = (key.len() % 3) as u32;
        match decoder.decode(line.as_bytes(), None) {
            Ok(ev) => {
                eng.offer(partition, &ev, None);
            }
            Err(f) => eng.record_invalid(partition, f.event_type),
        }
    }
}

const EDGE_WORDS: [u64; 9] = [
    0,
    1,
    u64::MAX,
    i64::MIN as u64,
    i64::MAX as u64,
    1 << 31,
    1 << 32,
    (1 << 53) + 1,
    0x7FF8_0000_0000_0000, // NaN
];

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut m = base.to_vec();
    let at = |rng: &mut Rng, m: &[u8]| rng.below(m.len().max(1));
    match rng.below(7) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = at(rng, &m);
                m[i] ^= 1 << rng.below(8);
            }
        }
        1 => m.truncate(rng.below(m.len() + 1)),
        2 => {
            // Overwrite with a chunk copied from elsewhere in the file.
            let (a, b) = (at(rng, &m), at(rng, &m));
            let n = (1 + rng.below(64)).min(m.len() - a).min(m.len() - b);
            let chunk = m[a..a + n].to_vec();
            m[b..b + n].copy_from_slice(&chunk);
        }
        3 => {
            let (a, b) = (at(rng, &m), at(rng, &m));
            let chunk = m[a..(a + 1 + rng.below(32)).min(m.len())].to_vec();
            m.splice(b..b, chunk);
        }
        4 => {
            let a = at(rng, &m);
            let b = (a + 1 + rng.below(32)).min(m.len());
            m.drain(a..b);
        }
        5 => {
            let w = EDGE_WORDS[rng.below(EDGE_WORDS.len())].to_le_bytes();
            let n = [1, 2, 4, 8][rng.below(4)];
            let i = at(rng, &m).min(m.len().saturating_sub(n));
            m[i..i + n].copy_from_slice(&w[..n]);
        }
        _ => {
            let i = at(rng, &m);
            m[i] = [0, 1, 2, 3, 0x7F, 0x80, 0xFE, 0xFF][rng.below(8)];
        }
    }
    m
}

/// What became of one mutated file.
enum Fate {
    Refused(String),
    Restored { resnapshot_restores: bool },
}

#[test]
fn mutated_checkpoint_files_are_refused_or_restored_and_never_panic() {
    let cfg = config();
    let prm = cfg.params().expect("valid config");
    let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
    let lines = generated_with(5, 8_200, 80);
    let (first, rest) = lines.split_at(8_000);
    let mut eng = engine();
    feed(&mut eng, &decoder, first);
    assert!(eng.compacted_users() > 0 && eng.tracked_tickets() > 0);
    assert!(eng.pending_events() > 0 && eng.forgotten_tickets() > 0);
    let good = eng.snapshot();
    let offsets = vec![SavedOffset {
        topic: "events".into(),
        partition: 0,
        next_offset: 8_000,
    }];
    // Panics are caught and counted; the default hook would print each.
    let panics: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut v) = seen.lock() {
            v.push(info.to_string());
        }
    }));
    let mut rng = Rng(2026);
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let (mut restored, mut resnapshots) = (0usize, 0usize);
    for i in 0..MUTATIONS {
        let bytes = mutate(&mut rng, &good);
        let file = checkpoint::encode(&Checkpoint {
            offsets: offsets.clone(),
            engine: bytes,
        });
        let cp = checkpoint::decode(&file).expect("the checksum is recomputed");
        let fate = catch_unwind(AssertUnwindSafe(|| {
            match Engine::restore(prm.clone(), &cp.engine) {
                Err(e) => Fate::Refused(e.to_string()),
                Ok(mut e) => {
                    feed(&mut e, &decoder, rest);
                    let t = e.clock().unwrap_or(0);
                    e.advance_to(t + 10 * DAY);
                    let text = to_prometheus_text(&e.families());
                    assert!(!text.is_empty());
                    let again = e.snapshot();
                    e.finish();
                    let _ = e.drain_alerts();
                    Fate::Restored {
                        resnapshot_restores: Engine::restore(prm.clone(), &again).is_ok(),
                    }
                }
            }
        }));
        match fate {
            Ok(Fate::Refused(e)) => {
                // Group by the kind of error: its text up to the first
                // number, after the partition it is in.
                let e = e
                    .split_once(": ")
                    .filter(|_| e.starts_with("in the state"))
                    .map_or(e.as_str(), |(_, rest)| rest);
                let kind: String = e.chars().take_while(|c| !c.is_ascii_digit()).collect();
                *refused.entry(kind).or_default() += 1;
            }
            Ok(Fate::Restored {
                resnapshot_restores,
            }) => {
                restored += 1;
                resnapshots += resnapshot_restores as usize;
            }
            Err(_) => eprintln!("mutation {i} panicked"),
        }
    }
    std::panic::set_hook(default_hook);
    let panics = panics.lock().map(|v| v.clone()).unwrap_or_default();
    let n_refused: usize = refused.values().sum();
    eprintln!(
        "{MUTATIONS} mutations of a {} byte snapshot: {n_refused} refused, {restored} restored \
         ({resnapshots} of whose new snapshots restore again), {} panics",
        good.len(),
        panics.len()
    );
    for (kind, n) in &refused {
        eprintln!("  {n:6}  {kind}");
    }
    assert!(
        panics.is_empty(),
        "{} panics, first: {}",
        panics.len(),
        panics[0]
    );
    assert_eq!(n_refused + restored, MUTATIONS);
    // Both outcomes are common: the mutations reach the validation, and
    // harmless changes (a sum, a flag within its range) are restored.
    assert!(n_refused > MUTATIONS / 10 && restored > MUTATIONS / 10);
    // A state that was accepted snapshots into bytes that are accepted.
    assert_eq!(resnapshots, restored);
}
