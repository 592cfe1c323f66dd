//! The metric families of METRICS.md, one file each, on top of the shared
//! per-partition stores of [`crate::state`].
//!
//! Each family owns, in its file: its per-partition state (bucket rings of
//! named sums), its update on an applied event, its reaction to its timers
//! (it returns the timers to schedule, see [`Due`]), its snapshot encoding,
//! its per-partition partial at T (plain data, with `merge`), and `finish`
//! of the merged partial into series. [`scan`] is the pass over every user
//! shared by the acquisition and retention families, in the same shape.
//!
//! Partitions are merged by [`Partial::merge`], starting from
//! [`Partial::empty`] and adding partitions in order (so float sums are
//! added as `0.0 + p0 + p1 + ...`): bucket sums and counts add up (a user
//! lives in one partition).

pub mod acquisition;
pub mod retention;
pub mod scan;
pub mod support;
pub mod surveys;

use crate::event::Millis;
use crate::export::Family;
use crate::state::codec::{R, SnapshotError, W};
use crate::state::params::{Params, Window};
use crate::state::registry::{ChannelId, ChannelRegistry, OTHER, UNKNOWN};
use crate::state::tickets::Tickets;
use crate::state::users::Users;

/// A timer a family asks for: `kind` fires at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due<K> {
    pub at: Millis,
    pub kind: K,
}

/// What finishing needs: the clock, the parameters, the channel labels.
pub struct Ctx<'a> {
    pub prm: &'a Params,
    /// T, epoch ms.
    pub t: Millis,
    /// E as a bucket index: T rounded down to a bucket boundary.
    pub e: i64,
    pub registry: &'a ChannelRegistry,
}

impl<'a> Ctx<'a> {
    pub fn new(prm: &'a Params, t: Millis, registry: &'a ChannelRegistry) -> Ctx<'a> {
        Ctx {
            prm,
            t,
            e: prm.bucket_of(t),
            registry,
        }
    }

    /// Bucket range `[E - W, E)` of a window.
    pub fn range(&self, w: &Window) -> (i64, i64) {
        (self.e - w.len / self.prm.bucket, self.e)
    }

    /// E in ms.
    pub fn e_ms(&self) -> Millis {
        self.e * self.prm.bucket
    }

    /// Channel ids with a label slot (specials included).
    pub fn channel_slots(&self) -> usize {
        self.registry.len_with_specials()
    }
}

/// The per-partition state of every family.
#[derive(Debug, Default)]
pub struct Families {
    pub acquisition: acquisition::State,
    pub retention: retention::State,
    pub surveys: surveys::State,
    pub support: support::State,
}

impl Families {
    /// Drops history older than every window needs, `latest_bucket` being the newest applied.
    pub fn trim(&mut self, latest_bucket: i64, prm: &Params) {
        self.acquisition.trim(latest_bucket - prm.keep_buckets);
        self.retention.trim(latest_bucket, prm);
        self.surveys.trim(latest_bucket - prm.keep_buckets);
        self.support.trim(latest_bucket, prm);
    }

    pub fn heap_bytes(&self) -> usize {
        self.acquisition.heap_bytes()
            + self.retention.heap_bytes()
            + self.surveys.heap_bytes()
            + self.support.heap_bytes()
    }

    pub fn write(&self, w: &mut W) {
        self.acquisition.write(w);
        self.retention.write(w);
        self.surveys.write(w);
        self.support.write(w);
    }

    pub fn read(r: &mut R<'_>) -> Result<Families, SnapshotError> {
        Ok(Families {
            acquisition: acquisition::State::read(r)?,
            retention: retention::State::read(r)?,
            surveys: surveys::State::read(r)?,
            support: support::State::read(r)?,
        })
    }
}

/// What one partition contributes to every family at T: plain data, added
/// up by [`Partial::merge`] and turned into series by [`Partial::finish`].
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    pub scan: scan::UserScan,
    pub acquisition: acquisition::Partial,
    pub retention: retention::Partial,
    pub surveys: surveys::Partial,
    pub support: support::Partial,
}

impl Partial {
    /// Nothing yet: the start of a merge.
    pub fn empty(ctx: &Ctx<'_>) -> Partial {
        Partial {
            scan: scan::UserScan::empty(ctx),
            acquisition: acquisition::Partial::empty(ctx),
            retention: retention::Partial::empty(ctx),
            surveys: surveys::Partial::empty(ctx),
            support: support::Partial::empty(ctx),
        }
    }

    /// One partition's contribution at `ctx.t`.
    pub fn of(ctx: &Ctx<'_>, users: &Users, tickets: &Tickets, f: &Families) -> Partial {
        Partial {
            scan: scan::UserScan::of(ctx, users),
            acquisition: acquisition::Partial::of(ctx, &f.acquisition),
            retention: retention::Partial::of(ctx, &f.retention),
            surveys: surveys::Partial::of(ctx, &f.surveys),
            support: support::Partial::of(ctx, &f.support, tickets),
        }
    }

    pub fn merge(&mut self, o: &Partial) {
        self.scan.merge(&o.scan);
        self.acquisition.merge(&o.acquisition);
        self.retention.merge(&o.retention);
        self.surveys.merge(&o.surveys);
        self.support.merge(&o.support);
    }

    /// Every family's series at `ctx.t`.
    pub fn finish(&self, ctx: &Ctx<'_>) -> Vec<Family> {
        let mut out = Vec::new();
        let channels = channel_labels(ctx, &self.scan);
        let churn = self.retention.finish(ctx, &self.scan, &mut out);
        self.acquisition
            .finish(ctx, &self.scan, &channels, &churn, &mut out);
        self.surveys.finish(ctx, &mut out);
        self.support.finish(ctx, &mut out);
        out
    }
}

/// Every family's series at `ctx.t`, over `parts` merged in order.
pub fn export<'p>(
    ctx: &Ctx<'_>,
    parts: impl Iterator<Item = (&'p Users, &'p Tickets, &'p Families)>,
) -> Vec<Family> {
    let mut all = Partial::empty(ctx);
    for (users, tickets, f) in parts {
        all.merge(&Partial::of(ctx, users, tickets, f));
    }
    all.finish(ctx)
}

/// Channels that get a label: every registered value, `unknown` when some
/// user has no channel, `other` once the cap was reached.
fn channel_labels(ctx: &Ctx<'_>, scan: &scan::UserScan) -> Vec<ChannelId> {
    let mut v: Vec<ChannelId> = ctx.registry.registered().collect();
    if scan.unknown_present {
        v.push(UNKNOWN);
    }
    if ctx.registry.overflowed {
        v.push(OTHER);
    }
    v
}

/// Adds `o` into `acc` element-wise (growing `acc` with empty values first).
pub fn add_into<T: Default + Clone>(acc: &mut Vec<T>, o: &[T], add: impl Fn(&mut T, &T)) {
    if acc.len() < o.len() {
        acc.resize(o.len(), T::default());
    }
    for (a, x) in acc.iter_mut().zip(o) {
        add(a, x);
    }
}

/// Wilson score interval, z = 1.96.
pub fn wilson(successes: f64, n: f64) -> Option<(f64, f64)> {
    if n <= 0.0 {
        return None;
    }
    let z: f64 = 1.96;
    let p = successes / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let den = 1.0 + z2 / n;
    Some(((centre - half) / den, (centre + half) / den))
}

/// Adjusted Wald interval of NPS (METRICS.md), clamped to -100..100.
pub fn nps_interval(promoters: f64, detractors: f64, n: f64) -> Option<(f64, f64)> {
    if n <= 0.0 {
        return None;
    }
    let z = 1.96;
    let n2 = n + 3.0;
    let pp = (promoters + 0.75) / n2;
    let pd = (detractors + 0.75) / n2;
    let c = pp - pd;
    let se = ((pp + pd - c * c) / n2).sqrt();
    let clamp = |x: f64| x.clamp(-100.0, 100.0);
    Some((clamp(100.0 * (c - z * se)), clamp(100.0 * (c + z * se))))
}

#[cfg(test)]
mod tests;
