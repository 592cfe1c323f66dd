use std::borrow::Cow;

use super::*;
use crate::event::raw::into_owned;
use crate::event::{
    EventBody, MAX_ID_BYTES, Mapping, Priority, Ratings, ReferralAction, SupportAction,
};

/// 2026-01-05T10:00:00Z (`date -u -d 2026-01-05T10:00:00Z +%s`).
const JAN5_10H: Millis = 1_767_607_200_000;

fn decoder() -> Decoder {
    Decoder::new(&Mapping::default(), 64 * 1024, false)
}

fn ok(msg: &str) -> Event<'_> {
    match decoder().decode(msg.as_bytes(), None) {
        Ok(e) => e,
        Err(f) => panic!("{msg}: {}", f.error),
    }
}

pub(super) fn ok_owned(msg: String) -> Event<'static> {
    into_owned(ok(&msg))
}

pub(super) fn fail(msg: &str) -> DecodeFailure {
    match decoder().decode(msg.as_bytes(), None) {
        Ok(e) => panic!("{msg}: accepted as {e:?}"),
        Err(f) => f,
    }
}

pub(super) fn reason(msg: &str) -> &'static str {
    fail(msg).error.reason()
}

fn b(s: &str) -> Option<Cow<'_, str>> {
    Some(Cow::Borrowed(s))
}

/// A valid support event with `extra` fields appended.
fn support(extra: &str) -> String {
    format!(
        r#"{{"event_id":"e1","type":"support","ts":1767607200000,"user_id":"u1","ticket_id":"T1"{extra}}}"#
    )
}

#[test]
fn signup_with_every_field_borrows_from_the_message() {
    let msg = r#"{"event_id":"e1","type":"signup","ts":"2026-01-05T10:00:00Z","user_id":"u1",
        "channel":"paid_search","campaign":"winter","referrer_id":"u0","country":"DE","extra":{"x":[1,2]}}"#;
    let e = ok(msg);
    assert_eq!(
        e,
        Event {
            event_id: b("e1").unwrap(),
            ts: JAN5_10H,
            user_id: b("u1"),
            body: EventBody::Signup {
                channel: b("paid_search"),
                campaign: b("winter"),
                referrer_id: b("u0"),
                country: b("DE"),
            },
        }
    );
    assert!(matches!(e.event_id, Cow::Borrowed(_)));
    assert_eq!(e.event_type(), EventType::Signup);
}

#[test]
fn signup_optional_fields_may_be_absent_null_or_empty() {
    let e = ok(
        r#"{"event_id":"e1","type":"signup","ts":0,"user_id":"u1","channel":null,"campaign":""}"#,
    );
    assert_eq!(
        e.body,
        EventBody::Signup {
            channel: None,
            campaign: None,
            referrer_id: None,
            country: None
        }
    );
}

#[test]
fn escaped_strings_are_unescaped() {
    let e =
        ok(r#"{"event_id":"e\"1\u00e9","type":"deposit","ts":0,"user_id":"u1","amount_usd":1}"#);
    assert_eq!(e.event_id, "e\"1é");
}

#[test]
fn deposit_trade_and_spend_amounts() {
    let e = ok(r#"{"event_id":"e","type":"deposit","ts":5,"user_id":"u","amount_usd":100.25}"#);
    assert_eq!(e.body, EventBody::Deposit { amount_usd: 100.25 });
    assert_eq!(e.ts, 5);
    let e = ok(
        r#"{"event_id":"e","type":"trade","ts":5,"user_id":"u","notional_usd":1000,"fee_usd":0}"#,
    );
    assert_eq!(
        e.body,
        EventBody::Trade {
            notional_usd: 1000.0,
            fee_usd: 0.0
        }
    );
    let e = ok(r#"{"event_id":"e","type":"spend","ts":5,"channel":"social","amount_usd":0}"#);
    assert_eq!(e.user_id, None);
    assert_eq!(
        e.body,
        EventBody::Spend {
            channel: Cow::Borrowed("social"),
            amount_usd: 0.0
        }
    );
    let e = ok(
        r#"{"event_id":"e","type":"spend","ts":5,"user_id":"ops","channel":"social","amount_usd":3}"#,
    );
    assert_eq!(e.user_id, b("ops"));
}

#[test]
fn negative_zero_amount_is_zero() {
    let e = ok(r#"{"event_id":"e","type":"deposit","ts":5,"user_id":"u","amount_usd":-0.0}"#);
    let EventBody::Deposit { amount_usd } = e.body else {
        panic!()
    };
    assert!(amount_usd == 0.0 && amount_usd.is_sign_positive());
}

#[test]
fn referral_actions() {
    let e = ok(
        r#"{"event_id":"e","type":"referral","ts":5,"user_id":"u","action":"invite_sent","reward_usd":-4}"#,
    );
    assert_eq!(
        e.body,
        EventBody::Referral {
            action: ReferralAction::InviteSent
        }
    );
    let e = ok(
        r#"{"event_id":"e","type":"referral","ts":5,"user_id":"u","action":"rewarded","reward_usd":25}"#,
    );
    assert_eq!(
        e.body,
        EventBody::Referral {
            action: ReferralAction::Rewarded { reward_usd: 25.0 }
        }
    );
    let base = r#"{"event_id":"e","type":"referral","ts":5,"user_id":"u""#;
    assert_eq!(
        fail(&format!(r#"{base},"action":"rewarded"}}"#)).error,
        DecodeError::MissingField("reward_usd")
    );
    assert_eq!(
        reason(&format!(r#"{base},"action":"rewarded","reward_usd":-1}}"#)),
        "out_of_range"
    );
    assert_eq!(
        reason(&format!(r#"{base},"action":"clicked"}}"#)),
        "unknown_value"
    );
    assert_eq!(reason(&format!("{base}}}")), "missing_field");
}

#[test]
fn support_opened_with_and_without_priority() {
    let e = ok_owned(support(r#","action":"opened","priority":"urgent""#));
    assert_eq!(
        e.body,
        EventBody::Support {
            ticket_id: Cow::Borrowed("T1"),
            action: SupportAction::Opened,
            priority: Some(Priority::Urgent),
            ratings: Ratings::default(),
        }
    );
    let e = ok_owned(support(r#","action":"opened""#));
    assert!(matches!(e.body, EventBody::Support { priority: None, .. }));
    for a in [
        "agent_replied",
        "customer_replied",
        "pending",
        "resolved",
        "reopened",
    ] {
        ok(&support(&format!(r#","action":"{a}""#)));
    }
}

#[test]
fn support_priority_must_be_known() {
    let f = fail(&support(r#","action":"opened","priority":"p1""#));
    assert_eq!(f.error.reason(), "unknown_value");
    assert_eq!(f.event_type, Some(EventType::Support));
    assert!(f.error.to_string().contains("priority"), "{}", f.error);
    assert_eq!(
        reason(&support(r#","action":"opened","priority":3"#)),
        "wrong_type"
    );
}

#[test]
fn support_action_and_ticket_are_required() {
    assert_eq!(
        fail(&support("")).error,
        DecodeError::MissingField("action")
    );
    assert_eq!(reason(&support(r#","action":"closed""#)), "unknown_value");
    let no_ticket = r#"{"event_id":"e","type":"support","ts":0,"user_id":"u","action":"opened"}"#;
    assert_eq!(
        fail(no_ticket).error,
        DecodeError::MissingField("ticket_id")
    );
}

#[test]
fn rated_reads_scores_at_their_bounds() {
    for (scores, (csat, ces, nps)) in [
        (r#","csat":5,"ces":7,"nps":0"#, (5, 7, 0)),
        (r#","csat":1,"ces":1,"nps":10"#, (1, 1, 10)),
    ] {
        let e = ok_owned(support(&format!(r#","action":"rated"{scores}"#)));
        let want = Ratings {
            csat: Some(csat),
            ces: Some(ces),
            nps: Some(nps),
        };
        assert!(
            matches!(e.body, EventBody::Support { ratings, .. } if ratings == want),
            "{scores}"
        );
    }
}

#[test]
fn rated_without_scores_is_valid() {
    let e = ok_owned(support(r#","action":"rated""#));
    assert!(matches!(e.body, EventBody::Support { ratings, .. } if ratings == Ratings::default()));
}

#[test]
fn whole_float_scores_are_integers() {
    let e = ok_owned(support(r#","action":"rated","csat":4.0"#));
    assert!(matches!(e.body, EventBody::Support { ratings, .. } if ratings.csat == Some(4)));
}

#[test]
fn scores_out_of_range_fractional_or_strings_are_invalid() {
    for (extra, code) in [
        (r#","csat":0"#, "out_of_range"),
        (r#","csat":6"#, "out_of_range"),
        (r#","csat":9"#, "out_of_range"),
        (r#","csat":-1"#, "out_of_range"),
        (r#","csat":4.5"#, "out_of_range"),
        (r#","csat":"4""#, "wrong_type"),
        (r#","ces":0"#, "out_of_range"),
        (r#","ces":8"#, "out_of_range"),
        (r#","nps":11"#, "out_of_range"),
        (r#","nps":-1"#, "out_of_range"),
        (r#","nps":1e300"#, "out_of_range"),
        (r#","nps":true"#, "wrong_type"),
    ] {
        let f = fail(&support(&format!(r#","action":"rated"{extra}"#)));
        assert_eq!(f.error.reason(), code, "{extra}: {}", f.error);
    }
    let f = fail(&support(r#","action":"rated","csat":6"#));
    assert!(f.error.to_string().contains("csat"), "{}", f.error);
}

#[test]
fn scores_are_ignored_on_actions_other_than_rated() {
    let e = ok_owned(support(r#","action":"resolved","csat":9,"nps":"x""#));
    assert!(matches!(e.body, EventBody::Support { ratings, .. } if ratings == Ratings::default()));
}

#[test]
fn negative_or_non_numeric_amounts_are_invalid() {
    let dep = |a: &str| {
        format!(r#"{{"event_id":"e","type":"deposit","ts":0,"user_id":"u","amount_usd":{a}}}"#)
    };
    assert_eq!(reason(&dep("-0.01")), "out_of_range");
    assert_eq!(reason(&dep("-5")), "out_of_range");
    assert_eq!(reason(&dep(r#""5""#)), "wrong_type");
    assert_eq!(reason(&dep("[5]")), "wrong_type");
    assert_eq!(reason(&dep("{}")), "wrong_type");
    assert_eq!(reason(&dep("null")), "missing_field");
    let f = fail(&dep("-5"));
    assert_eq!(f.event_type, Some(EventType::Deposit));
    assert!(f.error.to_string().contains("amount_usd"), "{}", f.error);
    let trade = r#"{"event_id":"e","type":"trade","ts":0,"user_id":"u","notional_usd":10}"#;
    assert_eq!(fail(trade).error, DecodeError::MissingField("fee_usd"));
    let trade =
        r#"{"event_id":"e","type":"trade","ts":0,"user_id":"u","notional_usd":10,"fee_usd":-1}"#;
    assert_eq!(reason(trade), "out_of_range");
    let spend = r#"{"event_id":"e","type":"spend","ts":0,"amount_usd":10}"#;
    assert_eq!(fail(spend).error, DecodeError::MissingField("channel"));
}

#[test]
fn envelope_fields_are_required() {
    assert_eq!(
        fail(r#"{"type":"deposit","ts":0,"user_id":"u","amount_usd":1}"#).error,
        DecodeError::MissingField("event_id")
    );
    let f = fail(r#"{"event_id":"e","type":"deposit","ts":0,"amount_usd":1}"#);
    assert_eq!(f.error, DecodeError::MissingField("user_id"));
    assert_eq!(f.error.reason(), "missing_field");
    assert_eq!(
        fail(r#"{"event_id":"e","type":"deposit","ts":0,"user_id":null,"amount_usd":1}"#).error,
        DecodeError::MissingField("user_id")
    );
    assert_eq!(
        fail(r#"{"event_id":"e","type":"deposit","user_id":"u","amount_usd":1}"#).error,
        DecodeError::MissingField("ts")
    );
    let f = fail(r#"{"event_id":"e","ts":0,"user_id":"u"}"#);
    assert_eq!(f.error, DecodeError::MissingField("type"));
    assert_eq!(f.event_type, None);
}

#[test]
fn empty_ids_are_invalid() {
    let f = fail(r#"{"event_id":"","type":"deposit","ts":0,"user_id":"u","amount_usd":1}"#);
    assert_eq!(f.error, DecodeError::EmptyField("event_id"));
    assert_eq!(f.error.reason(), "missing_field");
    let f = fail(r#"{"event_id":"e","type":"deposit","ts":0,"user_id":"","amount_usd":1}"#);
    assert_eq!(f.error, DecodeError::EmptyField("user_id"));
    let f =
        fail(&support(r#","action":"opened","ticket_id":"""#).replace(r#""ticket_id":"T1","#, ""));
    assert_eq!(f.error, DecodeError::EmptyField("ticket_id"));
}

#[test]
fn unknown_and_mistyped_event_types() {
    let f = fail(r#"{"event_id":"e","type":"login","ts":0,"user_id":"u"}"#);
    assert_eq!(f.error, DecodeError::UnknownType("login".into()));
    assert_eq!(f.error.reason(), "unknown_type");
    assert_eq!(f.event_type, None);
    assert_eq!(
        reason(r#"{"event_id":"e","type":"Signup","ts":0,"user_id":"u"}"#),
        "unknown_type"
    );
    assert_eq!(
        reason(r#"{"event_id":"e","type":1,"ts":0,"user_id":"u"}"#),
        "wrong_type"
    );
}

#[test]
fn ids_and_labels_over_128_bytes_are_too_long() {
    let id128 = "a".repeat(MAX_ID_BYTES);
    let id129 = "a".repeat(MAX_ID_BYTES + 1);
    ok(&format!(
        r#"{{"event_id":"{id128}","type":"deposit","ts":0,"user_id":"{id128}","amount_usd":1}}"#
    ));
    let f = fail(&format!(
        r#"{{"event_id":"{id129}","type":"deposit","ts":0,"user_id":"u","amount_usd":1}}"#
    ));
    assert_eq!(
        f.error,
        DecodeError::TooLong {
            field: "event_id",
            len: 129,
            max: 128
        }
    );
    assert_eq!(f.error.reason(), "too_long");
    for field in ["user_id", "channel", "campaign", "referrer_id", "country"] {
        let msg = format!(
            r#"{{"event_id":"e","type":"signup","ts":0,"user_id":"u","{field}":"{id129}"}}"#
        )
        .replacen(r#""user_id":"u","user_id""#, r#""user_id""#, 1);
        let f = fail(&msg);
        assert_eq!(f.error.reason(), "too_long", "{field}");
        assert!(f.error.to_string().contains(field));
    }
    // Bytes, not chars: 43 three-byte chars = 129 bytes.
    let wide = "€".repeat(43);
    assert_eq!(
        reason(
            &support(&format!(r#","action":"opened","ticket_id":"{wide}""#))
                .replace(r#""ticket_id":"T1","#, "")
        ),
        "too_long"
    );
    let spend =
        format!(r#"{{"event_id":"e","type":"spend","ts":0,"channel":"{id129}","amount_usd":1}}"#);
    assert_eq!(reason(&spend), "too_long");
}

#[test]
fn timestamps_as_strings_or_integer_ms() {
    let dep = |ts: &str| {
        format!(r#"{{"event_id":"e","type":"deposit","ts":{ts},"user_id":"u","amount_usd":1}}"#)
    };
    assert_eq!(
        ok(&dep(r#""2026-01-05T11:00:00.5+01:00""#)).ts,
        JAN5_10H + 500
    );
    assert_eq!(ok(&dep("1767607200000")).ts, JAN5_10H);
    assert_eq!(ok(&dep("1767607200000.0")).ts, JAN5_10H);
    assert_eq!(ok(&dep("0")).ts, 0);
    for bad in [
        r#""yesterday""#,
        r#""2026-02-30T00:00:00Z""#,
        r#""2026-01-05T10:00:00""#,
        r#""1969-12-31T23:59:59Z""#,
        "-1",
        "1.5",
        "1e300",
        "18446744073709551615",
        "253402300800000",
    ] {
        let f = fail(&dep(bad));
        assert_eq!(f.error.reason(), "bad_timestamp", "{bad}: {}", f.error);
        assert_eq!(f.event_type, Some(EventType::Deposit));
    }
    assert_eq!(reason(&dep("true")), "wrong_type");
    assert_eq!(reason(&dep("{}")), "wrong_type");
}

#[test]
fn kafka_timestamp_fills_a_missing_ts_only_when_enabled() {
    let msg = br#"{"event_id":"e","type":"deposit","user_id":"u","amount_usd":1}"#;
    let with = Decoder::new(&Mapping::default(), 1024, true);
    assert_eq!(with.decode(msg, Some(JAN5_10H)).unwrap().ts, JAN5_10H);
    assert_eq!(
        with.decode(msg, None).unwrap_err().error,
        DecodeError::MissingField("ts")
    );
    assert_eq!(
        decoder().decode(msg, Some(JAN5_10H)).unwrap_err().error,
        DecodeError::MissingField("ts")
    );
    // A present but bad ts is not replaced.
    let bad = br#"{"event_id":"e","type":"deposit","ts":"x","user_id":"u","amount_usd":1}"#;
    assert_eq!(
        with.decode(bad, Some(JAN5_10H)).unwrap_err().error.reason(),
        "bad_timestamp"
    );
}

#[test]
fn not_json_and_not_objects() {
    for msg in [
        "",
        "   ",
        "{",
        "not json",
        r#"{"event_id":"e",}"#,
        "{} {}",
        "\u{feff}{}",
    ] {
        assert_eq!(fail(msg).error.reason(), "not_json", "{msg:?}");
    }
    for msg in ["[]", r#"["e","signup",0,"u"]"#, "42", r#""str""#, "null"] {
        assert_eq!(fail(msg).error, DecodeError::NotObject, "{msg:?}");
    }
    assert!(matches!(fail("{").error, DecodeError::NotJson(_)));
    let invalid_utf8 = b"{\"event_id\":\"\xff\",\"type\":\"signup\"}";
    assert_eq!(
        decoder()
            .decode(invalid_utf8, None)
            .unwrap_err()
            .error
            .reason(),
        "not_json"
    );
}

#[test]
fn a_field_given_twice_keeps_its_last_value() {
    let msg = r#"{"event_id":"e","type":"deposit","ts":0,"ts":1,"user_id":"u","amount_usd":1}"#;
    assert_eq!(ok(msg).ts, 1);
}

#[test]
fn messages_over_the_size_limit_are_rejected_before_parsing() {
    let d = Decoder::new(&Mapping::default(), 16, false);
    let f = d.decode(b"this is not even json", None).unwrap_err();
    assert_eq!(f.error, DecodeError::TooLarge { size: 21, max: 16 });
    assert_eq!(f.error.reason(), "too_large");
    assert_eq!(f.event_type, None);
    let msg = br#"{"a":1234567890}"#;
    assert_eq!(msg.len(), 16);
    assert_eq!(
        d.decode(msg, None).unwrap_err().error.reason(),
        "missing_field"
    );
}

#[test]
fn errors_are_reported_in_a_fixed_field_order() {
    // Bad type wins over everything; then event_id, ts, user_id, body.
    let msg = r#"{"type":"deposit","ts":"x","amount_usd":-1}"#;
    assert_eq!(fail(msg).error, DecodeError::MissingField("event_id"));
    let msg = r#"{"event_id":"e","type":"deposit","ts":"x","amount_usd":-1}"#;
    assert_eq!(reason(msg), "bad_timestamp");
}

#[test]
fn decoder_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Decoder>();
}

#[test]
fn display_names_the_field() {
    let e = DecodeError::OutOfRange {
        field: "csat",
        detail: "9 is not a whole number in 1..=5".into(),
    };
    assert_eq!(
        e.to_string(),
        "field `csat` is out of range: 9 is not a whole number in 1..=5"
    );
    assert_eq!(
        DecodeError::MissingField("user_id").to_string(),
        "required field `user_id` is missing"
    );
}

#[test]
fn never_panics_on_truncations_of_valid_messages() {
    let msg = r#"{"event_id":"e1","type":"support","ts":"2026-01-05T10:00:00.123+01:00","user_id":"u1","ticket_id":"T1","action":"rated","csat":5,"ces":7,"nps":10,"x":[{"y":null}]}"#;
    let d = decoder();
    ok(msg);
    for end in 0..msg.len() {
        let _ = d.decode(&msg.as_bytes()[..end], None);
    }
    for i in 0..msg.len() {
        let mut b = msg.as_bytes().to_vec();
        for byte in [b'"', b'{', b'}', b'-', b'9', 0xff, b' '] {
            b[i] = byte;
            let _ = d.decode(&b, Some(-1));
        }
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_obj = format!(r#"{{"x":{deep}}}"#);
    let _ = Decoder::new(&Mapping::default(), 1 << 20, false).decode(deep_obj.as_bytes(), None);
}
