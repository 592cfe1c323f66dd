//! Copy-on-write storage for the big per-partition tables (users, compacted
//! users, the id arena, timers), so that a snapshot can be *frozen* in
//! about a millisecond and encoded on another thread while the engine goes on.
//!
//! [`Chunked`] is a vector kept in fixed-size chunks of about 4 KiB, each
//! behind an [`Arc`], gathered in groups of 256 chunks, each group behind an
//! [`Arc`] too. Cloning it clones the group pointers only (about five
//! hundred for ten million users); the first write to a chunk still shared
//! with a clone copies its group's table of 256 pointers (4 KiB) and that
//! chunk alone
//! ([`Arc::make_mut`]). So a frozen view costs, while it lives, only the
//! chunks the engine writes to meanwhile, never a full second copy of the
//! state; and [`Chunked::into_pieces`] lets go of each group as soon as it
//! is read, so an encoder that has passed a chunk no longer makes the
//! engine copy it.
//!
//! [`CowHeap`] is a binary max-heap (the order of [`std::collections::BinaryHeap`])
//! kept in a [`Chunked`].

use std::ops::{Index, IndexMut};
use std::sync::Arc;

/// Bytes per chunk by default (rounded down to a power-of-two number of
/// elements): small, so that a frozen view shares most chunks even when the
/// loop writes to a few percent of the elements while it is encoded; large
/// enough that the chunk tables cost under 1%.
pub const CHUNK_BYTES: usize = 4096;

/// Chunks per group. A freeze increments one reference count per group,
/// and after a long stretch of applying those counts are cold in memory
/// (one cache and TLB miss each): 64 chunks per group made the first
/// freeze after a build of 10M users 17–44 ms on this 2-core VM, 256 make
/// it 8–23 ms (`CXPULSE_BENCH_10M=1 cargo bench --bench checkpoint`, a
/// noisy figure); a freeze that follows another one takes 0.2 ms.
const GROUP_SHIFT: u32 = 8;
const GROUP: usize = 1 << GROUP_SHIFT;

/// Up to [`GROUP`] chunks (a slice, not a `Vec`: one indirection less).
type Group<T> = Arc<[Arc<[T]>]>;

/// A vector in copy-on-write chunks of about `B` bytes: see the module documentation.
pub struct Chunked<T, const B: usize = CHUNK_BYTES> {
    /// Every group full ([`GROUP`] chunks) but the last.
    groups: Vec<Group<T>>,
    /// Bit `c`: chunk `c` and its group are known to be held by this
    /// table alone (made unique since the last [`Chunked::share`]), so a
    /// write needs no atomic reference-count check. Invariant: a set bit
    /// implies both `Arc`s have a strong count of 1 and no weak pointer;
    /// only [`Chunked::share`] makes another holder of them, and it clears
    /// every bit.
    unique: Vec<u64>,
    /// Chunks held (at most one past those `len` needs: a spare).
    chunks: usize,
    len: usize,
}

impl<T, const B: usize> Default for Chunked<T, B> {
    fn default() -> Self {
        Chunked {
            groups: Vec::new(),
            unique: Vec::new(),
            chunks: 0,
            len: 0,
        }
    }
}

impl<T, const B: usize> Chunked<T, B> {
    /// A copy sharing every group (the freeze of a snapshot): cheap, one
    /// reference count per group. Later writes to either copy first copy
    /// what they write to.
    pub fn share(&mut self) -> Self {
        self.unique.fill(0);
        Chunked {
            groups: self.groups.clone(),
            unique: Vec::new(),
            chunks: self.chunks,
            len: self.len,
        }
    }
}

impl<T: std::fmt::Debug + Copy, const B: usize> std::fmt::Debug for Chunked<T, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Copy, const B: usize> Chunked<T, B> {
    const SHIFT: u32 = {
        let n = B / if size_of::<T>() == 0 {
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

    /// Chunk `c` (held).
    #[inline]
    fn chunk(&self, c: usize) -> &[T] {
        &self.groups[c >> GROUP_SHIFT][c & (GROUP - 1)]
    }

    /// Chunk `c` (held), copied first (it and its group's table) if shared.
    #[inline(always)]
    fn chunk_mut(&mut self, c: usize) -> &mut [T] {
        let known = self
            .unique
            .get(c / 64)
            .is_some_and(|w| (w >> (c % 64)) & 1 == 1);
        if known {
            let chunk = &self.groups[c >> GROUP_SHIFT][c & (GROUP - 1)];
            // SAFETY: the bit says this table alone holds the chunk and its
            // group (strong count 1, no weak pointer: see `unique`), and
            // `&mut self` is the only access to this table, so no other
            // reference to the chunk's elements exists: what `Arc::get_mut`
            // would return, without its atomic check on this hot path.
            return unsafe { &mut *(Arc::as_ptr(chunk) as *mut [T]) };
        }
        self.chunk_mut_shared(c)
    }

    /// [`Self::chunk_mut`] of a chunk not known to be unique (out of line:
    /// the known case above is on the hot path of every write).
    #[inline(never)]
    fn chunk_mut_shared(&mut self, c: usize) -> &mut [T] {
        let g = Arc::make_mut(&mut self.groups[c >> GROUP_SHIFT]);
        let chunk = Arc::make_mut(&mut g[c & (GROUP - 1)]);
        if self.unique.len() <= c / 64 {
            self.unique.resize(c / 64 + 1, 0);
        }
        self.unique[c / 64] |= 1 << (c % 64);
        chunk
    }

    /// Adds a chunk, filled with `fill` (slots past `len` are never read).
    fn add_chunk(&mut self, fill: T) {
        let chunk = std::iter::repeat_n(fill, Self::PER).collect::<Arc<[T]>>();
        // A rebuilt group is new (unique); its other chunks keep their
        // counts once the old group is dropped, and so their bits.
        match self.groups.last_mut() {
            Some(g) if g.len() < GROUP => {
                *g = g.iter().cloned().chain([chunk]).collect();
            }
            _ => self.groups.push(Arc::new([chunk])),
        }
        self.chunks += 1;
    }

    /// Drops the last chunk.
    fn drop_chunk(&mut self) {
        let Some(g) = self.groups.last_mut() else {
            return;
        };
        if g.len() <= 1 {
            self.groups.pop();
        } else {
            *g = g[..g.len() - 1].iter().cloned().collect();
        }
        self.chunks -= 1;
        let c = self.chunks;
        if let Some(w) = self.unique.get_mut(c / 64) {
            *w &= !(1 << (c % 64));
        }
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        (i < self.len).then(|| &self.chunk(i >> Self::SHIFT)[i & Self::MASK])
    }

    /// The element at `i`, copying its chunk first if a frozen view shares it.
    #[inline(always)]
    pub fn get_mut(&mut self, i: usize) -> &mut T {
        assert!(i < self.len, "index {i} out of {} elements", self.len);
        &mut self.chunk_mut(i >> Self::SHIFT)[i & Self::MASK]
    }

    pub fn push(&mut self, v: T) {
        let (c, o) = (self.len >> Self::SHIFT, self.len & Self::MASK);
        if c == self.chunks {
            self.add_chunk(v);
        } else {
            self.chunk_mut(c)[o] = v;
        }
        self.len += 1;
    }

    pub fn pop(&mut self) -> Option<T> {
        let last = self.len.checked_sub(1)?;
        let v = self.chunk(last >> Self::SHIFT)[last & Self::MASK];
        self.len = last;
        // Keep one spare chunk, so that pushes and pops at a chunk
        // boundary do not allocate every time.
        if self.chunks > self.len.div_ceil(Self::PER) + 1 {
            self.drop_chunk();
        }
        Some(v)
    }

    /// Appends `s` (chunk by chunk).
    pub fn extend_from_slice(&mut self, mut s: &[T]) {
        while let Some(&first) = s.first() {
            let (c, o) = (self.len >> Self::SHIFT, self.len & Self::MASK);
            if c == self.chunks {
                self.add_chunk(first);
            }
            let n = s.len().min(Self::PER - o);
            self.chunk_mut(c)[o..o + n].copy_from_slice(&s[..n]);
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
        self.groups
            .iter()
            .flat_map(|g| g.iter())
            .enumerate()
            .map_while(move |(i, c)| {
                let start = i * Self::PER;
                (start < len).then(|| &c[..(len - start).min(Self::PER)])
            })
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slices().flatten()
    }

    /// The elements, as contiguous pieces in order, each group of chunks
    /// let go of once read: a frozen view consumed this way stops sharing
    /// (or holding a copy of) each chunk soon after it is read.
    pub fn into_pieces(self) -> impl Iterator<Item = Piece<T>> {
        let len = self.len;
        self.groups
            .into_iter()
            .flat_map(|g| {
                // Each piece holds its chunk; the group's table goes with the last one.
                let n = g.len();
                (0..n).map(move |i| g[i].clone())
            })
            .enumerate()
            .map_while(move |(i, chunk)| {
                let start = i * Self::PER;
                (start < len).then(|| Piece {
                    chunk,
                    n: (len - start).min(Self::PER),
                })
            })
    }

    /// Elements `start..start + n`: borrowed if they lie in one chunk, else
    /// copied into `buf` (at least `n` long). Panics past the end.
    pub fn range<'a>(&'a self, start: usize, n: usize, buf: &'a mut [T]) -> &'a [T] {
        assert!(start + n <= self.len, "range past the end");
        let (c, o) = (start >> Self::SHIFT, start & Self::MASK);
        if o + n <= Self::PER {
            return &self.chunk(c)[o..o + n];
        }
        let first = Self::PER - o;
        buf[..first].copy_from_slice(&self.chunk(c)[o..]);
        buf[first..n].copy_from_slice(&self.chunk(c + 1)[..n - first]);
        &buf[..n]
    }

    /// Elements `start..start + n` if they lie in one chunk.
    #[inline]
    pub fn contiguous(&self, start: usize, n: usize) -> Option<&[T]> {
        let (c, o) = (start >> Self::SHIFT, start & Self::MASK);
        (start + n <= self.len && o + n <= Self::PER).then(|| &self.chunk(c)[o..o + n])
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
            if self.chunk(c)[o..o + n] != s[..n] {
                return false;
            }
            at += n;
            s = &s[n..];
        }
        true
    }

    /// Bytes of one group's table.
    const GROUP_BYTES: usize = GROUP * size_of::<Arc<[T]>>() + 2 * size_of::<usize>();

    /// Heap bytes held (whole chunks, and the tables).
    pub fn heap_bytes(&self) -> usize {
        self.chunks * Self::PER * size_of::<T>()
            + self.groups.len() * Self::GROUP_BYTES
            + self.groups.capacity() * size_of::<Group<T>>()
    }

    /// Heap bytes no other clone shares (for a frozen view: what it alone
    /// keeps alive, the engine having copied or dropped them): the tables
    /// of groups it alone holds, and of their chunks those it alone holds.
    pub fn unshared_bytes(&self) -> usize {
        let mut n = self.groups.capacity() * size_of::<Group<T>>();
        for g in self.groups.iter().filter(|g| Arc::strong_count(g) == 1) {
            n += Self::GROUP_BYTES;
            let alone = g.iter().filter(|c| Arc::strong_count(c) == 1).count();
            n += alone * Self::PER * size_of::<T>();
        }
        n
    }
}

/// One chunk's elements, from [`Chunked::into_pieces`].
pub struct Piece<T> {
    chunk: Arc<[T]>,
    n: usize,
}

impl<T> std::ops::Deref for Piece<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.chunk[..self.n]
    }
}

impl<T: Copy, const B: usize> Index<usize> for Chunked<T, B> {
    type Output = T;
    #[inline]
    fn index(&self, i: usize) -> &T {
        assert!(i < self.len, "index {i} out of {} elements", self.len);
        &self.chunk(i >> Self::SHIFT)[i & Self::MASK]
    }
}

impl<T: Copy, const B: usize> IndexMut<usize> for Chunked<T, B> {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut T {
        self.get_mut(i)
    }
}

impl<'a, T: Copy, const B: usize> IntoIterator for &'a Chunked<T, B> {
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

impl<T> CowHeap<T> {
    /// A copy sharing every chunk: see [`Chunked::share`].
    pub fn share(&mut self) -> Self {
        CowHeap {
            data: self.data.share(),
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

    /// The storage (in heap order), shared: see [`Chunked::share`].
    pub fn share_storage(&mut self) -> Chunked<T> {
        self.data.share()
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
        // Across a group boundary: more chunks than one group holds.
        let n = (GROUP + 6) * Chunked::<u64>::PER + 5;
        for i in 0..n as u64 {
            a.push(i);
        }
        let frozen = a.share();
        // Nothing copied yet: every group is shared.
        assert_eq!(
            frozen.unshared_bytes(),
            frozen.groups.capacity() * size_of::<Group<u64>>()
        );
        a[7] = 1000;
        a.push(77);
        for _ in 0..3 * Chunked::<u64>::PER {
            a.pop();
        }
        assert_eq!(frozen.len(), n);
        assert!(frozen.iter().copied().eq(0..n as u64));
        assert_eq!(a[7], 1000);
        assert_eq!(a.len(), n + 1 - 3 * Chunked::<u64>::PER);
        let mut pieces = 0;
        let mut again = frozen;
        let frozen = again.share();
        for (p, want) in again.into_pieces().zip(frozen.slices()) {
            assert_eq!(&*p, want);
            pieces += 1;
        }
        assert_eq!(pieces, GROUP + 7);
        // The first chunk was copied for the write: the frozen view alone holds its original.
        assert!(frozen.unshared_bytes() >= Chunked::<u64>::PER * 8);
    }

    #[test]
    fn byte_ranges_across_chunks_read_and_compare() {
        let per = Chunked::<u8>::PER;
        let bytes: Vec<u8> = (0..2 * per + 10).map(|i| (i % 251) as u8).collect();
        let mut a: Chunked<u8> = Chunked::default();
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
                let frozen = h.share();
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
