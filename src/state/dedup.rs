//! Duplicate detection by `event_id` within a horizon of event time.
//!
//! Ids are kept as 128-bit XXH3 fingerprints (a collision between two
//! different ids is about 2^-100 likely at these volumes) with the event time
//! of the accepted event. Memory: about 60 bytes per event accepted within
//! the horizon (map slot plus expiry queue entry).
//!
//! The expiry queue is a [`BlockQueue`]: its full blocks are immutable and
//! shared, so a snapshot freeze copies none of its entries
//! ([`Dedup::share_order`]); the frozen view encodes them later, on its
//! writer's thread.

use std::collections::HashMap;

use crate::event::Millis;
use crate::state::queue::BlockQueue;

/// An expiry queue entry: the event time, then the fingerprint as its low
/// and high 64-bit halves (24 bytes; a `u128` would align the pair to 32).
pub type Entry = (Millis, [u64; 2]);

/// The expiry queue: ids in acceptance order.
pub type Order = BlockQueue<Entry>;

pub fn entry(ts: Millis, fp: u128) -> Entry {
    (ts, [fp as u64, (fp >> 64) as u64])
}

pub fn entry_fp(e: &Entry) -> u128 {
    e.1[0] as u128 | (e.1[1] as u128) << 64
}

#[derive(Clone, Debug, Default)]
pub struct Dedup {
    seen: HashMap<u128, Millis, BuildFp>,
    /// Accepted ids in acceptance order, for expiry.
    pub(crate) order: Order,
}

impl Dedup {
    pub fn fingerprint(event_id: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(event_id.as_bytes())
    }

    /// Whether `fp` was accepted with an event time at or after `horizon_start`.
    pub fn contains(&self, fp: u128, horizon_start: Millis) -> bool {
        matches!(self.seen.get(&fp), Some(&ts) if ts >= horizon_start)
    }

    /// [`contains`](Self::contains) and then, unless it is a duplicate and
    /// if `admit`, [`insert`](Self::insert), in one probe of the map. Returns
    /// whether `fp` is a duplicate: accepted with an event time at or after
    /// `horizon_start` (`None`: nothing is a duplicate yet); then nothing changes.
    #[inline(always)]
    pub fn check_insert(
        &mut self,
        fp: u128,
        horizon_start: Option<Millis>,
        ts: Millis,
        admit: bool,
    ) -> bool {
        use std::collections::hash_map::Entry;
        match self.seen.entry(fp) {
            Entry::Occupied(mut e) => {
                if horizon_start.is_some_and(|h| *e.get() >= h) {
                    return true;
                }
                if admit {
                    e.insert(ts);
                    self.order.push_back(entry(ts, fp));
                }
            }
            Entry::Vacant(e) => {
                if admit {
                    e.insert(ts);
                    self.order.push_back(entry(ts, fp));
                }
            }
        }
        false
    }

    pub fn insert(&mut self, fp: u128, ts: Millis) {
        self.seen.insert(fp, ts);
        self.order.push_back(entry(ts, fp));
    }

    /// Forgets ids accepted with event time before `horizon_start`. Acceptance
    /// order is event order up to the allowed lateness, so a few may stay a
    /// little longer; [`contains`](Self::contains) still checks their time.
    ///
    /// The expiry queue is trimmed here; the map only when it holds a quarter
    /// more ids than the queue, in one pass (cheaper than a probe per
    /// expired id). An id left in the map past its horizon is never a
    /// duplicate (`horizon_start` only grows: it follows the partition clock)
    /// and is overwritten when seen again, so nothing a caller sees changes.
    #[inline]
    pub fn expire(&mut self, horizon_start: Millis) {
        self.order.pop_front_while(|&(ts, _)| ts < horizon_start);
        let held = self.order.len();
        if self.seen.len() > held + held / 4 + 64 {
            self.trim_map(horizon_start);
        }
    }

    /// The map's pass of [`expire`](Self::expire): rare, kept out of line
    /// so that `expire` itself stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn trim_map(&mut self, horizon_start: Millis) {
        self.seen.retain(|_, ts| *ts >= horizon_start);
    }

    /// Heap bytes: map slots (key, value, control byte) and the expiry queue.
    pub fn heap_bytes(&self) -> usize {
        self.seen.capacity() * (16 + 8 + 1) + self.order.heap_bytes()
    }

    /// A copy of the expiry queue sharing its full blocks (see [`BlockQueue::share`]).
    pub fn share_order(&self) -> Order {
        self.order.share()
    }

    /// Ids in the expiry queue (some may be there twice, accepted again past their horizon).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The fingerprints are already uniformly distributed: hash them by truncation.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildFp;

impl std::hash::BuildHasher for BuildFp {
    type Hasher = FpHasher;
    fn build_hasher(&self) -> FpHasher {
        FpHasher(0)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct FpHasher(u64);

impl std::hash::Hasher for FpHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_horizon_only() {
        let mut d = Dedup::default();
        let a = Dedup::fingerprint("a");
        d.insert(a, 1_000);
        assert!(d.contains(a, 1_000));
        assert!(!d.contains(a, 1_001));
        d.expire(2_000);
        assert!(d.is_empty());
    }

    #[test]
    fn the_map_is_trimmed_in_one_pass_and_decides_as_before() {
        let mut d = Dedup::default();
        // One id a second over 1000 s, a horizon of 100 s: ids older than
        // the horizon are never duplicates, whether or not the map still holds them.
        for s in 0..1_000i64 {
            let ts = s * 1_000;
            let horizon = ts - 100_000;
            assert!(!d.check_insert(Dedup::fingerprint(&s.to_string()), Some(horizon), ts, true));
            d.expire(horizon);
            assert!(d.seen.len() <= d.order.len() + d.order.len() / 4 + 64 + 1);
            assert_eq!(d.len(), 101.min(s as usize + 1));
            let back = |k: i64| d.contains(Dedup::fingerprint(&k.to_string()), horizon);
            assert!(back(s) && back((s - 100).max(0)));
            assert!(s < 101 || !back(s - 101));
        }
        assert!(d.seen.len() < 200);
    }

    #[test]
    fn check_insert_decides_as_contains_then_insert() {
        let mut d = Dedup::default();
        let (a, b) = (Dedup::fingerprint("a"), Dedup::fingerprint("b"));
        // No clock yet: nothing is a duplicate; a refused id is not remembered.
        assert!(!d.check_insert(a, None, 1_000, false));
        assert!(d.is_empty());
        assert!(!d.check_insert(a, None, 1_000, true));
        assert!(d.contains(a, 1_000));
        // Within the horizon: a duplicate, and its time stays.
        assert!(d.check_insert(a, Some(1_000), 5_000, true));
        assert!(!d.contains(a, 1_001));
        // Past the horizon: accepted again at its new time.
        assert!(!d.check_insert(a, Some(1_001), 5_000, true));
        assert!(d.contains(a, 5_000));
        assert!(!d.check_insert(b, Some(1_001), 6_000, false));
        assert!(!d.contains(b, 0));
        assert_eq!(d.order.len(), 2);
    }
}
