//! Customer-experience surveys: CSAT, NPS, CES and their confidence bounds.

use super::{Ctx, nps_interval, wilson};
use crate::engine::partition::{
    SV_CES_EASY, SV_CES_N, SV_CES_SUM, SV_CSAT_N, SV_CSAT_SAT, SV_NPS_DETRACTOR, SV_NPS_PASSIVE,
    SV_NPS_PROMOTER,
};
use crate::export::{Family, Kind};

pub fn export(ctx: &Ctx<'_>, out: &mut Vec<Family>) {
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
    for win in &ctx.prm.windows {
        let (from, to) = ctx.range(win);
        let s = ctx.sum(from, to, |p| &p.surveys);
        let l = [("window", win.name.as_str())];
        csat_n.push(&l, s[SV_CSAT_N]);
        csat.push_ratio(&l, s[SV_CSAT_SAT], s[SV_CSAT_N]);
        push_bounds(
            &mut csat_lo,
            &mut csat_hi,
            &l,
            wilson(s[SV_CSAT_SAT], s[SV_CSAT_N]),
        );
        let (pr, pa, de) = (s[SV_NPS_PROMOTER], s[SV_NPS_PASSIVE], s[SV_NPS_DETRACTOR]);
        let n = pr + pa + de;
        for (cat, v) in [("promoter", pr), ("passive", pa), ("detractor", de)] {
            nps_n.push(&[("window", &win.name), ("category", cat)], v);
        }
        nps.push_ratio(&l, 100.0 * (pr - de), n);
        push_bounds(&mut nps_lo, &mut nps_hi, &l, nps_interval(pr, de, n));
        ces_n.push(&l, s[SV_CES_N]);
        ces.push_ratio(&l, s[SV_CES_SUM], s[SV_CES_N]);
        ces_easy.push_ratio(&l, s[SV_CES_EASY], s[SV_CES_N]);
        push_bounds(
            &mut ces_lo,
            &mut ces_hi,
            &l,
            wilson(s[SV_CES_EASY], s[SV_CES_N]),
        );
    }
    out.extend([
        csat, csat_n, csat_lo, csat_hi, nps, nps_n, nps_lo, nps_hi, ces, ces_easy, ces_n, ces_lo,
        ces_hi,
    ]);
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
