//! The web side of the harness: a test PKI (CA, server and client
//! certificates, made with rcgen), a blocking HTTPS client (rustls) with
//! optional basic auth and client certificate, and a real Prometheus server
//! (Debian's, `CXPULSE_PROMETHEUS`) as a child process with its HTTP API.
//!
//! A test that needs Prometheus and cannot find it panics: it fails, never skips.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// PEM files in one directory: a CA and a server certificate it signed for
/// `127.0.0.1` and `localhost`; a second CA for clients and a client
/// certificate it signed. Keys are written 0600.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn create(dir: &Path) -> Pki {
        let write = |name: &str, pem: String| {
            let p = dir.join(name);
            std::fs::write(&p, pem).expect("write pem");
            if name.ends_with(".key") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod key");
            }
            p
        };
        let server_ca = ca("cxpulse test server CA");
        let client_ca = ca("cxpulse test client CA");
        let (server_cert, server_key) = leaf(
            &server_ca,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &client_ca,
            &["prometheus"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca: write("ca.crt", server_ca.pem()),
            server_cert: write("server.crt", server_cert),
            server_key: write("server.key", server_key),
            client_ca: write("client-ca.crt", client_ca.pem()),
            client_cert: write("client.crt", client_cert),
            client_key: write("client.key", client_key),
        }
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca cert")
}

/// (certificate PEM, key PEM) for `names`, signed by `issuer`.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf cert");
    (cert.pem(), key.serialize_pem())
}

/// A bcrypt hash of `password` at `cost`, as `htpasswd -nbBC COST` writes.
pub fn bcrypt_hash(password: &str, cost: u32) -> String {
    bcrypt::hash(password, cost).expect("bcrypt hash")
}

// ---------------------------------------------------------------------------
// HTTPS client
// ---------------------------------------------------------------------------

/// A TLS client configuration trusting only `ca` (nothing when `None`),
/// presenting `client` = (certificate, key) when given.
pub fn tls_client(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        for c in CertificateDer::pem_file_iter(ca).expect("read CA") {
            roots.add(c.expect("CA pem")).expect("add CA");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let cfg = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .expect("read client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert pem");
            let key = PrivateKeyDer::from_pem_file(key).expect("client key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client auth")
        }
    };
    Arc::new(cfg)
}

/// An HTTPS answer.
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    /// The header lines, lowercased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// GET `path` over HTTPS from `addr` (`127.0.0.1:PORT`, verified as the IP
/// address 127.0.0.1), with basic auth when `auth` is given. `Err` carries
/// the TLS or I/O error (e.g. `invalid peer certificate: UnknownIssuer`).
pub fn https_get(
    addr: &str,
    path: &str,
    tls: &Arc<rustls::ClientConfig>,
    auth: Option<(&str, &str)>,
) -> Result<Answer, String> {
    use base64::Engine as _;
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let conn = rustls::ClientConnection::new(tls.clone(), name).map_err(|e| e.to_string())?;
    let sock = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        Duration::from_secs(2),
    )
    .map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((user, password)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    s.flush().map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf) {
        // A server closing without close_notify after a full answer is fine.
        if buf.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(e.to_string());
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP: {text:?}"))?;
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        code,
        headers,
        body: body.to_string(),
    })
}

// ---------------------------------------------------------------------------
// Child processes and Prometheus
// ---------------------------------------------------------------------------

/// A child process with its output in a log file; killed on drop, and by a
/// watchdog if this test process dies without running destructors.
pub struct Proc {
    name: &'static str,
    pub child: Child,
    watchdog: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Proc {
        let f = File::create(&log).expect("create log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log fd"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let watchdog = super::spawn_watchdog(child.id());
        Proc {
            name,
            child,
            watchdog,
            log,
        }
    }

    pub fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        format!(
            "--- {} log tail ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("{} exited ({st})\n{}", self.name, self.log_tail());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prometheus' HTTP API.
pub struct Prometheus {
    pub addr: String,
}

impl Prometheus {
    /// The `data` of an API answer; panics on an error answer.
    pub fn api(&self, path: &str) -> Value {
        let (code, body) = super::http_get(&self.addr, path)
            .unwrap_or_else(|| panic!("no answer from Prometheus for {path}"));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("Prometheus {path}: {code} not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "Prometheus {path}: {code} {body}");
        v["data"].clone()
    }

    /// An instant query's result vector.
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", urlencode(expr)));
        match data["resultType"].as_str() {
            Some("vector") => data["result"].as_array().cloned().unwrap_or_default(),
            Some("scalar") => vec![serde_json::json!({"metric": {}, "value": data["result"]})],
            other => panic!("{expr}: unexpected result type {other:?}"),
        }
    }
}

/// The value of an instant-query sample.
pub fn sample_value(r: &Value) -> f64 {
    r["value"][1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// Starts Prometheus with `config` (a file in `dir`, which also holds its
/// data and log) on a free loopback port; waits until `/-/ready` is 200.
pub fn start_prometheus(dir: &Path, config: &Path) -> (Proc, Prometheus) {
    let addr = format!("127.0.0.1:{}", super::free_port());
    let mut cmd = Command::new(super::prometheus());
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus-data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .current_dir(dir);
    let mut proc = Proc::spawn("prometheus", cmd, dir.join("prometheus.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while super::http_get(&addr, "/-/ready").is_none_or(|(c, _)| c != 200) {
        proc.assert_running();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for Prometheus to be ready\n{}",
            proc.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    (proc, Prometheus { addr })
}
