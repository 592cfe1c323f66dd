use super::*;
use crate::config::Config;
use crate::event::decode::Decoder;
use crate::event::{EventBody, Priority, Ratings, ReferralAction, SupportAction};

const SEGMENT: &str = include_str!("../../../config/segment.toml");
const CLOUDEVENTS: &str = include_str!("../../../config/cloudevents.toml");

/// 2026-01-05T10:00:00Z (`date -u -d 2026-01-05T10:00:00Z +%s`).
const JAN5_10H: Millis = 1_767_607_200_000;

fn config(text: &str) -> Config {
    match Config::from_toml_str(text, "test.toml", std::iter::empty()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn decoder(text: &str) -> Decoder {
    Decoder::new(&config(text).mapping, 64 * 1024, false)
}

fn config_error(text: &str) -> (String, String) {
    match Config::from_toml_str(text, "test.toml", std::iter::empty()) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => (e.key, e.message),
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/mapping/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The event the mapping in `config_text` makes of the fixture `name`.
fn mapped_fixture(config_text: &str, name: &str) -> Event<'static> {
    let bytes = fixture(name);
    match decoder(config_text).decode(&bytes, None) {
        Ok(e) => into_owned(e),
        Err(f) => panic!("{name}: {}", f.error),
    }
}

fn cow(s: &str) -> Cow<'static, str> {
    Cow::Owned(s.to_owned())
}

#[test]
fn empty_mapping_section_is_the_canonical_schema() {
    assert!(MappingConfig::default().is_canonical());
    assert!(config("[mapping]\n").mapping.is_canonical());
    assert!(config("").mapping.is_canonical());
    assert!(MappingConfig::default().compile().unwrap().is_canonical());
}

#[test]
fn shipped_configs_are_valid_and_mapped() {
    assert!(!config(SEGMENT).mapping.is_canonical());
    assert!(!config(CLOUDEVENTS).mapping.is_canonical());
}

#[test]
fn segment_signed_up_maps_campaign_source_to_channel() {
    let e = mapped_fixture(SEGMENT, "segment_signed_up.json");
    assert_eq!(
        e,
        Event {
            event_id: cow("ajs-next-1767607200250-9f1c2a7e"),
            ts: JAN5_10H + 250,
            user_id: Some(cow("u_1001")),
            body: EventBody::Signup {
                channel: Some(cow("paid_search")),
                campaign: Some(cow("winter_promo")),
                referrer_id: Some(cow("u_0042")),
                country: Some(cow("DE")),
            },
        }
    );
}

#[test]
fn segment_order_completed_is_a_trade() {
    let e = mapped_fixture(SEGMENT, "segment_order_completed.json");
    assert_eq!(
        e,
        Event {
            event_id: cow("ajs-next-1767610800000-1b2c"),
            ts: JAN5_10H + 3_600_000,
            user_id: Some(cow("u_1001")),
            body: EventBody::Trade {
                notional_usd: 2500.0,
                fee_usd: 2.5
            },
        }
    );
}

#[test]
fn segment_ticket_opened_gets_its_fixed_action() {
    let e = mapped_fixture(SEGMENT, "segment_ticket_opened.json");
    assert_eq!(
        e,
        Event {
            event_id: cow("ajs-next-1767614400000-77aa"),
            ts: JAN5_10H + 7_200_000,
            user_id: Some(cow("u_1001")),
            body: EventBody::Support {
                ticket_id: cow("T-77"),
                action: SupportAction::Opened,
                priority: Some(Priority::Urgent),
                ratings: Ratings::default(),
            },
        }
    );
}

#[test]
fn segment_spend_reads_channel_from_its_type_override() {
    let d = decoder(SEGMENT);
    let msg = br#"{"type":"track","event":"Marketing Spend Booked","messageId":"m-9",
        "timestamp":"2026-01-05T00:00:00Z","userId":"finance-bot",
        "context":{"campaign":{"source":"ignored"}},
        "properties":{"channel":"paid_search","amount":1200.5}}"#;
    let e = d.decode(msg, None).unwrap();
    assert_eq!(
        e.body,
        EventBody::Spend {
            channel: cow("paid_search"),
            amount_usd: 1200.5
        }
    );
}

#[test]
fn cloudevents_ticket_opened_uses_subject_as_user() {
    let e = mapped_fixture(CLOUDEVENTS, "cloudevents_ticket_opened.json");
    assert_eq!(
        e,
        Event {
            event_id: cow("b1d7c6f0-6a8e-4f51-9d0e-2f6c1e0a7b31"),
            ts: JAN5_10H,
            user_id: Some(cow("u_1001")),
            body: EventBody::Support {
                ticket_id: cow("T-78"),
                action: SupportAction::Opened,
                priority: Some(Priority::High),
                ratings: Ratings::default(),
            },
        }
    );
}

#[test]
fn cloudevents_rated_carries_scores() {
    let e = mapped_fixture(CLOUDEVENTS, "cloudevents_ticket_rated.json");
    assert_eq!(e.ts, JAN5_10H + 5_400_123);
    assert_eq!(
        e.body,
        EventBody::Support {
            ticket_id: cow("T-78"),
            action: SupportAction::Rated,
            priority: None,
            ratings: Ratings {
                csat: Some(2),
                ces: Some(3),
                nps: Some(6)
            },
        }
    );
}

#[test]
fn cloudevents_deposit_and_referral_reward() {
    let e = mapped_fixture(CLOUDEVENTS, "cloudevents_deposit_completed.json");
    let d = decoder(CLOUDEVENTS);
    assert_eq!(e.user_id, Some(cow("u_2002")));
    assert_eq!(e.body, EventBody::Deposit { amount_usd: 500.0 });

    let msg = br#"{"specversion":"1.0","id":"r-1","source":"/referrals",
        "type":"com.example.exchange.referral.rewarded","time":"2026-01-05T10:00:00+01:00",
        "subject":"u_0042","data":{"reward_usd":25}}"#;
    let e = d.decode(msg, None).unwrap();
    assert_eq!(e.ts, JAN5_10H - 3_600_000);
    assert_eq!(
        e.body,
        EventBody::Referral {
            action: ReferralAction::Rewarded { reward_usd: 25.0 }
        }
    );
}

#[test]
fn mapped_amounts_have_the_same_bound() {
    let d = decoder(CLOUDEVENTS);
    let deposit = |amount: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"x-1","source":"/s","type":"com.example.exchange.deposit.completed",
            "time":"2026-01-05T10:00:00Z","subject":"u_1","data":{{"amount_usd":{amount}}}}}"#
        )
    };
    let decode = |m: String| d.decode(m.as_bytes(), None).map(into_owned);
    assert_eq!(
        decode(deposit("1e12")).map(|e| e.body),
        Ok(EventBody::Deposit { amount_usd: 1e12 })
    );
    for over in ["1e308", "1000000000001"] {
        let f = decode(deposit(over)).unwrap_err();
        assert_eq!(f.error.reason(), "out_of_range", "{over}");
    }
    // A fixed amount in a type rule is checked against the configured bound.
    let rule = |bound: &str, amount: &str| {
        format!(
            "[engine]\nmax_amount_usd = {bound}\n[mapping.fields]\nevent_id = \"/id\"\ntype = \"/t\"\n\
             [mapping.types]\nx = {{ type = \"deposit\", set = {{ amount_usd = {amount} }} }}\n"
        )
    };
    config(&rule("1e12", "1e12"));
    for (bound, amount) in [
        ("1e12", "1e13"),
        ("100.0", "101"),
        ("1e12", "inf"),
        ("1e12", "nan"),
    ] {
        let (k, m) = config_error(&rule(bound, amount));
        assert_eq!(k, "mapping.types.x.set.amount_usd", "{bound} {amount}");
        assert!(m.contains("out of range"), "{m}");
    }
}

#[test]
fn mapped_and_canonical_inputs_give_the_same_event() {
    let mapped = decoder(CLOUDEVENTS);
    let canonical = decoder("");
    let bytes = fixture("cloudevents_ticket_rated.json");
    let canonical_msg = br#"{"event_id":"c2e8d7a1-7b9f-4a62-8e1f-3a7d2f1b8c42","type":"support",
        "ts":"2026-01-05T11:30:00.123Z","user_id":"u_1001","ticket_id":"T-78",
        "action":"rated","csat":2,"ces":3,"nps":6}"#;
    assert_eq!(
        mapped.decode(&bytes, None).unwrap(),
        canonical.decode(canonical_msg, None).unwrap()
    );
}

#[test]
fn mapped_events_get_the_canonical_validation() {
    let d = decoder(CLOUDEVENTS);
    let msg = |ty: &str, data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"x-1","source":"/s","type":"{ty}",
            "time":"2026-01-05T10:00:00Z","subject":"u_1","data":{data}}}"#
        )
    };
    let reason = |m: String| d.decode(m.as_bytes(), None).unwrap_err().error.reason();
    assert_eq!(
        reason(msg(
            "com.example.ticket.rated",
            r#"{"ticket_id":"T","csat":9}"#
        )),
        "out_of_range"
    );
    assert_eq!(
        reason(msg(
            "com.example.exchange.deposit.completed",
            r#"{"amount_usd":-1}"#
        )),
        "out_of_range"
    );
    assert_eq!(
        reason(msg(
            "com.example.exchange.deposit.completed",
            r#"{"amount_usd":"5"}"#
        )),
        "wrong_type"
    );
    assert_eq!(
        reason(msg("com.example.ticket.opened", r#"{"priority":"high"}"#)),
        "missing_field"
    );
    assert_eq!(reason(msg("com.example.nope", "{}")), "unknown_type");
    assert_eq!(reason("[1]".into()), "not_json");
    assert_eq!(reason("{".into()), "not_json");
    let no_time = br#"{"id":"x","type":"com.example.exchange.user.signed_up","subject":"u"}"#;
    assert_eq!(
        d.decode(no_time, None).unwrap_err().error,
        DecodeError::MissingField("ts")
    );
    let with_fallback = Decoder::new(&config(CLOUDEVENTS).mapping, 1024, true);
    assert_eq!(
        with_fallback.decode(no_time, Some(JAN5_10H)).unwrap().ts,
        JAN5_10H
    );
}

#[test]
fn unknown_type_failure_has_no_event_type_but_invalid_fields_do() {
    let d = decoder(SEGMENT);
    let f = d
        .decode(br#"{"event":"Page Viewed","messageId":"m"}"#, None)
        .unwrap_err();
    assert_eq!(f.error, DecodeError::UnknownType("Page Viewed".into()));
    assert_eq!(f.event_type, None);
    let f = d
        .decode(br#"{"event":"Order Completed","messageId":"m"}"#, None)
        .unwrap_err();
    assert_eq!(f.event_type, Some(EventType::Trade));
}

#[test]
fn without_a_types_table_type_values_are_canonical_names() {
    let d = decoder(
        r#"
        [mapping]
        ts_format = "epoch_s"
        [mapping.fields]
        event_id = "/meta/id"
        type = "/meta/kind"
        ts = "/meta/at"
        user_id = "/who/0"
        amount_usd = "/body/usd"
        "#,
    );
    let e = d
        .decode(
            br#"{"meta":{"id":"d1","kind":"deposit","at":1767607200.5},"who":["u1"],"body":{"usd":10}}"#,
            None,
        )
        .unwrap();
    assert_eq!(e.ts, JAN5_10H + 500);
    assert_eq!(e.user_id, Some(cow("u1")));
    assert_eq!(e.body, EventBody::Deposit { amount_usd: 10.0 });
    let f = d
        .decode(br#"{"meta":{"id":"d1","kind":"Deposit","at":1}}"#, None)
        .unwrap_err();
    assert_eq!(f.error.reason(), "unknown_type");
}

#[test]
fn ts_formats_are_enforced() {
    let base = r#"
        [mapping.fields]
        event_id = "/id"
        type = "/t"
        ts = "/at"
        user_id = "/u"
        amount_usd = "/a"
        "#;
    let with = |fmt: &str| decoder(&format!("[mapping]\nts_format = \"{fmt}\"\n{base}"));
    let msg = |at: &str| format!(r#"{{"id":"1","t":"deposit","u":"u","a":1,"at":{at}}}"#);
    let ts = |d: &Decoder, at: &str| d.decode(msg(at).as_bytes(), None).map(|e| e.ts);
    let reason = |d: &Decoder, at: &str| ts(d, at).unwrap_err().error.reason();

    let ms = with("epoch_ms");
    assert_eq!(ts(&ms, "1767607200000"), Ok(JAN5_10H));
    assert_eq!(reason(&ms, "\"2026-01-05T10:00:00Z\""), "wrong_type");
    assert_eq!(reason(&ms, "1.5"), "bad_timestamp");

    let s = with("epoch_s");
    assert_eq!(ts(&s, "1767607200"), Ok(JAN5_10H));
    assert_eq!(ts(&s, "1767607200.123"), Ok(JAN5_10H + 123));
    assert_eq!(reason(&s, "-1"), "bad_timestamp");
    assert_eq!(reason(&s, "1e300"), "bad_timestamp");

    let rfc = with("rfc3339");
    assert_eq!(ts(&rfc, "\"2026-01-05T10:00:00Z\""), Ok(JAN5_10H));
    assert_eq!(reason(&rfc, "1767607200000"), "wrong_type");

    let auto = with("auto");
    assert_eq!(ts(&auto, "1767607200000"), Ok(JAN5_10H));
    assert_eq!(ts(&auto, "\"2026-01-05T10:00:00Z\""), Ok(JAN5_10H));
}

#[test]
fn json_pointers_follow_rfc_6901() {
    let doc: Value =
        serde_json::from_str(r#"{"a/b":{"m~n":1},"arr":[10,20],"":{"":2},"01":3}"#).unwrap();
    let get = |p: &str| Pointer::parse(p).unwrap().resolve(&doc).cloned();
    assert_eq!(get("/a~1b/m~0n"), Some(Value::from(1)));
    assert_eq!(get("/arr/1"), Some(Value::from(20)));
    assert_eq!(get("/arr/01"), None);
    assert_eq!(get("/arr/-"), None);
    assert_eq!(get("/arr/2"), None);
    assert_eq!(get("//"), Some(Value::from(2)));
    assert_eq!(get("/01"), Some(Value::from(3)));
    assert_eq!(get("/arr/0/x"), None);
    assert!(Pointer::parse("").is_err());
    assert!(Pointer::parse("a/b").is_err());
    assert!(Pointer::parse("/a~2").is_err());
    assert!(Pointer::parse("/a~").is_err());
}

#[test]
fn config_errors_name_the_key() {
    let fields = "[mapping.fields]\nevent_id = \"/id\"\ntype = \"/t\"\n";
    let cases: &[(&str, &str, &str)] = &[
        (
            "[mapping.fields]\nevent_id = \"id\"\ntype = \"/t\"\n",
            "mapping.fields.event_id",
            "must start with `/`",
        ),
        (
            "[mapping.fields]\nevent_id = \"/a~x\"\ntype = \"/t\"\n",
            "mapping.fields.event_id",
            "`~` must be followed",
        ),
        (
            "[mapping.fields]\nevent_id = \"/id\"\ntype = \"/t\"\namount = \"/a\"\n",
            "mapping.fields.amount",
            "unknown canonical field `amount`",
        ),
        (
            "[mapping.fields]\ntype = \"/t\"\n",
            "mapping.fields.event_id",
            "required",
        ),
        (
            "[mapping]\nts_format = \"epoch_us\"\n",
            "mapping.ts_format",
            "unknown format",
        ),
        (
            "[mapping.types]\n\"Signed Up\" = \"signup\"\n",
            "mapping.fields.event_id",
            "required",
        ),
    ];
    for (text, key, msg) in cases {
        let (k, m) = config_error(text);
        assert_eq!(k, *key, "{text}");
        assert!(m.contains(msg), "{text}: {m}");
    }
    let typed: &[(&str, &str, &str)] = &[
        (
            "\"Signed Up\" = \"sign_up\"",
            "mapping.types.\"Signed Up\".type",
            "unknown canonical type `sign_up`",
        ),
        (
            "x = { type = \"deposit\", set = { amount = 1 } }",
            "mapping.types.x.set.amount",
            "unknown canonical field",
        ),
        (
            "x = { type = \"deposit\", set = { channel = \"a\" } }",
            "mapping.types.x.set.channel",
            "not a field of `deposit`",
        ),
        (
            "x = { type = \"support\", set = { action = \"opend\" } }",
            "mapping.types.x.set.action",
            "unknown value `opend`",
        ),
        (
            "x = { type = \"referral\", set = { action = \"opened\" } }",
            "mapping.types.x.set.action",
            "unknown value `opened`",
        ),
        (
            "x = { type = \"support\", set = { csat = 9 } }",
            "mapping.types.x.set.csat",
            "out of range",
        ),
        (
            "x = { type = \"support\", set = { ticket_id = 9 } }",
            "mapping.types.x.set.ticket_id",
            "must be a string",
        ),
        (
            "x = { type = \"support\", set = { user_id = \"u\" } }",
            "mapping.types.x.set.user_id",
            "give it a pointer",
        ),
        (
            "x = { type = \"spend\", fields = { channel = \"p\" } }",
            "mapping.types.x.fields.channel",
            "must start with `/`",
        ),
        (
            "x = { type = \"spend\", fields = { type = \"/p\" } }",
            "mapping.types.x.fields.type",
            "cannot be overridden",
        ),
        (
            "x = { type = \"spend\", sett = { } }",
            "mapping.types.x.sett",
            "unknown field",
        ),
    ];
    for (rule, key, msg) in typed {
        let text = format!("{fields}[mapping.types]\n{rule}\n");
        let (k, m) = config_error(&text);
        assert_eq!(k, *key, "{text}");
        assert!(m.contains(msg), "{text}: {m}");
    }
}

#[test]
fn compile_names_the_key_of_what_it_refuses() {
    let fields = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let no_type = MappingConfig {
        fields: fields(&[("event_id", "/id")]),
        ..MappingConfig::default()
    };
    let (key, msg) = no_type.compile().unwrap_err();
    assert_eq!(key, "fields.type");
    assert!(msg.contains("required"), "{msg}");
    let empty_source = MappingConfig {
        fields: fields(&[("event_id", "/id"), ("type", "/t")]),
        types: BTreeMap::from([(String::new(), TypeRule::default())]),
        ..MappingConfig::default()
    };
    assert_eq!(empty_source.compile().unwrap_err().0, "types.\"\"");
    let ok = MappingConfig {
        types: BTreeMap::new(),
        ..empty_source
    };
    assert!(!ok.compile().unwrap().is_canonical());
}

#[test]
fn fixed_values_win_over_the_message() {
    let d = decoder(
        r#"
        [mapping.fields]
        event_id = "/id"
        type = "/t"
        ts = "/ts"
        user_id = "/u"
        ticket_id = "/ticket"
        action = "/action"
        [mapping.types]
        survey = { type = "support", set = { action = "rated", ticket_id = "survey" } }
        "#,
    );
    let e = d
        .decode(
            br#"{"id":"1","t":"survey","ts":0,"u":"u","ticket":"T-1","action":"opened"}"#,
            None,
        )
        .unwrap();
    assert_eq!(
        e.body,
        EventBody::Support {
            ticket_id: cow("survey"),
            action: SupportAction::Rated,
            priority: None,
            ratings: Ratings::default(),
        }
    );
}
