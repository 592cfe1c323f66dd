//! The engine's own series: input messages by type and outcome, the clock,
//! tracked and forgotten users and tickets.

use super::{Engine, Outcome};
use crate::event::EventType;
use crate::export::{Family, Kind};

pub(super) fn push(engine: &Engine, out: &mut Vec<Family>) {
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
