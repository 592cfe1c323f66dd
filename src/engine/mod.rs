//! The deterministic core: events in, metric state out, time passed in.
//!
//! [`Engine::offer`] decides each event's outcome at arrival (invalid,
//! duplicate, late, applied: in that order) and moves the clock; the
//! effects of applied events wait in a per-partition reorder buffer and are
//! applied in event-time order once final (see [`partition`]).
//!
//! Lateness is judged per input partition, against the largest `ts` applied
//! from that partition: partitions are consumed at different speeds (a
//! backlog is read in batches per partition), and a global clock would turn
//! a lagging partition's events into `late` ones. T, the exported clock, is
//! the largest `ts` over all partitions. With one partition (replay) the two
//! are the same. In `run`, neither runs ahead of the wall clock by more than
//! `engine.clock_tolerance` (see [`clock_target`]).
//!
//! The input partition is the unit of state: everything derived from one
//! partition's messages (its counts, sequence, channel registry, clock,
//! users, tickets, dedup set, reorder buffer, timers, families) lives in
//! its [`Partition`], which can be snapshotted, restored and dropped alone
//! ([`Engine::snapshot_partition`], [`Engine::restore_partition`],
//! [`Engine::drop_partition`]) and so move between instances. Partitions
//! are merged only at export ([`fleet`]): [`Engine::families`] of the
//! partitions held, or [`fold_partials`] of encoded contributions
//! ([`Engine::partials`]) of partitions held anywhere. The engine itself
//! keeps the parameters, T, the cap bookkeeping and the alerts not yet
//! drained.
//!
//! The engine sits on top: it uses the shared stores of [`crate::state`] and
//! the metric families of [`crate::metrics`]; neither imports it.

pub mod fleet;
pub mod partition;
pub mod pending;
mod pipeline;
pub mod snapshot;
mod validate;

pub use fleet::fold_partials;

use std::collections::BTreeMap;

use partition::Partition;
use pending::{Pending, PendingBody};

use crate::event::{Event, EventBody, EventType, Millis, ReferralAction, SupportAction};
use crate::export::Family;
use crate::state::codec::{R, SnapshotError, W, check_count};
use crate::state::dedup::Dedup;
use crate::state::params::{self, Params};
use crate::state::registry::{ChannelId, UNKNOWN};
use crate::state::users;

/// What happened to one message. Checked in this order: invalid, duplicate, late, applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Applied,
    Invalid,
    Duplicate,
    Late,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Applied,
        Outcome::Invalid,
        Outcome::Late,
        Outcome::Duplicate,
    ];
    /// Position in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        match self {
            Outcome::Applied => 0,
            Outcome::Invalid => 1,
            Outcome::Late => 2,
            Outcome::Duplicate => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Invalid => "invalid",
            Outcome::Duplicate => "duplicate",
            Outcome::Late => "late",
        }
    }
}

/// One SLA breach, published on the alerts topic when detected.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BreachAlert {
    pub ticket_id: String,
    pub user_id: String,
    pub priority: &'static str,
    pub kind: &'static str,
    /// Epoch ms.
    pub deadline: Millis,
    /// Engine clock T when the breach became final, epoch ms.
    pub detected_at: Millis,
}

/// Counts of messages by event type (plus `unknown`) and outcome.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventCounts {
    /// `[type index (6 = unknown)][outcome index]`.
    pub counts: [[u64; 4]; 7],
}

impl EventCounts {
    pub(crate) fn add(&mut self, ty: Option<EventType>, o: Outcome) {
        let t = ty.map_or(6, |t| t.index());
        self.counts[t][o.index()] += 1;
    }

    pub fn get(&self, ty: Option<EventType>, o: Outcome) -> u64 {
        let t = ty.map_or(6, |t| t.index());
        self.counts[t][o.index()]
    }

    pub fn total(&self, o: Outcome) -> u64 {
        self.counts.iter().map(|r| r[o.index()]).sum()
    }

    pub fn write(&self, w: &mut W) {
        for row in &self.counts {
            for c in row {
                w.u64(*c);
            }
        }
    }

    pub fn read(r: &mut R<'_>) -> Result<EventCounts, SnapshotError> {
        let mut counts = EventCounts::default();
        for row in counts.counts.iter_mut() {
            for c in row.iter_mut() {
                *c = check_count("event count", r.u64()?)?;
            }
        }
        Ok(counts)
    }

    /// Adds another partition's counts.
    pub fn merge(&mut self, o: &EventCounts) {
        for (a, x) in self.counts.iter_mut().zip(&o.counts) {
            for (a, x) in a.iter_mut().zip(x) {
                *a += x;
            }
        }
    }
}

pub struct Engine {
    pub(crate) prm: Params,
    /// T: the largest applied `ts` (in `run` at most `clock_tolerance` ahead
    /// of the wall clock), or where the wall clock (or `--at`) moved it.
    clock: Option<Millis>,
    /// Set by [`Engine::finish`]: every effect and timer up to T is applied.
    finished: bool,
    pub(crate) parts: BTreeMap<u32, Partition>,
    alerts: Vec<BreachAlert>,
    /// Cap bookkeeping (`engine.max_tracked_users`): after an attempt that
    /// could not get under the cap, no new attempt below this many users.
    pub(crate) cap_retry_at: u64,
}

impl Engine {
    /// An empty engine (see `Config::params` for the parameters of a config).
    pub fn new(prm: Params) -> Engine {
        Engine {
            prm,
            clock: None,
            finished: false,
            parts: BTreeMap::new(),
            alerts: Vec::new(),
            cap_retry_at: 0,
        }
    }

    /// Offers one decoded event from `partition`. `wall_now` is the wall clock
    /// in `run` (for `max_future_skew`), `None` in replay.
    /// The outcome is counted in the partition (created if not held).
    ///
    /// The same code as [`PartApply::offer`] (its two halves, `admit` and
    /// `take`), with the caps between them, which look at every partition.
    pub fn offer(&mut self, partition: u32, ev: &Event<'_>, wall_now: Option<Millis>) -> Outcome {
        let mut part = self.parts.entry(partition).or_default();
        if let Err(o) = admit(
            part,
            &self.prm,
            &mut self.clock,
            &mut self.alerts,
            ev,
            wall_now,
        ) {
            return o;
        }
        // Without hard caps every id may be created (and the partition
        // found above is still the one to use: no second lookup).
        let (mut may_user, mut may_ticket) = (true, true);
        if self.prm.hard_max_tracked_users > 0 || self.prm.max_tracked_tickets > 0 {
            may_user = self.may_create_user(partition, ev);
            may_ticket = self.may_create_ticket();
            part = self.parts.entry(partition).or_default();
        }
        let created = take(part, &self.prm, ev, may_user, may_ticket);
        if self.prm.max_tracked_users > 0 && created {
            self.enforce_cap();
        }
        Outcome::Applied
    }

    /// Whether offers may be applied partition by partition, apart from
    /// one another ([`Engine::split`]): no cap is set (every cap looks at
    /// all partitions at once).
    pub fn splits(&self) -> bool {
        self.prm.max_tracked_users == 0
            && self.prm.hard_max_tracked_users == 0
            && self.prm.max_tracked_tickets == 0
    }

    /// One [`PartApply`] per partition of `pids` (created if not held;
    /// repeats ignored), ascending by partition, each with T as the engine
    /// knows it now; `None` when a cap is set (see [`Engine::splits`]).
    /// What they learn comes back with [`Engine::join`].
    pub fn split(&mut self, pids: &[u32]) -> Option<Vec<PartApply<'_>>> {
        if !self.splits() {
            return None;
        }
        for &pid in pids {
            self.parts.entry(pid).or_default();
        }
        let Engine {
            prm, parts, clock, ..
        } = self;
        let prm = &*prm;
        let clock = *clock;
        Some(
            parts
                .iter_mut()
                .filter(|(pid, _)| pids.contains(pid))
                .map(|(&pid, part)| PartApply {
                    pid,
                    part,
                    prm,
                    clock,
                    alerts: Vec::new(),
                })
                .collect(),
        )
    }

    /// Takes back what split partitions learned ([`PartApply::finish`]): T
    /// moves to the largest T they reached, and their alerts are queued in
    /// the order given.
    pub fn join(&mut self, done: impl IntoIterator<Item = Applied>) {
        for d in done {
            if let Some(t) = d.clock
                && self.clock.is_none_or(|c| t > c)
            {
                self.clock = Some(t);
            }
            self.alerts.extend(d.alerts);
        }
    }

    /// Whether the user of `ev` may be created if new, under
    /// `engine.hard_max_tracked_users`: below the cap, yes; at it, compacted
    /// users last seen longest ago are forgotten first (down to 95% of the
    /// cap, as under the soft cap), and a new id is refused only when none is
    /// left. A held or compacted user is always found.
    fn may_create_user(&mut self, partition: u32, ev: &Event<'_>) -> bool {
        let hard = self.prm.hard_max_tracked_users;
        // Spend and referral events name no user to track.
        let names_user = matches!(
            ev.body,
            EventBody::Signup { .. }
                | EventBody::Deposit { .. }
                | EventBody::Trade { .. }
                | EventBody::Support { .. }
        );
        if hard == 0 || !names_user || (self.tracked_users() as u64) < hard {
            return true;
        }
        let id = ev.user_id.as_deref().unwrap_or("");
        if self
            .parts
            .get(&partition)
            .is_some_and(|p| p.users.contains(id))
        {
            return true;
        }
        if self.compacted_users() > 0 {
            self.forget_compacted((hard - hard / 20).min(hard - 1));
        }
        !self.hard_cap_reached(false)
    }

    /// Whether a new ticket id may be created, under `engine.max_tracked_tickets`.
    fn may_create_ticket(&self) -> bool {
        !self.hard_cap_reached(true)
    }

    /// Whether new ids of that kind are refused now: its hard cap is set and
    /// reached (for users, with no compacted user left to forget to make room).
    pub fn hard_cap_reached(&self, tickets: bool) -> bool {
        let held = || {
            if tickets {
                self.tracked_tickets() as u64
            } else {
                self.tracked_users() as u64
            }
        };
        let compacted = || self.compacted_users() as u64;
        pipeline::cap_reached(&self.prm, tickets, held, compacted)
    }

    /// Under `engine.max_tracked_users`: when more users are held, forgets
    /// compacted users, last seen longest ago first, down to 95% of the cap.
    /// When compacted users are not enough, the next attempt waits until 5%
    /// more users are held (so a full pass is not made per new user).
    fn enforce_cap(&mut self) {
        let cap = self.prm.max_tracked_users;
        let held = self.tracked_users() as u64;
        if held <= cap || held < self.cap_retry_at {
            return;
        }
        let forgotten = self.forget_compacted(cap - cap / 20);
        let after = held - forgotten;
        self.cap_retry_at = if after > cap {
            after + (cap / 20).max(1)
        } else {
            0
        };
    }

    /// Forgets compacted users, last seen longest ago first, until `target`
    /// users are held or none is compacted; returns how many.
    fn forget_compacted(&mut self, target: u64) -> u64 {
        let held = self.tracked_users() as u64;
        let need = held.saturating_sub(target) as usize;
        // (last seen day, partition, cold slot): a total order, so the choice is deterministic.
        let mut cand: Vec<(u32, u32, u32)> = Vec::new();
        for (&pid, p) in &self.parts {
            for (i, c) in p.users.cold.iter().enumerate() {
                if c.flags & users::C_FREE == 0 {
                    cand.push((c.last_seen_day, pid, i as u32));
                }
            }
        }
        if cand.len() > need {
            cand.select_nth_unstable(need);
            cand.truncate(need);
        }
        cand.sort_unstable_by_key(|&(_, pid, i)| (pid, i));
        for (pid, group) in cand.chunk_by(|a, b| a.1 == b.1).map(|g| (g[0].1, g)) {
            let which: Vec<u32> = group.iter().map(|c| c.2).collect();
            if let Some(p) = self.parts.get_mut(&pid) {
                p.users.forget(&which);
            }
        }
        cand.len() as u64
    }

    /// Counts a message of `partition` that could not be decoded (in that
    /// partition, created if not held).
    pub fn record_invalid(&mut self, partition: u32, ty: Option<EventType>) {
        self.parts
            .entry(partition)
            .or_default()
            .counts
            .add(ty, Outcome::Invalid);
    }

    /// The clock T (largest applied `ts`, or where the wall clock moved it).
    pub fn clock(&self) -> Option<Millis> {
        self.clock
    }

    /// Moves T (and every partition's clock) forward to `t`: wall-clock
    /// following when idle, `--at`. Never backwards.
    pub fn advance_to(&mut self, t: Millis) {
        if self.clock.is_none_or(|c| t > c) {
            self.clock = Some(t);
        }
        let now = self.clock.unwrap_or(t);
        for p in self.parts.values_mut() {
            if p.clock.is_none_or(|c| t > c) {
                advance_partition(p, t, now, &self.prm, &mut self.alerts);
            }
        }
    }

    /// The input is complete (end of replay): every pending effect and timer with instant <= T fires.
    pub fn finish(&mut self) {
        let Some(t) = self.clock else { return };
        for p in self.parts.values_mut() {
            p.release(t, t, &self.prm, &mut self.alerts);
        }
        self.finished = true;
    }

    /// SLA breaches detected since the last call.
    pub fn drain_alerts(&mut self) -> Vec<BreachAlert> {
        std::mem::take(&mut self.alerts)
    }

    /// Every series of METRICS.md computed at the current T, and the
    /// engine's own series: the partitions' contributions merged in
    /// partition order (the same code as [`fold_partials`]).
    pub fn families(&self) -> Vec<Family> {
        let parts: Vec<fleet::Contribution> = self
            .parts
            .iter()
            .map(|(id, p)| fleet::Contribution::of(&self.prm, self.clock, *id, p))
            .collect();
        fleet::finish(&self.prm, self.clock, parts.iter())
    }

    /// For the fleet-totals topic: each held partition's contribution at
    /// the current T, encoded self-contained (its metric partial with its
    /// channel names, its message counts, its tracked / compacted /
    /// forgotten / untracked counters), ascending by partition. Folded by
    /// [`fold_partials`].
    pub fn partials(&self) -> Vec<(u32, Vec<u8>)> {
        self.parts
            .iter()
            .map(|(id, p)| {
                let c = fleet::Contribution::of(&self.prm, self.clock, *id, p);
                (*id, c.encode(&self.prm, self.clock))
            })
            .collect()
    }

    /// Input partitions held, ascending.
    pub fn partitions(&self) -> Vec<u32> {
        self.parts.keys().copied().collect()
    }

    /// Holds empty state for `p` unless it holds some (an owned partition
    /// with no snapshot yet).
    pub fn ensure_partition(&mut self, p: u32) {
        self.parts.entry(p).or_default();
    }

    /// Forgets `p` (revoked or lost): from now on it is not exported and
    /// fires no timer. T stays. Returns whether it was held.
    pub fn drop_partition(&mut self, p: u32) -> bool {
        self.parts.remove(&p).is_some()
    }

    /// Users with any state (full or compacted), over all partitions.
    pub fn tracked_users(&self) -> usize {
        self.parts.values().map(|p| p.users.len()).sum()
    }

    /// Of them, users compacted past every horizon.
    pub fn compacted_users(&self) -> usize {
        self.parts.values().map(|p| p.users.cold_len()).sum()
    }

    /// Users forgotten under `engine.max_tracked_users`, all time.
    pub fn forgotten_users(&self) -> u64 {
        self.parts.values().map(|p| p.users.forgotten).sum()
    }

    /// Support tickets held.
    pub fn tracked_tickets(&self) -> usize {
        self.parts.values().map(|p| p.tickets.len()).sum()
    }

    /// Settled tickets forgotten past every horizon, all time.
    pub fn forgotten_tickets(&self) -> u64 {
        self.parts.values().map(|p| p.tickets.forgotten).sum()
    }

    /// Events not tracked because a new user id (`tickets`: a new ticket id)
    /// was beyond a hard cap, all time.
    pub fn untracked_events(&self, tickets: bool) -> u64 {
        let of = |p: &Partition| {
            if tickets {
                p.tickets.untracked
            } else {
                p.users.untracked
            }
        };
        self.parts.values().map(of).sum()
    }

    /// `engine.max_tracked_users` (0 = no cap).
    pub fn max_tracked_users(&self) -> u64 {
        self.prm.max_tracked_users
    }

    /// Messages by type and outcome, over every partition held.
    pub fn event_counts(&self) -> EventCounts {
        let mut c = EventCounts::default();
        for p in self.parts.values() {
            c.merge(&p.counts);
        }
        c
    }

    /// Events accepted but not yet applied (waiting for the lateness to pass).
    pub fn pending_events(&self) -> usize {
        self.parts.values().map(|p| p.pending_len()).sum()
    }

    /// Approximate heap bytes of all engine state (users, tickets, timers, buffers).
    pub fn state_bytes(&self) -> usize {
        self.parts.values().map(|p| p.heap_bytes()).sum()
    }

    /// [`Engine::state_bytes`] by part, summed over the partitions (for
    /// sizing: `benches/memory.rs` prints them per user, ticket and partition).
    pub fn state_bytes_by_part(&self) -> StateBytes {
        let mut b = StateBytes::default();
        for p in self.parts.values() {
            let s = p.state_bytes();
            b.users += s.users;
            b.tickets += s.tickets;
            b.windows += s.windows;
            b.dedup += s.dedup;
            b.other += s.other;
        }
        b
    }
}

/// [`Engine::state_bytes_by_part`]: heap bytes of the tracked users (index,
/// records, ids), the tickets, the metric families' window buckets, the
/// dedup filter, and the rest (reorder buffer, timers, churn queue, channel
/// registry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateBytes {
    pub users: usize,
    pub tickets: usize,
    pub windows: usize,
    pub dedup: usize,
    pub other: usize,
}

impl StateBytes {
    /// Every part: [`Engine::state_bytes`].
    pub fn total(&self) -> usize {
        self.users + self.tickets + self.windows + self.dedup + self.other
    }
}

/// One partition's share of the engine, to apply offers apart from the
/// other partitions (on a thread of its own): its state, the parameters, T
/// as this partition's applier knows it (the engine's T when split, moved
/// by the events applied here) and the alerts it detected.
pub struct PartApply<'e> {
    pid: u32,
    part: &'e mut Partition,
    prm: &'e Params,
    clock: Option<Millis>,
    alerts: Vec<BreachAlert>,
}

/// What a [`PartApply`] learned, for [`Engine::join`].
pub struct Applied {
    clock: Option<Millis>,
    alerts: Vec<BreachAlert>,
}

impl PartApply<'_> {
    /// The partition applied here.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// [`Engine::offer`] of an event of this partition (no cap is set).
    pub fn offer(&mut self, ev: &Event<'_>, wall_now: Option<Millis>) -> Outcome {
        let p = &mut *self.part;
        if let Err(o) = admit(p, self.prm, &mut self.clock, &mut self.alerts, ev, wall_now) {
            return o;
        }
        take(p, self.prm, ev, true, true);
        Outcome::Applied
    }

    /// [`Engine::record_invalid`] for this partition.
    pub fn record_invalid(&mut self, ty: Option<EventType>) {
        self.part.counts.add(ty, Outcome::Invalid);
    }

    /// T as known here.
    pub fn clock(&self) -> Option<Millis> {
        self.clock
    }

    /// Done: what to hand to [`Engine::join`].
    pub fn finish(self) -> Applied {
        Applied {
            clock: self.clock,
            alerts: self.alerts,
        }
    }
}

/// The first half of an offer to partition `part`: the outcome when the
/// event is not applied (invalid, duplicate, late: counted); otherwise the
/// partition's clock and `clock` (T) moved to the event (applying what
/// became final, alerts into `alerts`) and the event left for [`take`].
#[inline(always)]
fn admit(
    part: &mut Partition,
    prm: &Params,
    clock: &mut Option<Millis>,
    alerts: &mut Vec<BreachAlert>,
    ev: &Event<'_>,
    wall_now: Option<Millis>,
) -> Result<(), Outcome> {
    let ty = Some(ev.event_type());
    if let Some(now) = wall_now
        && ev.ts > now.saturating_add(prm.max_future_skew)
    {
        part.counts.add(ty, Outcome::Invalid);
        return Err(Outcome::Invalid);
    }
    // Duplicate first, then late: one probe of the dedup map decides
    // both and admits the id when neither.
    let fp = Dedup::fingerprint(&ev.event_id);
    let horizon = part.clock.map(|t| t.saturating_sub(prm.dedup_horizon));
    let late = part
        .clock
        .is_some_and(|t| ev.ts < t.saturating_sub(prm.lateness));
    if part.dedup.check_insert(fp, horizon, ev.ts, !late) {
        part.counts.add(ty, Outcome::Duplicate);
        return Err(Outcome::Duplicate);
    }
    if late {
        part.counts.add(ty, Outcome::Late);
        return Err(Outcome::Late);
    }
    part.seq += 1;
    // Moving the clock first applies what became final, and runs the
    // day's sweep, before the event's ids are admitted (users compacted
    // by it can be forgotten under a hard cap). The event itself is not
    // final yet, so the order changes no effect.
    // In `run`, never past the wall clock plus `engine.clock_tolerance`
    // (a fast producer cannot make on-time events late).
    let to = clock_target(ev.ts, wall_now, prm.clock_tolerance);
    if part.clock.is_none_or(|t| to > t) {
        if clock.is_none_or(|t| to > t) {
            *clock = Some(to);
        }
        let now = clock.unwrap_or(to);
        advance_partition(part, to, now, prm, alerts);
    }
    Ok(())
}

/// The second half of an offer: the admitted event counted applied and
/// buffered in `part` (its user, ticket, channel interned; a new user or
/// ticket only if `may_user` / `may_ticket`). Returns whether a user was
/// created.
#[inline(always)]
fn take(
    part: &mut Partition,
    prm: &Params,
    ev: &Event<'_>,
    may_user: bool,
    may_ticket: bool,
) -> bool {
    part.counts.add(Some(ev.event_type()), Outcome::Applied);
    let held_before = part.users.len();
    // The partition clock when a channel value is first seen (it moved above).
    let seen = part.clock.unwrap_or(ev.ts);
    let (listed, max) = (&prm.channels[..], prm.max_channels);
    let body = match &ev.body {
        EventBody::Signup {
            channel,
            referrer_id,
            ..
        } => {
            let channel = match (channel, referrer_id) {
                (Some(c), _) => part.registry.resolve(c, seen, listed, max),
                (None, Some(_)) => part.registry.resolve("referral", seen, listed, max),
                (None, None) => UNKNOWN,
            };
            match intern_user(part, ev, may_user) {
                Some(user) => Ok(PendingBody::Signup {
                    user,
                    channel,
                    referred: referrer_id.is_some(),
                }),
                None => Err(Untracked::User(Some(channel))),
            }
        }
        EventBody::Deposit { .. } => intern_user(part, ev, may_user)
            .map(|user| PendingBody::Deposit { user })
            .ok_or(Untracked::User(None)),
        EventBody::Trade { fee_usd, .. } => intern_user(part, ev, may_user)
            .map(|user| PendingBody::Trade {
                user,
                fee: *fee_usd,
            })
            .ok_or(Untracked::User(None)),
        EventBody::Referral {
            action: ReferralAction::InviteSent,
        } => Ok(PendingBody::Invite),
        EventBody::Referral {
            action: ReferralAction::Rewarded { reward_usd },
        } => Ok(PendingBody::Reward {
            usd: *reward_usd,
            referral_channel: part.registry.resolve("referral", seen, listed, max),
        }),
        EventBody::Spend {
            channel,
            amount_usd,
        } => Ok(PendingBody::Spend {
            channel: part.registry.resolve(channel, seen, listed, max),
            usd: *amount_usd,
        }),
        EventBody::Support {
            action: SupportAction::Rated,
            ratings,
            ..
        } => intern_user(part, ev, may_user)
            .map(|user| PendingBody::Rated {
                user,
                ratings: *ratings,
            })
            .ok_or(Untracked::User(None)),
        EventBody::Support {
            ticket_id,
            action,
            priority,
            ..
        } => {
            // The ticket is admitted first: a refused ticket creates no user.
            if !may_ticket && !part.tickets.contains(ticket_id) {
                Err(Untracked::Ticket)
            } else {
                match intern_user(part, ev, may_user) {
                    Some(user) => Ok(PendingBody::Support {
                        user,
                        ticket: part.tickets.intern(ticket_id, ev.ts),
                        action: *action,
                        priority: *priority,
                    }),
                    None => Err(Untracked::User(None)),
                }
            }
        }
    };
    match body {
        Ok(body) => {
            let seq = part.seq;
            part.push(Pending {
                ts: ev.ts,
                seq,
                body,
            })
        }
        Err(Untracked::User(signup)) => part.users.untracked_event(signup),
        Err(Untracked::Ticket) => part.tickets.untracked += 1,
    }
    part.users.len() > held_before
}

/// Where an applied event at `ts` moves its partition's clock (and T): to
/// `ts`, but in `run` (`wall_now` given) no further than `tolerance` ahead
/// of the wall clock. An event further ahead (a producer whose clock runs
/// fast) waits in the reorder buffer until the clock reaches it, and cannot
/// make on-time events late. Replay has no wall clock: always `ts`.
fn clock_target(ts: Millis, wall_now: Option<Millis>, tolerance: Millis) -> Millis {
    match wall_now {
        Some(now) => ts.min(now.saturating_add(tolerance)),
        None => ts,
    }
}

/// Moves a partition's clock to `t` and applies what became final
/// (inlined into every offer that moves the clock: most of them).
#[inline(always)]
fn advance_partition(
    p: &mut Partition,
    t: Millis,
    now: Millis,
    prm: &Params,
    alerts: &mut Vec<BreachAlert>,
) {
    p.clock = Some(t);
    // Strictly before t - lateness: an event at exactly t - lateness is
    // still accepted and must be ordered before timers at that instant.
    p.release(t - prm.lateness - 1, now, prm, alerts);
    p.dedup.expire(t.saturating_sub(prm.dedup_horizon));
}

/// Why an accepted event was not tracked (a hard cap was reached).
enum Untracked {
    /// A new user id; with the channel of a signup (kept in all-time counts).
    User(Option<ChannelId>),
    /// A new ticket id.
    Ticket,
}

/// The user of `ev` (created if new and `may_create`).
fn intern_user(part: &mut Partition, ev: &Event<'_>, may_create: bool) -> Option<users::UserIdx> {
    // The decoder guarantees a user_id on every type but spend.
    let day = params::day_of(ev.ts).clamp(0, u32::MAX as i64) as u32;
    part.users
        .intern_if(ev.user_id.as_deref().unwrap_or(""), day, may_create)
}

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
