//! The reorder buffer: accepted events waiting to become final, in a
//! [`RunHeap`]: a min-queue for items that mostly arrive in order. Those not
//! below the last in-order one are appended to a FIFO run (no heap work),
//! the others go to a min-heap; the smaller of the two fronts comes out
//! next (the run's on a tie). Pops give the same order as one heap of every
//! item would. The pipeline's latency tracker (`kafka::latency`) uses it too.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::event::{Millis, Priority, Ratings, SupportAction};
use crate::state::registry::ChannelId;
use crate::state::users::UserIdx;

/// An accepted event, reduced to what its effects need.
#[derive(Clone, Debug)]
pub struct Pending {
    pub ts: Millis,
    /// Arrival order, to keep ties stable.
    pub seq: u64,
    pub body: PendingBody,
}

#[derive(Clone, Debug)]
pub enum PendingBody {
    Signup {
        user: UserIdx,
        channel: ChannelId,
        referred: bool,
    },
    Deposit {
        user: UserIdx,
    },
    Trade {
        user: UserIdx,
        fee: f64,
    },
    Invite,
    Reward {
        usd: f64,
        referral_channel: ChannelId,
    },
    Support {
        user: UserIdx,
        ticket: u32,
        action: SupportAction,
        priority: Option<Priority>,
    },
    Rated {
        user: UserIdx,
        ratings: Ratings,
    },
    Spend {
        channel: ChannelId,
        usd: f64,
    },
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.seq) == (o.ts, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(o.ts, o.seq))
    }
}

/// Which part holds the next item ([`RunHeap::peek_next`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Side {
    run: bool,
}

/// A min-queue for items that mostly arrive in order: see the module documentation.
#[derive(Debug)]
pub struct RunHeap<T> {
    /// Ascending: items not below the back when they arrived.
    run: VecDeque<T>,
    /// Items that arrived below the run's back.
    late: BinaryHeap<Reverse<T>>,
}

impl<T> Default for RunHeap<T> {
    fn default() -> Self {
        RunHeap {
            run: VecDeque::new(),
            late: BinaryHeap::new(),
        }
    }
}

impl<T: Ord> RunHeap<T> {
    #[inline]
    pub fn push(&mut self, x: T) {
        match self.run.back() {
            Some(last) if x < *last => self.late.push(Reverse(x)),
            _ => self.run.push_back(x),
        }
    }

    /// The next item and which part holds it (for [`Self::pop_next`], so
    /// that a peek then a pop compare the two fronts once).
    #[inline]
    pub fn peek_next(&self) -> Option<(&T, Side)> {
        match (self.run.front(), self.late.peek()) {
            (Some(a), Some(Reverse(b))) if a <= b => Some((a, Side { run: true })),
            (_, Some(Reverse(b))) => Some((b, Side { run: false })),
            (Some(a), None) => Some((a, Side { run: true })),
            (None, None) => None,
        }
    }

    /// Removes the item of `side` (just returned by [`Self::peek_next`],
    /// nothing pushed since).
    #[inline]
    pub fn pop_next(&mut self, side: Side) -> Option<T> {
        if side.run {
            self.run.pop_front()
        } else {
            self.late.pop().map(|Reverse(x)| x)
        }
    }

    pub fn pop(&mut self) -> Option<T> {
        let (_, side) = self.peek_next()?;
        self.pop_next(side)
    }
}

impl<T> RunHeap<T> {
    pub fn len(&self) -> usize {
        self.run.len() + self.late.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.run.capacity() + self.late.capacity()
    }

    /// Every item, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.run.iter().chain(self.late.iter().map(|r| &r.0))
    }
}

/// The reorder buffer: see [`super::partition::Partition::pending`]. Most
/// events arrive in event-time order: a [`RunHeap`] keeps those in a FIFO
/// run and only the others in a heap; they come out by (time, arrival).
pub type PendingQueue = RunHeap<Pending>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_then_arrival_order_whichever_part_holds_the_next() {
        // Arrival order (seq 1..) with times partly out of order and ties.
        let times = [5, 7, 3, 7, 9, 1, 9, 8, 2, 10, 6, 6];
        let mut q = PendingQueue::default();
        for (i, &ts) in times.iter().enumerate() {
            q.push(Pending {
                ts,
                seq: i as u64 + 1,
                body: PendingBody::Invite,
            });
        }
        let mut want: Vec<(Millis, u64)> = (1..).zip(times).map(|(s, t)| (t, s)).collect();
        want.sort_unstable();
        // Alternately by a peek then `pop_next`, and by `pop`.
        let mut got = Vec::new();
        while let Some((next, side)) = q.peek_next() {
            let ts = next.ts;
            let p = if got.len() % 2 == 0 {
                q.pop_next(side).expect("peeked")
            } else {
                q.pop().expect("peeked")
            };
            assert_eq!(p.ts, ts);
            assert!(q.peek_next().is_none_or(|(n, _)| n.ts >= p.ts));
            got.push((p.ts, p.seq));
        }
        assert_eq!(got, want);
        assert!(q.is_empty() && q.pop().is_none());
    }
}
