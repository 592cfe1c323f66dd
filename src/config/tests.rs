use super::*;
use std::collections::BTreeMap;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn shipped_config_is_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cxpulse.toml");
    let c = Config::load(Some(&path), env(&[])).expect("shipped config loads");
    let d = Config::default();
    assert_eq!(c.engine.windows, d.engine.windows);
    assert_eq!(c.engine.allowed_lateness, Dur(30_000));
    assert_eq!(c.engine.max_amount_usd, d.engine.max_amount_usd);
    assert_eq!(c.engine.clock_tolerance(), Dur(5_000));
    assert_eq!(c.sla.targets.urgent.first_response, Dur(15 * 60_000));
    assert_eq!(c.sla.targets.low.resolution, Dur(48 * 3_600_000));
    assert_eq!(c.churn.inactivity, Dur(30 * 86_400_000));
    assert_eq!(c.kafka.brokers, d.kafka.brokers);
    assert_eq!(c.checkpoint.dir, "");
    assert_eq!(c.checkpoint.interval, d.checkpoint.interval);
    assert_eq!(c.checkpoint.keep, d.checkpoint.keep);
    assert_eq!(c.checkpoint.on_corrupt, d.checkpoint.on_corrupt);
}

#[test]
fn checkpoint_section_parses_and_is_validated() {
    let c = Config::from_toml_str(
        "[checkpoint]\ndir = \"/var/lib/cxpulse\"\ninterval = \"200ms\"\nkeep = 5\non_corrupt = \"fail\"\n",
        "t.toml",
        env(&[]),
    )
    .expect("valid");
    assert_eq!(c.checkpoint.dir, "/var/lib/cxpulse");
    assert_eq!(c.checkpoint.interval, Dur(200));
    assert_eq!(c.checkpoint.keep, 5);
    assert_eq!(c.checkpoint.on_corrupt, OnCorrupt::Fail);
    for (text, key) in [
        (
            "[checkpoint]\non_corrupt = \"ignore\"\n",
            "checkpoint.on_corrupt",
        ),
        ("[checkpoint]\nkeep = 0\n", "checkpoint.keep"),
        ("[checkpoint]\ninterval = \"0s\"\n", "checkpoint.interval"),
        ("[checkpoint]\nevery = \"1s\"\n", "checkpoint.every"),
    ] {
        let e = Config::from_toml_str(text, "t.toml", env(&[])).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
    }
}

#[test]
fn checkpoint_store_defaults_to_kafka_and_a_set_dir_alone_means_dir() {
    let c = Config::from_toml_str("", "t.toml", env(&[])).expect("defaults");
    assert_eq!(c.checkpoint.store, StoreKind::Kafka);
    assert_eq!(
        c.checkpoint.state_topic(&c.kafka.group_id),
        "cxpulse-cxpulse-state"
    );
    assert_eq!(c.checkpoint.topic_partitions, 6);
    assert_eq!(c.checkpoint.topic_replication, -1);
    assert_eq!(c.checkpoint.chunk_bytes, 524_288);
    // Before `store` existed, a set `dir` turned checkpoints on: still so.
    let c = Config::from_toml_str("[checkpoint]\ndir = \"/d\"\n", "t.toml", env(&[])).unwrap();
    assert_eq!(c.checkpoint.store, StoreKind::Dir);
    let c =
        Config::from_toml_str("", "t.toml", env(&[("CXPULSE__CHECKPOINT__DIR", "/d")])).unwrap();
    assert_eq!(c.checkpoint.store, StoreKind::Dir);
    let c = Config::from_toml_str(
        "[kafka]\ngroup_id = \"g1\"\n[checkpoint]\nstore = \"off\"\n",
        "t.toml",
        env(&[]),
    )
    .unwrap();
    assert_eq!(c.checkpoint.store, StoreKind::Off);
    let c = Config::from_toml_str(
        "[checkpoint]\nstore = \"kafka\"\ntopic = \"st\"\ntopic_partitions = 3\ntopic_replication = 2\nchunk_bytes = 2048\n",
        "t.toml",
        env(&[]),
    )
    .unwrap();
    assert_eq!(c.checkpoint.state_topic("ignored"), "st");
    assert_eq!(c.checkpoint.topic_partitions, 3);
    assert_eq!(c.checkpoint.topic_replication, 2);
    assert_eq!(c.checkpoint.chunk_bytes, 2048);
}

#[test]
fn checkpoint_store_keys_are_validated_naming_key_and_file() {
    for (text, key) in [
        ("[checkpoint]\nstore = \"s3\"\n", "checkpoint.store"),
        ("[checkpoint]\nstore = \"dir\"\n", "checkpoint.dir"),
        (
            "[checkpoint]\nstore = \"kafka\"\ndir = \"/d\"\n",
            "checkpoint.dir",
        ),
        (
            "[checkpoint]\nstore = \"off\"\ndir = \"/d\"\n",
            "checkpoint.dir",
        ),
        (
            "[checkpoint]\ntopic_partitions = 0\n",
            "checkpoint.topic_partitions",
        ),
        (
            "[checkpoint]\ntopic_replication = 0\n",
            "checkpoint.topic_replication",
        ),
        (
            "[checkpoint]\ntopic_replication = -2\n",
            "checkpoint.topic_replication",
        ),
        (
            "[checkpoint]\nchunk_bytes = 100\n",
            "checkpoint.chunk_bytes",
        ),
        (
            "[checkpoint]\nchunk_bytes = 2000000\n",
            "checkpoint.chunk_bytes",
        ),
        ("[checkpoint]\ntopic = \"a/b\"\n", "checkpoint.topic"),
        ("[kafka]\ngroup_id = \"my group\"\n", "checkpoint.topic"),
    ] {
        let e = Config::from_toml_str(text, "t.toml", env(&[])).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
        assert_eq!(e.file, "t.toml", "{text}: {e}");
    }
    // A group id that is no topic name is fine when the topic is given, or
    // when state is not kept in Kafka.
    for text in [
        "[kafka]\ngroup_id = \"my group\"\n[checkpoint]\ntopic = \"state\"\n",
        "[kafka]\ngroup_id = \"my group\"\n[checkpoint]\nstore = \"off\"\n",
    ] {
        Config::from_toml_str(text, "t.toml", env(&[])).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

#[test]
fn environment_overrides_keys() {
    let c = Config::from_toml_str(
        "[kafka]\nbrokers = \"a:1\"\n",
        "x.toml",
        env(&[
            ("CXPULSE__KAFKA__BROKERS", "b:2"),
            ("CXPULSE__ENGINE__WINDOWS", "[\"1h\", \"2h\"]"),
            ("CXPULSE__ENGINE__MAX_CHANNELS", "3"),
            ("OTHER", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(c.kafka.brokers, "b:2");
    assert_eq!(c.engine.windows, vec!["1h", "2h"]);
    assert_eq!(c.engine.max_channels, 3);
}

#[test]
fn errors_name_the_key_and_the_file() {
    let e = Config::from_toml_str("[engine]\nbukcet = \"1m\"\n", "my.toml", env(&[])).unwrap_err();
    assert_eq!(e.file, "my.toml");
    assert_eq!(e.key, "engine.bukcet");
    let e = Config::from_toml_str("[engine]\nbucket = \"1 minute\"\n", "my.toml", env(&[]))
        .unwrap_err();
    assert_eq!(e.key, "engine.bucket");
    let e =
        Config::from_toml_str("[engine]\nwindows = [\"90s\"]\n", "my.toml", env(&[])).unwrap_err();
    assert_eq!(e.key, "engine.windows");
    assert!(e.to_string().contains("my.toml"), "{e}");
    let e = Config::from_toml_str("[sla]\nat_risk_share = 2.0\n", "my.toml", env(&[])).unwrap_err();
    assert_eq!(e.key, "sla.at_risk_share");
}

/// The leak of issue 11: a numeric `sasl.password` from the environment
/// is a TOML integer; it used to be quoted in the type error.
#[test]
fn a_numeric_password_from_the_environment_is_taken_as_text() {
    let c = Config::from_toml_str(
        "",
        "my.toml",
        env(&[
            ("CXPULSE__KAFKA__LIBRDKAFKA__sasl.password", "31415926"),
            ("CXPULSE__KAFKA__LIBRDKAFKA__session.timeout.ms", "6000"),
            (
                "CXPULSE__KAFKA__LIBRDKAFKA__enable.ssl.certificate.verification",
                "true",
            ),
        ]),
    )
    .expect("numbers and booleans are accepted as librdkafka values");
    assert_eq!(c.kafka.librdkafka["sasl.password"], "31415926");
    assert_eq!(c.kafka.librdkafka["session.timeout.ms"], "6000");
    assert_eq!(
        c.kafka.librdkafka["enable.ssl.certificate.verification"],
        "true"
    );
    let debug = format!("{c:?}");
    assert!(!debug.contains("31415926"), "{debug}");
    assert!(
        debug.contains("\"sasl.password\": \"<redacted>\""),
        "{debug}"
    );
    // The shell-friendly spelling of the same key.
    let c = Config::from_toml_str(
        "",
        "my.toml",
        env(&[
            ("CXPULSE__KAFKA__LIBRDKAFKA__SASL_PASSWORD", "27182818"),
            (
                "CXPULSE__KAFKA__LIBRDKAFKA__CONSUMER_FETCH_MAX_BYTES",
                "1000",
            ),
            ("CXPULSE__KAFKA__LIBRDKAFKA__log_level", "6"),
        ]),
    )
    .expect("valid");
    assert_eq!(c.kafka.librdkafka["log_level"], "6");
    assert_eq!(c.kafka.librdkafka["sasl.password"], "27182818");
    assert_eq!(c.kafka.librdkafka["consumer.fetch.max.bytes"], "1000");
    // Values that TOML would read otherwise stay as written.
    for v in ["3.10", "0x1F", "1_000", "+5", "\"q\"", "1979-05-27", "[1]"] {
        let c = Config::from_toml_str(
            "",
            "my.toml",
            env(&[("CXPULSE__KAFKA__LIBRDKAFKA__SASL_PASSWORD", v)]),
        )
        .unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(c.kafka.librdkafka["sasl.password"], v);
    }
}

#[test]
fn errors_name_a_secret_key_and_the_file_but_never_its_value() {
    // (file text, environment, the key named, the secret not shown)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        // An array where a string is expected.
        (
            "[kafka.librdkafka]\n\"sasl.password\" = [31415926]\n",
            &[],
            "kafka.librdkafka.sasl.password",
            "31415926",
        ),
        // A table, from the file.
        (
            "[kafka.librdkafka]\n\"ssl.key.password\" = { v = \"hunter2hunter2\" }\n",
            &[],
            "kafka.librdkafka.ssl.key.password",
            "hunter2hunter2",
        ),
        // A secret-looking key where there is no such key, numeric.
        (
            "[kafka]\napi_token = 27182818\n",
            &[],
            "kafka.api_token",
            "27182818",
        ),
        // A secret next to an unrelated error: scrubbed from every message.
        (
            "[engine]\nwindows = [\"1h\", \"s3cr3tp4ss\"]\n",
            &[("CXPULSE__KAFKA__LIBRDKAFKA__sasl.password", "s3cr3tp4ss")],
            "engine.windows",
            "s3cr3tp4ss",
        ),
    ];
    for (text, vars, key, secret) in cases {
        let e = Config::from_toml_str(text, "my.toml", env(vars)).unwrap_err();
        let shown = e.to_string();
        assert_eq!(e.key, *key, "{shown}");
        assert!(shown.contains("my.toml"), "{shown}");
        assert!(shown.contains(key), "{shown}");
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        assert!(!format!("{e:?}").contains(secret), "{secret} leaked: {e:?}");
    }
    // The message still says what is wrong.
    let e = Config::from_toml_str(
        "[kafka.librdkafka]\n\"sasl.password\" = [1]\n",
        "my.toml",
        env(&[]),
    )
    .unwrap_err();
    assert!(e.message.contains("an array"), "{e}");
}

#[test]
fn secret_keys_and_scrubbing() {
    for key in [
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
        "SASL.USERNAME",
        "ssl.key.pem",
        "kafka.api_token",
    ] {
        assert!(is_secret_key(key), "{key}");
    }
    for key in ["security.protocol", "sasl.mechanisms", "ssl.ca.location"] {
        assert!(!is_secret_key(key), "{key}");
    }
    let s = Secrets::in_pairs(&BTreeMap::from([
        ("sasl.password".to_string(), "abc".to_string()),
        ("ssl.key.password".to_string(), "abcdef".to_string()),
        ("security.protocol".to_string(), "SSL".to_string()),
    ]));
    assert_eq!(
        s.scrub("p=abcdef q=abc SSL"),
        "p=<redacted> q=<redacted> SSL"
    );
    // Arrays and tables under a secret-looking key give all their scalars.
    let t: toml::Table = "[a]\napi_token = [\"x1\", { y = 22 }]\nother = 333\n"
        .parse()
        .expect("toml");
    assert_eq!(
        Secrets::in_table(&t).scrub("x1 22 333"),
        "<redacted> <redacted> 333"
    );
}

#[test]
fn a_bad_mapping_is_refused_naming_the_key_and_the_file() {
    let load = |text: &str, pairs: &[(&str, &str)]| {
        Config::from_toml_str(text, "my.toml", env(pairs)).map(|c| c.mapping)
    };
    let e = load("[mapping.fields]\nevent_id = \"id\"\ntype = \"/t\"\n", &[]).unwrap_err();
    assert_eq!(
        (e.file.as_str(), e.key.as_str()),
        ("my.toml", "mapping.fields.event_id")
    );
    assert_eq!(
        e.to_string(),
        "config error in my.toml: mapping.fields.event_id: `id` is not a JSON Pointer: it must start with `/`"
    );
    // Read apart from the other sections, the key still has its full path.
    assert_eq!(
        load("[mapping]\nfeilds = {}\n", &[]).unwrap_err().key,
        "mapping.feilds"
    );
    assert_eq!(load("mapping = 5\n", &[]).unwrap_err().key, "mapping");
    let e = load("", &[("CXPULSE__MAPPING__TS_FORMAT", "epoch_us")]).unwrap_err();
    assert_eq!(e.key, "mapping.ts_format");
    // With another section wrong too, the one first in the table is named.
    let two = "[mapping]\nfeilds = {}\n[sla]\nat_risk_share = \"x\"\n[kafka]\nbrokrs = \"x\"\n";
    assert_eq!(load(two, &[]).unwrap_err().key, "kafka.brokrs");
    let two = "[mapping]\nfeilds = {}\n[sla]\nat_risk_share = \"x\"\n";
    assert_eq!(load(two, &[]).unwrap_err().key, "mapping.feilds");
    // The mapping is checked last, as before: other sections' errors come first.
    let e = load(
        "[engine]\nbucket = \"0s\"\n[mapping]\nts_format = \"x\"\n",
        &[],
    );
    assert_eq!(e.unwrap_err().key, "engine.bucket");
    assert!(load("", &[]).unwrap().is_canonical());
    let mapped = load("[mapping.fields]\nevent_id = \"/id\"\ntype = \"/t\"\n", &[]);
    assert!(!mapped.unwrap().is_canonical());
}

#[test]
fn durations_parse_and_print() {
    assert_eq!(Dur::parse("250ms"), Ok(Dur(250)));
    assert_eq!(Dur::parse("7d"), Ok(Dur(7 * 86_400_000)));
    assert!(Dur::parse("7").is_err());
    assert!(Dur::parse("7w").is_err());
    assert_eq!(Dur(90 * 60_000).to_string(), "90m");
}

#[test]
fn engine_channels_are_distinct_plain_values_within_max_channels() {
    let load = |text: &str| Config::from_toml_str(text, "c.toml", env(&[]));
    let c = load("[engine]\nmax_channels = 2\nchannels = [\"paid\", \"organic\"]\n").unwrap();
    assert_eq!(c.params().unwrap().channels, ["paid", "organic"]);
    assert!(load("").unwrap().params().unwrap().channels.is_empty());
    for bad in [
        "[engine]\nmax_channels = 1\nchannels = [\"paid\", \"organic\"]\n",
        "[engine]\nchannels = [\"paid\", \"paid\"]\n",
        "[engine]\nchannels = [\"other\"]\n",
        "[engine]\nchannels = [\"unknown\"]\n",
        "[engine]\nchannels = [\"\"]\n",
    ] {
        assert_eq!(load(bad).unwrap_err().key, "engine.channels", "{bad}");
    }
}
