//! Reading Prometheus text (what `/metrics` and `cxpulse replay` print):
//! series and values, sums over a prefix, the engine's series apart from the
//! pipeline's, label-order-free series keys, and differences between two
//! sets of series.

use std::collections::{BTreeMap, BTreeSet};

/// Series (as written) to value (as written).
pub fn series(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(s, v)| (s.to_string(), v.to_string()))
        .collect()
}

/// Series (as written) to value, the samples whose value is a number.
pub fn values(text: &str) -> BTreeMap<String, f64> {
    series(text)
        .into_iter()
        .filter_map(|(s, v)| Some((s, v.parse().ok()?)))
        .collect()
}

/// The value of series `s` (as written).
pub fn value(text: &str, s: &str) -> Option<f64> {
    series(text).get(s).and_then(|v| v.parse().ok())
}

/// The sum of the series (as written) that start with `prefix`.
pub fn sum(text: &str, prefix: &str) -> f64 {
    series(text)
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// Events with an outcome (applied, duplicate, late, invalid) in the engine.
pub fn events_seen(text: &str) -> f64 {
    sum(text, "cxpulse_events_total{")
}

/// The pipeline's own series (the rest of `/metrics` is the engine's, which
/// `replay` prints too).
pub fn is_pipeline(series: &str) -> bool {
    const PIPELINE: &[&str] = &[
        "cxpulse_consumer_lag",
        "cxpulse_event_to_metric_seconds",
        "cxpulse_dead_letter_records_total",
        "cxpulse_published_records_total",
        "cxpulse_delivery_",
        "cxpulse_offset_commits_total",
        "cxpulse_rebalances_total",
        "cxpulse_assigned_partitions",
        "cxpulse_kafka_",
        "cxpulse_consume_errors_total",
        // The consumer loop's turns (issue 12): how this process took its messages.
        "cxpulse_input_messages_total",
        "cxpulse_apply_turns_total",
        "cxpulse_clock_wall_advances_total",
        "cxpulse_pending_events",
        "cxpulse_engine_state_bytes",
        "cxpulse_engine_non_finite_values_total",
        "cxpulse_checkpoint",
        // State in Kafka and fleet totals (issue 10): the process's own.
        "cxpulse_state_",
        "cxpulse_partition_owned",
        "cxpulse_fleet_",
    ];
    let name = series.split('{').next().unwrap_or(series);
    !name.starts_with("cxpulse_") || PIPELINE.iter().any(|p| name.starts_with(p))
}

/// The engine's series (not [`is_pipeline`]), as written, to value.
pub fn engine_series(text: &str) -> BTreeMap<String, String> {
    series(text)
        .into_iter()
        .filter(|(k, _)| !is_pipeline(k))
        .collect()
}

/// The output-topic key (`export::series_key`: `name{k="v",...}`, labels
/// sorted by name, values escaped as in the text format, `{}` when there are
/// none) of a series as written in Prometheus text (labels in any order).
/// Two spellings of one series give one key.
pub fn series_key(series: &str) -> String {
    let Some((name, rest)) = series.split_once('{') else {
        return format!("{series}{{}}");
    };
    let body = rest
        .strip_suffix('}')
        .unwrap_or_else(|| panic!("unterminated labels: {series}"));
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut chars = body.chars();
    while !chars.as_str().is_empty() {
        let k: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {k} of {series}");
        // The value as written (still escaped): the key escapes the same way.
        let mut v = String::new();
        loop {
            match chars.next() {
                Some('\\') => {
                    v.push('\\');
                    v.extend(chars.next());
                }
                Some('"') => break,
                Some(c) => v.push(c),
                None => panic!("unterminated label value in {series}"),
            }
        }
        labels.push((k, v));
        match chars.next() {
            None | Some(',') => {}
            Some(c) => panic!("unexpected {c:?} after a label of {series}"),
        }
    }
    key_of(name, labels)
}

/// `name{k="v",...}` with the labels (values escaped) sorted.
pub fn key_of(name: &str, mut labels: Vec<(String, String)>) -> String {
    labels.sort();
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", l.join(","))
}

/// The series whose values differ between `a` and `b`, as
/// `series: a vs b` lines (at most `max`).
pub fn differences(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    max: usize,
) -> Vec<String> {
    differences_by(a, b, max, |x, y| x == y)
}

/// [`differences`] with `same` deciding whether two values are equal.
pub fn differences_by(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    max: usize,
    same: impl Fn(Option<&String>, Option<&String>) -> bool,
) -> Vec<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| !same(a.get(*k), b.get(*k)))
        .take(max)
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect()
}
