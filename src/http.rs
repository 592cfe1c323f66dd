//! The HTTP listener: `/metrics`, `/healthz`, `/readyz`, and the live page
//! `/` with its JSON `/api/series` and `/assets/...` ([`crate::web`]).
//!
//! `/metrics` is the engine's series (computed by the consumer loop, which
//! owns the engine, formatted here) followed by the pipeline's own metrics
//! ([`crate::telemetry`]); the two sets of names do not overlap.
//! `/api/series` is the same series as JSON. Nothing here sees configuration
//! values but the SLA targets (shown on the page), so no secret can reach a
//! response.
//!
//! With a web config ([`crate::web_config`], `--web.config.file`) the
//! listener speaks TLS and every path (those above and any 404) asks for
//! basic auth; without one it is plain HTTP, open, exactly as before.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use crate::config::SlaSection;
use crate::export::to_prometheus_text;
use crate::kafka::pipeline::wall_ms;
use crate::kafka::{LiveState, RenderRequest, Rendered};
use crate::telemetry;
use crate::web;
use crate::web_config::{BasicAuth, WebConfig};

/// How long `/metrics` and `/api/series` wait for the consumer loop's series.
const RENDER_TIMEOUT: Duration = Duration::from_secs(10);
/// `/healthz` fails when the consumer loop has not turned for this long.
const STALL_AFTER_MS: i64 = 60_000;

/// What the handlers need.
#[derive(Clone)]
pub struct HttpState {
    pub render: mpsc::Sender<RenderRequest>,
    pub live: Arc<LiveState>,
    /// `/readyz` fails while the summed consumer lag is above this.
    pub ready_max_lag: u64,
    /// The SLA targets (config `sla`), shown on the support wallboard.
    pub sla: SlaSection,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/series", get(api_series))
        .route("/", get(web::index))
        .route("/assets/app.js", get(web::app_js))
        .route("/assets/app.css", get(web::app_css))
        .route("/assets/errors.js", get(web::errors_js))
        .with_state(state)
}

/// The router with the basic auth of `web`, if any (TLS is the listener's).
pub fn app(state: HttpState, web: &WebConfig) -> Router {
    let app = router(state);
    match &web.auth {
        Some(auth) => app.layer(middleware::from_fn_with_state(auth.clone(), basic_auth)),
        None => app,
    }
}

/// Serves until `stop` completes, with the TLS and basic auth of `web`
/// (none: plain HTTP, open).
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    web: &WebConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app(state, web);
    match &web.tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(tls) => {
            let listener = TlsListener::new(listener, TlsAcceptor::from(tls.clone()))?;
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
    }
}

/// Lets a request through only with the credentials of a configured user;
/// otherwise 401 with a `WWW-Authenticate: Basic` challenge.
async fn basic_auth(State(auth): State<Arc<BasicAuth>>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if auth.allows(header).await {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, r#"Basic realm="cxpulse""#)],
        "Unauthorized\n",
    )
        .into_response()
}

/// TLS handshakes in flight at most; more connections wait in the backlog.
const MAX_HANDSHAKES: usize = 64;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS listener for [`axum::serve`]: a background task accepts TCP
/// connections and runs each handshake in its own task (so a slow or silent
/// client holds up nobody), handing over the finished ones. Failed
/// handshakes (wrong CA, plain HTTP, no client certificate) are logged at
/// debug level and dropped.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, tls: TlsAcceptor) -> std::io::Result<TlsListener> {
        let addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let acceptor = tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: as axum does, wait a little.
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let tls = tls.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            addr,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor task is gone (it only ends when aborted): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// The engine's series from the consumer loop, or the answer to give instead.
async fn rendered(s: &HttpState) -> Result<Rendered, Response> {
    let (tx, rx) = oneshot::channel();
    if s.render.send(RenderRequest { reply: tx }).await.is_err() {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response());
    }
    match tokio::time::timeout(RENDER_TIMEOUT, rx).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()),
        Err(_) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the consumer loop did not answer in time\n",
        )
            .into_response()),
    }
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let r = match rendered(&s).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut body = to_prometheus_text(&r.families);
    body.push_str(&telemetry::metrics().render());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn api_series(State(s): State<HttpState>) -> Response {
    let r = match rendered(&s).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let pipeline = telemetry::metrics().samples();
    let body = web::series_json(&web::SeriesInput {
        families: &r.families,
        clock_ms: r.clock_ms,
        wall_ms: wall_ms(),
        ready: s.live.readiness(s.ready_max_lag),
        pipeline: &pipeline,
        sla: &s.sla,
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn healthz(State(s): State<HttpState>) -> Response {
    let beat = s.live.heartbeat_ms();
    let now = wall_ms();
    if beat != 0 && now - beat > STALL_AFTER_MS {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("consumer loop stalled for {} ms\n", now - beat),
        )
            .into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(s): State<HttpState>) -> Response {
    match s.live.readiness(s.ready_max_lag) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}
