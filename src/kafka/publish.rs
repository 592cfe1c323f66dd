//! Records cxpulse produces: dead-letter records, changed series for the
//! output topic, SLA breach alerts; and their delivery with retries.
//!
//! The producer is idempotent, so librdkafka's own retries neither duplicate
//! nor reorder records. A record that still fails (`message.timeout.ms`
//! passed, a missing topic, a record too large, a refused authorization) is
//! counted by reason; what happens next depends on the stream (see
//! [`crate::kafka::outbox`] for output and alerts, the consumer loop for
//! dead letters). Records outstanding at the shutdown deadline are
//! abandoned, and that is counted and logged too.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::context::ProducerCtx;
use super::outbox::Attempted;
use crate::engine::BreachAlert;
use crate::event::Millis;
use crate::event::time::format_rfc3339;
use crate::export::{Family, series_key};
use crate::telemetry::{self, FailureReason, Stream};

/// Header names on dead-letter records.
pub mod header {
    /// Short stable code: a decode reason (`not_json`, `missing_field`, ...),
    /// `late`, or `future_ts`.
    pub const REASON: &str = "cxpulse.reason";
    /// Human-readable detail.
    pub const ERROR: &str = "cxpulse.error";
    pub const SOURCE_TOPIC: &str = "cxpulse.source.topic";
    pub const SOURCE_PARTITION: &str = "cxpulse.source.partition";
    pub const SOURCE_OFFSET: &str = "cxpulse.source.offset";
    /// The source message's Kafka timestamp (epoch ms), when it had one.
    pub const SOURCE_TIMESTAMP: &str = "cxpulse.source.timestamp";
    /// Present when the value was cut to fit the record size limit
    /// (`kafka.dead_letter_max_bytes`): the original value's length in bytes.
    pub const TRUNCATED: &str = "cxpulse.truncated";
}

/// One record to produce, owned so it can be sent again.
#[derive(Clone, Debug)]
pub struct OutRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<OwnedHeaders>,
}

impl OutRecord {
    fn as_future(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut r = FutureRecord::to(&self.topic);
        if let Some(k) = &self.key {
            r = r.key(k.as_slice());
        }
        if let Some(p) = &self.payload {
            r = r.payload(p.as_slice());
        }
        if let Some(h) = &self.headers {
            r = r.headers(h.clone());
        }
        r
    }
}

/// Where a dead-lettered message came from, and why it is dead-lettered.
pub struct DeadLetter<'a> {
    pub reason: &'a str,
    pub detail: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<Millis>,
}

/// The dead-letter record: the original key, value and headers, plus the
/// reason and source coordinates as headers.
pub fn dead_letter_record(
    dlq_topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    original_headers: Option<OwnedHeaders>,
    d: &DeadLetter<'_>,
) -> OutRecord {
    let mut h = original_headers.unwrap_or_default();
    let partition = d.partition.to_string();
    let offset = d.offset.to_string();
    let mut add = |k: &str, v: &str| {
        h = std::mem::take(&mut h).insert(Header {
            key: k,
            value: Some(v),
        });
    };
    add(header::REASON, d.reason);
    add(header::ERROR, d.detail);
    add(header::SOURCE_TOPIC, d.topic);
    add(header::SOURCE_PARTITION, &partition);
    add(header::SOURCE_OFFSET, &offset);
    if let Some(ts) = d.timestamp {
        add(header::SOURCE_TIMESTAMP, &ts.to_string());
    }
    OutRecord {
        topic: dlq_topic.to_string(),
        key: key.map(<[u8]>::to_vec),
        payload: payload.map(<[u8]>::to_vec),
        headers: Some(h),
    }
}

/// One alert record per breach, keyed by ticket id.
pub fn alert_record(topic: &str, a: &BreachAlert) -> OutRecord {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("deadline_rfc3339".into(), format_rfc3339(a.deadline).into());
        o.insert(
            "detected_at_rfc3339".into(),
            format_rfc3339(a.detected_at).into(),
        );
    }
    OutRecord {
        topic: topic.to_string(),
        key: Some(a.ticket_id.as_bytes().to_vec()),
        payload: Some(v.to_string().into_bytes()),
        headers: None,
    }
}

/// Remembers the last published value of every series, to publish only
/// changes. A series that disappears (a ratio losing its denominator) is
/// forgotten, so it is published again when it reappears.
#[derive(Debug, Default)]
pub struct SeriesDiff {
    /// Per series key: the value last published, or `None` after its tombstone.
    last: HashMap<String, Option<f64>>,
}

impl SeriesDiff {
    /// Output-topic records for every series whose value changed since the
    /// last call: key = series key, value = `{"name","labels","value","as_of"}`;
    /// and a tombstone (the key with no value) for every series that is
    /// absent now (e.g. a ratio whose denominator fell to 0) unless one was
    /// already sent, so that a compacted topic's reader does not keep a stale
    /// value. The first call of a process tombstones every absent series it
    /// can name: a previous process (before a crash and a restore from an
    /// older checkpoint) may have published it.
    pub fn changed(&mut self, topic: &str, families: &[Family], as_of: Millis) -> Vec<OutRecord> {
        let as_of = format_rfc3339(as_of);
        let mut seen: HashMap<String, Option<f64>> = HashMap::with_capacity(self.last.len());
        let mut out = Vec::new();
        let tombstone = |key: &str| OutRecord {
            topic: topic.to_string(),
            key: Some(key.as_bytes().to_vec()),
            payload: None,
            headers: None,
        };
        for f in families {
            for s in &f.samples {
                let key = series_key(s);
                let same = matches!(self.last.get(&key), Some(Some(v)) if v.to_bits() == s.value.to_bits());
                if !same {
                    let mut v = crate::export::sample_json(s);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("as_of".into(), as_of.clone().into());
                    }
                    out.push(OutRecord {
                        topic: topic.to_string(),
                        key: Some(key.clone().into_bytes()),
                        payload: Some(v.to_string().into_bytes()),
                        headers: None,
                    });
                }
                seen.insert(key, Some(s.value));
            }
            for s in &f.absent {
                let key = series_key(s);
                if !matches!(self.last.get(&key), Some(None)) {
                    out.push(tombstone(&key));
                }
                seen.insert(key, None);
            }
        }
        // Published before, not even named now (a whole family went away).
        let mut gone: Vec<&String> = self
            .last
            .iter()
            .filter(|(k, v)| v.is_some() && !seen.contains_key(*k))
            .map(|(k, _)| k)
            .collect();
        gone.sort();
        for key in gone {
            out.push(tombstone(key));
        }
        self.last = seen;
        out
    }
}

/// Room left in a record for what librdkafka and the broker add around key,
/// value and headers (record and batch framing, varints).
const RECORD_OVERHEAD: usize = 512;

/// The bytes of `r` that count against `message.max.bytes`, framing included.
fn record_size(r: &OutRecord) -> usize {
    let headers: usize = r.headers.as_ref().map_or(0, |h| {
        h.iter()
            .map(|x| x.key.len() + x.value.map_or(0, <[u8]>::len) + 10)
            .sum()
    });
    r.key.as_ref().map_or(0, Vec::len)
        + r.payload.as_ref().map_or(0, Vec::len)
        + headers
        + RECORD_OVERHEAD
}

/// Truncates the value of a dead-letter record so the whole record fits in
/// `max_bytes`, and says so in a `cxpulse.truncated` header (the original
/// value's length in bytes). Returns that length when it truncated.
pub fn fit_dead_letter(r: &mut OutRecord, max_bytes: usize) -> Option<usize> {
    let size = record_size(r);
    if size <= max_bytes {
        return None;
    }
    let payload = r.payload.as_mut()?;
    let original = payload.len();
    let marker = header::TRUNCATED.len() + 20 + 10;
    let keep = original.saturating_sub(size - max_bytes + marker);
    payload.truncate(keep);
    let len = original.to_string();
    let h = r.headers.take().unwrap_or_default().insert(Header {
        key: header::TRUNCATED,
        value: Some(&len),
    });
    r.headers = Some(h);
    Some(original)
}

/// Hands `records` to the producer once each (waiting while its queue is
/// full) and waits for each acknowledgement. Every failure is reported with
/// its reason; nothing is sent again here.
pub async fn send_batch(
    producer: FutureProducer<ProducerCtx>,
    stream: Stream,
    records: Vec<Attempted>,
) -> Vec<(Attempted, Result<(), FailureReason>)> {
    let mut in_flight = Vec::with_capacity(records.len());
    let mut out = Vec::with_capacity(records.len());
    for a in records {
        loop {
            match producer.send_result(a.record.as_future()) {
                Ok(f) => {
                    in_flight.push((a, f));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((e, _)) => {
                    let reason = report_failure(stream, &a.record.topic, &e);
                    out.push((a, Err(reason)));
                    break;
                }
            }
        }
    }
    for (a, f) in in_flight {
        let result = acknowledged(stream, &a.record.topic, f.await);
        out.push((a, result));
    }
    out
}

/// The outcome of one delivery, reported.
fn acknowledged<Canceled>(
    stream: Stream,
    topic: &str,
    ack: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, Canceled>,
) -> Result<(), FailureReason> {
    match ack {
        Ok(Ok(_)) => {
            telemetry::RecordPublished { stream }.emit();
            Ok(())
        }
        Ok(Err((e, _))) => Err(report_failure(stream, topic, &e)),
        Err(_canceled) => Err(report_failure(stream, topic, &KafkaError::Canceled)),
    }
}

/// Sends one dead-letter record up to `attempts` times, with backoff (100 ms
/// doubling to 10 s) between attempts; a permanent error ends it at once.
/// Returns the record, and the reason of the last failure when it was not
/// delivered.
pub async fn deliver_dead_letter(
    producer: FutureProducer<ProducerCtx>,
    record: OutRecord,
    attempts: u32,
) -> (OutRecord, Result<(), FailureReason>) {
    let stream = Stream::DeadLetter;
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let sent = loop {
            match producer.send_result(record.as_future()) {
                Ok(f) => break Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((e, _)) => break Err(report_failure(stream, &record.topic, &e)),
            }
        };
        let result = match sent {
            Ok(f) => acknowledged(stream, &record.topic, f.await),
            Err(reason) => Err(reason),
        };
        match result {
            Err(reason) if !reason.is_permanent() && attempt < attempts => {
                attempt += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            result => return (record, result),
        }
    }
}

fn report_failure(stream: Stream, topic: &str, error: &KafkaError) -> FailureReason {
    let reason = FailureReason::of(error);
    telemetry::DeliveryFailed {
        stream,
        topic,
        reason,
        error,
    }
    .emit();
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Kind;

    #[test]
    fn only_changed_series_are_published_with_as_of() {
        let fam = |v: f64| {
            let mut f = Family::new("cxpulse_signups", Kind::Gauge, "x");
            f.push(&[("window", "1h"), ("channel", "ads")], v);
            f.push(&[("window", "24h"), ("channel", "ads")], 5.0);
            vec![f]
        };
        let mut d = SeriesDiff::default();
        assert_eq!(d.changed("out", &fam(1.0), 0).len(), 2);
        assert!(d.changed("out", &fam(1.0), 0).is_empty());
        let recs = d.changed("out", &fam(2.0), 1_700_000_000_000);
        assert_eq!(recs.len(), 1);
        let key = String::from_utf8(recs[0].key.clone().unwrap()).unwrap();
        assert_eq!(key, r#"cxpulse_signups{channel="ads",window="1h"}"#);
        let v: serde_json::Value =
            serde_json::from_slice(recs[0].payload.as_ref().unwrap()).unwrap();
        assert_eq!(v["value"], 2.0);
        assert_eq!(v["labels"]["channel"], "ads");
        assert_eq!(v["as_of"], "2023-11-14T22:13:20Z");
        // The series disappears (say its denominator fell to 0): one tombstone.
        let recs = d.changed("out", &[], 1_700_000_060_000);
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().all(|r| r.payload.is_none()));
        let keys: Vec<String> = recs
            .iter()
            .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                r#"cxpulse_signups{channel="ads",window="1h"}"#,
                r#"cxpulse_signups{channel="ads",window="24h"}"#
            ]
        );
        // Gone stays gone: no second tombstone.
        assert!(d.changed("out", &[], 1_700_000_120_000).is_empty());
    }

    #[test]
    fn absent_series_get_one_tombstone_each_time_they_go_away() {
        let ratio = |num: f64, den: f64| {
            let mut f = Family::new("cxpulse_cpa_usd", Kind::Gauge, "h");
            f.push_ratio(&[("window", "1h"), ("channel", "ads")], num, den);
            vec![f]
        };
        let key = r#"cxpulse_cpa_usd{channel="ads",window="1h"}"#;
        let mut d = SeriesDiff::default();
        // First publish of the process: absent, tombstoned (a previous
        // process may have published it).
        let recs = d.changed("out", &ratio(10.0, 0.0), 0);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].key.as_deref(), Some(key.as_bytes()));
        assert!(recs[0].payload.is_none());
        // Still absent: nothing more.
        assert!(d.changed("out", &ratio(10.0, 0.0), 1).is_empty());
        // Present: its value.
        let recs = d.changed("out", &ratio(10.0, 4.0), 2);
        assert_eq!(recs.len(), 1);
        let v: serde_json::Value =
            serde_json::from_slice(recs[0].payload.as_ref().unwrap()).unwrap();
        assert_eq!(v["value"], 2.5);
        // Absent again: one tombstone.
        let recs = d.changed("out", &ratio(10.0, 0.0), 3);
        assert_eq!(recs.len(), 1);
        assert!(recs[0].payload.is_none());
        assert!(d.changed("out", &ratio(10.0, 0.0), 4).is_empty());
    }

    #[test]
    fn an_oversized_dead_letter_value_is_cut_to_fit_and_says_its_length() {
        let d = DeadLetter {
            reason: "too_large",
            detail: "message of 5000 bytes is over engine.max_message_bytes",
            topic: "events",
            partition: 0,
            offset: 9,
            timestamp: None,
        };
        let value = vec![b'x'; 5000];
        let mut r = dead_letter_record("dlq", Some(b"k"), Some(&value), None, &d);
        // Fits: untouched.
        assert_eq!(fit_dead_letter(&mut r, 1_000_000), None);
        assert_eq!(r.payload.as_ref().map(Vec::len), Some(5000));
        // 2000 bytes at most: cut, with the original length in a header.
        assert_eq!(fit_dead_letter(&mut r, 2000), Some(5000));
        assert!(record_size(&r) <= 2000, "{}", record_size(&r));
        let kept = r.payload.as_ref().map_or(0, Vec::len);
        assert!(kept > 1000 && kept < 2000, "{kept}");
        let h = r.headers.as_ref().expect("headers");
        let truncated = h
            .iter()
            .find(|x| x.key == header::TRUNCATED)
            .and_then(|x| x.value)
            .expect("cxpulse.truncated");
        assert_eq!(truncated, b"5000");
        // A limit below the headers themselves leaves an empty value.
        let mut r = dead_letter_record("dlq", None, Some(&value), None, &d);
        assert_eq!(fit_dead_letter(&mut r, 100), Some(5000));
        assert_eq!(r.payload.as_ref().map(Vec::len), Some(0));
    }

    #[test]
    fn dead_letter_record_keeps_key_value_and_says_why_and_where() {
        let r = dead_letter_record(
            "dlq",
            Some(b"u1"),
            Some(b"{oops"),
            None,
            &DeadLetter {
                reason: "not_json",
                detail: "message is not valid JSON",
                topic: "events",
                partition: 2,
                offset: 41,
                timestamp: Some(7),
            },
        );
        assert_eq!(r.key.as_deref(), Some(&b"u1"[..]));
        assert_eq!(r.payload.as_deref(), Some(&b"{oops"[..]));
        let h = r.headers.unwrap();
        let got: Vec<(String, String)> = h
            .iter()
            .map(|x| {
                (
                    x.key.to_string(),
                    String::from_utf8_lossy(x.value.unwrap()).into_owned(),
                )
            })
            .collect();
        assert!(
            got.contains(&("cxpulse.reason".into(), "not_json".into())),
            "{got:?}"
        );
        assert!(got.contains(&("cxpulse.source.topic".into(), "events".into())));
        assert!(got.contains(&("cxpulse.source.partition".into(), "2".into())));
        assert!(got.contains(&("cxpulse.source.offset".into(), "41".into())));
        assert!(got.contains(&("cxpulse.source.timestamp".into(), "7".into())));
    }
}
