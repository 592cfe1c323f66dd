//! Configuration: one TOML file, environment overrides, validated once.
//!
//! Every key has a default here (and is documented in `config/cxpulse.toml`).
//! Unknown keys are errors. Errors name the key and the file.
//!
//! Environment overrides: `CXPULSE__SECTION__KEY=value` sets `section.key`
//! (double underscores separate path segments; the value is parsed as TOML,
//! falling back to a plain string), e.g. `CXPULSE__KAFKA__BROKERS=host:9092`.
//! Under `kafka.librdkafka`, `_` in a key written in upper case stands for
//! `.`: `CXPULSE__KAFKA__LIBRDKAFKA__SASL_PASSWORD` sets `sasl.password`
//! (`CXPULSE__KAFKA__LIBRDKAFKA__sasl.password` too), and the value is taken
//! as written, not parsed as TOML.
//!
//! Secrets: no error message holds the value of a secret-looking key
//! ([`is_secret_key`]); every [`ConfigError`] is built by one function that
//! scrubs them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::event::mapping::{Mapping, MappingConfig};
use crate::event::{Millis, Priority};
use crate::state::params::{Params, Settings};

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
    /// How long (event time before T) an accepted `event_id` is remembered to drop duplicates.
    /// Memory: about 48 bytes per event accepted within the horizon.
    pub dedup_horizon: Dur,
    /// At most this many distinct channel values become labels; later ones are `other`.
    pub max_channels: usize,
    /// Larger messages are invalid.
    pub max_message_bytes: usize,
    /// When an event has no `ts`, use the Kafka message timestamp instead of rejecting it.
    pub kafka_timestamp_fallback: bool,
    /// Cap on users held in memory (full and compacted); 0 = no cap. Above
    /// it, compacted users seen longest ago are forgotten.
    pub max_tracked_users: u64,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            bucket: Dur(60_000),
            windows: ["1h", "24h", "7d", "30d"].map(String::from).to_vec(),
            allowed_lateness: Dur(30_000),
            idle_timeout: Dur(5_000),
            max_future_skew: Dur(300_000),
            dedup_horizon: Dur(600_000),
            max_channels: 16,
            max_message_bytes: 64 * 1024,
            kafka_timestamp_fallback: false,
            max_tracked_users: 0,
        }
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
    pub publish_interval: Dur,
    pub commit_interval: Dur,
    /// After SIGTERM/SIGINT: how long the final commit, pending dead-letter and
    /// output deliveries and the producer flush may take before `run` gives up
    /// and exits non-zero.
    pub shutdown_timeout: Dur,
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
            .field("publish_interval", &self.publish_interval)
            .field("commit_interval", &self.commit_interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
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
            publish_interval: Dur(10_000),
            commit_interval: Dur(5_000),
            shutdown_timeout: Dur(10_000),
            librdkafka: BTreeMap::new(),
        }
    }
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

/// Durable checkpoints of `run`: engine state plus the input offsets it covers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
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
            dir: String::new(),
            interval: Dur(30_000),
            keep: 3,
            on_corrupt: OnCorrupt::Previous,
        }
    }
}

/// A configuration error: which file, which key, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("config error in {file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

pub use crate::state::params::Window;

impl Config {
    /// Reads `path` (or the defaults when `None`), applies `CXPULSE__*` environment
    /// overrides from `env`, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into());
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                config_error(
                    &file,
                    "-",
                    &format!("cannot read: {e}"),
                    &Secrets::default(),
                )
            })?,
            None => String::new(),
        };
        Self::from_toml_str(&text, &file, env)
    }

    pub fn from_toml_str(
        text: &str,
        file: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // The parser's message never quotes the text; the secrets of a
            // file that does not parse are not known, so none is scrubbed.
            config_error(file, &span_key(text, &e), e.message(), &Secrets::default())
        })?;
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("CXPULSE__") else {
                continue;
            };
            let mut path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            // A shell variable name cannot hold the dots of librdkafka's
            // keys: written in upper case, `_` stands for `.`
            // (CXPULSE__KAFKA__LIBRDKAFKA__SASL_PASSWORD sets `sasl.password`);
            // written otherwise, the key is taken as it is (`log_level`).
            let last_upper = rest
                .rsplit("__")
                .next()
                .is_some_and(|s| !s.chars().any(|c| c.is_ascii_lowercase()));
            let passthrough =
                matches!(path.as_slice(), [a, b, _] if a == "kafka" && b == "librdkafka");
            if passthrough && last_upper {
                path[2] = path[2].replace('_', ".");
            }
            // librdkafka's values are text: taken as written, never read as
            // TOML (a password `3.10`, `0x1F` or `"x"` stays what it is).
            let parsed = if passthrough {
                toml::Value::String(v.clone())
            } else {
                format!("x = {v}")
                    .parse::<toml::Table>()
                    .ok()
                    .and_then(|mut t| t.remove("x"))
                    .unwrap_or(toml::Value::String(v.clone()))
            };
            set_path(&mut value, &path, parsed).map_err(|m| {
                config_error(
                    file,
                    &path.join("."),
                    &format!("environment {k}: {m}"),
                    &Secrets::default(),
                )
            })?;
        }
        // Every message below passes through `config_error`, which never
        // lets one of these values through.
        let secrets = Secrets::in_table(&value);
        let types = value.clone();
        // `[mapping]` is read apart: validation turns it into `Config::mapping`.
        let order: Vec<String> = value.keys().cloned().collect();
        let mapping_section = value.remove("mapping");
        // A serde error's key: the path to the value, and the field a message
        // such as "unknown field `x`" names, below `prefix`.
        let serde_err = |prefix: &str, e: serde_path_to_error::Error<toml::de::Error>| {
            let msg = e.inner().message().to_string();
            let path = e.path().to_string();
            let key = match field_from_message(&msg) {
                Some(f) if path == "." || path.is_empty() => f,
                Some(f) if !path.ends_with(&f) => format!("{path}.{f}"),
                _ => path,
            };
            let key = match key.as_str() {
                _ if prefix.is_empty() => key,
                "." | "" => prefix.to_string(),
                _ => format!("{prefix}.{key}"),
            };
            if is_secret_key(&key) {
                // serde's messages quote the value ("invalid type:
                // integer `123`"): say what was found, not what it was.
                let within = if prefix.is_empty() {
                    Some(&types)
                } else {
                    types.get(prefix).and_then(toml::Value::as_table)
                };
                let found = within
                    .and_then(|t| lookup(t, e.path()))
                    .map_or("a value", type_name);
                let msg = format!(
                    "{found} is not accepted here (the value is not shown: the key looks secret)"
                );
                return config_error(file, &key, &msg, &secrets);
            }
            config_error(file, &key, &msg, &secrets)
        };
        let cfg = serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(value))
            .map_err(|e| serde_err("", e));
        let mapping = match mapping_section {
            Some(section) => {
                serde_path_to_error::deserialize(section).map_err(|e| serde_err("mapping", e))
            }
            None => Ok(MappingConfig::default()),
        };
        let (mut cfg, mapping) = match (cfg, mapping) {
            (Ok(cfg), Ok(mapping)) => (cfg, mapping),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
            // Both wrong: the entry first in the table, as one serde pass reports.
            (Err(e), Err(m)) => {
                let at = |key: &str| {
                    order
                        .iter()
                        .position(|k| key == k || key.starts_with(&format!("{k}.")))
                };
                return Err(if at(&m.key) < at(&e.key) { m } else { e });
            }
        };
        cfg.mapping = cfg
            .validate(&mapping)
            .map_err(|(k, m)| config_error(file, &k, &m, &secrets))?;
        Ok(cfg)
    }

    /// Checks every section; returns `mapping` compiled (checked last).
    fn validate(&self, mapping: &MappingConfig) -> Result<Mapping, (String, String)> {
        let e = &self.engine;
        let bad = |k: &str, m: String| Err((k.to_string(), m));
        if e.bucket.ms() <= 0 {
            return bad("engine.bucket", "must be positive".into());
        }
        if e.windows.is_empty() {
            return bad("engine.windows", "needs at least one window".into());
        }
        self.windows()?;
        if e.allowed_lateness.ms() < 0 || e.allowed_lateness.ms() >= 86_400_000 {
            return bad(
                "engine.allowed_lateness",
                "must be at least 0 and under 1d".into(),
            );
        }
        if e.dedup_horizon.ms() < 0 {
            return bad("engine.dedup_horizon", "must not be negative".into());
        }
        if e.max_channels == 0 || e.max_channels > 1000 {
            return bad("engine.max_channels", "must be 1..=1000".into());
        }
        if self.churn.inactivity.ms() <= 0 || self.churn.inactivity.ms() % e.bucket.ms() != 0 {
            return bad(
                "churn.inactivity",
                format!(
                    "must be a positive multiple of engine.bucket ({})",
                    e.bucket
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.sla.at_risk_share) {
            return bad("sla.at_risk_share", "must be within 0..=1".into());
        }
        if !(self.acquisition.clv_min_churn > 0.0 && self.acquisition.clv_min_churn <= 1.0) {
            return bad("acquisition.clv_min_churn", "must be within (0, 1]".into());
        }
        if !self.acquisition.margin.is_finite() || self.acquisition.margin < 0.0 {
            return bad("acquisition.margin", "must be a finite number >= 0".into());
        }
        for p in Priority::ALL {
            let t = self.sla.targets.get(p);
            if t.first_response.ms() <= 0 || t.resolution.ms() <= 0 {
                return bad(
                    &format!("sla.targets.{}", p.as_str()),
                    "targets must be positive".into(),
                );
            }
        }
        if self.checkpoint.interval.ms() <= 0 {
            return bad("checkpoint.interval", "must be positive".into());
        }
        if self.checkpoint.keep == 0 {
            return bad("checkpoint.keep", "must be at least 1".into());
        }
        let mapping = mapping
            .compile()
            .map_err(|(k, m)| (format!("mapping.{k}"), m))?;
        self.engine_params()?;
        Ok(mapping)
    }

    /// The engine's parameters. Every config that passed validation converts
    /// (validation ends with the same conversion); one changed since can fail.
    pub fn params(&self) -> Result<Params, ConfigError> {
        self.engine_params().map_err(|(key, message)| ConfigError {
            file: "<validated config>".into(),
            key,
            message,
        })
    }

    fn engine_params(&self) -> Result<Params, (String, String)> {
        let e = &self.engine;
        let mut fr_target = [0; 4];
        let mut res_target = [0; 4];
        for p in Priority::ALL {
            let t = self.sla.targets.get(p);
            fr_target[p.index()] = t.first_response.ms();
            res_target[p.index()] = t.resolution.ms();
        }
        Ok(Params::new(Settings {
            bucket: e.bucket.ms(),
            windows: self.windows()?,
            lateness: e.allowed_lateness.ms(),
            dedup_horizon: e.dedup_horizon.ms(),
            max_future_skew: e.max_future_skew.ms(),
            inactivity: self.churn.inactivity.ms(),
            fr_target,
            res_target,
            at_risk_share: self.sla.at_risk_share,
            baseline_users: self.acquisition.baseline_users,
            margin: self.acquisition.margin,
            clv_min_churn: self.acquisition.clv_min_churn,
            max_tracked_users: e.max_tracked_users,
            max_channels: e.max_channels,
        }))
    }

    /// The configured windows, parsed from their names (`1h`, `24h`, `7d`, ...).
    pub fn windows(&self) -> Result<Vec<Window>, (String, String)> {
        let bucket = self.engine.bucket.ms();
        let mut out: Vec<Window> = Vec::new();
        for name in &self.engine.windows {
            let len = Dur::parse(name)
                .map_err(|m| ("engine.windows".to_string(), m))?
                .ms();
            if len <= 0 || len % bucket != 0 {
                return Err((
                    "engine.windows".into(),
                    format!(
                        "`{name}` must be a positive multiple of engine.bucket ({})",
                        self.engine.bucket
                    ),
                ));
            }
            if out.iter().any(|w| w.name == *name) {
                return Err(("engine.windows".into(), format!("`{name}` is listed twice")));
            }
            out.push(Window {
                name: name.clone(),
                len,
            });
        }
        Ok(out)
    }
}

/// What replaces a secret value in logs and messages.
pub const REDACTED: &str = "<redacted>";

/// Whether a setting's value may be a secret (passwords, keys, tokens, JAAS
/// configs, user names): such values never appear in logs, error messages or
/// on `/metrics`. Matches anywhere in the (dotted) key, case-insensitively.
pub fn is_secret_key(key: &str) -> bool {
    const HINTS: &[&str] = &[
        "password",
        "secret",
        "token",
        "jaas",
        "pem",
        "key",
        "credential",
        "username",
        "oauthbearer.config",
        "certificate",
    ];
    let key = key.to_ascii_lowercase();
    HINTS.iter().any(|h| key.contains(h))
}

/// The values of the secret-looking keys of a configuration: whatever
/// message is built from outside text (serde, librdkafka) is passed through
/// [`Secrets::scrub`] so that none of them can be quoted back.
#[derive(Clone, Debug, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The values of secret-looking keys in `pairs`.
    pub fn in_pairs<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Secrets {
        let mut out = Secrets::default();
        for (k, v) in pairs {
            if is_secret_key(k) {
                out.add(v.clone());
            }
        }
        out
    }

    /// Every scalar under a secret-looking key anywhere in `table` (the
    /// key's full dotted path is what is matched; arrays and tables under
    /// such a key give all their scalars).
    fn in_table(table: &toml::Table) -> Secrets {
        fn walk(out: &mut Secrets, path: &str, v: &toml::Value, secret: bool) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        let secret = secret || is_secret_key(&p);
                        walk(out, &p, v, secret);
                    }
                }
                toml::Value::Array(a) => a.iter().for_each(|v| walk(out, path, v, secret)),
                toml::Value::String(s) if secret => out.add(s.clone()),
                other if secret => out.add(other.to_string()),
                _ => {}
            }
        }
        let mut out = Secrets::default();
        walk(&mut out, "", &toml::Value::Table(table.clone()), false);
        out
    }

    fn add(&mut self, v: String) {
        if !v.is_empty() && !self.0.contains(&v) {
            self.0.push(v);
        }
    }

    /// `text` with every occurrence of every secret replaced by `<redacted>`
    /// (longest first, so that a secret containing another goes whole).
    pub fn scrub(&self, text: &str) -> String {
        let mut secrets: Vec<&String> = self.0.iter().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_string();
        for s in secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }
}

/// The one constructor of [`ConfigError`]: the message is scrubbed of every
/// secret value of the configuration.
fn config_error(file: &str, key: &str, message: &str, secrets: &Secrets) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        key: key.to_string(),
        message: secrets.scrub(message),
    }
}

/// "an integer", "a string", ... for messages that must not quote a value.
fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// The value at a serde path in `table`, if there is one.
fn lookup<'a>(table: &'a toml::Table, path: &serde_path_to_error::Path) -> Option<&'a toml::Value> {
    use serde_path_to_error::Segment;
    let mut segments = path.iter();
    let first = match segments.next()? {
        Segment::Map { key } => table.get(key)?,
        _ => return None,
    };
    segments.try_fold(first, |v, seg| match (v, seg) {
        (toml::Value::Table(t), Segment::Map { key }) => t.get(key),
        (toml::Value::Array(a), Segment::Seq { index }) => a.get(*index),
        _ => None,
    })
}

fn set_path(table: &mut toml::Table, path: &[String], v: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".into()),
        [last] => {
            table.insert(last.clone(), v);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, v),
                _ => Err(format!("`{first}` is not a table")),
            }
        }
    }
}

/// The key named in a serde message such as "unknown field `x`".
fn field_from_message(msg: &str) -> Option<String> {
    if msg.starts_with("unknown field") || msg.starts_with("missing field") {
        msg.split('`').nth(1).map(str::to_string)
    } else {
        None
    }
}

fn span_key(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}")
        }
        None => "-".into(),
    }
}

/// Default config path used by `run` when `--config` is not given.
pub fn default_path() -> PathBuf {
    PathBuf::from("config/cxpulse.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e =
            Config::from_toml_str("[engine]\nbukcet = \"1m\"\n", "my.toml", env(&[])).unwrap_err();
        assert_eq!(e.file, "my.toml");
        assert_eq!(e.key, "engine.bukcet");
        let e = Config::from_toml_str("[engine]\nbucket = \"1 minute\"\n", "my.toml", env(&[]))
            .unwrap_err();
        assert_eq!(e.key, "engine.bucket");
        let e = Config::from_toml_str("[engine]\nwindows = [\"90s\"]\n", "my.toml", env(&[]))
            .unwrap_err();
        assert_eq!(e.key, "engine.windows");
        assert!(e.to_string().contains("my.toml"), "{e}");
        let e =
            Config::from_toml_str("[sla]\nat_risk_share = 2.0\n", "my.toml", env(&[])).unwrap_err();
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
}
