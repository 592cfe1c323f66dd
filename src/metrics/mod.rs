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
//! lives in one partition). A partial names its channels (each partition
//! has its own registry): per-channel values are merged by name, and
//! [`Partial::finish`] picks the labels (see [`Partial::labels`]).
//! A partial is plain data with an encoding ([`Partial::write`],
//! [`Partial::read`]), so partitions held by other instances can be merged.

pub mod acquisition;
pub mod retention;
pub mod scan;
pub mod support;
pub mod surveys;

use std::collections::HashMap;

use crate::event::Millis;
use crate::export::Family;
use crate::state::codec::{R, SnapshotError, W, check_finite, check_time};
use crate::state::params::{Params, Window};
use crate::state::registry::{ChannelRegistry, OTHER, UNKNOWN};
use crate::state::tickets::Tickets;
use crate::state::users::Users;

/// A timer a family asks for: `kind` fires at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due<K> {
    pub at: Millis,
    pub kind: K,
}

/// What computing and finishing partials needs: the clock and the parameters.
pub struct Ctx<'a> {
    pub prm: &'a Params,
    /// T, epoch ms.
    pub t: Millis,
    /// E as a bucket index: T rounded down to a bucket boundary.
    pub e: i64,
}

impl<'a> Ctx<'a> {
    pub fn new(prm: &'a Params, t: Millis) -> Ctx<'a> {
        Ctx {
            prm,
            t,
            e: prm.bucket_of(t),
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

/// A channel value of the merged partitions: its name, and when it was
/// first seen (the earliest over the partitions of (partition clock when
/// first seen, its index in that partition's registry)).
#[derive(Clone, Debug, PartialEq)]
pub struct Channel {
    pub name: String,
    pub first_seen: Millis,
    pub order: u32,
}

/// Per-channel values are indexed by column: 0 = `unknown`, 1 = `other`,
/// then `2 + i` for `Partial::channels[i]`.
pub type Column = usize;

/// What one partition contributes to every family at T: plain data, added
/// up by [`Partial::merge`] and turned into series by [`Partial::finish`].
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    /// The channel values of the per-channel columns from 2 on.
    pub channels: Vec<Channel>,
    /// Some value was folded into `other` by a partition's registry cap.
    pub overflowed: bool,
    /// `acquisition.baseline_users`, brought by partition 0 only (so a
    /// fleet adds it once).
    pub baseline_users: f64,
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
            channels: Vec::new(),
            overflowed: false,
            baseline_users: 0.0,
            scan: scan::UserScan::empty(ctx, 2),
            acquisition: acquisition::Partial::empty(ctx, 2),
            retention: retention::Partial::empty(ctx),
            surveys: surveys::Partial::empty(ctx),
            support: support::Partial::empty(ctx),
        }
    }

    /// One partition's contribution at `ctx.t` (without the baseline: see
    /// [`Partial::baseline_users`]).
    pub fn of(
        ctx: &Ctx<'_>,
        registry: &ChannelRegistry,
        users: &Users,
        tickets: &Tickets,
        f: &Families,
    ) -> Partial {
        let nc = registry.len_with_specials();
        let channels = registry
            .registered()
            .map(|id| Channel {
                name: registry.name(id).to_string(),
                first_seen: registry.first_seen(id),
                order: u32::from(id) - 2,
            })
            .collect();
        Partial {
            channels,
            overflowed: registry.overflowed,
            baseline_users: 0.0,
            scan: scan::UserScan::of(ctx, users, nc),
            acquisition: acquisition::Partial::of(ctx, &f.acquisition, nc),
            retention: retention::Partial::of(ctx, &f.retention),
            surveys: surveys::Partial::of(ctx, &f.surveys),
            support: support::Partial::of(ctx, &f.support, tickets),
        }
    }

    /// Adds another partition's contribution; its channels are matched by name.
    pub fn merge(&mut self, o: &Partial) {
        let map = self.channel_map(&o.channels);
        let cols = 2 + self.channels.len();
        self.overflowed |= o.overflowed;
        self.baseline_users += o.baseline_users;
        self.scan.merge(&o.scan, &map, cols);
        self.acquisition.merge(&o.acquisition, &map, cols);
        self.retention.merge(&o.retention);
        self.surveys.merge(&o.surveys);
        self.support.merge(&o.support);
    }

    /// The column in `self` of each column of a partial naming `theirs`
    /// (registered in `self` if new; first-seen keys merged).
    fn channel_map(&mut self, theirs: &[Channel]) -> Vec<Column> {
        let mut map = vec![0, 1];
        if theirs.is_empty() {
            return map;
        }
        let mut at: HashMap<String, Column> = self
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), 2 + i))
            .collect();
        for c in theirs {
            let col = *at.entry(c.name.clone()).or_insert_with(|| {
                self.channels.push(Channel {
                    name: c.name.clone(),
                    first_seen: Millis::MAX,
                    order: u32::MAX,
                });
                1 + self.channels.len()
            });
            let mine = &mut self.channels[col - 2];
            if (c.first_seen, c.order) < (mine.first_seen, mine.order) {
                mine.first_seen = c.first_seen;
                mine.order = c.order;
            }
            map.push(col);
        }
        map
    }

    /// The labelled channels, in export order, as (column, label): values
    /// of `engine.channels` seen (in the config's order), then the others
    /// by (first seen, registry index, name), up to `engine.max_channels`
    /// in all; then `unknown` when some user has no channel, `other` when
    /// some value was folded into it. Also returns the columns folded into
    /// `other` (values beyond the cap), in that order.
    pub fn labels(&self, prm: &Params) -> (Vec<(Column, &str)>, Vec<Column>) {
        let mut rest: Vec<Column> = Vec::with_capacity(self.channels.len());
        let mut picked: Vec<Column> = Vec::with_capacity(self.channels.len().min(prm.max_channels));
        for name in &prm.channels {
            if let Some(i) = self.channels.iter().position(|c| &c.name == name) {
                picked.push(2 + i);
            }
        }
        for (i, c) in self.channels.iter().enumerate() {
            if !prm.channels.contains(&c.name) {
                rest.push(2 + i);
            }
        }
        let key = |col: &Column| {
            let c = &self.channels[col - 2];
            (c.first_seen, c.order, c.name.as_str())
        };
        rest.sort_by(|a, b| key(a).cmp(&key(b)));
        let room = prm
            .max_channels
            .saturating_sub(picked.len())
            .min(rest.len());
        let folded = rest.split_off(room);
        picked.extend(rest);
        let mut labels: Vec<(Column, &str)> = picked
            .into_iter()
            .map(|col| (col, self.channels[col - 2].name.as_str()))
            .collect();
        if self.scan.unknown_present {
            labels.push((UNKNOWN as Column, "unknown"));
        }
        if self.overflowed || !folded.is_empty() {
            labels.push((OTHER as Column, "other"));
        }
        (labels, folded)
    }

    /// Every family's series at `ctx.t`.
    pub fn finish(&self, ctx: &Ctx<'_>) -> Vec<Family> {
        let (channels, folded) = self.labels(ctx.prm);
        if !folded.is_empty() {
            // Values beyond the labels are added into `other` (in label-key
            // order) and cleared where they were.
            let mut f = self.clone();
            f.scan.fold_into_other(&folded);
            f.acquisition.fold_into_other(&folded);
            return f.finish_with(ctx, &channels);
        }
        self.finish_with(ctx, &channels)
    }

    fn finish_with(&self, ctx: &Ctx<'_>, channels: &[(Column, &str)]) -> Vec<Family> {
        let mut out = Vec::new();
        let churn = self.retention.finish(ctx, &self.scan, &mut out);
        self.acquisition.finish(
            ctx,
            &self.scan,
            channels,
            self.baseline_users,
            &churn,
            &mut out,
        );
        self.surveys.finish(ctx, &mut out);
        self.support.finish(ctx, &mut out);
        out
    }

    /// Self-contained bytes of this partial (read back by [`Partial::read`]).
    pub fn write(&self, w: &mut W) {
        w.len(self.channels.len());
        for c in &self.channels {
            w.bytes(c.name.as_bytes());
            w.i64(c.first_seen);
            w.u32(c.order);
        }
        w.u8(self.overflowed as u8);
        w.f64(self.baseline_users);
        self.scan.write(w);
        self.acquisition.write(w);
        self.retention.write(w);
        self.surveys.write(w);
        self.support.write(w);
    }

    /// Reads a partial written by [`Partial::write`] under the same
    /// windows, bucket and SLA targets; refuses bytes whose shape does not
    /// fit `prm` (window count, channel columns, histogram bounds), more
    /// than `engine.max_channels` channels, repeated channel names, and
    /// non-finite numbers.
    pub fn read(r: &mut R<'_>, prm: &Params) -> Result<Partial, SnapshotError> {
        let n = r.len(21)?;
        if n > prm.max_channels {
            return Err(SnapshotError::Invalid("partial's channel count"));
        }
        let mut channels: Vec<Channel> = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.string()?;
            if name == "unknown" || name == "other" || channels.iter().any(|c| c.name == name) {
                return Err(SnapshotError::Invalid("partial's channel name"));
            }
            let first_seen = check_time("channel first-seen time", r.i64()?)?;
            let order = r.u32()?;
            channels.push(Channel {
                name,
                first_seen,
                order,
            });
        }
        let overflowed = r.bool("channel overflow flag")?;
        let baseline_users = check_finite("baseline users", r.f64()?)?;
        let nc = 2 + channels.len();
        Ok(Partial {
            channels,
            overflowed,
            baseline_users,
            scan: scan::UserScan::read(r, prm, nc)?,
            acquisition: acquisition::Partial::read(r, prm, nc)?,
            retention: retention::Partial::read(r, prm)?,
            surveys: surveys::Partial::read(r, prm)?,
            support: support::Partial::read(r, prm)?,
        })
    }
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

/// Adds the columns of `o` into `acc` at the columns `map` gives
/// (growing `acc` to `cols` columns first).
pub fn add_cols<T: Default + Clone>(
    acc: &mut Vec<T>,
    o: &[T],
    map: &[Column],
    cols: usize,
    add: impl Fn(&mut T, &T),
) {
    if acc.len() < cols {
        acc.resize(cols, T::default());
    }
    for (x, &col) in o.iter().zip(map) {
        if let Some(a) = acc.get_mut(col) {
            add(a, x);
        }
    }
}

/// Adds the `folded` columns of `row` into column `other` (in that order)
/// and clears them.
pub fn fold_cols<T: Default>(row: &mut [T], folded: &[Column], add: impl Fn(&mut T, &T)) {
    for &col in folded {
        if col < row.len() && row.len() > OTHER as usize {
            let v = std::mem::take(&mut row[col]);
            add(&mut row[OTHER as usize], &v);
        }
    }
}

/// Reads `n` values with `read`, refusing a count other than `want`.
pub fn read_exact<T>(
    r: &mut R<'_>,
    want: usize,
    what: &'static str,
    mut read: impl FnMut(&mut R<'_>) -> Result<T, SnapshotError>,
) -> Result<Vec<T>, SnapshotError> {
    let n = r.len(1)?;
    if n != want {
        return Err(SnapshotError::Invalid(what));
    }
    (0..n).map(|_| read(r)).collect()
}

/// Writes a sequence as its length and its elements.
pub fn write_seq<T>(w: &mut W, v: &[T], mut write: impl FnMut(&mut W, &T)) {
    w.len(v.len());
    for x in v {
        write(w, x);
    }
}

/// A finite number (of a partial).
pub fn read_f64(r: &mut R<'_>) -> Result<f64, SnapshotError> {
    check_finite("partial's number", r.f64()?)
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
