//! Copy-on-write storage for the big per-partition tables (users, compacted
//! users, the id arena, timers), so that a snapshot can be *frozen* in
//! microseconds and encoded on another thread while the engine goes on.
//!
//! [`Chunked`] is a vector kept in fixed-size chunks of about 32 KiB, each
//! behind an [`Arc`]. Cloning it clones the chunk pointers only (a few
//! thousand at ten million users); the first write to a chunk still shared
//! with a clone copies that chunk alone ([`Arc::make_mut`]). So a frozen
//! view costs, while it lives, only the chunks the engine writes to
//! meanwhile, never a full second copy of the state.
//!
//! [`CowHeap`] is a binary max-heap (the order of [`std::collections::BinaryHeap`])
//! kept in a [`Chunked`].

use std::ops::{Index, IndexMut};
use std::sync::Arc;

/// Bytes per chunk (rounded down to a power-of-two number of elements).
const CHUNK_BYTES: usize = 32 * 1024;

/// A vector in copy-on-write chunks: see the module documentation.
pub struct Chunked<T> {
    chunks: Vec<Arc<[T]>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

/// Cheap: shares every chunk (the freeze of a snapshot).
impl<T> Clone for Chunked<T> {
    fn clone(&self) -> Self {
        Chunked {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T: std::fmt::Debug + Copy> std::fmt::Debug for Chunked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Copy> Chunked<T> {
    const SHIFT: u32 = {
        let n = CHUNK_BYTES
            / if size_of::<T>() == 0 {
                1
            } else {
                size_of::<T>()
            };
        if n <= 1 { 0 } else { n.ilog2() }
    };
    /// Elements per chunk.
    pub const PER: usize = 1 << Self::SHIFT;
    const MASK: usize = Self::PER - 1;

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        (i < self.len).then(|| &self.chunks[i >> Self::SHIFT][i & Self::MASK])
    }

    /// The element at `i`, copying its chunk first if a frozen view shares it.
    pub fn get_mut(&mut self, i: usize) -> &mut T {
        assert!(i < self.len, "index {i} out of {} elements", self.len);
        &mut Arc::make_mut(&mut self.chunks[i >> Self::SHIFT])[i & Self::MASK]
    }

    pub fn push(&mut self, v: T) {
        let (c, o) = (self.len >> Self::SHIFT, self.len & Self::MASK);
        if c == self.chunks.len() {
            // A new chunk, filled with `v` (slots past `len` are never read).
            self.chunks
                .push(std::iter::repeat_n(v, Self::PER).collect::<Arc<[T]>>());
        } else {
            Arc::make_mut(&mut self.chunks[c])[o] = v;
        }
        self.len += 1;
    }

    pub fn pop(&mut self) -> Option<T> {
        let last = self.len.checked_sub(1)?;
        let v = self.chunks[last >> Self::SHIFT][last & Self::MASK];
        self.len = last;
        // Keep one spare chunk, so that pushes and pops at a chunk
        // boundary do not allocate every time.
        if self.chunks.len() > self.len.div_ceil(Self::PER) + 1 {
            self.chunks.pop();
        }
        Some(v)
    }

    /// Appends `s` (chunk by chunk).
    pub fn extend_from_slice(&mut self, mut s: &[T]) {
        while let Some(&first) = s.first() {
            let (c, o) = (self.len >> Self::SHIFT, self.len & Self::MASK);
            if c == self.chunks.len() {
                self.chunks
                    .push(std::iter::repeat_n(first, Self::PER).collect::<Arc<[T]>>());
            }
            let n = s.len().min(Self::PER - o);
            Arc::make_mut(&mut self.chunks[c])[o..o + n].copy_from_slice(&s[..n]);
            self.len += n;
            s = &s[n..];
        }
    }

    pub fn from_slice(s: &[T]) -> Self {
        let mut c = Chunked::default();
        c.extend_from_slice(s);
        c
    }

    /// The elements, as contiguous slices in order.
    pub fn slices(&self) -> impl Iterator<Item = &[T]> {
        let len = self.len;
        self.chunks.iter().enumerate().map_while(move |(i, c)| {
            let start = i * Self::PER;
            (start < len).then(|| &c[..(len - start).min(Self::PER)])
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slices().flatten()
    }

    /// Elements `start..start + n`: borrowed if they lie in one chunk, else
    /// copied into `buf` (at least `n` long). Panics past the end.
    pub fn range<'a>(&'a self, start: usize, n: usize, buf: &'a mut [T]) -> &'a [T] {
        assert!(start + n <= self.len, "range past the end");
        let (c, o) = (start >> Self::SHIFT, start & Self::MASK);
        if o + n <= Self::PER {
            return &self.chunks[c][o..o + n];
        }
        let first = Self::PER - o;
        buf[..first].copy_from_slice(&self.chunks[c][o..]);
        buf[first..n].copy_from_slice(&self.chunks[c + 1][..n - first]);
        &buf[..n]
    }

    /// Elements `start..start + n` if they lie in one chunk.
    pub fn contiguous(&self, start: usize, n: usize) -> Option<&[T]> {
        let (c, o) = (start >> Self::SHIFT, start & Self::MASK);
        (start + n <= self.len && o + n <= Self::PER).then(|| &self.chunks[c][o..o + n])
    }

    /// Whether elements `start..start + s.len()` equal `s`.
    pub fn range_eq(&self, start: usize, s: &[T]) -> bool
    where
        T: PartialEq,
    {
        if start + s.len() > self.len {
            return false;
        }
        let (mut at, mut s) = (start, s);
        while !s.is_empty() {
            let (c, o) = (at >> Self::SHIFT, at & Self::MASK);
            let n = s.len().min(Self::PER - o);
            if self.chunks[c][o..o + n] != s[..n] {
                return false;
            }
            at += n;
            s = &s[n..];
        }
        true
    }

    /// Heap bytes held (whole chunks, and the chunk table).
    pub fn heap_bytes(&self) -> usize {
        self.chunks.len() * Self::PER * size_of::<T>()
            + self.chunks.capacity() * size_of::<Arc<[T]>>()
    }

    /// Heap bytes of the chunks no other clone shares (for a frozen view:
    /// what it alone keeps alive, the engine having copied or dropped them).
    pub fn unshared_bytes(&self) -> usize {
        let alone = self
            .chunks
            .iter()
            .filter(|c| Arc::strong_count(c) == 1)
            .count();
        alone * Self::PER * size_of::<T>() + self.chunks.capacity() * size_of::<Arc<[T]>>()
    }
}

impl<T: Copy> Index<usize> for Chunked<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        assert!(i < self.len, "index {i} out of {} elements", self.len);
        &self.chunks[i >> Self::SHIFT][i & Self::MASK]
    }
}

impl<T: Copy> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        self.get_mut(i)
    }
}

impl<'a, T: Copy> IntoIterator for &'a Chunked<T> {
    type Item = &'a T;
    type IntoIter = Box<dyn Iterator<Item = &'a T> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// A binary max-heap in a [`Chunked`]: `push`, `pop` and `peek` as
/// [`std::collections::BinaryHeap`]'s; a clone shares every chunk.
pub struct CowHeap<T> {
    data: Chunked<T>,
}

impl<T> Default for CowHeap<T> {
    fn default() -> Self {
        CowHeap {
            data: Chunked::default(),
        }
    }
}

impl<T> Clone for CowHeap<T> {
    fn clone(&self) -> Self {
        CowHeap {
            data: self.data.clone(),
        }
    }
}

impl<T: std::fmt::Debug + Copy> std::fmt::Debug for CowHeap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.data.fmt(f)
    }
}

impl<T: Copy + Ord> CowHeap<T> {
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The greatest element.
    pub fn peek(&self) -> Option<&T> {
        self.data.get(0)
    }

    pub fn push(&mut self, v: T) {
        self.data.push(v);
        self.sift_up(0, self.data.len() - 1);
    }

    /// Removes the greatest element.
    pub fn pop(&mut self) -> Option<T> {
        let mut item = self.data.pop()?;
        if !self.data.is_empty() {
            std::mem::swap(&mut item, self.data.get_mut(0));
            self.sift_down_to_bottom(0);
        }
        Some(item)
    }

    /// The elements in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.data.iter()
    }

    /// The storage (in heap order).
    pub fn storage(&self) -> &Chunked<T> {
        &self.data
    }

    pub fn heap_bytes(&self) -> usize {
        self.data.heap_bytes()
    }

    /// Moves the element at `pos` up while it is greater than its parent.
    fn sift_up(&mut self, start: usize, mut pos: usize) {
        let elem = self.data[pos];
        while pos > start {
            let parent = (pos - 1) / 2;
            let p = self.data[parent];
            if elem <= p {
                break;
            }
            self.data[pos] = p;
            pos = parent;
        }
        self.data[pos] = elem;
    }

    /// Moves the element at `pos` down to a leaf, then up to its place
    /// (fewer comparisons when it was a leaf, as after a pop).
    fn sift_down_to_bottom(&mut self, mut pos: usize) {
        let end = self.data.len();
        let start = pos;
        let elem = self.data[pos];
        let mut child = 2 * pos + 1;
        while child + 1 < end {
            if self.data[child] <= self.data[child + 1] {
                child += 1;
            }
            self.data[pos] = self.data[child];
            pos = child;
            child = 2 * pos + 1;
        }
        if child == end - 1 {
            self.data[pos] = self.data[child];
            pos = child;
        }
        self.data[pos] = elem;
        self.sift_up(start, pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BinaryHeap;

    #[test]
    fn a_clone_keeps_its_values_while_the_original_changes() {
        let mut a: Chunked<u64> = Chunked::default();
        let n = 3 * Chunked::<u64>::PER + 5;
        for i in 0..n as u64 {
            a.push(i);
        }
        let frozen = a.clone();
        // Nothing copied yet: every chunk is shared.
        assert_eq!(frozen.unshared_bytes(), frozen.chunks.capacity() * 16);
        a[7] = 1000;
        a.push(77);
        for _ in 0..2 * Chunked::<u64>::PER {
            a.pop();
        }
        assert_eq!(frozen.len(), n);
        assert!(frozen.iter().copied().eq(0..n as u64));
        assert_eq!(a[7], 1000);
        assert_eq!(a.len(), n + 1 - 2 * Chunked::<u64>::PER);
        // The first chunk was copied for the write: the frozen view alone holds its original.
        assert!(frozen.unshared_bytes() >= Chunked::<u64>::PER * 8);
    }

    #[test]
    fn byte_ranges_across_chunks_read_and_compare() {
        let per = Chunked::<u8>::PER;
        let bytes: Vec<u8> = (0..2 * per + 10).map(|i| (i % 251) as u8).collect();
        let mut a = Chunked::default();
        a.extend_from_slice(&bytes[..per - 3]);
        a.extend_from_slice(&bytes[per - 3..]);
        assert_eq!(a.len(), bytes.len());
        let mut buf = [0u8; 16];
        assert_eq!(a.range(per - 3, 8, &mut buf), &bytes[per - 3..per + 5]);
        assert_eq!(a.range(5, 8, &mut buf), &bytes[5..13]);
        assert!(a.range_eq(per - 3, &bytes[per - 3..per + 5]));
        assert!(!a.range_eq(per - 3, &bytes[per - 2..per + 6]));
        assert!(!a.range_eq(a.len() - 2, &bytes[..3]));
        let joined: Vec<u8> = a.slices().flatten().copied().collect();
        assert_eq!(joined, bytes);
    }

    #[test]
    fn the_heap_pops_in_the_order_of_binary_heap() {
        let mut h = CowHeap::default();
        let mut std = BinaryHeap::new();
        let mut x: u64 = 12345;
        for round in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if round % 3 == 2 {
                assert_eq!(h.pop(), std.pop());
            } else {
                h.push(x >> 40);
                std.push(x >> 40);
            }
            if round == 10_000 {
                // A frozen clone does not see later changes.
                let frozen = h.clone();
                let mut want: Vec<u64> = std.clone().into_vec();
                want.sort_unstable();
                h.push(u64::MAX);
                assert_eq!(h.pop(), Some(u64::MAX));
                let top = std.pop().expect("not empty");
                assert_eq!(h.pop(), Some(top));
                h.push(top);
                std.push(top);
                let mut got: Vec<u64> = frozen.iter().copied().collect();
                got.sort_unstable();
                assert_eq!(got, want);
            }
            assert_eq!(h.peek(), std.peek());
            assert_eq!(h.len(), std.len());
        }
        while let Some(v) = std.pop() {
            assert_eq!(h.pop(), Some(v));
        }
        assert!(h.pop().is_none());
    }
}
