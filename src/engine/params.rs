//! Engine parameters derived once from the validated config.

use crate::config::{Config, Window};
use crate::event::{Millis, Priority};

pub const DAY_MS: Millis = 86_400_000;

/// Everything the engine needs from the config, in milliseconds.
#[derive(Clone, Debug)]
pub struct Params {
    pub bucket: Millis,
    pub windows: Vec<Window>,
    pub lateness: Millis,
    pub dedup_horizon: Millis,
    pub max_future_skew: Millis,
    pub inactivity: Millis,
    /// First-response and resolution targets, indexed by `Priority::index()`.
    pub fr_target: [Millis; 4],
    pub res_target: [Millis; 4],
    pub at_risk_share: f64,
    pub baseline_users: u64,
    pub margin: f64,
    pub clv_min_churn: f64,
    /// Histogram bucket bounds (seconds) of the support time histograms.
    pub hist_bounds: Vec<f64>,
    /// How many buckets of history the window rings keep (the longest window, plus slack).
    pub keep_buckets: i64,
    /// How many buckets the post-support ring keeps (it is read `inactivity` in the past).
    pub keep_post_support_buckets: i64,
    /// The longest window, in ms.
    pub max_window: Millis,
    /// Users and tickets with no event for this long (before the applied
    /// point) are past every horizon: see [`Params::from_config`].
    pub compact_after: Millis,
    /// 0 = no cap.
    pub max_tracked_users: u64,
}

impl Params {
    pub fn from_config(cfg: &Config) -> Params {
        let windows = cfg.windows().unwrap_or_default();
        let bucket = cfg.engine.bucket.ms();
        let max_window = windows.iter().map(|w| w.len).max().unwrap_or(bucket);
        let inactivity = cfg.churn.inactivity.ms();
        let mut fr_target = [0; 4];
        let mut res_target = [0; 4];
        for p in Priority::ALL {
            let t = cfg.sla.targets.get(p);
            fr_target[p.index()] = t.first_response.ms();
            res_target[p.index()] = t.resolution.ms();
        }
        let mut hist_bounds: Vec<f64> = vec![
            30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0,
            172800.0, 345600.0, 604800.0,
        ];
        for t in fr_target.iter().chain(res_target.iter()) {
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
        let longest_target = fr_target
            .iter()
            .chain(res_target.iter())
            .copied()
            .max()
            .unwrap_or(0);
        let compact_after =
            inactivity.max(longest_target) + (2 * max_window).max(31 * DAY_MS) + 2 * DAY_MS;
        Params {
            bucket,
            windows,
            lateness: cfg.engine.allowed_lateness.ms(),
            dedup_horizon: cfg.engine.dedup_horizon.ms(),
            max_future_skew: cfg.engine.max_future_skew.ms(),
            inactivity,
            fr_target,
            res_target,
            at_risk_share: cfg.sla.at_risk_share,
            baseline_users: cfg.acquisition.baseline_users,
            margin: cfg.acquisition.margin,
            clv_min_churn: cfg.acquisition.clv_min_churn,
            hist_bounds,
            keep_buckets: span / bucket + 1,
            keep_post_support_buckets: (span + inactivity) / bucket + 1,
            max_window,
            compact_after,
            max_tracked_users: cfg.engine.max_tracked_users,
        }
    }

    /// Bucket index of an event time (floor division, epoch-aligned).
    pub fn bucket_of(&self, ts: Millis) -> i64 {
        ts.div_euclid(self.bucket)
    }
}

pub fn day_of(ts: Millis) -> i64 {
    ts.div_euclid(DAY_MS)
}
