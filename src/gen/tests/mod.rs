//! Properties of the generated stream that tests, benchmarks and the demo rely on:
//! here the stream's shape (determinism, counts, noise, the EVENTS.md contract);
//! `behaviour` the simulated traffic, `kafka` the Kafka sink.

use std::collections::HashSet;

use serde_json::Value;

use super::generator::{LineKey, Noise};
use super::*;

mod behaviour;
mod kafka;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

fn cfg(seed: u64, events: u64) -> GenConfig {
    GenConfig {
        seed,
        events,
        ..GenConfig::default()
    }
}

fn ndjson(cfg: &GenConfig) -> Vec<u8> {
    let mut out = Vec::new();
    let n = write_ndjson(cfg, &mut out).unwrap();
    assert_eq!(n, cfg.events);
    out
}

/// One line with its generator-side facts.
struct Line {
    text: String,
    ts_ms: i64,
    key: LineKey,
    noise: Noise,
}

fn lines(cfg: &GenConfig) -> Vec<Line> {
    let mut g = Generator::new(cfg);
    let mut out = Vec::new();
    let mut v = Vec::new();
    while let Some(meta) = g.next_into(&mut out) {
        v.push(Line {
            text: String::from_utf8(std::mem::take(&mut out)).unwrap(),
            ts_ms: meta.ts,
            key: meta.key,
            noise: meta.noise,
        });
    }
    v
}

fn parse_ts(v: &Value) -> Option<i64> {
    let s = v.get("ts")?.as_str()?;
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some(t.timestamp_millis())
}

fn id_ok(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty() && s.len() <= 128)
}

fn amount_ok(v: &Value, field: &str) -> bool {
    v.get(field)
        .and_then(Value::as_f64)
        .is_some_and(|x| x >= 0.0)
}

fn int_in(v: &Value, field: &str, lo: u64, hi: u64) -> bool {
    match v.get(field) {
        None => true,
        Some(x) => x.as_u64().is_some_and(|n| (lo..=hi).contains(&n)),
    }
}

/// The EVENTS.md contract for one canonical line.
fn validate(text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !id_ok(v.get("event_id")) {
        return Err("event_id".into());
    }
    parse_ts(&v).ok_or("ts")?;
    let ty = v.get("type").and_then(Value::as_str).ok_or("type")?;
    if ty != "spend" && !id_ok(v.get("user_id")) {
        return Err("user_id".into());
    }
    let opt_str = |f: &str| v.get(f).is_none_or(Value::is_string);
    let ok = match ty {
        "signup" => {
            opt_str("channel")
                && opt_str("campaign")
                && opt_str("referrer_id")
                && opt_str("country")
        }
        "deposit" => amount_ok(&v, "amount_usd"),
        "trade" => amount_ok(&v, "notional_usd") && amount_ok(&v, "fee_usd"),
        "referral" => match v.get("action").and_then(Value::as_str) {
            Some("invite_sent") => true,
            Some("rewarded") => amount_ok(&v, "reward_usd"),
            _ => false,
        },
        "support" => {
            let action_ok = matches!(
                v.get("action").and_then(Value::as_str),
                Some(
                    "opened"
                        | "agent_replied"
                        | "customer_replied"
                        | "pending"
                        | "resolved"
                        | "reopened"
                        | "rated"
                )
            );
            let priority_ok = v
                .get("priority")
                .is_none_or(|p| matches!(p.as_str(), Some("low" | "normal" | "high" | "urgent")));
            id_ok(v.get("ticket_id"))
                && action_ok
                && priority_ok
                && int_in(&v, "csat", 1, 5)
                && int_in(&v, "ces", 1, 7)
                && int_in(&v, "nps", 0, 10)
        }
        "spend" => id_ok(v.get("channel")) && amount_ok(&v, "amount_usd"),
        _ => false,
    };
    if ok {
        Ok(v)
    } else {
        Err(format!("bad {ty} fields"))
    }
}

fn str_of<'a>(v: &'a Value, f: &str) -> Option<&'a str> {
    v.get(f).and_then(Value::as_str)
}

#[test]
fn same_seed_gives_same_bytes_and_another_seed_differs() {
    let a = ndjson(&cfg(7, 20_000));
    let b = ndjson(&cfg(7, 20_000));
    let c = ndjson(&cfg(8, 20_000));
    assert_eq!(a, b);
    assert_ne!(a, c);
    // The iterator yields the very same lines.
    let joined: String = Generator::new(&cfg(7, 20_000))
        .map(|l| l.payload + "\n")
        .collect();
    assert_eq!(joined.as_bytes(), &a[..]);
}

#[test]
fn produces_exactly_the_requested_number_of_lines() {
    for n in [0, 1, 17, 5_000] {
        let out = ndjson(&cfg(3, n));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count() as u64, n);
        assert_eq!(Generator::new(&cfg(3, n)).count() as u64, n);
    }
    // A tiny traffic level over a long span still yields every line.
    let c = GenConfig {
        events: 40,
        days: 365,
        ..cfg(3, 40)
    };
    assert_eq!(Generator::new(&c).count(), 40);
}

#[test]
fn noise_shares_are_near_their_targets() {
    let all = lines(&cfg(11, 100_000));
    let share = |k: Noise| all.iter().filter(|l| l.noise == k).count() as f64 / all.len() as f64;
    let (ooo, dup, bad) = (
        share(Noise::OutOfOrder),
        share(Noise::Duplicate),
        share(Noise::Invalid),
    );
    assert!((0.007..0.013).contains(&ooo), "out of order {ooo}");
    assert!((0.0035..0.0065).contains(&dup), "duplicates {dup}");
    assert!((0.0012..0.0030).contains(&bad), "invalid {bad}");

    // Seen from the bytes alone: invalid lines fail the contract, and the
    // lines repeating an earlier event_id are exactly the duplicates.
    let mut seen = HashSet::new();
    let mut repeats = 0;
    let mut reasons = HashSet::new();
    for l in &all {
        match validate(&l.text) {
            Ok(v) => {
                assert_ne!(l.noise, Noise::Invalid, "invalid line passes: {}", l.text);
                if !seen.insert(str_of(&v, "event_id").unwrap().to_string()) {
                    repeats += 1;
                    assert_eq!(l.noise, Noise::Duplicate, "{}", l.text);
                }
            }
            Err(e) => {
                assert_eq!(l.noise, Noise::Invalid, "{e}: {}", l.text);
                reasons.insert(e.split(':').next().unwrap_or_default().to_string());
            }
        }
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort();
    // Not JSON, bad ts, missing user_id, csat 9, negative amount.
    assert_eq!(
        reasons,
        [
            "bad deposit fields",
            "bad support fields",
            "not JSON",
            "ts",
            "user_id"
        ]
    );
    assert_eq!(
        repeats,
        all.iter().filter(|l| l.noise == Noise::Duplicate).count()
    );
}

#[test]
fn every_valid_line_meets_the_contract_and_matches_its_key_and_time() {
    let all = lines(&cfg(12, 100_000));
    for l in all.iter().filter(|l| l.noise != Noise::Invalid) {
        let v = validate(&l.text).unwrap_or_else(|e| panic!("{e}: {}", l.text));
        assert_eq!(parse_ts(&v), Some(l.ts_ms), "{}", l.text);
        let ty = str_of(&v, "type").unwrap();
        match l.key {
            LineKey::Channel(_) => assert_eq!(ty, "spend"),
            LineKey::User(u) => assert_eq!(str_of(&v, "user_id"), Some(format!("u{u}").as_str())),
            LineKey::None => panic!("valid line without key: {}", l.text),
        }
        // Millisecond precision, UTC.
        let ts = str_of(&v, "ts").unwrap();
        assert!(ts.len() == 24 && ts.ends_with('Z'), "{ts}");
    }
    let mut g = Generator::new(&cfg(12, 100_000));
    let mut keyed = 0;
    for line in g.by_ref() {
        match validate(&line.payload) {
            Ok(v) if str_of(&v, "type") == Some("spend") => {
                assert_eq!(line.key.as_deref(), str_of(&v, "channel"));
                keyed += 1;
            }
            Ok(v) => assert_eq!(line.key.as_deref(), str_of(&v, "user_id")),
            Err(_) => assert_eq!(line.key, None),
        }
    }
    assert!(keyed > 0);
}

#[test]
fn no_line_trails_the_newest_by_30_seconds() {
    let all = lines(&cfg(13, 100_000));
    let mut max = all[0].ts_ms;
    let mut behind_lines = 0;
    for l in all.iter().filter(|l| l.noise != Noise::Invalid) {
        assert!(
            l.ts_ms > max - 30_000,
            "{} ms behind: {}",
            max - l.ts_ms,
            l.text
        );
        if l.ts_ms < max {
            behind_lines += 1;
        }
        max = max.max(l.ts_ms);
    }
    // Apart from the noise, lines are in event-time order.
    let noisy = all.iter().filter(|l| l.noise != Noise::Clean).count();
    assert!(
        behind_lines <= noisy,
        "{behind_lines} behind, {noisy} noisy"
    );
    assert!(behind_lines > 0);
}

#[test]
fn every_type_action_and_priority_occurs_in_100k_lines() {
    let all = lines(&cfg(14, 100_000));
    let mut seen: HashSet<String> = HashSet::new();
    for l in &all {
        if let Ok(v) = validate(&l.text) {
            let ty = str_of(&v, "type").unwrap();
            seen.insert(format!("type={ty}"));
            for f in ["action", "priority", "channel"] {
                if let Some(x) = str_of(&v, f) {
                    seen.insert(format!("{f}={x}"));
                }
            }
            for f in ["csat", "ces", "nps", "referrer_id"] {
                if v.get(f).is_some() {
                    seen.insert(format!("{ty}.{f}"));
                }
            }
            if ty == "signup" && v.get("channel").is_none() {
                seen.insert(format!(
                    "signup.no_channel.referred={}",
                    v.get("referrer_id").is_some()
                ));
            }
            if str_of(&v, "ticket_id") == Some("survey") {
                seen.insert("survey".into());
            }
        }
    }
    let mut want: Vec<String> = ["signup", "deposit", "trade", "referral", "support", "spend"]
        .iter()
        .map(|t| format!("type={t}"))
        .collect();
    for a in [
        "opened",
        "agent_replied",
        "customer_replied",
        "pending",
        "resolved",
        "reopened",
        "rated",
    ] {
        want.push(format!("action={a}"));
    }
    for p in ["low", "normal", "high", "urgent"] {
        want.push(format!("priority={p}"));
    }
    for c in ["organic", "paid_search", "social", "affiliate", "referral"] {
        want.push(format!("channel={c}"));
    }
    for x in [
        "action=invite_sent",
        "action=rewarded",
        "support.csat",
        "support.ces",
        "support.nps",
        "signup.referrer_id",
        "signup.no_channel.referred=true",
        "signup.no_channel.referred=false",
        "survey",
    ] {
        want.push(x.to_string());
    }
    let missing: Vec<_> = want.iter().filter(|w| !seen.contains(*w)).collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
}
