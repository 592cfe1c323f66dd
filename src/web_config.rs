//! The web configuration of the HTTP listener: TLS and basic authentication
//! for `/metrics`, `/healthz` and `/readyz`, in the Prometheus
//! exporter-toolkit format (`--web.config.file`, the file node_exporter and
//! Prometheus itself read):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # PEM, the server certificate (chain)
//!   key_file: server.key           # PEM, its private key
//!   client_ca_file: clients-ca.crt # optional: verify client certificates
//!   client_auth_type: RequireAndVerifyClientCert
//!   min_version: TLS12             # optional: TLS12 (default) or TLS13
//!   max_version: TLS13             # optional
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt hash (htpasswd -nBC 10 prometheus)
//! ```
//!
//! Relative paths are relative to the directory of the web config file, as
//! in exporter-toolkit. Keys exporter-toolkit knows but cxpulse does not
//! implement (`cipher_suites`, `http_server_config`, inline `cert`/`key`,
//! ...) are refused, so a file never silently means less than it says.
//!
//! Errors name the file and the key, never a value that could be a secret
//! (a hash, a password, key material): serde's "invalid type: string \"..\""
//! messages are rewritten without the value.
//!
//! Basic auth follows exporter-toolkit: a bcrypt verification (50-100 ms at
//! cost 10) runs one at a time, an unknown user is checked against a dummy
//! hash of the same cost (no timing difference between "no such user" and
//! "wrong password"), and a successful verification is cached under the
//! SHA-256 of (user, hash, password) so later scrapes cost a hash lookup.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::Deserialize;

/// The loaded web configuration; the default (no file) is plain HTTP
/// without authentication.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// The TLS configuration of the listener, when `tls_server_config` is set.
    pub tls: Option<Arc<ServerConfig>>,
    /// The users allowed in, when `basic_auth_users` is not empty.
    pub auth: Option<Arc<BasicAuth>>,
    /// Whether client certificates are verified (for the start-up log line).
    pub client_auth: ClientAuth,
    /// What the caller should log as warnings (e.g. a key file others can read).
    pub warnings: Vec<String>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("client_auth", &self.client_auth)
            .field("basic_auth_users", &self.auth.as_ref().map(|a| a.len()))
            .finish()
    }
}

/// `tls_server_config.client_auth_type`, the values cxpulse implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (or unset): no client certificate asked for.
    #[default]
    None,
    /// `VerifyClientCertIfGiven`: a certificate, if sent, must chain to `client_ca_file`.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`: a certificate chaining to `client_ca_file` is required.
    RequireAndVerify,
}

/// A web config file that cannot be used: the file, the key, and why.
#[derive(Debug, thiserror::Error)]
#[error("web config {}: {key}: {reason}", file.display())]
pub struct WebConfigError {
    pub file: PathBuf,
    /// The key at fault, dotted (`tls_server_config.cert_file`); `(file)`
    /// when the file as a whole is at fault.
    pub key: String,
    pub reason: String,
}

// The file as written. Every struct refuses unknown keys.

#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with tls_server_config and/or basic_auth_users"
)]
struct FileSpec {
    #[serde(default)]
    tls_server_config: Option<TlsSpec>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with cert_file, key_file and optional client_ca_file, client_auth_type, min_version, max_version"
)]
struct TlsSpec {
    #[serde(default)]
    cert_file: String,
    #[serde(default)]
    key_file: String,
    #[serde(default)]
    client_ca_file: String,
    #[serde(default)]
    client_auth_type: String,
    #[serde(default)]
    min_version: String,
    #[serde(default)]
    max_version: String,
}

impl WebConfig {
    /// Reads and checks `path`: parses it, loads the certificates and key,
    /// checks every bcrypt hash. Costs one bcrypt hash (the dummy one) when
    /// `basic_auth_users` is set.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let err = |key: &str, reason: String| WebConfigError {
            file: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("(file)", format!("cannot read it: {e}")))?;
        let spec = parse(&text).map_err(|(key, reason)| err(&key, reason))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut warnings = Vec::new();
        let (tls, client_auth) = match spec.tls_server_config {
            Some(t) => {
                let (cfg, ca) = tls_config(&t, base)
                    .map_err(|(key, reason)| err(&format!("tls_server_config.{key}"), reason))?;
                warnings.extend(readable_by_others(&resolve(base, &t.key_file)));
                (Some(Arc::new(cfg)), ca)
            }
            None => (None, ClientAuth::None),
        };
        let auth = match spec.basic_auth_users {
            Some(users) if !users.is_empty() => Some(Arc::new(
                BasicAuth::new(users)
                    .map_err(|(user, reason)| err(&format!("basic_auth_users.{user}"), reason))?,
            )),
            _ => None,
        };
        Ok(WebConfig {
            tls,
            auth,
            client_auth,
            warnings,
        })
    }

    /// One line for the start-up log: what protects the listener.
    pub fn describe(&self) -> String {
        let tls = match (&self.tls, self.client_auth) {
            (None, _) => "no TLS",
            (Some(_), ClientAuth::None) => "TLS",
            (Some(_), ClientAuth::VerifyIfGiven) => "TLS, client certificates verified if sent",
            (Some(_), ClientAuth::RequireAndVerify) => "TLS, client certificates required",
        };
        match &self.auth {
            None => format!("{tls}, no basic auth"),
            Some(a) => format!("{tls}, basic auth ({} users)", a.len()),
        }
    }
}

/// The YAML text to the spec; errors are (dotted key, reason) without values.
fn parse(text: &str) -> Result<FileSpec, (String, String)> {
    // An empty file (or only comments) is an empty configuration, as in exporter-toolkit.
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let spec: Result<Option<FileSpec>, _> = serde_path_to_error::deserialize(de);
    match spec {
        Ok(s) => Ok(s.unwrap_or_default()),
        Err(e) => {
            let path = e.path().to_string();
            let key = if path.is_empty() || path == "." {
                "(file)".to_string()
            } else {
                path
            };
            Err((key, redact(&e.into_inner().to_string())))
        }
    }
}

/// A serde/YAML error message without the offending value: `invalid type:
/// string "…", expected X` becomes `invalid type, expected X`. The YAML
/// parser's own path prefix (`key: `) is dropped (the caller names the key)
/// and its ` at line L column C` suffix kept.
fn redact(msg: &str) -> String {
    let (body, at) = match msg.rfind(" at line ") {
        Some(i) => (&msg[..i], &msg[i..]),
        None => (msg, ""),
    };
    for kind in ["invalid type", "invalid value", "invalid length"] {
        if let Some(i) = body.find(kind) {
            let rest = &body[i + kind.len()..];
            return match rest.find(", expected") {
                Some(j) => format!("{kind}{}{at}", &rest[j..]),
                None => format!("{kind}{at}"),
            };
        }
    }
    // Key names, never values.
    for kind in ["unknown field", "missing field", "duplicate"] {
        if let Some(i) = body.find(kind) {
            return format!("{}{at}", &body[i..]);
        }
    }
    // YAML syntax errors say what was expected where, e.g. "did not find
    // expected key at line 3 column 1"; anything else is not shown.
    if !at.is_empty() && !body.contains(['"', '`', '\'']) {
        return msg.to_string();
    }
    format!("invalid value{at}")
}

/// `tls_server_config` to a rustls configuration; errors are (key, reason).
fn tls_config(t: &TlsSpec, base: &Path) -> Result<(ServerConfig, ClientAuth), (String, String)> {
    let e = |key: &str, reason: String| (key.to_string(), reason);
    let resolve = |p: &str| resolve(base, p);
    if t.cert_file.is_empty() {
        return Err(e("cert_file", "required with tls_server_config".into()));
    }
    if t.key_file.is_empty() {
        return Err(e("key_file", "required with tls_server_config".into()));
    }
    let cert_path = resolve(&t.cert_file);
    let key_path = resolve(&t.key_file);
    let certs = read_certs(&cert_path).map_err(|r| e("cert_file", r))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|err| {
        e(
            "key_file",
            format!(
                "no usable PEM private key in {}: {}",
                key_path.display(),
                pem_error(&err)
            ),
        )
    })?;

    let client_auth = match t.client_auth_type.as_str() {
        "" | "NoClientCert" => ClientAuth::None,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
        "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" => {
            return Err(e(
                "client_auth_type",
                format!(
                    "`{}` is not supported by cxpulse (it accepts certificates nobody verified); \
                     use VerifyClientCertIfGiven or RequireAndVerifyClientCert",
                    t.client_auth_type
                ),
            ));
        }
        other => {
            return Err(e(
                "client_auth_type",
                format!(
                    "unknown value `{other}` (NoClientCert, VerifyClientCertIfGiven, \
                     RequireAndVerifyClientCert)"
                ),
            ));
        }
    };
    if client_auth == ClientAuth::None && !t.client_ca_file.is_empty() {
        return Err(e(
            "client_ca_file",
            "set without a client_auth_type that verifies client certificates \
             (VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
                .into(),
        ));
    }
    if client_auth != ClientAuth::None && t.client_ca_file.is_empty() {
        return Err(e(
            "client_ca_file",
            format!("required with client_auth_type {}", t.client_auth_type),
        ));
    }

    let versions = protocol_versions(&t.min_version, &t.max_version)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|err| e("min_version", err.to_string()))?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        _ => {
            let ca_path = resolve(&t.client_ca_file);
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(&ca_path).map_err(|r| e("client_ca_file", r))? {
                roots.add(c).map_err(|err| {
                    e(
                        "client_ca_file",
                        format!("{}: not a usable CA certificate: {err}", ca_path.display()),
                    )
                })?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if client_auth == ClientAuth::VerifyIfGiven {
                v.allow_unauthenticated()
            } else {
                v
            };
            let v = v
                .build()
                .map_err(|err| e("client_ca_file", format!("{}: {err}", ca_path.display())))?;
            builder.with_client_cert_verifier(v)
        }
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|err| {
        e(
            "key_file",
            format!(
                "{} cannot serve with {}: {err}",
                key_path.display(),
                cert_path.display()
            ),
        )
    })?;
    // axum serves HTTP/1.1 (its http2 feature is off).
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((cfg, client_auth))
}

/// `p` relative to `base` unless absolute.
fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A warning when users other than the owner and group may read `key`.
fn readable_by_others(key: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).ok()?.permissions().mode();
        if mode & 0o004 != 0 {
            return Some(format!(
                "tls_server_config.key_file {} is readable by every user (mode {:o}); chmod 600 or 640",
                key.display(),
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = key;
    None
}

/// PEM certificates from `path`; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|err| format!("cannot read {}: {}", path.display(), pem_error(&err)))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{}: {}", path.display(), pem_error(&err)))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {}", path.display()));
    }
    Ok(certs)
}

/// A PEM error without any of the file's content (a key file's lines are secret).
fn pem_error(err: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match err {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM section of the expected kind".into(),
        _ => "malformed PEM".into(),
    }
}

fn protocol_versions(
    min: &str,
    max: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, (String, String)> {
    let rank = |key: &str, v: &str, default: u8| -> Result<u8, (String, String)> {
        match v {
            "" => Ok(default),
            "TLS12" => Ok(12),
            "TLS13" => Ok(13),
            "TLS10" | "TLS11" => Err((
                key.to_string(),
                format!("{v} is not supported (rustls speaks TLS12 and TLS13)"),
            )),
            other => Err((
                key.to_string(),
                format!("unknown value `{other}` (TLS12 or TLS13)"),
            )),
        }
    };
    let lo = rank("min_version", min, 12)?;
    let hi = rank("max_version", max, 13)?;
    if lo > hi {
        return Err((
            "max_version".into(),
            format!("{max} is below min_version {min}"),
        ));
    }
    let mut out = Vec::new();
    if hi >= 13 {
        out.push(&rustls::version::TLS13);
    }
    if lo <= 12 {
        out.push(&rustls::version::TLS12);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Basic auth
// ---------------------------------------------------------------------------

/// The dummy password of the hash unknown users are checked against.
const DUMMY_PASSWORD: &str = "cxpulse: no such user";
/// Successful verifications remembered; the cache is emptied when full.
const CACHE_CAP: usize = 1024;

/// `basic_auth_users`: user to bcrypt hash, with the cache of successful
/// verifications.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// A hash of `DUMMY_PASSWORD` at the highest cost among the users.
    dummy: String,
    /// SHA-256 of (user, hash, password) of successful verifications.
    verified: Mutex<HashSet<[u8; 32]>>,
    /// One bcrypt verification at a time (each takes a core for 50-100 ms).
    bcrypt_gate: tokio::sync::Semaphore,
}

impl BasicAuth {
    /// Checks every hash; errors are (user, reason), never the hash.
    fn new(users: BTreeMap<String, String>) -> Result<BasicAuth, (String, String)> {
        let mut max_cost = 0;
        for (user, hash) in &users {
            if user.is_empty() || user.contains(':') {
                return Err((
                    user.clone(),
                    "a user name must be non-empty and without `:` (basic auth cannot carry it)"
                        .into(),
                ));
            }
            let parts: bcrypt::HashParts = hash.parse().map_err(|err: bcrypt::BcryptError| {
                (user.clone(), format!("not a bcrypt hash ({err})"))
            })?;
            let cost = parts.get_cost();
            if !(4..=31).contains(&cost) {
                return Err((user.clone(), format!("bcrypt cost {cost} outside 4..=31")));
            }
            max_cost = max_cost.max(cost);
        }
        let dummy = bcrypt::hash(DUMMY_PASSWORD, max_cost.max(4))
            .map_err(|err| ("(dummy hash)".to_string(), err.to_string()))?;
        Ok(BasicAuth {
            users,
            dummy,
            verified: Mutex::new(HashSet::new()),
            bcrypt_gate: tokio::sync::Semaphore::new(1),
        })
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether an `Authorization` header value lets the request in.
    pub async fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let key = cache_key(&user, &hash, &password);
        if known && self.cached(&key) {
            return true;
        }
        let Ok(_permit) = self.bcrypt_gate.acquire().await else {
            return false;
        };
        // A concurrent request may have verified the same credentials meanwhile.
        if known && self.cached(&key) {
            return true;
        }
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok && known {
            let mut set = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if set.len() >= CACHE_CAP {
                set.clear();
            }
            set.insert(key);
        }
        ok && known
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }
}

/// `Basic base64(user:password)` to (user, password).
fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// SHA-256 over the length-prefixed user, hash and password.
fn cache_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests;
