//! Clock skew in `run`: a partition's clock, and T, never run ahead of the
//! wall clock by more than `engine.clock_tolerance` (5 s by default, with
//! `allowed_lateness` 30 s).

use crate::engine::testkit::*;

const ONE_HOUR: &str = "[engine]\nwindows = [\"1h\"]\n";

fn ev(id: &str, ts: Millis, user: &str, body: EventBody<'static>) -> Event<'static> {
    Event {
        event_id: Cow::Owned(id.to_string()),
        ts,
        user_id: Some(Cow::Owned(user.to_string())),
        body,
    }
}

fn ads_revenue(eng: &Engine) -> f64 {
    v(
        &eng.families(),
        "cxpulse_revenue_usd",
        &[("window", "1h"), ("channel", "ads")],
    )
}

#[test]
fn a_fast_producer_cannot_make_on_time_events_late() {
    let mut eng = engine(ONE_HOUR);
    // The wall clock: 2026-01-01T00:10:30Z.
    let wall = BASE + 10 * MIN + 30_000;
    // A producer 4 min fast: accepted (within max_future_skew 5 min), but T
    // stops at wall + 5 s.
    let fast = ev("fast", wall + 4 * MIN, "u", trade(100.0));
    assert_eq!(eng.offer(0, &fast, Some(wall)), Outcome::Applied);
    assert_eq!(eng.clock(), Some(wall + 5_000));
    // On-time events, 2 s to 0 s behind the wall clock, in reverse order:
    // none late (T - 30 s = wall - 25 s).
    let on_time = [
        ev("t0", wall, "u", trade(4.0)),
        ev("s", wall - 1_000, "u", signup(Some("ads"), None)),
        ev("t2", wall - 2_000, "u", trade(1.0)),
    ];
    for e in &on_time {
        assert_eq!(
            eng.offer(0, e, Some(wall)),
            Outcome::Applied,
            "{}",
            e.event_id
        );
    }
    assert_eq!(eng.clock(), Some(wall + 5_000));
    assert_eq!(eng.event_counts().total(Outcome::Late), 0);
    assert_eq!(eng.pending_events(), 4);

    // 40 s later an on-time event moves T to wall + 40 s: everything up to
    // wall + 10 s is final and applied in event-time order: the trade at
    // wall - 2 s before the signup (so not `ads`), the one at wall after it.
    let later = ev("d", wall + 40_000, "v", deposit());
    assert_eq!(eng.offer(0, &later, Some(wall + 40_000)), Outcome::Applied);
    assert_eq!(eng.clock(), Some(wall + 40_000));
    assert_eq!(ads_revenue(&eng), 4.0);
    // Left: the fast trade and the deposit at wall + 40 s.
    assert_eq!(eng.pending_events(), 2);

    // Idle, T follows the wall clock: at wall + 4 min the fast trade is not
    // final yet (it is at wall + 4 min, final once T passes it by 30 s).
    eng.advance_to(wall + 4 * MIN);
    assert_eq!(ads_revenue(&eng), 4.0);
    assert_eq!(eng.pending_events(), 1);
    let last = ev("d2", wall + 4 * MIN + 31_000, "v", deposit());
    assert_eq!(
        eng.offer(0, &last, Some(wall + 4 * MIN + 31_000)),
        Outcome::Applied
    );
    assert_eq!(ads_revenue(&eng), 104.0);
    assert_eq!(eng.event_counts().total(Outcome::Applied), 6);
    assert_eq!(eng.event_counts().total(Outcome::Late), 0);
}

#[test]
fn without_a_wall_clock_the_fast_event_moves_the_clock() {
    // Replay (no wall clock) is unchanged: the same events make the on-time
    // ones late, as they did in `run` before the tolerance.
    let mut eng = engine(ONE_HOUR);
    let wall = BASE + 10 * MIN + 30_000;
    let fast = ev("fast", wall + 4 * MIN, "u", trade(100.0));
    assert_eq!(eng.offer(0, &fast, None), Outcome::Applied);
    assert_eq!(eng.clock(), Some(wall + 4 * MIN));
    let on_time = ev("t0", wall, "u", trade(4.0));
    assert_eq!(eng.offer(0, &on_time, None), Outcome::Late);
}

#[test]
fn the_tolerance_is_configurable_and_bounded_by_the_lateness() {
    let mut eng = engine("[engine]\nwindows = [\"1h\"]\nclock_tolerance = \"0s\"\n");
    let wall = BASE + 10 * MIN;
    let fast = ev("fast", wall + MIN, "u", deposit());
    assert_eq!(eng.offer(0, &fast, Some(wall)), Outcome::Applied);
    assert_eq!(eng.clock(), Some(wall));
    // An event behind the wall clock moves T as before.
    let mut eng = engine(ONE_HOUR);
    let behind = ev("b", wall - 3_000, "u", deposit());
    assert_eq!(eng.offer(0, &behind, Some(wall)), Outcome::Applied);
    assert_eq!(eng.clock(), Some(wall - 3_000));
    // Unset, the tolerance is 5 s, or the lateness if smaller.
    let c = cfg("[engine]\nallowed_lateness = \"2s\"\n");
    assert_eq!(c.params().expect("valid").clock_tolerance, 2_000);
    assert_eq!(cfg("").params().expect("valid").clock_tolerance, 5_000);
    // Set, it must be within 0..=allowed_lateness.
    let e = Config::from_toml_str(
        "[engine]\nclock_tolerance = \"31s\"\n",
        "t.toml",
        std::iter::empty(),
    )
    .unwrap_err();
    assert_eq!(e.key, "engine.clock_tolerance");
}
