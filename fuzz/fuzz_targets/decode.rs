//! Canonical decoding and the engine: any bytes are either decoded or
//! rejected with a reason; a decoded event is accepted by the engine with
//! one outcome; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = cxpulse::config::Config::default();
    let decoder = cxpulse::event::Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, true);
    let mut engine = cxpulse::engine::Engine::new(cfg.params().expect("default config is valid"));
    for line in data.split(|b| *b == b'\n') {
        match decoder.decode(line, Some(1_767_225_600_000)) {
            Ok(ev) => {
                engine.offer(0, &ev, None);
            }
            Err(f) => {
                assert!(!f.error.reason().is_empty());
                engine.record_invalid(0, f.event_type);
            }
        }
    }
    engine.finish();
    let _ = engine.families();
});
