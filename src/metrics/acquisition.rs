//! Acquisition: growth, channels (capped), spend, CPA, funnel and
//! conversion, revenue, ARPU, CLV, referral programme.
//!
//! Per partition: revenue and spend per channel and bucket, referral invites
//! and rewards per bucket; the per-user counts come from [`super::scan`].

use super::retention::ChurnRatios;
use super::scan::UserScan;
use super::{Column, Ctx, add_cols, add_into, fold_cols, read_exact, write_seq};
use crate::export::{Family, Kind};
use crate::state::codec::{R, SnapshotError, W};
use crate::state::params::DAY_MS;
use crate::state::params::Params;
use crate::state::registry::ChannelId;
use crate::state::ring::{Bucket, Ring};

crate::bucket! {
    /// One channel's sums in one bucket.
    pub struct ChannelBucket {
        /// Trade fees, by the trader's channel.
        pub revenue: f64,
        /// Marketing spend; referral rewards count as channel `referral`.
        pub spend: f64,
    }
}

crate::bucket! {
    /// The referral programme's sums in one bucket.
    pub struct ReferralBucket {
        pub invites: f64,
        pub rewards: f64,
    }
}

/// One partition's acquisition state.
#[derive(Debug, Default)]
pub struct State {
    /// Per channel id.
    pub chan: Vec<Ring<ChannelBucket>>,
    pub referral: Ring<ReferralBucket>,
}

impl State {
    #[inline(always)]
    fn chan_at(&mut self, c: ChannelId, b: i64) -> &mut ChannelBucket {
        let i = c as usize;
        if self.chan.len() <= i {
            self.add_channels(i + 1);
        }
        self.chan[i].at(b)
    }

    /// Rings for channel ids up to `n` (a new channel: rare, out of line).
    #[cold]
    #[inline(never)]
    fn add_channels(&mut self, n: usize) {
        self.chan.resize_with(n, Ring::default);
    }

    /// A trade with fee `fee` in bucket `b` by a user of `channel`.
    #[inline]
    pub fn trade(&mut self, channel: ChannelId, b: i64, fee: f64) {
        self.chan_at(channel, b).revenue += fee;
    }

    #[inline]
    pub fn invite(&mut self, b: i64) {
        self.referral.at(b).invites += 1.0;
    }

    /// A referral reward: a reward, and spend of channel `referral`.
    #[inline]
    pub fn reward(&mut self, b: i64, usd: f64, referral_channel: ChannelId) {
        self.referral.at(b).rewards += usd;
        self.chan_at(referral_channel, b).spend += usd;
    }

    #[inline]
    pub fn spend(&mut self, channel: ChannelId, b: i64, usd: f64) {
        self.chan_at(channel, b).spend += usd;
    }

    pub fn trim(&mut self, oldest_kept: i64) {
        for r in &mut self.chan {
            r.trim(oldest_kept);
        }
        self.referral.trim(oldest_kept);
    }

    pub fn heap_bytes(&self) -> usize {
        self.chan.iter().map(Ring::heap_bytes).sum::<usize>() + self.referral.heap_bytes()
    }

    pub fn write(&self, w: &mut W) {
        w.len(self.chan.len());
        for r in &self.chan {
            r.write(w);
        }
        self.referral.write(w);
    }

    pub fn read(r: &mut R<'_>) -> Result<State, SnapshotError> {
        let n = r.len(8)?;
        let mut chan = Vec::with_capacity(n);
        for _ in 0..n {
            chan.push(Ring::read(r)?);
        }
        Ok(State {
            chan,
            referral: Ring::read(r)?,
        })
    }
}

/// Window sums of one partition (or several, merged) at T.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    /// `[window][channel]`.
    pub chan: Vec<Vec<ChannelBucket>>,
    /// `[window]`.
    pub referral: Vec<ReferralBucket>,
}

impl Partial {
    /// Nothing, with `nc` channel columns.
    pub fn empty(ctx: &Ctx<'_>, nc: usize) -> Partial {
        let nw = ctx.prm.windows.len();
        Partial {
            chan: vec![vec![ChannelBucket::default(); nc]; nw],
            referral: vec![ReferralBucket::default(); nw],
        }
    }

    /// One partition's sums, its channel ids being below `nc`.
    pub fn of(ctx: &Ctx<'_>, s: &State, nc: usize) -> Partial {
        let mut p = Partial::empty(ctx, nc);
        for (w, win) in ctx.prm.windows.iter().enumerate() {
            let (from, to) = ctx.range(win);
            for (c, r) in p.chan[w].iter_mut().zip(&s.chan) {
                *c = r.sum(from, to);
            }
            p.referral[w] = s.referral.sum(from, to);
        }
        p
    }

    /// Adds `o`, whose channel column `j` is column `map[j]` here (of `cols`).
    pub fn merge(&mut self, o: &Partial, map: &[Column], cols: usize) {
        add_into(&mut self.chan, &o.chan, |a, x| {
            add_cols(a, x, map, cols, Bucket::add)
        });
        add_into(&mut self.referral, &o.referral, Bucket::add);
    }

    /// Adds the `folded` channel columns into `other` and clears them.
    pub fn fold_into_other(&mut self, folded: &[Column]) {
        for row in &mut self.chan {
            fold_cols(row, folded, Bucket::add);
        }
    }

    pub fn write(&self, w: &mut W) {
        write_seq(w, &self.chan, |w, row| write_seq(w, row, |w, b| b.write(w)));
        write_seq(w, &self.referral, |w, b| b.write(w));
    }

    /// Reads sums of `prm`'s windows with `nc` channel columns.
    pub fn read(r: &mut R<'_>, prm: &Params, nc: usize) -> Result<Partial, SnapshotError> {
        let nw = prm.windows.len();
        let chan = read_exact(r, nw, "partial's window count", |r| {
            read_exact(r, nc, "partial's row length", ChannelBucket::read)
        })?;
        let referral = read_exact(r, nw, "partial's window count", ReferralBucket::read)?;
        Ok(Partial { chan, referral })
    }

    pub fn finish(
        &self,
        ctx: &Ctx<'_>,
        scan: &UserScan,
        channels: &[(Column, &str)],
        baseline_users: f64,
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

        let users_now = baseline_users + scan.signed_up;
        users.push(&[], users_now);
        for &(c, name) in channels {
            signups_total.push(&[("channel", name)], scan.signups_total[c]);
        }
        let month = ctx.prm.windows.iter().position(|w| w.len == 30 * DAY_MS);
        for (w, win) in ctx.prm.windows.iter().enumerate() {
            let wl = [("window", win.name.as_str())];
            let all_signups: f64 = scan.signups[w].iter().sum();
            let all_active: f64 = scan.active[w].iter().sum();
            growth.push_ratio(&wl, all_signups, users_now);
            for &(ci, name) in channels {
                let l = [("window", win.name.as_str()), ("channel", name)];
                let ChannelBucket {
                    revenue: rev,
                    spend: sp,
                } = self.chan[w][ci];
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
            let m = self.referral[w];
            let rs = scan.referral_signups[w];
            invites.push(&wl, m.invites);
            ref_signups.push(&wl, rs);
            ref_share.push_ratio(&wl, rs, all_signups);
            ref_conv.push_ratio(&wl, rs, m.invites);
            k.push_ratio(&wl, rs, all_active);
            rewards.push(&wl, m.rewards);
        }
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
}

#[cfg(test)]
mod tests;
