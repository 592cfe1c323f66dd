//! What a partition contributes to the exported series, as data: merged
//! from the partitions an engine holds ([`super::Engine::families`]), or
//! from encoded contributions of partitions held anywhere in a fleet
//! ([`super::Engine::partials`], [`fold_partials`]). Both paths are this
//! one merge and finish, so their series are the same.
//!
//! A contribution is the partition's metric [`Partial`] at T (window sums,
//! user counts, support numbers, channel names), its message counts and its
//! tracked / compacted / forgotten / untracked counters. Its encoding:
//!
//! ```text
//! magic    u32  "CXPA" (little-endian 0x41505843)
//! version  u8   1
//! bucket   i64  engine.bucket in ms (a contribution of another bucket is refused)
//! T        u8 0 | u8 1 + i64   the clock it was computed at (none before any event)
//! counts   7 x 4 u64  messages by [type (6 = unknown)][outcome]
//! counters 7 u64  tracked, compacted, forgotten users; tracked, forgotten
//!                 tickets; untracked events (user, ticket)
//! partial  present iff T is: Partial::write
//! ```

use super::partition::Partition;
use super::{EventCounts, pipeline};
use crate::event::Millis;
use crate::export::Family;
use crate::metrics::{Ctx, Partial};
use crate::state::codec::{R, SnapshotError, W, check_count, check_time};
use crate::state::params::Params;

const MAGIC: u32 = u32::from_le_bytes(*b"CXPA");
const VERSION: u8 = 1;

/// The engine's own counters of one partition (or several, added up).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub events: EventCounts,
    pub tracked_users: u64,
    pub compacted_users: u64,
    pub forgotten_users: u64,
    pub tracked_tickets: u64,
    pub forgotten_tickets: u64,
    pub untracked_users: u64,
    pub untracked_tickets: u64,
}

impl Counters {
    pub(super) fn of(p: &Partition) -> Counters {
        Counters {
            events: p.counts.clone(),
            tracked_users: p.users.len() as u64,
            compacted_users: p.users.cold_len() as u64,
            forgotten_users: p.users.forgotten,
            tracked_tickets: p.tickets.len() as u64,
            forgotten_tickets: p.tickets.forgotten,
            untracked_users: p.users.untracked,
            untracked_tickets: p.tickets.untracked,
        }
    }

    fn write(&self, w: &mut W) {
        self.events.write(w);
        for c in [
            self.tracked_users,
            self.compacted_users,
            self.forgotten_users,
            self.tracked_tickets,
            self.forgotten_tickets,
            self.untracked_users,
            self.untracked_tickets,
        ] {
            w.u64(c);
        }
    }

    /// Reads what [`Counters::write`] wrote (fields in the same order).
    fn read(r: &mut R<'_>) -> Result<Counters, SnapshotError> {
        let events = EventCounts::read(r)?;
        let mut n = || -> Result<u64, SnapshotError> { check_count("partial's counter", r.u64()?) };
        Ok(Counters {
            events,
            tracked_users: n()?,
            compacted_users: n()?,
            forgotten_users: n()?,
            tracked_tickets: n()?,
            forgotten_tickets: n()?,
            untracked_users: n()?,
            untracked_tickets: n()?,
        })
    }

    pub fn merge(&mut self, o: &Counters) {
        self.events.merge(&o.events);
        self.tracked_users += o.tracked_users;
        self.compacted_users += o.compacted_users;
        self.forgotten_users += o.forgotten_users;
        self.tracked_tickets += o.tracked_tickets;
        self.forgotten_tickets += o.forgotten_tickets;
        self.untracked_users += o.untracked_users;
        self.untracked_tickets += o.untracked_tickets;
    }
}

/// One partition's contribution at T (or several, merged).
#[derive(Clone, Debug)]
pub(crate) struct Contribution {
    /// None when there is no T (no event applied yet).
    pub partial: Option<Partial>,
    pub counters: Counters,
}

impl Contribution {
    /// Partition `id`'s contribution at `t`.
    pub(super) fn of(prm: &Params, t: Option<Millis>, id: u32, p: &Partition) -> Contribution {
        let partial = t.map(|t| {
            let ctx = Ctx::new(prm, t);
            let mut partial = Partial::of(&ctx, &p.registry, &p.users, &p.tickets, &p.families);
            if id == 0 {
                partial.baseline_users = prm.baseline_users as f64;
            }
            partial
        });
        Contribution {
            partial,
            counters: Counters::of(p),
        }
    }

    fn write(&self, prm: &Params, t: Option<Millis>, w: &mut W) {
        w.header(MAGIC, VERSION, prm.bucket);
        w.opt_i64(t);
        self.counters.write(w);
        if let Some(p) = &self.partial {
            p.write(w);
        }
    }

    fn read(prm: &Params, bytes: &[u8]) -> Result<Contribution, SnapshotError> {
        let mut r = R::new(bytes);
        let what = ("partial's magic", "partial's format version");
        r.header(MAGIC, VERSION, prm.bucket, what)?;
        let t = r.opt_i64("partial's clock")?;
        if let Some(t) = t {
            check_time("partial's clock", t)?;
        }
        let counters = Counters::read(&mut r)?;
        let partial = match t {
            Some(_) => Some(Partial::read(&mut r, prm)?),
            None => None,
        };
        r.end()?;
        Ok(Contribution { partial, counters })
    }

    /// Encoded, self-contained.
    pub(super) fn encode(&self, prm: &Params, t: Option<Millis>) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(4096));
        self.write(prm, t, &mut w);
        w.0
    }
}

/// Merges contributions in the order given and finishes them at `t`:
/// every series of METRICS.md (when some contribution had a T) and the
/// engine's own series.
pub(super) fn finish<'c>(
    prm: &Params,
    t: Option<Millis>,
    parts: impl Iterator<Item = &'c Contribution>,
) -> Vec<Family> {
    let mut counters = Counters::default();
    let mut all: Option<Partial> = None;
    for c in parts {
        counters.merge(&c.counters);
        if let (Some(t), Some(p)) = (t, &c.partial) {
            all.get_or_insert_with(|| Partial::empty(&Ctx::new(prm, t)))
                .merge(p);
        }
    }
    let mut out = match (t, all) {
        (Some(t), Some(all)) => all.finish(&Ctx::new(prm, t)),
        (Some(t), None) => Partial::empty(&Ctx::new(prm, t)).finish(&Ctx::new(prm, t)),
        (None, _) => Vec::new(),
    };
    pipeline::push(prm, t, &counters, &mut out);
    out
}

/// The series of an engine holding exactly the partitions of `parts` at
/// `t`: decodes each [`super::Engine::partials`] record, merges them in
/// partition order, finishes. For every series computed from partition
/// state it equals [`super::Engine::families`] of one engine holding all
/// of them; series of the process itself (lag, delivery, memory, ...) are
/// not in it. When no record has a T (no event applied anywhere), the
/// result is that of an engine with no T: only the engine's own series, no
/// clock. Bad bytes, another bucket size, or a partition given twice:
/// `Err(InPartition)` naming the partition.
pub fn fold_partials(
    prm: &Params,
    t: Millis,
    parts: &[(u32, &[u8])],
) -> Result<Vec<Family>, SnapshotError> {
    let mut decoded: Vec<(u32, Contribution)> = Vec::with_capacity(parts.len());
    for &(id, bytes) in parts {
        let in_part = |error| SnapshotError::InPartition {
            partition: id,
            error: Box::new(error),
        };
        if decoded.iter().any(|(d, _)| *d == id) {
            return Err(in_part(SnapshotError::Invalid("partition given twice")));
        }
        decoded.push((id, Contribution::read(prm, bytes).map_err(in_part)?));
    }
    decoded.sort_by_key(|(id, _)| *id);
    let any_t = decoded.iter().any(|(_, c)| c.partial.is_some());
    Ok(finish(
        prm,
        any_t.then_some(t),
        decoded.iter().map(|(_, c)| c),
    ))
}

/// Whether `bytes` is one partial [`fold_partials`] can read: decoded, not
/// finished (cheap), for checking each record read back from the partials
/// topic (`kafka::fleet`).
pub fn check_partial(prm: &Params, bytes: &[u8]) -> Result<(), SnapshotError> {
    Contribution::read(prm, bytes).map(|_| ())
}
