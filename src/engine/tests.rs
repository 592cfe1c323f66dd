//! Engine tests with values computed by hand from METRICS.md.

use std::borrow::Cow;

use super::*;
use crate::config::Config;
use crate::event::{EventBody, Priority, Ratings, ReferralAction, SupportAction};
use crate::export::Family;

/// 2026-01-01T00:00:00Z.
const BASE: Millis = 1_767_225_600_000;
const MIN: Millis = 60_000;
const HOUR: Millis = 3_600_000;
const DAY: Millis = 86_400_000;

fn cfg(toml: &str) -> Config {
    Config::from_toml_str(toml, "test.toml", std::iter::empty()).expect("valid test config")
}

fn engine(toml: &str) -> Engine {
    Engine::new(cfg(toml).params().expect("valid test config"))
}

struct E<'a> {
    eng: &'a mut Engine,
    n: u64,
}

impl E<'_> {
    fn offer(&mut self, ts: Millis, user: Option<&str>, body: EventBody<'static>) -> Outcome {
        self.n += 1;
        let id = format!("e{}", self.n);
        self.offer_id(&id, ts, user, body)
    }

    fn offer_id(
        &mut self,
        id: &str,
        ts: Millis,
        user: Option<&str>,
        body: EventBody<'static>,
    ) -> Outcome {
        let ev = Event {
            event_id: Cow::Owned(id.to_string()),
            ts,
            user_id: user.map(|u| Cow::Owned(u.to_string())),
            body,
        };
        self.eng.offer(0, &ev, None)
    }
}

fn signup(channel: Option<&str>, referrer: Option<&str>) -> EventBody<'static> {
    EventBody::Signup {
        channel: channel.map(|c| Cow::Owned(c.to_string())),
        campaign: None,
        referrer_id: referrer.map(|c| Cow::Owned(c.to_string())),
        country: None,
    }
}

fn deposit() -> EventBody<'static> {
    EventBody::Deposit { amount_usd: 100.0 }
}

fn trade(fee: f64) -> EventBody<'static> {
    EventBody::Trade {
        notional_usd: fee * 1000.0,
        fee_usd: fee,
    }
}

fn spend(channel: &str, usd: f64) -> EventBody<'static> {
    EventBody::Spend {
        channel: Cow::Owned(channel.to_string()),
        amount_usd: usd,
    }
}

fn support(ticket: &str, action: SupportAction, priority: Option<Priority>) -> EventBody<'static> {
    EventBody::Support {
        ticket_id: Cow::Owned(ticket.to_string()),
        action,
        priority,
        ratings: Ratings::default(),
    }
}

fn rated(csat: Option<u8>, ces: Option<u8>, nps: Option<u8>) -> EventBody<'static> {
    EventBody::Support {
        ticket_id: Cow::Borrowed("survey"),
        action: SupportAction::Rated,
        priority: None,
        ratings: Ratings { csat, ces, nps },
    }
}

fn value(fams: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    fams.iter()
        .flat_map(|f| f.samples.iter())
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.value)
}

fn v(fams: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(fams, name, labels).unwrap_or_else(|| panic!("series {name}{labels:?} is absent"))
}

const ZERO_LATENESS: &str = "[engine]\nallowed_lateness = \"0s\"\nwindows = [\"1h\", \"24h\"]\n";

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
fn seventeenth_channel_is_reported_as_other() {
    let mut eng = engine(ZERO_LATENESS);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    for i in 0..17 {
        e.offer(
            BASE + i * MIN,
            Some(&format!("u{i}")),
            signup(Some(&format!("ch{i}")), None),
        );
    }
    e.offer(BASE + 17 * MIN, Some("x"), spend("ch99", 50.0));
    e.offer(BASE + 2 * HOUR, Some("late-comer"), deposit());
    eng.finish();
    let f = eng.families();
    assert_eq!(
        v(
            &f,
            "cxpulse_signups",
            &[("window", "24h"), ("channel", "ch15")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &f,
            "cxpulse_signups",
            &[("window", "24h"), ("channel", "ch16")]
        ),
        None
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_signups",
            &[("window", "24h"), ("channel", "other")]
        ),
        1.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_marketing_spend_usd",
            &[("window", "24h"), ("channel", "other")]
        ),
        50.0
    );
}

#[test]
fn acquisition_funnel_cpa_arpu_and_referrals() {
    let mut eng = engine(ZERO_LATENESS);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    let t0 = BASE + 10 * HOUR;
    e.offer(t0, None, spend("paid_search", 300.0));
    e.offer(t0 + MIN, Some("a"), signup(Some("paid_search"), None));
    e.offer(t0 + 2 * MIN, Some("b"), signup(Some("paid_search"), None));
    e.offer(t0 + 3 * MIN, Some("c"), signup(None, Some("a")));
    e.offer(
        t0 + 4 * MIN,
        Some("a"),
        EventBody::Referral {
            action: ReferralAction::InviteSent,
        },
    );
    e.offer(
        t0 + 4 * MIN,
        Some("a"),
        EventBody::Referral {
            action: ReferralAction::InviteSent,
        },
    );
    e.offer(t0 + 5 * MIN, Some("a"), deposit());
    e.offer(t0 + 6 * MIN, Some("a"), trade(2.0));
    e.offer(t0 + 7 * MIN, Some("a"), trade(1.0));
    e.offer(t0 + 8 * MIN, Some("c"), deposit());
    e.offer(
        t0 + 9 * MIN,
        Some("a"),
        EventBody::Referral {
            action: ReferralAction::Rewarded { reward_usd: 10.0 },
        },
    );
    e.offer(t0 + 20 * MIN, Some("z"), signup(Some("organic"), None));
    eng.finish();
    let f = eng.families();
    let w = |ch: &'static str| [("window", "1h"), ("channel", ch)];
    assert_eq!(v(&f, "cxpulse_signups", &w("paid_search")), 2.0);
    assert_eq!(v(&f, "cxpulse_signups", &w("referral")), 1.0);
    assert_eq!(v(&f, "cxpulse_acquisitions", &w("paid_search")), 1.0);
    assert_eq!(
        v(&f, "cxpulse_marketing_spend_usd", &w("paid_search")),
        300.0
    );
    assert_eq!(v(&f, "cxpulse_cpa_usd", &w("paid_search")), 300.0);
    // Referral channel: 10 USD of rewards over 1 acquisition (c).
    assert_eq!(v(&f, "cxpulse_cpa_usd", &w("referral")), 10.0);
    assert_eq!(v(&f, "cxpulse_revenue_usd", &w("paid_search")), 3.0);
    assert_eq!(v(&f, "cxpulse_active_customers", &w("paid_search")), 1.0);
    assert_eq!(v(&f, "cxpulse_arpu_usd", &w("paid_search")), 3.0);
    let st = |stage: &'static str| {
        [
            ("window", "1h"),
            ("channel", "paid_search"),
            ("stage", stage),
        ]
    };
    assert_eq!(v(&f, "cxpulse_funnel_users", &st("signup")), 2.0);
    assert_eq!(v(&f, "cxpulse_funnel_users", &st("first_deposit")), 1.0);
    assert_eq!(v(&f, "cxpulse_conversion_ratio", &st("first_deposit")), 0.5);
    assert_eq!(v(&f, "cxpulse_conversion_ratio", &st("first_trade")), 0.5);
    let wl = [("window", "1h")];
    assert_eq!(v(&f, "cxpulse_referral_invites", &wl), 2.0);
    assert_eq!(v(&f, "cxpulse_referral_signups", &wl), 1.0);
    // z signed up in the current bucket (at E): outside [E-1h, E).
    assert_eq!(v(&f, "cxpulse_referral_signup_share_ratio", &wl), 1.0 / 3.0);
    assert_eq!(v(&f, "cxpulse_referral_invite_conversion_ratio", &wl), 0.5);
    // 1 referral signup / 2 active customers (a, c).
    assert_eq!(v(&f, "cxpulse_referral_k_factor", &wl), 0.5);
    assert_eq!(v(&f, "cxpulse_referral_rewards_usd", &wl), 10.0);
    assert_eq!(
        v(&f, "cxpulse_signups_total", &[("channel", "organic")]),
        1.0
    );
}

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

#[test]
fn surveys_ratios_and_intervals() {
    let mut eng = engine(ZERO_LATENESS);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    let t0 = BASE + HOUR;
    for (i, c) in [5, 4, 4, 3, 1].iter().enumerate() {
        e.offer(t0 + i as i64 * MIN, Some("u"), rated(Some(*c), None, None));
    }
    for (i, n) in [10, 9, 8, 6, 0].iter().enumerate() {
        e.offer(
            t0 + (5 + i as i64) * MIN,
            Some("u"),
            rated(None, None, Some(*n)),
        );
    }
    for (i, c) in [7, 5, 4, 2].iter().enumerate() {
        e.offer(
            t0 + (10 + i as i64) * MIN,
            Some("u"),
            rated(None, Some(*c), None),
        );
    }
    e.offer(t0 + 30 * MIN, Some("x"), deposit());
    eng.finish();
    let f = eng.families();
    let w = [("window", "1h")];
    assert_eq!(v(&f, "cxpulse_csat_responses", &w), 5.0);
    assert_eq!(v(&f, "cxpulse_csat_ratio", &w), 0.6);
    // Wilson, p = 0.6, n = 5: (0.2307, 0.8824).
    assert!((v(&f, "cxpulse_csat_ratio_ci_lower", &w) - 0.2307).abs() < 1e-3);
    assert!((v(&f, "cxpulse_csat_ratio_ci_upper", &w) - 0.8824).abs() < 1e-3);
    // NPS: 2 promoters, 1 passive, 2 detractors: 0.
    assert_eq!(v(&f, "cxpulse_nps", &w), 0.0);
    assert_eq!(
        v(
            &f,
            "cxpulse_nps_responses",
            &[("window", "1h"), ("category", "passive")]
        ),
        1.0
    );
    assert!(v(&f, "cxpulse_nps_ci_lower", &w) < 0.0 && v(&f, "cxpulse_nps_ci_upper", &w) > 0.0);
    assert_eq!(v(&f, "cxpulse_ces_mean", &w), 4.5);
    assert_eq!(v(&f, "cxpulse_ces_easy_ratio", &w), 0.5);
    assert_eq!(v(&f, "cxpulse_ces_responses", &w), 4.0);
}

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
fn state_split_across_partitions_merges_to_the_same_series() {
    use SupportAction::*;
    let users = ["a", "b", "c", "d"];
    let mut events: Vec<(Millis, &str, EventBody<'static>)> = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let t = BASE + i as i64 * HOUR;
        events.push((
            t,
            u,
            signup(Some(if i % 2 == 0 { "organic" } else { "social" }), None),
        ));
        events.push((t + MIN, u, deposit()));
        events.push((t + 2 * MIN, u, trade(1.0 + i as f64)));
        events.push((
            t + 3 * MIN,
            u,
            support(&format!("T{i}"), Opened, Some(Priority::High)),
        ));
        events.push((
            t + 4 * MIN,
            u,
            rated(Some(2 + i as u8), Some(3 + i as u8), Some(5 + i as u8)),
        ));
    }
    events.push((BASE + 2 * DAY, "e", deposit()));
    events.sort_by_key(|e| e.0);
    let run = |partition_of: &dyn Fn(&str) -> u32| {
        let mut eng = engine("[engine]\nwindows = [\"1h\", \"24h\", \"7d\"]\n");
        for (i, (ts, u, b)) in events.iter().enumerate() {
            let ev = Event {
                event_id: Cow::Owned(format!("id{i}")),
                ts: *ts,
                user_id: Some(Cow::Owned(u.to_string())),
                body: b.clone(),
            };
            assert_eq!(eng.offer(partition_of(u), &ev, None), Outcome::Applied);
        }
        eng.finish();
        crate::export::to_prometheus_text(&eng.families())
    };
    let one = run(&|_| 0);
    let split = run(&|u| if u < "c" { 0 } else { 3 });
    assert_eq!(one, split);
    assert!(
        one.contains("cxpulse_signups{window=\"7d\",channel=\"organic\"} 2"),
        "{one}"
    );
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

/// Users who come and go with long silences (up to 80 days), over 240 days:
/// signups (some twice), deposits, trades, ratings, tickets opened and
/// replied to / paused / resolved within days, and spend. Sorted by time.
fn comeback_stream(seed: u64) -> Vec<(Millis, String, EventBody<'static>)> {
    let mut r = crate::r#gen::rng::Rng::new(seed);
    let mut out = Vec::new();
    let channels = ["ads", "seo", "partner"];
    let mut ticket_n = 0;
    for u in 0..300 {
        let user = format!("u{u}");
        let mut t = BASE + r.below(40) as Millis * DAY + r.below(DAY as u64) as Millis;
        let end = BASE + 240 * DAY;
        let mut first = true;
        while t < end {
            if first || r.below(10) == 0 {
                let ch = channels[r.below(3) as usize];
                let referred = r.below(5) == 0;
                out.push((
                    t,
                    user.clone(),
                    signup((!referred).then_some(ch), referred.then_some("u0")),
                ));
                first = false;
            }
            // A session: a few events over up to two days.
            for _ in 0..1 + r.below(4) {
                let at = t + r.below(2 * DAY as u64) as Millis;
                let body = match r.below(5) {
                    0 => deposit(),
                    1 | 2 => trade(0.5 + r.below(100) as f64 / 10.0),
                    3 => rated(Some(1 + r.below(5) as u8), None, Some(r.below(11) as u8)),
                    _ => {
                        ticket_n += 1;
                        let id = format!("t{ticket_n}");
                        let p =
                            [Priority::Low, Priority::Normal, Priority::High][r.below(3) as usize];
                        out.push((
                            at,
                            user.clone(),
                            support(&id, SupportAction::Opened, Some(p)),
                        ));
                        let mut s = at;
                        if r.below(3) > 0 {
                            s += r.below(3 * HOUR as u64) as Millis + MIN;
                            out.push((
                                s,
                                user.clone(),
                                support(&id, SupportAction::AgentReplied, None),
                            ));
                        }
                        if r.below(3) == 0 {
                            s += MIN;
                            out.push((s, user.clone(), support(&id, SupportAction::Pending, None)));
                            s += r.below(DAY as u64) as Millis;
                            out.push((
                                s,
                                user.clone(),
                                support(&id, SupportAction::CustomerReplied, None),
                            ));
                        }
                        if r.below(6) > 0 {
                            s += r.below(3 * DAY as u64) as Millis + MIN;
                            out.push((
                                s,
                                user.clone(),
                                support(&id, SupportAction::Resolved, None),
                            ));
                            if r.below(4) == 0 {
                                s += r.below(5 * DAY as u64) as Millis + MIN;
                                out.push((
                                    s,
                                    user.clone(),
                                    support(&id, SupportAction::Reopened, None),
                                ));
                                s += r.below(DAY as u64) as Millis + MIN;
                                out.push((
                                    s,
                                    user.clone(),
                                    support(&id, SupportAction::Resolved, None),
                                ));
                            }
                        }
                        continue;
                    }
                };
                out.push((at, user.clone(), body));
            }
            // Silence: mostly short, often longer than the compaction horizon.
            t += match r.below(4) {
                0 => r.below(80) as Millis * DAY,
                _ => r.below(6) as Millis * DAY,
            } + 3 * DAY;
        }
    }
    for d in 0..240 {
        let ch = channels[d % 3];
        out.push((
            BASE + d as Millis * DAY + 7 * HOUR,
            String::new(),
            spend(ch, 10.0 + d as f64),
        ));
    }
    out.sort_by_key(|e| e.0);
    out
}

/// Short horizons so compaction happens often: inactivity 3 d, windows up to
/// 7 d, so `compact_after` = 3 d (the 48 h targets are shorter) + 31 d + 2 d.
const COMPACTION_CFG: &str =
    "[engine]\nwindows = [\"1h\", \"24h\", \"7d\"]\n[churn]\ninactivity = \"3d\"\n";

/// The series both engines must agree on: everything but the memory gauges.
fn comparable(eng: &Engine) -> String {
    crate::export::to_prometheus_text(&eng.families())
        .lines()
        .filter(|l| {
            ![
                "cxpulse_compacted_users",
                "cxpulse_tracked_tickets",
                "cxpulse_tickets_forgotten_total",
            ]
            .iter()
            .any(|n| l.contains(n))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn offer_all(eng: &mut Engine, events: &[(Millis, String, EventBody<'static>)], n0: usize) {
    for (i, (ts, user, body)) in events.iter().enumerate() {
        let ev = Event {
            event_id: Cow::Owned(format!("e{}", n0 + i)),
            ts: *ts,
            user_id: (!user.is_empty()).then(|| Cow::Owned(user.clone())),
            body: body.clone(),
        };
        assert_eq!(eng.offer(0, &ev, None), Outcome::Applied);
    }
}

#[test]
fn compaction_is_lossless_and_returning_users_are_recognised() {
    let events = comeback_stream(7);
    assert!(events.len() > 5_000, "{} events", events.len());
    let c = cfg(COMPACTION_CFG);
    assert_eq!(c.params().unwrap().compact_after, 36 * DAY);
    let mut compacting = Engine::new(c.params().unwrap());
    let mut full = Engine::new(c.params().unwrap());
    full.prm.compact_after = Millis::MAX / 4;
    let mut max_compacted = 0;
    let mut rehydrated = 0;
    let mut tickets_forgotten = 0;
    // Compare every 5 days of event time.
    let mut start = 0;
    let mut next = BASE + 5 * DAY;
    for i in 0..=events.len() {
        if i == events.len() || events[i].0 >= next {
            offer_all(&mut compacting, &events[start..i], start);
            offer_all(&mut full, &events[start..i], start);
            start = i;
            next += 5 * DAY;
            max_compacted = max_compacted.max(compacting.compacted_users());
            rehydrated = compacting
                .parts
                .values()
                .map(|p| p.users.rehydrated)
                .sum::<u64>();
            tickets_forgotten = compacting.forgotten_tickets();
            assert_eq!(
                comparable(&compacting),
                comparable(&full),
                "at {}",
                format_ts(next)
            );
            assert_eq!(compacting.tracked_users(), full.tracked_users());
            assert_eq!(full.compacted_users(), 0);
        }
    }
    compacting.finish();
    full.finish();
    assert_eq!(comparable(&compacting), comparable(&full));
    eprintln!(
        "compacted at most {max_compacted}, rehydrated {rehydrated}, tickets forgotten {tickets_forgotten}"
    );
    assert!(
        max_compacted > 50,
        "compacted at most {max_compacted} users"
    );
    assert!(rehydrated > 0, "no compacted user came back");
    assert!(
        tickets_forgotten > 100,
        "{tickets_forgotten} tickets forgotten"
    );
    assert!(compacting.tracked_tickets() < full.tracked_tickets());
    assert!(compacting.state_bytes() < full.state_bytes());
    // The compacted state survives a snapshot.
    let bytes = compacting.snapshot();
    let restored = Engine::restore(c.params().unwrap(), &bytes).expect("restore");
    assert_eq!(restored.snapshot(), bytes);
    assert_eq!(comparable(&restored), comparable(&compacting));
    assert_eq!(restored.compacted_users(), compacting.compacted_users());
}

fn format_ts(ms: Millis) -> String {
    crate::event::time::format_rfc3339(ms)
}

#[test]
fn cap_forgets_compacted_users_seen_longest_ago_and_keeps_all_time_counts() {
    let mut eng = engine(&COMPACTION_CFG.replace("[churn]", "max_tracked_users = 20\n[churn]"));
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    // Group a: 10 signups (ads) on day 0, half of them deposit; group b: 10 signups (seo) on day 2.
    for i in 0..10 {
        e.offer(
            BASE + i * MIN,
            Some(&format!("a{i}")),
            signup(Some("ads"), None),
        );
    }
    for i in (0..10).step_by(2) {
        e.offer(BASE + HOUR + i * MIN, Some(&format!("a{i}")), deposit());
    }
    for i in 0..10 {
        e.offer(
            BASE + 2 * DAY + i * MIN,
            Some(&format!("b{i}")),
            signup(Some("seo"), None),
        );
    }
    assert_eq!(e.eng.tracked_users(), 20);
    // Day 45: everyone is past the 36-day horizon and compacted by the first event.
    // c0 makes 21 users: 2 are forgotten (down to 95% of 20), the oldest: from group a.
    e.offer(BASE + 45 * DAY, Some("c0"), signup(Some("ads"), None));
    assert_eq!(e.eng.compacted_users(), 18);
    assert_eq!(e.eng.tracked_users(), 19);
    assert_eq!(e.eng.forgotten_users(), 2);
    let f = e.eng.families();
    assert_eq!(v(&f, "cxpulse_users_forgotten_total", &[]), 2.0);
    assert_eq!(v(&f, "cxpulse_tracked_users_cap", &[]), 20.0);
    assert_eq!(v(&f, "cxpulse_tracked_users", &[]), 19.0);
    // All-time counts keep the forgotten users (c0's signup, at T, is not final yet).
    assert_eq!(v(&f, "cxpulse_users", &[]), 20.0);
    assert_eq!(v(&f, "cxpulse_signups_total", &[("channel", "ads")]), 10.0);
    assert_eq!(v(&f, "cxpulse_signups_total", &[("channel", "seo")]), 10.0);
    // Group b (seen later) is untouched: b0 comes back and trades, revenue goes to seo.
    e.offer(BASE + 45 * DAY + MIN, Some("b0"), trade(2.0));
    // a0 was forgotten: it comes back as a new user without a channel.
    e.offer(BASE + 45 * DAY + 2 * MIN, Some("a0"), trade(3.0));
    // Make the trades final (lateness 30 s).
    e.offer(BASE + 45 * DAY + 10 * MIN, Some("c0"), deposit());
    let f = e.eng.families();
    assert_eq!(
        v(
            &f,
            "cxpulse_revenue_usd",
            &[("window", "1h"), ("channel", "seo")]
        ),
        2.0
    );
    assert_eq!(
        v(
            &f,
            "cxpulse_revenue_usd",
            &[("window", "1h"), ("channel", "unknown")]
        ),
        3.0
    );
    // b0 was a signed-up non-customer: its first activity makes it new; a0
    // (forgotten) is new again. c0's deposit at T is not final yet.
    assert_eq!(v(&f, "cxpulse_new_customers", &[("window", "1h")]), 2.0);
    // Held: c0, b0 (rehydrated), a0 (new again) in full, 17 still compacted: at the cap.
    assert_eq!(e.eng.tracked_users(), 20);
    assert_eq!(e.eng.compacted_users(), 17);
    // 30 new users in one day: every second one goes over the cap and 2
    // compacted users are forgotten, until none is left (17); users inside the
    // horizon are never dropped, so the count ends above the cap.
    for i in 0..30 {
        e.offer(
            BASE + 46 * DAY + i * MIN,
            Some(&format!("d{i}")),
            signup(Some("seo"), None),
        );
    }
    assert_eq!(e.eng.compacted_users(), 0);
    assert_eq!(e.eng.forgotten_users(), 19);
    assert_eq!(e.eng.tracked_users(), 33);
    let f = e.eng.families();
    // d29's signup, at T, is not final: 29 of the 30 count.
    assert_eq!(
        v(
            &f,
            "cxpulse_signups",
            &[("window", "24h"), ("channel", "seo")]
        ),
        29.0
    );
    // 10 a + 10 b + c0 + 29 d; a0's comeback has no signup.
    assert_eq!(v(&f, "cxpulse_users", &[]), 50.0);
    assert_eq!(v(&f, "cxpulse_signups_total", &[("channel", "seo")]), 39.0);
}
