//! Hard caps on tracked users and tickets, and open tickets forgotten past
//! `engine.open_ticket_horizon`: every value below is worked out by hand.

use crate::engine::testkit::*;

const CAPS_CFG: &str = "[engine]\nallowed_lateness = \"0s\"\nwindows = [\"1h\", \"24h\", \"7d\"]\n";

fn with(keys: &str) -> String {
    format!("{CAPS_CFG}{keys}\n")
}

#[test]
fn hard_user_cap_tracks_n_users_and_counts_the_rest_in_all_time_counts() {
    let mut eng = engine(&with("hard_max_tracked_users = 5"));
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    // 8 new users, each a signup (ads) and a deposit: the first 5 are tracked.
    for i in 0..8 {
        let u = format!("u{i}");
        e.offer(BASE + i * MIN, Some(&u), signup(Some("ads"), None));
        e.offer(BASE + i * MIN + 10_000, Some(&u), deposit());
    }
    assert_eq!(e.eng.tracked_users(), 5);
    assert_eq!(e.eng.untracked_events(false), 6);
    // A tracked user is still tracked at the cap; an untracked one's second
    // signup counts again in the all-time counts (nothing remembers it).
    e.offer(BASE + 20 * MIN, Some("u0"), trade(2.0));
    e.offer(BASE + 21 * MIN, Some("u7"), signup(Some("ads"), None));
    e.offer(BASE + 30 * MIN, None, spend("ads", 10.0));
    let f = e.eng.families();
    assert_eq!(v(&f, "cxpulse_tracked_users", &[]), 5.0);
    assert_eq!(
        v(&f, "cxpulse_untracked_events_total", &[("kind", "user")]),
        7.0
    );
    assert_eq!(v(&f, "cxpulse_tracking_capped", &[("kind", "user")]), 1.0);
    assert_eq!(v(&f, "cxpulse_tracking_hard_cap", &[("kind", "user")]), 5.0);
    // No ticket cap: no ticket series.
    assert_eq!(
        value(&f, "cxpulse_tracking_capped", &[("kind", "ticket")]),
        None
    );
    // All time: 8 users signed up, plus u7's repeat (9 signups).
    assert_eq!(v(&f, "cxpulse_signups_total", &[("channel", "ads")]), 9.0);
    assert_eq!(v(&f, "cxpulse_users", &[]), 9.0);
    let applied = |ty| {
        v(
            &f,
            "cxpulse_events_total",
            &[("type", ty), ("outcome", "applied")],
        )
    };
    assert_eq!(applied("signup"), 9.0);
    assert_eq!(applied("deposit"), 8.0);
    // Windowed: only the tracked users count.
    let w = [("window", "1h"), ("channel", "ads")];
    assert_eq!(v(&f, "cxpulse_signups", &w), 5.0);
    assert_eq!(v(&f, "cxpulse_revenue_usd", &w), 2.0);
    assert_eq!(
        v(
            &f,
            "cxpulse_funnel_users",
            &[
                ("window", "1h"),
                ("channel", "ads"),
                ("stage", "first_deposit")
            ]
        ),
        5.0
    );
    // The counts survive a checkpoint.
    let bytes = e.eng.snapshot();
    let restored = Engine::restore(e.eng.prm.clone(), &bytes).expect("restores");
    assert_eq!(restored.untracked_events(false), 7);
    assert_eq!(restored.snapshot(), bytes);
}

#[test]
fn hard_user_cap_forgets_compacted_users_before_refusing_new_ids() {
    // Churn 3d and windows up to 7d: compacted 36 days after the last event.
    let toml = "[engine]\nwindows = [\"1h\", \"24h\", \"7d\"]\nhard_max_tracked_users = 20\n\
                [churn]\ninactivity = \"3d\"\n";
    let mut eng = engine(toml);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    for i in 0..20 {
        e.offer(
            BASE + i * MIN,
            Some(&format!("a{i}")),
            signup(Some("ads"), None),
        );
    }
    // Day 40: the day's sweep compacts all 20. A spend names no user: it
    // makes no room at the cap.
    e.offer(BASE + 40 * DAY, None, spend("seo", 1.0));
    assert_eq!(e.eng.compacted_users(), 20);
    assert_eq!(e.eng.forgotten_users(), 0);
    // b0, a new id at the cap, forgets 1 compacted user (down to 19 held:
    // 95% of 20) and is tracked.
    e.offer(
        BASE + 40 * DAY + 1000,
        Some("b0"),
        signup(Some("seo"), None),
    );
    assert_eq!(e.eng.forgotten_users(), 1);
    assert_eq!(e.eng.tracked_users(), 20);
    assert_eq!(e.eng.untracked_events(false), 0);
    // 19 more new ids: each forgets one compacted user; then none is left
    // and the next 2 are not tracked.
    for i in 1..22 {
        e.offer(
            BASE + 40 * DAY + i * MIN,
            Some(&format!("b{i}")),
            signup(Some("seo"), None),
        );
    }
    assert_eq!(e.eng.forgotten_users(), 20);
    assert_eq!(e.eng.compacted_users(), 0);
    assert_eq!(e.eng.tracked_users(), 20);
    assert_eq!(e.eng.untracked_events(false), 2);
    e.offer(BASE + 41 * DAY, None, spend("seo", 1.0));
    let f = e.eng.families();
    assert_eq!(v(&f, "cxpulse_signups_total", &[("channel", "ads")]), 20.0);
    assert_eq!(v(&f, "cxpulse_signups_total", &[("channel", "seo")]), 22.0);
    assert_eq!(v(&f, "cxpulse_tracking_capped", &[("kind", "user")]), 1.0);
}

#[test]
fn ticket_cap_tracks_n_tickets_and_counts_actions_on_the_rest() {
    let mut eng = engine(&with("max_tracked_tickets = 3"));
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    for i in 0..5 {
        e.offer(
            BASE + i * MIN,
            Some("a"),
            support(
                &format!("t{i}"),
                SupportAction::Opened,
                Some(Priority::Normal),
            ),
        );
    }
    // An action on an untracked ticket is untracked too; one on a tracked ticket is applied.
    e.offer(
        BASE + 10 * MIN,
        Some("a"),
        support("t4", SupportAction::AgentReplied, None),
    );
    e.offer(
        BASE + 11 * MIN,
        Some("a"),
        support("t0", SupportAction::Resolved, None),
    );
    e.offer(BASE + 20 * MIN, None, spend("ads", 1.0));
    let f = e.eng.families();
    assert_eq!(v(&f, "cxpulse_tracked_tickets", &[]), 3.0);
    assert_eq!(
        v(&f, "cxpulse_untracked_events_total", &[("kind", "ticket")]),
        3.0
    );
    assert_eq!(v(&f, "cxpulse_tracking_capped", &[("kind", "ticket")]), 1.0);
    assert_eq!(
        v(&f, "cxpulse_tracking_hard_cap", &[("kind", "ticket")]),
        3.0
    );
    assert_eq!(
        value(&f, "cxpulse_untracked_events_total", &[("kind", "user")]),
        None
    );
    let applied = v(
        &f,
        "cxpulse_events_total",
        &[("type", "support"), ("outcome", "applied")],
    );
    assert_eq!(applied, 7.0);
    let normal = [("window", "1h"), ("priority", "normal")];
    assert_eq!(v(&f, "cxpulse_support_tickets_opened", &normal), 3.0);
    // t1, t2 open; t0 resolved.
    assert_eq!(
        v(
            &f,
            "cxpulse_support_open_tickets",
            &[("priority", "normal")]
        ),
        2.0
    );
    assert_eq!(e.eng.tracked_users(), 1);
}

/// t1 (normal) opened at BASE and never answered; t2 (low) opened at
/// BASE + 1h and paused at BASE + 41h (40 h of its 48 h resolution target
/// used: at risk), then the customer replies at BASE + 5d 13h.
fn open_ticket_story(horizon: &str) -> (Engine, Vec<crate::engine::BreachAlert>) {
    let mut eng = engine(&with(&format!("open_ticket_horizon = \"{horizon}\"")));
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    let low = Some(Priority::Low);
    e.offer(BASE, Some("a"), support("t1", SupportAction::Opened, None));
    e.offer(
        BASE + HOUR,
        Some("b"),
        support("t2", SupportAction::Opened, low),
    );
    e.offer(
        BASE + 41 * HOUR,
        Some("b"),
        support("t2", SupportAction::Pending, None),
    );
    e.offer(BASE + 2 * DAY, None, spend("ads", 1.0));
    let f = e.eng.families();
    let g = |name, p, k: Option<&str>| {
        let mut l = vec![("priority", p)];
        l.extend(k.map(|k| ("kind", k)));
        v(&f, name, &l)
    };
    assert_eq!(g("cxpulse_support_open_tickets", "normal", None), 1.0);
    assert_eq!(g("cxpulse_support_open_tickets", "low", None), 1.0);
    let breaching = "cxpulse_support_open_tickets_breaching";
    assert_eq!(g(breaching, "normal", Some("first_response")), 1.0);
    assert_eq!(g(breaching, "normal", Some("resolution")), 1.0);
    assert_eq!(g(breaching, "low", Some("first_response")), 1.0);
    let at_risk = "cxpulse_support_tickets_at_risk";
    assert_eq!(g(at_risk, "low", Some("resolution")), 1.0);
    let mut alerts = e.eng.drain_alerts();
    assert_eq!(alerts.len(), 3, "t1 both targets, t2 first response");
    // Day 5: the sweep forgets both tickets when the horizon is 3d (last
    // actions at BASE and BASE + 41h, before BASE + 5d 12h - 3d).
    e.offer(BASE + 5 * DAY + 12 * HOUR, None, spend("ads", 1.0));
    e.offer(
        BASE + 5 * DAY + 13 * HOUR,
        Some("b"),
        support("t2", SupportAction::CustomerReplied, None),
    );
    e.offer(BASE + 8 * DAY, None, spend("ads", 1.0));
    alerts.extend(e.eng.drain_alerts());
    (eng, alerts)
}

#[test]
fn an_open_ticket_past_the_horizon_leaves_every_gauge_and_fires_no_breach() {
    let (forgetting, alerts) = open_ticket_story("3d");
    let f = forgetting.families();
    for p in ["normal", "low"] {
        assert_eq!(
            v(&f, "cxpulse_support_open_tickets", &[("priority", p)]),
            0.0
        );
        for k in ["first_response", "resolution"] {
            let l = [("priority", p), ("kind", k)];
            assert_eq!(v(&f, "cxpulse_support_open_tickets_breaching", &l), 0.0);
            assert_eq!(v(&f, "cxpulse_support_tickets_at_risk", &l), 0.0);
        }
    }
    assert_eq!(v(&f, "cxpulse_tickets_forgotten_total", &[]), 2.0);
    // The customer's reply names a forgotten id: a new ticket, never opened,
    // so the action is ignored and no resolution deadline is re-armed.
    assert_eq!(forgetting.tracked_tickets(), 1);
    assert_eq!(alerts.len(), 3);
    let low_res = [
        ("window", "7d"),
        ("priority", "low"),
        ("kind", "resolution"),
    ];
    assert_eq!(v(&f, "cxpulse_sla_breaches", &low_res), 0.0);
    assert_eq!(v(&f, "cxpulse_sla_decisions", &low_res), 0.0);

    // Never forgetting: the reply re-arms t2's deadline, at BASE + 1h + 48h
    // + 92h paused = BASE + 141h, where it breaches.
    let (keeping, alerts) = open_ticket_story("0d");
    let f = keeping.families();
    assert_eq!(v(&f, "cxpulse_tickets_forgotten_total", &[]), 0.0);
    assert_eq!(
        v(&f, "cxpulse_support_open_tickets", &[("priority", "low")]),
        1.0
    );
    assert_eq!(v(&f, "cxpulse_sla_breaches", &low_res), 1.0);
    assert_eq!(alerts.len(), 4);
    assert_eq!(alerts[3].ticket_id, "t2");
    assert_eq!(alerts[3].deadline, BASE + 141 * HOUR);
}

#[test]
fn caps_and_horizon_are_validated() {
    let err = |keys: &str| {
        Config::from_toml_str(&format!("[engine]\n{keys}\n"), "t.toml", std::iter::empty())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    // The longest default target is 48h: the horizon must be at least 3d.
    assert!(err("open_ticket_horizon = \"2d\"").contains("engine.open_ticket_horizon"));
    assert_eq!(err("open_ticket_horizon = \"3d\""), "");
    assert_eq!(err("open_ticket_horizon = \"0d\""), "");
    let soft_over_hard = "max_tracked_users = 10\nhard_max_tracked_users = 9";
    assert!(err(soft_over_hard).contains("engine.hard_max_tracked_users"));
    assert_eq!(
        err("max_tracked_users = 10\nhard_max_tracked_users = 10"),
        ""
    );
    let defaults = cfg("").params().expect("valid");
    assert_eq!(defaults.open_ticket_horizon, 60 * DAY);
    assert_eq!(defaults.hard_max_tracked_users, 0);
    assert_eq!(defaults.max_tracked_tickets, 0);
}

/// The flood rule at a size CI can run: 200k new user ids under a hard cap
/// of 20k, 20k opened tickets under a cap of 2k (`benches/memory.rs` runs
/// 10M / 1M under 1M caps and measures the process).
#[test]
fn a_flood_of_new_ids_is_held_to_the_caps_and_the_state_stays_bounded() {
    let run = |keys: &str| {
        let mut eng = engine(&format!("[engine]\n{keys}\n"));
        let mut e = E {
            eng: &mut eng,
            n: 0,
        };
        // Over two days; every 10th user also opens a ticket (by a tracked user, k / 10 < 20k).
        for k in 0..200_000i64 {
            let ts = BASE + k * (2 * DAY / 200_000);
            e.offer(ts, Some(&format!("user-{k}")), signup(Some("ads"), None));
            if k % 10 == 0 {
                let t = format!("ticket-{}", k / 10);
                let by = format!("user-{}", k / 10);
                e.offer(ts, Some(&by), support(&t, SupportAction::Opened, None));
            }
        }
        e.offer(BASE + 2 * DAY + HOUR, None, spend("ads", 1.0));
        eng
    };
    let capped = run("hard_max_tracked_users = 20000\nmax_tracked_tickets = 2000");
    assert_eq!(capped.tracked_users(), 20_000);
    assert_eq!(capped.untracked_events(false), 180_000);
    assert_eq!(capped.tracked_tickets(), 2_000);
    assert_eq!(capped.untracked_events(true), 18_000);
    let f = capped.families();
    assert_eq!(v(&f, "cxpulse_users", &[]), 200_000.0);
    assert_eq!(
        v(&f, "cxpulse_signups_total", &[("channel", "ads")]),
        200_000.0
    );
    let applied = |ty| {
        v(
            &f,
            "cxpulse_events_total",
            &[("type", ty), ("outcome", "applied")],
        )
    };
    assert_eq!(applied("signup"), 200_000.0);
    assert_eq!(applied("support"), 20_000.0);
    // 20k users at ~100 B and 2k tickets at ~150 B (records, ids, index
    // slots, Vec headroom), the windows' rings and 10 min of event ids:
    // well under 4 MB. Uncapped, the same flood holds ten times the users.
    let bound = 4 << 20;
    assert!(
        capped.state_bytes() < bound,
        "{} bytes",
        capped.state_bytes()
    );
    let uncapped = run("");
    assert_eq!(uncapped.tracked_users(), 200_000);
    assert!(
        uncapped.state_bytes() > 4 * capped.state_bytes(),
        "{} bytes, capped {}",
        uncapped.state_bytes(),
        capped.state_bytes()
    );
}
