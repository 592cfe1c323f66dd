//! The state of one input partition and how effects are applied to it.
//!
//! Accepted events wait in a reorder buffer and are applied in event-time
//! order once final (`ts <= T - allowed_lateness`), merged with timers
//! (churn instants, SLA deadlines, post-support checks) in one time order.
//! An event at the same instant as a timer is applied first: a reply exactly
//! at its deadline meets it; an activity exactly at a churn instant prevents it.
//! So out-of-order delivery within the lateness gives the same state as
//! in-order delivery, and every timer is decided once, when final.
//!
//! The partition keeps what the families share (reorder buffer, timers,
//! users, tickets, dedup, channel registry, event counts) and hands each applied event and fired timer to
//! the families of [`crate::metrics`], which return the timers to schedule.

use std::cmp::Reverse;

use super::pending::{Pending, PendingBody, PendingQueue};
use super::{BreachAlert, EventCounts, StateBytes};
use crate::event::Millis;
use crate::metrics::support::SlaKind;
use crate::metrics::{Due, Families, retention, scan, support};
use crate::state::chunked::CowHeap;
use crate::state::dedup::Dedup;
use crate::state::params::{Params, day_of};
use crate::state::registry::ChannelRegistry;
use crate::state::tickets::Tickets;
use crate::state::users::{NEVER, User, UserIdx, Users};

/// A timer of one family, flattened (so a [`Timer`] is 16 bytes). The
/// order (by instant, then kind) is the order timers at the same instant
/// fire in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    PostSupport { user: UserIdx, negative: bool },
    FirstResponse(u32),
    Resolution(u32),
}

/// A timer as its family sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyTimer {
    Retention(retention::Timer),
    Support(support::Timer),
}

impl TimerKind {
    pub fn family(self) -> FamilyTimer {
        match self {
            TimerKind::PostSupport { user, negative } => {
                FamilyTimer::Retention(retention::Timer::PostSupport { user, negative })
            }
            TimerKind::FirstResponse(t) => FamilyTimer::Support(support::Timer::FirstResponse(t)),
            TimerKind::Resolution(t) => FamilyTimer::Support(support::Timer::Resolution(t)),
        }
    }
}

impl From<retention::Timer> for TimerKind {
    fn from(t: retention::Timer) -> TimerKind {
        match t {
            retention::Timer::PostSupport { user, negative } => {
                TimerKind::PostSupport { user, negative }
            }
        }
    }
}

impl From<support::Timer> for TimerKind {
    fn from(t: support::Timer) -> TimerKind {
        match t {
            support::Timer::FirstResponse(t) => TimerKind::FirstResponse(t),
            support::Timer::Resolution(t) => TimerKind::Resolution(t),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub instant: Millis,
    pub kind: TimerKind,
}

/// Everything the engine knows of one input partition: its state moves
/// with it between instances ([`super::Engine::snapshot_partition`]).
#[derive(Default)]
pub struct Partition {
    /// Its messages by type and outcome.
    pub counts: EventCounts,
    /// Accepted events so far: orders events of the same `ts` in the reorder buffer.
    pub seq: u64,
    /// Its channel values (ids in users, pending events and acquisition rings are this registry's).
    pub registry: ChannelRegistry,
    pub users: Users,
    pub tickets: Tickets,
    pub dedup: Dedup,
    /// Accepted events waiting to become final, in two parts: those that
    /// arrived in order (the common case: a FIFO, no heap work) and the
    /// out-of-order rest (a min-heap). The next one is the smaller front.
    pub(crate) pending: PendingQueue,
    /// Copy-on-write, so that a frozen snapshot shares it ([`super::Engine::freeze_partition`]).
    pub(crate) timers: CowHeap<Reverse<Timer>>,
    /// The churn instants of the current stretch (derived from the users:
    /// not written to snapshots).
    pub(crate) churn: retention::ChurnQueue,
    /// Every metric family's state.
    pub families: Families,
    /// Everything at or before this instant has been applied.
    pub applied_through: Millis,
    /// The largest `ts` applied from this partition (in `run` at most
    /// `clock_tolerance` ahead of the wall clock), or where the wall clock moved it.
    pub clock: Option<Millis>,
    pub(crate) last_trim: i64,
    /// UTC day of the last compaction sweep.
    pub(crate) last_sweep_day: i64,
}

impl Partition {
    #[inline]
    pub fn push(&mut self, p: Pending) {
        self.pending.push(p);
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Applies, in time order, every pending event and timer with instant <= `through`.
    /// `now` is the engine clock T (the detection time of breaches).
    pub fn release(
        &mut self,
        through: Millis,
        now: Millis,
        prm: &Params,
        alerts: &mut Vec<BreachAlert>,
    ) {
        // The next timer's instant, peeked again only when the heap changed.
        let next_timer = |timers: &CowHeap<Reverse<Timer>>| timers.peek().map(|t| t.0.instant);
        let mut tm = next_timer(&self.timers);
        loop {
            let next_ev = self.pending.peek_next().map(|(p, side)| (p.ts, side));
            let ev = next_ev.map(|(ts, _)| ts);
            // Churn instants fire before other timers of the same instant
            // (the order of `TimerKind`; no other timer reads what they change).
            let ch = self.churn.peek();
            let next_tm = match (tm, ch) {
                (Some(t), Some(c)) => Some(t.min(c)),
                (t, c) => t.or(c),
            };
            match (ev, next_tm) {
                (Some(e), t) if e <= through && t.is_none_or(|t| e <= t) => {
                    if self.churn.needs_scan(Some(e), through) {
                        self.churn.scan(&self.users, Some(e), through, prm);
                        continue;
                    }
                    let p = next_ev
                        .and_then(|(_, side)| self.pending.pop_next(side))
                        .expect("peeked");
                    let timers = self.timers.len();
                    self.apply(p, prm);
                    if self.timers.len() != timers {
                        tm = next_timer(&self.timers);
                    }
                }
                (_, Some(t)) if t <= through => {
                    if self.churn.needs_scan(Some(t), through) {
                        self.churn.scan(&self.users, Some(t), through, prm);
                        continue;
                    }
                    if ch == Some(t) {
                        let (at, user) = self.churn.pop().expect("peeked");
                        let f = &mut self.families.retention;
                        f.fire_churn(user, at, &mut self.users, prm);
                    } else {
                        let Reverse(timer) = self.timers.pop().expect("peeked");
                        self.fire(timer, now, prm, alerts);
                        tm = next_timer(&self.timers);
                    }
                }
                _ => {
                    if self.churn.needs_scan(None, through) {
                        self.churn.scan(&self.users, None, through, prm);
                        continue;
                    }
                    break;
                }
            }
        }
        if through > self.applied_through {
            self.applied_through = through;
        }
        // Trimming is housekeeping: every 64 buckets is enough (the rings
        // keep a day of slack beyond the longest window).
        let b = prm.bucket_of(through);
        if b >= self.last_trim + 64 {
            self.last_trim = b;
            self.families.trim(b, prm);
        }
        // Compaction is a pass over users and tickets: once per UTC day.
        let day = day_of(through);
        if day > self.last_sweep_day {
            self.last_sweep_day = day;
            self.sweep(through, prm);
        }
    }

    /// Forgets settled tickets and compacts users past every horizon: none
    /// of their events is within `compact_after` before `through`. Everything
    /// up to `through` is applied, so no pending event or timer refers to
    /// them (see [`Params::compact_after`]). Open tickets with no action
    /// within `open_ticket_horizon` are forgotten too: every deadline of a
    /// ticket is at most the longest target after its last action, and the
    /// horizon is longer (validated), so their timers have all fired.
    fn sweep(&mut self, through: Millis, prm: &Params) {
        let cutoff = through - prm.compact_after;
        if cutoff <= 0 {
            return;
        }
        let open_before = (prm.open_ticket_horizon > 0).then(|| through - prm.open_ticket_horizon);
        self.tickets.forget(cutoff, open_before);
        // Users named by a ticket kept in full stay in full (alerts name them).
        let mut pinned = vec![0u64; self.users.list.len().div_ceil(64)];
        for t in &self.tickets.list {
            if !t.is_free() && t.opened != NEVER {
                let i = t.user as usize;
                if let Some(w) = pinned.get_mut(i / 64) {
                    *w |= 1 << (i % 64);
                }
            }
        }
        // A user last seen on a day before the cutoff's day has every event before the cutoff.
        self.users.compact(day_of(cutoff) as u32, &pinned);
    }

    fn schedule<K: Into<TimerKind>>(&mut self, due: Option<Due<K>>) {
        if let Some(d) = due {
            self.timers.push(Reverse(Timer {
                instant: d.at,
                kind: d.kind.into(),
            }));
        }
    }

    fn apply(&mut self, p: Pending, prm: &Params) {
        let ts = p.ts;
        let b = prm.bucket_of(ts);
        let f = &mut self.families;
        match p.body {
            PendingBody::Signup {
                user,
                channel,
                referred,
            } => scan::signup(self.users.get_mut(user), ts, channel, referred),
            PendingBody::Deposit { user } => {
                let u = self.users.get_mut(user);
                scan::deposit(u, b);
                activity(u, user, ts, b, prm, &mut f.retention, &mut self.churn);
            }
            PendingBody::Trade { user, fee } => {
                let u = self.users.get_mut(user);
                scan::trade(u, b);
                f.acquisition.trade(u.channel(), b, fee);
                activity(u, user, ts, b, prm, &mut f.retention, &mut self.churn);
            }
            PendingBody::Invite => f.acquisition.invite(b),
            PendingBody::Reward {
                usd,
                referral_channel,
            } => f.acquisition.reward(b, usd, referral_channel),
            PendingBody::Spend { channel, usd } => f.acquisition.spend(channel, b, usd),
            PendingBody::Rated { user, ratings } => {
                f.surveys.rated(b, ratings);
                let due = retention::State::on_rated(user, ratings.csat, ts, prm);
                self.schedule(due);
            }
            PendingBody::Support {
                user,
                ticket,
                action,
                priority,
            } => {
                let due = f.support.apply(
                    &mut self.tickets,
                    user,
                    ticket,
                    action,
                    priority,
                    ts,
                    b,
                    prm,
                );
                for d in due {
                    self.schedule(d);
                }
            }
        }
    }

    fn fire(&mut self, timer: Timer, now: Millis, prm: &Params, alerts: &mut Vec<BreachAlert>) {
        let at = timer.instant;
        let f = &mut self.families;
        match timer.kind.family() {
            FamilyTimer::Retention(k) => f.retention.fire(k, at, &self.users, prm),
            FamilyTimer::Support(k) => {
                let fired = f.support.fire(&mut self.tickets, k, at, prm);
                self.schedule(fired.due);
                if let Some(kind) = fired.breach {
                    let (support::Timer::FirstResponse(ticket)
                    | support::Timer::Resolution(ticket)) = k;
                    alerts.push(self.alert(ticket, kind, at, now));
                }
            }
        }
    }

    fn alert(&self, ticket: u32, kind: SlaKind, deadline: Millis, now: Millis) -> BreachAlert {
        let t = &self.tickets.list[ticket as usize];
        BreachAlert {
            ticket_id: t.id.to_string(),
            user_id: self.users.id(t.user).to_string(),
            priority: t.priority.as_str(),
            kind: kind.as_str(),
            deadline,
            detected_at: now,
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.state_bytes().total()
    }

    /// [`Self::heap_bytes`] by part.
    pub fn state_bytes(&self) -> StateBytes {
        StateBytes {
            users: self.users.heap_bytes(),
            tickets: self.tickets.heap_bytes(),
            windows: self.families.heap_bytes(),
            dedup: self.dedup.heap_bytes(),
            other: self.timers.heap_bytes()
                + self.churn.heap_bytes()
                + self.pending.capacity() * std::mem::size_of::<Pending>()
                + self.registry.heap_bytes(),
        }
    }

    pub fn timers_len(&self) -> usize {
        self.timers.len()
    }
}

/// A deposit or trade by user `idx` (`u`) at `ts`, in bucket `b` (applied
/// in time order): its user record is looked up once per event, by the
/// caller. Inlined into both arms of `apply` (a call cost a fifth of it).
#[inline(always)]
fn activity(
    u: &mut User,
    idx: UserIdx,
    ts: Millis,
    b: i64,
    prm: &Params,
    retention: &mut retention::State,
    churn: &mut retention::ChurnQueue,
) {
    let was_customer = u.is_customer();
    retention.on_activity(u, ts, prm);
    scan::activity(u, was_customer, ts, b, prm);
    let due = u.last_activity() + prm.inactivity;
    churn.activity(idx, due);
}
