//! Helpers for tests of several `cxpulse run` instances in one consumer
//! group (a fleet): a topic dumped one file per partition (for `cxpulse
//! replay --partition-per-file`), its records so far, series summed over
//! the instances, the partitions each instance says it exports
//! (`cxpulse_partition_owned`), the output topic folded by key, and a scrape
//! of every instance at one common clock T.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::Offset;

use super::broker::Record;
use super::process::{CxRun, unique_name};
use super::prom::{is_pipeline, key_of, series_key, values};

// ---------------------------------------------------------------------------
// The input topic
// ---------------------------------------------------------------------------

/// How many records each partition of a topic holds so far (its end offset,
/// from offset 0): the events produced so far.
///
/// tansu 0.6 answers the high watermark with the last batch's base offset
/// plus one, short of the end when that batch holds several records. So a reader
/// also tails the topic: each call reads the high watermarks, then consumes
/// until it has read past every one of them and its queue is empty (a batch
/// comes whole), and counts max(high watermark, offset after the last record
/// read).
pub struct Produced {
    watermarks: BaseConsumer,
    tail: BaseConsumer,
    topic: String,
    next: Vec<i64>,
}

impl Produced {
    pub fn new(brokers: &str, topic: &str, partitions: i32) -> Produced {
        let client = |what: &str| -> BaseConsumer {
            ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", unique_name(what))
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .create()
                .expect("harness: create topic reader")
        };
        let tail = client("cxpulse-test-tail");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("harness: tail assignment");
        }
        tail.assign(&tpl).expect("harness: assign tail");
        Produced {
            watermarks: client("cxpulse-test-watermarks"),
            tail,
            topic: topic.to_string(),
            next: vec![0; partitions as usize],
        }
    }

    /// Each partition's records so far, in partition order. Panics when the
    /// broker does not answer within 10 s.
    pub fn now(&mut self) -> Vec<i64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let high: Vec<i64> = (0..self.next.len() as i32)
            .map(|p| {
                self.watermarks
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("harness: watermarks of {}/{p}: {e}", self.topic))
                    .1
            })
            .collect();
        loop {
            let behind = self.next.iter().zip(&high).any(|(n, h)| n < h);
            let wait = if behind { 200 } else { 20 };
            match self.tail.poll(Duration::from_millis(wait)) {
                Some(Ok(m)) => {
                    if let Some(n) = self.next.get_mut(m.partition() as usize) {
                        *n = (*n).max(m.offset() + 1);
                    }
                }
                Some(Err(e)) => eprintln!("harness: tailing {}: {e}", self.topic),
                None if !behind => break,
                None => {}
            }
            assert!(
                Instant::now() < deadline,
                "harness: tailing {} stuck at {:?}, high watermarks {high:?}",
                self.topic,
                self.next
            );
        }
        self.next
            .iter()
            .zip(&high)
            .map(|(n, h)| *n.max(h))
            .collect()
    }

    /// The records so far, over all partitions.
    pub fn total(&mut self) -> i64 {
        self.now().iter().sum()
    }
}

/// Writes every record of `topic` to `dir/p<p>.ndjson`, partition p in
/// offset order, one record value a line, as `cxpulse replay
/// --partition-per-file` wants them (file i = partition i), reading each
/// partition to its end (the partition-EOF event, past the high watermark:
/// see [`Produced`]); call it once nothing is produced any more. Returns
/// the files in partition order and the records written per partition.
/// Panics on a record value holding a newline (it would be two lines) and
/// when the topic cannot be read to its end within 60 s.
pub fn dump_partitions(
    brokers: &str,
    topic: &str,
    partitions: i32,
    dir: &Path,
) -> (Vec<PathBuf>, Vec<usize>) {
    let mut produced = Produced::new(brokers, topic, partitions);
    let high = produced.now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("cxpulse-test-dump"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("harness: create dump consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("harness: dump assignment");
    }
    consumer.assign(&tpl).expect("harness: assign for dump");
    let mut files: Vec<std::io::BufWriter<std::fs::File>> = Vec::new();
    let mut paths = Vec::new();
    for p in 0..partitions {
        let path = dir.join(format!("p{p}.ndjson"));
        let f = std::fs::File::create(&path)
            .unwrap_or_else(|e| panic!("harness: create {}: {e}", path.display()));
        files.push(std::io::BufWriter::new(f));
        paths.push(path);
    }
    let mut next = vec![0i64; partitions as usize];
    let mut at_end = vec![false; partitions as usize];
    let deadline = Instant::now() + Duration::from_secs(60);
    while next.iter().zip(&high).any(|(n, h)| n < h) || at_end.iter().any(|e| !e) {
        assert!(
            Instant::now() < deadline,
            "harness: dump of {topic} stuck at offsets {next:?} (at the end: {at_end:?}), \
             records {high:?}"
        );
        let m = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                if let Some(e) = at_end.get_mut(p as usize) {
                    *e = true;
                }
                continue;
            }
            Some(Err(e)) => panic!("harness: dump of {topic}: {e}"),
            Some(Ok(m)) => m,
        };
        let p = m.partition() as usize;
        at_end[p] = false;
        assert_eq!(
            m.offset(),
            next[p],
            "harness: dump of {topic}/{p}: offsets out of order"
        );
        let value = m.payload().unwrap_or_default();
        assert!(
            !value.contains(&b'\n'),
            "harness: {topic}/{p} offset {} holds a newline",
            m.offset()
        );
        files[p].write_all(value).expect("harness: write dump");
        files[p].write_all(b"\n").expect("harness: write dump");
        next[p] = m.offset() + 1;
    }
    for f in &mut files {
        f.flush().expect("harness: flush dump");
    }
    let written = next.iter().map(|n| *n as usize).collect();
    (paths, written)
}

// ---------------------------------------------------------------------------
// Series over instances
// ---------------------------------------------------------------------------

/// The labels of a series as written (`name{k="v",...}`), values as written
/// (still escaped).
pub fn labels_of(series: &str) -> BTreeMap<String, String> {
    let key = series_key(series);
    let body = key
        .split_once('{')
        .map(|(_, b)| b.trim_end_matches('}'))
        .unwrap_or("");
    let mut out = BTreeMap::new();
    // series_key escapes `"` inside values, so `","` only separates labels.
    for part in body.split("\",") {
        if let Some((k, v)) = part.split_once("=\"") {
            out.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
    }
    out
}

/// The input partitions an instance exports, from its `/metrics`:
/// `cxpulse_partition_owned{topic,partition}` equal to 1.
pub fn owned_partitions(metrics: &str) -> BTreeSet<u32> {
    values(metrics)
        .into_iter()
        .filter(|(s, v)| s.starts_with("cxpulse_partition_owned{") && *v == 1.0)
        .filter_map(|(s, _)| labels_of(&s).get("partition")?.parse().ok())
        .collect()
}

/// The events with outcome `applied` in a `/metrics` text.
pub fn applied_events(metrics: &str) -> f64 {
    values(metrics)
        .into_iter()
        .filter(|(s, _)| {
            s.starts_with("cxpulse_events_total{") && s.contains("outcome=\"applied\"")
        })
        .map(|(_, v)| v)
        .sum()
}

/// The engine series that add up over instances holding disjoint sets of
/// input partitions: counts of events, users, tickets, responses, money and
/// the histograms' buckets, sums and counts (state of a partition is never
/// in two instances, and users and tickets are keyed by partition). Ratios,
/// means, quantiles, confidence bounds, CPA/ARPU/CLV, NPS and the clock do
/// not add up: they are compared through the output topic's fleet totals.
pub fn is_additive(series: &str) -> bool {
    const ADDITIVE: &[&str] = &[
        "cxpulse_events_total",
        "cxpulse_signups",
        "cxpulse_signups_total",
        "cxpulse_users",
        "cxpulse_marketing_spend_usd",
        "cxpulse_acquisitions",
        "cxpulse_funnel_users",
        "cxpulse_revenue_usd",
        "cxpulse_active_customers",
        "cxpulse_active_customers_now",
        "cxpulse_churned_customers",
        "cxpulse_reactivated_customers",
        "cxpulse_new_customers",
        "cxpulse_referral_invites",
        "cxpulse_referral_signups",
        "cxpulse_referral_rewards_usd",
        "cxpulse_csat_responses",
        "cxpulse_nps_responses",
        "cxpulse_ces_responses",
        "cxpulse_support_tickets_opened",
        "cxpulse_support_first_response_seconds_bucket",
        "cxpulse_support_first_response_seconds_sum",
        "cxpulse_support_first_response_seconds_count",
        "cxpulse_support_resolution_seconds_bucket",
        "cxpulse_support_resolution_seconds_sum",
        "cxpulse_support_resolution_seconds_count",
        "cxpulse_sla_breaches",
        "cxpulse_sla_decisions",
        "cxpulse_support_reopened",
        "cxpulse_support_open_tickets",
        "cxpulse_support_open_tickets_breaching",
        "cxpulse_support_tickets_at_risk",
        "cxpulse_tracked_users",
        "cxpulse_compacted_users",
        "cxpulse_users_forgotten_total",
        "cxpulse_tracked_tickets",
        "cxpulse_tickets_forgotten_total",
        "cxpulse_untracked_events_total",
    ];
    let name = series.split('{').next().unwrap_or(series);
    !is_pipeline(series) && ADDITIVE.contains(&name)
}

/// The series of several `/metrics` (or replay) texts that `keep` selects,
/// by output-topic key ([`series_key`]), summed over the texts (a series
/// absent from a text adds nothing).
pub fn sum_series(texts: &[&str], keep: impl Fn(&str) -> bool) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for t in texts {
        for (s, v) in values(t) {
            if keep(&s) {
                *out.entry(series_key(&s)).or_default() += v;
            }
        }
    }
    out
}

/// Whether two values agree: equal, or within 1e-9 relative (float sums in
/// another order). Ratios averaged instead of merged miss by far more.
pub fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// `a` against `b` key by key (a missing key counts as 0 when
/// `absent_is_zero`, else as a difference), as `key: a vs b` lines, at most
/// `max`.
pub fn compare_values(
    a: &BTreeMap<String, f64>,
    b: &BTreeMap<String, f64>,
    absent_is_zero: bool,
    max: usize,
) -> Vec<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| match (a.get(*k), b.get(*k)) {
            (Some(x), Some(y)) => !close(*x, *y),
            (Some(x), None) | (None, Some(x)) => !(absent_is_zero && *x == 0.0),
            (None, None) => false,
        })
        .take(max)
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect()
}

/// `cxpulse_clock_timestamp_seconds` of a `/metrics` text.
pub fn clock_of(metrics: &str) -> Option<f64> {
    values(metrics)
        .get("cxpulse_clock_timestamp_seconds")
        .copied()
}

/// Scrapes every instance until all answer with the same clock T, at least
/// `not_before` (epoch seconds; idle instances follow the wall clock in
/// whole seconds, so they agree once everything is applied); returns T
/// (seconds) and the texts, in order. Panics after `timeout` with the clocks
/// last seen.
///
/// `not_before`: a live engine applies an event's effects once T has passed
/// its `ts` by `engine.allowed_lateness`, while `cxpulse replay` applies all
/// of them at the end of input; to compare with a replay, wait for T >= the
/// last event time + `allowed_lateness`.
pub fn scrape_at_equal_clocks(
    runs: &[&CxRun],
    not_before: f64,
    timeout: Duration,
) -> (f64, Vec<String>) {
    let deadline = Instant::now() + timeout;
    loop {
        let texts: Vec<String> = runs.iter().map(|r| r.metrics()).collect();
        let clocks: Vec<Option<f64>> = texts.iter().map(|t| clock_of(t)).collect();
        if let Some(Some(t)) = clocks.first()
            && *t >= not_before
            && clocks.iter().all(|c| *c == Some(*t))
        {
            return (*t, texts);
        }
        assert!(
            Instant::now() < deadline,
            "the instances' clocks did not agree at or after {not_before} within {timeout:?}: \
             {clocks:?}"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
}

// ---------------------------------------------------------------------------
// The output topic
// ---------------------------------------------------------------------------

/// An output record, folded: its value (read exactly from the JSON text)
/// and its `as_of` (epoch ms).
#[derive(Clone, Debug, PartialEq)]
pub struct OutputValue {
    pub value: f64,
    pub as_of: i64,
    pub json: String,
}

/// The output topic as a compacted topic's reader sees it: the latest record
/// of every key, a tombstone (empty value) removing the key. `records` must
/// be in publication order per key (`Tansu::consume_all` sorts by partition
/// and offset, and a key has one partition). Panics on a record without key,
/// one that is not JSON, and one whose key is not the series key of its
/// name and labels.
pub fn fold_output(records: &[Record]) -> BTreeMap<String, OutputValue> {
    let mut latest = BTreeMap::new();
    for r in records {
        let key = r.key.as_deref().expect("an output record without key");
        if r.value.is_empty() {
            latest.remove(key);
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&r.value)
            .unwrap_or_else(|e| panic!("output record {key} is not JSON ({e}): {}", r.value));
        assert_eq!(
            json_key(&v).as_deref(),
            Some(key),
            "output record whose key is not its series key: {}",
            r.value
        );
        let value = top_level_number(&r.value, "value")
            .unwrap_or_else(|| panic!("output record {key} without a number value: {}", r.value));
        let as_of = v
            .get("as_of")
            .and_then(|a| a.as_str())
            .and_then(cxpulse::event::time::parse_rfc3339)
            .unwrap_or_else(|| panic!("output record {key} without as_of: {}", r.value));
        latest.insert(
            key.to_string(),
            OutputValue {
                value,
                as_of,
                json: r.value.clone(),
            },
        );
    }
    latest
}

/// The key built from an output record's JSON `name` and `labels`.
pub fn json_key(v: &serde_json::Value) -> Option<String> {
    let name = v.get("name")?.as_str()?;
    let labels = v
        .get("labels")?
        .as_object()?
        .iter()
        .map(|(k, v)| {
            let v = v.as_str()?;
            let esc = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            Some((k.clone(), esc))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(key_of(name, labels))
}

/// The number `field` of the JSON object `json` holds, parsed from its text
/// with `str::parse` (correctly rounded; serde_json without
/// `float_roundtrip` may read a float 1 ulp off); `None` if it is not a
/// number.
pub fn top_level_number(json: &str, field: &str) -> Option<f64> {
    let b = json.as_bytes();
    let mut depth = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while *b.get(i)? != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                let s = json.get(start..i)?;
                i += 1;
                let rest = json.get(i..)?.trim_start();
                if depth == 1
                    && s == field
                    && let Some(rest) = rest.strip_prefix(':')
                {
                    let rest = rest.trim_start();
                    let end = rest
                        .find(|c: char| !matches!(c, '0'..='9' | '-' | '+' | '.' | 'e' | 'E'))
                        .unwrap_or(rest.len());
                    return rest[..end].parse().ok();
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}
