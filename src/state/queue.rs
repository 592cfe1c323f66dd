//! A FIFO queue kept in immutable shared blocks plus a small tail, so that a
//! copy of it (the freeze of a snapshot) costs one reference count per
//! block and a copy of the tail, never a copy of the entries.
//!
//! [`BlockQueue`] takes entries at the back and gives them up at the front
//! only (the dedup expiry queue: ids pushed in acceptance order, expired
//! oldest first). So a block, once full, is never written again: it is
//! sealed behind an [`Arc`] and shared by every [`BlockQueue::share`] made
//! since, until the queue's front has passed it and every view has let it
//! go. Entries are pushed into a plain `Vec` tail; when it holds a block's
//! worth, that `Vec` itself becomes the sealed block (moved behind an
//! [`Arc`], not copied) and a new tail is allocated.

use std::collections::VecDeque;
use std::sync::Arc;

/// Bytes per sealed block (rounded down to whole entries).
pub const BLOCK_BYTES: usize = 64 * 1024;

/// A FIFO queue of `T` in sealed blocks of about `B` bytes: see the module documentation.
#[derive(Clone)]
pub struct BlockQueue<T, const B: usize = BLOCK_BYTES> {
    /// Full blocks, oldest first; never written once sealed.
    blocks: VecDeque<Arc<Vec<T>>>,
    /// Index of the front entry in the first block (or, with no block, in `tail`).
    head: usize,
    /// Entries after the last block, fewer than [`BlockQueue::PER`].
    tail: Vec<T>,
}

impl<T, const B: usize> Default for BlockQueue<T, B> {
    fn default() -> Self {
        BlockQueue {
            blocks: VecDeque::new(),
            head: 0,
            tail: Vec::new(),
        }
    }
}

impl<T: std::fmt::Debug + Copy, const B: usize> std::fmt::Debug for BlockQueue<T, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Copy, const B: usize> BlockQueue<T, B> {
    /// Entries per sealed block.
    pub const PER: usize = {
        let n = B / if size_of::<T>() == 0 {
            1
        } else {
            size_of::<T>()
        };
        if n == 0 { 1 } else { n }
    };

    /// Bytes of a sealed block besides its entries: the `Arc`'s two
    /// counts and the `Vec` (pointer, capacity, length).
    const BLOCK_HEADER: usize = 16 + size_of::<Vec<T>>();

    pub fn len(&self) -> usize {
        if self.blocks.is_empty() {
            self.tail.len() - self.head
        } else {
            self.blocks.len() * Self::PER - self.head + self.tail.len()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pushes `x` at the back: into the tail, sealed with it once the tail is full.
    #[inline]
    pub fn push_back(&mut self, x: T) {
        self.tail.push(x);
        if self.tail.len() == Self::PER {
            self.seal();
        }
    }

    /// The full tail becomes a sealed block (moved, not copied: the copy
    /// cost 24 bytes of memcpy per accepted event) and a new tail of
    /// exactly one block is allocated.
    #[cold]
    #[inline(never)]
    fn seal(&mut self) {
        let full = std::mem::replace(&mut self.tail, Vec::with_capacity(Self::PER));
        // The first tail of a queue grew by doubling: trimmed once, so
        // that every block holds exactly `PER` entries' worth.
        let full = if full.capacity() > Self::PER {
            full.into_boxed_slice().into_vec()
        } else {
            full
        };
        self.blocks.push_back(Arc::new(full));
    }

    /// The front entry.
    pub fn front(&self) -> Option<&T> {
        self.first().first()
    }

    /// The entries of the first block (or of the tail) from the front.
    fn first(&self) -> &[T] {
        match self.blocks.front() {
            Some(b) => &b[self.head..],
            None => &self.tail[self.head..],
        }
    }

    /// Drops entries from the front while `f` holds for them; returns how many.
    /// Called for every accepted event (dedup expiry), which nearly always
    /// drops none or one entry inside the first block: that part is
    /// inlined, passing a block's end is not.
    #[inline]
    pub fn pop_front_while<F: FnMut(&T) -> bool>(&mut self, mut f: F) -> usize {
        let first: &[T] = match self.blocks.front() {
            Some(b) => b,
            None => &self.tail,
        };
        let start = self.head;
        let mut h = start;
        while let Some(x) = first.get(h) {
            if !f(x) {
                self.head = h;
                return h - start;
            }
            h += 1;
        }
        self.head = h;
        (h - start) + self.passed_first(f)
    }

    /// The front has reached the end of the first block (dropped, and the
    /// dropping goes on in the next) or of the tail (the queue is empty).
    #[cold]
    #[inline(never)]
    fn passed_first<F: FnMut(&T) -> bool>(&mut self, f: F) -> usize {
        self.head = 0;
        if self.blocks.pop_front().is_some() {
            self.pop_front_while(f)
        } else {
            // Empty: the tail's allocation is reused from its start.
            self.tail.clear();
            0
        }
    }

    /// Pops the front entry.
    pub fn pop_front(&mut self) -> Option<T> {
        let x = *self.front()?;
        let mut once = true;
        self.pop_front_while(|_| std::mem::take(&mut once));
        Some(x)
    }

    /// The entries from front to back, in contiguous pieces.
    pub fn slices(&self) -> impl Iterator<Item = &[T]> {
        let head = self.head;
        let blocks = self.blocks.iter().enumerate().map(move |(i, b)| {
            let from = if i == 0 { head } else { 0 };
            &b[from..]
        });
        let tail = &self.tail[if self.blocks.is_empty() { head } else { 0 }..];
        blocks
            .chain(std::iter::once(tail))
            .filter(|s| !s.is_empty())
    }

    /// The entries from front to back.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slices().flatten()
    }

    /// A copy sharing every sealed block (one reference count each) with
    /// its own copy of the tail: later pushes and expiry of either leave the
    /// other as it was.
    pub fn share(&self) -> BlockQueue<T, B> {
        let tail_from = if self.blocks.is_empty() { self.head } else { 0 };
        BlockQueue {
            blocks: self.blocks.clone(),
            head: if self.blocks.is_empty() { 0 } else { self.head },
            tail: self.tail[tail_from..].to_vec(),
        }
    }

    /// Heap bytes: the sealed blocks (whether or not a view shares them:
    /// the queue keeps them alive), their reference counts and pointers, and
    /// the tail's allocation.
    pub fn heap_bytes(&self) -> usize {
        self.blocks.len() * (Self::PER * size_of::<T>() + Self::BLOCK_HEADER)
            + self.blocks.capacity() * size_of::<Arc<Vec<T>>>()
            + self.tail.capacity() * size_of::<T>()
    }

    /// Heap bytes this copy alone keeps alive: its tail, and the sealed
    /// blocks no other copy holds any more.
    pub fn unshared_bytes(&self) -> usize {
        self.blocks
            .iter()
            .filter(|b| Arc::strong_count(b) == 1)
            .count()
            * (Self::PER * size_of::<T>() + Self::BLOCK_HEADER)
            + self.blocks.capacity() * size_of::<Arc<Vec<T>>>()
            + self.tail.capacity() * size_of::<T>()
    }
}

impl<'a, T: Copy, const B: usize> IntoIterator for &'a BlockQueue<T, B> {
    type Item = &'a T;
    type IntoIter = Box<dyn Iterator<Item = &'a T> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of 4 entries of 8 bytes.
    type Q = BlockQueue<u64, 32>;

    fn items(q: &Q) -> Vec<u64> {
        q.iter().copied().collect()
    }

    /// A queue of `0..n`, pushed one at a time.
    fn filled(n: u64) -> Q {
        let mut q = Q::default();
        (0..n).for_each(|i| q.push_back(i));
        q
    }

    #[test]
    fn an_empty_queue() {
        let mut q = Q::default();
        assert_eq!(Q::PER, 4);
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
        assert_eq!(q.front(), None);
        assert_eq!(q.pop_front(), None);
        assert_eq!(q.pop_front_while(|_| true), 0);
        assert_eq!(q.slices().count(), 0);
        let s = q.share();
        assert!(s.is_empty());
        assert_eq!(q.heap_bytes(), 0);
    }

    #[test]
    fn pushes_across_block_boundaries_keep_order() {
        let mut q = Q::default();
        for i in 0..11 {
            q.push_back(i);
            assert_eq!(q.len(), i as usize + 1);
        }
        assert_eq!(items(&q), (0..11).collect::<Vec<_>>());
        // Two sealed blocks of 4 and a tail of 3.
        let pieces: Vec<Vec<u64>> = q.slices().map(|s| s.to_vec()).collect();
        assert_eq!(pieces, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9, 10]]);
        assert_eq!(q.blocks.len(), 2);
        assert_eq!(q.front(), Some(&0));
    }

    #[test]
    fn exactly_one_block() {
        let mut q = filled(4);
        assert_eq!(q.blocks.len(), 1);
        assert!(q.tail.is_empty());
        assert_eq!(q.len(), 4);
        assert_eq!(items(&q), [0, 1, 2, 3]);
        let s = q.share();
        assert_eq!(items(&s), [0, 1, 2, 3]);
        assert_eq!(q.pop_front_while(|&x| x < 4), 4);
        assert!(q.is_empty());
        assert!(q.blocks.is_empty());
        assert_eq!(items(&s), [0, 1, 2, 3]);
        q.push_back(9);
        assert_eq!(items(&q), [9]);
    }

    #[test]
    fn expiry_across_blocks_drops_passed_blocks() {
        let mut q = filled(14);
        // Within the first block.
        assert_eq!(q.pop_front_while(|&x| x < 2), 2);
        assert_eq!(q.len(), 12);
        assert_eq!(q.blocks.len(), 3);
        // Past the first and second blocks, into the third.
        assert_eq!(q.pop_front_while(|&x| x < 9), 7);
        assert_eq!(q.blocks.len(), 1);
        assert_eq!(q.len(), 5);
        assert_eq!(q.front(), Some(&9));
        assert_eq!(items(&q), [9, 10, 11, 12, 13]);
        // Into the tail.
        assert_eq!(q.pop_front_while(|&x| x < 13), 4);
        assert!(q.blocks.is_empty());
        assert_eq!(items(&q), [13]);
        assert_eq!(q.pop_front(), Some(13));
        assert!(q.is_empty());
        // Pushes after the tail was half consumed seal it whole, the head inside.
        for i in 20..26 {
            q.push_back(i);
        }
        assert_eq!(q.pop_front_while(|&x| x < 22), 2);
        for i in 26..30 {
            q.push_back(i);
        }
        assert_eq!(items(&q), (22..30).collect::<Vec<_>>());
        assert_eq!(q.len(), 8);
    }

    #[test]
    fn a_shared_copy_is_unchanged_while_the_original_pushes_and_expires() {
        let mut q = filled(10);
        q.pop_front_while(|&x| x < 3);
        let s = q.share();
        let want: Vec<u64> = (3..10).collect();
        assert_eq!(items(&s), want);
        assert_eq!(s.len(), 7);
        // Shared blocks: none is this copy's alone; its tail is (and its
        // deque of 8-byte block pointers).
        assert_eq!(s.unshared_bytes(), s.blocks.capacity() * 8 + 2 * 8);
        for i in 10..30 {
            q.push_back(i);
        }
        q.pop_front_while(|&x| x < 25);
        assert_eq!(items(&q), (25..30).collect::<Vec<_>>());
        assert_eq!(items(&s), want);
        // The original let go of both blocks the copy holds.
        assert_eq!(
            s.unshared_bytes(),
            2 * (32 + 40) + s.blocks.capacity() * 8 + 2 * 8
        );
        // A copy of a copy, and a copy taken with no sealed block.
        let mut t = filled(3);
        t.pop_front();
        let u = t.share();
        t.push_back(3);
        t.push_back(4);
        assert_eq!(items(&u), [1, 2]);
        assert_eq!(items(&t), [1, 2, 3, 4]);
        assert_eq!(items(&s.share()), want);
    }

    #[test]
    fn heap_bytes_count_blocks_and_tail() {
        let q = filled(9);
        // Blocks of 4 u64 (32 bytes), each behind an Arc of a Vec (16 + 24
        // bytes), one 8-byte pointer per slot of the deque.
        let ptrs = q.blocks.capacity() * 8;
        assert_eq!(q.heap_bytes(), 2 * (32 + 40) + ptrs + q.tail.capacity() * 8);
        assert!(q.blocks.iter().all(|b| b.capacity() == 4));
        assert!(q.tail.capacity() >= 4);
    }
}
