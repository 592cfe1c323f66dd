//! What the consumer knows about its connection, assignment and lag, shared
//! with `/readyz` and with the consumer loop's "caught up" check.
//!
//! Filled from librdkafka's rebalance callbacks and its statistics (emitted
//! every `statistics.interval.ms`, default 1 s here). A `std` mutex guards it:
//! it is touched once per statistics interval, per rebalance and per probe,
//! never across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use serde::Deserialize;

use crate::telemetry;

/// Shared live state of the consumer.
#[derive(Debug, Default)]
pub struct LiveState {
    inner: Mutex<Inner>,
    /// Wall-clock ms of the consumer loop's last turn (`/healthz`).
    heartbeat_ms: AtomicI64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Assigned partitions and their lag from the latest statistics
    /// (`None` until statistics show it).
    assigned: BTreeMap<(String, i32), Option<i64>>,
    /// Whether the latest statistics showed a broker connection up
    /// (`None` before the first statistics).
    connected: Option<bool>,
    /// When the latest statistics arrived.
    stats_at: Option<Instant>,
}

impl LiveState {
    pub fn new() -> LiveState {
        LiveState::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn assign(&self, parts: &[(String, i32)]) {
        let mut g = self.lock();
        for p in parts {
            g.assigned.insert(p.clone(), None);
        }
        telemetry::metrics()
            .assigned_partitions
            .set(g.assigned.len() as i64);
    }

    pub fn revoke(&self, parts: &[(String, i32)]) {
        let mut g = self.lock();
        for p in parts {
            g.assigned.remove(p);
            let _ = telemetry::metrics()
                .consumer_lag
                .remove_label_values(&[&p.0, &p.1.to_string()]);
        }
        telemetry::metrics()
            .assigned_partitions
            .set(g.assigned.len() as i64);
    }

    /// Takes one librdkafka statistics document. Returns the change of
    /// connectivity, if any, for the caller to report.
    pub fn apply_stats(&self, raw: &[u8]) -> Option<bool> {
        let stats: RawStats = match serde_json::from_slice(raw) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot parse librdkafka statistics");
                return None;
            }
        };
        let connected = stats
            .brokers
            .values()
            .any(|b| b.state == "UP" && (b.source == "learned" || b.source == "configured"));
        let mut g = self.lock();
        let keys: Vec<(String, i32)> = g.assigned.keys().cloned().collect();
        for key in keys {
            let lag = stats
                .topics
                .get(&key.0)
                .and_then(|t| t.partitions.get(&key.1.to_string()))
                .and_then(RawPartition::lag);
            if let Some(l) = lag {
                telemetry::metrics()
                    .consumer_lag
                    .with_label_values(&[&key.0, &key.1.to_string()])
                    .set(l);
            }
            g.assigned.insert(key, lag);
        }
        g.stats_at = Some(Instant::now());
        let changed = (g.connected != Some(connected)).then_some(connected);
        g.connected = Some(connected);
        changed
    }

    /// `Ok` when ready to serve: connected, partitions assigned, and the
    /// summed lag known and at most `max_lag`; else the reason.
    pub fn readiness(&self, max_lag: u64) -> Result<(), String> {
        let g = self.lock();
        match g.connected {
            None => return Err("no Kafka statistics yet (not connected)".into()),
            Some(false) => return Err("not connected to any Kafka broker".into()),
            Some(true) => {}
        }
        if g.assigned.is_empty() {
            return Err("no partitions assigned".into());
        }
        let mut total: u64 = 0;
        for ((topic, partition), lag) in &g.assigned {
            match lag {
                Some(l) => total += (*l).max(0) as u64,
                None => return Err(format!("lag of {topic}/{partition} not known yet")),
            }
        }
        if total > max_lag {
            return Err(format!("consumer lag {total} is above {max_lag}"));
        }
        Ok(())
    }

    /// True when statistics taken after `since` show every assigned
    /// partition (at least one) fully consumed.
    pub fn caught_up_since(&self, since: Instant) -> bool {
        let g = self.lock();
        g.stats_at.is_some_and(|t| t > since)
            && !g.assigned.is_empty()
            && g.assigned.values().all(|l| *l == Some(0))
    }

    pub fn beat(&self, wall_ms: i64) {
        self.heartbeat_ms.store(wall_ms, Ordering::Relaxed);
    }

    pub fn heartbeat_ms(&self) -> i64 {
        self.heartbeat_ms.load(Ordering::Relaxed)
    }
}

/// The parts of a librdkafka statistics document used here (the full schema
/// is librdkafka's STATISTICS.md); absent fields read as unknown.
#[derive(Debug, Default, Deserialize)]
struct RawStats {
    #[serde(default)]
    brokers: HashMap<String, RawBroker>,
    #[serde(default)]
    topics: HashMap<String, RawTopic>,
}

#[derive(Debug, Default, Deserialize)]
struct RawBroker {
    #[serde(default)]
    state: String,
    #[serde(default)]
    source: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawTopic {
    #[serde(default)]
    partitions: HashMap<String, RawPartition>,
}

fn unknown() -> i64 {
    -1
}

#[derive(Debug, Deserialize)]
struct RawPartition {
    #[serde(default = "unknown")]
    hi_offset: i64,
    #[serde(default = "unknown")]
    ls_offset: i64,
    #[serde(default = "unknown")]
    app_offset: i64,
    #[serde(default = "unknown")]
    next_offset: i64,
    #[serde(default)]
    fetchq_cnt: i64,
}

impl RawPartition {
    /// Messages on the broker not yet handed to the application. The end is
    /// the last stable offset (librdkafka reads committed data by default),
    /// else the high watermark; the position is the last message handed over
    /// plus one, or, before any, the fetch position less what sits
    /// prefetched in the queue.
    fn lag(&self) -> Option<i64> {
        let end = if self.ls_offset >= 0 {
            self.ls_offset
        } else {
            self.hi_offset
        };
        if end < 0 {
            return None;
        }
        let lag = if self.app_offset >= 0 {
            end - self.app_offset
        } else if self.next_offset >= 0 {
            end - self.next_offset + self.fetchq_cnt.max(0)
        } else {
            return None;
        };
        Some(lag.max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(app: i64, next: i64, hi: i64, state: &str) -> String {
        format!(
            r#"{{"brokers":{{"127.0.0.1:9092/1":{{"state":"{state}","source":"learned"}}}},
               "topics":{{"in":{{"partitions":{{"0":{{"hi_offset":{hi},"ls_offset":{hi},"app_offset":{app},"next_offset":{next},"fetchq_cnt":0}},
                                                 "-1":{{"hi_offset":-1}}}}}}}}}}"#
        )
    }

    #[test]
    fn lag_and_readiness_follow_the_statistics() {
        let live = LiveState::new();
        assert!(live.readiness(0).unwrap_err().contains("statistics"));
        live.assign(&[("in".into(), 0)]);
        let start = Instant::now();
        assert_eq!(
            live.apply_stats(stats(-1001, 0, 10, "UP").as_bytes()),
            Some(true)
        );
        assert!(live.readiness(5).unwrap_err().contains("lag 10"));
        assert!(live.readiness(10).is_ok());
        assert!(!live.caught_up_since(start));
        assert_eq!(live.apply_stats(stats(10, 10, 10, "UP").as_bytes()), None);
        assert!(live.readiness(0).is_ok());
        assert!(live.caught_up_since(start));
        assert!(
            !live.caught_up_since(Instant::now()),
            "stats older than the last message"
        );
        assert_eq!(
            live.apply_stats(stats(10, 10, 10, "CONNECT").as_bytes()),
            Some(false)
        );
        assert!(live.readiness(0).unwrap_err().contains("not connected"));
    }

    #[test]
    fn readiness_needs_an_assignment_with_known_lag() {
        let live = LiveState::new();
        live.apply_stats(stats(0, 0, 0, "UP").as_bytes());
        assert!(live.readiness(0).unwrap_err().contains("no partitions"));
        live.assign(&[("other".into(), 0)]);
        live.apply_stats(stats(0, 0, 0, "UP").as_bytes());
        assert!(live.readiness(0).unwrap_err().contains("not known"));
    }
}
