//! `cxpulse run` against a secured broker: TLS with CA verification, mutual
//! TLS, SASL/SCRAM over TLS, and secrets that never reach a log line, an
//! error message or `/metrics`.
//!
//! Real processes: tansu (plaintext, loopback) behind a socat TLS front
//! (`tests/common/secure.rs`), certificates made per test with `openssl`.
//! A missing tool fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::secure::{Pki, SecureBroker, Security};
use common::{CxConfig, CxRun, free_port, value};

/// 2025-06-02T10:00:00Z, a fixed past instant for event times.
const B: i64 = 1_748_858_400_000;
const MIN: i64 = 60_000;
/// How long a refused client is watched for staying not ready.
const REFUSED_FOR: Duration = Duration::from_secs(8);

fn signup(id: &str, user: &str, channel: &str, at: i64) -> (Option<String>, String) {
    let ts = cxpulse::event::time::format_rfc3339(at);
    (
        Some(user.to_string()),
        format!(
            r#"{{"event_id":"{id}","type":"signup","ts":"{ts}","user_id":"{user}","channel":"{channel}"}}"#
        ),
    )
}

/// `ads` signups then `organic` ones, one a minute from `B`.
fn signups(ads: usize, organic: usize) -> Vec<(Option<String>, String)> {
    (0..ads + organic)
        .map(|i| {
            let channel = if i < ads { "ads" } else { "organic" };
            signup(
                &format!("e{i}"),
                &format!("u{i}"),
                channel,
                B + i as i64 * MIN,
            )
        })
        .collect()
}

/// Writes a config for `run` (one input topic `events`, nothing published)
/// with `librdkafka` as the passthrough; returns (config path, HTTP address).
fn write_config(
    dir: &Path,
    name: &str,
    brokers: &str,
    librdkafka: &[(&str, String)],
) -> (PathBuf, String) {
    let http = format!("127.0.0.1:{}", free_port());
    let cfg = librdkafka.iter().fold(
        CxConfig::new()
            .idle_timeout("1s")
            .kafka(brokers, name, &["events"])
            .dead_letter_topic("")
            .output_topic("")
            .alerts_topic("")
            .commit_interval("500ms")
            .shutdown_timeout("5s")
            .quick_group_join()
            .listen(&http)
            .ready_max_lag(0),
        |cfg, (k, v)| cfg.librdkafka(k, v),
    );
    (cfg.write(&dir.join(format!("{name}.toml"))), http)
}

fn tls(ca: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "SSL".into()),
        ("ssl.ca.location", ca.display().to_string()),
    ]
}

/// The first log line containing `needle` (printed by the tests: the
/// evidence a person reads).
fn line_with<'a>(log: &'a str, needle: &str) -> &'a str {
    log.lines().find(|l| l.contains(needle)).unwrap_or("")
}

fn applied_signups(metrics: &str) -> f64 {
    value(
        metrics,
        r#"cxpulse_events_total{type="signup",outcome="applied"}"#,
    )
    .unwrap_or(0.0)
}

fn client_errors(metrics: &str, code: &str) -> f64 {
    value(
        metrics,
        &format!(r#"cxpulse_kafka_client_errors_total{{client="consumer",code="{code}"}}"#),
    )
    .unwrap_or(0.0)
}

/// Waits until `cx` has applied `ads + organic` signups, their effects are
/// visible per channel (once the clock passes them: `idle_timeout` 1s), and
/// it is ready.
fn assert_consumes(cx: &CxRun, ads: usize, organic: usize) {
    let channel =
        |m: &str, c: &str| value(m, &format!(r#"cxpulse_signups_total{{channel="{c}"}}"#));
    cx.wait_for(
        &format!("{ads} ads and {organic} organic signups applied, /readyz 200"),
        Duration::from_secs(60),
        || {
            let m = cx.metrics();
            applied_signups(&m) == (ads + organic) as f64
                && channel(&m, "ads") == Some(ads as f64)
                && channel(&m, "organic") == Some(organic as f64)
                && cx.ready().0 == 200
        },
    );
}

/// For `REFUSED_FOR`: `/readyz` answers 503 every time and nothing is
/// consumed. Returns the last `/readyz` body.
fn assert_stays_not_ready(cx: &CxRun) -> String {
    let until = Instant::now() + REFUSED_FOR;
    let mut body = String::new();
    while Instant::now() < until {
        let (code, b) = cx.ready();
        assert_eq!(code, 503, "/readyz {code} {b}\n{}", cx.log_tail());
        body = b;
        assert_eq!(applied_signups(&cx.metrics()), 0.0);
        std::thread::sleep(Duration::from_millis(250));
    }
    body
}

/// A TLS broker with `ads + organic` signups on `events`, and two `run`
/// processes on it: one with `good` settings, one with `bad`.
struct Pair {
    _broker: SecureBroker,
    good: CxRun,
    bad: CxRun,
}

fn start_pair(
    pki: &Pki,
    client_cert: bool,
    (ads, organic): (usize, usize),
    good: &[(&str, String)],
    bad: &[(&str, String)],
) -> Pair {
    let broker = SecureBroker::start(
        pki,
        Security {
            client_cert,
            sasl: false,
        },
    );
    broker.create_topic(pki, "events", 1);
    broker.produce(pki, "events", &signups(ads, organic));
    let run = |name: &str, pass: &[(&str, String)]| {
        let (cfg, http) = write_config(pki.dir(), name, &broker.addr, pass);
        CxRun::start(
            &cfg,
            pki.dir().join(format!("{name}.log")),
            &http,
            Duration::from_secs(20),
        )
    };
    Pair {
        good: run("cx-good", good),
        bad: run("cx-bad", bad),
        _broker: broker,
    }
}

#[test]
fn tls_verified_with_the_ca_consumes_and_an_unknown_ca_is_refused() {
    let pki = Pki::generate();
    let Pair { good, bad, _broker } =
        start_pair(&pki, false, (3, 2), &tls(&pki.ca), &tls(&pki.other_ca));

    assert_consumes(&good, 3, 2);
    assert!(
        good.log_text().contains("security.protocol=SSL"),
        "{}",
        good.log_tail()
    );

    let body = assert_stays_not_ready(&bad);
    assert_eq!(
        body,
        "not ready: not connected to any Kafka broker (last Kafka client error: SSL)\n"
    );
    let log = bad.log_text();
    assert!(
        log.contains("certificate verify failed"),
        "no TLS verification error in the log:\n{}",
        bad.log_tail()
    );
    assert!(
        client_errors(&bad.metrics(), "SSL") >= 1.0,
        "{}",
        bad.metrics()
    );
    eprintln!(
        "unknown CA: /readyz {body:?}; log: {}",
        line_with(&log, "certificate verify failed")
    );
}

#[test]
fn mutual_tls_consumes_with_the_client_certificate_and_is_refused_without() {
    let pki = Pki::generate();
    let mut with_cert = tls(&pki.ca);
    with_cert.push((
        "ssl.certificate.location",
        pki.client_cert.display().to_string(),
    ));
    with_cert.push(("ssl.key.location", pki.client_key.display().to_string()));
    let Pair { good, bad, _broker } = start_pair(&pki, true, (1, 3), &with_cert, &tls(&pki.ca));

    assert_consumes(&good, 1, 3);
    // The key's location is redacted in the settings log line.
    assert!(
        good.log_text().contains("ssl.key.location=<redacted>"),
        "{}",
        good.log_tail()
    );

    let body = assert_stays_not_ready(&bad);
    assert_eq!(
        body,
        "not ready: not connected to any Kafka broker \
         (last Kafka client error: BrokerTransportFailure)\n"
    );
    eprintln!(
        "no client certificate: /readyz {body:?}; log: {}",
        line_with(&bad.log_text(), "Kafka client error")
    );
    assert!(
        bad.log_text().contains("Kafka client error"),
        "no client error in the log:\n{}",
        bad.log_tail()
    );
}

/// Mutual TLS with an encrypted client key whose (numeric) password comes
/// from the environment in its shell spelling: consumed, the password in no
/// log line; with a wrong password, `run` refuses to start without showing
/// either password.
#[test]
fn an_encrypted_client_key_takes_its_password_from_the_environment() {
    const KEY_PASSWORD: &str = "4242424242";
    const WRONG: &str = "1717171717";
    let pki = Pki::generate();
    let key = pki.encrypted_client_key(KEY_PASSWORD);
    let broker = SecureBroker::start(
        &pki,
        Security {
            client_cert: true,
            sasl: false,
        },
    );
    broker.create_topic(&pki, "events", 1);
    broker.produce(&pki, "events", &signups(2, 0));
    let mut pass = tls(&pki.ca);
    pass.push((
        "ssl.certificate.location",
        pki.client_cert.display().to_string(),
    ));
    pass.push(("ssl.key.location", key.display().to_string()));
    let (cfg, http) = write_config(pki.dir(), "cx-encrypted-key", &broker.addr, &pass);

    let mut wrong = CxRun::spawn_with_env(
        &cfg,
        pki.dir().join("wrong.log"),
        &http,
        &[("CXPULSE__KAFKA__LIBRDKAFKA__SSL_KEY_PASSWORD", WRONG)],
    );
    assert_eq!(wrong.wait_exit(Duration::from_secs(20)).code(), Some(2));
    let log = wrong.log_text();
    assert!(log.contains("ssl.key.location"), "{log}");
    assert!(!log.contains(WRONG) && !log.contains(KEY_PASSWORD), "{log}");
    eprintln!("wrong key password: {}", line_with(&log, "error"));

    let cx = CxRun::spawn_with_env(
        &cfg,
        pki.dir().join("right.log"),
        &http,
        &[("CXPULSE__KAFKA__LIBRDKAFKA__SSL_KEY_PASSWORD", KEY_PASSWORD)],
    );
    cx.wait_for(
        "2 signups applied, /readyz 200",
        Duration::from_secs(60),
        || {
            value(&cx.metrics(), r#"cxpulse_signups_total{channel="ads"}"#) == Some(2.0)
                && cx.ready().0 == 200
        },
    );
    let log = cx.log_text();
    assert!(log.contains("ssl.key.password=<redacted>"), "{log}");
    assert!(
        !log.contains(KEY_PASSWORD),
        "the key password is in the log:\n{log}"
    );
}

/// A numeric password from the environment (the case that used to be
/// printed by the config error): SCRAM over TLS against tansu, which knows
/// no user, so authentication fails; not ready, counted, the reason logged,
/// and the password nowhere.
#[test]
fn failed_scram_authentication_is_not_ready_counted_and_never_shows_the_password() {
    const PASSWORD: &str = "8675309314159";
    let pki = Pki::generate();
    let broker = SecureBroker::start(
        &pki,
        Security {
            client_cert: false,
            sasl: true,
        },
    );
    let mut pass = tls(&pki.ca);
    pass[0].1 = "SASL_SSL".into();
    pass.push(("sasl.mechanisms", "SCRAM-SHA-256".into()));
    pass.push(("sasl.username", "cxpulse-reader".into()));
    let (cfg, http) = write_config(pki.dir(), "cx-scram", &broker.addr, &pass);
    let cx = CxRun::spawn_with_env(
        &cfg,
        pki.dir().join("scram.log"),
        &http,
        &[("CXPULSE__KAFKA__LIBRDKAFKA__sasl.password", PASSWORD)],
    );

    let until = Instant::now() + Duration::from_secs(30);
    let mut seen_error = false;
    let mut checks = 0;
    let mut last_body = String::new();
    while Instant::now() < until && !(seen_error && checks >= 20) {
        let (code, body) = cx.ready();
        if code != 0 {
            assert_eq!(code, 503, "/readyz {body}\n{}", cx.log_text());
            checks += 1;
            last_body = body.clone();
        }
        let metrics = cx.metrics();
        seen_error |= client_errors(&metrics, "Authentication") >= 1.0;
        assert!(!metrics.contains(PASSWORD));
        assert!(!body.contains(PASSWORD));
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = cx.log_text();
    assert!(
        seen_error,
        "cxpulse_kafka_client_errors_total{{code=\"Authentication\"}} never counted:\n{log}"
    );
    assert!(checks >= 20, "/readyz answered only {checks} times:\n{log}");
    assert_eq!(
        last_body,
        "not ready: not connected to any Kafka broker (last Kafka client error: Authentication)\n"
    );
    assert!(
        log.contains("SASL authentication error"),
        "no authentication error in the log:\n{log}"
    );
    assert!(
        log.contains("unknown-user"),
        "tansu's reason is not in the log:\n{log}"
    );
    assert!(log.contains("sasl.password=<redacted>"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the password is in the log:\n{log}"
    );
    eprintln!("SCRAM: log: {}", line_with(&log, "unknown-user"));
}

/// Item 8 through the binary: errors while a secret is set (a numeric
/// password from the environment) name the key and the file, never the
/// value, whichever key the error is about.
#[test]
fn config_errors_name_the_key_and_the_file_never_a_secret_value() {
    const SECRET: &str = "27182818";
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, http) = write_config(dir.path(), "cx-bad-secret", "127.0.0.1:9", &[]);
    let windows = format!(r#"["1h", "{SECRET}"]"#);
    // (environment, the key named, whether the file is named too)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, bool);
    let cases: [Case; 3] = [
        // Another key's error would quote the secret: "`27182818` has no unit".
        (
            &[
                ("CXPULSE__KAFKA__LIBRDKAFKA__SASL_PASSWORD", SECRET),
                ("CXPULSE__ENGINE__WINDOWS", &windows),
            ],
            "engine.windows",
            true,
        ),
        // librdkafka refuses a secret-looking key's value, quoting it.
        (
            &[(
                "CXPULSE__KAFKA__LIBRDKAFKA__ENABLE_SSL_CERTIFICATE_VERIFICATION",
                SECRET,
            )],
            "kafka.librdkafka.enable.ssl.certificate.verification",
            false,
        ),
        // A typo the secret hints do not catch: librdkafka refuses the key.
        (
            &[("CXPULSE__KAFKA__LIBRDKAFKA__sasl.pasword", SECRET)],
            "kafka.librdkafka.sasl.pasword",
            false,
        ),
    ];
    for (vars, key, names_file) in cases {
        let mut cx = CxRun::spawn_with_env(&cfg, dir.path().join("err.log"), &http, vars);
        let code = cx.wait_exit(Duration::from_secs(20)).code();
        let log = cx.log_text();
        assert_eq!(code, Some(2), "{vars:?}: {log}");
        assert!(log.contains(key), "{vars:?}: the key is not named:\n{log}");
        assert!(!log.contains(SECRET), "{vars:?}: the value leaked:\n{log}");
        if names_file {
            assert!(
                log.contains(&cfg.display().to_string()),
                "{vars:?}: the file is not named:\n{log}"
            );
        }
        eprintln!("{key}: {}", line_with(&log, "error"));
    }
}
