//! Engine tests: windows, outcomes (duplicate, late, invalid), ordering,
//! lateness per partition. Family series are tested next to each family.

mod caps;
mod clock;
mod compaction;
mod parallel;
mod partitions;
mod snapshot_files;

use crate::engine::testkit::*;

#[test]
fn window_covers_e_minus_w_inclusive_to_e_exclusive() {
    let mut eng = engine(ZERO_LATENESS);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    let e_ms = BASE + 2 * HOUR; // E once T is in [E, E + 1 min)
    e.offer(
        e_ms - HOUR - 1,
        Some("before"),
        signup(Some("organic"), None),
    );
    e.offer(e_ms - HOUR, Some("edge"), signup(Some("organic"), None));
    e.offer(e_ms - 1, Some("last"), signup(Some("organic"), None));
    e.offer(e_ms, Some("current"), signup(Some("organic"), None));
    e.offer(e_ms + 30_000, Some("t"), signup(Some("social"), None));
    eng.finish();
    let f = eng.families();
    // [E-1h, E) holds `edge` and `last`; `before` is 1 ms too early, `current` is at E.
    assert_eq!(
        v(
            &f,
            "cxpulse_signups",
            &[("window", "1h"), ("channel", "organic")]
        ),
        2.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_signups",
            &[("window", "24h"), ("channel", "organic")]
        ),
        3.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_signups",
            &[("window", "1h"), ("channel", "social")]
        ),
        0.0
    );
    // Point-in-time: every signup with ts <= T counts.
    assert_eq!(v(&f, "cxpulse_users", &[]), 5.0);
    assert_eq!(
        v(&f, "cxpulse_user_growth_ratio", &[("window", "1h")]),
        2.0 / 5.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_channel_share_ratio",
            &[("window", "1h"), ("channel", "organic")]
        ),
        1.0
    );
    assert_eq!(
        v(&f, "cxpulse_clock_timestamp_seconds", &[]),
        (e_ms + 30_000) as f64 / 1000.0
    );
}

#[test]
fn empty_windows_give_zero_counts_and_no_ratios() {
    let mut eng = engine(ZERO_LATENESS);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    e.offer(BASE, Some("u"), deposit());
    eng.finish();
    let f = eng.families();
    for s in f.iter().flat_map(|f| f.samples.iter()) {
        assert!(s.value.is_finite(), "{} is not finite", s.name);
    }
    assert_eq!(v(&f, "cxpulse_csat_responses", &[("window", "1h")]), 0.0);
    assert_eq!(value(&f, "cxpulse_csat_ratio", &[("window", "1h")]), None);
    assert_eq!(value(&f, "cxpulse_nps", &[("window", "1h")]), None);
    assert_eq!(
        value(&f, "cxpulse_user_growth_ratio", &[("window", "1h")]),
        None
    );
    assert_eq!(
        value(
            &f,
            "cxpulse_cpa_usd",
            &[("window", "1h"), ("channel", "unknown")]
        ),
        None
    );
    assert_eq!(
        value(
            &f,
            "cxpulse_arpu_usd",
            &[("window", "1h"), ("channel", "unknown")]
        ),
        None
    );
}

#[test]
fn duplicates_and_late_events_are_counted_and_applied_to_nothing() {
    let mut eng = engine("[engine]\nwindows = [\"1h\"]\n");
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    assert_eq!(
        e.offer_id("a", BASE, Some("u1"), signup(Some("organic"), None)),
        Outcome::Applied
    );
    assert_eq!(
        e.offer_id("a", BASE, Some("u2"), signup(Some("organic"), None)),
        Outcome::Duplicate
    );
    assert_eq!(
        e.offer_id(
            "b",
            BASE + 10 * MIN,
            Some("u3"),
            signup(Some("organic"), None)
        ),
        Outcome::Applied
    );
    // 30 s lateness: BASE + 10 min - 30 s is still accepted, 1 ms earlier is late.
    assert_eq!(
        e.offer_id("c", BASE + 10 * MIN - 30_000, Some("u4"), deposit()),
        Outcome::Applied
    );
    assert_eq!(
        e.offer_id("d", BASE + 10 * MIN - 30_001, Some("u5"), deposit()),
        Outcome::Late
    );
    // Duplicate is checked before late: `a` is still within the 10 min horizon.
    assert_eq!(
        e.offer_id("a", BASE, Some("u1"), signup(Some("organic"), None)),
        Outcome::Duplicate
    );
    // Past the horizon the id is forgotten, so the retry is late, not duplicate.
    assert_eq!(
        e.offer_id("z", BASE + 10 * MIN + 1, Some("u6"), deposit()),
        Outcome::Applied
    );
    assert_eq!(
        e.offer_id("a", BASE, Some("u1"), signup(Some("organic"), None)),
        Outcome::Late
    );
    eng.finish();
    let f = eng.families();
    let count = |ty: &str, o: &str| v(&f, "cxpulse_events_total", &[("type", ty), ("outcome", o)]);
    assert_eq!(count("signup", "applied"), 2.0);
    assert_eq!(count("signup", "duplicate"), 2.0);
    assert_eq!(count("signup", "late"), 1.0);
    assert_eq!(count("deposit", "late"), 1.0);
    assert_eq!(count("deposit", "applied"), 2.0);
    assert_eq!(v(&f, "cxpulse_users", &[]), 2.0);
    assert_eq!(v(&f, "cxpulse_tracked_users", &[]), 4.0);
}

#[test]
fn out_of_order_delivery_within_lateness_matches_in_order() {
    use SupportAction::*;
    let events: Vec<(Millis, &str, EventBody<'static>)> = vec![
        (BASE, "u1", support("T", Opened, Some(Priority::Urgent))),
        (BASE + 5_000, "u1", signup(Some("organic"), None)),
        (BASE + 10_000, "u1", trade(1.5)),
        (BASE + 14 * MIN, "u1", support("T", AgentReplied, None)),
        (BASE + 20 * MIN, "u2", deposit()),
        (BASE + 2 * HOUR, "u3", deposit()),
    ];
    let run = |order: &[usize]| {
        let mut eng = engine("[engine]\nwindows = [\"24h\"]\n");
        let mut e = E {
            eng: &mut eng,
            n: 0,
        };
        for &i in order {
            let (ts, u, b) = &events[i];
            assert_eq!(
                e.offer_id(&format!("id{i}"), *ts, Some(u), b.clone()),
                Outcome::Applied
            );
        }
        eng.finish();
        crate::export::to_prometheus_text(&eng.families())
    };
    // Swapped pairs (within 30 s) and in order must give byte-identical output.
    assert_eq!(run(&[0, 1, 2, 3, 4, 5]), run(&[2, 1, 0, 3, 4, 5]));
    let text = run(&[2, 1, 0, 3, 4, 5]);
    assert!(
        text.contains("cxpulse_revenue_usd{window=\"24h\",channel=\"organic\"} 1.5"),
        "{text}"
    );
}

#[test]
fn future_events_are_invalid_in_run() {
    let mut eng = engine(ZERO_LATENESS);
    let ev = Event {
        event_id: Cow::Borrowed("f"),
        ts: BASE + 6 * MIN,
        user_id: Some(Cow::Borrowed("u")),
        body: deposit(),
    };
    assert_eq!(eng.offer(0, &ev, Some(BASE)), Outcome::Invalid);
    assert_eq!(eng.clock(), None);
    let ev = Event {
        ts: BASE + 5 * MIN,
        ..ev
    };
    assert_eq!(eng.offer(0, &ev, Some(BASE)), Outcome::Applied);
}

#[test]
fn lateness_is_judged_per_partition() {
    let mut eng = engine("[engine]\nwindows = [\"1h\"]\n");
    let ev = |id: &str, ts: Millis| Event {
        event_id: Cow::Owned(id.to_string()),
        ts,
        user_id: Some(Cow::Borrowed("u")),
        body: deposit(),
    };
    // Partition 1 is read far ahead of partition 0 (a backlog read in batches).
    assert_eq!(eng.offer(1, &ev("a", BASE + HOUR), None), Outcome::Applied);
    assert_eq!(eng.offer(0, &ev("b", BASE), None), Outcome::Applied);
    assert_eq!(
        eng.offer(0, &ev("c", BASE - 30_000), None),
        Outcome::Applied
    );
    assert_eq!(eng.offer(0, &ev("d", BASE - 30_001), None), Outcome::Late);
    assert_eq!(eng.clock(), Some(BASE + HOUR));
    // The wall clock (or --at) moves every partition.
    eng.advance_to(BASE + 2 * HOUR);
    assert_eq!(eng.offer(0, &ev("e", BASE + HOUR), None), Outcome::Late);
}
