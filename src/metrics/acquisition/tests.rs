//! Acquisition series, through the engine, with values computed by hand.

use crate::engine::testkit::*;

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
fn clv_is_30d_arpu_times_margin_over_the_churn_floor() {
    let mut eng = engine(
        "[engine]\nwindows = [\"1h\", \"30d\"]\n[acquisition]\nmargin = 0.5\nclv_min_churn = 0.05\n",
    );
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    e.offer(BASE, Some("a"), signup(Some("ads"), None));
    e.offer(BASE + MIN, Some("a"), deposit());
    e.offer(BASE + 2 * MIN, Some("a"), trade(10.0));
    e.offer(BASE + 2 * HOUR, None, spend("tv", 50.0));
    eng.finish();
    let f = eng.families();
    // 30d: revenue 10, 1 active customer of ads, no churn (0 < floor 0.05):
    // 10 / 1 * 0.5 / 0.05 = 100.
    let clv = v(&f, "cxpulse_clv_usd", &[("channel", "ads")]);
    assert!((clv - 100.0).abs() < 1e-9, "{clv}");
    // One series per channel (not per window); tv has no active customer: absent.
    let fam = f
        .iter()
        .find(|x| x.name == "cxpulse_clv_usd")
        .expect("clv family");
    assert_eq!(fam.samples.len(), 1);
    assert_eq!(fam.absent.len(), 1);
    assert_eq!(fam.absent[0].labels, vec![("channel".into(), "tv".into())]);
}
