//! The reorder buffer: accepted events waiting to become final.

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

/// The next event of a [`PendingQueue`] ([`PendingQueue::peek_next`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Next {
    pub ts: Millis,
    /// Whether it is the in-order part's front (else the heap's top).
    fifo: bool,
}

/// The reorder buffer: see [`super::partition::Partition::pending`].
#[derive(Debug, Default)]
pub struct PendingQueue {
    in_order: VecDeque<Pending>,
    out_of_order: BinaryHeap<Reverse<Pending>>,
}

impl PendingQueue {
    #[inline]
    pub fn push(&mut self, p: Pending) {
        match self.in_order.back() {
            Some(last) if p < *last => self.out_of_order.push(Reverse(p)),
            _ => self.in_order.push_back(p),
        }
    }

    /// The next event's time.
    pub fn peek_ts(&self) -> Option<Millis> {
        self.peek_next().map(|n| n.ts)
    }

    /// The next event: its time, and which part holds it (for
    /// [`Self::pop_next`], so that a peek then a pop compare the two
    /// fronts once).
    #[inline]
    pub fn peek_next(&self) -> Option<Next> {
        match (self.in_order.front(), self.out_of_order.peek()) {
            (Some(a), Some(Reverse(b))) if a <= b => Some(Next {
                ts: a.ts,
                fifo: true,
            }),
            (_, Some(Reverse(b))) => Some(Next {
                ts: b.ts,
                fifo: false,
            }),
            (Some(a), None) => Some(Next {
                ts: a.ts,
                fifo: true,
            }),
            (None, None) => None,
        }
    }

    pub fn pop(&mut self) -> Option<Pending> {
        let next = self.peek_next()?;
        self.pop_next(next)
    }

    /// Removes the event `next` (just returned by [`Self::peek_next`], nothing pushed since).
    #[inline]
    pub fn pop_next(&mut self, next: Next) -> Option<Pending> {
        if next.fifo {
            self.in_order.pop_front()
        } else {
            self.out_of_order.pop().map(|Reverse(p)| p)
        }
    }

    pub fn len(&self) -> usize {
        self.in_order.len() + self.out_of_order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.in_order.capacity() + self.out_of_order.capacity()
    }

    /// Every pending event, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.in_order
            .iter()
            .chain(self.out_of_order.iter().map(|r| &r.0))
    }
}

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
        while let Some(n) = q.peek_next() {
            let p = if got.len() % 2 == 0 {
                q.pop_next(n).expect("peeked")
            } else {
                q.pop().expect("peeked")
            };
            assert_eq!(p.ts, n.ts);
            assert!(q.peek_ts().is_none_or(|t| t >= p.ts));
            got.push((p.ts, p.seq));
        }
        assert_eq!(got, want);
        assert!(q.is_empty() && q.pop().is_none());
    }
}
