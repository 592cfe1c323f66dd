//! Schema mapping (the shipped Segment and CloudEvents configs): any bytes are
//! decoded or rejected with a reason, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn decoder(toml: &str) -> cxpulse::event::Decoder {
    let cfg = cxpulse::config::Config::from_toml_str(toml, "fuzz", std::iter::empty())
        .expect("shipped mapping config is valid");
    cxpulse::event::Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, true)
}

fuzz_target!(|data: &[u8]| {
    let segment = decoder(include_str!("../../config/segment.toml"));
    let cloudevents = decoder(include_str!("../../config/cloudevents.toml"));
    for d in [&segment, &cloudevents] {
        if let Err(f) = d.decode(data, Some(1_767_225_600_000)) {
            assert!(!f.error.reason().is_empty());
        }
    }
});
