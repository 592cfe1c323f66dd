//! `cxpulse run`: the live service. Wires the consumer loop
//! ([`crate::kafka::pipeline`]) to the HTTP listener ([`crate::http`]) and to
//! SIGTERM/SIGINT.
//!
//! Exit codes: 0 after a clean shutdown (final commit done, producer
//! flushed); 1 when the shutdown was incomplete (each problem is logged);
//! 2 for errors at startup (bad config, listener address in use, ...);
//! 130 when a second signal cut the shutdown short.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::http::{self, HttpState};
use crate::kafka::{self, LiveState, ShutdownReport};
use crate::telemetry;
use crate::web_config::WebConfig;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Configuration file (TOML). Default: config/cxpulse.toml.
    /// `CXPULSE__SECTION__KEY` environment variables override its keys.
    #[arg(long, short, env = "CXPULSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// TLS and basic auth of /metrics, /healthz, /readyz: a Prometheus
    /// exporter-toolkit web config file (YAML). Overrides http.web_config_file.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

pub fn main(args: RunArgs) -> anyhow::Result<ExitCode> {
    telemetry::init_tracing();
    let path = args.config.unwrap_or_else(config::default_path);
    let mut cfg = Config::load(Some(&path), std::env::vars())?;
    if let Some(web) = args.web_config_file {
        cfg.http.web_config_file = web.to_string_lossy().into_owned();
    }
    info!(config = %path.display(), "starting cxpulse run");
    // With a web config, `serve` logs the address with its protection.
    let plain = cfg.http.web_config_file.is_empty();
    let rt = runtime()?;
    let result = rt.block_on(async {
        let shutdown = Shutdown::on_signals();
        serve(cfg, shutdown, |addr| {
            if plain {
                info!("serving http://{addr}/metrics, /healthz, /readyz");
            }
        })
        .await
    });
    // Threads still blocked in librdkafka after the deadline are not waited for.
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

/// The tokio runtime of `run` and `demo`.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cxpulse")
        .build()
        .context("cannot start the async runtime")
}

/// Runs the service until `shutdown` fires, then shuts down within
/// `kafka.shutdown_timeout`. `on_listening` gets the bound HTTP address.
/// A bad `http.web_config_file` is an error before anything starts.
pub async fn serve(
    cfg: Config,
    shutdown: Shutdown,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<ExitCode> {
    let web = load_web_config(&cfg.http)?;
    let live = Arc::new(LiveState::new());
    let (render_tx, render_rx) = mpsc::channel(16);
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", cfg.http.listen))?;
    let addr = listener.local_addr()?;
    if !cfg.http.web_config_file.is_empty() {
        let scheme = if web.tls.is_some() { "https" } else { "http" };
        info!(
            web_config = cfg.http.web_config_file.as_str(),
            protection = %web.describe(),
            "serving {scheme}://{addr}/metrics, /healthz, /readyz"
        );
    }
    for w in &web.warnings {
        warn!("web config {}: {w}", cfg.http.web_config_file);
    }
    if web.auth.is_some() && web.tls.is_none() {
        warn!("basic auth without TLS: passwords cross the network in clear text");
    }
    if web.tls.is_none() && web.auth.is_none() && !addr.ip().is_loopback() {
        warn!(
            "http.listen = {} is reachable from other hosts without TLS or authentication; \
             see --web.config.file",
            cfg.http.listen
        );
    }
    on_listening(addr);
    let (http_stop_tx, mut http_stop_rx) = watch::channel(false);
    let state = HttpState {
        render: render_tx,
        live: live.clone(),
        ready_max_lag: cfg.http.ready_max_lag,
        sla: cfg.sla.clone(),
    };
    let http_task = tokio::spawn(async move {
        http::serve(listener, state, &web, async move {
            let _ = http_stop_rx.wait_for(|v| *v).await;
        })
        .await
    });

    let forced = shutdown.forced.clone();
    let mut wait = shutdown.clone();
    let report =
        kafka::pipeline::run(&cfg, live, render_rx, async move { wait.wait().await }).await;
    let _ = http_stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(2), http_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "http listener failed"),
        Ok(Err(e)) => warn!(error = %e, "http task failed"),
        Err(_) => warn!("http listener did not stop in time"),
    }
    let report: ShutdownReport = report?;
    if *forced.borrow() {
        error!("shutdown cut short by a second signal");
        return Ok(ExitCode::from(130));
    }
    if report.is_clean() {
        info!("shutdown complete: final commit done, producer flushed");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &report.problems {
            error!(problem = p.as_str(), "shutdown incomplete");
        }
        Ok(ExitCode::from(1))
    }
}

/// `http.web_config_file` loaded, or no protection when it is empty.
pub fn load_web_config(http: &config::HttpSection) -> anyhow::Result<WebConfig> {
    if http.web_config_file.is_empty() {
        return Ok(WebConfig::default());
    }
    Ok(WebConfig::load(std::path::Path::new(
        &http.web_config_file,
    ))?)
}

/// The shutdown signal: a cheap clone-able handle raced with `select!`.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    /// Set when a second signal arrived during the shutdown.
    forced: watch::Receiver<bool>,
}

/// Triggers a [`Shutdown`] by hand (demo, tests, benches).
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
    _forced: watch::Sender<bool>,
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    pub fn manual() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        let (ftx, forced) = watch::channel(false);
        (
            ShutdownTrigger { tx, _forced: ftx },
            Shutdown { rx, forced },
        )
    }

    /// Fires on the first SIGTERM or SIGINT. A second one ends the process
    /// at once with exit code 130. Call inside the runtime.
    pub fn on_signals() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        let (ftx, forced) = watch::channel(false);
        tokio::spawn(async move {
            let mut signals = Signals::new();
            let name = signals.next().await;
            info!(
                signal = name,
                "shutdown requested; finishing (send it again to stop at once)"
            );
            let _ = tx.send(true);
            let name = signals.next().await;
            let _ = ftx.send(true);
            error!(
                signal = name,
                "second signal: exiting now without finishing the shutdown"
            );
            std::process::exit(130);
        });
        Shutdown { rx, forced }
    }

    /// Completes once shutdown was requested.
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

/// SIGTERM and SIGINT, registered once so none is missed between two waits.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(t), Ok(i)) => Some((t, i)),
                _ => {
                    warn!("cannot install SIGTERM/SIGINT handlers; only Ctrl-C is handled");
                    None
                }
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.streams {
            return tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
