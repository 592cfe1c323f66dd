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

use std::path::{Path, PathBuf};

use crate::event::mapping::{Mapping, MappingConfig};
use crate::event::{MAX_AMOUNT_USD_LIMIT, Priority};
use crate::state::params::{Params, Settings};

mod secrets;
mod sections;
#[cfg(test)]
mod tests;

pub use secrets::{REDACTED, Secrets, is_secret_key};
use secrets::{config_error, lookup, type_name};
pub use sections::*;

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
        // `checkpoint.store` absent: `dir` when `checkpoint.dir` is set (what
        // `dir` meant before `store` existed), else the default `kafka`.
        let store_given = types
            .get("checkpoint")
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.contains_key("store"));
        if !store_given && !cfg.checkpoint.dir.is_empty() {
            cfg.checkpoint.store = StoreKind::Dir;
        }
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
        if let Some(t) = e.clock_tolerance
            && (t.ms() < 0 || t > e.allowed_lateness)
        {
            return bad(
                "engine.clock_tolerance",
                format!(
                    "must be at least 0 and at most engine.allowed_lateness ({})",
                    e.allowed_lateness
                ),
            );
        }
        // Written so that NaN fails too.
        if !(e.max_amount_usd > 0.0 && e.max_amount_usd <= MAX_AMOUNT_USD_LIMIT) {
            return bad(
                "engine.max_amount_usd",
                format!("must be a number in (0, {MAX_AMOUNT_USD_LIMIT:e}]"),
            );
        }
        if e.dedup_horizon.ms() < 0 {
            return bad("engine.dedup_horizon", "must not be negative".into());
        }
        if e.max_channels == 0 || e.max_channels > 1000 {
            return bad("engine.max_channels", "must be 1..=1000".into());
        }
        if e.channels.len() > e.max_channels {
            return bad(
                "engine.channels",
                format!(
                    "lists more values than engine.max_channels ({})",
                    e.max_channels
                ),
            );
        }
        for (i, c) in e.channels.iter().enumerate() {
            if c.is_empty() || c == "unknown" || c == "other" || e.channels[..i].contains(c) {
                return bad(
                    "engine.channels",
                    "values must be non-empty, distinct, and not `unknown` or `other`".into(),
                );
            }
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
        if self.kafka.delivery_attempts == 0 {
            return bad("kafka.delivery_attempts", "must be at least 1".into());
        }
        if self.kafka.dead_letter_retry_interval.ms() <= 0 {
            return bad(
                "kafka.dead_letter_retry_interval",
                "must be positive".into(),
            );
        }
        if self.kafka.revoke_timeout.ms() <= 0 {
            return bad("kafka.revoke_timeout", "must be positive".into());
        }
        if self.checkpoint.interval.ms() <= 0 {
            return bad("checkpoint.interval", "must be positive".into());
        }
        if self.checkpoint.keep == 0 {
            return bad("checkpoint.keep", "must be at least 1".into());
        }
        self.validate_checkpoint_store()?;
        let mapping = mapping
            .compile_bounded(e.max_amount_usd)
            .map_err(|(k, m)| (format!("mapping.{k}"), m))?;
        self.engine_params()?;
        Ok(mapping)
    }

    /// `checkpoint.store` and the keys that go with it.
    fn validate_checkpoint_store(&self) -> Result<(), (String, String)> {
        let c = &self.checkpoint;
        let bad = |k: &str, m: String| Err((k.to_string(), m));
        match c.store {
            StoreKind::Dir if c.dir.is_empty() => {
                return bad(
                    "checkpoint.dir",
                    "must be set when checkpoint.store = \"dir\"".into(),
                );
            }
            StoreKind::Kafka | StoreKind::Off if !c.dir.is_empty() => {
                return bad(
                    "checkpoint.dir",
                    format!(
                        "is only used with checkpoint.store = \"dir\" (store is \"{}\"): remove one of the two",
                        c.store.as_str()
                    ),
                );
            }
            _ => {}
        }
        if !(1..=10_000).contains(&c.topic_partitions) {
            return bad(
                "checkpoint.topic_partitions",
                "must be within 1..=10000".into(),
            );
        }
        if c.topic_replication != -1 && !(1..=100).contains(&c.topic_replication) {
            return bad(
                "checkpoint.topic_replication",
                "must be -1 (the broker's default) or within 1..=100".into(),
            );
        }
        if !(CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&c.chunk_bytes) {
            return bad(
                "checkpoint.chunk_bytes",
                format!("must be within {CHUNK_BYTES_MIN}..={CHUNK_BYTES_MAX}"),
            );
        }
        if !c.topic.is_empty() && !is_valid_topic_name(&c.topic) {
            return bad(
                "checkpoint.topic",
                "must be a Kafka topic name: at most 249 of a-z A-Z 0-9 . _ -".into(),
            );
        }
        if c.store == StoreKind::Kafka && !is_valid_topic_name(&c.state_topic(&self.kafka.group_id))
        {
            return bad(
                "checkpoint.topic",
                "is empty and `<kafka.group_id>-cxpulse-state` is not a Kafka topic name \
                 (kafka.group_id has characters other than a-z A-Z 0-9 . _ -): set checkpoint.topic"
                    .into(),
            );
        }
        Ok(())
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
        let longest_target = fr_target
            .iter()
            .chain(&res_target)
            .fold(0, |a, &b| a.max(b));
        let horizon = e.open_ticket_horizon.ms();
        if horizon != 0 && horizon < longest_target + 86_400_000 {
            let m = "must be 0 (never) or at least the longest SLA target plus 1d";
            return Err(("engine.open_ticket_horizon".into(), m.into()));
        }
        if e.hard_max_tracked_users != 0 && e.hard_max_tracked_users < e.max_tracked_users {
            let m = "must be 0 (none) or at least engine.max_tracked_users";
            return Err(("engine.hard_max_tracked_users".into(), m.into()));
        }
        Ok(Params::new(Settings {
            bucket: e.bucket.ms(),
            windows: self.windows()?,
            lateness: e.allowed_lateness.ms(),
            dedup_horizon: e.dedup_horizon.ms(),
            max_future_skew: e.max_future_skew.ms(),
            clock_tolerance: e.clock_tolerance().ms(),
            inactivity: self.churn.inactivity.ms(),
            fr_target,
            res_target,
            at_risk_share: self.sla.at_risk_share,
            baseline_users: self.acquisition.baseline_users,
            margin: self.acquisition.margin,
            clv_min_churn: self.acquisition.clv_min_churn,
            max_tracked_users: e.max_tracked_users,
            hard_max_tracked_users: e.hard_max_tracked_users,
            max_tracked_tickets: e.max_tracked_tickets,
            open_ticket_horizon: horizon,
            max_channels: e.max_channels,
            channels: e.channels.clone(),
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
