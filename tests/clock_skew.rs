//! End to end: a producer whose clock runs 4 minutes fast cannot make the
//! on-time events of its partition late (`cxpulse run` against tansu). In
//! `run` a partition's clock, and T, stay within `engine.clock_tolerance`
//! (5 s by default) of the wall clock; the fast event waits in the reorder
//! buffer. Without that, T would jump 4 minutes ahead and every on-time event
//! after it would be `late` (allowed_lateness 15 s here).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{CxConfig, CxRun, Tansu, free_addr, serial, unique_name, value};

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn event(id: &str, ts: i64, body: &str) -> (Option<String>, String) {
    let ts = cxpulse::event::time::format_rfc3339(ts);
    (None, format!(r#"{{"event_id":"{id}","ts":"{ts}",{body}}}"#))
}

fn trade(id: &str, ts: i64, fee: f64) -> (Option<String>, String) {
    let body = format!(r#""type":"trade","user_id":"u","notional_usd":100,"fee_usd":{fee}"#);
    event(id, ts, &body)
}

#[test]
fn a_producer_four_minutes_fast_makes_no_event_late() {
    let _serial = serial();
    let broker = Tansu::start();
    broker.create_topic("events", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let http = free_addr();
    // Bucket 1 s, so that the 1h window ends at the current second; T follows
    // only events (idle_timeout 1000d).
    let cfg = CxConfig::new()
        .engine("bucket", "1s")
        .engine("windows", toml::Value::Array(vec!["1h".into()]))
        .allowed_lateness("15s")
        .idle_timeout("1000d")
        .kafka(&broker.addr, &unique_name("skew"), &["events"])
        .dead_letter_topic("")
        .output_topic("")
        .alerts_topic("")
        .quick_group_join()
        .listen(&http)
        .write(&dir.path().join("cxpulse.toml"));
    let run = CxRun::start(
        &cfg,
        dir.path().join("cxpulse.log"),
        &http,
        Duration::from_secs(20),
    );
    let series = |s: &str| value(&run.metrics(), s);
    let outcome = |ty: &str, o: &str| {
        series(&format!(
            "cxpulse_events_total{{type=\"{ty}\",outcome=\"{o}\"}}"
        ))
    };

    // Produced once the partition is assigned, so that they are read at once.
    run.wait_for("the partition assigned", Duration::from_secs(30), || {
        run.log_text().contains("partitions assigned")
    });
    // First the fast producer's deposit, 4 min ahead of the wall clock (within
    // max_future_skew, 5 min), then on-time events: a signup and three trades,
    // 3 s to 0 s behind the wall clock.
    let now = wall_ms();
    broker.produce_owned(
        "events",
        &[
            event(
                "fast",
                now + 4 * 60_000,
                r#""type":"deposit","user_id":"f","amount_usd":10"#,
            ),
            event(
                "s",
                now - 3_000,
                r#""type":"signup","user_id":"u","channel":"ads""#,
            ),
            trade("t1", now - 2_000, 1.0),
            trade("t2", now - 1_000, 2.0),
            trade("t3", now, 4.0),
        ],
    );
    run.wait_for("5 events applied", Duration::from_secs(30), || {
        outcome("trade", "applied") == Some(3.0)
    });
    assert_eq!(outcome("deposit", "applied"), Some(1.0));
    assert_eq!(outcome("signup", "applied"), Some(1.0));
    for ty in ["deposit", "signup", "trade"] {
        assert_eq!(outcome(ty, "late"), Some(0.0), "{ty}");
    }
    // T is at most the tolerance (5 s) ahead of the wall clock, not 4 min.
    let clock = series("cxpulse_clock_timestamp_seconds").expect("T is exported");
    assert!(
        clock * 1000.0 <= (wall_ms() + 5_000) as f64,
        "T = {clock} s, wall clock {} ms",
        wall_ms()
    );
    assert!(
        clock * 1000.0 >= now as f64,
        "T = {clock} s, before {now} ms"
    );

    // 16 s later an on-time event moves T past the trades by the lateness:
    // they are applied (revenue 1 + 2 + 4), the fast deposit still waits.
    std::thread::sleep(Duration::from_millis(16_000));
    let later = wall_ms();
    broker.produce_owned("events", &[trade("t4", later, 8.0)]);
    run.wait_for(
        "revenue of the on-time trades",
        Duration::from_secs(30),
        || series("cxpulse_revenue_usd{window=\"1h\",channel=\"ads\"}") == Some(7.0),
    );
    assert_eq!(outcome("trade", "applied"), Some(4.0));
    assert_eq!(outcome("trade", "late"), Some(0.0));
    // Waiting: the fast deposit (4 min ahead) and t4 (not yet final).
    assert_eq!(series("cxpulse_pending_events"), Some(2.0));
}
