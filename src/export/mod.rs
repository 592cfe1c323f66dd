//! One model of the published series, rendered as Prometheus text or JSON.
//!
//! The engine produces [`Family`] values; the HTTP exporter, the output-topic
//! publisher and `replay` all render from them, so the three agree.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Samples pushed with a non-finite value (never rendered), since start.
static NON_FINITE: AtomicU64 = AtomicU64::new(0);

/// How many samples were pushed with a non-finite value (NaN or +-Inf) since
/// the process started. Each was made absent instead of rendered. Every
/// family's arithmetic is finite by construction (see docs/semantics.md,
/// "Numbers"), so this stays 0; it is the defence in depth.
pub fn non_finite_dropped() -> u64 {
    NON_FINITE.load(Ordering::Relaxed)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
    /// Quantiles by a `quantile` label, with `_sum` and `_count`.
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// One sample line: `name{labels} value`. For histograms the name carries the
/// `_bucket` / `_sum` / `_count` suffix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A metric family: the `# HELP` / `# TYPE` header and its samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
    /// Series of this family that could exist but are absent now (a ratio
    /// without a denominator, a quantile of an empty window), value NaN: not
    /// rendered, but the output topic tombstones them (see
    /// `kafka::publish::SeriesDiff`).
    pub absent: Vec<Sample>,
}

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
            absent: Vec::new(),
        }
    }

    /// Adds a sample of this family's own name (see [`Family::push_named`]).
    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        let name = self.name.to_string();
        self.push_named(name, labels, value);
    }

    /// Adds a sample. A non-finite value is never rendered: the series is
    /// absent instead, and the value is counted ([`non_finite_dropped`]) and
    /// logged once. Series absent on purpose use [`Family::push_absent`].
    pub fn push_named(&mut self, name: String, labels: &[(&str, &str)], value: f64) {
        if value.is_finite() {
            self.samples.push(sample(name, labels, value));
        } else {
            if NON_FINITE.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    series = %name,
                    "a metric value was not finite and is left out (further ones are only counted)"
                );
            }
            self.push_absent_named(name, labels);
        }
    }

    /// Records a series of this family's own name as absent now.
    pub fn push_absent(&mut self, labels: &[(&str, &str)]) {
        let name = self.name.to_string();
        self.push_absent_named(name, labels);
    }

    /// Records a series as absent now (a ratio without a denominator, a
    /// quantile of an empty window).
    pub fn push_absent_named(&mut self, name: String, labels: &[(&str, &str)]) {
        self.absent.push(sample(name, labels, f64::NAN));
    }

    /// Adds a ratio sample when the denominator is positive; absent otherwise.
    pub fn push_ratio(&mut self, labels: &[(&str, &str)], num: f64, den: f64) {
        if den > 0.0 {
            self.push(labels, num / den);
        } else {
            self.push_absent(labels);
        }
    }
}

fn sample(name: String, labels: &[(&str, &str)], value: f64) -> Sample {
    Sample {
        name,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
    }
}

/// Prometheus text exposition format 0.0.4.
pub fn to_prometheus_text(families: &[Family]) -> String {
    let mut out = String::with_capacity(families.len() * 256);
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for s in &f.samples {
            out.push_str(&s.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&format_value(s.value));
            out.push('\n');
        }
    }
    out
}

/// `[{"name", "labels", "value"}]`, labels as an object.
pub fn to_json(families: &[Family]) -> serde_json::Value {
    let mut arr = Vec::new();
    for f in families {
        for s in &f.samples {
            arr.push(sample_json(s));
        }
    }
    serde_json::Value::Array(arr)
}

pub fn sample_json(s: &Sample) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> = s
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({"name": s.name, "labels": labels, "value": s.value})
}

/// The key of a series on the output topic: its name and its labels sorted.
pub fn series_key(s: &Sample) -> String {
    let mut labels = s.labels.clone();
    labels.sort();
    let mut key = s.name.clone();
    key.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        let _ = write!(key, "{k}=\"{}\"", escape_label(v));
    }
    key.push('}');
    key
}

pub fn format_value(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_with_zero_denominator_is_absent() {
        let mut f = Family::new("cxpulse_x_ratio", Kind::Gauge, "x");
        f.push_ratio(&[("window", "1h")], 1.0, 0.0);
        f.push_absent(&[("window", "24h")]);
        assert!(f.samples.is_empty());
        assert_eq!(f.absent.len(), 2);
        f.push_ratio(&[("window", "1h")], 1.0, 4.0);
        assert_eq!(f.samples[0].value, 0.25);
    }

    #[test]
    fn a_non_finite_value_is_never_rendered_and_is_counted() {
        let before = non_finite_dropped();
        let mut f = Family::new("cxpulse_revenue_usd", Kind::Gauge, "Revenue.");
        f.push(&[("channel", "a")], f64::INFINITY);
        f.push(&[("channel", "b")], f64::NEG_INFINITY);
        f.push(&[("channel", "c")], f64::NAN);
        f.push_ratio(&[("channel", "d")], f64::INFINITY, 2.0);
        f.push(&[("channel", "e")], 2.5);
        // Tests run in parallel: other tests may count too, never less than these 4.
        assert!(non_finite_dropped() >= before + 4);
        assert_eq!(f.absent.len(), 4);
        let fams = [f];
        let text = to_prometheus_text(&fams);
        assert_eq!(
            text,
            "# HELP cxpulse_revenue_usd Revenue.\n# TYPE cxpulse_revenue_usd gauge\ncxpulse_revenue_usd{channel=\"e\"} 2.5\n"
        );
        let json = to_json(&fams).to_string();
        assert_eq!(
            json,
            r#"[{"labels":{"channel":"e"},"name":"cxpulse_revenue_usd","value":2.5}]"#
        );
    }

    #[test]
    fn text_format_escapes_labels_and_prints_integers_plainly() {
        let mut f = Family::new("cxpulse_signups", Kind::Gauge, "Signups.");
        f.push(&[("channel", "a\"b")], 3.0);
        f.push(&[], 0.5);
        let text = to_prometheus_text(&[f]);
        assert_eq!(
            text,
            "# HELP cxpulse_signups Signups.\n# TYPE cxpulse_signups gauge\ncxpulse_signups{channel=\"a\\\"b\"} 3\ncxpulse_signups 0.5\n"
        );
    }

    #[test]
    fn series_key_sorts_labels() {
        let s = Sample {
            name: "m".into(),
            labels: vec![
                ("window".into(), "1h".into()),
                ("channel".into(), "x".into()),
            ],
            value: 1.0,
        };
        assert_eq!(series_key(&s), "m{channel=\"x\",window=\"1h\"}");
    }
}
