//! One builder for the `cxpulse` config files of tests and benches
//! ([`CxConfig`]): only the keys set are written, every other key keeps
//! cxpulse's default (see config/cxpulse.toml and src/config.rs). Durations
//! are cxpulse's duration strings (`"200ms"`, `"1h"`, `"1000d"`).

use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// A `cxpulse` TOML config, built key by key.
#[derive(Clone, Debug, Default)]
pub struct CxConfig {
    doc: Table,
}

impl CxConfig {
    /// Nothing set: every key at its default.
    pub fn new() -> CxConfig {
        CxConfig::default()
    }

    /// The setup of the checkpoint tests: [`CxConfig::steady_engine`]; input
    /// `topic` only (no dead-letter, output or alerts topic); commit every
    /// 1 s, shutdown within 5 s; a quick group join with static membership
    /// (a restarted run takes the killed one's place in the group without
    /// waiting for its session to time out); ready only at lag 0.
    pub fn restartable(brokers: &str, group: &str, listen: &str, topic: &str) -> CxConfig {
        CxConfig::steady_engine()
            .kafka(brokers, group, &[topic])
            .dead_letter_topic("")
            .output_topic("")
            .alerts_topic("")
            .commit_interval("1s")
            .shutdown_timeout("5s")
            .quick_group_join()
            .static_membership()
            .listen(listen)
            .ready_max_lag(0)
    }

    /// The setup of the live tests with Prometheus: one input topic
    /// `events`, effects applied at once (`allowed_lateness` 0s, T follows
    /// the wall clock after 2 s idle), dead-letter, output and alerts topics,
    /// publishing and committing every second, always ready (`ready_max_lag`
    /// 100M).
    pub fn live(brokers: &str, group: &str, listen: &str) -> CxConfig {
        CxConfig::new()
            .allowed_lateness("0s")
            .idle_timeout("2s")
            .kafka(brokers, group, &["events"])
            .dead_letter_topic("dead-letter")
            .output_topic("metrics-out")
            .alerts_topic("alerts")
            .publish_interval("1s")
            .commit_interval("1s")
            .shutdown_timeout("3s")
            .listen(listen)
            .ready_max_lag(100_000_000)
    }

    /// `[engine]` with a small lateness (2 s) and a T that never follows the
    /// wall clock (`idle_timeout` 1000 days), so the window series do not
    /// depend on when they are read.
    pub fn steady_engine() -> CxConfig {
        CxConfig::new().allowed_lateness("2s").idle_timeout("1000d")
    }

    /// Sets `key` of the table `section` (dotted: `"kafka.librdkafka"`).
    pub fn set(mut self, section: &str, key: &str, value: impl Into<Value>) -> CxConfig {
        let mut table = &mut self.doc;
        for name in section.split('.') {
            table = table
                .entry(name)
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("harness: config {section}: {name} is not a table"));
        }
        table.insert(key.to_string(), value.into());
        self
    }

    fn get(&self, section: &str, key: &str) -> Option<&Value> {
        self.doc.get(section)?.as_table()?.get(key)
    }

    // [engine]

    /// Any `[engine]` key.
    pub fn engine(self, key: &str, value: impl Into<Value>) -> CxConfig {
        self.set("engine", key, value)
    }

    pub fn allowed_lateness(self, d: &str) -> CxConfig {
        self.engine("allowed_lateness", d)
    }

    pub fn idle_timeout(self, d: &str) -> CxConfig {
        self.engine("idle_timeout", d)
    }

    // [kafka]

    /// `brokers`, `group_id` and `input_topics`.
    pub fn kafka(self, brokers: &str, group: &str, input_topics: &[&str]) -> CxConfig {
        let topics: Vec<Value> = input_topics.iter().map(|t| Value::from(*t)).collect();
        self.set("kafka", "brokers", brokers)
            .set("kafka", "group_id", group)
            .set("kafka", "input_topics", topics)
    }

    /// `""`: no dead-letter topic.
    pub fn dead_letter_topic(self, topic: &str) -> CxConfig {
        self.set("kafka", "dead_letter_topic", topic)
    }

    /// `""`: no output topic.
    pub fn output_topic(self, topic: &str) -> CxConfig {
        self.set("kafka", "output_topic", topic)
    }

    /// `""`: no alerts topic.
    pub fn alerts_topic(self, topic: &str) -> CxConfig {
        self.set("kafka", "alerts_topic", topic)
    }

    pub fn publish_interval(self, d: &str) -> CxConfig {
        self.set("kafka", "publish_interval", d)
    }

    pub fn commit_interval(self, d: &str) -> CxConfig {
        self.set("kafka", "commit_interval", d)
    }

    pub fn shutdown_timeout(self, d: &str) -> CxConfig {
        self.set("kafka", "shutdown_timeout", d)
    }

    /// A `[kafka.librdkafka]` setting, passed through to librdkafka.
    pub fn librdkafka(self, key: &str, value: &str) -> CxConfig {
        self.set("kafka.librdkafka", key, value)
    }

    /// A small broker's group settings: `session.timeout.ms` 6000 (the
    /// first group join waits about half of it), `heartbeat.interval.ms` 500.
    pub fn quick_group_join(self) -> CxConfig {
        self.librdkafka("session.timeout.ms", "6000")
            .librdkafka("heartbeat.interval.ms", "500")
    }

    /// Static group membership: `consumer.group.instance.id` is the group
    /// id (set before) plus `-1`.
    pub fn static_membership(self) -> CxConfig {
        let group = self
            .get("kafka", "group_id")
            .and_then(Value::as_str)
            .expect("harness: static_membership: set the group (kafka) first")
            .to_string();
        self.librdkafka("consumer.group.instance.id", &format!("{group}-1"))
    }

    // [http]

    pub fn listen(self, addr: &str) -> CxConfig {
        self.set("http", "listen", addr)
    }

    pub fn ready_max_lag(self, messages: i64) -> CxConfig {
        self.set("http", "ready_max_lag", messages)
    }

    // [checkpoint]

    /// Checkpoints on: `dir` and `interval`.
    pub fn checkpoint(self, dir: &Path, interval: &str) -> CxConfig {
        let dir = dir
            .to_str()
            .unwrap_or_else(|| panic!("harness: checkpoint dir {} is not UTF-8", dir.display()));
        self.set("checkpoint", "dir", dir)
            .set("checkpoint", "interval", interval)
    }

    pub fn checkpoint_keep(self, files: i64) -> CxConfig {
        self.set("checkpoint", "keep", files)
    }

    /// `"previous"`, `"empty"` or `"fail"`.
    pub fn on_corrupt(self, what: &str) -> CxConfig {
        self.set("checkpoint", "on_corrupt", what)
    }

    // Output

    /// The TOML text.
    pub fn render(&self) -> String {
        toml::to_string(&self.doc).expect("harness: render the config")
    }

    /// Writes the TOML text to `path`; returns `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.render())
            .unwrap_or_else(|e| panic!("harness: write config {}: {e}", path.display()));
        path.to_path_buf()
    }

    /// The config as cxpulse loads it (panics if cxpulse refuses it).
    pub fn load(&self) -> cxpulse::config::Config {
        cxpulse::config::Config::from_toml_str(&self.render(), "harness", Vec::new())
            .unwrap_or_else(|e| {
                panic!(
                    "harness: cxpulse refuses the config: {e}\n{}",
                    self.render()
                )
            })
    }
}

/// The checkpoint files in `dir`, oldest first (the names sort by sequence
/// number); none when `dir` cannot be read.
pub fn checkpoint_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "ckpt"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
