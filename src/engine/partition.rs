//! The state of one input partition and how effects are applied to it.
//!
//! Accepted events wait in a reorder buffer and are applied in event-time
//! order once final (`ts <= T - allowed_lateness`), merged with timers
//! (churn instants, SLA deadlines, post-support checks) in one time order.
//! An event at the same instant as a timer is applied first: a reply exactly
//! at its deadline meets it; an activity exactly at a churn instant prevents it.
//! So out-of-order delivery within the lateness gives the same state as
//! in-order delivery, and every timer is decided once, when final.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::dedup::Dedup;
use super::params::{DAY_MS, Params, day_of};
use super::registry::ChannelId;
use super::ring::Ring;
use super::tickets::{Decision, Tickets};
use super::users::{
    F_CHURNED, F_COHORT_1, F_COHORT_7, F_COHORT_30, F_HAS_SIGNUP, F_REFERRED, NEVER, NO_BUCKET,
    UserIdx, Users,
};
use super::{BreachAlert, SlaKind};
use crate::event::{Millis, Priority, Ratings, SupportAction};

/// An accepted event, reduced to what its effects need.
#[derive(Clone, Debug)]
pub struct Pending {
    pub ts: Millis,
    /// Arrival order, to keep ties stable.
    pub seq: u64,
    pub body: PendingBody,
}

#[derive(Clone, Debug)]
pub enum PendingBody {
    Signup {
        user: UserIdx,
        channel: ChannelId,
        referred: bool,
    },
    Deposit {
        user: UserIdx,
    },
    Trade {
        user: UserIdx,
        fee: f64,
    },
    Invite,
    Reward {
        usd: f64,
        referral_channel: ChannelId,
    },
    Support {
        user: UserIdx,
        ticket: u32,
        action: SupportAction,
        priority: Option<Priority>,
    },
    Rated {
        user: UserIdx,
        ratings: Ratings,
    },
    Spend {
        channel: ChannelId,
        usd: f64,
    },
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.seq) == (o.ts, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(o.ts, o.seq))
    }
}

/// The reorder buffer: see [`Partition::pending`].
#[derive(Debug, Default)]
pub struct PendingQueue {
    in_order: VecDeque<Pending>,
    out_of_order: BinaryHeap<Reverse<Pending>>,
}

impl PendingQueue {
    pub fn push(&mut self, p: Pending) {
        match self.in_order.back() {
            Some(last) if p < *last => self.out_of_order.push(Reverse(p)),
            _ => self.in_order.push_back(p),
        }
    }

    pub fn peek_ts(&self) -> Option<Millis> {
        match (self.in_order.front(), self.out_of_order.peek()) {
            (Some(a), Some(Reverse(b))) => Some(if a <= b { a.ts } else { b.ts }),
            (Some(a), None) => Some(a.ts),
            (None, Some(Reverse(b))) => Some(b.ts),
            (None, None) => None,
        }
    }

    pub fn pop(&mut self) -> Option<Pending> {
        let take_fifo = match (self.in_order.front(), self.out_of_order.peek()) {
            (Some(a), Some(Reverse(b))) => a <= b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if take_fifo {
            self.in_order.pop_front()
        } else {
            self.out_of_order.pop().map(|Reverse(p)| p)
        }
    }

    pub fn len(&self) -> usize {
        self.in_order.len() + self.out_of_order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.in_order.capacity() + self.out_of_order.capacity()
    }

    /// Every pending event, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.in_order
            .iter()
            .chain(self.out_of_order.iter().map(|r| &r.0))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// The user churns now unless an activity came since `instant - inactivity`.
    Churn(UserIdx),
    /// Post-support check of a `rated` csat at `instant - inactivity`.
    PostSupport {
        user: UserIdx,
        negative: bool,
    },
    FirstResponse(u32),
    Resolution(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub instant: Millis,
    pub kind: TimerKind,
}

// Field indices of the rings.
pub const CH_REVENUE: usize = 0;
pub const CH_SPEND: usize = 1;

pub const MISC_INVITES: usize = 0;
pub const MISC_REWARDS: usize = 1;
pub const MISC_CHURNED: usize = 2;
pub const MISC_REACTIVATED: usize = 3;
pub const MISC_REOPENED: usize = 4;

pub const SV_CSAT_N: usize = 0;
pub const SV_CSAT_SAT: usize = 1;
pub const SV_NPS_PROMOTER: usize = 2;
pub const SV_NPS_PASSIVE: usize = 3;
pub const SV_NPS_DETRACTOR: usize = 4;
pub const SV_CES_N: usize = 5;
pub const SV_CES_SUM: usize = 6;
pub const SV_CES_EASY: usize = 7;

/// Tickets opened, by priority: field `SLA_OPENED + p`.
pub const SLA_OPENED: usize = 0;
/// Decisions: field `sla_decision(p, kind, breached)`.
pub fn sla_decision(p: Priority, kind: SlaKind, breached: bool) -> usize {
    4 + p.index() * 4 + (kind as usize) * 2 + breached as usize
}

pub const PS_NEG_N: usize = 0;
pub const PS_NEG_CHURNED: usize = 1;
pub const PS_POS_N: usize = 2;
pub const PS_POS_CHURNED: usize = 3;

/// A cumulative Prometheus histogram in seconds.
#[derive(Clone, Debug, Default)]
pub struct SecondsHistogram {
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl SecondsHistogram {
    fn observe(&mut self, bounds: &[f64], secs: f64) {
        if self.counts.len() != bounds.len() {
            self.counts = vec![0; bounds.len()];
        }
        for (c, b) in self.counts.iter_mut().zip(bounds) {
            if secs <= *b {
                *c += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// Support times whose decision instant (reply or resolution) is recent: `(at, duration)`.
pub type TimeLog = VecDeque<(Millis, Millis)>;

#[derive(Default)]
pub struct Partition {
    pub users: Users,
    pub tickets: Tickets,
    pub dedup: Dedup,
    /// Accepted events waiting to become final, in two parts: those that
    /// arrived in order (the common case: a FIFO, no heap work) and the
    /// out-of-order rest (a min-heap). The next one is the smaller front.
    pub(crate) pending: PendingQueue,
    pub(crate) timers: BinaryHeap<Reverse<Timer>>,
    /// Per channel id: revenue and spend.
    pub chan: Vec<Ring<2>>,
    pub misc: Ring<5>,
    pub surveys: Ring<8>,
    pub sla: Ring<20>,
    /// By the bucket of the rating time.
    pub post_support: Ring<4>,
    pub fr_times: [TimeLog; 4],
    pub res_times: [TimeLog; 4],
    pub fr_hist: [SecondsHistogram; 4],
    pub res_hist: [SecondsHistogram; 4],
    /// Everything at or before this instant has been applied.
    pub applied_through: Millis,
    /// The largest `ts` applied from this partition (or where the wall clock moved it).
    pub clock: Option<Millis>,
    pub(crate) last_trim: i64,
    /// UTC day of the last compaction sweep.
    pub(crate) last_sweep_day: i64,
}

impl Partition {
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
        loop {
            let ev = self.pending.peek_ts();
            let tm = self.timers.peek().map(|t| t.0.instant);
            match (ev, tm) {
                (Some(e), t) if e <= through && t.is_none_or(|t| e <= t) => {
                    let p = self.pending.pop().expect("peeked");
                    self.apply(p, prm);
                }
                (_, Some(t)) if t <= through => {
                    let Reverse(timer) = self.timers.pop().expect("peeked");
                    self.fire(timer, now, prm, alerts);
                }
                _ => break,
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
            self.trim(b, prm);
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
    /// them (see [`Params::compact_after`]).
    fn sweep(&mut self, through: Millis, prm: &Params) {
        let cutoff = through - prm.compact_after;
        if cutoff <= 0 {
            return;
        }
        self.tickets.forget_settled(cutoff);
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

    fn trim(&mut self, latest_bucket: i64, prm: &Params) {
        let oldest = latest_bucket - prm.keep_buckets;
        for r in &mut self.chan {
            r.trim(oldest);
        }
        self.misc.trim(oldest);
        self.surveys.trim(oldest);
        self.sla.trim(oldest);
        self.post_support
            .trim(latest_bucket - prm.keep_post_support_buckets);
        let oldest_ms = (latest_bucket + 1) * prm.bucket - prm.max_window - prm.bucket;
        for log in self.fr_times.iter_mut().chain(self.res_times.iter_mut()) {
            while log.front().is_some_and(|&(at, _)| at < oldest_ms) {
                log.pop_front();
            }
        }
    }

    fn chan_ring(&mut self, c: ChannelId) -> &mut Ring<2> {
        let i = c as usize;
        if self.chan.len() <= i {
            self.chan.resize_with(i + 1, Ring::default);
        }
        &mut self.chan[i]
    }

    fn apply(&mut self, p: Pending, prm: &Params) {
        let ts = p.ts;
        let b = prm.bucket_of(ts);
        match p.body {
            PendingBody::Signup {
                user,
                channel,
                referred,
            } => {
                let u = self.users.get_mut(user);
                if !u.has(F_HAS_SIGNUP) {
                    u.signup = ts;
                    u.channel = channel;
                    u.flags |= F_HAS_SIGNUP;
                    if referred {
                        u.flags |= F_REFERRED;
                    }
                }
            }
            PendingBody::Deposit { user } => {
                let u = self.users.get_mut(user);
                if u.first_deposit == NO_BUCKET {
                    u.first_deposit = b as u32;
                }
                self.activity(user, ts, prm);
            }
            PendingBody::Trade { user, fee } => {
                let u = self.users.get_mut(user);
                if u.first_trade == NO_BUCKET {
                    u.first_trade = b as u32;
                }
                let ch = u.channel;
                self.chan_ring(ch).add(b, CH_REVENUE, fee);
                self.activity(user, ts, prm);
            }
            PendingBody::Invite => self.misc.add(b, MISC_INVITES, 1.0),
            PendingBody::Reward {
                usd,
                referral_channel,
            } => {
                self.misc.add(b, MISC_REWARDS, usd);
                self.chan_ring(referral_channel).add(b, CH_SPEND, usd);
            }
            PendingBody::Spend { channel, usd } => self.chan_ring(channel).add(b, CH_SPEND, usd),
            PendingBody::Rated { user, ratings } => self.rated(user, ts, b, ratings, prm),
            PendingBody::Support {
                user,
                ticket,
                action,
                priority,
            } => self.support(user, ticket, action, priority, ts, b, prm),
        }
    }

    /// A deposit or trade by `user` at `ts` (applied in time order).
    fn activity(&mut self, user: UserIdx, ts: Millis, prm: &Params) {
        let b = prm.bucket_of(ts) as u32;
        let u = self.users.get_mut(user);
        let was_customer = u.is_customer();
        if u.has(F_CHURNED) {
            u.flags &= !F_CHURNED;
            self.misc.add(b as i64, MISC_REACTIVATED, 1.0);
            self.timers.push(Reverse(Timer {
                instant: ts + prm.inactivity,
                kind: TimerKind::Churn(user),
            }));
        }
        let u = self.users.get_mut(user);
        if was_customer {
            let last_b = prm.bucket_of(u.last_activity) as u32;
            if b > last_b {
                u.prev_activity_bucket = last_b;
            }
        }
        if ts > u.last_activity {
            u.last_activity = ts;
        }
        u.record_activity_day(day_of(ts) as u32);
        if u.has(F_HAS_SIGNUP) {
            for (n, flag) in [(1, F_COHORT_1), (7, F_COHORT_7), (30, F_COHORT_30)] {
                let from = u.signup + n * DAY_MS;
                if ts >= from && ts < from + DAY_MS {
                    u.flags |= flag;
                }
            }
        }
        if !was_customer {
            self.timers.push(Reverse(Timer {
                instant: ts + prm.inactivity,
                kind: TimerKind::Churn(user),
            }));
        }
    }

    fn rated(&mut self, user: UserIdx, ts: Millis, b: i64, r: Ratings, prm: &Params) {
        if let Some(c) = r.csat {
            self.surveys.add(b, SV_CSAT_N, 1.0);
            if c >= 4 {
                self.surveys.add(b, SV_CSAT_SAT, 1.0);
            }
            if c != 3 {
                self.timers.push(Reverse(Timer {
                    instant: ts + prm.inactivity,
                    kind: TimerKind::PostSupport {
                        user,
                        negative: c <= 2,
                    },
                }));
            }
        }
        if let Some(n) = r.nps {
            let f = match n {
                9..=10 => SV_NPS_PROMOTER,
                7..=8 => SV_NPS_PASSIVE,
                _ => SV_NPS_DETRACTOR,
            };
            self.surveys.add(b, f, 1.0);
        }
        if let Some(c) = r.ces {
            self.surveys.add(b, SV_CES_N, 1.0);
            self.surveys.add(b, SV_CES_SUM, c as f64);
            if c >= 5 {
                self.surveys.add(b, SV_CES_EASY, 1.0);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn support(
        &mut self,
        user: UserIdx,
        ticket: u32,
        action: SupportAction,
        priority: Option<Priority>,
        ts: Millis,
        b: i64,
        prm: &Params,
    ) {
        if action == SupportAction::Reopened {
            self.misc.add(b, MISC_REOPENED, 1.0);
        }
        let t = &mut self.tickets.list[ticket as usize];
        if action == SupportAction::Opened {
            // A second `opened` is ignored: the first one stands.
            if t.opened == NEVER {
                let p = priority.unwrap_or_default();
                t.opened = ts;
                t.priority = p;
                t.user = user;
                t.open = true;
                self.sla.add(b, SLA_OPENED + p.index(), 1.0);
                let pi = p.index();
                self.timers.push(Reverse(Timer {
                    instant: ts + prm.fr_target[pi],
                    kind: TimerKind::FirstResponse(ticket),
                }));
                self.timers.push(Reverse(Timer {
                    instant: ts + prm.res_target[pi],
                    kind: TimerKind::Resolution(ticket),
                }));
            }
            return;
        }
        // Actions on a ticket not opened (in event-time order) are ignored.
        if t.opened == NEVER {
            return;
        }
        let p = t.priority;
        let pi = p.index();
        match action {
            SupportAction::AgentReplied => {
                if t.first_reply == NEVER && !t.resolved_ever {
                    t.first_reply = ts;
                    let took = ts - t.opened;
                    self.fr_hist[pi].observe(&prm.hist_bounds, took as f64 / 1000.0);
                    self.fr_times[pi].push_back((ts, took));
                    if t.fr == Decision::Undecided {
                        t.fr = Decision::Met;
                        self.sla
                            .add(b, sla_decision(p, SlaKind::FirstResponse, false), 1.0);
                    }
                }
            }
            SupportAction::Pending => {
                if t.open && !t.resolved_ever && t.pending_since == NEVER {
                    t.pending_since = ts;
                }
            }
            SupportAction::CustomerReplied => {
                if t.pending_since != NEVER {
                    t.paused += ts - t.pending_since;
                    t.pending_since = NEVER;
                    if t.res == Decision::Undecided {
                        self.timers.push(Reverse(Timer {
                            instant: t.opened + prm.res_target[pi] + t.paused,
                            kind: TimerKind::Resolution(ticket),
                        }));
                    }
                }
            }
            SupportAction::Resolved => {
                t.open = false;
                if !t.resolved_ever {
                    t.resolved_ever = true;
                    if t.pending_since != NEVER {
                        t.paused += ts - t.pending_since;
                        t.pending_since = NEVER;
                    }
                    let running = ts - t.opened - t.paused;
                    self.res_hist[pi].observe(&prm.hist_bounds, running as f64 / 1000.0);
                    self.res_times[pi].push_back((ts, running));
                    if t.res == Decision::Undecided {
                        t.res = Decision::Met;
                        self.sla
                            .add(b, sla_decision(p, SlaKind::Resolution, false), 1.0);
                    }
                    if t.fr == Decision::Undecided {
                        t.fr = Decision::Met;
                        self.sla
                            .add(b, sla_decision(p, SlaKind::FirstResponse, false), 1.0);
                    }
                }
            }
            SupportAction::Reopened => {
                if !t.open {
                    t.open = true;
                }
            }
            SupportAction::Opened | SupportAction::Rated => {}
        }
    }

    fn fire(&mut self, timer: Timer, now: Millis, prm: &Params, alerts: &mut Vec<BreachAlert>) {
        let at = timer.instant;
        match timer.kind {
            TimerKind::Churn(user) => {
                let u = self.users.get_mut(user);
                if u.has(F_CHURNED) {
                    return;
                }
                let due = u.last_activity + prm.inactivity;
                if due == at {
                    u.flags |= F_CHURNED;
                    self.misc.add(prm.bucket_of(at), MISC_CHURNED, 1.0);
                } else if due > at {
                    self.timers.push(Reverse(Timer {
                        instant: due,
                        kind: TimerKind::Churn(user),
                    }));
                }
            }
            TimerKind::PostSupport { user, negative } => {
                let s = at - prm.inactivity;
                let churned = self.users.list[user as usize].last_activity <= s;
                let (n, c) = if negative {
                    (PS_NEG_N, PS_NEG_CHURNED)
                } else {
                    (PS_POS_N, PS_POS_CHURNED)
                };
                let b = prm.bucket_of(s);
                self.post_support.add(b, n, 1.0);
                if churned {
                    self.post_support.add(b, c, 1.0);
                }
            }
            TimerKind::FirstResponse(ticket) => {
                let t = &mut self.tickets.list[ticket as usize];
                if t.fr == Decision::Undecided && t.first_reply == NEVER {
                    t.fr = Decision::Breached;
                    let p = t.priority;
                    self.sla.add(
                        prm.bucket_of(at),
                        sla_decision(p, SlaKind::FirstResponse, true),
                        1.0,
                    );
                    alerts.push(self.alert(ticket, SlaKind::FirstResponse, at, now));
                }
            }
            TimerKind::Resolution(ticket) => {
                let t = &mut self.tickets.list[ticket as usize];
                if t.res != Decision::Undecided || t.pending_since != NEVER {
                    // Decided already, or paused: `customer_replied` re-arms it.
                    return;
                }
                let due = t.opened + prm.res_target[t.priority.index()] + t.paused;
                if due > at {
                    self.timers.push(Reverse(Timer {
                        instant: due,
                        kind: TimerKind::Resolution(ticket),
                    }));
                } else if due == at {
                    t.res = Decision::Breached;
                    let p = t.priority;
                    self.sla.add(
                        prm.bucket_of(at),
                        sla_decision(p, SlaKind::Resolution, true),
                        1.0,
                    );
                    alerts.push(self.alert(ticket, SlaKind::Resolution, at, now));
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
        self.users.heap_bytes()
            + self.tickets.heap_bytes()
            + self.timers.capacity() * std::mem::size_of::<Timer>()
            + self.pending.capacity() * std::mem::size_of::<Pending>()
            + self.chan.iter().map(Ring::heap_bytes).sum::<usize>()
            + self.misc.heap_bytes()
            + self.surveys.heap_bytes()
            + self.sla.heap_bytes()
            + self.post_support.heap_bytes()
            + self.dedup.heap_bytes()
            + self
                .fr_times
                .iter()
                .chain(self.res_times.iter())
                .map(|l| l.capacity() * 16)
                .sum::<usize>()
    }

    pub fn timers_len(&self) -> usize {
        self.timers.len()
    }
}
