//! The deployment, live: a tansu broker, `cxpulse run`, and a real Prometheus
//! (Debian's server) scraping it every second with the shipped rules loaded.
//!
//! A scenario of canonical events over the last 40 days (timestamps chosen
//! relative to the wall clock) holds steady customers, a baseline of churn
//! spread over the last week, a spike of 60 customers churning in the last
//! hour, 30 urgent tickets of which 10 get no reply (SLA breaches), and
//! steady surveys, signups, spend and referrals. The test asserts through the
//! Prometheus HTTP API that exactly CxpulseChurnSpike,
//! CxpulseSlaBreachRatioHigh{urgent, first_response} and
//! CxpulseUrgentTicketBreaching{urgent, first_response} fire (and that no
//! other alert fired on the way), that the Grafana-managed rules' queries and
//! thresholds select the same series, and that every PromQL expression of
//! the Grafana dashboard returns data.
//!
//! The shipped rules have production `for:` durations (up to 30 minutes);
//! the test loads a copy with every `for:` set to 5s (evaluation every
//! second). `promtool test rules` (tests/deploy_rules.rs) tests the shipped
//! durations.

mod common;

use common::http_get as get;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::web::{Proc, Prometheus, sample_value, start_prometheus};
use common::{CxConfig, Tansu, cxpulse_command, deploycheck, events_seen, free_addr, root, value};
use serde_json::Value;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// What the test overrides `for:` with in its copy of the alert rules.
const TEST_FOR: &str = "5s";

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// deploy/tools/deploycheck.py SUBCOMMAND, its JSON output.
fn deploycheck_json(cmd: &str) -> Value {
    serde_json::from_str(&deploycheck(&[cmd])).expect("deploycheck JSON")
}

/// Firing alerts: alertname -> label sets (without alertname, severity, team).
fn firing(prom: &Prometheus) -> BTreeMap<String, BTreeSet<BTreeMap<String, String>>> {
    let data = prom.api("/api/v1/alerts");
    let mut out: BTreeMap<String, BTreeSet<BTreeMap<String, String>>> = BTreeMap::new();
    for a in data["alerts"].as_array().expect("alerts array") {
        if a["state"] != "firing" {
            continue;
        }
        let mut labels = labels_of(&a["labels"]);
        let name = labels.remove("alertname").expect("alertname");
        labels.remove("severity");
        labels.remove("team");
        out.entry(name).or_default().insert(labels);
    }
    out
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------

struct Scenario {
    /// (event time, key, value), sorted by event time before producing.
    events: Vec<(i64, String, String)>,
    next_id: u64,
}

impl Scenario {
    fn push(&mut self, ts: i64, key: &str, body: String) {
        self.next_id += 1;
        let value = format!(
            r#"{{"event_id":"live-{}","ts":"{}",{body}}}"#,
            self.next_id,
            cxpulse::event::time::format_rfc3339(ts)
        );
        self.events.push((ts, key.to_string(), value));
    }

    fn signup(&mut self, ts: i64, user: &str, channel: &str) {
        self.push(
            ts,
            user,
            format!(r#""type":"signup","user_id":"{user}","channel":"{channel}""#),
        );
    }

    fn referral_signup(&mut self, ts: i64, user: &str, referrer: &str) {
        self.push(
            ts,
            user,
            format!(r#""type":"signup","user_id":"{user}","referrer_id":"{referrer}""#),
        );
    }

    fn deposit(&mut self, ts: i64, user: &str) {
        self.push(
            ts,
            user,
            format!(r#""type":"deposit","user_id":"{user}","amount_usd":500"#),
        );
    }

    fn trade(&mut self, ts: i64, user: &str) {
        self.push(
            ts,
            user,
            format!(r#""type":"trade","user_id":"{user}","notional_usd":1000,"fee_usd":1.5"#),
        );
    }

    fn support(&mut self, ts: i64, user: &str, ticket: &str, action: &str, priority: &str) {
        self.push(
            ts,
            user,
            format!(
                r#""type":"support","user_id":"{user}","ticket_id":"{ticket}","action":"{action}","priority":"{priority}""#
            ),
        );
    }

    fn rated(&mut self, ts: i64, user: &str, csat: u8, nps: u8, ces: u8) {
        self.push(
            ts,
            user,
            format!(
                r#""type":"support","user_id":"{user}","ticket_id":"survey","action":"rated","csat":{csat},"nps":{nps},"ces":{ces}"#
            ),
        );
    }

    fn rated_csat(&mut self, ts: i64, user: &str, csat: u8) {
        self.push(
            ts,
            user,
            format!(
                r#""type":"support","user_id":"{user}","ticket_id":"survey","action":"rated","csat":{csat}"#
            ),
        );
    }

    fn spend(&mut self, ts: i64, channel: &str, usd: u32) {
        self.push(
            ts,
            channel,
            format!(r#""type":"spend","channel":"{channel}","amount_usd":{usd}"#),
        );
    }

    fn referral(&mut self, ts: i64, user: &str, action: &str) {
        let reward = if action == "rewarded" {
            r#","reward_usd":10"#
        } else {
            ""
        };
        self.push(
            ts,
            user,
            format!(r#""type":"referral","user_id":"{user}","action":"{action}"{reward}"#),
        );
    }
}

const STEADY: usize = 300;
const BASELINE_CHURNERS: i64 = 200;
const SPIKE_CHURNERS: i64 = 60;
const URGENT_TICKETS: i64 = 30;

/// The scenario's events, ending about a minute before `now`.
fn scenario(now: i64) -> Vec<(i64, String, String)> {
    let mut s = Scenario {
        events: Vec::new(),
        next_id: 0,
    };
    // Steady customers: signed up 40 days ago, trade every other day, so
    // all of them are active now and none churns.
    for i in 0..STEADY {
        let u = format!("s{i}");
        let t0 = now - 40 * DAY + i as i64 * MIN;
        s.signup(t0, &u, if i % 2 == 0 { "organic" } else { "paid_search" });
        s.deposit(t0 + 10 * MIN, &u);
        let mut t = now - 39 * DAY + (i as i64 % 40) * HOUR;
        while t < now - 10 * MIN {
            s.trade(t, &u);
            t += 2 * DAY;
        }
    }
    // Baseline churn: one deposit each, 30 days before a churn instant
    // spread over the last 7 days (but not the last 90 minutes): about 1.2
    // churned customers an hour.
    let span = 7 * DAY - HOUR - 90 * MIN;
    for j in 0..BASELINE_CHURNERS {
        let u = format!("b{j}");
        s.signup(now - 38 * DAY + j * MIN, &u, "organic");
        let churn_at = now - 7 * DAY + HOUR + j * span / BASELINE_CHURNERS;
        s.deposit(churn_at - 30 * DAY, &u);
    }
    // The spike: 60 customers whose 30 days of inactivity end between 40 and
    // 10 minutes ago.
    for j in 0..SPIKE_CHURNERS {
        let u = format!("k{j}");
        s.signup(now - 36 * DAY + j * MIN, &u, "social");
        s.deposit(now - 30 * DAY - 40 * MIN + j * 30_000, &u);
    }
    // New users every day of the last 8 (the last ones 3 hours ago): the
    // funnel, CPA by channel, referrals, cohort retention (day 1 and 7).
    for d in 0..8i64 {
        let base = now - d * DAY - 3 * HOUR;
        let n = |j: i64| format!("n{d}-{j}");
        s.spend(base - 30 * MIN, "paid_search", 200);
        s.spend(base - 30 * MIN, "social", 80);
        s.signup(base, &n(0), "organic");
        s.deposit(base + HOUR, &n(0));
        s.trade(base + HOUR + 30 * MIN, &n(0));
        for later in [DAY + HOUR, 7 * DAY + HOUR] {
            if base + later < now - 10 * MIN {
                s.trade(base + later, &n(0));
            }
        }
        s.signup(base + 2 * MIN, &n(1), "paid_search");
        s.deposit(base + HOUR + 2 * MIN, &n(1));
        s.trade(base + 2 * HOUR, &n(1));
        s.signup(base + 4 * MIN, &n(2), "paid_search");
        s.signup(base + 6 * MIN, &n(3), "social");
        s.deposit(base + HOUR + 6 * MIN, &n(3));
        let referrer = format!("s{d}");
        s.referral(base - HOUR, &referrer, "invite_sent");
        s.referral_signup(base + 8 * MIN, &n(4), &referrer);
        s.referral(base + HOUR, &referrer, "rewarded");
    }
    // A cohort that signed up 30.5 days ago and is active on day 30.
    for i in 0..3 {
        let u = format!("c{i}");
        let t0 = now - 30 * DAY - 12 * HOUR + i * MIN;
        s.signup(t0, &u, "organic");
        s.deposit(t0 + 5 * MIN, &u);
        s.trade(t0 + 30 * DAY + HOUR, &u);
    }
    // Surveys: 10 a day for 8 days, always 80% satisfied, NPS 30, 70% easy.
    for d in 0..8i64 {
        for r in 0..10i64 {
            let u = format!("s{}", (d * 10 + r) as usize % STEADY);
            let csat = if r < 8 { 5 } else { 2 };
            let nps = if r < 5 {
                10
            } else if r < 8 {
                8
            } else {
                3
            };
            let ces = if r < 7 { 6 } else { 2 };
            s.rated(now - d * DAY - 5 * HOUR - r * 10 * MIN, &u, csat, nps, ces);
        }
    }
    // Ratings 35 days ago, for churn after a support contact: steady
    // customers happy (still active), baseline churners unhappy (gone).
    for i in 0..5 {
        s.rated_csat(now - 35 * DAY + i * MIN, &format!("s{i}"), 5);
        s.rated_csat(now - 35 * DAY + i * MIN, &format!("b{i}"), 1);
    }
    // 30 urgent tickets in the last hour: 20 answered in 5 minutes (met),
    // 10 never answered (breached 15 minutes after opening, still open).
    for i in 0..URGENT_TICKETS {
        let u = format!("s{}", 100 + i);
        let t = format!("urgent-{i}");
        let opened = now - 50 * MIN + i * 20_000;
        s.support(opened, &u, &t, "opened", "urgent");
        if i % 3 != 0 {
            s.support(opened + 5 * MIN, &u, &t, "agent_replied", "urgent");
        }
    }
    // Normal tickets yesterday and high ones this week, all met and resolved.
    for i in 0..10 {
        let u = format!("s{}", 150 + i);
        let t = format!("normal-{i}");
        let opened = now - 20 * HOUR + i * 30 * MIN;
        s.support(opened, &u, &t, "opened", "normal");
        s.support(opened + 30 * MIN, &u, &t, "agent_replied", "normal");
        s.support(opened + 2 * HOUR, &u, &t, "resolved", "normal");
    }
    for i in 0..4 {
        let u = format!("s{}", 170 + i);
        let t = format!("high-{i}");
        let opened = now - 3 * DAY + i * HOUR;
        s.support(opened, &u, &t, "opened", "high");
        s.support(opened + 20 * MIN, &u, &t, "agent_replied", "high");
        s.support(opened + HOUR, &u, &t, "resolved", "high");
    }
    let mut events = s.events;
    // Two invalid messages (dead-lettered): not JSON, and a deposit without amount.
    events.push((now - 2 * DAY, "x".into(), "not json".into()));
    events.push((
        now - 2 * DAY,
        "s1".into(),
        format!(
            r#"{{"event_id":"live-bad","type":"deposit","ts":"{}","user_id":"s1"}}"#,
            cxpulse::event::time::format_rfc3339(now - 2 * DAY)
        ),
    ));
    events.sort_by_key(|e| e.0);
    assert!(events.last().expect("events").0 < now - 60_000);
    events
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

fn wait_for(what: &str, timeout: Duration, procs: &mut [&mut Proc], mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        for p in procs.iter_mut() {
            p.assert_running();
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = procs.iter().map(|p| p.log_tail()).collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_fires_exactly_the_expected_alerts_and_the_dashboard_has_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Tansu::start();
    // One partition: the scenario is read in event-time order.
    broker.create_topics(&[
        ("events", 1),
        ("dead-letter", 1),
        ("metrics-out", 1),
        ("alerts", 1),
    ]);

    // 1. The scenario, produced before cxpulse starts (it reads from the
    //    earliest offset): cxpulse works through it as one backlog.
    let now = wall_ms();
    let events = scenario(now);
    let records: Vec<(Option<&str>, &str)> = events
        .iter()
        .map(|(_, k, v)| (Some(k.as_str()), v.as_str()))
        .collect();
    broker.produce("events", &records);
    eprintln!("deploy_live: produced {} scenario events", events.len());

    // 2. cxpulse, effects applied at once (allowed_lateness 0s).
    let http = free_addr();
    let cfg =
        CxConfig::live(&broker.addr, "deploy-live", &http).write(&dir.path().join("cxpulse.toml"));
    let mut cmd = cxpulse_command();
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info");
    let mut cxpulse = Proc::spawn("cxpulse", cmd, dir.path().join("cxpulse.log"));

    let total = events.len() as f64;
    let mut last = String::new();
    wait_for(
        "cxpulse to apply the whole scenario",
        Duration::from_secs(90),
        &mut [&mut cxpulse],
        || {
            let Some((200, body)) = get(&http, "/metrics") else {
                return false;
            };
            let seen = events_seen(&body);
            let pending = value(&body, "cxpulse_pending_events").unwrap_or(0.0);
            last = format!("events {seen} of {total}, pending {pending}");
            seen == total && pending == 0.0
        },
    );
    eprintln!("deploy_live: cxpulse caught up ({last})");

    // 3. Live traffic while Prometheus watches: two trades a second by
    //    steady customers at the wall clock (rates and latencies have data).
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let trickle = scope.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let ts = cxpulse::event::time::format_rfc3339(wall_ms());
                let recs: Vec<(String, String)> = (0..2)
                    .map(|_| {
                        n += 1;
                        let u = format!("s{}", n as usize % STEADY);
                        let v = format!(
                            r#"{{"event_id":"trickle-{n}","type":"trade","ts":"{ts}","user_id":"{u}","notional_usd":100,"fee_usd":0.1}}"#
                        );
                        (u, v)
                    })
                    .collect();
                let refs: Vec<(Option<&str>, &str)> = recs
                    .iter()
                    .map(|(k, v)| (Some(k.as_str()), v.as_str()))
                    .collect();
                broker.produce("events", &refs);
                std::thread::sleep(Duration::from_millis(700));
            }
        });
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_prometheus(dir.path(), &http, &mut cxpulse)
        }));
        stop.store(true, Ordering::SeqCst);
        trickle.join().expect("trickle thread");
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    });
}

fn with_prometheus(dir: &Path, cxpulse_http: &str, cxpulse: &mut Proc) {
    // 4. Prometheus: scrape and evaluate every second, the shipped rules with
    //    `for:` shortened.
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).expect("mkdir");
    for f in ["cxpulse-recording.yml", "cxpulse-alerts.yml"] {
        let text = std::fs::read_to_string(root().join("deploy/prometheus/rules").join(f))
            .expect("read rules");
        let mut out = String::new();
        for line in text.lines() {
            let t = line.trim_start();
            if t.starts_with("for: ") {
                let indent = &line[..line.len() - t.len()];
                out.push_str(&format!("{indent}for: {TEST_FOR}\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        std::fs::write(rules_dir.join(f), out).expect("write rules");
    }
    let prom_cfg = dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - rules/cxpulse-recording.yml
  - rules/cxpulse-alerts.yml
scrape_configs:
  - job_name: cxpulse
    static_configs:
      - targets: ["{cxpulse_http}"]
"#
        ),
    )
    .expect("write prometheus.yml");
    let (mut prom_proc, prom) = start_prometheus(dir, &prom_cfg);
    // Both rule groups loaded, with every rule healthy.
    let rules = prom.api("/api/v1/rules");
    let groups = rules["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{rules}");

    // 5. Exactly the expected alerts fire, and keep firing.
    let expected: BTreeMap<String, BTreeSet<BTreeMap<String, String>>> = [
        ("CxpulseChurnSpike", labels(&[("job", "cxpulse")])),
        (
            "CxpulseSlaBreachRatioHigh",
            labels(&[
                ("job", "cxpulse"),
                ("window", "1h"),
                ("priority", "urgent"),
                ("kind", "first_response"),
            ]),
        ),
        (
            "CxpulseUrgentTicketBreaching",
            labels(&[
                ("job", "cxpulse"),
                ("priority", "urgent"),
                ("kind", "first_response"),
            ]),
        ),
    ]
    .into_iter()
    .map(|(n, l)| (n.to_string(), BTreeSet::from([l])))
    .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut stable = 0;
    while stable < 20 {
        let seen = firing(&prom);
        stable = if seen == expected { stable + 1 } else { 0 };
        prom_proc.assert_running();
        cxpulse.assert_running();
        if Instant::now() > deadline {
            let show = |e: &str| format!("  {e} = {:?}", prom.query(e));
            panic!(
                "firing alerts {seen:?}
want {expected:?}
{}
{}
{}",
                [
                    "fleet:cxpulse_churn_ratio_1h:vs_7d_baseline",
                    "fleet:cxpulse_churned_customers:sum",
                    "fleet:cxpulse_sla_breach_ratio:ratio",
                    "fleet:cxpulse_sla_decisions:sum",
                    "fleet:cxpulse_support_open_tickets_breaching:sum",
                    "ALERTS",
                ]
                .map(show)
                .join("\n"),
                prom_proc.log_tail(),
                cxpulse.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // No other alert fired at any time, nor was any rule unhealthy.
    let ever = prom.query(r#"max_over_time(ALERTS{alertstate="firing"}[10m])"#);
    let ever: BTreeSet<String> = ever
        .iter()
        .map(|r| r["metric"]["alertname"].as_str().unwrap_or("?").to_string())
        .collect();
    let want: BTreeSet<String> = expected.keys().cloned().collect();
    assert_eq!(ever, want, "alerts that fired at some point");
    for g in prom.api("/api/v1/rules")["groups"]
        .as_array()
        .expect("groups")
    {
        for r in g["rules"].as_array().expect("rules") {
            assert_eq!(r["health"], "ok", "rule not healthy: {r}");
        }
    }

    // The values behind them, as documented.
    let v = |expr: &str| -> f64 {
        let r = prom.query(expr);
        assert_eq!(r.len(), 1, "{expr}: {r:?}");
        sample_value(&r[0])
    };
    assert_eq!(
        v(r#"fleet:cxpulse_churned_customers:sum{window="1h"}"#),
        SPIKE_CHURNERS as f64
    );
    assert_eq!(
        v(r#"fleet:cxpulse_sla_breaches:sum{window="1h",priority="urgent",kind="first_response"}"#),
        10.0
    );
    let ratio = v(
        r#"fleet:cxpulse_sla_breach_ratio:ratio{window="1h",priority="urgent",kind="first_response"}"#,
    );
    assert!((ratio - 1.0 / 3.0).abs() < 1e-9, "breach ratio {ratio}");
    assert!(v("fleet:cxpulse_churn_ratio_1h:vs_7d_baseline") > 10.0);
    // The fleet Wilson bounds equal the engine's own (one instance).
    for w in ["24h", "7d"] {
        let fleet = v(&format!(
            r#"fleet:cxpulse_csat_ratio:ci_lower{{window="{w}"}}"#
        ));
        let engine = v(&format!(r#"cxpulse_csat_ratio_ci_lower{{window="{w}"}}"#));
        assert!(
            (fleet - engine).abs() < 1e-9,
            "{w}: fleet {fleet}, engine {engine}"
        );
        let fleet = v(&format!(r#"fleet:cxpulse_nps:ci_upper{{window="{w}"}}"#));
        let engine = v(&format!(r#"cxpulse_nps_ci_upper{{window="{w}"}}"#));
        assert!(
            (fleet - engine).abs() < 1e-9,
            "{w}: fleet {fleet}, engine {engine}"
        );
    }

    // 6. The Grafana-managed rules' queries and thresholds select exactly
    //    the series the Prometheus alerts fire for.
    let firing = firing(&prom);
    let grafana = deploycheck_json("grafana-queries");
    for rule in grafana.as_array().expect("array") {
        let title = rule["title"].as_str().expect("title");
        let expr = rule["expr"].as_str().expect("expr");
        let threshold = rule["threshold"].as_f64().expect("threshold");
        let above = rule["op"] == ">";
        let selected: BTreeSet<BTreeMap<String, String>> = prom
            .query(expr)
            .iter()
            .filter(|r| {
                let x = sample_value(r);
                if above { x > threshold } else { x < threshold }
            })
            .map(|r| {
                let mut l = labels_of(&r["metric"]);
                l.remove("__name__");
                l
            })
            .collect();
        assert_eq!(
            selected,
            firing.get(title).cloned().unwrap_or_default(),
            "Grafana rule {title} out of step with the Prometheus alert"
        );
    }

    // 7. Every dashboard query returns data (at least one finite sample), for
    //    the default window and the 7-day one.
    let queries = deploycheck_json("dashboard");
    let mut empty = Vec::new();
    let mut checked = 0;
    for window in ["24h", "7d"] {
        for q in queries.as_array().expect("array") {
            let raw = q["expr"].as_str().expect("expr");
            let expr = raw
                .replace("$__rate_interval", "30s")
                .replace("${job}", "cxpulse")
                .replace("$job", "cxpulse")
                .replace("${window}", window)
                .replace("$window", window);
            if window != "24h" && !raw.contains("$window") && !raw.contains("${window}") {
                continue; // no window in it: checked once
            }
            checked += 1;
            let result = prom.query(&expr);
            if !result.iter().any(|r| sample_value(r).is_finite()) {
                empty.push(format!(
                    "{} [{}] window={window}: {expr} -> {result:?}",
                    q["panel"], q["refId"]
                ));
            }
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data ({} of {checked}):\n{}",
        empty.len(),
        empty.join("\n")
    );
    eprintln!("deploy_live: {checked} dashboard queries have data");
}
