//! Per-user state, compact: one 42-byte [`User`] per tracked user plus its id
//! bytes in an arena and a 4-byte slot in an index table.
//!
//! Users past every horizon are *compacted* into a 12-byte [`Cold`] record
//! that keeps only what can still change a future number (channel, whether
//! they signed up, were customers, made a first deposit / trade): see
//! [`Users::compact`]. A cold user who comes back is rehydrated into a
//! [`User`] whose old times are "long ago" (the epoch), which gives every
//! metric the same value the full record would. Under a tracked-users cap,
//! cold users seen longest ago are *forgotten* ([`Users::forget`]); what they
//! contributed to all-time counts is kept aside.

use std::borrow::Cow;

use hashbrown::HashTable;

use super::chunked::Chunked;

use super::codec::SnapshotError;
use super::registry::{ChannelId, UNKNOWN};
use crate::event::Millis;

pub type UserIdx = u32;

/// "No such time" for signed event times.
pub const NEVER: Millis = i64::MIN;
/// "No such bucket" for bucket indices.
pub const NO_BUCKET: u32 = u32::MAX;

pub const F_HAS_SIGNUP: u8 = 1;
/// The first signup carried a `referrer_id`.
pub const F_REFERRED: u8 = 2;
/// Churned and not yet reactivated.
pub const F_CHURNED: u8 = 4;
/// Cohort retention: an activity in `[signup + N d, signup + (N+1) d)`, N = 1, 7, 30.
pub const F_COHORT_1: u8 = 8;
pub const F_COHORT_7: u8 = 16;
pub const F_COHORT_30: u8 = 32;
/// A free slot of [`Users::list`] (the user was compacted); reused by the next new user.
pub const F_FREE: u8 = 64;

/// Flags of a [`Cold`] user.
pub const C_SIGNUP: u8 = 1;
/// Was a customer (and, being past every horizon, has churned).
pub const C_CUSTOMER: u8 = 2;
pub const C_DEPOSIT: u8 = 4;
pub const C_TRADE: u8 = 8;
/// A free slot of [`Users::cold`].
pub const C_FREE: u8 = 16;

/// "Long ago" for the times of a rehydrated user: before every window.
pub const LONG_AGO: Millis = 0;

/// A compacted user: everything that still matters once every event of the
/// user is older than every horizon.
#[derive(Clone, Copy, Debug)]
pub struct Cold {
    pub id_off: u32,
    /// UTC day of the user's latest event (which cold users to forget first).
    pub last_seen_day: u32,
    pub channel: ChannelId,
    pub id_len: u8,
    pub flags: u8,
}

/// Index slots with this bit refer to [`Users::cold`].
const COLD_BIT: u32 = 1 << 31;

/// The largest user time held: event times are at most
/// 9999-12-31T23:59:59.999Z (the decoder refuses later ones).
pub const MAX_USER_TIME: Millis = crate::event::time::MAX_RFC3339_MS;
/// The largest day index a [`User`] holds (22 bits; day 2,932,896 is in 9999).
pub const MAX_USER_DAY: u32 = (1 << 22) - 1;
/// The largest channel id a [`User`] holds (10 bits; `engine.max_channels` is at most 1000).
pub const MAX_USER_CHANNEL: ChannelId = (1 << 10) - 1;

/// One user held in full: 42 bytes. Times are 48 bits (every event time
/// fits), the day anchor (22 bits) and the channel (10 bits) share a word,
/// and the record is packed to 2-byte alignment.
#[derive(Clone, Copy)]
#[repr(C, packed(2))]
pub struct User {
    /// First signup time (exact, for rolling cohort days), NEVER if none:
    /// 0 for NEVER, else the time + 1, in 48 bits ([`User::signup`]).
    signup_lo: u32,
    signup_hi: u16,
    /// Latest activity time (exact, for churn instants), NEVER if not a
    /// customer, as `signup` ([`User::last_activity`]).
    last_lo: u32,
    last_hi: u16,
    /// Bit i: an activity on UTC day `days_anchor - i`.
    pub days_bits: u64,
    /// Bucket of the first deposit / first trade; NO_BUCKET if none.
    pub first_deposit: u32,
    pub first_trade: u32,
    /// Latest activity bucket strictly before the bucket of `last_activity`.
    pub prev_activity_bucket: u32,
    /// The id's place in the arena.
    pub id_off: u32,
    /// Bits 0..22: the UTC day index of bit 0 of `days_bits`: the day of
    /// the user's latest accepted event of any type (moved at arrival, see
    /// [`User::touch`]), so also "last seen" ([`User::days_anchor`]).
    /// Bits 22..32: the channel of the first signup; UNKNOWN without one
    /// ([`User::channel`]).
    anchor_channel: u32,
    pub id_len: u8,
    pub flags: u8,
}

impl Default for User {
    fn default() -> User {
        User::new(0, 0)
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (days_bits, first_deposit, first_trade) =
            (self.days_bits, self.first_deposit, self.first_trade);
        let (prev, id_off, id_len, flags) = (
            self.prev_activity_bucket,
            self.id_off,
            self.id_len,
            self.flags,
        );
        f.debug_struct("User")
            .field("signup", &self.signup())
            .field("last_activity", &self.last_activity())
            .field("days_bits", &days_bits)
            .field("first_deposit", &first_deposit)
            .field("first_trade", &first_trade)
            .field("prev_activity_bucket", &prev)
            .field("days_anchor", &self.days_anchor())
            .field("id_off", &id_off)
            .field("id_len", &id_len)
            .field("flags", &flags)
            .field("channel", &self.channel())
            .finish()
    }
}

/// A time as 48 bits: 0 for NEVER, else `t + 1`. Every event time fits
/// (see [`MAX_USER_TIME`]); others are clamped to `0..2^48 - 1`.
#[inline]
fn pack_time(t: Millis) -> (u32, u16) {
    let v = if t == NEVER {
        0
    } else {
        t.clamp(0, (1 << 48) - 2) as u64 + 1
    };
    (v as u32, (v >> 32) as u16)
}

#[inline]
fn unpack_time(lo: u32, hi: u16) -> Millis {
    let v = ((hi as u64) << 32) | lo as u64;
    if v == 0 { NEVER } else { v as Millis - 1 }
}

impl User {
    fn new(id_off: u32, id_len: u8) -> User {
        User {
            signup_lo: 0,
            signup_hi: 0,
            last_lo: 0,
            last_hi: 0,
            days_bits: 0,
            first_deposit: NO_BUCKET,
            first_trade: NO_BUCKET,
            prev_activity_bucket: NO_BUCKET,
            id_off,
            anchor_channel: (UNKNOWN as u32) << 22,
            id_len,
            flags: 0,
        }
    }

    /// A time a user may hold: NEVER, or within `0..=MAX_USER_TIME` (every
    /// event time is).
    pub fn holds_time(t: Millis) -> bool {
        t == NEVER || (0..=MAX_USER_TIME).contains(&t)
    }

    /// First signup time (exact); NEVER if none.
    #[inline]
    pub fn signup(&self) -> Millis {
        unpack_time(self.signup_lo, self.signup_hi)
    }

    /// Sets the signup time (NEVER or within `0..=MAX_USER_TIME`).
    #[inline]
    pub fn set_signup(&mut self, t: Millis) {
        (self.signup_lo, self.signup_hi) = pack_time(t);
    }

    /// Latest activity time (exact); NEVER if not a customer.
    #[inline]
    pub fn last_activity(&self) -> Millis {
        unpack_time(self.last_lo, self.last_hi)
    }

    /// Sets the latest activity time (NEVER or within `0..=MAX_USER_TIME`).
    #[inline]
    pub fn set_last_activity(&mut self, t: Millis) {
        (self.last_lo, self.last_hi) = pack_time(t);
    }

    /// UTC day index of bit 0 of `days_bits` (the day last seen).
    #[inline]
    pub fn days_anchor(&self) -> u32 {
        self.anchor_channel & MAX_USER_DAY
    }

    /// Sets the day anchor (at most [`MAX_USER_DAY`]: later days are held as it).
    #[inline]
    pub fn set_days_anchor(&mut self, day: u32) {
        self.anchor_channel = (self.anchor_channel & !MAX_USER_DAY) | day.min(MAX_USER_DAY);
    }

    /// Channel of the first signup; UNKNOWN without one.
    #[inline]
    pub fn channel(&self) -> ChannelId {
        (self.anchor_channel >> 22) as ChannelId
    }

    /// Sets the channel (at most [`MAX_USER_CHANNEL`]: registries hold at most 1002 ids).
    #[inline]
    pub fn set_channel(&mut self, ch: ChannelId) {
        debug_assert!(ch <= MAX_USER_CHANNEL, "channel {ch}");
        let ch = ch.min(MAX_USER_CHANNEL) as u32;
        self.anchor_channel = (self.anchor_channel & MAX_USER_DAY) | (ch << 22);
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub fn is_customer(&self) -> bool {
        self.last_activity() != NEVER
    }

    /// Bucket of the first activity (deposit or trade); NO_BUCKET if none.
    pub fn first_activity(&self) -> u32 {
        self.first_deposit.min(self.first_trade)
    }

    /// Whether the user had an activity on UTC day `day`.
    pub fn active_on(&self, day: i64) -> bool {
        let back = self.days_anchor() as i64 - day;
        (0..64).contains(&back) && (self.days_bits >> back) & 1 == 1
    }

    /// Whether the user had an activity on any day in `[from, to)`.
    pub fn active_between_days(&self, from: i64, to: i64) -> bool {
        (from..to).any(|d| self.active_on(d))
    }

    /// An event of the user on UTC day `day` arrived: moves the anchor (last
    /// seen) forward, shifting the activity bits with it.
    pub fn touch(&mut self, day: u32) {
        let day = day.min(MAX_USER_DAY);
        let anchor = self.days_anchor();
        if day > anchor {
            let shift = day - anchor;
            self.days_bits = if shift >= 64 {
                0
            } else {
                self.days_bits << shift
            };
            self.set_days_anchor(day);
        }
    }

    pub fn record_activity_day(&mut self, day: u32) {
        let day = day.min(MAX_USER_DAY);
        self.touch(day);
        let back = self.days_anchor() - day;
        if back < 64 {
            self.days_bits |= 1 << back;
        }
    }
}

/// The users of one partition.
#[derive(Default)]
pub struct Users {
    /// Hot index, or `COLD_BIT | cold index`.
    pub(crate) index: HashTable<u32>,
    /// The id bytes, append-only (an id may straddle two chunks; only the
    /// last chunk is ever written, so large chunks cost no copies).
    pub(crate) arena: Arena,
    pub list: UserList,
    /// Free slots of `list` (flag [`F_FREE`]).
    pub(crate) free: Vec<UserIdx>,
    pub cold: Chunked<Cold>,
    /// Free slots of `cold` (flag [`C_FREE`]).
    pub(crate) cold_free: Vec<u32>,
    /// Arena bytes of forgotten users, not yet reclaimed.
    pub(crate) garbage: usize,
    /// Users forgotten under the cap, all time.
    pub forgotten: u64,
    /// Of them, those who had signed up, by channel id (all-time counts keep them).
    pub forgotten_signups: Vec<u64>,
    /// Some forgotten user had no channel (`unknown` stays a label).
    pub forgotten_unknown: bool,
    /// Compacted users who came back, since start (not checkpointed).
    pub rehydrated: u64,
    /// Events of new user ids not tracked (hard cap reached), all time.
    pub untracked: u64,
}

/// The hot users: copy-on-write chunks of 128 records (5,376 bytes): the
/// chunk headers and group tables cost under 0.4 byte per user.
pub type UserList = Chunked<User, 8192>;

/// The id arena: copy-on-write chunks of 64 KiB.
pub type Arena = Chunked<u8, { 64 * 1024 }>;

/// The hash of a user id in the index (never stored: the index is rebuilt
/// on restore). Ids of up to 16 bytes (the usual case: short ASCII) take a
/// short path of two folded multiplies over at most two overlapping words
/// (as wyhash does); longer ones, xxh3.
#[inline(always)]
fn hash_id(id: &[u8]) -> u64 {
    const P0: u64 = 0xa076_1d64_78bd_642f;
    const P1: u64 = 0xe703_7ed1_a0b4_28db;
    const P2: u64 = 0x8ebc_6af0_9c88_c6e3;
    let n = id.len();
    if n > 16 {
        return hash_long_id(id);
    }
    let (a, b) = if n >= 8 {
        (le_u64(id), le_u64(&id[n - 8..]))
    } else if n >= 4 {
        (le_u32(id) as u64, le_u32(&id[n - 4..]) as u64)
    } else if n > 0 {
        let (x, y, z) = (id[0] as u64, id[n / 2] as u64, id[n - 1] as u64);
        ((x << 16) | (y << 8) | z, 0)
    } else {
        (0, 0)
    };
    let h = folded_mul(a ^ P1, b ^ P0);
    folded_mul(h ^ P2 ^ n as u64, P1)
}

/// [`hash_id`] of an id longer than 16 bytes (out of line: the short path
/// is inlined into every lookup).
#[inline(never)]
fn hash_long_id(id: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id)
}

/// The 128-bit product of `a` and `b`, its halves xored.
#[inline]
fn folded_mul(a: u64, b: u64) -> u64 {
    let m = a as u128 * b as u128;
    (m as u64) ^ ((m >> 64) as u64)
}

/// The first 8 bytes of `b` (at least 8 long), little-endian.
#[inline]
fn le_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// The first 4 bytes of `b` (at least 4 long), little-endian.
#[inline]
fn le_u32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w)
}

/// Where the id of an index slot lies in the arena.
#[inline(always)]
fn slot_span(list: &UserList, cold: &Chunked<Cold>, slot: u32) -> std::ops::Range<usize> {
    let (off, len) = if slot & COLD_BIT != 0 {
        let c = &cold[(slot & !COLD_BIT) as usize];
        (c.id_off, c.id_len)
    } else {
        let u = &list[slot as usize];
        (u.id_off, u.id_len)
    };
    off as usize..off as usize + len as usize
}

/// Whether the id of an index slot is `id` (on the hot path of every
/// event: the bytes are compared in place when they lie in one arena chunk).
#[inline(always)]
fn slot_is(arena: &Arena, list: &UserList, cold: &Chunked<Cold>, slot: u32, id: &[u8]) -> bool {
    let span = slot_span(list, cold, slot);
    if span.len() != id.len() {
        return false;
    }
    match arena.contiguous(span.start, span.len()) {
        Some(held) => same_id(held, id),
        None => arena.range_eq(span.start, id),
    }
}

/// `a == b` for two ids of the same length, without a call to `memcmp`
/// for the usual short ones: up to 16 bytes as two overlapping words (as
/// [`hash_id`] reads them), which cover every byte.
#[inline(always)]
fn same_id(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        (le_u64(a) ^ le_u64(b)) | (le_u64(&a[n - 8..]) ^ le_u64(&b[n - 8..])) == 0
    } else if (4..8).contains(&n) {
        (le_u32(a) ^ le_u32(b)) | (le_u32(&a[n - 4..]) ^ le_u32(&b[n - 4..])) == 0
    } else {
        a == b
    }
}

/// The hash of the id of an index slot.
fn slot_hash(arena: &Arena, list: &UserList, cold: &Chunked<Cold>, slot: u32) -> u64 {
    let span = slot_span(list, cold, slot);
    match arena.contiguous(span.start, span.len()) {
        Some(id) => hash_id(id),
        None => {
            let mut buf = [0u8; 256];
            hash_id(arena.range(span.start, span.len(), &mut buf))
        }
    }
}

/// A table of slots: a `Vec` or a [`Chunked`].
pub(crate) trait Slots<T> {
    fn set(&mut self, i: usize, item: T);
    fn push_item(&mut self, item: T);
    fn slots(&self) -> usize;
}

impl<T> Slots<T> for Vec<T> {
    fn set(&mut self, i: usize, item: T) {
        self[i] = item;
    }
    fn push_item(&mut self, item: T) {
        self.push(item);
    }
    fn slots(&self) -> usize {
        self.len()
    }
}

impl<T: Copy, const B: usize> Slots<T> for Chunked<T, B> {
    fn set(&mut self, i: usize, item: T) {
        self[i] = item;
    }
    fn push_item(&mut self, item: T) {
        self.push(item);
    }
    fn slots(&self) -> usize {
        self.len()
    }
}

/// Puts `item` in a free slot of `list` (one listed in `free`), or at its
/// end; returns the slot.
pub(crate) fn put_in_slot<T>(list: &mut impl Slots<T>, free: &mut Vec<u32>, item: T) -> u32 {
    match free.pop() {
        Some(i) => {
            list.set(i as usize, item);
            i
        }
        None => {
            list.push_item(item);
            (list.slots() - 1) as u32
        }
    }
}

impl Users {
    /// The index of `id`, creating the user if new (or rehydrating a
    /// compacted one), and marks it seen on UTC day `day`.
    pub fn intern(&mut self, id: &str, day: u32) -> UserIdx {
        let created = self.intern_if(id, day, true);
        created.expect("a user may be created")
    }

    /// [`Users::intern`], except that a new id is created only if
    /// `may_create` (a held or compacted user always is found): `None` for a
    /// new id beyond a hard cap.
    pub fn intern_if(&mut self, id: &str, day: u32, may_create: bool) -> Option<UserIdx> {
        let bytes = id.as_bytes();
        let h = hash_id(bytes);
        let (arena, list, cold) = (&self.arena, &self.list, &self.cold);
        let found = self
            .index
            .find(h, |&s| slot_is(arena, list, cold, s, bytes))
            .copied();
        match found {
            Some(s) if s & COLD_BIT == 0 => {
                // Written (and so copied if a frozen snapshot shares it) only on a new day.
                if self.list[s as usize].days_anchor() < day {
                    self.list[s as usize].touch(day);
                }
                Some(s)
            }
            Some(s) => {
                let ci = s & !COLD_BIT;
                let c = self.cold[ci as usize];
                self.cold[ci as usize].flags = C_FREE;
                self.cold_free.push(ci);
                self.rehydrated += 1;
                let mut u = User::new(c.id_off, c.id_len);
                u.set_channel(c.channel);
                if c.flags & C_SIGNUP != 0 {
                    u.flags |= F_HAS_SIGNUP;
                    u.set_signup(LONG_AGO);
                }
                if c.flags & C_CUSTOMER != 0 {
                    u.flags |= F_CHURNED;
                    u.set_last_activity(LONG_AGO);
                }
                if c.flags & C_DEPOSIT != 0 {
                    u.first_deposit = 0;
                }
                if c.flags & C_TRADE != 0 {
                    u.first_trade = 0;
                }
                u.set_days_anchor(c.last_seen_day);
                u.touch(day);
                let idx = put_in_slot(&mut self.list, &mut self.free, u);
                let slot = self
                    .index
                    .find_mut(h, |&x| x == s)
                    .expect("the cold slot is indexed");
                *slot = idx;
                Some(idx)
            }
            None if !may_create => None,
            None => {
                let off = self.arena.len() as u32;
                // Ids are at most 128 bytes (validated by the decoder).
                let len = bytes.len().min(255) as u8;
                self.arena.extend_from_slice(&bytes[..len as usize]);
                let mut u = User::new(off, len);
                u.touch(day);
                let idx = put_in_slot(&mut self.list, &mut self.free, u);
                let (arena, list, cold) = (&self.arena, &self.list, &self.cold);
                self.index
                    .insert_unique(h, idx, |&s| slot_hash(arena, list, cold, s));
                Some(idx)
            }
        }
    }

    /// An event of an untracked user id (beyond the hard cap): counted, and
    /// a signup (`channel`) kept in the all-time signup counts, like the
    /// signup of a forgotten user.
    pub fn untracked_event(&mut self, signup_channel: Option<ChannelId>) {
        self.untracked += 1;
        if let Some(ch) = signup_channel {
            self.count_gone_signup(ch);
        }
    }

    /// A signup on `channel` of a user no longer (or never) held.
    fn count_gone_signup(&mut self, ch: ChannelId) {
        let i = ch as usize;
        if self.forgotten_signups.len() <= i {
            self.forgotten_signups.resize(i + 1, 0);
        }
        self.forgotten_signups[i] += 1;
        if ch == UNKNOWN {
            self.forgotten_unknown = true;
        }
    }

    /// Whether `id` is held (in full or compacted).
    pub fn contains(&self, id: &str) -> bool {
        let bytes = id.as_bytes();
        let (arena, list, cold) = (&self.arena, &self.list, &self.cold);
        self.index
            .find(hash_id(bytes), |&s| slot_is(arena, list, cold, s, bytes))
            .is_some()
    }

    /// The id of a user (copied only if it straddles two arena chunks).
    pub fn id(&self, idx: UserIdx) -> Cow<'_, str> {
        let u = &self.list[idx as usize];
        let (off, len) = (u.id_off as usize, u.id_len as usize);
        if let Some(b) = self.arena.contiguous(off, len) {
            return Cow::Borrowed(std::str::from_utf8(b).unwrap_or(""));
        }
        let mut buf = [0u8; 256];
        let b = self.arena.range(off, len, &mut buf);
        Cow::Owned(std::str::from_utf8(b).unwrap_or("").to_string())
    }

    #[inline]
    pub fn get_mut(&mut self, idx: UserIdx) -> &mut User {
        &mut self.list[idx as usize]
    }

    /// Users held in full (not compacted).
    pub fn hot_len(&self) -> usize {
        self.list.len() - self.free.len()
    }

    /// Compacted users.
    pub fn cold_len(&self) -> usize {
        self.cold.len() - self.cold_free.len()
    }

    /// Users with any state: full and compacted.
    pub fn len(&self) -> usize {
        self.hot_len() + self.cold_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live hot users.
    pub fn hot(&self) -> impl Iterator<Item = &User> {
        self.list.iter().filter(|u| !u.has(F_FREE))
    }

    /// The live compacted users.
    pub fn cold_users(&self) -> impl Iterator<Item = &Cold> {
        self.cold.iter().filter(|c| c.flags & C_FREE == 0)
    }

    /// Heap bytes held for users: states, id bytes, index table.
    pub fn heap_bytes(&self) -> usize {
        self.list.heap_bytes()
            + self.cold.heap_bytes()
            + (self.free.capacity() + self.cold_free.capacity()) * 4
            + self.arena.heap_bytes()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    /// Compacts every hot user last seen before UTC day `before_day` that is
    /// a non-customer or has churned, and is not `pinned` (bit set: referenced
    /// by a ticket kept in full). Returns how many were compacted.
    ///
    /// The caller guarantees that no pending event or timer refers to such a
    /// user: everything up to well after its last event has been applied.
    pub fn compact(&mut self, before_day: u32, pinned: &[u64]) -> usize {
        // Once a day over every user, most of whom stay: the candidates are
        // found by a pass over the chunks in place (no per-user chunk lookup).
        let mut candidates: Vec<u32> = Vec::new();
        let mut i = 0u32;
        for chunk in self.list.slices() {
            for u in chunk {
                // Free slots stay; a customer stays until churned.
                let settled = !u.is_customer() || u.has(F_CHURNED);
                if !u.has(F_FREE) && u.days_anchor() < before_day && settled {
                    candidates.push(i);
                }
                i += 1;
            }
        }
        let mut n = 0;
        for i in candidates {
            let i = i as usize;
            let u = self.list[i];
            if pinned.get(i / 64).is_some_and(|w| (w >> (i % 64)) & 1 == 1) {
                continue;
            }
            let mut flags = 0;
            if u.has(F_HAS_SIGNUP) {
                flags |= C_SIGNUP;
            }
            if u.is_customer() {
                flags |= C_CUSTOMER;
            }
            if u.first_deposit != NO_BUCKET {
                flags |= C_DEPOSIT;
            }
            if u.first_trade != NO_BUCKET {
                flags |= C_TRADE;
            }
            let c = Cold {
                id_off: u.id_off,
                last_seen_day: u.days_anchor(),
                channel: u.channel(),
                id_len: u.id_len,
                flags,
            };
            let ci = put_in_slot(&mut self.cold, &mut self.cold_free, c);
            let h = slot_hash(&self.arena, &self.list, &self.cold, i as u32);
            let slot = self
                .index
                .find_mut(h, |&s| s == i as u32)
                .expect("the hot slot is indexed");
            *slot = COLD_BIT | ci;
            let mut free = User::new(0, 0);
            free.flags = F_FREE;
            self.list[i] = free;
            self.free.push(i as UserIdx);
            n += 1;
        }
        n
    }

    /// Forgets the given compacted users (indices into `cold`) entirely,
    /// keeping their all-time signup counts aside; reclaims arena bytes when
    /// half of the arena is garbage.
    pub fn forget(&mut self, which: &[u32]) {
        for &ci in which {
            let c = self.cold[ci as usize];
            if c.flags & C_FREE != 0 {
                continue;
            }
            let h = slot_hash(&self.arena, &self.list, &self.cold, COLD_BIT | ci);
            if let Ok(e) = self.index.find_entry(h, |&s| s == COLD_BIT | ci) {
                e.remove();
            }
            if c.flags & C_SIGNUP != 0 {
                self.count_gone_signup(c.channel);
            }
            if c.channel == UNKNOWN {
                self.forgotten_unknown = true;
            }
            self.forgotten += 1;
            self.garbage += c.id_len as usize;
            self.cold[ci as usize].flags = C_FREE;
            self.cold_free.push(ci);
        }
        if self.garbage * 2 > self.arena.len() {
            self.reclaim_arena();
        }
    }

    /// Rewrites the arena with the ids of live users only.
    fn reclaim_arena(&mut self) {
        let mut arena = Arena::default();
        let mut buf = [0u8; 256];
        for i in 0..self.list.len() {
            let u = self.list[i];
            if u.has(F_FREE) {
                continue;
            }
            let off = arena.len() as u32;
            arena.extend_from_slice(self.arena.range(
                u.id_off as usize,
                u.id_len as usize,
                &mut buf,
            ));
            self.list[i].id_off = off;
        }
        for i in 0..self.cold.len() {
            let c = self.cold[i];
            if c.flags & C_FREE != 0 {
                continue;
            }
            let off = arena.len() as u32;
            arena.extend_from_slice(self.arena.range(
                c.id_off as usize,
                c.id_len as usize,
                &mut buf,
            ));
            self.cold[i].id_off = off;
        }
        self.arena = arena;
        self.garbage = 0;
    }
}

impl User {
    /// Whether the user had an activity on some UTC day in `[from, to)`, by bit masks.
    pub fn active_in_days(&self, from: i64, to: i64) -> bool {
        if self.days_bits == 0 || to <= from {
            return false;
        }
        let anchor = self.days_anchor() as i64;
        let lo = (anchor - (to - 1)).max(0);
        let hi = (anchor - from).min(63);
        if lo > hi {
            return false;
        }
        let width = hi - lo + 1;
        let mask = if width >= 64 {
            u64::MAX
        } else {
            ((1u64 << width) - 1) << lo
        };
        self.days_bits & mask != 0
    }
}

impl Users {
    /// Rebuilds the index, the free lists and the arena garbage count from
    /// the arena and the records (after a restore). Fails if there are more
    /// records or arena bytes than slots and offsets can address, an id lies
    /// outside the arena, or two users have the same id.
    pub(crate) fn rebuild_index(&mut self) -> Result<(), SnapshotError> {
        let (arena, list, cold) = (&self.arena, &self.list, &self.cold);
        if list.len() as u64 >= COLD_BIT as u64 || cold.len() as u64 >= COLD_BIT as u64 {
            return Err(SnapshotError::Invalid("number of users"));
        }
        if arena.len() as u64 > u32::MAX as u64 {
            return Err(SnapshotError::Invalid("user id arena size"));
        }
        let (mut free, mut cold_free, mut live) = (Vec::new(), Vec::new(), Vec::new());
        for (i, u) in list.iter().enumerate() {
            if u.has(F_FREE) {
                free.push(i as u32);
            } else {
                live.push(i as u32);
            }
        }
        for (i, c) in cold.iter().enumerate() {
            if c.flags & C_FREE != 0 {
                cold_free.push(i as u32);
            } else {
                live.push(COLD_BIT | i as u32);
            }
        }
        let all = (0..list.len() as u32).chain((0..cold.len() as u32).map(|i| COLD_BIT | i));
        for s in all {
            let end = slot_span(list, cold, s).end;
            if end > arena.len() {
                return Err(SnapshotError::Dangling {
                    what: "user id ending at arena byte",
                    index: end as u64,
                    len: arena.len() as u64,
                });
            }
        }
        let mut index: HashTable<u32> = HashTable::with_capacity(live.len());
        let mut live_bytes = 0;
        for &s in &live {
            let mut buf = [0u8; 256];
            let span = slot_span(list, cold, s);
            let id = arena.range(span.start, span.len(), &mut buf);
            let h = hash_id(id);
            if index
                .find(h, |&j| slot_is(arena, list, cold, j, id))
                .is_some()
            {
                return Err(SnapshotError::Invalid("user id held twice"));
            }
            index.insert_unique(h, s, |&j| slot_hash(arena, list, cold, j));
            live_bytes += id.len();
        }
        self.garbage = arena.len().saturating_sub(live_bytes);
        self.index = index;
        self.free = free;
        self.cold_free = cold_free;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_is_byte_equality() {
        // Every length up to past the word paths, a change at every position.
        for n in 0..=40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i % 26).collect();
            assert!(same_id(&a, &a.clone()), "{n}");
            for at in 0..n {
                for with in [b'A', 0, 0xff, a[at] ^ 1, a[at] ^ 0x80] {
                    let mut b = a.clone();
                    b[at] = with;
                    assert_eq!(same_id(&a, &b), a == b, "{n} {at} {with}");
                }
            }
            let mut longer = a.clone();
            longer.push(b'z');
            assert!(!same_id(&a, &longer) && !same_id(&longer, &a), "{n}");
        }
    }

    #[test]
    fn interning_is_stable_and_state_is_small() {
        let mut u = Users::default();
        let a = u.intern("alice", 1);
        let b = u.intern("bob", 1);
        assert_eq!(u.intern("alice", 2), a);
        assert_eq!(u.len(), 2);
        assert_ne!(a, b);
        assert_eq!(u.id(b), "bob");
        assert_eq!(std::mem::size_of::<User>(), 42);
    }

    #[test]
    fn ids_straddling_arena_chunks_are_found_and_read() {
        let mut u = Users::default();
        // 7-byte ids: some straddle the 32 KiB chunk boundaries of the arena.
        let n = 3 * Arena::PER / 7 + 10;
        let ids: Vec<String> = (0..n).map(|i| format!("u{i:06}")).collect();
        let idx: Vec<UserIdx> = ids.iter().map(|id| u.intern(id, 1)).collect();
        assert!(u.arena.len() > 2 * Arena::PER);
        for (id, &i) in ids.iter().zip(&idx) {
            assert_eq!(u.intern(id, 2), i);
            assert_eq!(u.id(i), id.as_str());
            assert!(u.contains(id));
        }
        assert!(!u.contains("u999999"));
        // The straddling ids survive compaction, a rebuilt index and a rewritten arena.
        assert_eq!(u.compact(10, &[]), n);
        u.rebuild_index().expect("rebuilds");
        let first = (0..n as u32).collect::<Vec<_>>();
        u.forget(&first[..n / 2 + 1]);
        assert_eq!(u.garbage, 0, "the arena was rewritten");
        for id in &ids[n / 2 + 1..] {
            assert!(u.contains(id));
            let i = u.intern(id, 20);
            assert_eq!(u.id(i), id.as_str());
        }
        assert!(!u.contains(&ids[0]));
        assert_eq!(u.len(), n - (n / 2 + 1));
    }

    #[test]
    fn short_id_hashes_differ_and_spread() {
        // Every generated-style id of each length class (1..=3, 4..=7,
        // 8..=16 bytes, and the xxh3 path past 16) hashes apart, and the
        // top 7 bits (the index's tag) and the low bits (its bucket) both spread.
        let mut ids: Vec<String> = (0..200_000).map(|i| format!("u{i}")).collect();
        ids.extend((0..1000).map(|i| format!("user-{i:012}")));
        ids.extend((0..1000).map(|i| format!("customer-{i:020}")));
        ids.extend(["", "a", "b", "ab", "ba", "abc", "acb"].map(String::from));
        let mut hashes: Vec<u64> = ids.iter().map(|id| hash_id(id.as_bytes())).collect();
        let (mut tags, mut low) = ([0u32; 128], [0u32; 256]);
        for h in &hashes {
            tags[(h >> 57) as usize] += 1;
            low[(h & 255) as usize] += 1;
        }
        let n = hashes.len() as u32;
        assert!(
            tags.iter()
                .all(|&t| t > n / 128 * 8 / 10 && t < n / 128 * 12 / 10),
            "{tags:?}"
        );
        assert!(
            low.iter()
                .all(|&t| t > n / 256 * 8 / 10 && t < n / 256 * 12 / 10),
            "{low:?}"
        );
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), ids.len());
    }

    #[test]
    fn activity_days_shift_and_backfill() {
        let mut u = User::new(0, 0);
        u.record_activity_day(100);
        u.record_activity_day(98);
        u.record_activity_day(103);
        assert!(u.active_on(100) && u.active_on(98) && u.active_on(103));
        assert!(!u.active_on(99) && !u.active_on(101));
        u.record_activity_day(200);
        assert!(!u.active_on(103) && u.active_on(200));
    }
}
