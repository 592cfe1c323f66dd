//! librdkafka settings for the consumer and the producer: cxpulse's defaults,
//! the keys cxpulse manages itself, the user's passthrough, and a redacted
//! rendering for logs.
//!
//! Passthrough (`kafka.librdkafka` in the config): every key is handed to
//! both clients, except keys prefixed `consumer.` or `producer.`, which go to
//! that client only with the prefix removed (e.g. `consumer.fetch.max.bytes`).
//! The user's value wins over a cxpulse default; keys cxpulse relies on for
//! its delivery rule are refused with an explanation.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::KafkaError;

use crate::config::{KafkaSection, REDACTED, Secrets};

pub use crate::config::is_secret_key as is_sensitive;

/// Which client a settings map is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Consumer,
    Producer,
}

impl Role {
    fn prefix(self) -> &'static str {
        match self {
            Role::Consumer => "consumer.",
            Role::Producer => "producer.",
        }
    }
}

/// Keys cxpulse sets itself, and why a user may not override them.
const MANAGED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("group.id", "set kafka.group_id instead"),
    (
        "enable.auto.commit",
        "cxpulse commits offsets itself, only for events already applied",
    ),
    (
        "enable.auto.offset.store",
        "cxpulse stores an offset only after the event's effect is applied",
    ),
    (
        "enable.idempotence",
        "the producer is always idempotent (no duplicates or reordering on retries)",
    ),
];

/// A passthrough setting cxpulse or librdkafka cannot accept: one cxpulse
/// manages itself, or one librdkafka refuses (unknown key, invalid value).
/// The message never holds the value of a secret-looking key.
#[derive(Debug, thiserror::Error)]
#[error("kafka.librdkafka.{key}: {why}")]
pub struct ManagedKey {
    pub key: String,
    pub why: String,
}

/// The full librdkafka settings for `role`: defaults, then passthrough,
/// checked by librdkafka itself (every key known, every value valid).
pub fn settings(k: &KafkaSection, role: Role) -> Result<BTreeMap<String, String>, ManagedKey> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |key: &str, v: &str| {
        m.insert(key.to_string(), v.to_string());
    };
    set("bootstrap.servers", &k.brokers);
    // Reconnection backoff; librdkafka's defaults, written out so the
    // retrying behaviour is visible in the startup log.
    set("reconnect.backoff.ms", "100");
    set("reconnect.backoff.max.ms", "10000");
    set("log.connection.close", "false");
    match role {
        Role::Consumer => {
            set("client.id", "cxpulse");
            set("group.id", &k.group_id);
            set("enable.auto.commit", "false");
            set("enable.auto.offset.store", "false");
            // A new group reads the backlog: nothing produced before the
            // first start is skipped.
            set("auto.offset.reset", "earliest");
            // Lag (per partition) and broker state come from statistics.
            set("statistics.interval.ms", "1000");
            // Notice input topics created after start within seconds, not
            // librdkafka's default 5 minutes.
            set("topic.metadata.refresh.interval.ms", "10000");
            // A fetch waits at most this long for new data: part of the
            // event-to-metric latency (librdkafka's default is 500 ms).
            set("fetch.wait.max.ms", "100");
            // When the local queue is full (the engine is busier than the
            // fetcher), fetch again soon rather than after librdkafka's
            // default 1 s, which stalled backlog reads by that much.
            set("fetch.queue.backoff.ms", "20");
            // A rebalance moves only the partitions that must move; the
            // others keep being consumed (and their state stays where it
            // is). The rebalance callback uses the incremental calls.
            set("partition.assignment.strategy", "cooperative-sticky");
            if !k.group_instance_id.is_empty() {
                set("group.instance.id", &k.group_instance_id);
            }
        }
        Role::Producer => {
            set("client.id", "cxpulse-producer");
            set("enable.idempotence", "true");
            set("linger.ms", "5");
        }
    }
    let other = match role {
        Role::Consumer => Role::Producer.prefix(),
        Role::Producer => Role::Consumer.prefix(),
    };
    for (key, value) in &k.librdkafka {
        if key.starts_with(other) {
            continue;
        }
        let bare = key.strip_prefix(role.prefix()).unwrap_or(key);
        if let Some((_, why)) = MANAGED.iter().find(|(mk, _)| *mk == bare) {
            return Err(ManagedKey {
                key: key.clone(),
                why: why.to_string(),
            });
        }
        m.insert(bare.to_string(), value.clone());
    }
    // librdkafka's own check of every key and value (no client is started).
    if let Err(e) = client_config(&m).create_native_config() {
        let secrets = Secrets::in_pairs(&m);
        return Err(match e {
            KafkaError::ClientConfig(_, desc, key, _value) => ManagedKey {
                // The passthrough key as written (with its prefix, if any).
                key: k
                    .librdkafka
                    .keys()
                    .find(|pk| pk.strip_prefix(role.prefix()).unwrap_or(pk) == key)
                    .cloned()
                    .unwrap_or(key),
                why: secrets.scrub(&desc),
            },
            other => ManagedKey {
                key: "-".into(),
                why: secrets.scrub(&other.to_string()),
            },
        });
    }
    Ok(m)
}

/// Creates a client from a settings map; librdkafka's error, if any, with
/// every secret value of the map replaced by `<redacted>`.
pub fn create<C, T>(settings: &BTreeMap<String, String>, context: C) -> anyhow::Result<T>
where
    C: ClientContext,
    T: FromClientConfigAndContext<C>,
{
    client_config(settings)
        .create_with_context(context)
        .map_err(|e| anyhow::anyhow!(Secrets::in_pairs(settings).scrub(&e.to_string())))
}

/// The rdkafka config for a settings map.
pub fn client_config(settings: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in settings {
        c.set(k, v);
    }
    c
}

/// `key=value, ...` with sensitive values replaced by `<redacted>`.
pub fn redacted(settings: &BTreeMap<String, String>) -> String {
    settings
        .iter()
        .map(|(k, v)| {
            if is_sensitive(k) {
                format!("{k}={REDACTED}")
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(pass: &[(&str, &str)]) -> KafkaSection {
        KafkaSection {
            brokers: "b1:9092".into(),
            librdkafka: pass
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..KafkaSection::default()
        }
    }

    #[test]
    fn passthrough_reaches_both_clients_and_prefixed_keys_only_their_own() {
        let k = section(&[
            ("security.protocol", "SASL_SSL"),
            ("consumer.fetch.max.bytes", "1000"),
            ("producer.linger.ms", "50"),
        ]);
        let c = settings(&k, Role::Consumer).unwrap();
        let p = settings(&k, Role::Producer).unwrap();
        assert_eq!(c["security.protocol"], "SASL_SSL");
        assert_eq!(p["security.protocol"], "SASL_SSL");
        assert_eq!(c["fetch.max.bytes"], "1000");
        assert!(!p.contains_key("fetch.max.bytes"));
        assert_eq!(p["linger.ms"], "50");
        assert!(!c.contains_key("linger.ms"));
        assert_eq!(c["enable.auto.offset.store"], "false");
        assert_eq!(p["enable.idempotence"], "true");
        assert_eq!(c["bootstrap.servers"], "b1:9092");
    }

    #[test]
    fn the_consumer_is_cooperative_and_static_only_when_an_instance_id_is_set() {
        let c = settings(&section(&[]), Role::Consumer).expect("valid");
        assert_eq!(c["partition.assignment.strategy"], "cooperative-sticky");
        assert!(!c.contains_key("group.instance.id"));
        let k = KafkaSection {
            group_instance_id: "cxpulse-2".into(),
            ..section(&[])
        };
        let c = settings(&k, Role::Consumer).expect("valid");
        assert_eq!(c["group.instance.id"], "cxpulse-2");
        let p = settings(&k, Role::Producer).expect("valid");
        assert!(!p.contains_key("group.instance.id"));
    }

    #[test]
    fn keys_the_delivery_rule_depends_on_are_refused() {
        for key in ["enable.auto.commit", "consumer.enable.auto.offset.store"] {
            let err = settings(&section(&[(key, "true")]), Role::Consumer).unwrap_err();
            assert_eq!(err.key, key);
        }
        let err =
            settings(&section(&[("enable.idempotence", "false")]), Role::Producer).unwrap_err();
        assert!(err.to_string().contains("idempotent"), "{err}");
    }

    #[test]
    fn librdkafka_refusals_name_the_key_never_a_secret_value() {
        // An unknown key (a typo the secret hints do not catch): librdkafka's
        // own check, naming the key as written; rdkafka's error would print
        // the value, the message here does not.
        let err = settings(
            &section(&[("consumer.sasl.pasword", "hunter2hunter2")]),
            Role::Consumer,
        )
        .unwrap_err();
        assert_eq!(err.key, "consumer.sasl.pasword", "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // An invalid value that is not secret stays readable.
        let err = settings(&section(&[("security.protocol", "SSSL")]), Role::Producer).unwrap_err();
        assert_eq!(err.key, "security.protocol", "{err}");
        assert!(err.to_string().contains("SSSL"), "{err}");
        // Client creation: librdkafka quotes the mechanism, which here is
        // also the password; every secret value is scrubbed.
        let m = settings(
            &section(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "hunter2hunter2"),
                ("sasl.password", "hunter2hunter2"),
            ]),
            Role::Producer,
        )
        .unwrap();
        let err = create::<_, rdkafka::producer::BaseProducer>(
            &m,
            rdkafka::producer::DefaultProducerContext,
        )
        .err()
        .expect("an unknown SASL mechanism is refused");
        let shown = err.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    /// The secured-cluster examples in `config/`: loaded with their secrets
    /// from the environment, accepted by librdkafka, and holding no secret.
    #[test]
    fn secured_cluster_examples_load_with_secrets_from_the_environment() {
        use crate::config::{Config, is_secret_key};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let cases = [
            ("kafka-confluent-cloud.toml", "SASL_SSL", Some("PLAIN")),
            ("kafka-msk-scram.toml", "SASL_SSL", Some("SCRAM-SHA-512")),
            ("kafka-msk-tls.toml", "SSL", None),
            ("kafka-aiven-mtls.toml", "SSL", None),
        ];
        for (name, protocol, mechanism) in cases {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).expect("example exists");
            for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
                if let Some((k, _)) = line.split_once('=') {
                    let k = k.trim().trim_matches('"');
                    assert!(
                        !is_secret_key(k) || k.ends_with(".location"),
                        "{name}: a secret in the file: {line}"
                    );
                }
            }
            let env = [
                ("CXPULSE__KAFKA__BROKERS", "broker-1.example:9096"),
                ("CXPULSE__KAFKA__LIBRDKAFKA__SASL_USERNAME", "cxpulse"),
                ("CXPULSE__KAFKA__LIBRDKAFKA__SASL_PASSWORD", "1234567890"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()));
            let env = if mechanism.is_some() {
                &env[..]
            } else {
                &env[..1]
            };
            let c =
                Config::load(Some(&path), env.to_vec()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.kafka.brokers, "broker-1.example:9096", "{name}");
            for role in [Role::Consumer, Role::Producer] {
                let m = settings(&c.kafka, role).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(m["security.protocol"], protocol, "{name}");
                assert_eq!(m.get("sasl.mechanisms").map(String::as_str), mechanism);
                if mechanism.is_some() {
                    assert_eq!(m["sasl.password"], "1234567890", "{name}");
                    assert!(!redacted(&m).contains("1234567890"), "{name}");
                } else {
                    assert!(m.contains_key("ssl.certificate.location"), "{name}");
                }
            }
        }
    }

    #[test]
    fn tls_and_sasl_are_compiled_in() {
        // Refused at client creation by a build without OpenSSL ("OpenSSL
        // not available at build time").
        for (protocol, mechanism) in [
            ("SSL", "PLAIN"),
            ("SASL_SSL", "PLAIN"),
            ("SASL_SSL", "SCRAM-SHA-512"),
            ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ] {
            let m = settings(
                &section(&[
                    ("security.protocol", protocol),
                    ("sasl.mechanisms", mechanism),
                    ("sasl.username", "u"),
                    ("sasl.password", "p"),
                ]),
                Role::Producer,
            )
            .unwrap();
            let p: anyhow::Result<rdkafka::producer::BaseProducer> =
                create(&m, rdkafka::producer::DefaultProducerContext);
            if let Err(e) = p {
                panic!("{protocol}/{mechanism}: {e}");
            }
        }
    }

    #[test]
    fn secrets_are_redacted_in_the_log_rendering() {
        let k = section(&[
            ("sasl.password", "hunter2"),
            ("sasl.username", "alice"),
            ("ssl.key.pem", "-----BEGIN"),
            ("sasl.oauthbearer.client.secret", "s3"),
            ("sasl.jaas.config", "x required password=\"p\""),
            ("security.protocol", "SASL_SSL"),
        ]);
        let text = redacted(&k.librdkafka);
        for secret in ["hunter2", "alice", "BEGIN", "s3", "required"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("security.protocol=SASL_SSL"), "{text}");
        assert!(text.contains("sasl.password=<redacted>"), "{text}");
    }
}
