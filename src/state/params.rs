//! Engine parameters: what the engine and the metric families need from the
//! configuration, in milliseconds, plus what follows from it. Built once
//! from a validated config (`Config::params`); every value is given, none
//! is defaulted here.

use crate::event::Millis;

pub const DAY_MS: Millis = 86_400_000;

/// A validated window: its label and length.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub name: String,
    pub len: Millis,
}

/// The configured values the parameters are derived from (all required).
#[derive(Clone, Debug)]
pub struct Settings {
    pub bucket: Millis,
    pub windows: Vec<Window>,
    pub lateness: Millis,
    pub dedup_horizon: Millis,
    pub max_future_skew: Millis,
    /// In `run`, how far a partition's clock and T may run ahead of the wall clock.
    pub clock_tolerance: Millis,
    pub inactivity: Millis,
    /// First-response and resolution targets, indexed by `Priority::index()`.
    pub fr_target: [Millis; 4],
    pub res_target: [Millis; 4],
    pub at_risk_share: f64,
    pub baseline_users: u64,
    pub margin: f64,
    pub clv_min_churn: f64,
    /// 0 = no cap.
    pub max_tracked_users: u64,
    /// Hard caps (0 = none): new ids beyond them are not tracked.
    pub hard_max_tracked_users: u64,
    pub max_tracked_tickets: u64,
    /// Open tickets with no action for this long are forgotten; 0 = never.
    pub open_ticket_horizon: Millis,
    pub max_channels: usize,
    /// `engine.channels`: values that always get a label, first.
    pub channels: Vec<String>,
}

/// Everything the engine needs, in milliseconds: the [`Settings`] (read
/// through `Deref`, e.g. `prm.bucket`) and what follows from them.
#[derive(Clone, Debug)]
pub struct Params {
    pub settings: Settings,
    /// Histogram bucket bounds (seconds) of the support time histograms.
    pub hist_bounds: Vec<f64>,
    /// How many buckets of history the window rings keep (the longest window, plus slack).
    pub keep_buckets: i64,
    /// How many buckets the post-support ring keeps (it is read `inactivity` in the past).
    pub keep_post_support_buckets: i64,
    /// The longest window (at least one bucket), in ms.
    pub max_window: Millis,
    /// Users and tickets with no event for this long (before the applied
    /// point) are past every horizon: see [`Params::new`].
    pub compact_after: Millis,
    /// The bucket as a divisor by multiply and shift ([`Params::bucket_of`]).
    bucket_div: FloorDiv,
}

/// Floor division of an `i64` by a fixed positive divisor `d`: for a
/// non-negative dividend, one 64x64->128-bit multiply by a precomputed
/// reciprocal and a shift instead of a 64-bit division (tens of cycles,
/// and [`Params::bucket_of`] runs several times per applied event);
/// negative dividends (times before 1970, `NEVER`) divide.
///
/// The reciprocal (Granlund and Montgomery, "Division by invariant integers
/// using multiplication", 1994, theorem 4.2, for 63-bit dividends): with
/// `l = ceil(log2 d)` and `m = ceil(2^(63+l) / d)`, `m * d - 2^(63+l)` is
/// below `d <= 2^l`, so `floor(n / d) = floor(n * m / 2^(63+l))` for every
/// `0 <= n < 2^63`; and `m < 2^64` (as `2^(l-1) < d`), so it is a `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloorDiv {
    d: i64,
    /// 0: no reciprocal (`d <= 1`), divide.
    m: u64,
    /// `l - 1` (`63 + l` less the 64 bits of the product's high half), in `0..=62`.
    shift: u32,
}

impl FloorDiv {
    /// The divisor `d` (positive: a validated bucket; a non-positive one is
    /// refused by the config, and kept here as a plain division, as is 1,
    /// whose `l` is 0).
    pub fn new(d: i64) -> FloorDiv {
        if d <= 1 {
            return FloorDiv { d, m: 0, shift: 0 };
        }
        let l = (d as u64).next_power_of_two().trailing_zeros();
        let m = (1u128 << (63 + l)).div_ceil(d as u128);
        debug_assert!(m <= u64::MAX as u128);
        FloorDiv {
            d,
            m: m as u64,
            shift: l - 1,
        }
    }

    /// `n.div_euclid(d)` (the floor, for a positive `d`).
    #[inline(always)]
    pub fn of(&self, n: i64) -> i64 {
        if n >= 0 && self.m != 0 {
            let high = ((n as u128 * self.m as u128) >> 64) as u64;
            (high >> self.shift) as i64
        } else {
            n.div_euclid(self.d)
        }
    }
}

impl std::ops::Deref for Params {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        &self.settings
    }
}

impl Params {
    pub fn new(s: Settings) -> Params {
        let bucket = s.bucket;
        // Windows are positive multiples of the bucket: at least one bucket long.
        let max_window = s.windows.iter().map(|w| w.len).fold(bucket, Millis::max);
        let mut hist_bounds: Vec<f64> = vec![
            30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0,
            172800.0, 345600.0, 604800.0,
        ];
        for t in s.fr_target.iter().chain(s.res_target.iter()) {
            hist_bounds.push(*t as f64 / 1000.0);
        }
        hist_bounds.sort_by(|a, b| a.total_cmp(b));
        hist_bounds.dedup();
        // One day of slack covers the lateness and the current bucket.
        let span = max_window + DAY_MS;
        // Past every horizon: churn instants and post-support checks
        // (inactivity after the last event), SLA deadlines (a target after the
        // last action, pauses included), cohorts (31 d) and whole-day
        // retention (twice the window) are all inside this, with two days of
        // slack for day rounding, bucket alignment and the lateness.
        let longest_target = s
            .fr_target
            .iter()
            .chain(s.res_target.iter())
            .fold(0, |a, &b| a.max(b));
        let compact_after =
            s.inactivity.max(longest_target) + (2 * max_window).max(31 * DAY_MS) + 2 * DAY_MS;
        Params {
            hist_bounds,
            keep_buckets: span / bucket + 1,
            keep_post_support_buckets: (span + s.inactivity) / bucket + 1,
            max_window,
            compact_after,
            bucket_div: FloorDiv::new(bucket),
            settings: s,
        }
    }

    /// Bucket index of an event time (floor division, epoch-aligned).
    #[inline(always)]
    pub fn bucket_of(&self, ts: Millis) -> i64 {
        self.bucket_div.of(ts)
    }

    /// Bucket range `[E - W, E)` of a window, E being a bucket index.
    pub fn range(&self, e: i64, w: &Window) -> (i64, i64) {
        (e - w.len / self.bucket, e)
    }
}

/// UTC day index of an event time (floor division). A time at or after
/// the epoch (every valid event time) takes an unsigned division by the
/// constant: a multiply and a shift, half the instructions of the signed one.
#[inline(always)]
pub fn day_of(ts: Millis) -> i64 {
    if ts >= 0 {
        (ts as u64 / DAY_MS as u64) as i64
    } else {
        ts.div_euclid(DAY_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::users::NEVER;

    /// A small deterministic generator (xorshift64*), for dividends.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn floor_div_is_div_euclid_at_edges_and_at_random() {
        let divisors = [
            1,
            2,
            3,
            7,
            1000,
            60_000,
            59_999,
            60_001,
            3_600_000,
            DAY_MS,
            7 * DAY_MS,
            (1 << 31) + 1,
            1 << 40,
            (1 << 62) + 1,
            i64::MAX - 1,
            i64::MAX,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for d in divisors {
            let f = FloorDiv::new(d);
            let mut dividends = vec![
                0,
                1,
                -1,
                i64::MAX,
                i64::MAX - 1,
                i64::MIN,
                i64::MIN + 1,
                NEVER,
                crate::event::time::MAX_RFC3339_MS,
            ];
            // Around bucket boundaries: k*d - 1, k*d, k*d + 1, for small
            // and for the largest k, on both sides of zero.
            for k in [1i64, 2, 3, 1000, i64::MAX / d, i64::MAX / d - 1] {
                if let Some(kd) = k.checked_mul(d) {
                    for x in [kd - 1, kd, kd.saturating_add(1), -kd, -kd - 1, 1 - kd] {
                        dividends.push(x);
                    }
                }
            }
            for _ in 0..20_000 {
                let r = xorshift(&mut state);
                // Full range, the event-time range, and near the divisor.
                dividends.push(r as i64);
                dividends.push((r >> 21) as i64);
                dividends.push((r % (d as u64).saturating_mul(4)) as i64);
            }
            for n in dividends {
                assert_eq!(f.of(n), n.div_euclid(d), "{n} / {d}");
            }
        }
    }

    #[test]
    fn day_of_known_times_and_edges() {
        // 2026-01-01T00:00:00Z is 1_767_225_600_000 ms: day 20_454.
        assert_eq!(day_of(1_767_225_600_000), 20_454);
        assert_eq!(day_of(1_767_225_600_000 - 1), 20_453);
        assert_eq!(day_of(1_767_225_600_000 + DAY_MS - 1), 20_454);
        assert_eq!(
            (day_of(0), day_of(-1), day_of(-DAY_MS), day_of(-DAY_MS - 1)),
            (0, -1, -1, -2)
        );
        let mut state = 0x9e37_79b9_7f4a_7c15;
        let mut ts = vec![
            i64::MAX,
            i64::MIN,
            NEVER,
            crate::event::time::MAX_RFC3339_MS,
        ];
        for _ in 0..20_000 {
            let r = xorshift(&mut state);
            ts.extend([
                r as i64,
                (r >> 21) as i64,
                (r >> 21) as i64 / DAY_MS * DAY_MS,
            ]);
        }
        for t in ts {
            assert_eq!(day_of(t), t.div_euclid(DAY_MS), "{t}");
        }
    }

    #[test]
    fn a_one_minute_bucket_of_known_times() {
        let f = FloorDiv::new(60_000);
        assert_eq!(f.of(0), 0);
        assert_eq!(f.of(59_999), 0);
        assert_eq!(f.of(60_000), 1);
        assert_eq!(f.of(-1), -1);
        assert_eq!(f.of(-60_000), -1);
        assert_eq!(f.of(-60_001), -2);
        // 2026-01-01T00:00:00Z is 1_767_225_600_000 ms: minute 29_453_760.
        assert_eq!(f.of(1_767_225_600_000), 29_453_760);
        assert_eq!(f.of(1_767_225_659_999), 29_453_760);
    }
}
