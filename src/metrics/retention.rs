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
use crate::state::params::Params;
use crate::state::ring::{Bucket, Ring};
use crate::state::users::{F_CHURNED, User, UserIdx, Users};

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

/// The family's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// The user churns now unless an activity came since `instant - inactivity`.
    Churn(UserIdx),
    /// Post-support check of a `rated` csat at `instant - inactivity`.
    PostSupport { user: UserIdx, negative: bool },
}

impl Timer {
    pub fn write(&self, w: &mut W) {
        match *self {
            Timer::Churn(u) => {
                w.u8(0);
                w.u32(u);
            }
            Timer::PostSupport { user, negative } => {
                w.u8(1);
                w.u32(user);
                w.u8(negative as u8);
            }
        }
    }

    /// Reads a timer of a partition holding `users` user slots.
    pub fn read(r: &mut R<'_>, users: u32) -> Result<Timer, SnapshotError> {
        let tag = r.u8()?;
        let user = r.u32()?;
        check_index("timer's user", user as u64, users as usize)?;
        match tag {
            0 => Ok(Timer::Churn(user)),
            1 => Ok(Timer::PostSupport {
                user,
                negative: r.bool("post-support timer")?,
            }),
            _ => Err(SnapshotError::Invalid("timer")),
        }
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
    /// A deposit or trade by `u` (index `idx`) at `ts`, before the user's
    /// activity is recorded: a churned customer is reactivated, and a new
    /// or reactivated customer gets a churn timer.
    #[inline]
    pub fn on_activity(
        &mut self,
        idx: UserIdx,
        u: &mut User,
        ts: Millis,
        prm: &Params,
    ) -> Option<Due<Timer>> {
        let churn = Due {
            at: ts + prm.inactivity,
            kind: Timer::Churn(idx),
        };
        if u.has(F_CHURNED) {
            u.flags &= !F_CHURNED;
            self.churn.at(prm.bucket_of(ts)).reactivated += 1.0;
            return Some(churn);
        }
        (!u.is_customer()).then_some(churn)
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

    /// `timer` is due at `at`: returns the timer to schedule instead, if any.
    pub fn fire(
        &mut self,
        timer: Timer,
        at: Millis,
        users: &mut Users,
        prm: &Params,
    ) -> Option<Due<Timer>> {
        match timer {
            Timer::Churn(user) => {
                let u = users.get_mut(user);
                if u.has(F_CHURNED) {
                    return None;
                }
                let due = u.last_activity + prm.inactivity;
                if due == at {
                    u.flags |= F_CHURNED;
                    self.churn.at(prm.bucket_of(at)).churned += 1.0;
                } else if due > at {
                    return Some(Due {
                        at: due,
                        kind: Timer::Churn(user),
                    });
                }
            }
            Timer::PostSupport { user, negative } => {
                let s = at - prm.inactivity;
                let churned = users.list[user as usize].last_activity <= s;
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
        None
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
