//! The traffic level and its shape over time: steering the customers'
//! activity toward the wanted lines per day, the signup rate, and Poisson
//! processes thinned by the diurnal and weekly pattern.

use super::Generator;
use crate::r#gen::model::{self, DAY, MIN};

impl Generator {
    /// Keeps lines per day at the target, feed-forward: the intensity that
    /// gives the target from the active customers' summed rates (see
    /// `set_intensity`), so it follows churn and growth without lag. There
    /// is deliberately no feedback from the lines emitted: the response to
    /// the intensity lags by up to days (casual customers' next sessions),
    /// and feedback through such a lag oscillates.
    pub(super) fn steer(&mut self) {
        while self.next_steer <= self.now {
            self.next_steer += self.steer_every;
        }
        self.set_intensity();
    }

    pub(super) fn set_intensity(&mut self) {
        let mean_weight = if self.flat {
            1.0
        } else {
            model::MEAN_ACTIVITY_WEIGHT
        };
        let from_signups = self.signups_per_day(self.now) * model::LINES_PER_SIGNUP;
        let wanted = (self.lines_per_day - from_signups).max(0.1 * self.lines_per_day);
        // What an activity leads to (tickets, invitations, surveys) follows
        // minutes to days later: right after the start, only part of it has
        // begun, roughly log-uniformly in the time since (1 minute to 2 days).
        let minutes = ((self.now - self.start) as f64 / MIN as f64).max(1.0);
        let started = (minutes.ln() / (2.0 * 24.0 * 60.0f64).ln()).min(1.0);
        let per_activity = 1.0 + (model::LINES_PER_ACTIVITY - 1.0) * started;
        let per_unit = self.active_rate.max(1) as f64 / 1e6 * per_activity * mean_weight;
        self.intensity = (wanted / per_unit).clamp(1e-3, 1e5);
    }

    pub(super) fn signups_per_day(&self, at: i64) -> f64 {
        let days = (at - self.start) as f64 / DAY as f64;
        model::SIGNUPS_PER_LINE
            * self.lines_per_day
            * (1.0 + model::SIGNUP_GROWTH_PER_DAY * days.max(0.0))
    }

    pub(super) fn next_arrival(&mut self, from: i64) -> i64 {
        let rate = self.signups_per_day(from);
        self.modulated(from, rate)
    }

    /// The next event of a Poisson process of `rate_per_day` (on average)
    /// shaped by the diurnal and weekly pattern (thinning).
    pub(super) fn modulated(&mut self, from: i64, rate_per_day: f64) -> i64 {
        let peak = self.peak();
        let mean = DAY as f64 / (rate_per_day * peak);
        let mut t = from;
        loop {
            t += (self.rng.exp(mean) as i64).max(1);
            if self.flat || self.rng.f64() * peak < self.weight(t) {
                return t;
            }
        }
    }

    pub(super) fn weight(&self, t: i64) -> f64 {
        if self.flat {
            1.0
        } else {
            model::activity_weight(t)
        }
    }

    pub(super) fn peak(&self) -> f64 {
        if self.flat { 1.0 } else { model::ACTIVITY_PEAK }
    }

    pub(super) fn log_delay(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.log_uniform(lo as f64, hi as f64) as i64
    }
}
