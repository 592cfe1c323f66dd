//! The config's sections: serde structs, one doc comment per key, defaults in one place.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

use super::{REDACTED, is_secret_key};
use crate::event::mapping::Mapping;
use crate::event::{Millis, Priority};

/// A duration written like `250ms`, `30s`, `5m`, `1h`, `7d` (whole numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Millis);

impl Dur {
    pub fn ms(self) -> Millis {
        self.0
    }
    pub fn parse(s: &str) -> Result<Dur, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{s}` has no unit (use ms, s, m, h or d)"))?;
        let (num, unit) = s.split_at(split);
        let n: i64 = num
            .parse()
            .map_err(|_| format!("`{s}` does not start with a whole number"))?;
        let mult = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(format!(
                    "`{s}` has unknown unit `{unit}` (use ms, s, m, h or d)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(Dur)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        for (unit, m) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms != 0 && ms % m == 0 {
                return write!(f, "{}{unit}", ms / m);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub engine: EngineSection,
    pub acquisition: AcquisitionSection,
    pub churn: ChurnSection,
    pub sla: SlaSection,
    /// How messages map onto the canonical schema (EVENTS.md); canonical when
    /// `[mapping]` is empty. The section is read apart and checked last by
    /// [`Config::from_toml_str`], which compiles it into this.
    #[serde(skip)]
    pub mapping: Mapping,
    pub kafka: KafkaSection,
    pub http: HttpSection,
    pub checkpoint: CheckpointSection,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Bucket size of every rolling window; windows are multiples of it, aligned to the epoch.
    pub bucket: Dur,
    /// Rolling windows; the names are the `window` label values.
    pub windows: Vec<String>,
    /// Events older than T minus this are `late`; timers fire once this far behind T.
    pub allowed_lateness: Dur,
    /// With no backlog and nothing arriving for this long, T follows the wall clock (`run` only).
    pub idle_timeout: Dur,
    /// In `run`, events further than this ahead of the wall clock are invalid.
    pub max_future_skew: Dur,
    /// In `run`, how far a partition's clock (and T) may run ahead of the wall
    /// clock; an event further ahead waits in the reorder buffer. At most
    /// `allowed_lateness`; unset: 5s, or `allowed_lateness` if that is smaller
    /// ([`EngineSection::clock_tolerance`]).
    pub clock_tolerance: Option<Dur>,
    /// Money amounts (every `*_usd` field) above this are `out_of_range`.
    pub max_amount_usd: f64,
    /// How long (event time before T) an accepted `event_id` is remembered to drop duplicates.
    /// Memory: about 48 bytes per event accepted within the horizon.
    pub dedup_horizon: Dur,
    /// At most this many distinct channel values become labels; later ones are `other`.
    pub max_channels: usize,
    /// Channel values that always get a label (before every other value),
    /// whichever partition and instance sees them first; at most
    /// `max_channels` of them. Default: none.
    pub channels: Vec<String>,
    /// Larger messages are invalid.
    pub max_message_bytes: usize,
    /// When an event has no `ts`, use the Kafka message timestamp instead of rejecting it.
    pub kafka_timestamp_fallback: bool,
    /// Cap on users held in memory (full and compacted); 0 = no cap. Above
    /// it, compacted users seen longest ago are forgotten.
    pub max_tracked_users: u64,
    /// Hard cap on users held; 0 = none. At it (once no compacted user is
    /// left to forget), new user ids are not tracked: their events count in
    /// `cxpulse_events_total` and their signups in the all-time counts only.
    pub hard_max_tracked_users: u64,
    /// Hard cap on support tickets held; 0 = none. At it, actions on new
    /// ticket ids are not tracked.
    pub max_tracked_tickets: u64,
    /// An open ticket with no action for this long (event time before the
    /// applied point) is forgotten; 0 = never. At least the longest SLA target plus 1d.
    pub open_ticket_horizon: Dur,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            bucket: Dur(60_000),
            windows: ["1h", "24h", "7d", "30d"].map(String::from).to_vec(),
            allowed_lateness: Dur(30_000),
            idle_timeout: Dur(5_000),
            max_future_skew: Dur(300_000),
            clock_tolerance: None,
            max_amount_usd: crate::event::DEFAULT_MAX_AMOUNT_USD,
            dedup_horizon: Dur(600_000),
            max_channels: 16,
            channels: Vec::new(),
            max_message_bytes: 64 * 1024,
            kafka_timestamp_fallback: false,
            max_tracked_users: 0,
            hard_max_tracked_users: 0,
            max_tracked_tickets: 0,
            open_ticket_horizon: Dur(60 * 86_400_000),
        }
    }
}

impl EngineSection {
    /// Default of `clock_tolerance` where `allowed_lateness` allows it.
    pub const DEFAULT_CLOCK_TOLERANCE: Dur = Dur(5_000);

    /// `clock_tolerance` as configured, or its default: 5s, capped at
    /// `allowed_lateness` (a tolerance above the lateness would let a fast
    /// producer make on-time events late again).
    pub fn clock_tolerance(&self) -> Dur {
        self.clock_tolerance
            .unwrap_or(Self::DEFAULT_CLOCK_TOLERANCE.min(self.allowed_lateness))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcquisitionSection {
    /// Users that existed before the stream starts; added to `cxpulse_users`.
    pub baseline_users: u64,
    /// Share of revenue that is margin, for CLV.
    pub margin: f64,
    /// Floor of the churn ratio in the CLV denominator.
    pub clv_min_churn: f64,
}

impl Default for AcquisitionSection {
    fn default() -> Self {
        AcquisitionSection {
            baseline_users: 0,
            margin: 1.0,
            clv_min_churn: 0.01,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChurnSection {
    /// A customer with no activity for this long has churned.
    pub inactivity: Dur,
}

impl Default for ChurnSection {
    fn default() -> Self {
        ChurnSection {
            inactivity: Dur(30 * 86_400_000),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlaTarget {
    pub first_response: Dur,
    pub resolution: Dur,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaTargets {
    pub urgent: SlaTarget,
    pub high: SlaTarget,
    pub normal: SlaTarget,
    pub low: SlaTarget,
}

impl SlaTargets {
    pub fn get(&self, p: Priority) -> SlaTarget {
        match p {
            Priority::Urgent => self.urgent,
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
        }
    }
}

impl Default for SlaTargets {
    fn default() -> Self {
        let t = |fr: i64, res: i64| SlaTarget {
            first_response: Dur(fr * 60_000),
            resolution: Dur(res * 3_600_000),
        };
        SlaTargets {
            urgent: t(15, 4),
            high: t(60, 8),
            normal: t(240, 24),
            low: t(480, 48),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaSection {
    /// A ticket is at risk once this share of an undecided target is used.
    pub at_risk_share: f64,
    pub targets: SlaTargets,
}

impl Default for SlaSection {
    fn default() -> Self {
        SlaSection {
            at_risk_share: 0.8,
            targets: SlaTargets::default(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub group_id: String,
    pub input_topics: Vec<String>,
    /// Invalid and late events, with the reason in headers. Empty = no dead-letter topic.
    pub dead_letter_topic: String,
    /// One record per changed series every `publish_interval`. Empty = not published.
    pub output_topic: String,
    /// One record per SLA breach. Empty = not published.
    pub alerts_topic: String,
    /// The internal compacted topic of partition partials behind the fleet
    /// totals (docs/fleet.md). Empty = `<group_id>-cxpulse-partials`.
    pub partials_topic: String,
    pub publish_interval: Dur,
    pub commit_interval: Dur,
    /// After SIGTERM/SIGINT: how long the final commit, pending dead-letter and
    /// output deliveries and the producer flush may take before `run` gives up
    /// and exits non-zero.
    pub shutdown_timeout: Dur,
    /// Static group membership: librdkafka's `group.instance.id` (e.g. the
    /// pod name), so a restart within `session.timeout.ms` keeps this
    /// member's partitions and moves nothing. Empty = dynamic membership.
    pub group_instance_id: String,
    /// When partitions are revoked: how long their final state snapshots
    /// (written to the state store) may take in total before they are
    /// dropped anyway (counted in `cxpulse_state_saves_total{result="timeout"}`).
    pub revoke_timeout: Dur,
    /// When a dead-letter record cannot be delivered (after
    /// `delivery_attempts`, or at once on a permanent error such as a missing
    /// topic): pause its input partition and hold its offset, or skip it.
    pub dead_letter_on_failure: DeadLetterOnFailure,
    /// How often a paused partition's undelivered dead-letter records are sent again.
    pub dead_letter_retry_interval: Dur,
    /// Largest dead-letter record (key, value and headers); a longer value is
    /// truncated to fit, with a `cxpulse.truncated` header. 0 = the producer's
    /// `message.max.bytes` (librdkafka's default 1000000).
    pub dead_letter_max_bytes: u64,
    /// Attempts per record (each within librdkafka's `message.timeout.ms`)
    /// before a dead-letter or alert record counts as failed.
    pub delivery_attempts: u32,
    /// Extra librdkafka settings (`security.protocol`, `sasl.*`, `ssl.*`, ...), passed through.
    /// A number or boolean is taken as its text (`6000`, `true`): librdkafka
    /// settings are strings, and an environment override such as a numeric
    /// password arrives as a TOML number.
    #[serde(deserialize_with = "scalar_strings")]
    pub librdkafka: BTreeMap<String, String>,
}

/// Field by field, with the passthrough's values redacted where the key looks
/// secret (see [`is_secret_key`]): a `{:?}` of the config never shows a secret.
impl fmt::Debug for KafkaSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let librdkafka: BTreeMap<&str, &str> = self
            .librdkafka
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_key(k) {
                    REDACTED
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("KafkaSection")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("input_topics", &self.input_topics)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("output_topic", &self.output_topic)
            .field("alerts_topic", &self.alerts_topic)
            .field("partials_topic", &self.partials_topic)
            .field("publish_interval", &self.publish_interval)
            .field("commit_interval", &self.commit_interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("group_instance_id", &self.group_instance_id)
            .field("revoke_timeout", &self.revoke_timeout)
            .field("dead_letter_on_failure", &self.dead_letter_on_failure)
            .field(
                "dead_letter_retry_interval",
                &self.dead_letter_retry_interval,
            )
            .field("dead_letter_max_bytes", &self.dead_letter_max_bytes)
            .field("delivery_attempts", &self.delivery_attempts)
            .field("librdkafka", &librdkafka)
            .finish()
    }
}

/// A map of strings that also takes integers, floats and booleans (as their
/// text). Anything else is refused with serde's message, which names the type
/// found (`sequence`, `map`), never the value.
fn scalar_strings<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Scalar(String);
    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Scalar;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string, a number or a boolean")
                }
                fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
                fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
                fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
                fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
            }
            d.deserialize_any(V)
        }
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.0)).collect())
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: "localhost:9092".into(),
            group_id: "cxpulse".into(),
            input_topics: vec!["events".into()],
            dead_letter_topic: "cxpulse-dead-letter".into(),
            output_topic: "cxpulse-metrics".into(),
            alerts_topic: "cxpulse-alerts".into(),
            partials_topic: String::new(),
            publish_interval: Dur(10_000),
            commit_interval: Dur(5_000),
            shutdown_timeout: Dur(10_000),
            group_instance_id: String::new(),
            revoke_timeout: Dur(10_000),
            dead_letter_on_failure: DeadLetterOnFailure::Pause,
            dead_letter_retry_interval: Dur(10_000),
            dead_letter_max_bytes: 0,
            delivery_attempts: 3,
            librdkafka: BTreeMap::new(),
        }
    }
}

/// What happens to an input message whose dead-letter record cannot be delivered.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterOnFailure {
    /// Consumption of its partition pauses and its offset stays held (nothing
    /// is lost or skipped); `/readyz` fails naming the topic and reason; the
    /// record is sent again every `dead_letter_retry_interval`, and the
    /// partition resumes once it is delivered.
    Pause,
    /// The record is dropped and counted (`cxpulse_delivery_dropped_total`);
    /// the input offset moves on.
    Skip,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub listen: String,
    /// `/readyz` fails while the summed consumer lag is above this.
    pub ready_max_lag: u64,
    /// TLS and basic auth of the listener (exporter-toolkit web config,
    /// [`crate::web_config`]); empty = plain HTTP, open. `--web.config.file` wins.
    pub web_config_file: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: "127.0.0.1:9464".into(),
            ready_max_lag: 10_000,
            web_config_file: String::new(),
        }
    }
}

/// What `run` does when the newest checkpoint file is unreadable or corrupt.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnCorrupt {
    /// Fall back to the newest older checkpoint that is good (or, when none
    /// is, start empty); every refused file is logged at error level.
    Previous,
    /// Start with empty state (consumption resumes from the group's committed
    /// offsets), logging the refused file at error level; older checkpoints
    /// are not used.
    Empty,
    /// Refuse to start.
    Fail,
}

/// Where `run` keeps its durable state (`checkpoint.store`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// Each input partition's state in a compacted Kafka topic
    /// ([`crate::kafka::state_store`]); moves with the partition.
    #[default]
    Kafka,
    /// Whole-engine checkpoint files in `checkpoint.dir` (one instance).
    Dir,
    /// No durable state.
    Off,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Kafka => "kafka",
            StoreKind::Dir => "dir",
            StoreKind::Off => "off",
        }
    }
}

/// Durable checkpoints of `run`: engine state plus the input offsets it covers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Where state is kept: `kafka` (default), `dir` or `off`. When the key
    /// is absent and `dir` is set, `dir` (the meaning `dir` had before the
    /// key existed); resolved by [`super::Config::from_toml_str`].
    pub store: StoreKind,
    /// `store = "kafka"`: the state topic; empty = `<kafka.group_id>-cxpulse-state`.
    pub topic: String,
    /// `store = "kafka"`: partitions of the state topic when cxpulse creates it.
    pub topic_partitions: i32,
    /// `store = "kafka"`: replication factor when cxpulse creates the state
    /// topic; -1 = the broker's default.
    pub topic_replication: i32,
    /// `store = "kafka"`: largest chunk of one snapshot record, in bytes.
    pub chunk_bytes: usize,
    /// Directory of the checkpoint files. Empty = checkpoints off (state is
    /// rebuilt from the committed offsets only).
    pub dir: String,
    /// How often a checkpoint is written (and its offsets committed); one is
    /// also written at a clean shutdown.
    pub interval: Dur,
    /// How many checkpoint files are kept (the newest ones).
    pub keep: usize,
    /// When the newest checkpoint is unreadable or corrupt: `previous` falls
    /// back to an older good one (or starts empty), `empty` starts empty with
    /// an error, `fail` refuses to start.
    pub on_corrupt: OnCorrupt,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection {
            store: StoreKind::Kafka,
            topic: String::new(),
            topic_partitions: 6,
            topic_replication: -1,
            chunk_bytes: 524_288,
            dir: String::new(),
            interval: Dur(30_000),
            keep: 3,
            on_corrupt: OnCorrupt::Previous,
        }
    }
}

/// A configuration error: which file, which key, what is wrong.
/// Smallest and largest `checkpoint.chunk_bytes`: a chunk plus its key and
/// header must fit in librdkafka's default `message.max.bytes` (1000000).
pub const CHUNK_BYTES_MIN: usize = 1024;
pub const CHUNK_BYTES_MAX: usize = 900 * 1024;

/// Whether `name` is a valid Kafka topic name (1..=249 of `[a-zA-Z0-9._-]`,
/// not `.` nor `..`).
pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl CheckpointSection {
    /// The state topic of `store = "kafka"`: `topic`, or
    /// `<group_id>-cxpulse-state` when it is empty.
    pub fn state_topic(&self, group_id: &str) -> String {
        if self.topic.is_empty() {
            format!("{group_id}-cxpulse-state")
        } else {
            self.topic.clone()
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("config error in {file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}
