//! TLS and SASL in front of tansu, for `tests/kafka_security.rs`.
//!
//! tansu 0.6.0's own TLS flags do not work in the shipped build (`--cert`
//! and `--key` conflict), so TLS is terminated by Debian's `socat`: tansu
//! listens in plaintext on one loopback port and advertises a second one, on
//! which `socat OPENSSL-LISTEN` forwards to the first. librdkafka then really
//! negotiates TLS and verifies the server certificate (and, with client
//! authentication on, socat verifies the client's). `tansu broker
//! --authentication` adds a real SASL/SCRAM exchange behind it.
//!
//! Certificates are made per test with the `openssl` command: a CA, a server
//! certificate for `127.0.0.1`/`localhost` and a client certificate signed
//! by it, and a second, unrelated CA.
//!
//! Tools: `CXPULSE_SOCAT` / `CXPULSE_OPENSSL`, else `socat` / `openssl` on
//! PATH (`scripts/setup-tools.sh` installs both). A missing tool panics: the
//! test fails, it never skips.

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;

use super::{create_topic_via, free_port, produce_via, tansu_bin, tool, unique_name};

/// Test certificates (EC P-256), in a temporary directory removed on drop.
pub struct Pki {
    dir: tempfile::TempDir,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    /// Server certificate then key, for socat's `cert=`.
    pub server_both: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("harness: tempdir for certificates");
        let d = dir.path().to_path_buf();
        let openssl = tool("openssl", "CXPULSE_OPENSSL");
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(&d)
                .stdin(Stdio::null())
                .output()
                .expect("harness: run openssl");
            assert!(
                out.status.success(),
                "harness: openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for (name, cn) in [("ca", "cxpulse test CA"), ("other-ca", "unrelated CA")] {
            let (key, pem, subj) = (
                format!("{name}.key"),
                format!("{name}.pem"),
                format!("/CN={cn}"),
            );
            let mut a = vec!["req", "-x509"];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
            run(&a);
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .expect("harness: write server.ext");
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .expect("harness: write client.ext");
        for (name, cn) in [("server", "localhost"), ("client", "cxpulse")] {
            let (key, csr, pem, ext, subj) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
                format!("/CN={cn}"),
            );
            let mut a = vec!["req"];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            run(&a);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        let both = [d.join("server.pem"), d.join("server.key")]
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("harness: read server cert/key"))
            .collect::<String>();
        std::fs::write(d.join("server-both.pem"), both).expect("harness: write server-both.pem");
        Pki {
            ca: d.join("ca.pem"),
            other_ca: d.join("other-ca.pem"),
            server_both: d.join("server-both.pem"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client key encrypted (PKCS#8, AES-256) with `password`.
    pub fn encrypted_client_key(&self, password: &str) -> PathBuf {
        let out = self.dir.path().join("client-encrypted.key");
        let st = Command::new(tool("openssl", "CXPULSE_OPENSSL"))
            .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in"])
            .arg(&self.client_key)
            .arg("-out")
            .arg(&out)
            .args(["-passout", &format!("pass:{password}")])
            .stdin(Stdio::null())
            .status()
            .expect("harness: run openssl pkcs8");
        assert!(st.success(), "harness: openssl pkcs8 failed");
        out
    }
}

/// How the TLS front and the broker check their clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Security {
    /// socat requires a client certificate signed by the CA (mTLS).
    pub client_cert: bool,
    /// `tansu broker --authentication`: SASL/SCRAM required.
    pub sasl: bool,
}

/// tansu on a plaintext loopback port behind a socat TLS front on another
/// (the advertised one). Both processes are killed on drop, and by a
/// watchdog if the test process dies first.
pub struct SecureBroker {
    /// `"127.0.0.1:PORT"` of the TLS front: the `bootstrap.servers`.
    pub addr: String,
    pub security: Security,
    tansu: Child,
    socat: Child,
    watchdog: Child,
    pub tansu_log: PathBuf,
    pub socat_log: PathBuf,
}

impl SecureBroker {
    /// Starts both and waits until the TLS port accepts connections (and,
    /// without SASL, until a metadata request through TLS is answered).
    pub fn start(pki: &Pki, security: Security) -> SecureBroker {
        let mut last = String::new();
        // A free port can be taken between the probe and the bind: retry.
        for _ in 0..3 {
            match Self::try_start(pki, security) {
                Ok(b) => return b,
                Err(e) => last = e,
            }
        }
        panic!("harness: could not start tansu behind socat: {last}");
    }

    fn try_start(pki: &Pki, security: Security) -> Result<SecureBroker, String> {
        let (plain, tls) = (free_port(), free_port());
        let logs = std::env::temp_dir().join("cxpulse-harness");
        let _ = std::fs::create_dir_all(&logs);
        let tansu_log = logs.join(format!("{}.log", unique_name(&format!("tansu-{plain}"))));
        let socat_log = logs.join(format!("{}.log", unique_name(&format!("socat-{tls}"))));
        let log = |p: &Path| File::create(p).map_err(|e| format!("log {}: {e}", p.display()));
        let mut cmd = Command::new(tansu_bin());
        cmd.arg("broker")
            .args(["--listener-url", &format!("tcp://127.0.0.1:{plain}")])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{tls}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        if security.sasl {
            cmd.arg("--authentication");
        }
        let f = log(&tansu_log)?;
        let tansu = cmd
            .stdout(f.try_clone().map_err(|e| e.to_string())?)
            .stderr(f)
            .spawn()
            .map_err(|e| format!("cannot run tansu: {e}"))?;
        let verify = if security.client_cert {
            format!("verify=1,cafile={}", pki.ca.display())
        } else {
            "verify=0".to_string()
        };
        let listen = format!(
            "OPENSSL-LISTEN:{tls},bind=127.0.0.1,reuseaddr,fork,cert={},{verify}",
            pki.server_both.display()
        );
        let socat = Command::new(tool("socat", "CXPULSE_SOCAT"))
            .args(["-d", &listen, &format!("TCP:127.0.0.1:{plain}")])
            .stdin(Stdio::null())
            .stdout(log(&socat_log)?)
            .stderr(log(&socat_log.with_extension("err"))?)
            .spawn()
            .map_err(|e| format!("cannot run socat: {e}"))?;
        let watchdog = Command::new("sh")
            .args([
                "-c",
                r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; kill -9 "$2" "$3" 2>/dev/null"#,
                "cxpulse-secure-broker-watchdog",
            ])
            .args([std::process::id(), tansu.id(), socat.id()].map(|p| p.to_string()))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh for the watchdog: {e}"))?;
        let mut b = SecureBroker {
            addr: format!("127.0.0.1:{tls}"),
            security,
            tansu,
            socat,
            watchdog,
            tansu_log,
            socat_log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in [plain, tls] {
            while TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )
            .is_err()
            {
                let exited = [("tansu", &mut b.tansu), ("socat", &mut b.socat)]
                    .into_iter()
                    .find_map(|(name, c)| c.try_wait().ok().flatten().map(|st| (name, st)));
                if let Some((name, st)) = exited {
                    return Err(format!("{name} exited early ({st}); {}", b.logs()));
                }
                if Instant::now() > deadline {
                    return Err(format!("port {port} not listening after 30s; {}", b.logs()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(b)
    }

    /// A client for this broker: TLS verified with the CA, the client
    /// certificate when the front asks for one. Without SASL only.
    pub fn client_config(&self, pki: &Pki) -> ClientConfig {
        assert!(
            !self.security.sasl,
            "harness: no SCRAM user exists in tansu"
        );
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.addr)
            .set("security.protocol", "SSL")
            .set("ssl.ca.location", pki.ca.display().to_string());
        if self.security.client_cert {
            c.set(
                "ssl.certificate.location",
                pki.client_cert.display().to_string(),
            )
            .set("ssl.key.location", pki.client_key.display().to_string());
        }
        c
    }

    /// Creates a topic through TLS (see [`create_topic_via`]).
    pub fn create_topic(&self, pki: &Pki, name: &str, partitions: i32) {
        create_topic_via(&self.client_config(pki), name, partitions, &self.logs());
    }

    /// Produces (key, value) records through TLS and waits until every one
    /// is acknowledged (see [`produce_via`]).
    pub fn produce(&self, pki: &Pki, topic: &str, records: &[(Option<String>, String)]) {
        let recs: Vec<(Option<&str>, &str)> = records
            .iter()
            .map(|(k, v)| (k.as_deref(), v.as_str()))
            .collect();
        produce_via(&self.client_config(pki), topic, &recs);
    }

    /// The tail of both logs, for panic messages.
    pub fn logs(&self) -> String {
        let read = |p: &Path| {
            let t = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        format!(
            "tansu log {}:\n{}\nsocat log {}:\n{}",
            self.tansu_log.display(),
            read(&self.tansu_log),
            self.socat_log.display(),
            read(&self.socat_log.with_extension("err")),
        )
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        for c in [&mut self.watchdog, &mut self.socat, &mut self.tansu] {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("harness: test failed; {}", self.logs());
        }
    }
}
