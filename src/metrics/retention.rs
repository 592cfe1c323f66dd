//! Retention and churn: window-over-window retention, cohort D1/D7/D30,
//! active customers now, churn, reactivation, new customers, churn ratio,
//! post-support churn.

use super::Ctx;
use super::scan::{COHORT_DAYS, UserScan};
use crate::engine::partition::{
    MISC_CHURNED, MISC_REACTIVATED, PS_NEG_CHURNED, PS_NEG_N, PS_POS_CHURNED, PS_POS_N,
};
use crate::export::{Family, Kind};

/// Churn ratio per window (None where absent), for CLV.
pub struct ChurnRatios(pub Vec<Option<f64>>);

pub fn export(ctx: &Ctx<'_>, scan: &UserScan, out: &mut Vec<Family>) -> ChurnRatios {
    let mut retention = Family::new(
        "cxpulse_retention_ratio",
        Kind::Gauge,
        "Of users with an activity in [D-2k, D-k) (D = start of T's UTC day, k = window in days), the share also active in [D-k, D).",
    );
    for (w, win) in ctx.prm.windows.iter().enumerate() {
        if let Some((base, kept)) = scan.retention[w] {
            retention.push_ratio(&[("window", &win.name)], kept, base);
        }
    }
    let mut cohort = Family::new(
        "cxpulse_cohort_retention_ratio",
        Kind::Gauge,
        "Of users whose first signup is in [E-(N+1)d, E-Nd), the share with an activity in [signup+Nd, signup+(N+1)d).",
    );
    for (i, (n, _)) in COHORT_DAYS.iter().enumerate() {
        let (base, kept) = scan.cohorts[i];
        cohort.push_ratio(&[("day", &n.to_string())], kept, base);
    }
    let mut active_now = Family::new(
        "cxpulse_active_customers_now",
        Kind::Gauge,
        "Customers whose last activity is within the churn inactivity period before T.",
    );
    active_now.push(&[], scan.active_now);

    let mut churned = Family::new(
        "cxpulse_churned_customers",
        Kind::Gauge,
        "Churn instants (last activity + inactivity, no activity in between) in the window.",
    );
    let mut reactivated = Family::new(
        "cxpulse_reactivated_customers",
        Kind::Gauge,
        "Activities in the window by customers who had churned before it (one per churn).",
    );
    let mut new = Family::new(
        "cxpulse_new_customers",
        Kind::Gauge,
        "Users whose first activity (deposit or trade) is in the window.",
    );
    let mut ratio = Family::new(
        "cxpulse_churn_ratio",
        Kind::Gauge,
        "Churned / active at the window's start (active now + churned - new - reactivated).",
    );
    let mut post = Family::new(
        "cxpulse_post_support_churn_ratio",
        Kind::Gauge,
        "Of csat ratings in [E-inactivity-W, E-inactivity), negative (<=2) or positive (>=4), the share whose user had no activity in the following inactivity period.",
    );
    let mut ratios = Vec::new();
    let inact_b = ctx.prm.inactivity / ctx.prm.bucket;
    for win in &ctx.prm.windows {
        let (from, to) = ctx.range(win);
        let l = [("window", win.name.as_str())];
        let m = ctx.sum(from, to, |p| &p.misc);
        let w = ctx.prm.windows.iter().position(|x| x == win).unwrap_or(0);
        let c = m[MISC_CHURNED];
        let r = m[MISC_REACTIVATED];
        let n = scan.new_customers[w];
        churned.push(&l, c);
        reactivated.push(&l, r);
        new.push(&l, n);
        let den = scan.active_now + c - n - r;
        ratio.push_ratio(&l, c, den);
        ratios.push((den > 0.0).then(|| c / den));
        let ps = ctx.sum(from - inact_b, to - inact_b, |p| &p.post_support);
        post.push_ratio(
            &[("window", &win.name), ("experience", "negative")],
            ps[PS_NEG_CHURNED],
            ps[PS_NEG_N],
        );
        post.push_ratio(
            &[("window", &win.name), ("experience", "positive")],
            ps[PS_POS_CHURNED],
            ps[PS_POS_N],
        );
    }
    out.extend([
        retention,
        cohort,
        active_now,
        churned,
        reactivated,
        new,
        ratio,
        post,
    ]);
    ChurnRatios(ratios)
}
