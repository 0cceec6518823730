//! HTTP: the public router (HTTP-FLV and WS-FLV playback) and the admin router (probes),
//! each served by [`serve_connection`] with limits against misbehaving peers.

pub mod flv;
pub mod push;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Extension;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::net::StallGuard;
use crate::server::Context;

/// The public router on the HTTP port.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/{app}/{file}", get(flv::play).post(flv::push).options(flv::preflight))
        .nest("/api/v1", crate::api::router(ctx.clone()))
        .with_state(ctx)
}

/// The admin router: probes (and metrics) kept off the public port.
pub fn admin_router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ctx)
}

async fn metrics(State(ctx): State<Arc<Context>>) -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], ctx.metrics.render(&ctx.hub))
}

async fn readyz(State(ctx): State<Arc<Context>>) -> (StatusCode, &'static str) {
    if ctx.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// Serves HTTP/1.1 on one connection (with upgrades for WebSocket) until it ends; on
/// server shutdown it finishes the response in flight, then closes.
pub async fn serve_connection<IO>(io: IO, peer: std::net::SocketAddr, router: Router, ctx: Arc<Context>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let write_timeout = Duration::from_secs(ctx.config.hub.write_timeout_secs);
    let io = TokioIo::new(StallGuard::new(io, write_timeout));
    let service = TowerToHyperService::new(router.layer(Extension(ConnectInfo(peer))));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(ctx.config.http.request_timeout_secs))
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut shutdown = ctx.shutdown.clone();
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!("http connection ended: {e}");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(ctx.config.hub.shutdown_grace_secs), conn).await;
        }
    }
}
