//! Epoch-aligned buckets of summed values, kept for a bounded span.
//!
//! A [`Ring`] holds one `[f64; N]` per *non-empty* bucket, in bucket order.
//! Effects are applied in event-time order, so writes land on the newest
//! bucket or append a newer one; an older bucket is inserted by binary
//! search (rare). Memory follows the buckets that saw data, not the span:
//! a quiet partition costs almost nothing. Window sums are taken over
//! half-open bucket ranges `[from, to)`. Old buckets are dropped by
//! [`Ring::trim`].

use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct Ring<const N: usize> {
    /// `(bucket index, sums)`, strictly increasing bucket index.
    pub(crate) entries: VecDeque<(i64, [f64; N])>,
}

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Ring {
            entries: VecDeque::new(),
        }
    }
}

impl<const N: usize> Ring<N> {
    /// Adds `v` to field `field` of bucket `b`.
    pub fn add(&mut self, b: i64, field: usize, v: f64) {
        match self.entries.back_mut() {
            Some((last, vals)) if *last == b => vals[field] += v,
            Some((last, _)) if *last > b => {
                let i = self.entries.partition_point(|(x, _)| *x < b);
                match self.entries.get_mut(i) {
                    Some((x, vals)) if *x == b => vals[field] += v,
                    _ => {
                        let mut vals = [0.0; N];
                        vals[field] = v;
                        self.entries.insert(i, (b, vals));
                    }
                }
            }
            _ => {
                let mut vals = [0.0; N];
                vals[field] = v;
                self.entries.push_back((b, vals));
            }
        }
    }

    /// Sums of every field over buckets `[from, to)`.
    pub fn sum(&self, from: i64, to: i64) -> [f64; N] {
        let mut acc = [0.0; N];
        if to <= from {
            return acc;
        }
        let start = self.entries.partition_point(|(x, _)| *x < from);
        for (b, vals) in self.entries.range(start..) {
            if *b >= to {
                break;
            }
            for (a, x) in acc.iter_mut().zip(vals.iter()) {
                *a += x;
            }
        }
        acc
    }

    /// Drops buckets before `oldest_kept`.
    pub fn trim(&mut self, oldest_kept: i64) {
        while self.entries.front().is_some_and(|(b, _)| *b < oldest_kept) {
            self.entries.pop_front();
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(i64, [f64; N])>()
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
        r.add(11, 0, 0.5);
        r.add(12, 1, 1.0);
        assert_eq!(r.sum(8, 13), [6.5, 3.0]);
        assert_eq!(r.sum(10, 12), [1.5, 0.0]);
        assert_eq!(r.sum(0, 100), [6.5, 3.0]);
        assert_eq!(r.sum(13, 100), [0.0, 0.0]);
        r.trim(10);
        assert_eq!(r.sum(0, 100), [1.5, 3.0]);
        assert_eq!(
            r.entries.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
    }
}
