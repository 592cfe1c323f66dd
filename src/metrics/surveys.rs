//! Customer-experience surveys: CSAT, NPS, CES and their confidence bounds.
//!
//! Per partition: answers per bucket of the `rated` action.

use super::{Ctx, add_into, nps_interval, wilson};
use crate::event::Ratings;
use crate::export::{Family, Kind};
use crate::state::codec::{R, SnapshotError, W};
use crate::state::params::Params;
use crate::state::ring::{Bucket, Ring};

crate::bucket! {
    /// The survey answers of one bucket.
    pub struct SurveyBucket {
        /// csat answers, and of them 4 or 5.
        pub csat_n: f64,
        pub csat_satisfied: f64,
        /// nps answers by category: 9-10, 7-8, 0-6.
        pub nps_promoters: f64,
        pub nps_passives: f64,
        pub nps_detractors: f64,
        /// ces answers, their sum, and of them 5 to 7.
        pub ces_n: f64,
        pub ces_sum: f64,
        pub ces_easy: f64,
    }
}

/// One partition's survey state.
#[derive(Debug, Default)]
pub struct State {
    pub ring: Ring<SurveyBucket>,
}

impl State {
    /// A `rated` action in bucket `b`.
    #[inline]
    pub fn rated(&mut self, b: i64, r: Ratings) {
        if r.csat.is_none() && r.nps.is_none() && r.ces.is_none() {
            return;
        }
        let s = self.ring.at(b);
        if let Some(c) = r.csat {
            s.csat_n += 1.0;
            if c >= 4 {
                s.csat_satisfied += 1.0;
            }
        }
        if let Some(n) = r.nps {
            match n {
                9..=10 => s.nps_promoters += 1.0,
                7..=8 => s.nps_passives += 1.0,
                _ => s.nps_detractors += 1.0,
            }
        }
        if let Some(c) = r.ces {
            s.ces_n += 1.0;
            s.ces_sum += c as f64;
            if c >= 5 {
                s.ces_easy += 1.0;
            }
        }
    }

    pub fn trim(&mut self, oldest_kept: i64) {
        self.ring.trim(oldest_kept);
    }

    pub fn heap_bytes(&self) -> usize {
        self.ring.heap_bytes()
    }

    pub fn write(&self, w: &mut W) {
        self.ring.write(w);
    }

    pub fn read(r: &mut R<'_>) -> Result<State, SnapshotError> {
        Ok(State {
            ring: Ring::read(r)?,
        })
    }
}

/// Window sums of one partition (or several, merged) at T.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    /// `[window]`.
    pub windows: Vec<SurveyBucket>,
}

impl Partial {
    pub fn empty(ctx: &Ctx<'_>) -> Partial {
        Partial {
            windows: vec![SurveyBucket::default(); ctx.prm.windows.len()],
        }
    }

    pub fn of(ctx: &Ctx<'_>, s: &State) -> Partial {
        let windows = ctx.prm.windows.iter().map(|w| {
            let (from, to) = ctx.range(w);
            s.ring.sum(from, to)
        });
        Partial {
            windows: windows.collect(),
        }
    }

    pub fn merge(&mut self, o: &Partial) {
        add_into(&mut self.windows, &o.windows, Bucket::add);
    }

    pub fn write(&self, w: &mut W) {
        super::write_seq(w, &self.windows, |w, b| b.write(w));
    }

    /// Reads sums of `prm`'s windows.
    pub fn read(r: &mut R<'_>, prm: &Params) -> Result<Partial, SnapshotError> {
        let nw = prm.windows.len();
        Ok(Partial {
            windows: super::read_exact(r, nw, "partial's window count", SurveyBucket::read)?,
        })
    }

    pub fn finish(&self, ctx: &Ctx<'_>, out: &mut Vec<Family>) {
        let g = |name, help| Family::new(name, Kind::Gauge, help);
        let mut csat = g("cxpulse_csat_ratio", "Share of csat answers in {4, 5}.");
        let mut csat_n = g(
            "cxpulse_csat_responses",
            "Number of csat answers in the window.",
        );
        let mut csat_lo = g(
            "cxpulse_csat_ratio_ci_lower",
            "Wilson 95% lower bound of the csat ratio.",
        );
        let mut csat_hi = g(
            "cxpulse_csat_ratio_ci_upper",
            "Wilson 95% upper bound of the csat ratio.",
        );
        let mut nps = g(
            "cxpulse_nps",
            "Net promoter score: 100 * (promoters - detractors) / answers.",
        );
        let mut nps_n = g("cxpulse_nps_responses", "NPS answers by category.");
        let mut nps_lo = g(
            "cxpulse_nps_ci_lower",
            "Adjusted Wald 95% lower bound of NPS.",
        );
        let mut nps_hi = g(
            "cxpulse_nps_ci_upper",
            "Adjusted Wald 95% upper bound of NPS.",
        );
        let mut ces = g(
            "cxpulse_ces_mean",
            "Mean customer effort score (1..7, 7 = easiest).",
        );
        let mut ces_easy = g(
            "cxpulse_ces_easy_ratio",
            "Share of ces answers in {5, 6, 7}.",
        );
        let mut ces_n = g(
            "cxpulse_ces_responses",
            "Number of ces answers in the window.",
        );
        let mut ces_lo = g(
            "cxpulse_ces_easy_ratio_ci_lower",
            "Wilson 95% lower bound of the ces easy ratio.",
        );
        let mut ces_hi = g(
            "cxpulse_ces_easy_ratio_ci_upper",
            "Wilson 95% upper bound of the ces easy ratio.",
        );
        for (win, s) in ctx.prm.windows.iter().zip(&self.windows) {
            let l = [("window", win.name.as_str())];
            csat_n.push(&l, s.csat_n);
            csat.push_ratio(&l, s.csat_satisfied, s.csat_n);
            push_bounds(
                &mut csat_lo,
                &mut csat_hi,
                &l,
                wilson(s.csat_satisfied, s.csat_n),
            );
            let (pr, pa, de) = (s.nps_promoters, s.nps_passives, s.nps_detractors);
            let n = pr + pa + de;
            for (cat, v) in [("promoter", pr), ("passive", pa), ("detractor", de)] {
                nps_n.push(&[("window", &win.name), ("category", cat)], v);
            }
            nps.push_ratio(&l, 100.0 * (pr - de), n);
            push_bounds(&mut nps_lo, &mut nps_hi, &l, nps_interval(pr, de, n));
            ces_n.push(&l, s.ces_n);
            ces.push_ratio(&l, s.ces_sum, s.ces_n);
            ces_easy.push_ratio(&l, s.ces_easy, s.ces_n);
            push_bounds(&mut ces_lo, &mut ces_hi, &l, wilson(s.ces_easy, s.ces_n));
        }
        out.extend([
            csat, csat_n, csat_lo, csat_hi, nps, nps_n, nps_lo, nps_hi, ces, ces_easy, ces_n,
            ces_lo, ces_hi,
        ]);
    }
}

/// Pushes an interval's bounds, or records both as absent (no answers).
fn push_bounds(lo: &mut Family, hi: &mut Family, l: &[(&str, &str)], b: Option<(f64, f64)>) {
    match b {
        Some((low, high)) => {
            lo.push(l, low);
            hi.push(l, high);
        }
        None => {
            lo.push_absent(l);
            hi.push_absent(l);
        }
    }
}

#[cfg(test)]
mod tests;
