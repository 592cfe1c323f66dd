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

/// The reorder buffer: see [`super::partition::Partition::pending`].
#[derive(Debug, Default)]
pub struct PendingQueue {
    in_order: VecDeque<Pending>,
    out_of_order: BinaryHeap<Reverse<Pending>>,
}

impl PendingQueue {
    pub fn push(&mut self, p: Pending) {
        match self.in_order.back() {
            Some(last) if p < *last => self.out_of_order.push(Reverse(p)),
            _ => self.in_order.push_back(p),
        }
    }

    pub fn peek_ts(&self) -> Option<Millis> {
        match (self.in_order.front(), self.out_of_order.peek()) {
            (Some(a), Some(Reverse(b))) => Some(if a <= b { a.ts } else { b.ts }),
            (Some(a), None) => Some(a.ts),
            (None, Some(Reverse(b))) => Some(b.ts),
            (None, None) => None,
        }
    }

    pub fn pop(&mut self) -> Option<Pending> {
        let take_fifo = match (self.in_order.front(), self.out_of_order.peek()) {
            (Some(a), Some(Reverse(b))) => a <= b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if take_fifo {
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
