//! Support tickets of one partition.

use std::collections::HashMap;

use super::users::{NEVER, UserIdx};
use crate::event::{Millis, Priority};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Undecided,
    Met,
    Breached,
}

#[derive(Clone, Debug)]
pub struct Ticket {
    pub id: Box<str>,
    /// The user of the `opened` action.
    pub user: UserIdx,
    /// NEVER until opened (actions before that are ignored).
    pub opened: Millis,
    pub priority: Priority,
    pub first_reply: Millis,
    pub fr: Decision,
    pub res: Decision,
    pub resolved_ever: bool,
    /// Opened and not resolved, or reopened since.
    pub open: bool,
    /// Total paused time of the resolution clock so far.
    pub paused: Millis,
    /// Start of the current pause; NEVER when not pending.
    pub pending_since: Millis,
}

/// XXH3 for ticket ids (SipHash is not needed: ids come from the company's
/// own producers, and a flood of colliding ids only slows this map).
#[derive(Clone, Copy, Debug, Default)]
pub struct XxBuild;

impl std::hash::BuildHasher for XxBuild {
    type Hasher = xxhash_rust::xxh3::Xxh3Default;
    fn build_hasher(&self) -> Self::Hasher {
        xxhash_rust::xxh3::Xxh3Default::new()
    }
}

#[derive(Default)]
pub struct Tickets {
    pub(crate) index: HashMap<Box<str>, u32, XxBuild>,
    pub list: Vec<Ticket>,
}

impl Tickets {
    pub fn intern(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(Ticket {
            id: id.into(),
            user: 0,
            opened: NEVER,
            priority: Priority::Normal,
            first_reply: NEVER,
            fr: Decision::Undecided,
            res: Decision::Undecided,
            resolved_ever: false,
            open: false,
            paused: 0,
            pending_since: NEVER,
        });
        self.index.insert(id.into(), i);
        i
    }

    pub fn heap_bytes(&self) -> usize {
        self.list.capacity() * std::mem::size_of::<Ticket>()
            + self.index.capacity() * (std::mem::size_of::<(Box<str>, u32)>() + 1)
            + self.list.iter().map(|t| t.id.len() * 2).sum::<usize>()
    }
}
