//! Support and SLA series, through the engine, with values computed by hand.

use crate::engine::testkit::*;

#[test]
fn support_first_response_resolution_pause_and_breach() {
    let mut eng = engine(ZERO_LATENESS);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    use SupportAction::*;
    let t0 = BASE + 10 * HOUR;
    // Urgent T1: reply after 10 min (met, target 15 min), pending 1 h, resolved
    // 5 h after opening: running 4 h = target exactly -> met.
    // Urgent ticket with no reply: first-response breach at t0 + 16 min.
    // A reply before `opened` (in event time) is ignored; the second `opened` too.
    // (Offered in time order: with zero lateness anything older than T is late.)
    e.offer(
        t0,
        Some("u1"),
        support("T1", Opened, Some(Priority::Urgent)),
    );
    e.offer(
        t0 + MIN,
        Some("u2"),
        support("T2", Opened, Some(Priority::Urgent)),
    );
    e.offer(t0 + 2 * MIN, Some("u3"), support("T3", AgentReplied, None));
    e.offer(
        t0 + 3 * MIN,
        Some("u3"),
        support("T3", Opened, Some(Priority::High)),
    );
    e.offer(
        t0 + 4 * MIN,
        Some("u3"),
        support("T3", Opened, Some(Priority::Low)),
    );
    e.offer(t0 + 10 * MIN, Some("u1"), support("T1", AgentReplied, None));
    e.offer(t0 + HOUR, Some("u1"), support("T1", Pending, None));
    e.offer(
        t0 + 2 * HOUR,
        Some("u1"),
        support("T1", CustomerReplied, None),
    );
    e.offer(t0 + 5 * HOUR, Some("u1"), support("T1", Resolved, None));
    e.offer(
        t0 + 5 * HOUR + MIN,
        Some("u1"),
        support("T1", Reopened, None),
    );
    e.offer(t0 + 5 * HOUR + 30 * MIN, Some("u9"), deposit());
    eng.finish();
    let alerts = eng.drain_alerts();
    let f = eng.families();
    // T = t0 + 5h30m; E = T. 24h window holds everything.
    let l = |p: &'static str, k: &'static str| [("window", "24h"), ("priority", p), ("kind", k)];
    assert_eq!(
        v(
            &f,
            "cxpulse_support_tickets_opened",
            &[("window", "24h"), ("priority", "urgent")]
        ),
        2.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_support_tickets_opened",
            &[("window", "24h"), ("priority", "high")]
        ),
        1.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_support_tickets_opened",
            &[("window", "24h"), ("priority", "low")]
        ),
        0.0
    );
    // Urgent first response: T1 met, T2 breached. Resolution: T1 met; T2 breached at t0+1m+4h.
    assert_eq!(
        v(&f, "cxpulse_sla_breaches", &l("urgent", "first_response")),
        1.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_sla_breach_ratio",
            &l("urgent", "first_response")
        ),
        0.5
    );
    assert_eq!(
        v(&f, "cxpulse_sla_decisions", &l("urgent", "first_response")),
        2.0
    );
    assert_eq!(
        v(&f, "cxpulse_sla_breaches", &l("urgent", "resolution")),
        1.0
    );
    assert_eq!(
        v(&f, "cxpulse_sla_breach_ratio", &l("urgent", "resolution")),
        0.5
    );
    // High T3: first response breached at t0+3m+1h; resolution (8 h) still undecided.
    assert_eq!(
        v(&f, "cxpulse_sla_breaches", &l("high", "first_response")),
        1.0
    );
    assert_eq!(v(&f, "cxpulse_sla_breaches", &l("high", "resolution")), 0.0);
    assert_eq!(
        value(&f, "cxpulse_sla_breach_ratio", &l("high", "resolution")),
        None
    );
    assert_eq!(alerts.len(), 3);
    assert_eq!(alerts[0].ticket_id, "T2");
    assert_eq!(alerts[0].kind, "first_response");
    assert_eq!(alerts[0].deadline, t0 + MIN + 15 * MIN);
    // First response quantile of urgent: only T1, 600 s.
    let q = [
        ("window", "24h"),
        ("priority", "urgent"),
        ("quantile", "0.5"),
    ];
    assert!((v(&f, "cxpulse_support_first_response_quantile_seconds", &q) - 600.0).abs() < 0.6);
    // Resolution time of T1 is the running clock: 5 h - 1 h paused = 14400 s.
    let q = [
        ("window", "24h"),
        ("priority", "urgent"),
        ("quantile", "0.99"),
    ];
    assert!((v(&f, "cxpulse_support_resolution_quantile_seconds", &q) - 14400.0).abs() < 14.4);
    assert_eq!(
        v(
            &f,
            "cxpulse_support_resolution_seconds_count",
            &[("priority", "urgent")]
        ),
        1.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_support_first_response_seconds_bucket",
            &[("priority", "urgent"), ("le", "900")]
        ),
        1.0
    );
    assert_eq!(v(&f, "cxpulse_support_reopened", &[("window", "24h")]), 1.0);
    // Open at T: T1 (reopened), T2, T3.
    assert_eq!(
        v(
            &f,
            "cxpulse_support_open_tickets",
            &[("priority", "urgent")]
        ),
        2.0
    );
    assert_eq!(
        v(&f, "cxpulse_support_open_tickets", &[("priority", "high")]),
        1.0
    );
    let k = |p: &'static str, kind: &'static str| [("priority", p), ("kind", kind)];
    assert_eq!(
        v(
            &f,
            "cxpulse_support_open_tickets_breaching",
            &k("urgent", "first_response")
        ),
        1.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_support_open_tickets_breaching",
            &k("urgent", "resolution")
        ),
        1.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_support_open_tickets_breaching",
            &k("high", "first_response")
        ),
        1.0
    );
    // T3 resolution: 5 h 27 m of 8 h used = 68% < 80%: not at risk.
    assert_eq!(
        v(
            &f,
            "cxpulse_support_tickets_at_risk",
            &k("high", "resolution")
        ),
        0.0
    );
}

#[test]
fn resolution_before_any_reply_meets_first_response_without_a_time() {
    let mut eng = engine(ZERO_LATENESS);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    use SupportAction::*;
    e.offer(BASE, Some("u"), support("T", Opened, None));
    e.offer(BASE + HOUR, Some("u"), support("T", Resolved, None));
    e.offer(BASE + 2 * HOUR, Some("u"), support("T", Reopened, None));
    e.offer(BASE + 3 * HOUR, Some("u"), support("T", AgentReplied, None));
    e.offer(BASE + 20 * HOUR, Some("u"), deposit());
    eng.finish();
    let f = eng.families();
    let l = |k: &'static str| [("window", "24h"), ("priority", "normal"), ("kind", k)];
    assert_eq!(v(&f, "cxpulse_sla_breach_ratio", &l("first_response")), 0.0);
    assert_eq!(v(&f, "cxpulse_sla_breach_ratio", &l("resolution")), 0.0);
    assert_eq!(
        v(
            &f,
            "cxpulse_support_first_response_seconds_count",
            &[("priority", "normal")]
        ),
        0.0
    );
    // Reopened, never re-resolved: open, but its targets stay decided (not at risk/breaching).
    assert_eq!(
        v(
            &f,
            "cxpulse_support_open_tickets",
            &[("priority", "normal")]
        ),
        1.0
    );
    let k = |kind: &'static str| [("priority", "normal"), ("kind", kind)];
    assert_eq!(
        v(
            &f,
            "cxpulse_support_open_tickets_breaching",
            &k("first_response")
        ),
        0.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_support_open_tickets_breaching",
            &k("resolution")
        ),
        0.0
    );
    assert_eq!(
        v(&f, "cxpulse_support_tickets_at_risk", &k("resolution")),
        0.0
    );
}

#[test]
fn at_risk_counts_undecided_targets_past_the_share() {
    let mut eng = engine(ZERO_LATENESS);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    use SupportAction::*;
    // Normal: first response 4 h; at 3h12m (80%) the ticket is at risk.
    e.offer(BASE, Some("u"), support("A", Opened, None));
    e.offer(BASE + 3 * HOUR + 12 * MIN, Some("x"), deposit());
    eng.finish();
    let f = eng.families();
    let k = |kind: &'static str| [("priority", "normal"), ("kind", kind)];
    assert_eq!(
        v(&f, "cxpulse_support_tickets_at_risk", &k("first_response")),
        1.0
    );
    assert_eq!(
        v(&f, "cxpulse_support_tickets_at_risk", &k("resolution")),
        0.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_support_open_tickets_breaching",
            &k("first_response")
        ),
        0.0
    );
}
