//! The simulation's priority queue of future jobs, earliest first, ties in
//! scheduling order.
//!
//! A plain binary heap over the whole population spends most of the
//! generator's time in cache misses. Jobs are therefore bucketed by time:
//! only the current bucket is a heap (small, cache-resident); later buckets
//! are plain vectors in a ring, heapified in O(n) when their turn comes.
//! The order is exactly a single heap's, so output does not depend on the
//! bucket width.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A job due at `at`; `seq` (unique, increasing) breaks ties in scheduling order.
pub(crate) struct Entry<J> {
    pub(crate) at: i64,
    pub(crate) seq: u64,
    pub(crate) job: J,
}

// Reversed so that `BinaryHeap` (a max-heap) pops the earliest.
impl<J> Ord for Entry<J> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}
impl<J> PartialOrd for Entry<J> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<J> PartialEq for Entry<J> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<J> Eq for Entry<J> {}

/// Buckets held in the ring: jobs further ahead wait in `overflow`.
const RING: i64 = 4096;

pub(crate) struct Agenda<J> {
    /// Every job of bucket `cur` or earlier.
    near: BinaryHeap<Entry<J>>,
    cur: i64,
    /// Jobs of buckets `cur + 1 .. cur + RING`, at `bucket % RING`.
    ring: Vec<Vec<Entry<J>>>,
    ring_len: usize,
    /// Jobs of later buckets (far-off comebacks), moved into the ring as it reaches them.
    overflow: BinaryHeap<Entry<J>>,
    width: i64,
    len: usize,
}

impl<J> Agenda<J> {
    /// An agenda of buckets `width` ms wide; nothing may be scheduled before `start`.
    pub(crate) fn new(width: i64, start: i64) -> Agenda<J> {
        let width = width.max(1);
        Agenda {
            near: BinaryHeap::new(),
            cur: start.div_euclid(width) - 1,
            ring: (0..RING).map(|_| Vec::new()).collect(),
            ring_len: 0,
            overflow: BinaryHeap::new(),
            width,
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, entry: Entry<J>) {
        self.len += 1;
        self.place(entry);
    }

    fn place(&mut self, entry: Entry<J>) {
        let bucket = entry.at.div_euclid(self.width);
        if bucket <= self.cur {
            self.near.push(entry);
        } else if bucket < self.cur + RING {
            self.ring[(bucket & (RING - 1)) as usize].push(entry);
            self.ring_len += 1;
        } else {
            self.overflow.push(entry);
        }
    }

    /// When the earliest job is due, and whether a new bucket was just
    /// loaded (see `near_jobs`).
    pub(crate) fn next_at(&mut self) -> (Option<i64>, bool) {
        let loaded = self.refill();
        (self.near.peek().map(|e| e.at), loaded)
    }

    /// The jobs of the current bucket, in no particular order.
    pub(crate) fn near_jobs(&self) -> impl Iterator<Item = &J> {
        self.near.iter().map(|e| &e.job)
    }

    pub(crate) fn pop(&mut self) -> Option<Entry<J>> {
        let _ = self.refill();
        let e = self.near.pop()?;
        self.len -= 1;
        Some(e)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Advances bucket by bucket until `near` has work (or nothing is left);
    /// true if it loaded a bucket.
    fn refill(&mut self) -> bool {
        let mut loaded = false;
        while self.near.is_empty() && self.len > 0 {
            loaded = true;
            if self.ring_len == 0 {
                // Skip the empty stretch up to the first far-off job.
                if let Some(first) = self.overflow.peek() {
                    self.cur = self.cur.max(first.at.div_euclid(self.width) - 1);
                }
            }
            self.cur += 1;
            let slot = &mut self.ring[(self.cur & (RING - 1)) as usize];
            if !slot.is_empty() {
                self.ring_len -= slot.len();
                // O(n) heapify. The slot starts again from an empty vector:
                // handing it the old heap's buffer would let every slot keep
                // the largest capacity it ever needed.
                self.near = BinaryHeap::from(std::mem::take(slot));
            }
            while self
                .overflow
                .peek()
                .is_some_and(|e| e.at.div_euclid(self.width) < self.cur + RING)
            {
                if let Some(e) = self.overflow.pop() {
                    self.place(e);
                }
            }
        }
        loaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_then_scheduling_order_across_buckets() {
        let mut a = Agenda::new(10, 0);
        let mut seq = 0;
        let mut push = |a: &mut Agenda<char>, at: i64, job: char| {
            seq += 1;
            a.push(Entry { at, seq, job });
        };
        // 'h' is beyond the ring (4096 buckets of 10) and comes back in order.
        for (at, job) in [
            (25, 'd'),
            (3, 'a'),
            (25, 'e'),
            (9, 'b'),
            (40, 'g'),
            (100_000, 'h'),
        ] {
            push(&mut a, at, job);
        }
        assert_eq!(a.pop().map(|e| e.job), Some('a'));
        // Pushed into the current bucket while it is being drained.
        push(&mut a, 5, 'c');
        push(&mut a, 31, 'f');
        let rest: String = std::iter::from_fn(|| a.pop().map(|e| e.job)).collect();
        assert_eq!(rest, "cbdefgh");
        assert_eq!(a.len(), 0);
    }
}
