//! Computing every series of METRICS.md from engine state, at the current T.
//!
//! One file per family; [`scan`] walks every user once per export and is
//! shared by the acquisition and retention families. Partitions are merged
//! here: bucket sums and counts add up (a user lives in one partition).

pub mod acquisition;
pub mod cx;
pub mod retention;
pub mod scan;
pub mod support;

use crate::config::Window;
use crate::engine::params::Params;
use crate::engine::partition::Partition;
use crate::engine::registry::{ChannelId, ChannelRegistry, OTHER, UNKNOWN};
use crate::engine::ring::Ring;
use crate::engine::{Engine, Outcome};
use crate::event::{EventType, Millis};
use crate::export::{Family, Kind};

/// What every family needs: the clock, the windows, the merged partitions.
pub struct Ctx<'a> {
    pub prm: &'a Params,
    /// T, epoch ms.
    pub t: Millis,
    /// E as a bucket index: T rounded down to a bucket boundary.
    pub e: i64,
    pub registry: &'a ChannelRegistry,
    pub parts: Vec<&'a Partition>,
}

impl Ctx<'_> {
    /// Bucket range `[E - W, E)` of a window.
    pub fn range(&self, w: &Window) -> (i64, i64) {
        (self.e - w.len / self.prm.bucket, self.e)
    }

    /// E in ms.
    pub fn e_ms(&self) -> Millis {
        self.e * self.prm.bucket
    }

    /// Sum over partitions of a ring picked by `f`, over buckets `[from, to)`.
    pub fn sum<const N: usize>(
        &self,
        from: i64,
        to: i64,
        f: impl Fn(&Partition) -> &Ring<N>,
    ) -> [f64; N] {
        let mut acc = [0.0; N];
        for p in &self.parts {
            for (a, x) in acc.iter_mut().zip(f(p).sum(from, to)) {
                *a += x;
            }
        }
        acc
    }

    /// Summed revenue/spend of a channel over buckets `[from, to)`.
    pub fn chan_sum(&self, c: ChannelId, from: i64, to: i64) -> [f64; 2] {
        let mut acc = [0.0; 2];
        for p in &self.parts {
            if let Some(r) = p.chan.get(c as usize) {
                let s = r.sum(from, to);
                acc[0] += s[0];
                acc[1] += s[1];
            }
        }
        acc
    }
}

pub fn export(engine: &Engine) -> Vec<Family> {
    let mut out = Vec::new();
    if let Some(t) = engine.clock() {
        let ctx = Ctx {
            prm: &engine.prm,
            t,
            e: engine.prm.bucket_of(t),
            registry: &engine.registry,
            parts: engine.parts.values().collect(),
        };
        let scan = scan::UserScan::run(&ctx);
        let channels = channel_labels(&ctx, &scan);
        let churn = retention::export(&ctx, &scan, &mut out);
        acquisition::export(&ctx, &scan, &channels, &churn, &mut out);
        cx::export(&ctx, &mut out);
        support::export(&ctx, &mut out);
    }
    pipeline(engine, &mut out);
    out
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

fn pipeline(engine: &Engine, out: &mut Vec<Family>) {
    let mut f = Family::new(
        "cxpulse_events_total",
        Kind::Counter,
        "Input messages by event type and outcome (applied, invalid, late, duplicate).",
    );
    let counts = engine.event_counts();
    for ty in EventType::ALL.map(Some).into_iter().chain([None]) {
        let name = ty.map_or("unknown", |t| t.as_str());
        for o in Outcome::ALL {
            if ty.is_none() && o != Outcome::Invalid {
                continue;
            }
            f.push(
                &[("type", name), ("outcome", o.as_str())],
                counts.get(ty, o) as f64,
            );
        }
    }
    out.push(f);
    // Families of one unlabelled series.
    let mut g = |name: &'static str, kind: Kind, help: &'static str, v: f64| {
        let mut f = Family::new(name, kind, help);
        f.push(&[], v);
        out.push(f);
    };
    if let Some(t) = engine.clock() {
        g(
            "cxpulse_clock_timestamp_seconds",
            Kind::Gauge,
            "The engine clock T: the largest applied event time (or the wall clock when idle), Unix seconds.",
            t as f64 / 1000.0,
        );
    }
    g(
        "cxpulse_tracked_users",
        Kind::Gauge,
        "Users with state held in memory.",
        engine.tracked_users() as f64,
    );
    g(
        "cxpulse_compacted_users",
        Kind::Gauge,
        "Of cxpulse_tracked_users, those compacted past every horizon (channel and flags only).",
        engine.compacted_users() as f64,
    );
    g(
        "cxpulse_users_forgotten_total",
        Kind::Counter,
        "Compacted users forgotten because engine.max_tracked_users was exceeded.",
        engine.forgotten_users() as f64,
    );
    if engine.max_tracked_users() > 0 {
        g(
            "cxpulse_tracked_users_cap",
            Kind::Gauge,
            "engine.max_tracked_users: the cap on cxpulse_tracked_users.",
            engine.max_tracked_users() as f64,
        );
    }
    g(
        "cxpulse_tracked_tickets",
        Kind::Gauge,
        "Support tickets with state held in memory.",
        engine.tracked_tickets() as f64,
    );
    g(
        "cxpulse_tickets_forgotten_total",
        Kind::Counter,
        "Settled tickets forgotten past every horizon.",
        engine.forgotten_tickets() as f64,
    );
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
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_hand_computation() {
        // p = 0.8, n = 10: centre = 0.8 + 0.19208 = 0.99208; half = 1.96*sqrt(0.016 + 0.0096040) = 0.31363
        // den = 1.38416 -> (0.49009, 0.94330)
        let (lo, hi) = wilson(8.0, 10.0).unwrap();
        assert!((lo - 0.49016).abs() < 1e-4, "{lo}");
        assert!((hi - 0.94332).abs() < 1e-4, "{hi}");
        assert!(wilson(0.0, 0.0).is_none());
    }

    #[test]
    fn nps_interval_matches_hand_computation() {
        // 6 promoters, 2 detractors, 10 answers: n'=13, pp=6.75/13=0.51923, pd=2.75/13=0.21154,
        // c=0.30769, se=sqrt((0.73077-0.09467)/13)=0.22120 -> 100*(c -+ 1.96 se) = (-12.59, 74.13)
        let (lo, hi) = nps_interval(6.0, 2.0, 10.0).unwrap();
        assert!((lo - -12.59).abs() < 0.05, "{lo}");
        assert!((hi - 74.13).abs() < 0.05, "{hi}");
    }
}
