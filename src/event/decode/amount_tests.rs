//! Money amounts: the bound `engine.max_amount_usd` (1e12 USD by default),
//! on every USD field, and its configuration.

use super::tests::{fail, ok_owned, reason};
use super::*;
use crate::event::EventBody;

#[test]
fn amounts_above_the_bound_are_out_of_range() {
    // The default bound, engine.max_amount_usd, is 1e12 USD.
    let dep = |a: &str| {
        format!(r#"{{"event_id":"e","type":"deposit","ts":0,"user_id":"u","amount_usd":{a}}}"#)
    };
    let amount = |a: &str| match ok_owned(dep(a)).body {
        EventBody::Deposit { amount_usd } => amount_usd,
        other => panic!("{other:?}"),
    };
    assert_eq!(amount("1e12"), 1e12);
    assert_eq!(amount("1000000000000"), 1e12);
    assert_eq!(amount("999999999999.99"), 999_999_999_999.99);
    for over in [
        "1000000000001",
        "1.000000000001e12",
        "1e308",
        "1.7976931348623157e308",
    ] {
        let f = fail(&dep(over));
        assert_eq!(f.error.reason(), "out_of_range", "{over}");
        assert_eq!(f.event_type, Some(EventType::Deposit));
    }
    // The message names the field and the bound, in exponent form beyond 1e15.
    assert_eq!(
        fail(&dep("1e308")).error.to_string(),
        "field `amount_usd` is out of range: 1e308 is not a number in 0..=1000000000000 (engine.max_amount_usd)"
    );
    assert_eq!(
        fail(&dep("1000000000001")).error.to_string(),
        "field `amount_usd` is out of range: 1000000000001 is not a number in 0..=1000000000000 (engine.max_amount_usd)"
    );
    // Every USD field: fee and notional of a trade, a reward, a spend.
    let over = [
        r#"{"event_id":"e","type":"trade","ts":0,"user_id":"u","notional_usd":1e308,"fee_usd":1}"#,
        r#"{"event_id":"e","type":"trade","ts":0,"user_id":"u","notional_usd":1,"fee_usd":1e308}"#,
        r#"{"event_id":"e","type":"referral","ts":0,"user_id":"u","action":"rewarded","reward_usd":1e13}"#,
        r#"{"event_id":"e","type":"spend","ts":0,"channel":"ads","amount_usd":2e12}"#,
    ];
    for msg in over {
        assert_eq!(reason(msg), "out_of_range", "{msg}");
    }
    // JSON has no NaN or Infinity, and serde_json refuses a number beyond f64.
    for lit in ["NaN", "Infinity", "-Infinity", "1e400"] {
        assert_eq!(reason(&dep(lit)), "not_json", "{lit}");
    }
}

#[test]
fn the_amount_bound_is_configurable() {
    let cfg = crate::config::Config::from_toml_str(
        "[engine]\nmax_amount_usd = 1000.0\n",
        "t.toml",
        std::iter::empty(),
    )
    .expect("valid");
    let d = Decoder::new(&cfg.mapping, 1024, false);
    let dep = |a: &str| {
        format!(r#"{{"event_id":"e","type":"deposit","ts":0,"user_id":"u","amount_usd":{a}}}"#)
    };
    assert!(d.decode(dep("1000").as_bytes(), None).is_ok());
    let f = d.decode(dep("1000.01").as_bytes(), None).unwrap_err();
    assert_eq!(f.error.reason(), "out_of_range");
    for bad in ["0.0", "-1.0", "nan", "inf", "1e19"] {
        let text = format!("[engine]\nmax_amount_usd = {bad}\n");
        let e =
            crate::config::Config::from_toml_str(&text, "t.toml", std::iter::empty()).unwrap_err();
        assert_eq!(e.key, "engine.max_amount_usd", "{bad}");
    }
}
