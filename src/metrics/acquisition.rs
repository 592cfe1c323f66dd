//! Acquisition: growth, channels (capped), spend, CPA, funnel and
//! conversion, revenue, ARPU, CLV, referral programme.

use super::Ctx;
use super::retention::ChurnRatios;
use super::scan::UserScan;
use crate::engine::params::DAY_MS;
use crate::engine::partition::{CH_REVENUE, CH_SPEND, MISC_INVITES, MISC_REWARDS};
use crate::engine::registry::ChannelId;
use crate::export::{Family, Kind};

pub fn export(
    ctx: &Ctx<'_>,
    scan: &UserScan,
    channels: &[ChannelId],
    churn: &ChurnRatios,
    out: &mut Vec<Family>,
) {
    let g = |name, help| Family::new(name, Kind::Gauge, help);
    let mut signups = g(
        "cxpulse_signups",
        "Distinct users whose first signup is in the window.",
    );
    let mut signups_total = Family::new(
        "cxpulse_signups_total",
        Kind::Counter,
        "Distinct users signed up, all time.",
    );
    let mut users = g(
        "cxpulse_users",
        "Baseline users plus distinct users signed up with ts <= T.",
    );
    let mut growth = g(
        "cxpulse_user_growth_ratio",
        "Signups in the window / cxpulse_users.",
    );
    let mut share = g(
        "cxpulse_channel_share_ratio",
        "Signups of the channel / all signups in the window.",
    );
    let mut spend = g(
        "cxpulse_marketing_spend_usd",
        "Marketing spend in the window; referral rewards count as channel referral.",
    );
    let mut acq = g(
        "cxpulse_acquisitions",
        "Users of the channel whose first deposit is in the window.",
    );
    let mut cpa = g("cxpulse_cpa_usd", "Marketing spend / acquisitions.");
    let mut funnel = g(
        "cxpulse_funnel_users",
        "Signups in the window, and those of them with a first deposit / first trade by T.",
    );
    let mut conv = g(
        "cxpulse_conversion_ratio",
        "funnel_users{stage} / funnel_users{stage=\"signup\"}.",
    );
    let mut revenue = g(
        "cxpulse_revenue_usd",
        "Trade fees in the window, by the trader's channel.",
    );
    let mut active = g(
        "cxpulse_active_customers",
        "Distinct users with a deposit or trade in the window.",
    );
    let mut arpu = g("cxpulse_arpu_usd", "Revenue / active customers.");
    let mut clv = g(
        "cxpulse_clv_usd",
        "30d ARPU * margin / max(30d churn ratio, clv_min_churn).",
    );
    let mut invites = g(
        "cxpulse_referral_invites",
        "Referral invites sent in the window.",
    );
    let mut ref_signups = g(
        "cxpulse_referral_signups",
        "Signups in the window with a referrer_id.",
    );
    let mut ref_share = g(
        "cxpulse_referral_signup_share_ratio",
        "Referral signups / signups.",
    );
    let mut ref_conv = g(
        "cxpulse_referral_invite_conversion_ratio",
        "Referral signups / referral invites.",
    );
    let mut k = g(
        "cxpulse_referral_k_factor",
        "Referral signups / active customers.",
    );
    let mut rewards = g(
        "cxpulse_referral_rewards_usd",
        "Referral rewards paid in the window.",
    );

    let users_now = ctx.prm.baseline_users as f64 + scan.signed_up;
    users.push(&[], users_now);
    for &c in channels {
        signups_total.push(
            &[("channel", ctx.registry.name(c))],
            scan.signups_total[c as usize],
        );
    }
    let month = ctx.prm.windows.iter().position(|w| w.len == 30 * DAY_MS);
    for (w, win) in ctx.prm.windows.iter().enumerate() {
        let (from, to) = ctx.range(win);
        let wl = [("window", win.name.as_str())];
        let all_signups: f64 = scan.signups[w].iter().sum();
        let all_active: f64 = scan.active[w].iter().sum();
        growth.push_ratio(&wl, all_signups, users_now);
        for &c in channels {
            let ci = c as usize;
            let name = ctx.registry.name(c);
            let l = [("window", win.name.as_str()), ("channel", name)];
            let [rev, sp] = ctx.chan_sum(c, from, to);
            let s = scan.signups[w][ci];
            signups.push(&l, s);
            share.push_ratio(&l, s, all_signups);
            spend.push(&l, sp);
            acq.push(&l, scan.acquisitions[w][ci]);
            cpa.push_ratio(&l, sp, scan.acquisitions[w][ci]);
            for (stage, v) in [
                ("signup", s),
                ("first_deposit", scan.funnel_deposit[w][ci]),
                ("first_trade", scan.funnel_trade[w][ci]),
            ] {
                let sl = [
                    ("window", win.name.as_str()),
                    ("channel", name),
                    ("stage", stage),
                ];
                funnel.push(&sl, v);
                if stage != "signup" {
                    conv.push_ratio(&sl, v, s);
                }
            }
            revenue.push(&l, rev);
            active.push(&l, scan.active[w][ci]);
            arpu.push_ratio(&l, rev, scan.active[w][ci]);
            if month == Some(w) {
                if scan.active[w][ci] > 0.0 {
                    let churn30 = churn.0[w].unwrap_or(0.0);
                    let den = churn30.max(ctx.prm.clv_min_churn);
                    let value = rev / scan.active[w][ci] * ctx.prm.margin / den;
                    clv.push(&[("channel", name)], value);
                } else {
                    clv.push_absent(&[("channel", name)]);
                }
            }
        }
        let m = ctx.sum(from, to, |p| &p.misc);
        let rs = scan.referral_signups[w];
        invites.push(&wl, m[MISC_INVITES]);
        ref_signups.push(&wl, rs);
        ref_share.push_ratio(&wl, rs, all_signups);
        ref_conv.push_ratio(&wl, rs, m[MISC_INVITES]);
        k.push_ratio(&wl, rs, all_active);
        rewards.push(&wl, m[MISC_REWARDS]);
    }
    let _ = (CH_REVENUE, CH_SPEND);
    out.extend([
        signups,
        signups_total,
        users,
        growth,
        share,
        spend,
        acq,
        cpa,
        funnel,
        conv,
        revenue,
        active,
        arpu,
        clv,
        invites,
        ref_signups,
        ref_share,
        ref_conv,
        k,
        rewards,
    ]);
}
