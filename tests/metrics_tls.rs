//! A secured `/metrics` (`--web.config.file`, exporter-toolkit format),
//! against real processes: a tansu broker, two `cxpulse run` (one with TLS
//! and basic auth, one also requiring client certificates) and a real
//! Prometheus (Debian's server) scraping them.
//!
//! - Prometheus with `scheme: https`, `tls_config.ca_file` and `basic_auth`
//!   scrapes: `up == 1`, and the cxpulse series are queryable through its API
//!   with the values produced (5 signups).
//! - Its other jobs are refused: no credentials and a wrong password get 401,
//!   no CA fails certificate verification, plain HTTP to the TLS port fails,
//!   no client certificate fails against `RequireAndVerifyClientCert`.
//! - A rustls client checks every path (`/metrics`, `/healthz`, `/readyz`, the
//!   live page `/` and its `/api/series`,
//!   an unknown one) answers 401 with a `WWW-Authenticate: Basic` challenge
//!   without credentials, 200 with them; a bcrypt verification is paid once
//!   (cached afterwards; both times printed).
//! - Neither the password nor its hash appears in cxpulse's log.
//! - A bad web config stops `cxpulse run` with exit code 2, an error naming
//!   the file and the key, and without the hash.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::web::{
    Pki, Prometheus, bcrypt_hash, https_get, sample_value, start_prometheus, tls_client,
};
use common::{CxConfig, CxRun, Tansu, free_port};

const USER: &str = "prometheus";
const SIGNUPS: usize = 5;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A password nobody could guess from the source (it must not show up in logs).
fn password() -> String {
    format!("pw-{}-{}", std::process::id(), now_ms())
}

/// `NAME.toml` in `dir`: the live test config with `http.web_config_file = WEB`.
fn cxpulse_config(dir: &Path, name: &str, brokers: &str, http: &str, web: &Path) -> PathBuf {
    let web = web.to_str().expect("web config path is UTF-8");
    CxConfig::live(brokers, name, http)
        .set("http", "web_config_file", web)
        .write(&dir.join(format!("{name}.toml")))
}

/// Per job of the Prometheus config: (health, lastError) of its one target.
fn targets(prom: &Prometheus) -> BTreeMap<String, (String, String)> {
    let data = prom.api("/api/v1/targets?state=active");
    data["activeTargets"]
        .as_array()
        .expect("activeTargets")
        .iter()
        .map(|t| {
            (
                t["labels"]["job"].as_str().unwrap_or("?").to_string(),
                (
                    t["health"].as_str().unwrap_or("?").to_string(),
                    t["lastError"].as_str().unwrap_or("?").to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_everyone_else_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::create(d);
    let pw = password();
    let t = Instant::now();
    let hash = bcrypt_hash(&pw, 10);
    eprintln!(
        "metrics_tls: bcrypt hash at cost 10 took {:?} (test build)",
        t.elapsed()
    );

    // Web configs: TLS + basic auth; the same plus required client certificates.
    let web_tls = d.join("web-tls.yml");
    std::fs::write(
        &web_tls,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  {USER}: {hash}\n"
        ),
    )
    .expect("write web config");
    let web_mtls = d.join("web-mtls.yml");
    std::fs::write(
        &web_mtls,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_ca_file: client-ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n\
             basic_auth_users:\n  {USER}: {hash}\n"
        ),
    )
    .expect("write web config");

    let broker = Tansu::start();
    for topic in ["events", "dead-letter", "metrics-out", "alerts"] {
        broker.create_topic(topic, 1);
    }
    let ts = cxpulse::event::time::format_rfc3339(now_ms() - 60_000);
    let events: Vec<(Option<String>, String)> = (0..SIGNUPS)
        .map(|i| {
            (
                Some(format!("u{i}")),
                format!(
                    r#"{{"event_id":"tls-{i}","type":"signup","ts":"{ts}","user_id":"u{i}","channel":"organic"}}"#
                ),
            )
        })
        .collect();
    broker.produce_owned("events", &events);

    let http_a = format!("127.0.0.1:{}", free_port());
    let http_b = format!("127.0.0.1:{}", free_port());
    let cfg_a = cxpulse_config(d, "tls", &broker.addr, &http_a, &web_tls);
    let cfg_b = cxpulse_config(d, "mtls", &broker.addr, &http_b, &web_mtls);
    let mut a = CxRun::spawn(&cfg_a, d.join("cxpulse-tls.log"), &http_a);
    let mut b = CxRun::spawn(&cfg_b, d.join("cxpulse-mtls.log"), &http_b);

    let trusted = tls_client(Some(&pki.ca), None);
    let with_cert = tls_client(Some(&pki.ca), Some((&pki.client_cert, &pki.client_key)));
    let untrusted = tls_client(None, None);
    let creds = Some((USER, pw.as_str()));

    // 1. cxpulse over TLS with the right credentials: every event applied,
    //    effective (past allowed_lateness), ready. The first authorized request pays the bcrypt verification.
    let t = Instant::now();
    a.wait_alive(
        "/metrics over TLS to answer",
        Duration::from_secs(30),
        |_| https_get(&http_a, "/healthz", &trusted, creds).is_ok_and(|r| r.code == 200),
    );
    eprintln!(
        "metrics_tls: first authorized answer after {:?}",
        t.elapsed()
    );
    let mut last = String::new();
    a.wait_alive(
        "all signups applied and /readyz 200",
        Duration::from_secs(60),
        |_| {
            let Ok(m) = https_get(&http_a, "/metrics", &trusted, creds) else {
                return false;
            };
            let applied = common::value(
                &m.body,
                r#"cxpulse_events_total{type="signup",outcome="applied"}"#,
            );
            let ready = https_get(&http_a, "/readyz", &trusted, creds).map(|r| r.code);
            last = format!("{} applied={applied:?} readyz={ready:?}", m.code);
            m.code == 200 && applied == Some(SIGNUPS as f64) && ready == Ok(200)
        },
    );
    eprintln!("metrics_tls: {last}");
    let answer = https_get(&http_a, "/metrics", &trusted, creds).expect("metrics");
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(
        common::value(
            &answer.body,
            r#"cxpulse_events_total{type="signup",outcome="applied"}"#
        ),
        Some(SIGNUPS as f64),
        "{}",
        answer.body
    );
    // Cached verifications: a scrape costs no bcrypt.
    let t = Instant::now();
    for _ in 0..20 {
        let r = https_get(&http_a, "/healthz", &trusted, creds).expect("healthz");
        assert_eq!(r.code, 200);
    }
    eprintln!(
        "metrics_tls: authorized /healthz over TLS (cached credentials): {:?} each",
        t.elapsed() / 20
    );

    // A refusal is never cached: each one pays a bcrypt verification.
    let t = Instant::now();
    for _ in 0..5 {
        let r = https_get(&http_a, "/healthz", &trusted, Some((USER, "wrong"))).expect("healthz");
        assert_eq!(r.code, 401);
    }
    eprintln!(
        "metrics_tls: refused /healthz over TLS (bcrypt cost 10 each time): {:?} each",
        t.elapsed() / 5
    );

    // 2. Without credentials, with a wrong password or an unknown user:
    //    401 on every path, with the challenge; no answer leaks a series.
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/",
        "/api/series",
        "/no-such-path",
    ] {
        for (who, auth) in [
            ("no credentials", None),
            ("wrong password", Some((USER, "not-the-password"))),
            ("unknown user", Some(("someone", pw.as_str()))),
        ] {
            let r = https_get(&http_a, path, &trusted, auth)
                .unwrap_or_else(|e| panic!("{path} {who}: {e}"));
            assert_eq!(r.code, 401, "{path} {who}: {r:?}");
            assert_eq!(
                r.header("www-authenticate"),
                Some(r#"Basic realm="cxpulse""#),
                "{path} {who}"
            );
            assert!(!r.body.contains("cxpulse_"), "{path} {who}: {}", r.body);
        }
    }
    // Without the CA: the certificate does not verify.
    let e = https_get(&http_a, "/metrics", &untrusted, creds).expect_err("no CA");
    assert!(e.contains("UnknownIssuer"), "{e}");
    // Plain HTTP to the TLS port: no HTTP answer at all.
    assert_eq!(common::http_get(&http_a, "/metrics"), None);

    // 3. Client certificates required (b): with one and the credentials 200;
    //    with one but no credentials 401; without one the handshake fails.
    b.wait_alive(
        "/healthz with a client certificate",
        Duration::from_secs(30),
        |_| https_get(&http_b, "/healthz", &with_cert, creds).is_ok_and(|r| r.code == 200),
    );
    let r = https_get(&http_b, "/metrics", &with_cert, None).expect("metrics without auth");
    assert_eq!(r.code, 401);
    let e = https_get(&http_b, "/healthz", &trusted, creds).expect_err("no client cert");
    assert!(e.contains("CertificateRequired"), "{e}");

    // 4. Prometheus: one job scrapes as documented, the others are refused.
    let pw_file = d.join("prometheus-password");
    std::fs::write(&pw_file, &pw).expect("write password file");
    let job = |name: &str, scheme: &str, target: &str, tls: &str, auth: &str| {
        format!(
            "  - job_name: {name}\n    scheme: {scheme}\n{tls}{auth}    static_configs:\n      - targets: [\"{target}\"]\n"
        )
    };
    let ca = format!("    tls_config:\n      ca_file: {}\n", pki.ca.display());
    let ca_cert = format!(
        "    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let auth = format!(
        "    basic_auth:\n      username: {USER}\n      password_file: {}\n",
        pw_file.display()
    );
    let wrong = format!("    basic_auth:\n      username: {USER}\n      password: wrong\n");
    let prom_cfg = d.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        [
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n".to_string(),
            job("tls", "https", &http_a, &ca, &auth),
            job("tls-no-credentials", "https", &http_a, &ca, ""),
            job("tls-wrong-password", "https", &http_a, &ca, &wrong),
            job("tls-no-ca", "https", &http_a, "", &auth),
            job("plain-http", "http", &http_a, "", &auth),
            job("mtls", "https", &http_b, &ca_cert, &auth),
            job("mtls-no-client-cert", "https", &http_b, &ca, &auth),
        ]
        .concat(),
    )
    .expect("write prometheus.yml");
    let (mut prom_proc, prom) = start_prometheus(d, &prom_cfg);

    // Every target scraped at least twice (health known, one scrape of the
    // signups series stored).
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let t = targets(&prom);
        let stored = prom.query(r#"cxpulse_signups_total{job="tls"}"#);
        if t.len() == 7 && t.values().all(|(h, _)| h != "unknown") && !stored.is_empty() {
            break t;
        }
        prom_proc.assert_running();
        for run in [&mut a, &mut b] {
            if let Ok(Some(st)) = run.child.try_wait() {
                panic!("cxpulse exited ({st})\n{}", run.log_tail());
            }
        }
        assert!(
            Instant::now() < deadline,
            "targets not scraped in time: {t:?}\n{}",
            prom_proc.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    for (job, (health, err)) in &seen {
        eprintln!("metrics_tls: prometheus job {job}: {health} {err:?}");
    }
    let expect = |job: &str, health: &str, error_has: &str| {
        let (h, e) = &seen[job];
        assert_eq!(h, health, "job {job}: {e}");
        assert!(
            e.contains(error_has),
            "job {job}: error {e:?}, want {error_has:?}"
        );
    };
    expect("tls", "up", "");
    assert_eq!(seen["tls"].1, "");
    expect("mtls", "up", "");
    expect("tls-no-credentials", "down", "401 Unauthorized");
    expect("tls-wrong-password", "down", "401 Unauthorized");
    expect(
        "tls-no-ca",
        "down",
        "certificate signed by unknown authority",
    );
    // rustls answers the plain request with a TLS alert record.
    expect("plain-http", "down", "malformed HTTP response");
    expect("mtls-no-client-cert", "down", "certificate required");

    let up: BTreeMap<String, f64> = prom
        .query("up")
        .iter()
        .map(|r| {
            (
                r["metric"]["job"].as_str().unwrap_or("?").to_string(),
                sample_value(r),
            )
        })
        .collect();
    let want: BTreeMap<String, f64> = [
        ("tls", 1.0),
        ("mtls", 1.0),
        ("tls-no-credentials", 0.0),
        ("tls-wrong-password", 0.0),
        ("tls-no-ca", 0.0),
        ("plain-http", 0.0),
        ("mtls-no-client-cert", 0.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(up, want);
    // The cxpulse series, through Prometheus, hold what was produced.
    for job in ["tls", "mtls"] {
        let r = prom.query(&format!(r#"sum(cxpulse_signups_total{{job="{job}"}})"#));
        assert_eq!(r.len(), 1, "{job}: {r:?}");
        assert_eq!(sample_value(&r[0]), SIGNUPS as f64, "{job}");
    }

    // 5. No secret in the logs; the listener said what protects it.
    for run in [&a, &b] {
        let log = run.log_text();
        assert!(!log.contains(&pw), "password in {}", run.log.display());
        assert!(!log.contains(&hash), "hash in {}", run.log.display());
        assert!(log.contains("serving https://"), "{}", run.log_tail());
        assert!(log.contains("basic auth (1 users)"), "{}", run.log_tail());
    }
    assert_eq!(a.sigterm(), Some(0), "{}", a.log_tail());
    assert_eq!(b.sigterm(), Some(0), "{}", b.log_tail());
}

/// `cxpulse run` with a web config it cannot use: exit 2, before binding
/// or connecting to anything, naming the file and the key, not the hash.
#[test]
fn a_bad_web_config_is_a_startup_error_naming_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let http = format!("127.0.0.1:{}", free_port());
    let cfg = d.join("cxpulse.toml");
    std::fs::write(
        &cfg,
        format!("[kafka]\nbrokers = \"127.0.0.1:1\"\n\n[http]\nlisten = \"{http}\"\n"),
    )
    .expect("write config");
    let hash = bcrypt_hash("x", 4);
    let truncated = &hash[..50];
    let cases: [(&str, String, &str); 4] = [
        (
            "missing-cert.yml",
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n".into(),
            "tls_server_config.cert_file: cannot read ",
        ),
        (
            "bad-hash.yml",
            format!("basic_auth_users:\n  alice: {truncated}\n"),
            "basic_auth_users.alice: not a bcrypt hash",
        ),
        (
            "unknown-key.yml",
            format!("basic_auth_users:\n  alice: {hash}\nbasic_auth_user:\n  bob: {hash}\n"),
            "basic_auth_user: unknown field `basic_auth_user`",
        ),
        (
            "missing-file.yml",
            String::new(),
            "(file): cannot read it: No such file",
        ),
    ];
    for (name, text, want) in cases {
        let web = d.join(name);
        if !text.is_empty() {
            std::fs::write(&web, &text).expect("write web config");
        }
        let mut cmd = Command::new(common::cxpulse_bin());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CXPULSE") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .args(["run", "--config"])
            .arg(&cfg)
            .arg("--web.config.file")
            .arg(&web)
            .stdin(Stdio::null())
            .output()
            .expect("run cxpulse");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        let line = format!("cxpulse: error: web config {}: {want}", web.display());
        assert!(
            stderr.contains(&line),
            "{name}: want {line:?} in:\n{stderr}"
        );
        assert!(!stderr.contains(&hash[7..]), "{name}: hash in {stderr}");
        assert!(
            !stderr.contains(&truncated[7..]),
            "{name}: hash in {stderr}"
        );
        // Nothing was listening: the error came first.
        assert_eq!(common::http_get(&http, "/healthz"), None, "{name}");
    }

    // The TOML key works the same way (and the flag wins over it).
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n\n[http]\nlisten = \"{http}\"\nweb_config_file = \"{}\"\n",
            d.join("bad-hash.yml").display()
        ),
    )
    .expect("write config");
    let out = Command::new(common::cxpulse_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("CXPULSE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run cxpulse");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad-hash.yml: basic_auth_users.alice"),
        "{stderr}"
    );
}
