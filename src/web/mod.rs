//! The live page at `/` and its JSON at `/api/series` (issue 13).
//!
//! The page (HTML, CSS and JavaScript under `assets/`, embedded in the
//! binary; nothing is fetched from elsewhere) polls `/api/series` and draws
//! three views: the support wallboard, growth, and retention & CX, with the
//! pipeline's health in a corner. What each view shows, which series, and
//! the JSON shape: docs/live-page.md.
//!
//! `/api/series` renders from the same [`Family`] values as `/metrics` and
//! the output topic (one source of truth): `series` are the samples
//! `/metrics` shows for the engine, `absent` the series that could exist but
//! have no value now (a ratio whose denominator is 0, a quantile of an empty
//! window), `pipeline` the pipeline's own metrics.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::config::SlaSection;
use crate::event::{Millis, Priority};
use crate::export::{self, Family, Sample, series_key};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ERRORS_JS: &str = include_str!("assets/errors.js");

/// The page may load and fetch only from this listener (no inline script,
/// nothing from the internet), may not be framed, and draws its favicon from
/// a `data:` URL. Values shown come from events (channel names), so this
/// backs up the page's rule of inserting them as text only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the page.
pub async fn index() -> Response {
    embedded("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /assets/app.js`.
pub async fn app_js() -> Response {
    embedded("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /assets/errors.js` (loaded first: counts the page's errors).
pub async fn errors_js() -> Response {
    embedded("text/javascript; charset=utf-8", ERRORS_JS)
}

/// `GET /assets/app.css`.
pub async fn app_css() -> Response {
    embedded("text/css; charset=utf-8", APP_CSS)
}

/// An embedded file; revalidated on each load, so a new binary's page is
/// never mixed with an old cached script.
fn embedded(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        body,
    )
        .into_response()
}

/// What `/api/series` is made of, apart from the engine's families.
pub struct SeriesInput<'a> {
    pub families: &'a [Family],
    /// The engine's clock T; `None` before any event.
    pub clock_ms: Option<Millis>,
    pub wall_ms: Millis,
    /// `/readyz`'s answer: `Err` holds the reason.
    pub ready: Result<(), String>,
    /// The pipeline's own metrics ([`crate::telemetry::PipelineMetrics::samples`]).
    pub pipeline: &'a [Sample],
    /// The SLA targets, shown next to the response and resolution times.
    pub sla: &'a SlaSection,
}

/// The body of `/api/series` (docs/live-page.md).
pub fn series_json(input: &SeriesInput<'_>) -> Value {
    let series: Vec<Value> = input
        .families
        .iter()
        .flat_map(|f| f.samples.iter())
        .filter(|s| s.value.is_finite())
        .map(|s| sample_json(s, true))
        .collect();
    let absent: Vec<Value> = input
        .families
        .iter()
        .flat_map(|f| f.absent.iter())
        .map(|s| sample_json(s, false))
        .collect();
    let pipeline: Vec<Value> = input
        .pipeline
        .iter()
        .map(|s| sample_json(s, true))
        .collect();
    let mut targets = Map::new();
    for p in Priority::ALL {
        let t = input.sla.targets.get(p);
        targets.insert(
            p.as_str().to_string(),
            json!({
                "first_response_seconds": seconds(t.first_response.ms()),
                "resolution_seconds": seconds(t.resolution.ms()),
            }),
        );
    }
    json!({
        "clock_seconds": input.clock_ms.map(seconds),
        "wall_seconds": seconds(input.wall_ms),
        "ready": input.ready.is_ok(),
        "ready_reason": input.ready.as_ref().err(),
        "series": series,
        "absent": absent,
        "pipeline": pipeline,
        "sla": {"at_risk_share": input.sla.at_risk_share, "targets": targets},
    })
}

fn seconds(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}

/// [`export::sample_json`] with the series' key, without the value for an
/// absent series.
fn sample_json(s: &Sample, with_value: bool) -> Value {
    let mut o = export::sample_json(s);
    if let Value::Object(m) = &mut o {
        if !with_value {
            m.remove("value");
        }
        m.insert("key".into(), Value::String(series_key(s)));
    }
    o
}

#[cfg(test)]
mod tests;
