//! Retention and churn: window-over-window retention, cohort D1/D7/D30,
//! active customers now, churn, reactivation, new customers, churn ratio,
//! post-support churn.
//!
//! Per partition: churn instants and reactivations per bucket (churn timers:
//! `inactivity` after a customer's latest activity), and post-support
//! outcomes by the bucket of the rating (a timer `inactivity` after each
//! `rated` csat other than 3). The per-user counts come from [`super::scan`].

use super::scan::{COHORT_DAYS, UserScan};
use super::{Ctx, Due, add_into};
use crate::event::Millis;
use crate::export::{Family, Kind};
use crate::state::codec::{R, SnapshotError, W, check_index};
use crate::state::params::{DAY_MS, Params};
use crate::state::ring::{Bucket, Ring};
use crate::state::users::{F_CHURNED, F_FREE, User, UserIdx, Users};

crate::bucket! {
    /// Churn in one bucket.
    pub struct ChurnBucket {
        /// Churn instants.
        pub churned: f64,
        /// Activities by customers who had churned.
        pub reactivated: f64,
    }
}

crate::bucket! {
    /// csat ratings of one bucket, by their outcome `inactivity` later.
    pub struct PostSupportBucket {
        /// Negative ratings (<= 2), and of them the users with no activity since.
        pub negative: f64,
        pub negative_churned: f64,
        /// Positive ratings (>= 4), and of them the users with no activity since.
        pub positive: f64,
        pub positive_churned: f64,
    }
}

/// The family's timers (in the partition's timer heap). Churn instants
/// are not timers: they follow from each customer's last activity
/// ([`ChurnQueue`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Post-support check of a `rated` csat at `instant - inactivity`.
    PostSupport { user: UserIdx, negative: bool },
}

impl Timer {
    pub fn write(&self, w: &mut W) {
        match *self {
            Timer::PostSupport { user, negative } => {
                w.u8(1);
                w.u32(user);
                w.u8(negative as u8);
            }
        }
    }

    /// Reads a timer of a partition holding `users` user slots. `None`: a
    /// churn timer of a version 1 snapshot (tag 0), now derived from the
    /// users' last activity instead; `churn_timers` says whether the
    /// snapshot's version may hold them.
    pub fn read(
        r: &mut R<'_>,
        users: u32,
        churn_timers: bool,
    ) -> Result<Option<Timer>, SnapshotError> {
        let tag = r.u8()?;
        let user = r.u32()?;
        check_index("timer's user", user as u64, users as usize)?;
        match tag {
            0 if churn_timers => Ok(None),
            1 => Ok(Some(Timer::PostSupport {
                user,
                negative: r.bool("post-support timer")?,
            })),
            _ => Err(SnapshotError::Invalid("timer")),
        }
    }
}

/// The churn instants to come, derived from the users: a customer who has
/// not churned churns at `last_activity + inactivity` (its *due*) unless an
/// activity comes first (an activity exactly at that instant is applied
/// first and prevents it). Instead of one timer per customer, the partition
/// holds the dues of one stretch of time at a time, `(horizon - step,
/// horizon]`, found by a pass over the users ([`ChurnQueue::scan`]) once
/// everything before the stretch is applied: from then on, activities are
/// applied at later instants, so their dues are after the stretch (at least
/// `inactivity` later) and the stretch's list is complete. A listed user
/// whose activity moved its due since is skipped when the instant comes
/// (its new due is in a later stretch). The list is not part of a
/// snapshot: a restored partition scans again from its applied instant.
#[derive(Debug, Clone)]
pub struct ChurnQueue {
    /// Dues found up to here (inclusive).
    horizon: Millis,
    /// `(due, user)` for dues in the current stretch, descending (the next at the end).
    due: Vec<(Millis, UserIdx)>,
}

impl Default for ChurnQueue {
    fn default() -> ChurnQueue {
        ChurnQueue::after(Millis::MIN)
    }
}

impl ChurnQueue {
    /// No due found yet; every due at or before `applied` has been decided.
    pub fn after(applied: Millis) -> ChurnQueue {
        ChurnQueue {
            horizon: applied,
            due: Vec::new(),
        }
    }

    /// The length of a stretch: at most `inactivity` (so that no activity
    /// applied after the scan has its due within it); a day at most, so that
    /// the list holds one day of dues.
    fn step(prm: &Params) -> Millis {
        prm.inactivity.clamp(1, DAY_MS)
    }

    /// The next churn instant listed, if any.
    #[inline]
    pub fn peek(&self) -> Option<Millis> {
        self.due.last().map(|d| d.0)
    }

    pub fn pop(&mut self) -> Option<(Millis, UserIdx)> {
        self.due.pop()
    }

    /// Whether a scan is needed before anything at `next` (the next event
    /// or timer instant, `None` for none) may be applied, within `through`:
    /// the list is used up and dues after `horizon` may come first.
    #[inline]
    pub fn needs_scan(&self, next: Option<Millis>, through: Millis) -> bool {
        self.due.is_empty() && self.horizon < through && next.is_none_or(|n| n > self.horizon)
    }

    /// Lists the dues of the next stretch. Everything before `next` (the
    /// next event or timer instant, `None` for none) and at or before the
    /// horizon has been applied, so every activity at or before
    /// `min(next - 1, through)` has: the stretch ends `step` after that.
    #[inline(never)]
    pub fn scan(&mut self, users: &Users, next: Option<Millis>, through: Millis, prm: &Params) {
        let applied = next.map_or(through, |n| (n - 1).min(through));
        let from = self.horizon;
        let to = applied.max(from).saturating_add(ChurnQueue::step(prm));
        let inact = prm.inactivity;
        let mut i = 0u32;
        for chunk in users.list.slices() {
            for u in chunk {
                if u.is_customer() && u.flags & (F_CHURNED | F_FREE) == 0 {
                    let due = u.last_activity() + inact;
                    if due > from && due <= to {
                        self.due.push((due, i));
                    }
                }
                i += 1;
            }
        }
        self.due.sort_unstable_by(|a, b| b.cmp(a));
        self.horizon = to;
    }

    /// `user` had an activity and its due is now `due`: listed if within
    /// the stretch already scanned (an activity applied out of time order).
    #[inline]
    pub fn activity(&mut self, user: UserIdx, due: Millis) {
        if due <= self.horizon {
            let at = self.due.partition_point(|d| *d > (due, user));
            self.due.insert(at, (due, user));
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.due.capacity() * std::mem::size_of::<(Millis, UserIdx)>()
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

/// One partition's retention state.
#[derive(Debug, Default)]
pub struct State {
    pub churn: Ring<ChurnBucket>,
    /// By the bucket of the rating time.
    pub post_support: Ring<PostSupportBucket>,
}

impl State {
    /// A deposit or trade by `u` at `ts`, before the user's activity is
    /// recorded: a churned customer is reactivated (its next churn instant
    /// follows from its last activity: [`ChurnQueue`]).
    #[inline(always)]
    pub fn on_activity(&mut self, u: &mut User, ts: Millis, prm: &Params) {
        if u.has(F_CHURNED) {
            u.flags &= !F_CHURNED;
            self.churn.at(prm.bucket_of(ts)).reactivated += 1.0;
        }
    }

    /// A `rated` csat at `ts` by `user`: a post-support check unless it is 3.
    #[inline]
    pub fn on_rated(
        user: UserIdx,
        csat: Option<u8>,
        ts: Millis,
        prm: &Params,
    ) -> Option<Due<Timer>> {
        csat.filter(|&c| c != 3).map(|c| Due {
            at: ts + prm.inactivity,
            kind: Timer::PostSupport {
                user,
                negative: c <= 2,
            },
        })
    }

    /// A churn instant listed for `user` came, at `at`: the user churns if
    /// it is still its due (no activity since, none exactly at `at`).
    pub fn fire_churn(&mut self, user: UserIdx, at: Millis, users: &mut Users, prm: &Params) {
        let u = users.get_mut(user);
        if u.is_customer()
            && u.flags & (F_CHURNED | F_FREE) == 0
            && u.last_activity() + prm.inactivity == at
        {
            u.flags |= F_CHURNED;
            self.churn.at(prm.bucket_of(at)).churned += 1.0;
        }
    }

    /// `timer` is due at `at`.
    pub fn fire(&mut self, timer: Timer, at: Millis, users: &Users, prm: &Params) {
        match timer {
            Timer::PostSupport { user, negative } => {
                let s = at - prm.inactivity;
                let churned = users.list[user as usize].last_activity() <= s;
                let ps = self.post_support.at(prm.bucket_of(s));
                let (n, c) = if negative {
                    (&mut ps.negative, &mut ps.negative_churned)
                } else {
                    (&mut ps.positive, &mut ps.positive_churned)
                };
                *n += 1.0;
                if churned {
                    *c += 1.0;
                }
            }
        }
    }

    /// Drops buckets no window reads any more, `latest_bucket` being the newest applied.
    pub fn trim(&mut self, latest_bucket: i64, prm: &Params) {
        self.churn.trim(latest_bucket - prm.keep_buckets);
        self.post_support
            .trim(latest_bucket - prm.keep_post_support_buckets);
    }

    pub fn heap_bytes(&self) -> usize {
        self.churn.heap_bytes() + self.post_support.heap_bytes()
    }

    pub fn write(&self, w: &mut W) {
        self.churn.write(w);
        self.post_support.write(w);
    }

    pub fn read(r: &mut R<'_>) -> Result<State, SnapshotError> {
        Ok(State {
            churn: Ring::read(r)?,
            post_support: Ring::read(r)?,
        })
    }
}

/// Churn ratio per window (None where absent), for CLV.
pub struct ChurnRatios(pub Vec<Option<f64>>);

/// Window sums of one partition (or several, merged) at T.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    /// `[window]`: over the window.
    pub churn: Vec<ChurnBucket>,
    /// `[window]`: over the window moved `inactivity` into the past.
    pub post_support: Vec<PostSupportBucket>,
}

impl Partial {
    pub fn empty(ctx: &Ctx<'_>) -> Partial {
        let nw = ctx.prm.windows.len();
        Partial {
            churn: vec![ChurnBucket::default(); nw],
            post_support: vec![PostSupportBucket::default(); nw],
        }
    }

    pub fn of(ctx: &Ctx<'_>, s: &State) -> Partial {
        let inact_b = ctx.prm.inactivity / ctx.prm.bucket;
        let ranges = ctx.prm.windows.iter().map(|w| ctx.range(w));
        Partial {
            churn: ranges.clone().map(|(f, t)| s.churn.sum(f, t)).collect(),
            post_support: ranges
                .map(|(f, t)| s.post_support.sum(f - inact_b, t - inact_b))
                .collect(),
        }
    }

    pub fn merge(&mut self, o: &Partial) {
        add_into(&mut self.churn, &o.churn, Bucket::add);
        add_into(&mut self.post_support, &o.post_support, Bucket::add);
    }

    pub fn write(&self, w: &mut W) {
        super::write_seq(w, &self.churn, |w, b| b.write(w));
        super::write_seq(w, &self.post_support, |w, b| b.write(w));
    }

    /// Reads sums of `prm`'s windows.
    pub fn read(r: &mut R<'_>, prm: &Params) -> Result<Partial, SnapshotError> {
        let nw = prm.windows.len();
        let what = "partial's window count";
        Ok(Partial {
            churn: super::read_exact(r, nw, what, ChurnBucket::read)?,
            post_support: super::read_exact(r, nw, what, PostSupportBucket::read)?,
        })
    }

    /// Pushes the family's series; returns the churn ratios (for CLV).
    pub fn finish(&self, ctx: &Ctx<'_>, scan: &UserScan, out: &mut Vec<Family>) -> ChurnRatios {
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
        for (w, win) in ctx.prm.windows.iter().enumerate() {
            let l = [("window", win.name.as_str())];
            let ChurnBucket {
                churned: c,
                reactivated: r,
            } = self.churn[w];
            let n = scan.new_customers[w];
            churned.push(&l, c);
            reactivated.push(&l, r);
            new.push(&l, n);
            let den = scan.active_now + c - n - r;
            ratio.push_ratio(&l, c, den);
            ratios.push((den > 0.0).then(|| c / den));
            let ps = &self.post_support[w];
            post.push_ratio(
                &[("window", &win.name), ("experience", "negative")],
                ps.negative_churned,
                ps.negative,
            );
            post.push_ratio(
                &[("window", &win.name), ("experience", "positive")],
                ps.positive_churned,
                ps.positive,
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
}

#[cfg(test)]
mod tests;
