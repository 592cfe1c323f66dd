//! Per-user state, compact: one 48-byte [`User`] per tracked user plus its id
//! bytes in an arena and a 4-byte slot in an index table.

use hashbrown::HashTable;

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

#[derive(Clone, Copy, Debug)]
pub struct User {
    /// First signup time (exact, for rolling cohort days); NEVER if none.
    pub signup: Millis,
    /// Latest activity time (exact, for churn instants); NEVER if not a customer.
    pub last_activity: Millis,
    /// Bit i: an activity on UTC day `days_anchor - i`.
    pub days_bits: u64,
    /// Bucket of the first deposit / first trade; NO_BUCKET if none.
    pub first_deposit: u32,
    pub first_trade: u32,
    /// Latest activity bucket strictly before the bucket of `last_activity`.
    pub prev_activity_bucket: u32,
    /// UTC day index of bit 0 of `days_bits`.
    pub days_anchor: u32,
    /// The id's place in the arena.
    pub id_off: u32,
    pub id_len: u8,
    pub flags: u8,
    /// Channel of the first signup; UNKNOWN without one.
    pub channel: ChannelId,
}

impl User {
    fn new(id_off: u32, id_len: u8) -> User {
        User {
            signup: NEVER,
            last_activity: NEVER,
            days_bits: 0,
            first_deposit: NO_BUCKET,
            first_trade: NO_BUCKET,
            prev_activity_bucket: NO_BUCKET,
            days_anchor: 0,
            id_off,
            id_len,
            flags: 0,
            channel: UNKNOWN,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub fn is_customer(&self) -> bool {
        self.last_activity != NEVER
    }

    /// Bucket of the first activity (deposit or trade); NO_BUCKET if none.
    pub fn first_activity(&self) -> u32 {
        self.first_deposit.min(self.first_trade)
    }

    /// Whether the user had an activity on UTC day `day`.
    pub fn active_on(&self, day: i64) -> bool {
        let back = self.days_anchor as i64 - day;
        (0..64).contains(&back) && (self.days_bits >> back) & 1 == 1
    }

    /// Whether the user had an activity on any day in `[from, to)`.
    pub fn active_between_days(&self, from: i64, to: i64) -> bool {
        (from..to).any(|d| self.active_on(d))
    }

    pub fn record_activity_day(&mut self, day: u32) {
        if self.days_bits == 0 || day > self.days_anchor {
            let shift = day.saturating_sub(self.days_anchor);
            self.days_bits = if self.days_bits == 0 || shift >= 64 {
                0
            } else {
                self.days_bits << shift
            };
            self.days_anchor = day;
            self.days_bits |= 1;
        } else {
            let back = self.days_anchor - day;
            if back < 64 {
                self.days_bits |= 1 << back;
            }
        }
    }
}

/// The users of one partition.
#[derive(Default)]
pub struct Users {
    pub(crate) index: HashTable<UserIdx>,
    pub(crate) arena: Vec<u8>,
    pub list: Vec<User>,
}

fn hash_id(id: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id)
}

impl Users {
    /// The index of `id`, creating the user if new.
    pub fn intern(&mut self, id: &str) -> UserIdx {
        let bytes = id.as_bytes();
        let h = hash_id(bytes);
        let (arena, list) = (&self.arena, &self.list);
        let eq = |&i: &UserIdx| {
            let u = &list[i as usize];
            &arena[u.id_off as usize..u.id_off as usize + u.id_len as usize] == bytes
        };
        if let Some(&i) = self.index.find(h, eq) {
            return i;
        }
        let idx = self.list.len() as UserIdx;
        let off = self.arena.len() as u32;
        // Ids are at most 128 bytes (validated by the decoder).
        let len = bytes.len().min(255) as u8;
        self.arena.extend_from_slice(&bytes[..len as usize]);
        self.list.push(User::new(off, len));
        let (arena, list) = (&self.arena, &self.list);
        self.index.insert_unique(h, idx, |&i| {
            let u = &list[i as usize];
            hash_id(&arena[u.id_off as usize..u.id_off as usize + u.id_len as usize])
        });
        idx
    }

    pub fn id(&self, idx: UserIdx) -> &str {
        let u = &self.list[idx as usize];
        std::str::from_utf8(&self.arena[u.id_off as usize..u.id_off as usize + u.id_len as usize])
            .unwrap_or("")
    }

    pub fn get_mut(&mut self, idx: UserIdx) -> &mut User {
        &mut self.list[idx as usize]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Heap bytes held for users: states, id bytes, index table.
    pub fn heap_bytes(&self) -> usize {
        self.list.capacity() * std::mem::size_of::<User>()
            + self.arena.capacity()
            + self.index.capacity() * (std::mem::size_of::<UserIdx>() + 1)
    }
}

impl User {
    /// Whether the user had an activity on some UTC day in `[from, to)`, by bit masks.
    pub fn active_in_days(&self, from: i64, to: i64) -> bool {
        if self.days_bits == 0 || to <= from {
            return false;
        }
        let anchor = self.days_anchor as i64;
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
    /// Rebuilds the index from the arena and the list (after a restore).
    /// Fails if two users have the same id.
    pub(crate) fn rebuild_index(&mut self) -> Result<(), ()> {
        let mut index: HashTable<UserIdx> = HashTable::with_capacity(self.list.len());
        for i in 0..self.list.len() as UserIdx {
            let id = self.id_bytes(i);
            let h = hash_id(id);
            let (arena, list) = (&self.arena, &self.list);
            let key = |&j: &UserIdx| {
                let u = &list[j as usize];
                &arena[u.id_off as usize..u.id_off as usize + u.id_len as usize]
            };
            if index.find(h, |j| key(j) == id).is_some() {
                return Err(());
            }
            index.insert_unique(h, i, |j| hash_id(key(j)));
        }
        self.index = index;
        Ok(())
    }

    fn id_bytes(&self, idx: UserIdx) -> &[u8] {
        let u = &self.list[idx as usize];
        &self.arena[u.id_off as usize..u.id_off as usize + u.id_len as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_state_is_small() {
        let mut u = Users::default();
        let a = u.intern("alice");
        let b = u.intern("bob");
        assert_eq!(u.intern("alice"), a);
        assert_ne!(a, b);
        assert_eq!(u.id(b), "bob");
        assert_eq!(std::mem::size_of::<User>(), 48);
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
