//! Merging partitions, and the confidence intervals the families share.

use super::{nps_interval, wilson};
use crate::engine::testkit::*;

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
fn wilson_interval_matches_hand_computation() {
    // p = 0.8, n = 10: centre = 0.8 + 0.19208 = 0.99208; half = 1.96*sqrt(0.016 + 0.0096040) = 0.31363
    // den = 1.38416 -> (0.49009, 0.94330)
    let (lo, hi) = wilson(8.0, 10.0).unwrap();
    assert!((lo - 0.49016).abs() < 1e-4, "{lo}");
    assert!((hi - 0.94332).abs() < 1e-4, "{hi}");
    assert!(wilson(0.0, 0.0).is_none());
}

#[test]
fn nps_interval_matches_hand_computation() {
    // 6 promoters, 2 detractors, 10 answers: n'=13, pp=6.75/13=0.51923, pd=2.75/13=0.21154,
    // c=0.30769, se=sqrt((0.73077-0.09467)/13)=0.22120 -> 100*(c -+ 1.96 se) = (-12.59, 74.13)
    let (lo, hi) = nps_interval(6.0, 2.0, 10.0).unwrap();
    assert!((lo - -12.59).abs() < 0.05, "{lo}");
    assert!((hi - 74.13).abs() < 0.05, "{hi}");
}
