//! One pass over every user, computing the per-user counts of the
//! acquisition and retention families for every window at once.

use super::Ctx;
use crate::engine::params::{DAY_MS, day_of};
use crate::engine::registry::UNKNOWN;
use crate::engine::users::{
    C_SIGNUP, F_COHORT_1, F_COHORT_7, F_COHORT_30, F_HAS_SIGNUP, F_REFERRED, NO_BUCKET, User,
};

/// Cohort days of `cxpulse_cohort_retention_ratio`.
pub const COHORT_DAYS: [(i64, u8); 3] = [(1, F_COHORT_1), (7, F_COHORT_7), (30, F_COHORT_30)];

#[derive(Default)]
pub struct UserScan {
    /// `[window][channel]`.
    pub signups: Vec<Vec<f64>>,
    pub funnel_deposit: Vec<Vec<f64>>,
    pub funnel_trade: Vec<Vec<f64>>,
    pub acquisitions: Vec<Vec<f64>>,
    pub active: Vec<Vec<f64>>,
    /// `[window]`.
    pub referral_signups: Vec<f64>,
    pub new_customers: Vec<f64>,
    /// `[window]`: (users active in the earlier period, of them active in the later); None
    /// for windows that are not whole days (or longer than 31 days).
    pub retention: Vec<Option<(f64, f64)>>,
    /// `[channel]`: users signed up, all time.
    pub signups_total: Vec<f64>,
    pub signed_up: f64,
    pub active_now: f64,
    /// Per cohort day: (users in the cohort, of them active on day N).
    pub cohorts: [(f64, f64); 3],
    pub unknown_present: bool,
}

impl UserScan {
    pub fn run(ctx: &Ctx<'_>) -> UserScan {
        let nw = ctx.prm.windows.len();
        let nc = ctx.registry.len_with_specials();
        let grid = || vec![vec![0.0; nc]; nw];
        let mut s = UserScan {
            signups: grid(),
            funnel_deposit: grid(),
            funnel_trade: grid(),
            acquisitions: grid(),
            active: grid(),
            referral_signups: vec![0.0; nw],
            new_customers: vec![0.0; nw],
            retention: vec![None; nw],
            signups_total: vec![0.0; nc],
            ..Default::default()
        };
        let bucket = ctx.prm.bucket;
        // Window bucket ranges, as u32 bucket indices (users store u32 buckets).
        let ranges: Vec<(i64, i64)> = ctx.prm.windows.iter().map(|w| ctx.range(w)).collect();
        let today = day_of(ctx.t);
        let ret_days: Vec<Option<i64>> = ctx
            .prm
            .windows
            .iter()
            .map(|w| (w.len % DAY_MS == 0 && w.len / DAY_MS <= 31).then_some(w.len / DAY_MS))
            .collect();
        for (i, r) in s.retention.iter_mut().enumerate() {
            if ret_days[i].is_some() {
                *r = Some((0.0, 0.0));
            }
        }
        let e_ms = ctx.e_ms();
        let now_from = ctx.t - ctx.prm.inactivity;
        for part in &ctx.parts {
            // Compacted users are past every window: they only count in the
            // all-time signup totals (as do forgotten ones).
            for c in part.users.cold_users() {
                if c.channel == UNKNOWN {
                    s.unknown_present = true;
                }
                if c.flags & C_SIGNUP != 0 {
                    s.signed_up += 1.0;
                    s.signups_total[c.channel as usize] += 1.0;
                }
            }
            for (ch, &n) in part.users.forgotten_signups.iter().enumerate() {
                s.signed_up += n as f64;
                s.signups_total[ch] += n as f64;
            }
            s.unknown_present |= part.users.forgotten_unknown;
            for u in part.users.hot() {
                let c = u.channel as usize;
                if u.channel == UNKNOWN {
                    s.unknown_present = true;
                }
                let signup_b = if u.has(F_HAS_SIGNUP) {
                    s.signed_up += 1.0;
                    s.signups_total[c] += 1.0;
                    Some(u.signup.div_euclid(bucket))
                } else {
                    None
                };
                let last_before_e = last_activity_bucket_before(u, bucket, ctx.e);
                let first_act = u.first_activity();
                for (w, &(from, to)) in ranges.iter().enumerate() {
                    let inw = |b: i64| b >= from && b < to;
                    if let Some(sb) = signup_b
                        && inw(sb)
                    {
                        s.signups[w][c] += 1.0;
                        if u.has(F_REFERRED) {
                            s.referral_signups[w] += 1.0;
                        }
                        if u.first_deposit != NO_BUCKET {
                            s.funnel_deposit[w][c] += 1.0;
                        }
                        if u.first_trade != NO_BUCKET {
                            s.funnel_trade[w][c] += 1.0;
                        }
                    }
                    if u.first_deposit != NO_BUCKET && inw(u.first_deposit as i64) {
                        s.acquisitions[w][c] += 1.0;
                    }
                    if let Some(lb) = last_before_e
                        && lb >= from
                    {
                        s.active[w][c] += 1.0;
                    }
                    if first_act != NO_BUCKET && inw(first_act as i64) {
                        s.new_customers[w] += 1.0;
                    }
                    if let (Some(k), Some((base, kept))) = (ret_days[w], s.retention[w].as_mut())
                        && u.active_in_days(today - 2 * k, today - k)
                    {
                        *base += 1.0;
                        if u.active_in_days(today - k, today) {
                            *kept += 1.0;
                        }
                    }
                }
                if u.is_customer() && u.last_activity >= now_from {
                    s.active_now += 1.0;
                }
                if u.has(F_HAS_SIGNUP) {
                    for (i, (n, flag)) in COHORT_DAYS.iter().enumerate() {
                        let from = e_ms - (n + 1) * DAY_MS;
                        let to = e_ms - n * DAY_MS;
                        if u.signup >= from && u.signup < to {
                            s.cohorts[i].0 += 1.0;
                            if u.has(*flag) {
                                s.cohorts[i].1 += 1.0;
                            }
                        }
                    }
                }
            }
        }
        s
    }
}

/// The bucket of the user's latest activity before bucket `e`, if any.
fn last_activity_bucket_before(u: &User, bucket: i64, e: i64) -> Option<i64> {
    if !u.is_customer() {
        return None;
    }
    let lb = u.last_activity.div_euclid(bucket);
    if lb < e {
        Some(lb)
    } else if u.prev_activity_bucket != NO_BUCKET {
        Some(u.prev_activity_bucket as i64)
    } else {
        None
    }
}
