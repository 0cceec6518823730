//! HTTP: the public router (HTTP-FLV and WS-FLV playback, HLS/LL-HLS/DASH, the console and
//! player page) and the admin router (probes),
//! each served by [`serve_connection`] (HTTP/1.1) or, on the HTTPS port,
//! [`serve_tls_connection`] (HTTP/1.1 or HTTP/2 by ALPN), with limits against misbehaving peers.
//! On HTTP/1.1, HLS and DASH requests take a lean path ([`h1`]) and everything else hyper and
//! the router.

pub mod flv;
pub(crate) mod h1;
pub mod hls;
pub mod push;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use crate::config::ApiListener;
use crate::limits::Slot;
use crate::net::{FirstReadDeadline, StallGuard};
use crate::server::Context;
use crate::serving::ServingThreads;

/// The public router on the HTTP port.
pub fn router(ctx: Arc<Context>) -> Router {
    let router = Router::new()
        .route(
            "/{app}/{file}",
            get(play_or_page)
                .head(flv::head)
                .post(flv::push)
                .options(flv::preflight),
        )
        .route(
            "/{app}/{name}/{file}",
            get(hls::serve)
                .options(flv::preflight)
                .fallback(|| async { StatusCode::NOT_FOUND }),
        );
    let router = match ctx.config.api.listener {
        ApiListener::Public => router.nest("/api/v1", crate::api::router(ctx.clone())),
        ApiListener::Admin => router,
    };
    let router = match ctx.config.api.console {
        true => router.merge(crate::console::router(ctx.clone())),
        false => router,
    };
    router.with_state(ctx)
}

/// Whether the router gives paths starting with `/{app}/` to routes other than
/// `/{app}/{name}/{file}` (static segments win over parameters): the lean HTTP/1.1 path must
/// leave those to it.
fn routed_elsewhere(ctx: &Context, app: &str) -> bool {
    (app == "api" && matches!(ctx.config.api.listener, ApiListener::Public))
        || (app == "admin" && ctx.config.api.console)
}

/// `GET /{app}/{file}`: `{name}.flv` is HTTP-FLV or WS-FLV, any other name the player page
/// (when `http.player_page` is on).
async fn play_or_page(
    State(ctx): State<Arc<Context>>,
    Path((app, file)): Path<(String, String)>,
    req: axum::extract::Request,
) -> axum::response::Response {
    if ctx.config.http.player_page && !file.ends_with(".flv") {
        return crate::console::player_page(ctx, &app, &file, req).await;
    }
    flv::play(State(ctx), Path((app, file)), req).await
}

/// The admin router: probes (and metrics) kept off the public port.
pub fn admin_router(ctx: Arc<Context>) -> Router {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/config-status", get(config_status))
        .route("/metrics", get(metrics));
    let router = match ctx.config.api.listener {
        // The console follows the API, whose same-origin calls it makes.
        ApiListener::Admin if ctx.config.api.console => router
            .nest("/api/v1", crate::api::router(ctx.clone()))
            .merge(crate::console::router(ctx.clone())),
        ApiListener::Admin => router.nest("/api/v1", crate::api::router(ctx.clone())),
        ApiListener::Public => router,
    };
    let router = router.with_state(ctx.clone());
    match crate::cluster::routes::router(ctx) {
        Some(cluster) => router.merge(cluster),
        None => router,
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.metrics.render(&ctx.hub),
    )
}

/// The config in service (revision, hash) and a newer one that is not, with why.
async fn config_status(State(ctx): State<Arc<Context>>) -> axum::Json<crate::reload::ConfigStatus> {
    axum::Json(ctx.config_status())
}

async fn readyz(State(ctx): State<Arc<Context>>) -> (StatusCode, &'static str) {
    if ctx.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// Serves HTTP/1.1 on one connection (with upgrades for WebSocket) until it ends; on
/// server shutdown it finishes the response in flight, then closes. A plain-TCP connection
/// whose first request is HLS or DASH moves to one of `hls_threads` ([`h1::serve`]).
pub async fn serve_connection<IO>(
    io: IO,
    peer: std::net::SocketAddr,
    slot: Slot,
    router: Router,
    ctx: Arc<Context>,
    hls_threads: Option<Arc<ServingThreads>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve(io, peer, slot, router, ctx, false, hls_threads).await
}

/// Serves one admin connection (probes, metrics). Unlike the public ports it is not closed
/// when shutdown begins: `/readyz` must keep answering 503 until the process exits.
pub async fn serve_admin_connection<IO>(io: IO, peer: std::net::SocketAddr, router: Router, ctx: Arc<Context>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let write_timeout = Duration::from_secs(ctx.config.hub.write_timeout_secs);
    let service = ConnService::new(router, peer);
    let io = TokioIo::new(StallGuard::new(io, write_timeout));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(ctx.config.http.request_timeout_secs))
        .serve_connection(io, service);
    if let Err(e) = conn.await {
        tracing::debug!("admin connection ended: {e}");
    }
}

/// Serves one HTTPS connection: HTTP/2 when ALPN chose `h2`, else HTTP/1.1 with WebSocket
/// upgrades (WSS-FLV; browsers open WebSockets on HTTP/1.1 connections).
pub async fn serve_tls_connection<IO>(
    tls: TlsStream<IO>,
    peer: std::net::SocketAddr,
    slot: Slot,
    router: Router,
    ctx: Arc<Context>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    serve(tls, peer, slot, router, ctx, h2, None).await
}

/// An HTTP/1.1 connection's place in the connection limits. A WebSocket outlives the HTTP
/// connection it was upgraded from, so its task keeps a clone and the place stays taken until
/// the WebSocket ends. (HTTP/2 streams take places of their own: [`flv`].)
#[derive(Clone)]
pub struct ConnSlot(#[allow(dead_code)] Arc<Slot>);

/// Closes one HTTP/2 connection from a handler. An HTTP/2 response body is only polled
/// while the client grants flow-control window, so a player that stops granting it cannot be
/// ended from its own body; its watchdog closes the whole connection instead.
#[derive(Clone, Default)]
pub struct ConnectionKill(Arc<tokio::sync::Notify>);

impl ConnectionKill {
    pub fn kill(&self) {
        self.0.notify_one();
    }
}

async fn serve<IO>(
    io: IO,
    peer: std::net::SocketAddr,
    slot: Slot,
    router: Router,
    ctx: Arc<Context>,
    h2: bool,
    hls_threads: Option<Arc<ServingThreads>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let write_timeout = Duration::from_secs(ctx.config.hub.write_timeout_secs);
    let request_timeout = Duration::from_secs(ctx.config.http.request_timeout_secs);
    let slot = ConnSlot(Arc::new(slot));
    if h2 {
        let kill = ConnectionKill::default();
        let service = ConnService::new(router, peer).with_kill(kill.clone());
        let io = TokioIo::new(StallGuard::new(
            FirstReadDeadline::new(io, request_timeout),
            write_timeout,
        ));
        // Pings find HTTP/2 peers that vanished while no stream was writing to them.
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(write_timeout)
            .keep_alive_timeout(write_timeout)
            .serve_connection(io, service);
        until_shutdown(conn, &ctx, Some(&kill), |c| c.graceful_shutdown()).await
    } else {
        h1::serve(StallGuard::new(io, write_timeout), peer, slot, router, ctx, hls_threads).await
    }
}

/// Serves the rest of an HTTP/1.1 connection with hyper (with upgrades for WebSocket), once
/// the lean path ([`h1`]) met a request that is not its own.
async fn serve_hyper_h1<IO>(io: IO, peer: std::net::SocketAddr, slot: ConnSlot, router: Router, ctx: Arc<Context>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request_timeout = Duration::from_secs(ctx.config.http.request_timeout_secs);
    let service = ConnService::new(router, peer).with_slot(slot);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    until_shutdown(conn, &ctx, None, |c| c.graceful_shutdown()).await
}

/// The router as one connection's service: each request gets the connection's extensions
/// (peer address, and the connection's slot or kill switch), then the shared router routes
/// it. `Router::layer` did the same but rebuilt and wrapped every route once per connection
/// and cloned the wrapped route service on every request (docs/benchmarks.md).
struct ConnService {
    router: TowerToHyperService<Router>,
    peer: ConnectInfo<std::net::SocketAddr>,
    slot: Option<ConnSlot>,
    kill: Option<ConnectionKill>,
}

impl ConnService {
    fn new(router: Router, peer: std::net::SocketAddr) -> Self {
        ConnService {
            router: TowerToHyperService::new(router),
            peer: ConnectInfo(peer),
            slot: None,
            kill: None,
        }
    }

    fn with_slot(self, slot: ConnSlot) -> Self {
        ConnService {
            slot: Some(slot),
            ..self
        }
    }

    fn with_kill(self, kill: ConnectionKill) -> Self {
        ConnService {
            kill: Some(kill),
            ..self
        }
    }
}

impl hyper::service::Service<axum::http::Request<hyper::body::Incoming>> for ConnService {
    type Response =
        <TowerToHyperService<Router> as hyper::service::Service<axum::http::Request<hyper::body::Incoming>>>::Response;
    type Error = std::convert::Infallible;
    type Future =
        <TowerToHyperService<Router> as hyper::service::Service<axum::http::Request<hyper::body::Incoming>>>::Future;

    fn call(&self, mut req: axum::http::Request<hyper::body::Incoming>) -> Self::Future {
        let extensions = req.extensions_mut();
        extensions.insert(self.peer);
        if let Some(slot) = &self.slot {
            extensions.insert(slot.clone());
        }
        if let Some(kill) = &self.kill {
            extensions.insert(kill.clone());
        }
        self.router.call(req)
    }
}

/// Drives a connection; on server shutdown asks it to finish gracefully (the response in
/// flight completes, an HTTP/2 client gets GOAWAY) within the grace period.
async fn until_shutdown<C, E>(
    conn: C,
    ctx: &Context,
    // HTTP/2 only: an HTTP/1.1 connection is closed through its own socket.
    kill: Option<&ConnectionKill>,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut shutdown = ctx.shutdown.clone();
    let killed = async {
        match kill {
            Some(kill) => kill.0.notified().await,
            None => std::future::pending().await,
        }
    };
    // The connection first: it is what wakes this task nearly every time.
    tokio::select! {
        biased;
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!("http connection ended: {e}");
            }
        }
        // Dropping the connection closes its socket and every stream on it.
        _ = killed => {}
        _ = shutdown.changed() => {
            graceful(conn.as_mut());
            let _ = tokio::time::timeout(Duration::from_secs(ctx.config.hub.shutdown_grace_secs), conn).await;
        }
    }
}
