//! Survey series, through the engine, with values computed by hand.

use super::{Partial, State};
use crate::engine::testkit::*;
use crate::metrics::Ctx;

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
fn partials_of_two_partitions_merge_by_adding() {
    let prm = cfg("[engine]\nwindows = [\"1h\"]\n").params().unwrap();
    let ctx = Ctx::new(&prm, BASE + HOUR);
    let b = prm.bucket_of(BASE + 10 * MIN);
    let r = |csat, ces, nps| Ratings { csat, ces, nps };
    let (mut p0, mut p1) = (State::default(), State::default());
    p0.rated(b, r(Some(5), Some(7), Some(10)));
    p1.rated(b, r(Some(2), None, Some(0)));
    // 70 minutes before: outside [E - 1h, E).
    p1.rated(b - 60, r(Some(5), Some(5), Some(10)));
    let mut all = Partial::empty(&ctx);
    all.merge(&Partial::of(&ctx, &p0));
    all.merge(&Partial::of(&ctx, &p1));
    let w = all.windows[0];
    assert_eq!((w.csat_n, w.csat_satisfied), (2.0, 1.0));
    assert_eq!(
        (w.nps_promoters, w.nps_passives, w.nps_detractors),
        (1.0, 0.0, 1.0)
    );
    assert_eq!((w.ces_n, w.ces_sum, w.ces_easy), (1.0, 7.0, 1.0));
    let mut out = Vec::new();
    all.finish(&ctx, &mut out);
    let l = [("window", "1h")];
    assert_eq!(v(&out, "cxpulse_csat_ratio", &l), 0.5);
    // (1 promoter - 1 detractor) / 2 answers.
    assert_eq!(v(&out, "cxpulse_nps", &l), 0.0);
    assert_eq!(v(&out, "cxpulse_ces_mean", &l), 7.0);
}
