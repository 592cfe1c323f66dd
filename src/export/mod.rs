//! One model of the published series, rendered as Prometheus text or JSON.
//!
//! The engine produces [`Family`] values; the HTTP exporter, the output-topic
//! publisher and `replay` all render from them, so the three agree.

use std::fmt::Write;

use serde::Serialize;

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

    /// Adds a sample of this family's own name. Non-finite values are dropped:
    /// a ratio without a denominator is absent, never NaN or Inf.
    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        let name = self.name.to_string();
        self.push_named(name, labels, value);
    }

    /// Adds a sample; a non-finite value makes it absent.
    pub fn push_named(&mut self, name: String, labels: &[(&str, &str)], value: f64) {
        let sample = Sample {
            name,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        };
        if value.is_finite() {
            self.samples.push(sample);
        } else {
            self.absent.push(Sample {
                value: f64::NAN,
                ..sample
            });
        }
    }

    /// Records a series of this family's own name as absent now.
    pub fn push_absent(&mut self, labels: &[(&str, &str)]) {
        self.push(labels, f64::NAN);
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
        f.push(&[], f64::NAN);
        assert!(f.samples.is_empty());
        f.push_ratio(&[("window", "1h")], 1.0, 4.0);
        assert_eq!(f.samples[0].value, 0.25);
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
