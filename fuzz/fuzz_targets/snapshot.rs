//! The snapshot reader (what a checkpoint file's checksum does not protect
//! from): any bytes are refused with an error or restored into an engine
//! that then takes events, moves its clock (every timer fires), exports and
//! snapshots again; nothing panics.
//!
//! Input: first byte even, the rest is snapshot bytes as they are; odd, the
//! rest is edits of a real snapshot of a busy engine (users, compacted
//! users, tickets, timers, pending events, three partitions), so the fuzzer
//! starts deep: each edit is a 4-byte offset (modulo the length), a length
//! byte and that many bytes written there.
#![no_main]

use std::sync::OnceLock;

use cxpulse::config::Config;
use cxpulse::engine::Engine;
use cxpulse::event::Decoder;
use libfuzzer_sys::fuzz_target;

const CFG: &str = "[engine]\nwindows = [\"1h\", \"24h\", \"7d\"]\n[churn]\ninactivity = \"3d\"\n";

struct Base {
    cfg: Config,
    snapshot: Vec<u8>,
    /// Lines offered to a restored engine.
    more: Vec<(String, String)>,
}

fn feed(e: &mut Engine, d: &Decoder, lines: &[(String, String)]) {
    for (key, line) in lines {
        match d.decode(line.as_bytes(), None) {
            Ok(ev) => {
                e.offer((key.len() % 3) as u32, &ev, None);
            }
            Err(f) => e.record_invalid((key.len() % 3) as u32, f.event_type),
        }
    }
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let cfg = Config::from_toml_str(CFG, "fuzz", std::iter::empty()).expect("valid");
        let d = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
        let lines: Vec<(String, String)> = cxpulse::r#gen::Generator::new(&cxpulse::r#gen::GenConfig {
            seed: 5,
            events: 3_100,
            days: 80,
            ..Default::default()
        })
        .map(|l| (l.key.unwrap_or_default(), l.payload))
        .collect();
        let mut e = Engine::new(cfg.params().expect("valid"));
        feed(&mut e, &d, &lines[..3_000]);
        Base {
            snapshot: e.snapshot(),
            more: lines[3_000..].to_vec(),
            cfg,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let b = base();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut s = b.snapshot.clone();
        let mut r = rest;
        while r.len() >= 5 {
            let at = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize % s.len();
            let n = (r[4] as usize).min(r.len() - 5).min(s.len() - at);
            s[at..at + n].copy_from_slice(&r[5..5 + n]);
            r = &r[5 + n..];
        }
        s
    };
    let prm = b.cfg.params().expect("valid");
    if let Ok(mut e) = Engine::restore(prm.clone(), &bytes) {
        let d = Decoder::new(&b.cfg.mapping, b.cfg.engine.max_message_bytes, false);
        feed(&mut e, &d, &b.more);
        let t = e.clock().unwrap_or(0);
        e.advance_to(t + 10 * 86_400_000);
        let _ = cxpulse::export::to_prometheus_text(&e.families());
        let again = e.snapshot();
        e.finish();
        // Not asserted to restore: a state at the very edge of the time
        // limits (a clock of 2^52 ms) can be moved past them by the ten days.
        let _ = Engine::restore(prm, &again);
    }
});
