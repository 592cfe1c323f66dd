//! The per-user facts the acquisition and retention families read (signup,
//! first deposit and trade, activity days, cohort flags), how an applied
//! event updates them, and one pass over every user of a partition that
//! counts them for every window at once ([`UserScan`], merged like a partial).

use super::{Column, Ctx, add_cols, add_into, fold_cols, read_exact, read_f64, write_seq};
use crate::event::Millis;
use crate::state::codec::{R, SnapshotError, W};
use crate::state::params::{DAY_MS, Params, day_of};
use crate::state::registry::{ChannelId, UNKNOWN};
use crate::state::users::{
    C_SIGNUP, F_COHORT_1, F_COHORT_7, F_COHORT_30, F_HAS_SIGNUP, F_REFERRED, NO_BUCKET, User, Users,
};

/// Cohort days of `cxpulse_cohort_retention_ratio`.
pub const COHORT_DAYS: [(i64, u8); 3] = [(1, F_COHORT_1), (7, F_COHORT_7), (30, F_COHORT_30)];

/// A signup applied: the first one stands.
#[inline]
pub fn signup(u: &mut User, ts: Millis, channel: ChannelId, referred: bool) {
    if !u.has(F_HAS_SIGNUP) {
        u.set_signup(ts);
        u.set_channel(channel);
        u.flags |= F_HAS_SIGNUP;
        if referred {
            u.flags |= F_REFERRED;
        }
    }
}

/// A deposit in bucket `b` applied (before [`activity`]).
#[inline]
pub fn deposit(u: &mut User, b: i64) {
    if u.first_deposit == NO_BUCKET {
        u.first_deposit = b as u32;
    }
}

/// A trade in bucket `b` applied (before [`activity`]).
#[inline]
pub fn trade(u: &mut User, b: i64) {
    if u.first_trade == NO_BUCKET {
        u.first_trade = b as u32;
    }
}

/// A deposit or trade at `ts`, in bucket `b` (applied in time order);
/// `was_customer`: whether the user had an activity before.
#[inline(always)]
pub fn activity(u: &mut User, was_customer: bool, ts: Millis, b: i64, prm: &Params) {
    let b = b as u32;
    if was_customer {
        let last_b = prm.bucket_of(u.last_activity()) as u32;
        if b > last_b {
            u.prev_activity_bucket = last_b;
        }
    }
    if ts > u.last_activity() {
        u.set_last_activity(ts);
    }
    u.record_activity_day(day_of(ts) as u32);
    if u.has(F_HAS_SIGNUP) {
        for (n, flag) in COHORT_DAYS {
            let from = u.signup() + n * DAY_MS;
            if ts >= from && ts < from + DAY_MS {
                u.flags |= flag;
            }
        }
    }
}

/// Per-user counts of one partition (or several, merged) at T.
#[derive(Clone, Debug, Default, PartialEq)]
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

/// The whole days of a window used by `cxpulse_retention_ratio`, if any.
fn retention_days(len: Millis) -> Option<i64> {
    (len % DAY_MS == 0 && len / DAY_MS <= 31).then_some(len / DAY_MS)
}

impl UserScan {
    /// No user, with `nc` channel columns.
    pub fn empty(ctx: &Ctx<'_>, nc: usize) -> UserScan {
        let nw = ctx.prm.windows.len();
        let grid = || vec![vec![0.0; nc]; nw];
        UserScan {
            signups: grid(),
            funnel_deposit: grid(),
            funnel_trade: grid(),
            acquisitions: grid(),
            active: grid(),
            referral_signups: vec![0.0; nw],
            new_customers: vec![0.0; nw],
            retention: ctx
                .prm
                .windows
                .iter()
                .map(|w| retention_days(w.len).map(|_| (0.0, 0.0)))
                .collect(),
            signups_total: vec![0.0; nc],
            ..Default::default()
        }
    }

    /// The counts of one partition's users, whose channel ids are below `nc`.
    pub fn of(ctx: &Ctx<'_>, users: &Users, nc: usize) -> UserScan {
        let mut s = UserScan::empty(ctx, nc);
        let bucket = ctx.prm.bucket;
        // Window bucket ranges, as u32 bucket indices (users store u32 buckets).
        let ranges: Vec<(i64, i64)> = ctx.prm.windows.iter().map(|w| ctx.range(w)).collect();
        let today = day_of(ctx.t);
        let ret_days: Vec<Option<i64>> = ctx
            .prm
            .windows
            .iter()
            .map(|w| retention_days(w.len))
            .collect();
        let e_ms = ctx.e_ms();
        let now_from = ctx.t - ctx.prm.inactivity;
        // Compacted users are past every window: they only count in the
        // all-time signup totals (as do forgotten ones).
        for c in users.cold_users() {
            if c.channel == UNKNOWN {
                s.unknown_present = true;
            }
            if c.flags & C_SIGNUP != 0 {
                s.signed_up += 1.0;
                s.signups_total[c.channel as usize] += 1.0;
            }
        }
        for (ch, &n) in users.forgotten_signups.iter().enumerate() {
            s.signed_up += n as f64;
            s.signups_total[ch] += n as f64;
        }
        s.unknown_present |= users.forgotten_unknown;
        for u in users.hot() {
            let c = u.channel() as usize;
            if u.channel() == UNKNOWN {
                s.unknown_present = true;
            }
            let signup_b = if u.has(F_HAS_SIGNUP) {
                s.signed_up += 1.0;
                s.signups_total[c] += 1.0;
                Some(u.signup().div_euclid(bucket))
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
            if u.is_customer() && u.last_activity() >= now_from {
                s.active_now += 1.0;
            }
            if u.has(F_HAS_SIGNUP) {
                for (i, (n, flag)) in COHORT_DAYS.iter().enumerate() {
                    let from = e_ms - (n + 1) * DAY_MS;
                    let to = e_ms - n * DAY_MS;
                    if u.signup() >= from && u.signup() < to {
                        s.cohorts[i].0 += 1.0;
                        if u.has(*flag) {
                            s.cohorts[i].1 += 1.0;
                        }
                    }
                }
            }
        }
        s
    }

    /// Adds another partition's counts (every count is a whole number:
    /// exact in any order); its channel column `j` is column `map[j]` here,
    /// which has `cols` channel columns.
    pub fn merge(&mut self, o: &UserScan, map: &[Column], cols: usize) {
        let add = |a: &mut f64, x: &f64| *a += x;
        let grid = |a: &mut Vec<Vec<f64>>, x: &[Vec<f64>]| {
            add_into(a, x, |a, x| add_cols(a, x, map, cols, add));
        };
        grid(&mut self.signups, &o.signups);
        grid(&mut self.funnel_deposit, &o.funnel_deposit);
        grid(&mut self.funnel_trade, &o.funnel_trade);
        grid(&mut self.acquisitions, &o.acquisitions);
        grid(&mut self.active, &o.active);
        add_into(&mut self.referral_signups, &o.referral_signups, add);
        add_into(&mut self.new_customers, &o.new_customers, add);
        add_into(&mut self.retention, &o.retention, |a, x| {
            if let (Some((base, kept)), Some((b, k))) = (a.as_mut(), x) {
                *base += b;
                *kept += k;
            }
        });
        add_cols(&mut self.signups_total, &o.signups_total, map, cols, add);
        self.signed_up += o.signed_up;
        self.active_now += o.active_now;
        for (a, x) in self.cohorts.iter_mut().zip(&o.cohorts) {
            a.0 += x.0;
            a.1 += x.1;
        }
        self.unknown_present |= o.unknown_present;
    }

    /// Adds the `folded` channel columns into `other` and clears them.
    pub fn fold_into_other(&mut self, folded: &[Column]) {
        let add = |a: &mut f64, x: &f64| *a += x;
        for g in [
            &mut self.signups,
            &mut self.funnel_deposit,
            &mut self.funnel_trade,
            &mut self.acquisitions,
            &mut self.active,
        ] {
            for row in g.iter_mut() {
                fold_cols(row, folded, add);
            }
        }
        fold_cols(&mut self.signups_total, folded, add);
    }

    pub fn write(&self, w: &mut W) {
        let row = |w: &mut W, r: &Vec<f64>| write_seq(w, r, |w, v| w.f64(*v));
        for g in [
            &self.signups,
            &self.funnel_deposit,
            &self.funnel_trade,
            &self.acquisitions,
            &self.active,
        ] {
            write_seq(w, g, row);
        }
        row(w, &self.referral_signups);
        row(w, &self.new_customers);
        write_seq(w, &self.retention, |w, v| match v {
            Some((a, b)) => {
                w.u8(1);
                w.f64(*a);
                w.f64(*b);
            }
            None => w.u8(0),
        });
        row(w, &self.signups_total);
        w.f64(self.signed_up);
        w.f64(self.active_now);
        for (a, b) in &self.cohorts {
            w.f64(*a);
            w.f64(*b);
        }
        w.u8(self.unknown_present as u8);
    }

    /// Reads a scan of `prm`'s windows with `nc` channel columns.
    pub fn read(r: &mut R<'_>, prm: &Params, nc: usize) -> Result<UserScan, SnapshotError> {
        let nw = prm.windows.len();
        let row = |r: &mut R<'_>, n| read_exact(r, n, "partial's row length", read_f64);
        let grid = |r: &mut R<'_>| read_exact(r, nw, "partial's window count", |r| row(r, nc));
        let signups = grid(r)?;
        let funnel_deposit = grid(r)?;
        let funnel_trade = grid(r)?;
        let acquisitions = grid(r)?;
        let active = grid(r)?;
        let referral_signups = row(r, nw)?;
        let new_customers = row(r, nw)?;
        let mut w = 0;
        let retention = read_exact(r, nw, "partial's window count", |r| {
            let days = retention_days(prm.windows[w].len);
            w += 1;
            match (r.bool("retention flag")?, days) {
                (true, Some(_)) => Ok(Some((read_f64(r)?, read_f64(r)?))),
                (false, None) => Ok(None),
                _ => Err(SnapshotError::Invalid("partial's retention window")),
            }
        })?;
        let signups_total = row(r, nc)?;
        let signed_up = read_f64(r)?;
        let active_now = read_f64(r)?;
        let mut cohorts = [(0.0, 0.0); 3];
        for c in cohorts.iter_mut() {
            *c = (read_f64(r)?, read_f64(r)?);
        }
        Ok(UserScan {
            signups,
            funnel_deposit,
            funnel_trade,
            acquisitions,
            active,
            referral_signups,
            new_customers,
            retention,
            signups_total,
            signed_up,
            active_now,
            cohorts,
            unknown_present: r.bool("unknown flag")?,
        })
    }
}

/// The bucket of the user's latest activity before bucket `e`, if any.
fn last_activity_bucket_before(u: &User, bucket: i64, e: i64) -> Option<i64> {
    if !u.is_customer() {
        return None;
    }
    let lb = u.last_activity().div_euclid(bucket);
    if lb < e {
        Some(lb)
    } else if u.prev_activity_bucket != NO_BUCKET {
        Some(u.prev_activity_bucket as i64)
    } else {
        None
    }
}
