//! Support tickets of one partition.

use std::collections::HashMap;

use super::users::{NEVER, UserIdx, put_in_slot};
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
    /// The latest `ts` of an action on the ticket (set at arrival); NEVER
    /// marks a free slot (the ticket was forgotten).
    pub last_seen: Millis,
}

impl Ticket {
    fn new(id: &str, ts: Millis) -> Ticket {
        Ticket {
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
            last_seen: ts,
        }
    }

    pub fn is_free(&self) -> bool {
        self.last_seen == NEVER
    }

    /// Nothing about the ticket can change a number any more: closed with
    /// both targets decided (its timers are spent), or never opened.
    fn settled(&self) -> bool {
        self.opened == NEVER
            || (!self.open && self.fr != Decision::Undecided && self.res != Decision::Undecided)
    }
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
    /// Free slots of `list` (forgotten tickets).
    pub(crate) free: Vec<u32>,
    /// Tickets forgotten (settled, or open with no action past
    /// `engine.open_ticket_horizon`), all time.
    pub forgotten: u64,
    /// Of them, open tickets, since start (not checkpointed).
    pub forgotten_open: u64,
    /// Actions on new ticket ids not tracked (hard cap reached), all time.
    pub untracked: u64,
}

impl Tickets {
    /// The index of ticket `id`, creating it if new; an action at `ts` arrived.
    pub fn intern(&mut self, id: &str, ts: Millis) -> u32 {
        let created = self.intern_if(id, ts, true);
        created.expect("a ticket may be created")
    }

    /// [`Tickets::intern`], except that a new id is created only if
    /// `may_create`: `None` for a new id beyond a hard cap.
    pub fn intern_if(&mut self, id: &str, ts: Millis, may_create: bool) -> Option<u32> {
        if let Some(&i) = self.index.get(id) {
            let t = &mut self.list[i as usize];
            t.last_seen = t.last_seen.max(ts);
            return Some(i);
        }
        if !may_create {
            return None;
        }
        let i = put_in_slot(&mut self.list, &mut self.free, Ticket::new(id, ts));
        self.index.insert(id.into(), i);
        Some(i)
    }

    /// Whether ticket `id` is held.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Tickets held.
    pub fn len(&self) -> usize {
        self.list.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every settled ticket last seen before `settled_before`, and
    /// every open one last seen before `open_before` (`None`: never). The
    /// caller guarantees that no pending action or timer refers to them.
    /// Returns how many.
    pub fn forget(&mut self, settled_before: Millis, open_before: Option<Millis>) -> usize {
        let mut n = 0;
        for i in 0..self.list.len() {
            let t = &self.list[i];
            if t.is_free() {
                continue;
            }
            let settled = t.settled();
            let before = if settled {
                settled_before
            } else {
                match open_before {
                    Some(b) => b,
                    None => continue,
                }
            };
            if t.last_seen >= before {
                continue;
            }
            self.index.remove(&t.id);
            self.list[i] = Ticket::new("", NEVER);
            self.free.push(i as u32);
            self.forgotten_open += u64::from(!settled);
            n += 1;
        }
        self.forgotten += n as u64;
        n
    }

    /// Rebuilds the free list from the records (after a restore).
    pub(crate) fn rebuild_free(&mut self) {
        self.free = (0..self.list.len() as u32)
            .filter(|&i| self.list[i as usize].is_free())
            .collect();
    }

    pub fn heap_bytes(&self) -> usize {
        self.list.capacity() * std::mem::size_of::<Ticket>()
            + self.index.capacity() * (std::mem::size_of::<(Box<str>, u32)>() + 1)
            + self.list.iter().map(|t| t.id.len() * 2).sum::<usize>()
            + self.free.capacity() * 4
    }
}
