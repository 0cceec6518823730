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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        a.metrics.render(),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, buf)
    }

    #[tokio::test]
    async fn probes_and_metrics() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = Admin {
            metrics: Metrics::new(),
            ready: Arc::new(AtomicBool::new(false)),
        };
        admin.metrics.leader.set(1);
        let ready = admin.ready.clone();
        tokio::spawn(serve(listener, admin));
        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503, "not ready while starting");
        ready.store(true, Ordering::Relaxed);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (status, text) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(text.contains("text/plain; version=0.0.4"), "{text}");
        assert!(text.contains("ferrocast_operator_leader 1"), "{text}");
        assert_eq!(get(addr, "/nope").await.0, 404);
    }
}
