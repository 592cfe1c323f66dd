//! TEMPORARY stand-in for helper B's state store (branch `state-store`),
//! with the exact API of design-10.md section B so the rebalance code
//! compiles before B is merged. Replaced by B's file at the merge.

use std::time::Duration;

use crate::config::Config;

pub struct StateStore {
    topic: String,
}

pub struct StoredSnapshot {
    pub bytes: Vec<u8>,
    pub next_offset: i64,
    pub epoch: u64,
    pub seq: u64,
}

pub struct Claim {
    pub epoch: u64,
    pub loaded: Option<StoredSnapshot>,
    pub bytes_read: u64,
    pub records_read: u64,
    pub refused: Vec<String>,
}

pub struct SaveStats {
    pub bytes: u64,
    pub chunks: u32,
    pub seconds: f64,
}

impl StateStore {
    pub fn new(cfg: &Config) -> anyhow::Result<StateStore> {
        Ok(StateStore {
            topic: format!("{}-cxpulse-state", cfg.kafka.group_id),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn ensure_topic(&self, _timeout: Duration) -> anyhow::Result<()> {
        anyhow::bail!("state store not merged yet")
    }

    pub fn load(&self, _topic: &str, _partition: i32, _timeout: Duration) -> anyhow::Result<Claim> {
        anyhow::bail!("state store not merged yet")
    }

    pub fn save(
        &self,
        _topic: &str,
        _partition: i32,
        _epoch: u64,
        _next_offset: i64,
        _bytes: &[u8],
        _timeout: Duration,
    ) -> anyhow::Result<SaveStats> {
        anyhow::bail!("state store not merged yet")
    }
}
