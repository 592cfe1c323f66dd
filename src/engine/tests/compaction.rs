//! Compaction and the tracked-users cap: lossless, and all-time counts kept.

use crate::engine::testkit::*;

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
/// Open tickets are never forgotten here: that rule is lossy by design (see `caps.rs`).
const COMPACTION_CFG: &str = "[engine]\nwindows = [\"1h\", \"24h\", \"7d\"]\nopen_ticket_horizon = \"0d\"\n[churn]\ninactivity = \"3d\"\n";

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
