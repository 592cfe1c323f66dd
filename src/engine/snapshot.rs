//! Engine state to bytes and back, for checkpoints.
//!
//! A plain little-endian encoding ([`crate::state::codec`]) of every piece of
//! state: here the engine container (clock, cap bookkeeping, then one
//! self-contained snapshot per input partition) and a partition's state
//! (its counts, channel registry, users, tickets, dedup horizon, reorder
//! buffer, timers);
//! each metric family encodes its own state (`write`/`read` in its file) and
//! its timers. Hash indexes are not written: they are rebuilt on restore. Framing, versioning and checksums
//! are the checkpoint store's business; this module only refuses bytes it
//! cannot read completely.

use std::cmp::Reverse;
use std::io;
use std::ops::Deref;

use super::partition::{FamilyTimer, Partition, Timer, TimerKind};
use super::pending::{Pending, PendingBody};
use super::{Engine, EventCounts};
use crate::event::{Ratings, SupportAction};
use crate::metrics::{Families, retention, support};
use crate::state::chunked::Chunked;
pub use crate::state::codec::SnapshotError;
use crate::state::codec::{R, Spill, W, check_count, check_index, check_time};
use crate::state::dedup::{self, Dedup, Order};
use crate::state::params::Params;
use crate::state::registry::ChannelRegistry;
use crate::state::tickets::{Decision, Ticket, Tickets};
use crate::state::users::{Arena, Cold, MAX_USER_CHANNEL, MAX_USER_DAY, User, UserList, Users};

/// Bytes a streamed snapshot buffers before handing them on (see
/// [`FrozenEngine::write_to`]): it holds at most this plus one piece (a
/// chunk of user records, a few KB, or a frozen view's small parts).
pub const SPILL_BYTES: usize = 1 << 20;

/// Where snapshot bytes are encoded: a whole [`W`], or a [`Spill`] that
/// hands them on as it fills.
trait Out {
    fn w(&mut self) -> &mut W;
    /// Between pieces: lets a [`Spill`] hand its bytes on.
    fn spill(&mut self) {}
    fn put(&mut self, b: &[u8]) {
        self.w().0.extend_from_slice(b);
    }
}

impl Out for W {
    fn w(&mut self) -> &mut W {
        self
    }
}

impl Out for Spill<'_> {
    fn w(&mut self) -> &mut W {
        Spill::w(self)
    }
    fn spill(&mut self) {
        Spill::spill(self)
    }
    fn put(&mut self, b: &[u8]) {
        Spill::put(self, b)
    }
}

/// Encoded bytes of one user record and of one compacted user record
/// ([`write_users`]).
const USER_BYTES: usize = 50;
const COLD_BYTES: usize = 14;

const ACTIONS: [SupportAction; 7] = [
    SupportAction::Opened,
    SupportAction::AgentReplied,
    SupportAction::CustomerReplied,
    SupportAction::Pending,
    SupportAction::Resolved,
    SupportAction::Reopened,
    SupportAction::Rated,
];

fn action_code(a: SupportAction) -> u8 {
    ACTIONS.iter().position(|x| *x == a).unwrap_or(0) as u8
}

fn decision_code(d: Decision) -> u8 {
    match d {
        Decision::Undecided => 0,
        Decision::Met => 1,
        Decision::Breached => 2,
    }
}

fn decision(v: u8) -> Result<Decision, SnapshotError> {
    match v {
        0 => Ok(Decision::Undecided),
        1 => Ok(Decision::Met),
        2 => Ok(Decision::Breached),
        _ => Err(SnapshotError::Invalid("decision")),
    }
}

/// Leads every partition snapshot ("CXPS" little-endian), then its format version.
const PART_MAGIC: u32 = u32::from_le_bytes(*b"CXPS");
/// 2: no churn timers (churn instants follow from the users' last
/// activity). Version 1 is still read: its churn timers are dropped.
const PART_VERSION: u8 = 2;
/// The oldest version still read.
const PART_VERSION_MIN: u8 = 1;

impl Engine {
    /// All engine state as bytes: a container of partition snapshots.
    /// Alerts not yet drained are not included.
    ///
    /// ```text
    /// bucket        i64   engine.bucket in ms
    /// clock         u8 0 | u8 1 + i64   T
    /// finished      u8
    /// cap_retry_at  u64
    /// partitions    u64 count, then per partition (ascending): id u32,
    ///               u64 length + Engine::snapshot_partition bytes
    /// ```
    pub fn snapshot(&self) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(self.snapshot_capacity()));
        self.write_engine_head(&mut w);
        for (id, p) in &self.parts {
            write_framed(&mut w, *id, |w| write_partition_snapshot(w, &self.prm, p));
        }
        w.0
    }

    /// About the size of a snapshot now (it is close to the state in memory).
    pub fn snapshot_capacity(&self) -> usize {
        self.state_bytes() + 4096
    }

    /// The container's fields before its partitions.
    fn write_engine_head(&self, w: &mut W) {
        w.i64(self.prm.bucket);
        w.opt_i64(self.clock);
        w.u8(self.finished as u8);
        w.u64(self.cap_retry_at);
        w.len(self.parts.len());
    }

    /// Partition `p`'s whole state as self-contained bytes (its counts,
    /// channel registry, clock, users, tickets, dedup, reorder buffer,
    /// timers, families). None if not held.
    pub fn snapshot_partition(&self, p: u32) -> Option<Vec<u8>> {
        let part = self.parts.get(&p)?;
        let mut w = W(Vec::with_capacity(part.heap_bytes() + 4096));
        write_partition_snapshot(&mut w, &self.prm, part);
        Some(w.0)
    }

    /// A frozen view of partition `p` to encode later, on any thread:
    /// [`FrozenPartition::encode`] gives exactly the bytes
    /// [`Engine::snapshot_partition`] gives now, whatever the engine does in
    /// between. None if not held.
    ///
    /// Cheap: the big tables (users, compacted users, the id arena, timers)
    /// are copy-on-write chunks ([`crate::state::chunked`]) and are shared,
    /// not copied; so is the dedup expiry queue (immutable blocks,
    /// [`crate::state::queue`]: its entries are encoded by the view, later);
    /// the rest (counts, registry, tickets, the reorder buffer, the
    /// families' rings) is small and encoded now.
    pub fn freeze_partition(&mut self, p: u32) -> Option<FrozenPartition> {
        let part = self.parts.get_mut(&p)?;
        Some(FrozenPartition::of(&self.prm, part))
    }

    /// Event ids held for duplicate detection, over all partitions (their
    /// expiry queues: shared by a freeze, encoded by the frozen view).
    pub fn dedup_ids_held(&self) -> usize {
        self.parts.values().map(|p| p.dedup.len()).sum()
    }

    /// A frozen view of the whole engine: [`FrozenEngine::write_to`]
    /// streams exactly the bytes [`Engine::snapshot`] gives now.
    pub fn freeze(&mut self) -> FrozenEngine {
        let mut w = W(Vec::with_capacity(64));
        self.write_engine_head(&mut w);
        let prm = &self.prm;
        let parts = self
            .parts
            .iter_mut()
            .map(|(id, p)| (*id, FrozenPartition::of(prm, p)))
            .collect();
        FrozenEngine { head: w.0, parts }
    }

    /// Replaces `p`'s state with [`Engine::snapshot_partition`] bytes; T
    /// becomes max(T, its clock). On Err nothing changes: bytes of another
    /// bucket size, or that do not read or validate completely, are refused
    /// (as `InPartition` naming `p`).
    pub fn restore_partition(&mut self, p: u32, bytes: &[u8]) -> Result<(), SnapshotError> {
        let in_part = |error| SnapshotError::InPartition {
            partition: p,
            error: Box::new(error),
        };
        let part = read_partition_snapshot(&self.prm, bytes).map_err(in_part)?;
        let others = self.parts.iter().filter(|(id, _)| **id != p).map(|e| e.1);
        super::validate::totals(others.chain([&part]))?;
        if let Some(c) = part.clock
            && self.clock.is_none_or(|t| c > t)
        {
            self.clock = Some(c);
        }
        self.parts.insert(p, part);
        Ok(())
    }

    /// Rebuilds an engine from [`Engine::snapshot`] bytes, under `prm`.
    pub fn restore(prm: Params, bytes: &[u8]) -> Result<Engine, SnapshotError> {
        let mut e = Engine::new(prm);
        let mut r = R::new(bytes);
        let bucket = r.i64()?;
        if bucket != e.prm.bucket {
            return Err(SnapshotError::BucketChanged {
                taken: bucket,
                now: e.prm.bucket,
            });
        }
        e.clock = r.opt_i64("clock")?;
        if let Some(t) = e.clock {
            check_time("clock", t)?;
        }
        e.finished = r.bool("finished flag")?;
        e.cap_retry_at = r.u64()?;
        let n = r.len(12)?;
        for _ in 0..n {
            let id = r.u32()?;
            if e.parts
                .last_key_value()
                .is_some_and(|(last, _)| *last >= id)
            {
                return Err(SnapshotError::Invalid("partition order"));
            }
            let p = r
                .bytes()
                .and_then(|b| read_partition_snapshot(&e.prm, b))
                .map_err(|error| SnapshotError::InPartition {
                    partition: id,
                    error: Box::new(error),
                })?;
            e.parts.insert(id, p);
        }
        r.end()?;
        super::validate::totals(e.parts.values())?;
        Ok(e)
    }
}

/// One partition's snapshot: header, counts, registry, then its state.
///
/// ```text
/// magic "CXPS" u32, version u8, bucket i64, sequence u64,
/// counts 7 x 4 u64, channels: u64 count + (name, first-seen i64) each,
/// overflow flag u8, then the users, tickets, dedup, reorder buffer,
/// timers, families, clock (write_partition)
/// ```
fn write_partition_snapshot(w: &mut W, prm: &Params, p: &Partition) {
    write_head(w, prm, p);
    let u = &p.users;
    write_users(
        w,
        (u.arena.len(), u.arena.slices()),
        (u.list.len(), u.list.slices()),
        (u.cold.len(), u.cold.slices()),
    );
    write_middle(w, p);
    write_dedup(w, &p.dedup.order);
    write_pending(w, p);
    write_timers(w, p.timers.storage());
    write_tail(w, p);
}

/// `id`, then the u64 length of what `f` writes, then that.
fn write_framed(w: &mut W, id: u32, f: impl FnOnce(&mut W)) {
    w.u32(id);
    // The length is written once the partition is.
    let at = w.0.len();
    w.u64(0);
    f(w);
    let n = (w.0.len() - at - 8) as u64;
    w.0[at..at + 8].copy_from_slice(&n.to_le_bytes());
}

/// The partition snapshot's header, counts and registry.
fn write_head(w: &mut W, prm: &Params, p: &Partition) {
    w.header(PART_MAGIC, PART_VERSION, prm.bucket);
    w.u64(p.seq);
    p.counts.write(w);
    let reg = &p.registry;
    w.len(reg.len_with_specials() - 2);
    for id in reg.registered() {
        w.bytes(reg.name(id).as_bytes());
        w.i64(reg.first_seen(id));
    }
    w.u8(reg.overflowed as u8);
}

fn read_partition_snapshot(prm: &Params, bytes: &[u8]) -> Result<Partition, SnapshotError> {
    let mut r = R::new(bytes);
    let what = ("partition snapshot magic", "partition snapshot version");
    let version = r.header_of(
        PART_MAGIC,
        PART_VERSION_MIN..=PART_VERSION,
        prm.bucket,
        what,
    )?;
    let seq = check_count("event sequence number", r.u64()?)?;
    let counts = EventCounts::read(&mut r)?;
    let n = r.len(16)?;
    let mut values = Vec::with_capacity(n.min(prm.max_channels));
    for _ in 0..n {
        let name = r.string()?;
        let seen = check_time("channel first-seen time", r.i64()?)?;
        values.push((name, seen));
    }
    let overflowed = r.bool("channel overflow flag")?;
    let registry = ChannelRegistry::rebuild(values, overflowed, &prm.channels, prm.max_channels)
        .ok_or(SnapshotError::Invalid("channel registry"))?;
    let mut p = read_partition(&mut r, version)?;
    r.end()?;
    p.seq = seq;
    p.counts = counts;
    p.registry = registry;
    super::validate::partition(&p, p.registry.len_with_specials())?;
    Ok(p)
}

/// Users: the arena and the fixed-size records (hot, then compacted).
/// Each table is given as its length and its contiguous pieces in order;
/// `o` may hand its bytes on after each piece.
fn write_users<A, L, C>(
    o: &mut impl Out,
    arena: (usize, impl IntoIterator<Item = A>),
    list: (usize, impl IntoIterator<Item = L>),
    cold: (usize, impl IntoIterator<Item = C>),
) where
    A: Deref<Target = [u8]>,
    L: Deref<Target = [User]>,
    C: Deref<Target = [Cold]>,
{
    o.w().len(arena.0);
    for s in arena.1 {
        o.put(&s);
    }
    o.w().len(list.0);
    for piece in list.1 {
        let w = o.w();
        for u in piece.iter() {
            w.i64(u.signup());
            w.i64(u.last_activity());
            w.u64(u.days_bits);
            w.u32(u.first_deposit);
            w.u32(u.first_trade);
            w.u32(u.prev_activity_bucket);
            w.u32(u.days_anchor());
            w.u32(u.id_off);
            w.u8(u.id_len);
            w.u8(u.flags);
            w.u32(u.channel() as u32);
        }
        o.spill();
    }
    o.w().len(cold.0);
    for piece in cold.1 {
        let w = o.w();
        for c in piece.iter() {
            w.u32(c.id_off);
            w.u8(c.id_len);
            w.u8(c.flags);
            w.u32(c.channel as u32);
            w.u32(c.last_seen_day);
        }
        o.spill();
    }
}

/// Bytes of one dedup entry in a snapshot: event time, fingerprint.
const DEDUP_ENTRY: usize = 8 + 16;

/// At least the bytes [`write_middle`] writes for `p` (ticket ids counted
/// at up to 64 bytes; a longer one only makes the buffer grow once).
fn middle_bound(p: &Partition) -> usize {
    const TICKET: usize = 8 + 64 + 4 + 8 + 1 + 8 + 1 + 1 + 1 + 1 + 8 + 8 + 8;
    64 + p.users.forgotten_signups.len() * 8 + p.tickets.list.len() * TICKET
}

/// At least the bytes [`write_pending`] writes for `p`.
fn pending_bound(p: &Partition) -> usize {
    // Time, sequence, tag, and the largest body (a trade, reward or spend: 12).
    const PENDING: usize = 8 + 8 + 1 + 12;
    8 + p.pending_len() * PENDING
}

/// After the user records, up to the dedup queue: the rest of the users'
/// fields, the tickets.
fn write_middle(w: &mut W, p: &Partition) {
    w.u64(p.users.forgotten);
    w.len(p.users.forgotten_signups.len());
    for n in &p.users.forgotten_signups {
        w.u64(*n);
    }
    w.u8(p.users.forgotten_unknown as u8);
    w.len(p.tickets.list.len());
    for t in &p.tickets.list {
        w.bytes(t.id.as_bytes());
        w.u32(t.user);
        w.i64(t.opened);
        w.u8(t.priority.index() as u8);
        w.i64(t.first_reply);
        w.u8(decision_code(t.fr));
        w.u8(decision_code(t.res));
        w.u8(t.resolved_ever as u8);
        w.u8(t.open as u8);
        w.i64(t.paused);
        w.i64(t.pending_since);
        w.i64(t.last_seen);
    }
    w.u64(p.tickets.forgotten);
}

/// The dedup expiry queue: its length, then each entry (event time,
/// fingerprint), one block at a time; `o` may hand its bytes on after each.
fn write_dedup(o: &mut impl Out, order: &Order) {
    o.w().len(order.len());
    for piece in order.slices() {
        // In one pass over bytes reserved at once.
        let w = o.w();
        let start = w.0.len();
        w.0.resize(start + piece.len() * DEDUP_ENTRY, 0);
        for (e, out) in piece.iter().zip(w.0[start..].chunks_exact_mut(DEDUP_ENTRY)) {
            out[..8].copy_from_slice(&e.0.to_le_bytes());
            out[8..].copy_from_slice(&dedup::entry_fp(e).to_le_bytes());
        }
        o.spill();
    }
}

/// What [`write_dedup`] writes for `order`, in bytes.
fn dedup_len(order: &Order) -> usize {
    8 + order.len() * DEDUP_ENTRY
}

/// After the dedup queue, up to the timers: the reorder buffer.
fn write_pending(w: &mut W, p: &Partition) {
    let mut pending: Vec<&Pending> = p.pending.iter().collect();
    pending.sort();
    w.len(pending.len());
    for q in pending {
        w.i64(q.ts);
        w.u64(q.seq);
        match &q.body {
            PendingBody::Signup {
                user,
                channel,
                referred,
            } => {
                w.u8(0);
                w.u32(*user);
                w.u32(*channel as u32);
                w.u8(*referred as u8);
            }
            PendingBody::Deposit { user } => {
                w.u8(1);
                w.u32(*user);
            }
            PendingBody::Trade { user, fee } => {
                w.u8(2);
                w.u32(*user);
                w.f64(*fee);
            }
            PendingBody::Invite => w.u8(3),
            PendingBody::Reward {
                usd,
                referral_channel,
            } => {
                w.u8(4);
                w.f64(*usd);
                w.u32(*referral_channel as u32);
            }
            PendingBody::Support {
                user,
                ticket,
                action,
                priority,
            } => {
                w.u8(5);
                w.u32(*user);
                w.u32(*ticket);
                w.u8(action_code(*action));
                w.opt_u8(priority.map(|p| p.index() as u8));
            }
            PendingBody::Rated { user, ratings } => {
                w.u8(6);
                w.u32(*user);
                w.opt_u8(ratings.csat);
                w.opt_u8(ratings.ces);
                w.opt_u8(ratings.nps);
            }
            PendingBody::Spend { channel, usd } => {
                w.u8(7);
                w.u32(*channel as u32);
                w.f64(*usd);
            }
        }
    }
}

/// The timers (kept in heap order), in time order.
fn write_timers(o: &mut impl Out, heap: &Chunked<Reverse<Timer>>) {
    let timers = sorted_timers(heap);
    o.w().len(timers.len());
    for piece in timers.chunks(1024) {
        for t in piece {
            write_timer(o.w(), t);
        }
        o.spill();
    }
}

fn sorted_timers(heap: &Chunked<Reverse<Timer>>) -> Vec<&Timer> {
    let mut timers: Vec<&Timer> = heap.iter().map(|r| &r.0).collect();
    timers.sort_unstable();
    timers
}

fn write_timer(w: &mut W, t: &Timer) {
    w.i64(t.instant);
    match t.kind.family() {
        FamilyTimer::Retention(k) => {
            w.u8(0);
            k.write(w);
        }
        FamilyTimer::Support(k) => {
            w.u8(1);
            k.write(w);
        }
    }
}

/// What [`write_timers`] writes for `heap`, in bytes.
fn timers_len(heap: &Chunked<Reverse<Timer>>) -> usize {
    let mut w = W(Vec::with_capacity(32));
    8 + heap
        .iter()
        .map(|r| {
            w.0.clear();
            write_timer(&mut w, &r.0);
            w.0.len()
        })
        .sum::<usize>()
}

/// After the timers: the families, the clocks, the untracked counts.
fn write_tail(w: &mut W, p: &Partition) {
    p.families.write(w);
    w.i64(p.applied_through);
    w.i64(p.last_trim);
    w.i64(p.last_sweep_day);
    w.opt_i64(p.clock);
    w.u64(p.users.untracked);
    w.u64(p.tickets.untracked);
}

/// A user's channel id as read: within what a [`User`] holds (a registry
/// has at most 1002 ids; the registry check comes later).
fn user_channel(v: u32) -> Result<u16, SnapshotError> {
    u16::try_from(v)
        .ok()
        .filter(|&c| c <= MAX_USER_CHANNEL)
        .ok_or(SnapshotError::Invalid("channel"))
}

/// A user's day index as read (at most [`MAX_USER_DAY`], in the year 13453).
fn user_day(v: u32) -> Result<u32, SnapshotError> {
    if v <= MAX_USER_DAY {
        Ok(v)
    } else {
        Err(SnapshotError::OutOfRange {
            what: "user day index",
            value: v.to_string(),
        })
    }
}

fn read_partition(r: &mut R<'_>, version: u8) -> Result<Partition, SnapshotError> {
    let mut p = Partition::default();
    let arena = Arena::from_slice(r.bytes()?);
    let n = r.len(48)?;
    let mut users = Users {
        arena,
        ..Default::default()
    };
    for _ in 0..n {
        let (signup, last) = (r.i64()?, r.i64()?);
        for (what, t) in [
            ("user signup time", signup),
            ("user last activity time", last),
        ] {
            if !User::holds_time(t) {
                return Err(SnapshotError::OutOfRange {
                    what,
                    value: t.to_string(),
                });
            }
        }
        let mut u = User::default();
        u.set_signup(signup);
        u.set_last_activity(last);
        u.days_bits = r.u64()?;
        u.first_deposit = r.u32()?;
        u.first_trade = r.u32()?;
        u.prev_activity_bucket = r.u32()?;
        u.set_days_anchor(user_day(r.u32()?)?);
        u.id_off = r.u32()?;
        u.id_len = r.u8()?;
        u.flags = r.u8()?;
        u.set_channel(user_channel(r.u32()?)?);
        users.list.push(u);
    }
    let n = r.len(14)?;
    for _ in 0..n {
        let c = Cold {
            id_off: r.u32()?,
            id_len: r.u8()?,
            flags: r.u8()?,
            channel: user_channel(r.u32()?)?,
            last_seen_day: user_day(r.u32()?)?,
        };
        users.cold.push(c);
    }
    users.forgotten = r.u64()?;
    let n = r.len(8)?;
    for _ in 0..n {
        users.forgotten_signups.push(r.u64()?);
    }
    users.forgotten_unknown = r.bool("forgotten unknown flag")?;
    users.rebuild_index()?;
    p.users = users;
    let n = r.len(40)?;
    let mut tickets = Tickets::default();
    for _ in 0..n {
        let id = r.string()?;
        let t = Ticket {
            id: id.into_boxed_str(),
            user: r.u32()?,
            opened: r.i64()?,
            priority: r.priority()?,
            first_reply: r.i64()?,
            fr: decision(r.u8()?)?,
            res: decision(r.u8()?)?,
            resolved_ever: r.bool("ticket resolved flag")?,
            open: r.bool("ticket open flag")?,
            paused: r.i64()?,
            pending_since: r.i64()?,
            last_seen: r.i64()?,
        };
        if !t.is_free()
            && tickets
                .index
                .insert(t.id.clone(), tickets.list.len() as u32)
                .is_some()
        {
            return Err(SnapshotError::Invalid("ticket id held twice"));
        }
        tickets.list.push(t);
    }
    tickets.forgotten = r.u64()?;
    tickets.rebuild_free();
    p.tickets = tickets;
    let n = r.len(24)?;
    let mut dedup = Dedup::default();
    for _ in 0..n {
        let ts = r.i64()?;
        let fp = r.u128()?;
        dedup.insert(fp, ts);
    }
    p.dedup = dedup;
    let users_n = p.users.list.len() as u32;
    let tickets_n = p.tickets.list.len() as u32;
    let user = |u: u32| check_index("pending event's user", u as u64, users_n as usize).map(|()| u);
    let ticket =
        |t: u32| check_index("pending event's ticket", t as u64, tickets_n as usize).map(|()| t);
    let chan = |c: u32| u16::try_from(c).map_err(|_| SnapshotError::Invalid("channel"));
    let n = r.len(17)?;
    for _ in 0..n {
        let ts = r.i64()?;
        let seq = r.u64()?;
        let body = match r.u8()? {
            0 => PendingBody::Signup {
                user: user(r.u32()?)?,
                channel: chan(r.u32()?)?,
                referred: r.bool("referred flag")?,
            },
            1 => PendingBody::Deposit {
                user: user(r.u32()?)?,
            },
            2 => PendingBody::Trade {
                user: user(r.u32()?)?,
                fee: r.f64()?,
            },
            3 => PendingBody::Invite,
            4 => PendingBody::Reward {
                usd: r.f64()?,
                referral_channel: chan(r.u32()?)?,
            },
            5 => PendingBody::Support {
                user: user(r.u32()?)?,
                ticket: ticket(r.u32()?)?,
                action: *ACTIONS
                    .get(r.u8()? as usize)
                    .ok_or(SnapshotError::Invalid("support action"))?,
                priority: r.opt_priority()?,
            },
            6 => PendingBody::Rated {
                user: user(r.u32()?)?,
                ratings: Ratings {
                    csat: r.opt_u8()?,
                    ces: r.opt_u8()?,
                    nps: r.opt_u8()?,
                },
            },
            7 => PendingBody::Spend {
                channel: chan(r.u32()?)?,
                usd: r.f64()?,
            },
            _ => return Err(SnapshotError::Invalid("pending event")),
        };
        p.pending.push(Pending { ts, seq, body });
    }
    let n = r.len(14)?;
    for _ in 0..n {
        let instant = r.i64()?;
        let kind = match r.u8()? {
            0 => match retention::Timer::read(r, users_n, version == 1)? {
                Some(t) => TimerKind::from(t),
                None => continue,
            },
            1 => TimerKind::from(support::Timer::read(r, tickets_n)?),
            _ => return Err(SnapshotError::Invalid("timer")),
        };
        p.timers.push(Reverse(Timer { instant, kind }));
    }
    p.families = Families::read(r)?;
    p.applied_through = r.i64()?;
    p.churn = retention::ChurnQueue::after(p.applied_through);
    p.last_trim = r.i64()?;
    p.last_sweep_day = r.i64()?;
    p.clock = r.opt_i64("partition clock")?;
    p.users.untracked = r.u64()?;
    p.tickets.untracked = r.u64()?;
    Ok(p)
}

/// See [`Engine::freeze_partition`]: `Send + 'static`, encoded off the
/// thread that owns the engine. The big tables are shared with the engine
/// copy-on-write; the small parts are already encoded.
pub struct FrozenPartition {
    /// Header, counts, registry.
    head: Vec<u8>,
    arena: Arena,
    list: UserList,
    cold: Chunked<Cold>,
    /// The users' forgotten counts, the tickets.
    middle: Vec<u8>,
    /// The dedup expiry queue, sharing its full blocks with the engine:
    /// encoded by [`FrozenPartition::write_to`], not at the freeze.
    dedup: Order,
    /// The reorder buffer.
    pending: Vec<u8>,
    /// In heap order.
    timers: Chunked<Reverse<Timer>>,
    /// Families, clocks, untracked counts.
    tail: Vec<u8>,
}

impl FrozenPartition {
    fn of(prm: &Params, p: &mut Partition) -> FrozenPartition {
        let eager = |f: &dyn Fn(&mut W)| {
            let mut w = W(Vec::new());
            f(&mut w);
            w.0
        };
        // The encoded parts are reserved whole (upper bounds; untouched
        // pages cost nothing): grown by doubling they were copied and
        // faulted in several times, on the loop. The dedup queue, the bulk
        // of the middle, is not encoded here: its blocks are shared.
        let mut w = W(Vec::with_capacity(middle_bound(p)));
        write_middle(&mut w, p);
        let mut pending = W(Vec::with_capacity(pending_bound(p)));
        write_pending(&mut pending, p);
        FrozenPartition {
            head: eager(&|w| write_head(w, prm, p)),
            arena: p.users.arena.share(),
            list: p.users.list.share(),
            cold: p.users.cold.share(),
            middle: w.0,
            dedup: p.dedup.share_order(),
            pending: pending.0,
            timers: p.timers.share_storage(),
            tail: eager(&|w| write_tail(w, p)),
        }
    }

    /// The length of the encoded bytes, exactly (the timers are sized by
    /// encoding them one at a time).
    pub fn encoded_len(&self) -> usize {
        self.head.len()
            + 8
            + self.arena.len()
            + 8
            + self.list.len() * USER_BYTES
            + 8
            + self.cold.len() * COLD_BYTES
            + self.middle.len()
            + dedup_len(&self.dedup)
            + self.pending.len()
            + timers_len(&self.timers)
            + self.tail.len()
    }

    /// Writes the snapshot, letting go of each user chunk once written.
    fn write(self, o: &mut impl Out) {
        o.put(&self.head);
        write_users(
            o,
            (self.arena.len(), self.arena.into_pieces()),
            (self.list.len(), self.list.into_pieces()),
            (self.cold.len(), self.cold.into_pieces()),
        );
        o.put(&self.middle);
        write_dedup(o, &self.dedup);
        drop(self.dedup);
        o.put(&self.pending);
        write_timers(o, &self.timers);
        o.put(&self.tail);
        o.spill();
    }

    /// The partition's snapshot bytes as of the freeze.
    pub fn encode(self) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(self.encoded_len()));
        self.write(&mut w);
        w.0
    }

    /// Streams the partition's snapshot bytes as of the freeze into `out`
    /// through a buffer of about [`SPILL_BYTES`] (never the whole snapshot
    /// in memory); the user chunks are let go as they are written.
    pub fn write_to(self, out: &mut dyn io::Write) -> io::Result<()> {
        let mut s = Spill::new(out, SPILL_BYTES);
        self.write(&mut s);
        s.finish()
    }

    /// Heap bytes this view alone keeps alive now: its encoded parts, and
    /// the chunks the engine has since copied (written to) or dropped.
    pub fn held_bytes(&self) -> usize {
        self.head.capacity()
            + self.middle.capacity()
            + self.dedup.unshared_bytes()
            + self.pending.capacity()
            + self.tail.capacity()
            + self.arena.unshared_bytes()
            + self.list.unshared_bytes()
            + self.cold.unshared_bytes()
            + self.timers.unshared_bytes()
    }
}

/// See [`Engine::freeze`].
pub struct FrozenEngine {
    /// The container's fields before its partitions.
    head: Vec<u8>,
    parts: Vec<(u32, FrozenPartition)>,
}

impl FrozenEngine {
    /// Streams the engine's snapshot bytes as of the freeze (exactly those
    /// of [`Engine::snapshot`] then) into `out` through a buffer of about
    /// [`SPILL_BYTES`]: each partition's length is known before it is
    /// encoded, so nothing is written twice and the whole snapshot is never
    /// in memory. The user chunks are let go as they are written. Err: the
    /// first error of `out` (nothing more is written after it).
    pub fn write_to(self, out: &mut dyn io::Write) -> io::Result<()> {
        self.stream(out, SPILL_BYTES)
    }

    /// [`FrozenEngine::write_to`] through a buffer of about `limit` bytes.
    fn stream(self, out: &mut dyn io::Write, limit: usize) -> io::Result<()> {
        let mut s = Spill::new(out, limit);
        s.put(&self.head);
        for (id, p) in self.parts {
            let len = p.encoded_len();
            s.w().u32(id);
            s.w().u64(len as u64);
            let start = s.total();
            p.write(&mut s);
            let wrote = s.total() - start;
            if wrote != len as u64 {
                return Err(io::Error::other(format!(
                    "engine partition {id} encoded {wrote} bytes, not the {len} it was sized at"
                )));
            }
        }
        s.finish()
    }

    /// Heap bytes this view alone keeps alive now (see [`FrozenPartition::held_bytes`]).
    pub fn held_bytes(&self) -> usize {
        self.head.capacity()
            + self
                .parts
                .iter()
                .map(|(_, p)| p.held_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::event::Decoder;
    use crate::r#gen::{GenConfig, Generator};

    fn lines(events: u64) -> Vec<String> {
        let cfg = GenConfig {
            seed: 7,
            events,
            days: 40,
            ..GenConfig::default()
        };
        Generator::new(&cfg).map(|l| l.payload).collect()
    }

    fn prm(cfg: &Config) -> Params {
        cfg.params().expect("valid config")
    }

    /// `frozen`'s bytes, streamed on another thread through a buffer of `limit`.
    fn encoded_apart(frozen: FrozenEngine, limit: usize) -> Vec<u8> {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            frozen.stream(&mut v, limit).map(|()| v)
        })
        .join()
        .expect("encodes")
        .expect("a Vec takes every write")
    }

    /// The config of `toml` and its decoder.
    fn config(toml: &str) -> (Config, Decoder) {
        let cfg = Config::from_toml_str(toml, "t.toml", std::iter::empty()).expect("valid config");
        let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
        (cfg, decoder)
    }

    /// Feeds lines to three partitions, by user as Kafka keys would.
    fn feed(engine: &mut Engine, decoder: &Decoder, lines: &[String]) {
        for l in lines {
            match decoder.decode(l.as_bytes(), None) {
                Ok(ev) => {
                    let key = ev.user_id.as_deref().unwrap_or("");
                    let partition = (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % 3) as u32;
                    engine.offer(partition, &ev, None);
                }
                Err(f) => engine.record_invalid(0, f.event_type),
            }
        }
    }

    /// `tests/fixtures/snapshots/engine-v1.bin`: [`Engine::snapshot`] bytes
    /// written by the code of commit cf52330 (partition format version 1,
    /// one churn timer per customer) after the first 5,000 of these 8,000
    /// events, fed by [`feed`] under this config.
    const V1_CFG: &str =
        "[engine]\nwindows = [\"1h\", \"24h\", \"7d\"]\n[churn]\ninactivity = \"3d\"\n";
    const V1_FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/snapshots/engine-v1.bin");

    #[test]
    fn a_version_1_snapshot_restores_and_continues_like_an_uninterrupted_run() {
        let cfg = Config::from_toml_str(V1_CFG, "t.toml", std::iter::empty()).expect("valid");
        let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
        let all: Vec<String> = Generator::new(&GenConfig {
            seed: 7,
            events: 8_000,
            days: 40,
            ..GenConfig::default()
        })
        .map(|l| l.payload)
        .collect();
        let mut whole = Engine::new(prm(&cfg));
        feed(&mut whole, &decoder, &all);
        whole.finish();
        let mut restored = Engine::restore(prm(&cfg), V1_FIXTURE).expect("a v1 snapshot restores");
        // Its churn timers were dropped: the churn instants follow from the users.
        let churned_at_restore: f64 = restored
            .parts
            .values()
            .map(|p| p.families.retention.churn.sum(0, i64::MAX / 2).churned)
            .sum();
        assert!(
            churned_at_restore > 0.0,
            "users churned before the snapshot"
        );
        let restored_at = restored.parts.values().map(|p| p.applied_through).max();
        let after_b = prm(&cfg).bucket_of(restored_at.expect("partitions")) + 1;
        // Re-encoded as version 2, which restores to the same bytes.
        let v2 = restored.snapshot();
        assert_ne!(v2, V1_FIXTURE);
        let again = Engine::restore(prm(&cfg), &v2).expect("restores");
        assert_eq!(again.snapshot(), v2);
        feed(&mut restored, &decoder, &all[5_000..]);
        restored.finish();
        let text = |e: &Engine| crate::export::to_prometheus_text(&e.families());
        let (got, want) = (text(&restored), text(&whole));
        assert!(
            got == want,
            "restored from v1 and continued: {got}\nwant: {want}"
        );
        let churned: f64 = whole
            .parts
            .values()
            .map(|p| {
                p.families
                    .retention
                    .churn
                    .sum(after_b, i64::MAX / 2)
                    .churned
            })
            .sum();
        assert!(churned > 0.0, "users churned after the snapshot too");
    }

    /// A version 2 snapshot with a churn timer (tag 0) in it is refused.
    #[test]
    fn a_churn_timer_in_a_version_2_snapshot_is_refused() {
        let cfg = Config::from_toml_str(V1_CFG, "t.toml", std::iter::empty()).expect("valid");
        let mut eng = Engine::restore(prm(&cfg), V1_FIXTURE).expect("restores");
        let mut p = eng.parts.remove(&0).expect("held");
        p.timers = Default::default();
        let mut w = W(Vec::new());
        write_partition_snapshot(&mut w, &prm(&cfg), &p);
        assert!(read_partition_snapshot(&prm(&cfg), &w.0).is_ok());
        // The timers section: an empty list (u64 0) just before the families.
        let mut tail = W(Vec::new());
        write_tail(&mut tail, &p);
        let at = w.0.len() - tail.0.len() - 8;
        assert_eq!(w.0[at..at + 8], 0u64.to_le_bytes());
        let mut bad = w.0[..at].to_vec();
        bad.extend_from_slice(&1u64.to_le_bytes());
        bad.extend_from_slice(&(p.applied_through + 1).to_le_bytes());
        bad.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        bad.extend_from_slice(&tail.0);
        assert_eq!(
            read_partition_snapshot(&prm(&cfg), &bad).err(),
            Some(SnapshotError::Invalid("timer"))
        );
        // The same bytes marked version 1 are read (the churn timer dropped).
        bad[4] = 1;
        let q = read_partition_snapshot(&prm(&cfg), &bad).expect("a v1 churn timer");
        assert_eq!(q.timers_len(), 0);
    }

    #[test]
    fn restore_then_continue_equals_an_uninterrupted_run() {
        let cfg = Config::default();
        let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
        let all = lines(60_000);
        let (a, b) = all.split_at(37_123);
        let mut whole = Engine::new(prm(&cfg));
        feed(&mut whole, &decoder, &all);
        whole.finish();
        let mut first = Engine::new(prm(&cfg));
        feed(&mut first, &decoder, a);
        let bytes = first.snapshot();
        let mut second = Engine::restore(prm(&cfg), &bytes).expect("restores");
        // The snapshot of a restored engine is the same bytes.
        assert_eq!(second.snapshot(), bytes);
        feed(&mut second, &decoder, b);
        second.finish();
        let text = |e: &Engine| crate::export::to_prometheus_text(&e.families());
        let (got, want) = (text(&second), text(&whole));
        let diff: Vec<_> = got
            .lines()
            .zip(want.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .collect();
        assert!(
            got == want,
            "first differences (restored, uninterrupted): {diff:#?}"
        );
        assert!(whole.tracked_users() > 1000);
    }

    /// Frozen at day 100 of 200, then the engine goes on (new users, more
    /// events of held ones, timers fired, users compacted and, under the
    /// cap, forgotten, the id arena rewritten) and finishes: the frozen
    /// views, encoded afterwards on another thread, are the bytes of the
    /// snapshots taken at the freeze.
    #[test]
    fn a_frozen_view_encodes_the_state_at_the_freeze() {
        let (cfg, decoder) = config("[engine]\nmax_tracked_users = 1500\n");
        let gen_cfg = GenConfig {
            seed: 7,
            events: 80_000,
            days: 200,
            ..GenConfig::default()
        };
        let all: Vec<String> = Generator::new(&gen_cfg).map(|l| l.payload).collect();
        let (a, b) = all.split_at(all.len() / 2);
        let mut e = Engine::new(prm(&cfg));
        feed(&mut e, &decoder, a);
        let compacted_then = e.compacted_users();
        let want = e.snapshot();
        let want_parts: Vec<Vec<u8>> = (0..3)
            .map(|p| e.snapshot_partition(p).expect("held"))
            .collect();
        let frozen = e.freeze();
        let frozen_parts: Vec<FrozenPartition> = (0..3)
            .map(|p| e.freeze_partition(p).expect("held"))
            .collect();
        assert!(e.freeze_partition(3).is_none());
        let timers_then: usize = e.parts.values().map(|p| p.timers_len()).sum();

        feed(&mut e, &decoder, b);
        e.finish();
        assert!(
            e.compacted_users() > compacted_then,
            "users were compacted since"
        );
        let forgotten: u64 = e.parts.values().map(|p| p.users.forgotten).sum();
        assert!(forgotten > 0, "users were forgotten since (the cap)");
        assert!(timers_then > 0);
        assert_ne!(e.snapshot(), want, "the engine changed since the freeze");
        // The views hold the chunks the engine copied since, and their small parts.
        assert!(frozen.held_bytes() > 0);

        let got = encoded_apart(frozen, SPILL_BYTES);
        assert!(
            got == want,
            "the frozen engine encodes the snapshot at the freeze"
        );
        for (f, want) in frozen_parts.into_iter().zip(want_parts) {
            let got = std::thread::spawn(move || f.encode())
                .join()
                .expect("encodes");
            assert!(
                got == want,
                "a frozen partition encodes its snapshot at the freeze"
            );
        }
        // And those bytes restore.
        Engine::restore(prm(&cfg), &want).expect("restores");
    }

    /// With a 10-day dedup horizon each partition's expiry queue holds
    /// several sealed blocks at the freeze (day 20 of 40); the engine then
    /// pushes past them and expires every one of them. The views, which
    /// encoded none of the queue at the freeze, still encode the snapshot
    /// taken then, and the blocks the engine let go are the views' own.
    #[test]
    fn a_frozen_dedup_queue_encodes_its_entries_after_the_engine_expired_them() {
        let (cfg, decoder) = config("[engine]\ndedup_horizon = \"10d\"\n");
        let all = lines(120_000);
        let (a, b) = all.split_at(all.len() / 2);
        let mut e = Engine::new(prm(&cfg));
        feed(&mut e, &decoder, a);
        let per = crate::state::dedup::Order::PER;
        let held: Vec<usize> = e.parts.values().map(|p| p.dedup.len()).collect();
        assert!(
            held.iter().all(|&n| n > 2 * per),
            "{held:?} ids held, blocks of {per}"
        );
        let first: Vec<_> = e
            .parts
            .values()
            .map(|p| p.dedup.order.front().copied())
            .collect();
        let want = e.snapshot();
        let want_part = e.snapshot_partition(1).expect("held");
        let frozen = e.freeze();
        let part = e.freeze_partition(1).expect("held");
        let before = frozen.held_bytes();

        feed(&mut e, &decoder, b);
        for (p, first) in e.parts.values().zip(first) {
            let first = first.expect("ids held");
            assert!(
                p.dedup
                    .order
                    .front()
                    .is_some_and(|f| f.0 > first.0 + 10 * 86_400_000),
                "every id held at the freeze expired"
            );
        }
        // Each partition's view now holds the blocks alone: more than two each.
        let block = per * DEDUP_ENTRY;
        assert!(
            frozen.held_bytes() >= before + 3 * 2 * block,
            "{} then {} bytes held",
            before,
            frozen.held_bytes()
        );
        let got = encoded_apart(frozen, 4096);
        assert!(
            got == want,
            "the frozen engine encodes the snapshot at the freeze"
        );
        let mut v = Vec::new();
        part.write_to(&mut v).expect("a Vec takes every write");
        assert!(v == want_part, "the frozen partition too");
        // And those bytes restore to the same queues.
        let r = Engine::restore(prm(&cfg), &want).expect("restores");
        assert_eq!(
            r.parts.values().map(|p| p.dedup.len()).collect::<Vec<_>>(),
            held
        );
        assert!(r.snapshot() == want);
    }

    /// A checkpoint streamed from a frozen view into its file (through the
    /// 1 MB buffer, more than once, and through a 4 KB one: many spills, arena pieces
    /// larger than the buffer going on directly) is byte for byte the file
    /// the whole-buffer encoder makes of the snapshot taken at the freeze.
    #[test]
    fn a_streamed_checkpoint_is_the_file_the_whole_buffer_encoder_writes() {
        use crate::checkpoint::{self, Checkpoint, CheckpointStore, SavedOffset};
        let cfg = Config::default();
        let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
        let mut e = Engine::new(prm(&cfg));
        feed(&mut e, &decoder, &lines(60_000));
        let offsets = vec![SavedOffset {
            topic: "events".into(),
            partition: 2,
            next_offset: 60_000,
        }];
        let whole = checkpoint::encode(&Checkpoint {
            offsets: offsets.clone(),
            engine: e.snapshot(),
        });
        assert!(whole.len() > SPILL_BYTES, "{} bytes", whole.len());
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CheckpointStore::new(dir.path(), 5);
        let frozen = e.freeze();
        let w = store
            .write_streamed(&offsets, |out| frozen.write_to(out))
            .expect("written");
        assert_eq!(w.bytes, whole.len());
        let file = std::fs::read(&w.path).expect("readable");
        assert!(
            file == whole,
            "streamed file differs from the whole-buffer one"
        );
        let frozen = e.freeze();
        let w = store
            .write_streamed(&offsets, |out| frozen.stream(out, 4096))
            .expect("written");
        assert!(std::fs::read(&w.path).expect("readable") == whole);
        // The file loads back into the same engine.
        let cp = store.load_latest().checkpoint.expect("loads").1;
        let restored = Engine::restore(prm(&cfg), &cp.engine).expect("restores");
        assert!(restored.snapshot() == e.snapshot());
        assert_eq!(cp.offsets, offsets);

        // The disk fills up 100 KB into the engine's bytes: the encoder
        // stops writing (one refused write), the temporary file goes, no third file appears,
        // and the error names the path it was to have and the cause.
        struct Full<'a> {
            out: &'a mut dyn io::Write,
            left: usize,
            refused: &'a std::cell::Cell<u32>,
        }
        impl io::Write for Full<'_> {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.left == 0 {
                    self.refused.set(self.refused.get() + 1);
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                }
                let n = self.out.write(&b[..b.len().min(self.left)])?;
                self.left -= n;
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.out.flush()
            }
        }
        let frozen = e.freeze();
        let refused = std::cell::Cell::new(0);
        let err = store
            .write_streamed(&offsets, |out| {
                let mut full = Full {
                    out,
                    left: 100_000,
                    refused: &refused,
                };
                frozen.stream(&mut full, 4096)
            })
            .expect_err("the disk is full");
        assert_eq!(refused.get(), 1, "nothing written after the first error");
        let third = dir.path().join(format!("checkpoint-{:020}.ckpt", 3));
        let msg = err.to_string();
        assert!(msg.contains(&third.display().to_string()), "{msg}");
        assert!(msg.contains("No space left on device"), "{msg}");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("listable")
            .map(|d| d.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                format!("checkpoint-{:020}.ckpt", 1),
                format!("checkpoint-{:020}.ckpt", 2)
            ]
        );
    }

    #[test]
    fn truncated_or_extended_snapshots_are_refused() {
        let cfg = Config::default();
        let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
        let mut e = Engine::new(prm(&cfg));
        feed(&mut e, &decoder, &lines(3_000));
        let bytes = e.snapshot();
        for cut in [0, 1, 8, bytes.len() / 3, bytes.len() - 1] {
            assert!(
                Engine::restore(prm(&cfg), &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            Engine::restore(prm(&cfg), &longer).err(),
            Some(SnapshotError::Trailing(1))
        );
        let other =
            Config::from_toml_str("[engine]\nbucket = \"5m\"\n", "t", std::iter::empty()).unwrap();
        assert!(matches!(
            Engine::restore(prm(&other), &bytes),
            Err(SnapshotError::BucketChanged { .. })
        ));
    }
}
