//! The live page at `/` (issue 13) in a real headless browser: `cxpulse run`
//! against tansu, a small hand-computed event set, then Debian's chromium
//! (driven over the DevTools pipe, tests/common/browser.rs) renders the three
//! views, and the test reads the DOM after the page's JavaScript ran.
//!
//! It checks the page's DOM contract (docs/live-page.md):
//! `body[data-state="ok"]`, `data-errors="0"`, every number shown
//! (`[data-key][data-value]`) equal to `/metrics`' sample of that key (or,
//! for a number the page derives, to the sum or quotient of `/metrics`'
//! samples its key names), the hand-computed figures below shown, absent
//! ratios shown as an empty state (`data-empty` with a reason, no
//! `data-value`), no `NaN` / `undefined` / `Infinity` / `null` in the text,
//! the health corner (lag 0, events/s 0 once idle, T behind the wall clock,
//! ready), and no console errors (console.error, uncaught exceptions, failed
//! loads). Then the window selector (1h), and the error state once cxpulse
//! is gone. Before the browser, `/api/series`' `series` must equal
//! `/metrics`' engine samples at the same T. Screenshots of the three views
//! go to `target/live-page/{support,growth,retention}.png`.
//!
//! chromium missing fails the test (never skips): run scripts/setup-tools.sh.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Browser, CxConfig, CxRun, Tansu, free_addr, is_pipeline, key_of, serial, series_key};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// The views of the page.
const VIEWS: [&str; 3] = ["support", "growth", "retention"];

// ---------------------------------------------------------------------------
// The event set, and what it must show (worked out by hand from METRICS.md)
// ---------------------------------------------------------------------------

/// The events, in time order, as (Kafka key, JSON), relative to `t` (epoch
/// ms, the engine's final clock T: the last event's `ts`). `t` is 30 s into
/// a minute bucket, so E (T rounded down to the bucket) = T - 30 s and a
/// rolling window covers `[E - W, E)`: every event but the last is inside
/// the 1h (from T-30m on) or 24h windows; the last one (at T) sets T only.
///
/// What they give, by hand (METRICS.md; SLA defaults: urgent first response
/// 15 min, high 1 h, normal 4 h; at risk at 80 % of the target used):
///
/// Support, at T:
/// - t4 (normal) opened T-200m, no reply: 200 of its 240 min used = 83 % ≥
///   80 %: at risk, first response. `tickets_at_risk{normal,first_response}` = 1.
/// - t1 (urgent) opened T-30m, no reply: deadline T-15m passed, still
///   waiting: `open_tickets_breaching{urgent,first_response}` = 1 (breaching
///   now), `sla_breaches{24h,urgent,first_response}` = 1, and nothing met:
///   `sla_breach_ratio{24h,urgent,first_response}` = 1 / (1 + 0) = 1.
/// - t2 (high) opened T-29m, agent reply T-25m: first response 240 s, met;
///   still open. First-response p50 = p90 = 240 s (one sample; HdrHistogram
///   with 3 significant digits prints 240.127).
/// - t3 (normal) opened T-28m, reply T-20m (480 s), resolved T-10m (1080 s).
/// - Open tickets: urgent 1 (t1), high 1 (t2), normal 1 (t4).
/// - CSAT answers in the 24h window: 5, 4, 4, 2: three of four in {4, 5}:
///   `csat_ratio{24h}` = 3/4 = 0.75, `csat_responses{24h}` = 4; Wilson 95 %
///   (n = 4, p = 0.75, z² = 3.8416): centre 0.75 + 0.4802 = 1.2302, spread
///   1.96 · sqrt(0.046875 + 0.060025) = 0.6408, over 1 + 0.9604:
///   lower 0.5894 / 1.9604 = 0.3006, upper 1.8710 / 1.9604 = 0.9544.
///
/// Growth, 24h window:
/// - Signups: u1 organic, u2 and u3 paid_search, u4 with a referrer and no
///   channel = referral: 4 signups, `cxpulse_users` = 4, so
///   `user_growth_ratio{24h}` = 4/4 = 1.
/// - Spend paid_search $100; u2 and u3 (paid_search) first deposit in the
///   window: 2 acquisitions: `cpa_usd{24h,paid_search}` = 100/2 = 50.
/// - Spend social $20, and no social signup: the channel exists with 0
///   signups and 0 acquisitions: `cpa_usd{24h,social}` and
///   `conversion_ratio{24h,social,first_deposit}` absent (empty states);
///   over all channels the page's CPA is $120 / 2 = $60.
/// - Funnel paid_search: 2 signups, 2 first deposits:
///   `conversion_ratio{24h,paid_search,first_deposit}` = 1; organic: 0 of 1
///   (a shown 0, not an empty state).
/// - Referral: 1 referral signup (u4) / 2 active customers (u2, u3):
///   `referral_k_factor{24h}` = 0.5.
/// - CLV paid_search: revenue $1.50 (u2's trade fee) / 2 active customers =
///   ARPU $0.75 over 30d; the 30d churn ratio is absent (no one was active
///   at the window's start) and counts 0, so the floor 0.01 applies:
///   `clv_usd{paid_search}` = 0.75 / 0.01 = 75.
///
/// Retention and CX: no NPS and no CES answers: `nps{24h}`, `ces_mean{24h}`
/// absent; churn: active at the window's start = 2 now + 0 churned - 2 new
/// - 0 reactivated = 0: `churn_ratio{24h}` absent; no signup 1-2 days ago:
///   `cohort_retention_ratio{day="1"}` absent. The page must show these as
///   empty states.
fn events(t: i64) -> Vec<(String, String)> {
    let support = |u: &str, ticket: &str, action: &str| json!({"type": "support", "user_id": u, "ticket_id": ticket, "action": action});
    let opened = |u: &str, ticket: &str, priority: &str| {
        let mut v = support(u, ticket, "opened");
        v["priority"] = json!(priority);
        v
    };
    let rated = |u: &str, ticket: &str, csat: u8| {
        let mut v = support(u, ticket, "rated");
        v["csat"] = json!(csat);
        v
    };
    let list: Vec<(i64, Value)> = vec![
        // Acquisition.
        (
            -6 * HOUR,
            json!({"type": "signup", "user_id": "u1", "channel": "organic"}),
        ),
        (
            -6 * HOUR + MIN,
            json!({"type": "signup", "user_id": "u2", "channel": "paid_search"}),
        ),
        (
            -6 * HOUR + 2 * MIN,
            json!({"type": "signup", "user_id": "u3", "channel": "paid_search"}),
        ),
        (
            -6 * HOUR + 3 * MIN,
            json!({"type": "signup", "user_id": "u4", "referrer_id": "u1"}),
        ),
        (
            -5 * HOUR,
            json!({"type": "referral", "user_id": "u1", "action": "invite_sent"}),
        ),
        (
            -4 * HOUR,
            json!({"type": "spend", "channel": "paid_search", "amount_usd": 100}),
        ),
        (
            -4 * HOUR + MIN,
            json!({"type": "deposit", "user_id": "u2", "amount_usd": 500}),
        ),
        (
            -4 * HOUR + 2 * MIN,
            json!({"type": "deposit", "user_id": "u3", "amount_usd": 250}),
        ),
        (
            -4 * HOUR + 3 * MIN,
            json!({"type": "spend", "channel": "social", "amount_usd": 20}),
        ),
        // Support.
        (-200 * MIN, opened("u4", "t4", "normal")),
        (-30 * MIN, opened("u1", "t1", "urgent")),
        (-29 * MIN, opened("u2", "t2", "high")),
        (-28 * MIN, opened("u3", "t3", "normal")),
        (-25 * MIN, support("u2", "t2", "agent_replied")),
        (-20 * MIN, support("u3", "t3", "agent_replied")),
        (-10 * MIN, support("u3", "t3", "resolved")),
        // CSAT: 5, 4, 4, 2.
        (-9 * MIN, rated("u3", "t3", 5)),
        (-8 * MIN, rated("u2", "t2", 4)),
        (-7 * MIN, rated("u1", "survey", 4)),
        (-6 * MIN, rated("u4", "survey", 2)),
        // Revenue: u2's trade fee.
        (
            -5 * MIN,
            json!({"type": "trade", "user_id": "u2", "notional_usd": 1000, "fee_usd": 1.5}),
        ),
        // The last event sets T (in the current bucket: in no window).
        (
            0,
            json!({"type": "deposit", "user_id": "u3", "amount_usd": 50}),
        ),
    ];
    list.into_iter()
        .enumerate()
        .map(|(i, (off, mut v))| {
            v["event_id"] = json!(format!("lp-{i}"));
            v["ts"] = json!(t + off);
            // Keyed by user; spend by channel.
            let key = v["user_id"]
                .as_str()
                .or(v["channel"].as_str())
                .unwrap_or_default()
                .to_string();
            (key, v.to_string())
        })
        .collect()
}

/// `name{labels}` as `export::series_key` writes it (labels sorted).
fn key(name: &str, labels: &[(&str, &str)]) -> String {
    key_of(
        name,
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// A series: name, labels (`window` is 24h where the series has one).
type Series = (&'static str, &'static [(&'static str, &'static str)]);

const W24: (&str, &str) = ("window", "24h");
const URGENT_FR: [(&str, &str); 2] = [("priority", "urgent"), ("kind", "first_response")];

/// The hand-computed figures (see [`events`]) each view must show.
const EXPECTED: &[(&str, Series, f64)] = &[
    (
        "support",
        ("cxpulse_support_open_tickets", &[("priority", "urgent")]),
        1.0,
    ),
    (
        "support",
        ("cxpulse_support_open_tickets", &[("priority", "high")]),
        1.0,
    ),
    (
        "support",
        ("cxpulse_support_open_tickets", &[("priority", "normal")]),
        1.0,
    ),
    (
        "support",
        ("cxpulse_support_open_tickets_breaching", &URGENT_FR),
        1.0,
    ),
    (
        "support",
        (
            "cxpulse_support_tickets_at_risk",
            &[("priority", "normal"), ("kind", "first_response")],
        ),
        1.0,
    ),
    (
        "support",
        (
            "cxpulse_sla_breach_ratio",
            &[W24, URGENT_FR[0], URGENT_FR[1]],
        ),
        1.0,
    ),
    ("support", ("cxpulse_csat_ratio", &[W24]), 0.75),
    ("growth", ("cxpulse_user_growth_ratio", &[W24]), 1.0),
    (
        "growth",
        ("cxpulse_cpa_usd", &[W24, ("channel", "paid_search")]),
        50.0,
    ),
    (
        "growth",
        (
            "cxpulse_conversion_ratio",
            &[W24, ("channel", "paid_search"), ("stage", "first_deposit")],
        ),
        1.0,
    ),
    (
        "growth",
        (
            "cxpulse_conversion_ratio",
            &[W24, ("channel", "organic"), ("stage", "first_deposit")],
        ),
        0.0,
    ),
    ("growth", ("cxpulse_referral_k_factor", &[W24]), 0.5),
    (
        "growth",
        ("cxpulse_clv_usd", &[("channel", "paid_search")]),
        75.0,
    ),
];

/// Series a view must show as an empty state (absent: the denominator is 0).
const EXPECTED_EMPTY: &[(&str, Series)] = &[
    ("growth", ("cxpulse_cpa_usd", &[W24, ("channel", "social")])),
    (
        "growth",
        (
            "cxpulse_conversion_ratio",
            &[W24, ("channel", "social"), ("stage", "first_deposit")],
        ),
    ),
    ("retention", ("cxpulse_nps", &[W24])),
    ("retention", ("cxpulse_ces_mean", &[W24])),
    ("retention", ("cxpulse_churn_ratio", &[W24])),
    (
        "retention",
        ("cxpulse_cohort_retention_ratio", &[("day", "1")]),
    ),
];

/// The hand-computed figures of `view`, as (series key, value).
fn expected_values(view: &str) -> Vec<(String, f64)> {
    EXPECTED
        .iter()
        .filter(|(v, _, _)| *v == view)
        .map(|(_, (name, labels), x)| (key(name, labels), *x))
        .collect()
}

/// Series `view` must show as an empty state.
fn expected_empty(view: &str) -> Vec<String> {
    EXPECTED_EMPTY
        .iter()
        .filter(|(v, _)| *v == view)
        .map(|(_, (n, l))| key(n, l))
        .collect()
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A plain HTTP/1.0 GET: (status, headers lower-cased, body).
fn get(addr: &str, path: &str) -> (u16, BTreeMap<String, String>, String) {
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no header end in {text:?}"));
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: bad status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (code, headers, body.to_string())
}

/// `/metrics`' samples (series key to value).
fn metrics(addr: &str) -> BTreeMap<String, f64> {
    scrape(addr, |_| true)
}

/// `/metrics`' engine samples (not the pipeline's own), key to value.
fn engine_metrics(addr: &str) -> BTreeMap<String, f64> {
    scrape(addr, |s| !is_pipeline(s))
}

/// `/metrics`' samples whose series (as written) `keep` accepts.
fn scrape(addr: &str, keep: impl Fn(&str) -> bool) -> BTreeMap<String, f64> {
    let (code, _, body) = get(addr, "/metrics");
    assert_eq!(code, 200, "/metrics: {body}");
    common::values(&body)
        .into_iter()
        .filter(|(s, _)| keep(s))
        .map(|(s, v)| (series_key(&s), v))
        .collect()
}

/// `/api/series` parsed (status 200 and `application/json` checked).
fn api_series(addr: &str) -> Value {
    let (code, headers, body) = get(addr, "/api/series");
    assert_eq!(code, 200, "/api/series: {body}");
    let ct = headers.get("content-type").cloned().unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "/api/series content-type {ct:?}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/api/series is not JSON ({e}): {body}"))
}

/// The `series` of an `/api/series` answer, key to value; checks that each
/// entry's `key` is its name and labels as `export::series_key` writes them.
fn api_samples(api: &Value, list: &str) -> BTreeMap<String, Option<f64>> {
    let arr = api[list]
        .as_array()
        .unwrap_or_else(|| panic!("/api/series has no {list} array: {api}"));
    arr.iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap_or_else(|| panic!("no name: {s}"));
            let labels: Vec<(String, String)> = s["labels"]
                .as_object()
                .unwrap_or_else(|| panic!("no labels object: {s}"))
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let k = s["key"].as_str().unwrap_or_else(|| panic!("no key: {s}"));
            assert_eq!(
                k,
                key_of(name, labels),
                "{list} entry's key vs its name and labels"
            );
            (k.to_string(), s["value"].as_f64())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------

/// What the test reads from the rendered page, as one JSON string.
const SNAPSHOT_JS: &str = r#"JSON.stringify((() => {
  const b = document.body;
  const els = [...document.querySelectorAll('[data-key]')].map(e => ({
    key: e.dataset.key,
    value: e.hasAttribute('data-value') ? e.getAttribute('data-value') : null,
    empty: e.hasAttribute('data-empty') ? e.getAttribute('data-empty') : null,
    text: e.textContent.trim(),
    health: !!e.closest('#health'),
    derived: e.classList.contains('derived'),
  }));
  const ready = document.getElementById('ready');
  const skew = document.getElementById('clock-skew');
  const sel = document.getElementById('window');
  return {
    state: b.dataset.state, errors: b.dataset.errors, view: b.dataset.view, window: b.dataset.window,
    text: b.innerText, els,
    health: !!document.getElementById('health'),
    ready: ready ? ready.getAttribute('data-ready') : null,
    skew: skew ? {value: skew.getAttribute('data-value'), text: skew.textContent.trim()} : null,
    windows: sel ? [...sel.options].map(o => o.value) : null,
  };
})())"#;

/// Ready to read: the first refresh done, and a second one (events/s in the
/// health corner need two).
const SETTLED_JS: &str = r#"document.body && document.body.dataset.state !== 'loading'
  && document.body.dataset.state !== undefined
  && !document.querySelector('[data-empty="needs two refreshes"]')"#;

const SETTLED_SHOW: &str = r#"JSON.stringify({state: document.body && document.body.dataset.state,
  waiting: [...document.querySelectorAll('[data-empty="needs two refreshes"]')].map(e => e.dataset.key)})"#;

/// The page as [`SNAPSHOT_JS`] reads it.
fn snapshot(browser: &mut Browser) -> Value {
    let text = browser.eval(SNAPSHOT_JS);
    serde_json::from_str(text.as_str().expect("snapshot is a string")).expect("snapshot JSON")
}

fn screenshot_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .map(|p| p.to_path_buf())
        .unwrap_or(tmp)
        .join("live-page")
}

/// The number shown for an element, as the page wrote it.
fn parse_value(key: &str, v: &str) -> f64 {
    v.parse()
        .unwrap_or_else(|_| panic!("data-value of {key} is not a number: {v:?}"))
}

/// The contract's checks of one rendered page, whatever its figures: body
/// `data-state` = `state`, `data-errors` = 0, `data-view`, `data-window`; no
/// `NaN` / `undefined` / `Infinity`; the window selector; every element with
/// a `data-key` has either a number (equal to `/metrics`' sample, or for a
/// derived number, see [`check_derived`]) or an empty state with a reason
/// (and then no sample in `/metrics`). Returns the numbers shown and the
/// empty states, by key.
fn check_elements(
    view: &str,
    window: &str,
    state: &str,
    snap: &Value,
    m: &BTreeMap<String, f64>,
    t_ms: i64,
) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let ctx = |what: &str| format!("view {view}, window {window}: {what}");
    assert_eq!(snap["state"], state, "{}", ctx("body data-state"));
    assert_eq!(snap["errors"], "0", "{}", ctx("body data-errors"));
    assert_eq!(snap["view"], view, "{}", ctx("body data-view"));
    assert_eq!(snap["window"], window, "{}", ctx("body data-window"));

    let text = snap["text"].as_str().unwrap_or_default();
    for bad in ["NaN", "undefined", "Infinity", "null"] {
        assert!(
            !text.contains(bad),
            "{}: {bad:?} in the page text:\n{text}",
            ctx("text")
        );
    }
    let windows: Vec<&str> = snap["windows"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", ctx("no <select id=\"window\">")))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for w in ["1h", "24h", "7d", "30d"] {
        assert!(
            windows.contains(&w),
            "{}: window {w} missing from {windows:?}",
            ctx("selector")
        );
    }

    let els = snap["els"].as_array().expect("els");
    let mut shown: BTreeMap<String, f64> = BTreeMap::new();
    let mut empty: BTreeMap<String, String> = BTreeMap::new();
    for e in els {
        let k = e["key"].as_str().unwrap_or_default();
        let txt = e["text"].as_str().unwrap_or_default();
        match (e["value"].as_str(), e["empty"].as_str()) {
            (Some(v), None) => {
                assert!(!txt.is_empty(), "{}: {k} shows no text", ctx("element"));
                let x = parse_value(k, v);
                assert!(x.is_finite(), "{}: {k} = {v}", ctx("element"));
                if e["derived"] == true {
                    check_derived(view, k, x, m, t_ms);
                } else {
                    // Every number shown for a series equals /metrics'
                    // sample of its key.
                    let want = m.get(k).unwrap_or_else(|| {
                        panic!(
                            "{}: {k} = {v} shown, but /metrics has no such sample",
                            ctx("element")
                        )
                    });
                    assert_eq!(
                        x,
                        *want,
                        "{}: {k} shown {v} ({txt:?}), /metrics {want}",
                        ctx("value")
                    );
                }
                if let Some(old) = shown.insert(k.to_string(), x) {
                    assert_eq!(old, x, "{}: {k} shown twice, differently", ctx("element"));
                }
            }
            (None, Some(why)) => {
                assert!(
                    !why.is_empty() && !txt.is_empty(),
                    "{}: {k} empty without a reason",
                    ctx("element")
                );
                if e["derived"] != true {
                    assert!(
                        !m.contains_key(k),
                        "{}: {k} shown empty ({why}) but /metrics has {:?}",
                        ctx("empty state"),
                        m.get(k)
                    );
                }
                empty.insert(k.to_string(), txt.to_string());
            }
            (v, x) => panic!(
                "{}: {k} has data-value {v:?} and data-empty {x:?}: exactly one",
                ctx("element")
            ),
        }
    }

    (shown, empty)
}

/// Checks one rendered view against the contract, `/metrics` (`m`: all
/// samples, `engine`: the engine's) and the hand-computed figures.
fn check_view(view: &str, snap: &Value, m: &BTreeMap<String, f64>, t_ms: i64) {
    let ctx = |what: &str| format!("view {view}: {what}");
    let (shown, empty) = check_elements(view, "24h", "ok", snap, m, t_ms);

    // The hand-computed figures, on the page and in /metrics.
    for (k, want) in expected_values(view) {
        let got = shown.get(&k).unwrap_or_else(|| {
            panic!(
                "{}: {k} (hand value {want}) not shown with a value; empty: {:?}",
                ctx("expected"),
                empty.get(&k)
            )
        });
        assert_eq!(*got, want, "{}: {k}", ctx("hand-computed value"));
    }
    for k in expected_empty(view) {
        assert!(
            empty.contains_key(&k),
            "{}: {k} must be shown as an empty state (absent: denominator 0); shown: {:?}",
            ctx("expected empty"),
            shown.get(&k)
        );
    }
    if view == "growth" {
        // CPA over all channels: $120 / 2 first deposits (see `events`).
        let k = "sum(cxpulse_marketing_spend_usd{window=\"24h\"}) / \
                 sum(cxpulse_acquisitions{window=\"24h\"})";
        assert_eq!(shown.get(k), Some(&60.0), "{}", ctx("CPA, all channels"));
    }
    if view == "support" {
        // Wilson 95 % of 3 in 4 (worked out in `events`), and the high
        // priority's first-response p50 (240 s, HdrHistogram's 3 digits).
        let w = ("window", "24h");
        let lo = shown
            .get(&key("cxpulse_csat_ratio_ci_lower", &[w]))
            .copied();
        let hi = shown
            .get(&key("cxpulse_csat_ratio_ci_upper", &[w]))
            .copied();
        assert!(
            lo.is_some_and(|x| (x - 0.3006).abs() < 1e-3),
            "CSAT interval lower {lo:?}, want 0.3006"
        );
        assert!(
            hi.is_some_and(|x| (x - 0.9544).abs() < 1e-3),
            "CSAT interval upper {hi:?}, want 0.9544"
        );
        let p50 = key(
            "cxpulse_support_first_response_quantile_seconds",
            &[w, ("priority", "high"), ("quantile", "0.5")],
        );
        let got = shown.get(&p50).copied();
        assert!(
            got.is_some_and(|x| (x - 240.0).abs() <= 0.5),
            "{p50} shown {got:?}, want 240 s"
        );
    }

    // Health corner: lag summed, events/s (0: the loop is idle), dead
    // letters/s, T against the wall clock, readiness.
    assert_eq!(snap["health"], true, "{}", ctx("no #health"));
    assert_eq!(snap["ready"], "true", "{}", ctx("#ready data-ready"));
    for (k, want) in [
        ("sum(cxpulse_consumer_lag)", 0.0),
        ("rate(cxpulse_events_total{outcome=\"applied\"})", 0.0),
        ("rate(cxpulse_events_total{outcome=\"invalid\"})", 0.0),
        ("rate(cxpulse_dead_letter_records_total)", 0.0),
    ] {
        assert_eq!(
            shown.get(k),
            Some(&want),
            "{}: {k} (empty: {:?})",
            ctx("health"),
            empty.get(k)
        );
    }
    assert!(
        snap["skew"]["value"].is_string(),
        "{}: {}",
        ctx("#clock-skew has no data-value"),
        snap["skew"]
    );
}

/// A number the page computed (`class="derived"`; its `data-key` says
/// how): sums against `/metrics`, the SLA targets against the defaults
/// (METRICS.md), rates (nothing arrives while the page is read: 0), the
/// clock skew against the test's own clock.
fn check_derived(view: &str, k: &str, x: f64, m: &BTreeMap<String, f64>, t_ms: i64) {
    let sum_of = |part: &str| {
        part.strip_prefix("sum(")
            .and_then(|r| r.strip_suffix(')'))
            .filter(|sel| !sel.contains('(') && !sel.contains(')'))
            .map(|sel| sum_matching(m, sel))
    };
    let quotient = k
        .split_once(" / ")
        .and_then(|(a, b)| Some((sum_of(a)?, sum_of(b)?)));
    if let Some(want) = sum_of(k) {
        assert!(
            (x - want).abs() <= 1e-9 * want.abs().max(1.0),
            "view {view}: {k} shown {x}, /metrics sums to {want}"
        );
    } else if let Some((a, b)) = quotient {
        let want = a / b;
        assert!(
            (x - want).abs() <= 1e-9 * want.abs().max(1.0),
            "view {view}: {k} shown {x}, /metrics gives {a} / {b} = {want}"
        );
    } else if let Some(rest) = k.strip_prefix("sla.targets.") {
        // Defaults: first response / resolution per priority.
        let want = match rest {
            "urgent.first_response_seconds" => 15.0 * 60.0,
            "urgent.resolution_seconds" => 4.0 * 3600.0,
            "high.first_response_seconds" => 3600.0,
            "high.resolution_seconds" => 8.0 * 3600.0,
            "normal.first_response_seconds" => 4.0 * 3600.0,
            "normal.resolution_seconds" => 24.0 * 3600.0,
            "low.first_response_seconds" => 8.0 * 3600.0,
            "low.resolution_seconds" => 48.0 * 3600.0,
            other => panic!("view {view}: unknown SLA target {other}"),
        };
        assert_eq!(x, want, "view {view}: {k}");
    } else if k.starts_with("rate(") {
        assert_eq!(
            x, 0.0,
            "view {view}: {k}: nothing arrives while the page is read"
        );
    } else if k == "wall_seconds - clock_seconds" {
        // T is ~10 minutes behind the wall clock (see the test).
        let want = (now_ms() - t_ms) as f64 / 1000.0;
        assert!(
            (x - want).abs() < 120.0,
            "view {view}: {x} s behind, want about {want}"
        );
    } else {
        panic!("view {view}: a derived number the test does not know: {k} = {x}");
    }
}

/// The sum of `m`'s samples selected by `sel`: `name` or
/// `name{k="v",...}` (those labels equal, others free).
fn sum_matching(m: &BTreeMap<String, f64>, sel: &str) -> f64 {
    let (name, want) = split_key(sel);
    m.iter()
        .filter(|(k, _)| {
            let (n, labels) = split_key(k);
            n == name && want.iter().all(|l| labels.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// `name{k="v",...}` (or `name`) as the name and its `k="v"` pairs (values
/// without `",` in them: the test's series).
fn split_key(k: &str) -> (&str, Vec<&str>) {
    match k.split_once('{') {
        None => (k, Vec::new()),
        Some((name, rest)) => (
            name,
            rest.trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .collect(),
        ),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
fn live_page_shows_the_metrics_numbers_in_a_real_browser() {
    let _serial = serial();
    let started = Instant::now();
    // Fails (never skips) when chromium is missing.
    let chromium = common::chromium();
    eprintln!("live_page: chromium {}", chromium.display());

    let broker = Tansu::start();
    // One partition: the events arrive in time order (lateness 2 s).
    broker.create_topic("events", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let http = free_addr();
    let group = common::unique_name("live-page");
    // T stays at the last event's ts (it never follows the wall clock), so
    // the figures do not depend on how long the test takes.
    let cfg = CxConfig::steady_engine()
        .kafka(&broker.addr, &group, &["events"])
        .dead_letter_topic("")
        .output_topic("")
        .alerts_topic("")
        .quick_group_join()
        .set("checkpoint", "store", "off")
        .listen(&http)
        .ready_max_lag(0)
        .write(&dir.path().join("cxpulse.toml"));
    let run = CxRun::start(
        &cfg,
        dir.path().join("cxpulse.log"),
        &http,
        Duration::from_secs(30),
    );

    // T: 10 minutes before now, 30 s into its minute bucket.
    let now = now_ms();
    let t = now - now.rem_euclid(MIN) - 10 * MIN + 30_000;
    let evs = events(t);
    let recs: Vec<(Option<&str>, &str)> = evs
        .iter()
        .map(|(k, v)| (Some(k.as_str()), v.as_str()))
        .collect();
    broker.produce("events", &recs);

    // Wait until every event is applied and T is the last one's.
    // Wait until every event is applied (none late, invalid or duplicate)
    // and T is the last one's.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = metrics(&http);
        let by_outcome = |o: &str| -> f64 {
            sum_matching(&m, &format!("cxpulse_events_total{{outcome=\"{o}\"}}"))
        };
        let (applied, other) = (
            by_outcome("applied"),
            by_outcome("late") + by_outcome("invalid") + by_outcome("duplicate"),
        );
        let clock = m.get("cxpulse_clock_timestamp_seconds{}").copied();
        assert_eq!(
            other, 0.0,
            "events not applied (late, invalid or duplicate)"
        );
        if applied == evs.len() as f64 && clock == Some(t as f64 / 1000.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{applied} of {} events applied, T {clock:?} (want {}) after 60 s\n{}",
            evs.len(),
            t as f64 / 1000.0,
            run.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    run.wait_for("ready (lag 0)", Duration::from_secs(30), || {
        run.status("/readyz") == 200
    });

    // /api/series' series = /metrics' engine samples at the same T (the
    // loop is idle: T no longer moves, so two /metrics around one
    // /api/series agree).
    let (api, engine) = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let before = engine_metrics(&http);
            let api = api_series(&http);
            let after = engine_metrics(&http);
            if before == after {
                break (api, after);
            }
            assert!(
                Instant::now() < deadline,
                "/metrics engine samples keep changing"
            );
        }
    };
    assert_eq!(
        api["clock_seconds"].as_f64(),
        Some(t as f64 / 1000.0),
        "/api/series clock_seconds"
    );
    assert!(
        api["wall_seconds"]
            .as_f64()
            .is_some_and(|w| (w * 1000.0 - now_ms() as f64).abs() < 60_000.0)
    );
    assert_eq!(api["ready"], true, "/api/series ready");
    let series = api_samples(&api, "series");
    let series: BTreeMap<String, f64> = series
        .into_iter()
        .map(|(k, v)| {
            let v = v.unwrap_or_else(|| panic!("/api/series series {k} has no number value"));
            (k, v)
        })
        .collect();
    let diff = common::differences(
        &series
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        &engine
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        20,
    );
    assert!(
        diff.is_empty(),
        "/api/series series vs /metrics engine samples (api vs metrics):\n{}",
        diff.join("\n")
    );
    let absent = api_samples(&api, "absent");
    for (k, v) in &absent {
        assert!(v.is_none(), "absent {k} carries a value {v:?}");
        assert!(
            !engine.contains_key(k),
            "{k} is both absent and in /metrics"
        );
    }
    for k in VIEWS.iter().flat_map(|v| expected_empty(v)) {
        assert!(absent.contains_key(&k), "/api/series absent lacks {k}");
    }
    let pipeline = api_samples(&api, "pipeline");
    assert!(
        pipeline
            .keys()
            .any(|k| k.starts_with("cxpulse_consumer_lag{")),
        "/api/series pipeline has no cxpulse_consumer_lag"
    );

    // The page itself: served as HTML, on the same listener.
    let (code, headers, html) = get(&http, "/");
    assert_eq!(code, 200, "GET /: {html}");
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("text/html; charset=utf-8"),
        "GET / content-type"
    );

    // The three views in a real browser.
    let mut browser = Browser::start(1920, 1080);
    let shots = screenshot_dir();
    for view in VIEWS {
        let url = format!("http://{http}/?view={view}&window=24h&refresh=1");
        browser.navigate(&url);
        browser.wait_until(
            &format!("view {view} settled"),
            SETTLED_JS,
            SETTLED_SHOW,
            Duration::from_secs(30),
        );
        let m = metrics(&http);
        let snap = snapshot(&mut browser);
        let png = shots.join(format!("{view}.png"));
        browser.screenshot(&png);
        eprintln!("live_page: {view}: screenshot {}", png.display());
        check_view(view, &snap, &m, t);
        let errors = browser.console_errors();
        assert!(
            errors.is_empty(),
            "view {view}: console errors:\n{}",
            errors.join("\n")
        );
    }

    // The window selector: 1h. The CSAT answers (T-9m to T-6m) are in the
    // last hour too: 3 of 4 again.
    browser.eval(
        "(() => { const s = document.getElementById('window'); s.value = '1h'; \
         s.dispatchEvent(new Event('change')); return true; })()",
    );
    browser.wait_until(
        "window 1h shown",
        "document.body.dataset.window === '1h'",
        "document.body.dataset.window",
        Duration::from_secs(10),
    );
    let snap = snapshot(&mut browser);
    let m_last = metrics(&http);
    let (shown, _) = check_elements("retention", "1h", "ok", &snap, &m_last, t);
    assert_eq!(
        shown.get(&key("cxpulse_csat_ratio", &[("window", "1h")])),
        Some(&0.75),
        "window 1h: CSAT"
    );

    // cxpulse gone: the page says so (state "error", the last answer
    // still shown), and counts no error of its own.
    drop(run);
    browser.wait_until(
        "the error state",
        "document.body.dataset.state === 'error'",
        "document.body.dataset.state",
        Duration::from_secs(15),
    );
    let status = browser.eval("document.getElementById('status').textContent");
    assert!(
        status.as_str().is_some_and(|s| s.contains("api/series")),
        "error state text: {status}"
    );
    let snap = snapshot(&mut browser);
    check_elements("retention", "1h", "error", &snap, &m_last, t);
    eprintln!(
        "live_page: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
