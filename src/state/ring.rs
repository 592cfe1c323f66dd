//! Epoch-aligned buckets of summed values, kept for a bounded span.
//!
//! A [`Ring<T>`] holds one `T` (a small struct of named sums, see
//! [`bucket!`](crate::bucket)) per *non-empty* bucket, in bucket order.
//! Effects are applied in event-time order, so writes land on the newest
//! bucket or append a newer one; an older bucket is inserted by binary
//! search (rare). Memory follows the buckets that saw data, not the span:
//! a quiet partition costs almost nothing. Window sums are taken over
//! half-open bucket ranges `[from, to)`. Old buckets are dropped by
//! [`Ring::trim`].

use std::collections::VecDeque;

use super::codec::{R, SnapshotError, W, check_finite, check_time};

/// The sums of one bucket: added field by field.
pub trait Bucket: Copy + Default {
    /// Adds every field of `o` to the same field of `self`.
    fn add(&mut self, o: &Self);
    fn write(&self, w: &mut W);
    fn read(r: &mut R<'_>) -> Result<Self, SnapshotError>;
    /// Encoded size in bytes.
    const BYTES: usize;
}

/// A field of a [`Bucket`]: an `f64` or an array of them (one per priority, ...).
pub trait Field: Copy + Default {
    fn add(&mut self, o: &Self);
    fn write(&self, w: &mut W);
    fn read(r: &mut R<'_>) -> Result<Self, SnapshotError>;
    const BYTES: usize;
}

impl Field for f64 {
    fn add(&mut self, o: &Self) {
        *self += o;
    }
    fn write(&self, w: &mut W) {
        w.f64(*self);
    }
    fn read(r: &mut R<'_>) -> Result<Self, SnapshotError> {
        check_finite("bucket sum", r.f64()?)
    }
    const BYTES: usize = 8;
}

impl<const N: usize> Field for [f64; N]
where
    [f64; N]: Default,
{
    fn add(&mut self, o: &Self) {
        for (a, x) in self.iter_mut().zip(o) {
            *a += x;
        }
    }
    fn write(&self, w: &mut W) {
        for v in self {
            w.f64(*v);
        }
    }
    fn read(r: &mut R<'_>) -> Result<Self, SnapshotError> {
        let mut a = [0.0; N];
        for v in a.iter_mut() {
            *v = check_finite("bucket sum", r.f64()?)?;
        }
        Ok(a)
    }
    const BYTES: usize = 8 * N;
}

/// Declares a bucket struct of named sums (`f64` or `[f64; N]` fields) and
/// its [`Bucket`] implementation (field-wise add, encoding in field order).
#[macro_export]
macro_rules! bucket {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident: $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct $name { $($(#[$fm])* pub $f: $t,)* }

        impl $crate::state::ring::Bucket for $name {
            fn add(&mut self, o: &Self) {
                $($crate::state::ring::Field::add(&mut self.$f, &o.$f);)*
            }
            fn write(&self, w: &mut $crate::state::codec::W) {
                $($crate::state::ring::Field::write(&self.$f, w);)*
            }
            fn read(
                r: &mut $crate::state::codec::R<'_>,
            ) -> Result<Self, $crate::state::codec::SnapshotError> {
                Ok($name { $($f: $crate::state::ring::Field::read(r)?,)* })
            }
            const BYTES: usize = 0 $(+ <$t as $crate::state::ring::Field>::BYTES)*;
        }
    };
}

#[derive(Clone, Debug)]
pub struct Ring<T> {
    /// `(bucket index, sums)`, strictly increasing bucket index.
    pub(crate) entries: VecDeque<(i64, T)>,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Ring {
            entries: VecDeque::new(),
        }
    }
}

impl<T: Bucket> Ring<T> {
    /// The sums of bucket `b`, created empty when absent.
    #[inline]
    pub fn at(&mut self, b: i64) -> &mut T {
        match self.entries.back() {
            // The common case: effects are applied in time order.
            Some((last, _)) if *last == b => {}
            Some((last, _)) if *last > b => return self.insert_older(b),
            _ => self.entries.push_back((b, T::default())),
        }
        let (_, vals) = self.entries.back_mut().expect("a newest bucket");
        vals
    }

    /// Bucket `b`, older than the newest one: found or inserted in order.
    fn insert_older(&mut self, b: i64) -> &mut T {
        let i = self.entries.partition_point(|(x, _)| *x < b);
        if self.entries.get(i).is_none_or(|(x, _)| *x != b) {
            self.entries.insert(i, (b, T::default()));
        }
        &mut self.entries[i].1
    }

    /// Sums of every field over buckets `[from, to)`, added to an empty bucket in bucket order.
    pub fn sum(&self, from: i64, to: i64) -> T {
        let mut acc = T::default();
        if to <= from {
            return acc;
        }
        let start = self.entries.partition_point(|(x, _)| *x < from);
        for (b, vals) in self.entries.range(start..) {
            if *b >= to {
                break;
            }
            acc.add(vals);
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
        self.entries.capacity() * std::mem::size_of::<(i64, T)>()
    }

    pub fn write(&self, w: &mut W) {
        w.len(self.entries.len());
        for (b, vals) in &self.entries {
            w.i64(*b);
            vals.write(w);
        }
    }

    pub fn read(r: &mut R<'_>) -> Result<Self, SnapshotError> {
        let n = r.len(8 + T::BYTES)?;
        let mut entries: VecDeque<(i64, T)> = VecDeque::with_capacity(n);
        for _ in 0..n {
            let b = check_time("bucket index", r.i64()?)?;
            if entries.back().is_some_and(|(last, _)| *last >= b) {
                return Err(SnapshotError::Invalid("bucket order"));
            }
            entries.push_back((b, T::read(r)?));
        }
        Ok(Ring { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::bucket! {
        pub struct Two {
            pub a: f64,
            pub b: f64,
        }
    }

    #[test]
    fn sums_half_open_ranges_and_trims() {
        let mut r: Ring<Two> = Ring::default();
        r.at(10).a += 1.0;
        r.at(12).b += 2.0;
        r.at(8).a += 5.0;
        r.at(11).a += 0.5;
        r.at(12).b += 1.0;
        let two = |a, b| Two { a, b };
        assert_eq!(r.sum(8, 13), two(6.5, 3.0));
        assert_eq!(r.sum(10, 12), two(1.5, 0.0));
        assert_eq!(r.sum(0, 100), two(6.5, 3.0));
        assert_eq!(r.sum(13, 100), two(0.0, 0.0));
        r.trim(10);
        assert_eq!(r.sum(0, 100), two(1.5, 3.0));
        assert_eq!(
            r.entries.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
    }

    #[test]
    fn encodes_and_refuses_unordered_buckets() {
        let mut r: Ring<Two> = Ring::default();
        r.at(3).a += 1.5;
        r.at(7).b += -2.0;
        let mut w = W(Vec::new());
        r.write(&mut w);
        assert_eq!(w.0.len(), 8 + 2 * (8 + 16));
        let back = Ring::<Two>::read(&mut R::new(&w.0)).unwrap();
        assert_eq!(back.entries, r.entries);
        // Swap the two bucket indices: 7 then 3 is not in order.
        let mut bad = w.0.clone();
        bad[8..16].copy_from_slice(&7i64.to_le_bytes());
        bad[32..40].copy_from_slice(&3i64.to_le_bytes());
        assert_eq!(
            Ring::<Two>::read(&mut R::new(&bad)).err(),
            Some(SnapshotError::Invalid("bucket order"))
        );
    }
}
