//! `/api/series` against `/metrics` for one engine state, served by the real
//! listener ([`crate::http::serve`]) over loopback TCP, with the consumer
//! loop replaced by a task answering render requests from a fixed engine;
//! and the page's access rules (basic auth on `/`, `/api/series`, assets).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::config::SlaSection;
use crate::engine::testkit::*;
use crate::export::to_prometheus_text;
use crate::http::{self, HttpState};
use crate::kafka::{LiveState, RenderRequest, Rendered};
use crate::web_config::WebConfig;

/// Two signups, a deposit, an urgent ticket answered after 7 minutes, two
/// CSAT answers (5 and 2), no CES answer; T = BASE + 20 min.
fn engine_state() -> Engine {
    let mut eng = engine(ZERO_LATENESS);
    let mut e = E {
        eng: &mut eng,
        n: 0,
    };
    e.offer(BASE, Some("u1"), signup(Some("organic"), None));
    e.offer(BASE + MIN, Some("u2"), signup(Some("paid"), None));
    e.offer(BASE + 2 * MIN, Some("u1"), deposit());
    e.offer(
        BASE + 3 * MIN,
        Some("u1"),
        support("t1", SupportAction::Opened, Some(Priority::Urgent)),
    );
    e.offer(
        BASE + 10 * MIN,
        Some("u1"),
        support("t1", SupportAction::AgentReplied, None),
    );
    e.offer(BASE + 11 * MIN, Some("u1"), rated(Some(5), None, None));
    e.offer(BASE + 12 * MIN, Some("u2"), rated(Some(2), None, None));
    e.offer(BASE + 20 * MIN, Some("u2"), deposit());
    eng
}

/// Serves `families` at `clock_ms` the way the consumer loop would.
fn answer_renders(families: Vec<Family>, clock_ms: Option<Millis>) -> mpsc::Sender<RenderRequest> {
    let (tx, mut rx) = mpsc::channel::<RenderRequest>(4);
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            let _ = req.reply.send(Rendered {
                families: families.clone(),
                clock_ms,
            });
        }
    });
    tx
}

async fn start(render: mpsc::Sender<RenderRequest>, web: WebConfig) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = HttpState {
        render,
        live: Arc::new(LiveState::new()),
        ready_max_lag: 1000,
        sla: SlaSection::default(),
    };
    tokio::spawn(async move {
        let _ = http::serve(listener, state, &web, std::future::pending()).await;
    });
    addr
}

struct Answer {
    code: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 GET (the answers here carry a Content-Length).
async fn get(addr: SocketAddr, path: &str, auth: Option<(&str, &str)>) -> Answer {
    use base64::Engine as _;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((u, p)) = auth {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Authorization: Basic {b}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.lines();
    let status = lines.next().expect("status line");
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        code,
        headers,
        body: body.to_string(),
    }
}

/// `name{k="v",...} value` of the Prometheus text format: name, labels
/// sorted, value.
fn parse_line(line: &str) -> (String, Vec<(String, String)>, f64) {
    let (series, value) = line.rsplit_once(' ').expect("value");
    let value: f64 = value.parse().expect("number");
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_string(), Vec::new(), value);
    };
    let inner = rest.strip_suffix('}').expect("closing brace");
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let k: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "{line}");
        let mut v = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => v.push('\n'),
                    Some(o) => v.push(o),
                    None => panic!("{line}"),
                },
                '"' => break,
                o => v.push(o),
            }
        }
        labels.push((k, v));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels.sort();
    (name.to_string(), labels, value)
}

fn labels_of(v: &Value) -> Vec<(String, String)> {
    let mut l: Vec<(String, String)> = v["labels"]
        .as_object()
        .expect("labels object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("label string").to_string()))
        .collect();
    l.sort();
    l
}

#[tokio::test]
async fn api_series_equals_the_engine_part_of_metrics() {
    let eng = engine_state();
    let families = eng.families();
    let clock = eng.clock();
    assert_eq!(clock, Some(BASE + 20 * MIN));
    let addr = start(
        answer_renders(families.clone(), clock),
        WebConfig::default(),
    )
    .await;

    let metrics = get(addr, "/metrics", None).await;
    assert_eq!(metrics.code, 200);
    // The loop used to format this text itself: the same bytes come first.
    assert!(metrics.body.starts_with(&to_prometheus_text(&families)));

    let api = get(addr, "/api/series", None).await;
    assert_eq!(api.code, 200, "{}", api.body);
    assert_eq!(api.header("content-type"), Some("application/json"));
    let json: Value = serde_json::from_str(&api.body).expect("JSON");

    // Every sample line of /metrics under an engine family, by name and labels.
    let engine_names: Vec<&str> = families.iter().map(|f| f.name).collect();
    let mut in_engine = false;
    let mut text: BTreeMap<(String, Vec<(String, String)>), f64> = BTreeMap::new();
    let mut text_lines = 0;
    for line in metrics.body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().expect("family name");
            in_engine = engine_names.contains(&name);
        } else if in_engine && !line.starts_with('#') {
            let (name, labels, value) = parse_line(line);
            text.insert((name, labels), value);
            text_lines += 1;
        }
    }
    assert!(text_lines > 100, "{text_lines} engine lines");
    assert_eq!(text.len(), text_lines, "no series twice");

    let series = json["series"].as_array().expect("series");
    assert_eq!(series.len(), text_lines);
    for s in series {
        let name = s["name"].as_str().expect("name").to_string();
        let labels = labels_of(s);
        let value = s["value"].as_f64().expect("value");
        let want = text
            .get(&(name.clone(), labels.clone()))
            .unwrap_or_else(|| panic!("{name}{labels:?} is not on /metrics"));
        assert_eq!(value, *want, "{name}{labels:?}");
        let sample = crate::export::Sample {
            name,
            labels,
            value,
        };
        assert_eq!(
            s["key"].as_str(),
            Some(crate::export::series_key(&sample).as_str())
        );
    }

    // Values a person can check: CSAT 1 of 2 answers in {4, 5}; one open
    // urgent ticket, first answered after 7 minutes, within its 15 (the
    // quantile is HdrHistogram's at 3 significant digits, in ms: 420 000 lies
    // in a bucket 256 ms wide, [419 840, 420 095], reported by its top).
    let value = |key: &str| {
        series
            .iter()
            .find(|s| s["key"] == key)
            .and_then(|s| s["value"].as_f64())
    };
    assert_eq!(value(r#"cxpulse_csat_ratio{window="1h"}"#), Some(0.5));
    assert_eq!(value(r#"cxpulse_csat_responses{window="24h"}"#), Some(2.0));
    assert_eq!(
        value(r#"cxpulse_support_open_tickets{priority="urgent"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            r#"cxpulse_support_first_response_quantile_seconds{priority="urgent",quantile="0.5",window="1h"}"#
        ),
        Some(420.095)
    );
    assert_eq!(
        value(r#"cxpulse_sla_breach_ratio{kind="first_response",priority="urgent",window="1h"}"#),
        Some(0.0)
    );

    // No CES answer: its ratio is absent (denominator 0), with no value,
    // and not among the series; nor on /metrics.
    let absent = json["absent"].as_array().expect("absent");
    let ces = absent
        .iter()
        .find(|s| s["key"] == r#"cxpulse_ces_easy_ratio{window="1h"}"#)
        .expect("CES ratio absent");
    assert_eq!(ces["name"], "cxpulse_ces_easy_ratio");
    assert!(ces.get("value").is_none());
    assert_eq!(value(r#"cxpulse_ces_easy_ratio{window="1h"}"#), None);
    assert!(!metrics.body.contains("cxpulse_ces_easy_ratio{"));
    let absent_count: usize = families.iter().map(|f| f.absent.len()).sum();
    assert_eq!(absent.len(), absent_count);

    // T, the wall clock, readiness (no Kafka here), the SLA targets.
    assert_eq!(
        json["clock_seconds"].as_f64(),
        Some((BASE + 20 * MIN) as f64 / 1000.0)
    );
    let wall = json["wall_seconds"].as_f64().expect("wall");
    assert!(wall > 1.7e9, "{wall}");
    assert_eq!(json["ready"], false);
    assert_eq!(
        json["ready_reason"],
        "no Kafka statistics yet (not connected)"
    );
    let urgent = &json["sla"]["targets"]["urgent"];
    assert_eq!(urgent["first_response_seconds"].as_f64(), Some(900.0));
    assert_eq!(urgent["resolution_seconds"].as_f64(), Some(14_400.0));
    assert_eq!(json["sla"]["at_risk_share"].as_f64(), Some(0.8));

    // The pipeline's own metrics: names apart from the engine's, values finite.
    let pipeline = json["pipeline"].as_array().expect("pipeline");
    assert!(
        pipeline
            .iter()
            .any(|s| s["name"] == "cxpulse_checkpoints_total"),
        "{pipeline:?}"
    );
    for p in pipeline {
        let name = p["name"].as_str().expect("name");
        assert!(!engine_names.contains(&name), "{name}");
        assert!(!name.ends_with("_bucket"), "{name}");
        assert!(p["value"].as_f64().is_some_and(f64::is_finite), "{p}");
    }
}

#[tokio::test]
async fn before_any_event_the_clock_is_null() {
    let eng = engine(ZERO_LATENESS);
    let addr = start(
        answer_renders(eng.families(), eng.clock()),
        WebConfig::default(),
    )
    .await;
    let api = get(addr, "/api/series", None).await;
    let json: Value = serde_json::from_str(&api.body).expect("JSON");
    assert!(json["clock_seconds"].is_null(), "{}", json["clock_seconds"]);
    assert!(json["series"].as_array().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_embedded() {
    let eng = engine(ZERO_LATENESS);
    let addr = start(
        answer_renders(eng.families(), eng.clock()),
        WebConfig::default(),
    )
    .await;
    let page = get(addr, "/", None).await;
    assert_eq!(page.code, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    for needle in [
        r#"id="health""#,
        r#"<select id="window""#,
        r#"data-state="loading""#,
        r#"src="assets/errors.js""#,
        r#"src="assets/app.js""#,
        r#"href="assets/app.css""#,
    ] {
        assert!(page.body.contains(needle), "{needle} missing");
    }
    // Nothing from elsewhere: no absolute URL in what the page loads (but
    // the SVG namespace name, which is not fetched).
    for path in [
        "/",
        "/assets/errors.js",
        "/assets/app.js",
        "/assets/app.css",
    ] {
        let a = get(addr, path, None).await;
        assert_eq!(a.code, 200, "{path}");
        assert_eq!(
            a.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        let body = a.body.replace("'http://www.w3.org/2000/svg'", "");
        assert!(!body.contains("http://"), "{path}");
        assert!(!body.contains("https://"), "{path}");
        assert!(!body.contains("//cdn"), "{path}");
    }
    assert_eq!(
        get(addr, "/assets/app.js", None)
            .await
            .header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    // No inline script: the policy allows scripts from this listener only
    // (a violation would be a console error, which tests/live_page.rs counts).
    assert!(!page.body.contains("<script>"), "an inline script");
    let csp = page.header("content-security-policy").unwrap_or_default();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
}

#[tokio::test]
async fn the_page_and_its_json_ask_for_the_same_credentials_as_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yml");
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    std::fs::write(&path, format!("basic_auth_users:\n  alice: {hash}\n")).expect("write");
    let web = WebConfig::load(&path).expect("web config");
    let eng = engine_state();
    let addr = start(answer_renders(eng.families(), eng.clock()), web).await;
    for p in [
        "/",
        "/api/series",
        "/assets/errors.js",
        "/assets/app.js",
        "/assets/app.css",
        "/metrics",
    ] {
        for (who, auth) in [
            ("no credentials", None),
            ("wrong password", Some(("alice", "wrong"))),
        ] {
            let a = get(addr, p, auth).await;
            assert_eq!(a.code, 401, "{p} {who}");
            assert_eq!(
                a.header("www-authenticate"),
                Some(r#"Basic realm="cxpulse""#),
                "{p} {who}"
            );
            assert!(!a.body.contains("cxpulse_"), "{p} {who}: {}", a.body);
        }
        let a = get(addr, p, Some(("alice", "s3cret"))).await;
        assert_eq!(a.code, 200, "{p}");
    }
    let a = get(addr, "/api/series", Some(("alice", "s3cret"))).await;
    let json: Value = serde_json::from_str(&a.body).expect("JSON");
    assert!(json["series"].as_array().is_some_and(|s| s.len() > 100));
}
