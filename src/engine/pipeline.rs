//! The engine's own series: input messages by type and outcome, the clock,
//! tracked and forgotten users and tickets; from the counters of the
//! partitions held, added up ([`Counters`]).

use super::Outcome;
use super::fleet::Counters;
use crate::event::{EventType, Millis};
use crate::export::{Family, Kind};
use crate::state::params::Params;

/// Whether new ids of that kind are refused with these counters: its hard
/// cap is set and reached (for users, with no compacted user left to forget
/// to make room).
pub(super) fn hard_cap_reached(prm: &Params, c: &Counters, tickets: bool) -> bool {
    let held = || {
        if tickets {
            c.tracked_tickets
        } else {
            c.tracked_users
        }
    };
    cap_reached(prm, tickets, held, || c.compacted_users)
}

/// The rule of [`hard_cap_reached`], from the counts it reads (computed
/// only when needed: the engine sums them over its partitions on the hot
/// path, where the caps are usually not set).
#[inline]
pub(super) fn cap_reached(
    prm: &Params,
    tickets: bool,
    held: impl FnOnce() -> u64,
    compacted: impl FnOnce() -> u64,
) -> bool {
    let cap = if tickets {
        prm.max_tracked_tickets
    } else {
        prm.hard_max_tracked_users
    };
    cap > 0 && held() >= cap && (tickets || compacted() == 0)
}

pub(super) fn push(prm: &Params, t: Option<Millis>, c: &Counters, out: &mut Vec<Family>) {
    let mut f = Family::new(
        "cxpulse_events_total",
        Kind::Counter,
        "Input messages by event type and outcome (applied, invalid, late, duplicate).",
    );
    let counts = &c.events;
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
    if let Some(t) = t {
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
        c.tracked_users as f64,
    );
    g(
        "cxpulse_compacted_users",
        Kind::Gauge,
        "Of cxpulse_tracked_users, those compacted past every horizon (channel and flags only).",
        c.compacted_users as f64,
    );
    g(
        "cxpulse_users_forgotten_total",
        Kind::Counter,
        "Compacted users forgotten because engine.max_tracked_users was exceeded.",
        c.forgotten_users as f64,
    );
    if prm.max_tracked_users > 0 {
        g(
            "cxpulse_tracked_users_cap",
            Kind::Gauge,
            "engine.max_tracked_users: the cap on cxpulse_tracked_users.",
            prm.max_tracked_users as f64,
        );
    }
    g(
        "cxpulse_tracked_tickets",
        Kind::Gauge,
        "Support tickets with state held in memory.",
        c.tracked_tickets as f64,
    );
    g(
        "cxpulse_tickets_forgotten_total",
        Kind::Counter,
        "Tickets forgotten: settled past every horizon, or open with no action within engine.open_ticket_horizon.",
        c.forgotten_tickets as f64,
    );
    push_hard_caps(prm, c, out);
}

/// The hard caps' series, each only when its cap is set (so a config
/// without caps exports exactly what it did before them).
fn push_hard_caps(prm: &Params, c: &Counters, out: &mut Vec<Family>) {
    let kinds = [
        ("user", prm.hard_max_tracked_users),
        ("ticket", prm.max_tracked_tickets),
    ];
    if kinds.iter().all(|k| k.1 == 0) {
        return;
    }
    let mut cap = Family::new(
        "cxpulse_tracking_hard_cap",
        Kind::Gauge,
        "engine.hard_max_tracked_users (kind=user) and engine.max_tracked_tickets (kind=ticket), where set.",
    );
    let mut capped = Family::new(
        "cxpulse_tracking_capped",
        Kind::Gauge,
        "1 while a hard cap is reached and new ids of that kind are not tracked (users: none compacted is left to forget).",
    );
    let mut untracked = Family::new(
        "cxpulse_untracked_events_total",
        Kind::Counter,
        "Accepted events not tracked because their new user or ticket id was beyond a hard cap.",
    );
    for (kind, limit) in kinds {
        if limit == 0 {
            continue;
        }
        let at_cap = hard_cap_reached(prm, c, kind == "ticket");
        let l = [("kind", kind)];
        cap.push(&l, limit as f64);
        capped.push(&l, if at_cap { 1.0 } else { 0.0 });
        let n = if kind == "ticket" {
            c.untracked_tickets
        } else {
            c.untracked_users
        };
        untracked.push(&l, n as f64);
    }
    out.extend([cap, capped, untracked]);
}
