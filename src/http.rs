//! The HTTP listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! `/metrics` is the engine's series (rendered by the consumer loop, which
//! owns the engine) followed by the pipeline's own metrics
//! ([`crate::telemetry`]); the two sets of names do not overlap. Nothing here
//! sees configuration values, so no secret can reach a response.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::kafka::{LiveState, RenderRequest};
use crate::telemetry;

/// How long `/metrics` waits for the consumer loop's rendering.
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
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop)
        .await
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let (tx, rx) = oneshot::channel();
    if s.render.send(RenderRequest { reply: tx }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let engine_text = match tokio::time::timeout(RENDER_TIMEOUT, rx).await {
        Ok(Ok(text)) => text,
        Ok(Err(_)) => return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the consumer loop did not answer in time\n",
            )
                .into_response();
        }
    };
    let mut body = engine_text;
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

async fn healthz(State(s): State<HttpState>) -> Response {
    let beat = s.live.heartbeat_ms();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
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
