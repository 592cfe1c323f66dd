//! Epoch-aligned buckets of summed values, kept for a bounded span.
//!
//! A [`Ring`] holds one `[f64; N]` per bucket index. Window sums are taken
//! over half-open bucket ranges `[from, to)`. Old buckets are dropped by
//! [`Ring::trim`]; writes older than what is kept are ignored (they can only
//! come from beyond every horizon, which the engine never produces).

use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct Ring<const N: usize> {
    /// Bucket index of `slots[0]`.
    pub(crate) base: i64,
    pub(crate) slots: VecDeque<[f64; N]>,
}

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Ring {
            base: 0,
            slots: VecDeque::new(),
        }
    }
}

impl<const N: usize> Ring<N> {
    /// Adds `v` to field `field` of bucket `b`.
    pub fn add(&mut self, b: i64, field: usize, v: f64) {
        if self.slots.is_empty() {
            self.base = b;
        }
        if b < self.base {
            // Grow towards the past (rare: a decision dated before the oldest bucket held).
            let grow = (self.base - b) as usize;
            for _ in 0..grow {
                self.slots.push_front([0.0; N]);
            }
            self.base = b;
        }
        let i = (b - self.base) as usize;
        while self.slots.len() <= i {
            self.slots.push_back([0.0; N]);
        }
        self.slots[i][field] += v;
    }

    /// Sums of every field over buckets `[from, to)`.
    pub fn sum(&self, from: i64, to: i64) -> [f64; N] {
        let mut acc = [0.0; N];
        if self.slots.is_empty() || to <= from {
            return acc;
        }
        let lo = (from - self.base).max(0);
        let hi = (to - self.base).min(self.slots.len() as i64);
        let mut i = lo;
        while i < hi {
            let s = &self.slots[i as usize];
            for (a, x) in acc.iter_mut().zip(s.iter()) {
                *a += x;
            }
            i += 1;
        }
        acc
    }

    /// Drops buckets before `oldest_kept`.
    pub fn trim(&mut self, oldest_kept: i64) {
        while !self.slots.is_empty() && self.base < oldest_kept {
            self.slots.pop_front();
            self.base += 1;
        }
        if self.slots.is_empty() {
            self.base = self.base.max(oldest_kept);
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<[f64; N]>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_half_open_ranges_and_trims() {
        let mut r: Ring<2> = Ring::default();
        r.add(10, 0, 1.0);
        r.add(12, 1, 2.0);
        r.add(8, 0, 5.0);
        assert_eq!(r.sum(8, 13), [6.0, 2.0]);
        assert_eq!(r.sum(10, 12), [1.0, 0.0]);
        assert_eq!(r.sum(0, 100), [6.0, 2.0]);
        r.trim(10);
        assert_eq!(r.sum(0, 100), [1.0, 2.0]);
    }
}
