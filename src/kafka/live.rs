//! What the consumer knows about its connection, assignment and lag, shared
//! with `/readyz` and with the consumer loop's "caught up" check.
//!
//! Filled from librdkafka's rebalance callbacks and its statistics (emitted
//! every `statistics.interval.ms`, default 1 s here). A `std` mutex guards it:
//! it is touched once per statistics interval, per rebalance and per probe,
//! never across an `.await`.
//!
//! A broker that stops answering without closing its connections (frozen,
//! hung, a network path that silently drops packets) still shows as `UP` in
//! the statistics until librdkafka times its requests out
//! (`socket.timeout.ms`, 60 s by default): such a connection, with requests
//! waiting and nothing received for [`STALLED_AFTER`], counts as not
//! answering. While one does, `/readyz` fails and the lag is not taken as
//! known (the consumer is not "caught up", so T does not follow the wall
//! clock over an outage and the events produced during it are not made late).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::telemetry;

/// A broker connection that is up, has requests in flight and has received
/// nothing for this long is not answering. Longer than a fetch long-poll
/// (`fetch.wait.max.ms`: 100 ms here, 500 ms by librdkafka's default), after
/// which a healthy broker answers even when it has no data.
pub const STALLED_AFTER: Duration = Duration::from_secs(10);

/// Shared live state of the consumer.
#[derive(Debug, Default)]
pub struct LiveState {
    inner: Mutex<Inner>,
    /// Wall-clock ms of the consumer loop's last turn (`/healthz`).
    heartbeat_ms: AtomicI64,
    /// How many times the assignment changed (assign or revoke): the
    /// consumer loop notices a rebalance callback that ran inside a poll.
    assignment_changes: AtomicU64,
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
    /// The brokers that the latest statistics showed up but not answering
    /// (see [`STALLED_AFTER`]), described for `/readyz` and the log.
    stalled: Option<String>,
    /// The code of the latest librdkafka client error (`Authentication`,
    /// `SSL`, ...), named by `/readyz` until a broker connection is up.
    last_error: Option<String>,
    /// Input partitions paused because a dead-letter record of theirs cannot
    /// be delivered, with the reason `/readyz` gives.
    dead_letter_paused: BTreeMap<(String, i32), String>,
    /// Assigned partitions whose state is being restored from the state
    /// store (paused; named by `/readyz`).
    restoring: BTreeSet<(String, i32)>,
}

impl LiveState {
    pub fn new() -> LiveState {
        LiveState::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many times the assignment changed so far (see
    /// [`Self::assign`] and [`Self::revoke`]).
    pub fn assignment_changes(&self) -> u64 {
        self.assignment_changes.load(Ordering::Acquire)
    }

    pub fn assign(&self, parts: &[(String, i32)]) {
        self.assignment_changes.fetch_add(1, Ordering::AcqRel);
        let mut g = self.lock();
        for p in parts {
            g.assigned.insert(p.clone(), None);
        }
        telemetry::metrics()
            .assigned_partitions
            .set(g.assigned.len() as i64);
    }

    pub fn revoke(&self, parts: &[(String, i32)]) {
        self.assignment_changes.fetch_add(1, Ordering::AcqRel);
        let mut g = self.lock();
        for p in parts {
            g.assigned.remove(p);
            g.restoring.remove(p);
            let _ = telemetry::metrics()
                .consumer_lag
                .remove_label_values(&[&p.0, &p.1.to_string()]);
        }
        let m = telemetry::metrics();
        m.assigned_partitions.set(g.assigned.len() as i64);
        m.state_restoring.set(g.restoring.len() as i64);
    }

    /// The state of (topic, partition) is being restored (`true`), or is
    /// ready (`false`).
    pub fn restoring(&self, topic: &str, partition: i32, on: bool) {
        let mut g = self.lock();
        let key = (topic.to_string(), partition);
        if on {
            g.restoring.insert(key);
        } else {
            g.restoring.remove(&key);
        }
        telemetry::metrics()
            .state_restoring
            .set(g.restoring.len() as i64);
    }

    /// Remembers the code of a librdkafka client error (never its text,
    /// which `/readyz` does not show).
    pub fn client_error(&self, code: &str) {
        self.lock().last_error = Some(code.to_string());
    }

    /// Consumption of (topic, partition) is paused for an undeliverable
    /// dead-letter record (`Some(why)`: named by `/readyz`), or resumed.
    pub fn dead_letter_paused(&self, topic: &str, partition: i32, why: Option<String>) {
        let mut g = self.lock();
        let key = (topic.to_string(), partition);
        match why {
            Some(w) => g.dead_letter_paused.insert(key, w),
            None => g.dead_letter_paused.remove(&key),
        };
    }

    /// Takes one librdkafka statistics document. Returns the change of
    /// connectivity, if any, for the caller to report.
    pub fn apply_stats(&self, raw: &[u8]) -> Option<bool> {
        let stats: RawStats = match serde_json::from_slice(raw) {
            Ok(s) => s,
            Err(e) => {
                telemetry::StatsUnreadable { error: &e }.emit();
                return None;
            }
        };
        // The group coordinator's logical broker is left out: its JoinGroup
        // legitimately waits for a whole rebalance.
        let real = || {
            stats.brokers.iter().filter(|(_, b)| {
                b.state == "UP" && (b.source == "learned" || b.source == "configured")
            })
        };
        let connected = real().next().is_some();
        let mut stalled: Vec<String> = real()
            .filter(|(_, b)| b.waitresp_cnt > 0 && b.rxidle >= STALLED_AFTER.as_micros() as i64)
            .map(|(name, b)| {
                format!(
                    "{name} ({} requests waiting, nothing received for {:.1} s)",
                    b.waitresp_cnt,
                    b.rxidle as f64 / 1e6
                )
            })
            .collect();
        stalled.sort();
        let stalled = (!stalled.is_empty()).then(|| stalled.join(", "));
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
        match (&g.stalled, &stalled) {
            (None, Some(s)) => telemetry::BrokersStalled::Stalled { brokers: s }.emit(),
            (Some(_), None) => telemetry::BrokersStalled::Answering.emit(),
            _ => {}
        }
        g.stalled = stalled;
        if connected {
            g.last_error = None;
        }
        let changed = (g.connected != Some(connected)).then_some(connected);
        g.connected = Some(connected);
        changed
    }

    /// `Ok` when ready to serve: connected, partitions assigned, and the
    /// summed lag known and at most `max_lag`; else the reason.
    pub fn readiness(&self, max_lag: u64) -> Result<(), String> {
        let g = self.lock();
        let last = g.last_error.as_ref().map_or(String::new(), |c| {
            format!(" (last Kafka client error: {c})")
        });
        match g.connected {
            None => return Err(format!("no Kafka statistics yet (not connected){last}")),
            Some(false) => return Err(format!("not connected to any Kafka broker{last}")),
            Some(true) => {}
        }
        if let Some(s) = &g.stalled {
            return Err(format!("Kafka broker not answering: {s}"));
        }
        if let Some((_, why)) = g.dead_letter_paused.iter().next() {
            let more = g.dead_letter_paused.len() - 1;
            let more = if more > 0 {
                format!(" (and {more} more partitions)")
            } else {
                String::new()
            };
            return Err(format!("{why}{more}"));
        }
        if !g.restoring.is_empty() {
            let names: Vec<String> = g
                .restoring
                .iter()
                .map(|(t, p)| format!("{t}/{p}"))
                .collect();
            return Err(format!(
                "restoring the state of partitions {}",
                names.join(", ")
            ));
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
    /// partition (at least one) fully consumed, with every broker answering
    /// (a lag last seen before a broker stopped answering is not known now).
    pub fn caught_up_since(&self, since: Instant) -> bool {
        let g = self.lock();
        g.stats_at.is_some_and(|t| t > since)
            && g.stalled.is_none()
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
    /// Requests sent and awaiting a response.
    #[serde(default)]
    waitresp_cnt: i64,
    /// Microseconds since the last receive on the connection (-1: none yet).
    #[serde(default = "unknown")]
    rxidle: i64,
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

    /// Statistics with a learned broker up, `waitresp` requests in flight
    /// and nothing received for `rxidle_s` seconds, plus an idle bootstrap
    /// connection and the group coordinator's logical broker.
    fn stats_waiting(waitresp: i64, rxidle_s: f64) -> String {
        let rxidle = (rxidle_s * 1e6) as i64;
        format!(
            r#"{{"brokers":{{
                 "127.0.0.1:9092/bootstrap":{{"state":"UP","source":"configured","waitresp_cnt":0,"rxidle":60000000}},
                 "127.0.0.1:9092/1":{{"state":"UP","source":"learned","waitresp_cnt":{waitresp},"rxidle":{rxidle}}},
                 "GroupCoordinator":{{"state":"UP","source":"logical","waitresp_cnt":1,"rxidle":60000000}}}},
               "topics":{{"in":{{"partitions":{{"0":{{"hi_offset":10,"ls_offset":10,"app_offset":10,"next_offset":10,"fetchq_cnt":0}}}}}}}}}}"#
        )
    }

    #[test]
    fn a_broker_up_but_not_answering_is_not_ready_and_its_lag_not_known() {
        let live = LiveState::new();
        live.assign(&[("in".into(), 0)]);
        let start = Instant::now();
        // Healthy: a fetch in flight, answers coming; an idle bootstrap
        // connection and a coordinator waiting on a JoinGroup are fine.
        live.apply_stats(stats_waiting(1, 0.05).as_bytes());
        assert!(live.readiness(0).is_ok());
        assert!(live.caught_up_since(start));
        // Nothing waiting for a while is idle, not stalled.
        live.apply_stats(stats_waiting(0, 30.0).as_bytes());
        assert!(live.readiness(0).is_ok());
        // Requests waiting, nothing received for longer than STALLED_AFTER:
        // still "UP" in the statistics, but not answering.
        let stalled = STALLED_AFTER.as_secs_f64() + 1.0;
        assert_eq!(
            live.apply_stats(stats_waiting(2, stalled).as_bytes()),
            None,
            "the connection itself did not change"
        );
        let why = live.readiness(0).unwrap_err();
        assert!(why.contains("not answering"), "{why}");
        assert!(why.contains("127.0.0.1:9092/1"), "{why}");
        assert!(!live.caught_up_since(start));
        // Answering again.
        live.apply_stats(stats_waiting(1, 0.01).as_bytes());
        assert!(live.readiness(0).is_ok());
        assert!(live.caught_up_since(start));
    }

    #[test]
    fn a_partition_paused_for_dead_letters_is_not_ready_until_resumed() {
        let live = LiveState::new();
        live.assign(&[("in".into(), 0)]);
        live.apply_stats(stats(10, 10, 10, "UP").as_bytes());
        assert!(live.readiness(100).is_ok());
        live.dead_letter_paused("in", 0, Some("in/0 paused".into()));
        assert_eq!(live.readiness(100).unwrap_err(), "in/0 paused");
        live.dead_letter_paused("in", 1, Some("in/1 paused".into()));
        assert_eq!(
            live.readiness(100).unwrap_err(),
            "in/0 paused (and 1 more partitions)"
        );
        live.dead_letter_paused("in", 0, None);
        live.dead_letter_paused("in", 1, None);
        assert!(live.readiness(100).is_ok());
    }

    #[test]
    fn not_ready_while_partitions_restore_naming_them() {
        let live = LiveState::new();
        live.assign(&[("in".into(), 0), ("in".into(), 1)]);
        live.apply_stats(stats(10, 10, 10, "UP").as_bytes());
        live.restoring("in", 1, true);
        live.restoring("in", 0, true);
        assert_eq!(
            live.readiness(100).unwrap_err(),
            "restoring the state of partitions in/0, in/1"
        );
        live.restoring("in", 0, false);
        assert_eq!(
            live.readiness(100).unwrap_err(),
            "restoring the state of partitions in/1"
        );
        // A revoke ends a restore too.
        live.revoke(&[("in".into(), 1)]);
        assert!(live.readiness(100).is_ok());
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

    #[test]
    fn not_ready_names_the_last_client_error_until_a_broker_is_up() {
        let live = LiveState::new();
        live.client_error("Authentication");
        live.apply_stats(stats(0, 0, 0, "AUTH_REQ").as_bytes());
        assert_eq!(
            live.readiness(0).unwrap_err(),
            "not connected to any Kafka broker (last Kafka client error: Authentication)"
        );
        live.apply_stats(stats(0, 0, 0, "UP").as_bytes());
        live.apply_stats(stats(0, 0, 0, "DOWN").as_bytes());
        assert_eq!(
            live.readiness(0).unwrap_err(),
            "not connected to any Kafka broker"
        );
    }
}
