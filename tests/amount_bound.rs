//! End to end: money amounts above `engine.max_amount_usd` (1e12 by default)
//! are dead-lettered `out_of_range` and poison nothing. `cxpulse replay` of
//! the hand-written fixture tests/fixtures/replay/small.ndjson, then of the
//! same followed by tests/fixtures/replay/poison.ndjson: two deposits of
//! 1e308, a trade with a fee of 1e308 and a spend of 1e12 + 1, all at
//! T = 2026-03-01T12:00:30Z (so they would be applied if they were valid).

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/replay")
        .join(name)
}

/// The JSON output and the stderr summary of a replay of `files`.
fn replay(config: &Path, files: &[PathBuf], dead_letter: &Path) -> (Vec<Value>, String) {
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

#[test]
fn amounts_of_1e308_are_dead_lettered_and_revenue_arpu_clv_stay() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A 30d window, so that CLV is exported.
    let config = dir.path().join("cxpulse.toml");
    std::fs::write(&config, "[engine]\nwindows = [\"1h\", \"30d\"]\n").expect("config written");
    let (clean, clean_err) = replay(
        &config,
        &[fixture("small.ndjson")],
        &dir.path().join("clean.ndjson"),
    );
    let dl = dir.path().join("dead.ndjson");
    let (poisoned, err) = replay(
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
    let lines: Vec<Value> = std::fs::read_to_string(&dl)
        .expect("dead letters written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
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
