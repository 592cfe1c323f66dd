use std::time::Instant;

use super::*;

/// A directory with `web.yml` (the given text) and a self-signed
/// certificate for 127.0.0.1 (`server.crt`, `server.key`).
fn dir_with(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("rcgen");
    std::fs::write(dir.path().join("server.crt"), ck.cert.pem()).expect("write");
    std::fs::write(
        dir.path().join("server.key"),
        ck.signing_key.serialize_pem(),
    )
    .expect("write");
    let path = dir.path().join("web.yml");
    std::fs::write(&path, yaml).expect("write");
    (dir, path)
}

fn load_err(yaml: &str) -> WebConfigError {
    let (_dir, path) = dir_with(yaml);
    match WebConfig::load(&path) {
        Ok(w) => panic!("{yaml}\nloaded: {w:?}"),
        Err(e) => e,
    }
}

fn hash4(password: &str) -> String {
    bcrypt::hash(password, 4).expect("bcrypt")
}

#[test]
fn a_good_file_loads_tls_and_users_with_paths_relative_to_it() {
    let yaml = format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n\
         basic_auth_users:\n  prometheus: {}\n  grafana: {}\n",
        hash4("a"),
        hash4("b")
    );
    let (_dir, path) = dir_with(&yaml);
    let w = WebConfig::load(&path).expect("loads");
    let tls = w.tls.as_ref().expect("tls");
    assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert_eq!(w.client_auth, ClientAuth::None);
    assert_eq!(w.auth.as_ref().map(|a| a.len()), Some(2));
    assert_eq!(w.describe(), "TLS, basic auth (2 users)");
}

#[test]
fn a_key_file_every_user_can_read_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, path) =
        dir_with("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n");
    let key = dir.path().join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let w = WebConfig::load(&path).expect("loads");
    assert_eq!(w.warnings.len(), 1, "{:?}", w.warnings);
    assert!(w.warnings[0].contains("mode 644"), "{:?}", w.warnings);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let w = WebConfig::load(&path).expect("loads");
    assert!(w.warnings.is_empty(), "{:?}", w.warnings);
}

#[test]
fn an_empty_file_or_only_comments_is_no_protection() {
    for text in ["", "# nothing yet\n", "---\n"] {
        let (_dir, path) = dir_with(text);
        let w = WebConfig::load(&path).expect("loads");
        assert!(w.tls.is_none() && w.auth.is_none(), "{text:?}");
        assert_eq!(w.describe(), "no TLS, no basic auth");
    }
}

#[test]
fn basic_auth_alone_is_allowed() {
    let (_dir, path) = dir_with(&format!("basic_auth_users:\n  p: {}\n", hash4("x")));
    let w = WebConfig::load(&path).expect("loads");
    assert_eq!(w.describe(), "no TLS, basic auth (1 users)");
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let e = load_err(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
    );
    assert_eq!(e.key, "tls_server_config.cipher_suites");
    assert!(e.reason.starts_with("unknown field `cipher_suites`"), "{e}");
    let e = load_err("http_server_config:\n  http2: false\n");
    assert_eq!(e.key, "http_server_config");
    assert!(
        e.reason.contains("unknown field `http_server_config`"),
        "{e}"
    );
    // exporter-toolkit's inline key material is refused too.
    let e = load_err("tls_server_config:\n  cert: x\n  key: SECRETKEYMATERIAL\n");
    assert!(!e.to_string().contains("SECRETKEYMATERIAL"), "{e}");
}

#[test]
fn a_missing_cert_file_is_named_with_its_key() {
    let e = load_err("tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n");
    assert_eq!(e.key, "tls_server_config.cert_file");
    assert!(e.reason.contains("nope.crt"), "{e}");
    assert!(e.reason.contains("No such file"), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("web config ") && msg.contains("web.yml"),
        "{msg}"
    );

    let e = load_err("tls_server_config:\n  key_file: server.key\n");
    assert_eq!(e.key, "tls_server_config.cert_file");
    assert_eq!(e.reason, "required with tls_server_config");
}

#[test]
fn a_key_that_is_not_a_key_or_not_the_certificates_is_refused() {
    let e = load_err("tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n");
    assert_eq!(e.key, "tls_server_config.key_file");
    assert!(e.reason.contains("no usable PEM private key"), "{e}");

    // Another certificate's key.
    let (dir, path) =
        dir_with("tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n");
    let other = rcgen::KeyPair::generate().expect("key");
    std::fs::write(dir.path().join("other.key"), other.serialize_pem()).expect("write");
    let e = WebConfig::load(&path).expect_err("mismatched key");
    assert_eq!(e.key, "tls_server_config.key_file");
    assert!(e.reason.contains("cannot serve with"), "{e}");
}

#[test]
fn bad_hashes_are_refused_without_printing_them() {
    let e = load_err("basic_auth_users:\n  alice: plaintextpassword\n");
    assert_eq!(e.key, "basic_auth_users.alice");
    assert!(e.reason.starts_with("not a bcrypt hash"), "{e}");
    assert!(!e.to_string().contains("plaintextpassword"), "{e}");

    // A hash with a cost bcrypt refuses.
    let bad_cost = hash4("x").replacen("$04$", "$99$", 1);
    let e = load_err(&format!("basic_auth_users:\n  alice: {bad_cost}\n"));
    assert_eq!(e.reason, "bcrypt cost 99 outside 4..=31");
    assert!(!e.to_string().contains(&bad_cost[7..]), "{e}");

    // A number is read as text, and is no hash either.
    let e = load_err("basic_auth_users:\n  alice: 31415926535\n");
    assert_eq!(e.key, "basic_auth_users.alice");
    assert!(!e.to_string().contains("31415926535"), "{e}");

    // A value of the wrong type: serde would print it; the error does not.
    let e = load_err("basic_auth_users: alice:hunter2\n");
    assert_eq!(e.key, "basic_auth_users");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(e.reason.starts_with("invalid type, expected"), "{e}");

    let e = load_err("tls_server_config: /etc/server.crt\n");
    assert_eq!(e.key, "tls_server_config");
    assert!(
        e.reason
            .starts_with("invalid type, expected a map with cert_file, key_file"),
        "{e}"
    );
    assert!(!e.reason.contains("/etc/server.crt"), "{e}");

    let e = load_err(&format!("basic_auth_users:\n  \"a:b\": {}\n", hash4("x")));
    assert_eq!(e.key, "basic_auth_users.a:b");
}

#[test]
fn client_auth_needs_a_ca_and_a_verifying_type() {
    let base = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let e = load_err(&format!("{base}  client_ca_file: server.crt\n"));
    assert_eq!(e.key, "tls_server_config.client_ca_file");
    let e = load_err(&format!(
        "{base}  client_auth_type: RequireAndVerifyClientCert\n"
    ));
    assert_eq!(e.key, "tls_server_config.client_ca_file");
    let e = load_err(&format!("{base}  client_auth_type: RequireAnyClientCert\n"));
    assert_eq!(e.key, "tls_server_config.client_auth_type");
    assert!(e.reason.contains("not supported"), "{e}");
    let e = load_err(&format!("{base}  client_auth_type: Sometimes\n"));
    assert!(e.reason.starts_with("unknown value `Sometimes`"), "{e}");

    let (_dir, path) = dir_with(&format!(
        "{base}  client_ca_file: server.crt\n  client_auth_type: RequireAndVerifyClientCert\n"
    ));
    let w = WebConfig::load(&path).expect("loads");
    assert_eq!(w.client_auth, ClientAuth::RequireAndVerify);
    assert_eq!(
        w.describe(),
        "TLS, client certificates required, no basic auth"
    );
}

#[test]
fn tls_versions() {
    let v = |min: &str, max: &str| {
        protocol_versions(min, max).map(|v| v.iter().map(|p| p.version).collect::<Vec<_>>())
    };
    use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
    assert_eq!(v("", ""), Ok(vec![TLSv1_3, TLSv1_2]));
    assert_eq!(v("TLS13", ""), Ok(vec![TLSv1_3]));
    assert_eq!(v("", "TLS12"), Ok(vec![TLSv1_2]));
    assert_eq!(
        v("TLS13", "TLS12").map_err(|e| e.0),
        Err("max_version".to_string())
    );
    assert_eq!(
        v("TLS10", "").map_err(|e| e.0),
        Err("min_version".to_string())
    );
}

#[test]
fn redact_keeps_names_and_drops_values() {
    assert_eq!(
        redact("invalid type: integer `12345`, expected a string"),
        "invalid type, expected a string"
    );
    assert_eq!(redact("invalid value: string \"hunter2\""), "invalid value");
    assert_eq!(redact("something else with hunter2"), "invalid value");
    assert_eq!(
        redact("tls: unknown field `key`, expected one of `a`, `b` at line 4 column 3"),
        "unknown field `key`, expected one of `a`, `b` at line 4 column 3"
    );
    assert_eq!(
        redact("users: invalid type: string \"alice:hunter2\", expected a map at line 1 column 19"),
        "invalid type, expected a map at line 1 column 19"
    );
    assert_eq!(
        redact("mapping values are not allowed in this context at line 2 column 9"),
        "mapping values are not allowed in this context at line 2 column 9"
    );
    assert_eq!(
        redact("found \"hunter2\" at line 2 column 9"),
        "invalid value at line 2 column 9"
    );
}

fn basic(user: &str, password: &str) -> Vec<u8> {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}").into_bytes()
}

#[tokio::test]
async fn basic_auth_checks_user_and_password_and_caches_successes() {
    let mut users = BTreeMap::new();
    users.insert(
        "prometheus".to_string(),
        bcrypt::hash("s3cret:with colon", 10).expect("bcrypt"),
    );
    let auth = BasicAuth::new(users).expect("users");

    let t = Instant::now();
    assert!(
        auth.allows(Some(&basic("prometheus", "s3cret:with colon")))
            .await
    );
    let first = t.elapsed();
    let t = Instant::now();
    for _ in 0..100 {
        assert!(
            auth.allows(Some(&basic("prometheus", "s3cret:with colon")))
                .await
        );
    }
    let cached = t.elapsed() / 100;
    eprintln!("bcrypt cost 10: first verification {first:?}, cached {cached:?}");
    assert!(cached * 20 < first, "cached {cached:?} vs first {first:?}");

    // Wrong password, unknown user (checked against the dummy hash), other
    // schemes, garbage: refused, and never cached.
    let t = Instant::now();
    assert!(!auth.allows(Some(&basic("prometheus", "s3cret"))).await);
    assert!(!auth.allows(Some(&basic("prometheus", "s3cret"))).await);
    let wrong = t.elapsed() / 2;
    let t = Instant::now();
    assert!(
        !auth
            .allows(Some(&basic("nobody", "s3cret:with colon")))
            .await
    );
    let unknown = t.elapsed();
    eprintln!("wrong password {wrong:?}, unknown user {unknown:?}");
    assert!(
        wrong * 4 > first && unknown * 4 > first,
        "no bcrypt on a refusal?"
    );
    assert!(!auth.allows(None).await);
    assert!(!auth.allows(Some(b"Bearer abc")).await);
    assert!(!auth.allows(Some(b"Basic !!!notbase64")).await);
    assert!(!auth.allows(Some(&basic("prometheus", ""))).await);
    // The scheme is case-insensitive.
    let mut lower = basic("prometheus", "s3cret:with colon");
    lower[..5].copy_from_slice(b"basic");
    assert!(auth.allows(Some(&lower)).await);
    assert_eq!(auth.verified.lock().expect("lock").len(), 1);
}
