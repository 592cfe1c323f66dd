//! Survey series, through the engine, with values computed by hand.

use crate::engine::testkit::*;

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
