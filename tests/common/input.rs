//! Generated input: a small deterministic random generator, and lines of
//! `cxpulse gen`'s model.

/// SplitMix64: a small deterministic generator, so a failing run replays.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `events` generated lines (seed 42, 3 days of event time) as (key, JSON line).
pub fn generated(events: usize) -> Vec<(Option<String>, String)> {
    generated_with(42, events as u64, 3)
}

/// `events` lines of `cxpulse gen --seed SEED --days DAYS` as (key, JSON line).
pub fn generated_with(seed: u64, events: u64, days: u32) -> Vec<(Option<String>, String)> {
    cxpulse::r#gen::Generator::new(&cxpulse::r#gen::GenConfig {
        seed,
        events,
        days,
        ..cxpulse::r#gen::GenConfig::default()
    })
    .map(|l| (l.key, l.payload))
    .collect()
}
