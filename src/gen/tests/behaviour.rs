//! The simulated traffic: its time span and rate, channels, SLA outcomes and churn.

use std::collections::{HashMap, HashSet};

use super::*;
#[test]
fn lines_cover_about_the_requested_days() {
    for (events, days) in [(100_000, 60), (50_000, 7)] {
        let c = GenConfig {
            days,
            ..cfg(15, events)
        };
        let last = Generator::new(&c).map(|l| l.ts_ms).max().unwrap();
        let span = (last - c.start_ms) as f64 / DAY_MS as f64;
        let want = f64::from(days);
        assert!(
            (want * 0.85..want * 1.15).contains(&span),
            "{events} over {days} days took {span:.1} days"
        );
    }
}

#[test]
fn with_rate_event_time_advances_at_the_rate() {
    let c = cfg(16, 60_000);
    let last = Generator::with_rate(&c, 100.0)
        .map(|l| l.ts_ms)
        .max()
        .unwrap();
    let secs = (last - c.start_ms) as f64 / 1000.0;
    assert!(
        (510.0..690.0).contains(&secs),
        "60k lines at 100/s took {secs:.0} s"
    );
}

#[test]
fn extra_channels_push_past_the_label_cap() {
    let channels = |c: &GenConfig| -> HashSet<String> {
        Generator::new(c)
            .filter_map(|l| validate(&l.payload).ok())
            .filter_map(|v| str_of(&v, "channel").map(str::to_string))
            .collect()
    };
    let extra = channels(&GenConfig {
        extra_channels: 14,
        ..cfg(17, 100_000)
    });
    assert!(extra.len() >= 19, "{} channels: {extra:?}", extra.len());
    let plain = channels(&cfg(17, 100_000));
    assert_eq!(plain.len(), 5, "{plain:?}");
}

/// First-response times by priority, from the output alone.
#[test]
fn most_first_replies_meet_the_sla_and_some_breach() {
    let all = lines(&cfg(18, 300_000));
    let target = |p: &str| match p {
        "urgent" => 15 * 60_000,
        "high" => HOUR_MS,
        "low" => 8 * HOUR_MS,
        _ => 4 * HOUR_MS,
    };
    let mut opened: HashMap<String, (i64, String)> = HashMap::new();
    let mut outcome: HashMap<String, (u32, u32)> = HashMap::new();
    for l in all.iter().filter(|l| l.noise == Noise::Clean) {
        let v = validate(&l.text).unwrap();
        let (Some(t), Some(a)) = (str_of(&v, "ticket_id"), str_of(&v, "action")) else {
            continue;
        };
        match a {
            "opened" => {
                let p = str_of(&v, "priority").unwrap_or("normal").to_string();
                opened.insert(t.to_string(), (l.ts_ms, p));
            }
            "agent_replied" => {
                if let Some((at, p)) = opened.remove(t) {
                    let e = outcome.entry(p.clone()).or_default();
                    if l.ts_ms - at <= target(&p) {
                        e.0 += 1
                    } else {
                        e.1 += 1
                    }
                }
            }
            _ => {}
        }
    }
    for p in ["low", "normal", "high", "urgent"] {
        let (met, breached) = outcome.get(p).copied().unwrap_or_default();
        let ratio = f64::from(breached) / f64::from(met + breached);
        assert!(met + breached >= 20, "{p}: only {} replies", met + breached);
        assert!(
            (0.01..0.3).contains(&ratio),
            "{p}: breach ratio {ratio:.3} ({met} met)"
        );
    }
}

/// The seeds' finding: customers leave after a bad support contact far more
/// often than after a good one.
#[test]
fn bad_ratings_are_followed_by_churn_more_than_good_ones() {
    let c = GenConfig {
        events: 250_000,
        days: 90,
        ..cfg(19, 0)
    };
    let all = lines(&c);
    let mut activity: HashMap<String, Vec<i64>> = HashMap::new();
    let mut ratings: Vec<(String, i64, u64)> = Vec::new();
    let end = all.iter().map(|l| l.ts_ms).max().unwrap();
    for l in all.iter().filter(|l| l.noise == Noise::Clean) {
        let v = validate(&l.text).unwrap();
        let user = str_of(&v, "user_id").unwrap_or_default().to_string();
        match str_of(&v, "type") {
            Some("deposit" | "trade") => activity.entry(user).or_default().push(l.ts_ms),
            Some("support") => {
                if let Some(csat) = v.get("csat").and_then(Value::as_u64)
                    && l.ts_ms < end - 30 * DAY_MS
                {
                    ratings.push((user, l.ts_ms, csat));
                }
            }
            _ => {}
        }
    }
    let churn_share = |bad: bool| {
        let rated: Vec<_> = ratings
            .iter()
            .filter(|r| if bad { r.2 <= 2 } else { r.2 >= 4 })
            .collect();
        let gone = rated
            .iter()
            .filter(|(u, s, _)| {
                let acts = activity.get(u).map(Vec::as_slice).unwrap_or_default();
                !acts.iter().any(|t| *t > *s && *t <= s + 30 * DAY_MS)
            })
            .count();
        (gone as f64 / rated.len() as f64, rated.len())
    };
    let (bad, n_bad) = churn_share(true);
    let (good, n_good) = churn_share(false);
    assert!(
        n_bad >= 30 && n_good >= 100,
        "{n_bad} bad, {n_good} good ratings"
    );
    assert!(
        bad > good + 0.2,
        "churn after bad {bad:.2} vs good {good:.2}"
    );
}
