//! Retention and churn series, through the engine, with values computed by hand.

use crate::engine::testkit::*;

#[test]
fn churn_reactivation_and_churn_ratio() {
    let toml = "[engine]\nallowed_lateness = \"0s\"\nwindows = [\"24h\", \"30d\"]\n[churn]\ninactivity = \"7d\"\n";
    let mut eng = engine(toml);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    // a: active day 0, then silent: churns at day 7. Comes back on day 9 (reactivation).
    // b: active day 0 and day 5: churn instant moves to day 12, after T.
    // c: new on day 9.
    e.offer(BASE, Some("a"), deposit());
    e.offer(BASE, Some("b"), deposit());
    e.offer(BASE + 5 * DAY, Some("b"), trade(1.0));
    e.offer(BASE + 9 * DAY, Some("a"), trade(1.0));
    e.offer(BASE + 9 * DAY + HOUR, Some("c"), deposit());
    e.offer(BASE + 9 * DAY + 2 * HOUR, Some("z"), signup(None, None));
    eng.finish();
    let f = eng.families();
    let m = [("window", "30d")];
    assert_eq!(v(&f, "cxpulse_churned_customers", &m), 1.0);
    assert_eq!(v(&f, "cxpulse_reactivated_customers", &m), 1.0);
    assert_eq!(v(&f, "cxpulse_new_customers", &m), 3.0);
    assert_eq!(v(&f, "cxpulse_active_customers_now", &[]), 3.0);
    // Active at start = 3 + 1 - 3 - 1 = 0: no ratio.
    assert_eq!(value(&f, "cxpulse_churn_ratio", &m), None);
    let d = [("window", "24h")];
    // Last 24 h ([T-24h rounded]): a reactivated, c new; nobody churned.
    assert_eq!(v(&f, "cxpulse_churned_customers", &d), 0.0);
    assert_eq!(v(&f, "cxpulse_reactivated_customers", &d), 1.0);
    assert_eq!(v(&f, "cxpulse_new_customers", &d), 1.0);
    // 3 + 0 - 1 - 1 = 1 active at start (b); 0 churned.
    assert_eq!(v(&f, "cxpulse_churn_ratio", &d), 0.0);
}

#[test]
fn activity_exactly_at_the_churn_instant_prevents_churn() {
    let toml =
        "[engine]\nallowed_lateness = \"0s\"\nwindows = [\"30d\"]\n[churn]\ninactivity = \"7d\"\n";
    let mut eng = engine(toml);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    e.offer(BASE, Some("a"), deposit());
    e.offer(BASE + 7 * DAY, Some("a"), deposit());
    e.offer(BASE + 8 * DAY, Some("z"), signup(None, None));
    eng.finish();
    let f = eng.families();
    assert_eq!(
        v(&f, "cxpulse_churned_customers", &[("window", "30d")]),
        0.0
    );
}

#[test]
fn retention_and_cohorts_on_whole_days() {
    let toml = "[engine]\nallowed_lateness = \"0s\"\nwindows = [\"24h\", \"7d\"]\n";
    let mut eng = engine(toml);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    // Day indices relative to BASE's day 0; T will be on day 20 at 12:00.
    let day = |d: i64| BASE + d * DAY + 12 * HOUR;
    // 24h retention uses days 18 ([D-2, D-1)) and 19 ([D-1, D)).
    // Cohort D1: signup in [E-2d, E-1d) with an activity in [s+1d, s+2d).
    e.offer(day(18), Some("r1"), deposit());
    e.offer(day(18), Some("r2"), deposit());
    e.offer(day(18) + HOUR, Some("c1"), signup(Some("organic"), None));
    e.offer(
        day(18) + 2 * HOUR,
        Some("c2"),
        signup(Some("organic"), None),
    );
    e.offer(day(19), Some("r1"), trade(1.0));
    e.offer(day(19) + HOUR + 1, Some("c1"), deposit());
    e.offer(day(19) + HOUR + 2, Some("c2"), deposit()); // 23 h after c2's signup: day 0, not day 1
    e.offer(day(20), Some("z"), signup(None, None));
    eng.finish();
    let f = eng.families();
    // Base of 24h: users active on day 18: r1, r2 -> retained r1 -> 0.5.
    assert_eq!(v(&f, "cxpulse_retention_ratio", &[("window", "24h")]), 0.5);
    // 7d: active in days [6, 13): nobody -> absent.
    assert_eq!(
        value(&f, "cxpulse_retention_ratio", &[("window", "7d")]),
        None
    );
    assert_eq!(
        v(&f, "cxpulse_cohort_retention_ratio", &[("day", "1")]),
        0.5
    );
    assert_eq!(
        value(&f, "cxpulse_cohort_retention_ratio", &[("day", "7")]),
        None
    );
}

#[test]
fn post_support_churn_counts_raters_without_later_activity() {
    let toml =
        "[engine]\nallowed_lateness = \"0s\"\nwindows = [\"24h\"]\n[churn]\ninactivity = \"2d\"\n";
    let mut eng = engine(toml);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    let s = BASE + 12 * HOUR;
    e.offer(s, Some("bad1"), rated(Some(1), None, None));
    e.offer(s, Some("bad2"), rated(Some(2), None, None));
    e.offer(s, Some("good"), rated(Some(5), None, None));
    e.offer(s, Some("meh"), rated(Some(3), None, None));
    e.offer(s + HOUR, Some("bad2"), deposit());
    // T on day 3 + 1h: window [E - 2d - 24h, E - 2d) contains s.
    e.offer(BASE + 3 * DAY + HOUR, Some("z"), signup(None, None));
    eng.finish();
    let f = eng.families();
    let l = |x: &'static str| [("window", "24h"), ("experience", x)];
    assert_eq!(
        v(&f, "cxpulse_post_support_churn_ratio", &l("negative")),
        0.5
    );
    assert_eq!(
        v(&f, "cxpulse_post_support_churn_ratio", &l("positive")),
        1.0
    );
}

/// Churn instants come from the users' last activity, a day's worth listed
/// at a time: no per-customer timer is held for customers whose instant is
/// further away.
#[test]
fn churn_instants_are_listed_a_day_at_a_time() {
    let toml =
        "[engine]\nallowed_lateness = \"0s\"\nwindows = [\"30d\"]\n[churn]\ninactivity = \"7d\"\n";
    let mut eng = engine(toml);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    // Customer i deposits once at BASE + 6 h * i, i = 0..70 (the last at 17.25 d).
    for i in 0..70 {
        e.offer(BASE + 6 * HOUR * i, Some(&format!("c{i}")), deposit());
    }
    eng.finish();
    // Churn instant of i: 6 h * i + 7 d. At T = 17.25 d, i = 0..=41 have
    // churned; that of i = 41 is T itself, in T's bucket, after the window.
    let f = eng.families();
    assert_eq!(
        v(&f, "cxpulse_churned_customers", &[("window", "30d")]),
        41.0
    );
    // Last activity at or after T - 7 d: i = 41..=69.
    assert_eq!(v(&f, "cxpulse_active_customers_now", &[]), 29.0);
    // 28 customers still churn later, but only the instants of the day after
    // T are listed: 6 h * i in (10.25 d, 11.25 d], i = 42..=45.
    let listed: usize = eng.parts.values().map(|p| p.churn.len()).sum();
    assert!(listed <= 4, "{listed} churn instants listed");
    assert_eq!(eng.parts.values().map(|p| p.timers_len()).sum::<usize>(), 0);
}
