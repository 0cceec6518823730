//! The operator's own HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (200 once this replica either leads with its caches synced or
//! stands by as a follower; 503 while it starts).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// Shared with the admin routes.
#[derive(Clone)]
pub struct Admin {
    pub metrics: Metrics,
    pub ready: Arc<AtomicBool>,
}

pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(admin)
}

async fn metrics(State(a): State<Admin>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], a.metrics.render())
}

async fn readyz(State(a): State<Admin>) -> impl IntoResponse {
    if a.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

/// Serves the admin routes on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, admin: Admin) -> std::io::Result<()> {
    axum::serve(listener, router(admin)).await
}
