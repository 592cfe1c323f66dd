//! End to end: `cxpulse replay` on a small hand-written fixture
//! (tests/fixtures/replay/small.ndjson). Every expected value below was
//! computed by hand from METRICS.md; the comments show the arithmetic.
//! The fixture ends at T = 2026-03-01T12:00:30Z, so E = 12:00:00, the 1h
//! window is [11:00, 12:00) and the 24h window [Feb 28 12:00, Mar 1 12:00).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/replay")
        .join(name)
}

fn replay(args: &[&str]) -> Output {
    common::cxpulse_command()
        .arg("replay")
        .arg("--config")
        .arg(fixture("config.toml"))
        .args(args)
        .output()
        .expect("cxpulse runs")
}

fn replay_json(files: &[PathBuf], extra: &[&str]) -> Vec<Value> {
    let mut args: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    args.extend(["--format".to_string(), "json".to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = replay(&refs);
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    v.as_array().expect("a JSON array").clone()
}

/// The records of a `--dead-letter` file.
fn dead_letters(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("dead letters written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn get(series: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series
        .iter()
        .find(|s| {
            s["name"] == name
                && s["labels"].as_object().map(|m| m.len()) == Some(labels.len())
                && labels.iter().all(|(k, v)| s["labels"][*k] == *v)
        })
        .map(|s| s["value"].as_f64().expect("numeric value"))
}

fn val(series: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    get(series, name, labels).unwrap_or_else(|| panic!("{name}{labels:?} is absent"))
}

#[test]
fn replay_of_the_fixture_gives_the_hand_computed_values() {
    let s = replay_json(&[fixture("small.ndjson")], &[]);
    let ev = |ty: &str, o: &str| val(&s, "cxpulse_events_total", &[("type", ty), ("outcome", o)]);
    // Outcomes: 4 signups, 3 deposits, 1 trade, 2 referral, 6 support, 1 spend applied;
    // the repeated e6 is a duplicate; csat 9 invalid (type support), the non-JSON line
    // invalid (type unknown); dave's 11:00 deposit arrives after T = 11:55 -> late.
    assert_eq!(ev("signup", "applied"), 4.0);
    assert_eq!(ev("deposit", "applied"), 3.0);
    assert_eq!(ev("trade", "applied"), 1.0);
    assert_eq!(ev("trade", "duplicate"), 1.0);
    assert_eq!(ev("referral", "applied"), 2.0);
    assert_eq!(ev("support", "applied"), 6.0);
    assert_eq!(ev("support", "invalid"), 1.0);
    assert_eq!(ev("unknown", "invalid"), 1.0);
    assert_eq!(ev("deposit", "late"), 1.0);
    assert_eq!(ev("spend", "applied"), 1.0);
    assert_eq!(
        val(&s, "cxpulse_clock_timestamp_seconds", &[]),
        1_772_366_430.0
    );

    let w24 = |ch: &'static str| [("window", "24h"), ("channel", ch)];
    // alice paid_search, bob organic, carol referral (referrer, no channel); erin at
    // 12:00:30 is after E, so in no window, but counts in users (ts <= T).
    assert_eq!(val(&s, "cxpulse_signups", &w24("paid_search")), 1.0);
    assert_eq!(val(&s, "cxpulse_signups", &w24("organic")), 1.0);
    assert_eq!(val(&s, "cxpulse_signups", &w24("referral")), 1.0);
    assert_eq!(val(&s, "cxpulse_signups", &w24("social")), 0.0);
    assert_eq!(val(&s, "cxpulse_users", &[]), 4.0);
    assert_eq!(
        val(&s, "cxpulse_user_growth_ratio", &[("window", "24h")]),
        0.75
    );
    assert_eq!(
        val(&s, "cxpulse_signups_total", &[("channel", "social")]),
        1.0
    );
    // Spend: 120 paid_search; alice's 20 USD reward counts for channel referral.
    assert_eq!(
        val(&s, "cxpulse_marketing_spend_usd", &w24("paid_search")),
        120.0
    );
    assert_eq!(
        val(&s, "cxpulse_marketing_spend_usd", &w24("referral")),
        20.0
    );
    assert_eq!(val(&s, "cxpulse_acquisitions", &w24("paid_search")), 1.0);
    assert_eq!(val(&s, "cxpulse_cpa_usd", &w24("paid_search")), 120.0);
    assert_eq!(val(&s, "cxpulse_cpa_usd", &w24("referral")), 20.0);
    assert_eq!(val(&s, "cxpulse_cpa_usd", &w24("organic")), 0.0);
    assert_eq!(get(&s, "cxpulse_cpa_usd", &w24("social")), None);
    assert_eq!(val(&s, "cxpulse_revenue_usd", &w24("paid_search")), 2.5);
    assert_eq!(val(&s, "cxpulse_arpu_usd", &w24("paid_search")), 2.5);
    let st = |stage: &'static str| {
        [
            ("window", "24h"),
            ("channel", "paid_search"),
            ("stage", stage),
        ]
    };
    assert_eq!(val(&s, "cxpulse_funnel_users", &st("first_trade")), 1.0);
    assert_eq!(val(&s, "cxpulse_conversion_ratio", &st("first_trade")), 1.0);
    let st = |stage: &'static str| [("window", "24h"), ("channel", "organic"), ("stage", stage)];
    assert_eq!(
        val(&s, "cxpulse_conversion_ratio", &st("first_deposit")),
        1.0
    );
    assert_eq!(val(&s, "cxpulse_conversion_ratio", &st("first_trade")), 0.0);
    // Only bob (11:55) was active in [11:00, 12:00).
    assert_eq!(
        val(
            &s,
            "cxpulse_active_customers",
            &[("window", "1h"), ("channel", "organic")]
        ),
        1.0
    );
    assert_eq!(
        val(
            &s,
            "cxpulse_active_customers",
            &[("window", "1h"), ("channel", "paid_search")]
        ),
        0.0
    );
    // Referral: 1 invite, 1 referral signup of 3; 3 active customers in 24h.
    let d = [("window", "24h")];
    assert_eq!(val(&s, "cxpulse_referral_invites", &d), 1.0);
    assert_eq!(
        val(&s, "cxpulse_referral_signup_share_ratio", &d),
        1.0 / 3.0
    );
    assert_eq!(val(&s, "cxpulse_referral_invite_conversion_ratio", &d), 1.0);
    assert_eq!(val(&s, "cxpulse_referral_k_factor", &d), 1.0 / 3.0);
    assert_eq!(val(&s, "cxpulse_referral_rewards_usd", &d), 20.0);
    // No 30d window configured: no CLV.
    assert_eq!(
        get(&s, "cxpulse_clv_usd", &[("channel", "paid_search")]),
        None
    );

    // Surveys: csat 5 (alice); nps 9 (alice) and 3 (bob) -> 0; ces 6.
    assert_eq!(val(&s, "cxpulse_csat_ratio", &[("window", "1h")]), 1.0);
    assert_eq!(val(&s, "cxpulse_nps", &d), 0.0);
    assert_eq!(
        val(
            &s,
            "cxpulse_nps_responses",
            &[("window", "24h"), ("category", "detractor")]
        ),
        1.0
    );
    assert_eq!(val(&s, "cxpulse_ces_mean", &d), 6.0);
    // Wilson for 1 of 1: (0.2065, 1.0).
    assert!((val(&s, "cxpulse_csat_ratio_ci_lower", &d) - 0.2065).abs() < 1e-3);

    // Support: T1 urgent replied after 12 min (met), resolved after 40 min (met).
    let u = |k: &'static str| [("window", "24h"), ("priority", "urgent"), ("kind", k)];
    assert_eq!(
        val(&s, "cxpulse_sla_breach_ratio", &u("first_response")),
        0.0
    );
    assert_eq!(val(&s, "cxpulse_sla_breach_ratio", &u("resolution")), 0.0);
    let q = |p: &'static str| [("window", "1h"), ("priority", "urgent"), ("quantile", p)];
    // 720 s within HdrHistogram's 3 significant digits.
    assert!(
        (val(
            &s,
            "cxpulse_support_first_response_quantile_seconds",
            &q("0.5")
        ) - 720.0)
            .abs()
            <= 0.72
    );
    assert!(
        (val(
            &s,
            "cxpulse_support_resolution_quantile_seconds",
            &q("0.99")
        ) - 2400.0)
            .abs()
            <= 2.4
    );
    assert_eq!(
        val(
            &s,
            "cxpulse_support_tickets_opened",
            &[("window", "1h"), ("priority", "normal")]
        ),
        1.0
    );
    // T2 (normal, opened 11:05, no reply) is open and undecided: 55.5 min of 4 h used.
    assert_eq!(
        val(
            &s,
            "cxpulse_support_open_tickets",
            &[("priority", "normal")]
        ),
        1.0
    );
    assert_eq!(
        val(
            &s,
            "cxpulse_support_open_tickets",
            &[("priority", "urgent")]
        ),
        0.0
    );
    let k = [("priority", "normal"), ("kind", "first_response")];
    assert_eq!(val(&s, "cxpulse_support_tickets_at_risk", &k), 0.0);
    assert_eq!(
        get(
            &s,
            "cxpulse_sla_breach_ratio",
            &[
                ("window", "24h"),
                ("priority", "normal"),
                ("kind", "first_response")
            ]
        ),
        None
    );

    // Churn: 3 new customers, active now 3, nobody churned: active at start 0 -> no ratio.
    assert_eq!(val(&s, "cxpulse_new_customers", &d), 3.0);
    assert_eq!(val(&s, "cxpulse_active_customers_now", &[]), 3.0);
    assert_eq!(get(&s, "cxpulse_churn_ratio", &d), None);
    for x in &s {
        assert!(x["value"].as_f64().is_some_and(f64::is_finite), "{x}");
    }
}

#[test]
fn gzip_input_gives_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("small.ndjson.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&std::fs::read(fixture("small.ndjson")).unwrap())
        .unwrap();
    enc.finish().unwrap();
    assert_eq!(
        replay_json(&[gz], &[]),
        replay_json(&[fixture("small.ndjson")], &[])
    );
}

#[test]
fn at_moves_t_forward_and_rejects_the_past() {
    let s = replay_json(
        &[fixture("small.ndjson")],
        &["--at", "2026-03-01T13:30:00Z"],
    );
    assert_eq!(
        val(&s, "cxpulse_clock_timestamp_seconds", &[]),
        1_772_371_800.0
    );
    // E = 13:30: the 1h window is [12:30, 13:30); erin's signup (12:00:30) is before it.
    assert_eq!(
        val(
            &s,
            "cxpulse_signups",
            &[("window", "1h"), ("channel", "social")]
        ),
        0.0
    );
    assert_eq!(
        val(
            &s,
            "cxpulse_signups",
            &[("window", "24h"), ("channel", "social")]
        ),
        1.0
    );
    // T2 (normal, opened 11:05) is now 2 h 25 min old: 60% of 4 h used, not at risk yet.
    let k = [("priority", "normal"), ("kind", "first_response")];
    assert_eq!(val(&s, "cxpulse_support_tickets_at_risk", &k), 0.0);
    let out = replay(&[
        fixture("small.ndjson").to_str().unwrap(),
        "--at",
        "2026-03-01T11:00:00Z",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("before the last applied event"));
}

#[test]
fn summary_and_dead_letter_file_name_every_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dead.ndjson");
    let out = replay(&[
        fixture("small.ndjson").to_str().unwrap(),
        "--dead-letter",
        dl.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("applied 17, invalid 2, late 1, duplicate 1"),
        "{err}"
    );
    let lines = dead_letters(&dl);
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("out_of_range"),
        "{}",
        lines[0]
    );
    assert!(lines[1]["reason"].as_str().unwrap().starts_with("not_json"));
    assert_eq!(lines[2]["reason"], "late");
}

#[test]
fn prometheus_output_passes_promtool_check_metrics() {
    let out = replay(&[fixture("small.ndjson").to_str().unwrap()]);
    assert!(out.status.success());
    let mut child = Command::new(common::promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let res = child.wait_with_output().unwrap();
    assert!(
        res.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    // The JSON and text outputs describe the same samples.
    let text = String::from_utf8_lossy(&out.stdout);
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert_eq!(samples, replay_json(&[fixture("small.ndjson")], &[]).len());
}

// Money amounts above `engine.max_amount_usd` (1e12 by default) are
// dead-lettered `out_of_range` and poison nothing: small.ndjson alone, then
// followed by poison.ndjson (two deposits of 1e308, a trade with a fee of
// 1e308 and a spend of 1e12 + 1, all at T = 12:00:30, so they would be
// applied if they were valid), with a 30d window so that CLV is exported.

/// The JSON output and the stderr summary of a replay of `files`.
fn replay_with(config: &Path, files: &[PathBuf], dead_letter: &Path) -> (Vec<Value>, String) {
    let out = common::cxpulse_command()
        .arg("replay")
        .arg("--config")
        .arg(config)
        .args(files)
        .args(["--format", "json", "--dead-letter"])
        .arg(dead_letter)
        .output()
        .expect("cxpulse runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "replay failed: {err}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    (v.as_array().expect("a JSON array").clone(), err)
}

#[test]
fn amounts_of_1e308_are_dead_lettered_and_revenue_arpu_clv_stay() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A 30d window, so that CLV is exported.
    let config = dir.path().join("cxpulse.toml");
    std::fs::write(&config, "[engine]\nwindows = [\"1h\", \"30d\"]\n").expect("config written");
    let (clean, clean_err) = replay_with(
        &config,
        &[fixture("small.ndjson")],
        &dir.path().join("clean.ndjson"),
    );
    let dl = dir.path().join("dead.ndjson");
    let (poisoned, err) = replay_with(
        &config,
        &[fixture("small.ndjson"), fixture("poison.ndjson")],
        &dl,
    );
    assert!(
        clean_err.contains("applied 17, invalid 2, late 1, duplicate 1"),
        "{clean_err}"
    );
    // The four poison lines are invalid; nothing else changes.
    assert!(
        err.contains("applied 17, invalid 6, late 1, duplicate 1"),
        "{err}"
    );
    let lines = dead_letters(&dl);
    let poison: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| {
            l["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("poison.ndjson"))
        })
        .map(|l| {
            let reason = l["reason"].as_str().expect("reason");
            (reason.split(':').next().unwrap_or(""), reason)
        })
        .collect();
    assert_eq!(poison.len(), 4, "{lines:?}");
    for (code, reason) in &poison {
        assert_eq!(*code, "out_of_range", "{reason}");
    }
    assert!(poison[0].1.contains("`amount_usd`") && poison[0].1.contains("1e308"));
    assert!(poison[2].1.contains("`fee_usd`"));
    assert!(poison[3].1.contains("1000000000001"));

    // By hand: alice (paid_search) is the only trader, fee 2.5, and an active
    // customer (deposit and trade) -> revenue 2.5, ARPU 2.5 / 1; no churn, so
    // CLV = 2.5 * margin 1 / clv_min_churn 0.01 = 250. CPA: spend 120 / 1.
    let ps = |w: &'static str| [("window", w), ("channel", "paid_search")];
    for s in [&clean, &poisoned] {
        assert_eq!(get(s, "cxpulse_revenue_usd", &ps("30d")), Some(2.5));
        assert_eq!(get(s, "cxpulse_arpu_usd", &ps("30d")), Some(2.5));
        assert_eq!(
            get(s, "cxpulse_clv_usd", &[("channel", "paid_search")]),
            Some(250.0)
        );
        assert_eq!(get(s, "cxpulse_cpa_usd", &ps("30d")), Some(120.0));
    }
    // And every other series is the same, apart from the invalid counts.
    let without_counts = |s: &[Value]| -> Vec<Value> {
        s.iter()
            .filter(|v| v["name"] != "cxpulse_events_total")
            .cloned()
            .collect()
    };
    assert_eq!(without_counts(&clean), without_counts(&poisoned));
    let invalid = |s: &[Value], ty: &str| {
        get(
            s,
            "cxpulse_events_total",
            &[("type", ty), ("outcome", "invalid")],
        )
    };
    assert_eq!(invalid(&poisoned, "deposit"), Some(2.0));
    assert_eq!(invalid(&poisoned, "trade"), Some(1.0));
    assert_eq!(invalid(&poisoned, "spend"), Some(1.0));
    assert_eq!(invalid(&clean, "deposit"), Some(0.0));
}

// Replay reads and decodes in chunks of about 1 MiB on worker threads and
// applies on one thread in file order. 40 000 deposits 7 ms apart (about
// 3.8 MB, several chunks; T ends at the last one, 280 s after the first),
// then three lines whose outcome depends on everything before them:
// - a copy of the first deposit: a duplicate (inside the 10 min horizon);
// - a new deposit at the first one's time, 280 s before T: late (> 30 s);
// - a new deposit 10 s before T: applied.
// Moved to the front of the file, the late line is applied instead (T has
// not moved yet). Split over two files at a line inside a chunk, the one
// stream gives the same output as the whole file.
const BIG_T0: i64 = 1_772_359_200_000; // 2026-03-01T10:00:00Z

fn deposit(id: &str, ts: i64) -> String {
    format!(r#"{{"event_id":"{id}","type":"deposit","ts":{ts},"user_id":"u{id}","amount_usd":2}}"#)
}

fn summary_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find(|l| l.starts_with("replay: "))
        .unwrap_or_else(|| panic!("no summary in {err}"))
        .to_string()
}

#[test]
fn outcomes_follow_file_order_across_chunks_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<String> = (0..40_000i64)
        .map(|i| deposit(&format!("d{i}"), BIG_T0 + i * 7))
        .collect();
    let t = BIG_T0 + 39_999 * 7;
    let (dup, late, fresh) = (
        body[0].clone(),
        deposit("late1", BIG_T0),
        deposit("fresh1", t - 10_000),
    );
    let write = |name: &str, lines: &[String]| {
        let p = dir.path().join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    };
    let all: Vec<String> = [body.clone(), vec![dup.clone(), late.clone(), fresh.clone()]].concat();
    assert!(all.iter().map(|l| l.len() + 1).sum::<usize>() > 3 << 20);
    let whole = write("whole.ndjson", &all);
    let dl = dir.path().join("dead.ndjson");
    let out = replay(&[
        whole.to_str().unwrap(),
        "--format",
        "json",
        "--dead-letter",
        dl.to_str().unwrap(),
    ]);
    assert_eq!(
        summary_of(&out),
        "replay: applied 40001, invalid 0, late 1, duplicate 1, T = 2026-03-01T10:04:39.993Z"
    );
    let dead = dead_letters(&dl);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["outcome"], "late");
    assert_eq!(dead[0]["line"], late.as_str());

    let front: Vec<String> = [vec![late.clone()], body.clone(), vec![dup, fresh]].concat();
    let out_front = replay(&[write("front.ndjson", &front).to_str().unwrap()]);
    assert_eq!(
        summary_of(&out_front),
        "replay: applied 40002, invalid 0, late 0, duplicate 1, T = 2026-03-01T10:04:39.993Z"
    );

    let (a, b) = all.split_at(12_345);
    let split = replay(&[
        write("a.ndjson", a).to_str().unwrap(),
        write("b.ndjson", b).to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(summary_of(&split), summary_of(&out));
    assert_eq!(split.stdout, out.stdout);
}
