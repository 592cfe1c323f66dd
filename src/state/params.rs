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
            settings: s,
        }
    }

    /// Bucket index of an event time (floor division, epoch-aligned).
    pub fn bucket_of(&self, ts: Millis) -> i64 {
        ts.div_euclid(self.bucket)
    }

    /// Bucket range `[E - W, E)` of a window, E being a bucket index.
    pub fn range(&self, e: i64, w: &Window) -> (i64, i64) {
        (e - w.len / self.bucket, e)
    }
}

pub fn day_of(ts: Millis) -> i64 {
    ts.div_euclid(DAY_MS)
}
