//! HTTP-FLV and WS-FLV playback on `/{app}/{name}.flv`, like Node-Media-Server: a plain GET
//! streams FLV as the response body, a WebSocket upgrade on the same path streams the same
//! FLV tags as binary messages. Both send each frame's shared, once-encoded FLV tag.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::stream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn, Instrument};

use super::ws;
use crate::auth::Denied;
use crate::codec::flv;
use crate::hub::{Demand, DemandOutcome, HubError, ReaderEnd, Stream, StreamKey, SubscribeOptions, Subscriber};
use crate::limits::Slot;
use crate::net::write_all_bytes;
use crate::server::Context;
use crate::session::{Protocol, Role, SessionGuard};
use crate::webhooks::Activity;

const MAX_BATCH_FRAMES: usize = 64;

/// Resolves `/{app}/{name}.flv` to a stream key, or the response refusing it.
// The error is the HTTP response itself; it is returned straight to the client.
#[allow(clippy::result_large_err)]
fn stream_key(ctx: &Context, app: &str, file: &str) -> Result<StreamKey, Response> {
    let Some(name) = file.strip_suffix(".flv") else {
        return Err(StatusCode::NOT_FOUND.into_response());
    };
    ctx.hub.key(app, name).map_err(|e| match e {
        HubError::UnknownApp => (StatusCode::NOT_FOUND, "unknown app\n").into_response(),
        e => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    })
}

fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// On HTTP/2 many FLV sessions share one TCP connection, so each play or push takes a
/// connection place of its own (held until it ends). `None` on HTTP/1.1, where the
/// connection's place covers its one session.
#[allow(clippy::result_large_err)]
fn http2_slot(ctx: &Context, req: &Request) -> Result<Option<Slot>, Response> {
    if req.version() != Version::HTTP_2 {
        return Ok(None);
    }
    let ip = peer(req).map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |p| p.ip());
    ctx.http_limits.try_acquire(ip).map(Some).map_err(|e| {
        debug!(%ip, "http/2 flv session refused: {e}");
        (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
    })
}

/// The answer to a play the hub refused; a client over its waiting-stream cap is asked to
/// slow down, every other refusal is the server's.
fn subscribe_refusal(e: HubError) -> Response {
    let status = match e {
        HubError::TooManyWaitingForClient(_) => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{e}\n")).into_response()
}

/// The public stream `/{app}/{file}` names, once `role` is allowed on it, or the refusal.
#[allow(clippy::result_large_err)]
fn authorized_key(ctx: &Context, app: &str, file: &str, role: Role, req: &Request) -> Result<StreamKey, Response> {
    let key = stream_key(ctx, app, file)?;
    Ok(authorize(ctx, &key, role, req)?.unwrap_or(key))
}

/// `HEAD /{app}/{name}.flv`: 200 while the stream is published (here, or in a fleet on the
/// pod that owns it), else 404. Unlike a GET it never waits for a publisher, so it creates no
/// session; the player page polls it while a stream is offline. On an app that pulls on
/// demand (an edge) it starts or joins the pull as a GET would, and answers once the origin
/// has sent the stream (200) or said it has none, or the play wait ended (404).
pub async fn head(
    State(ctx): State<Arc<Context>>,
    Path((app, file)): Path<(String, String)>,
    req: Request,
) -> Response {
    let key = match authorized_key(&ctx, &app, &file, Role::Player, &req) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let mut live = ctx.hub.stream(&key).is_some_and(|s| s.is_published());
    if !live {
        let query = req.uri().query().unwrap_or("").to_string();
        live = match pulled_on_demand(&ctx, &key, query, peer(&req).map(|p| p.ip())).await {
            Ok(pulled) => pulled,
            Err(e) => {
                let mut resp = subscribe_refusal(e);
                cors(&ctx, resp.headers_mut());
                return resp;
            }
        };
    }
    if !live {
        if let Some(cluster) = &ctx.cluster {
            live = cluster.owner(&key).await.is_some();
        }
    }
    let mut resp = if live {
        let mut resp = StatusCode::OK.into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/x-flv"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    } else {
        (StatusCode::NOT_FOUND, "stream is not published\n").into_response()
    };
    cors(&ctx, resp.headers_mut());
    resp
}

/// Whether the on-demand pull of `key`'s app (if it has one) brings the stream here within
/// the play wait. Like a GET, the request holds a waiting reader meanwhile, so the pulls one
/// client can start by probing made-up names stay within its waiting-stream caps (over them,
/// the hub's refusal, answered as a GET's).
async fn pulled_on_demand(
    ctx: &Context,
    key: &StreamKey,
    query: String,
    client: Option<std::net::IpAddr>,
) -> Result<bool, HubError> {
    let pulls = ctx.hub.apps().iter().any(|a| a.name == key.app && a.pull.is_some());
    if !pulls {
        return Ok(false);
    }
    let waiting = ctx.hub.subscribe_from(key, SubscribeOptions::default(), client)?;
    let outcome = ctx.hub.demand(key, Demand { query, via: Vec::new() }).await;
    drop(waiting);
    let published = outcome == DemandOutcome::Published;
    if !published {
        ctx.hub.reap_if_idle(key);
    }
    Ok(published)
}

/// `GET /{app}/{name}.flv`: HTTP-FLV, or with a WebSocket upgrade WS-FLV playback, or with
/// the WebSocket subprotocol `publisher` (or `post`) an FLV push.
pub async fn play(
    State(ctx): State<Arc<Context>>,
    Path((app, file)): Path<(String, String)>,
    req: Request,
) -> Response {
    let key = match stream_key(&ctx, &app, &file) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let websocket = is_websocket_upgrade(req.headers());
    let publishing = websocket && publisher_subprotocol(req.headers()).is_some();
    let role = if publishing { Role::Publisher } else { Role::Player };
    let key = match authorize(&ctx, &key, role, &req) {
        Ok(public) => public.unwrap_or(key),
        // A WebSocket client is answered in its own protocol: accept, then close with
        // 1008 (policy violation) and the reason, which browsers expose to the page.
        Err(resp) if websocket => {
            let reason = if resp.status() == StatusCode::UNAUTHORIZED {
                "missing credentials"
            } else {
                "access denied"
            };
            let protocol = publisher_subprotocol(req.headers());
            return upgrade(req, protocol, tracing::info_span!("ws-refused"), move |io| async move {
                let (_, mut wr) = tokio::io::split(io);
                let limit = Duration::from_secs(5);
                let _ = timed_write(&mut wr, &mut vec![ws::close_frame(1008, reason)], limit).await;
                let _ = tokio::time::timeout(limit, wr.shutdown()).await;
            });
        }
        Err(resp) => return resp,
    };
    if websocket {
        if let Some(protocol) = publisher_subprotocol(req.headers()) {
            return upgrade_ws_publisher(ctx, req, key, protocol).await;
        }
    }
    let slot = match http2_slot(&ctx, &req) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let remote = peer(&req).map(|p| p.to_string()).unwrap_or_default();
    let guard = ctx
        .sessions
        .open(if websocket { Protocol::WsFlv } else { Protocol::HttpFlv }, remote);
    let query = req.uri().query().unwrap_or("").to_string();
    let hooks = match Activity::begin(
        ctx.webhooks.clone(),
        guard.entry().clone(),
        Role::Player,
        key.clone(),
        query,
    )
    .await
    {
        Ok(a) => a,
        Err(why) => return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response(),
    };
    let via = req
        .headers()
        .get(crate::relay::hop::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let via = match crate::relay::hop::check_incoming(via, ctx.relays.server_id()) {
        Ok(v) => v,
        Err(e) => {
            ctx.relays.loop_refused();
            warn!(app = %key.app, "relay request refused: {e}");
            return (StatusCode::LOOP_DETECTED, format!("{e}\n")).into_response();
        }
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let client = peer(&req).map(|p| p.ip());
    if !crate::relay::admit_player(&ctx.hub, &key, &query, via, client).await {
        return (StatusCode::NOT_FOUND, "no such stream\n").into_response();
    }
    let sub = match ctx.hub.subscribe_from(&key, SubscribeOptions::default(), client) {
        Ok(s) => s,
        Err(e) => {
            debug!(session = guard.id(), "play refused: {e}");
            let mut resp = subscribe_refusal(e);
            cors(&ctx, resp.headers_mut());
            return resp;
        }
    };
    guard.set_activity(Some((Role::Player, key.clone())));
    crate::cluster::pull::wake(&ctx, &key);
    if websocket {
        upgrade_ws(ctx, req, sub, guard, hooks)
    } else {
        info!(session = guard.id(), stream = %key, "http-flv play started");
        let progress = Arc::new(AtomicU64::new(0));
        if let Some(kill) = req.extensions().get::<super::ConnectionKill>() {
            let limit = Duration::from_secs(ctx.config.hub.write_timeout_secs);
            tokio::spawn(watch_h2_player(
                kill.clone(),
                Arc::downgrade(&progress),
                sub.stream().clone(),
                limit,
                guard.id(),
            ));
        }
        let mut resp = Response::new(Body::from_stream(flv_body(sub, guard, hooks, progress, slot)));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/x-flv"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        cors(&ctx, h);
        resp
    }
}

/// `POST /{app}/{name}.flv`: FLV push over HTTP (`ffmpeg -method POST`).
pub async fn push(
    State(ctx): State<Arc<Context>>,
    Path((app, file)): Path<(String, String)>,
    req: Request,
) -> Response {
    let key = match authorized_key(&ctx, &app, &file, Role::Publisher, &req) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let slot = match http2_slot(&ctx, &req) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let peer = peer(&req);
    let query = req.uri().query().unwrap_or("").to_string();
    let mut resp = super::push::http_post(ctx.clone(), key, query, req.into_body(), peer).await;
    drop(slot);
    cors(&ctx, resp.headers_mut());
    resp
}

/// Applies the app's policy: 401 without credentials, 403 with bad ones.
#[allow(clippy::result_large_err)]
fn authorize(ctx: &Context, key: &StreamKey, role: Role, req: &Request) -> Result<Option<StreamKey>, Response> {
    let query = req.uri().query().unwrap_or("");
    ctx.authorize(key, role, query, peer(req).map(|p| p.ip()), 0)
        .map_err(|d| {
            let status = if d == Denied::Missing {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            let mut resp = (status, format!("{d}\n")).into_response();
            cors(ctx, resp.headers_mut());
            resp
        })
}

/// The publisher subprotocol the client asked for, if any.
fn publisher_subprotocol(h: &HeaderMap) -> Option<&'static str> {
    let offered: Vec<String> = h
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    ["publisher", "post"]
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
}

/// Answers CORS preflight requests for the FLV paths.
pub async fn preflight(State(ctx): State<Arc<Context>>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    cors(&ctx, h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("*"));
    resp
}

/// The CORS header the FLV, HLS and DASH routes send (when `http.allow_origin` is a valid value).
pub(super) fn cors(ctx: &Context, h: &mut HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(&ctx.config.http.allow_origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
}

fn is_websocket_upgrade(h: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// The next FLV items for a player: the tags of the next batch of frames, preceded by the
/// FLV header in the first batch. The header waits for the first frame so it can flag the
/// tracks the stream really has (a player of a stream that is not published yet learns them
/// when it starts). Cancel-safe.
async fn next_items(sub: &mut Subscriber, started: &mut bool) -> Result<Vec<Bytes>, ReaderEnd> {
    let mut frames = Vec::with_capacity(MAX_BATCH_FRAMES);
    sub.recv_batch(&mut frames, MAX_BATCH_FRAMES).await?;
    let mut items = Vec::with_capacity(frames.len() + 1);
    if !*started {
        *started = true;
        let info = sub.stream().info();
        items.push(Bytes::copy_from_slice(&flv::header(info.has_audio, info.has_video)));
    }
    items.extend(frames.iter().map(|f| f.flv_tag()));
    Ok(items)
}

/// Ends the connection of an HTTP/2 player that takes nothing while its stream has new frames
/// for `limit`: with its flow-control window closed its body is never polled again, so the
/// write timeout that catches HTTP/1.1 and RTMP players (a blocked socket) never fires.
/// `progress` counts the body's items; the watchdog ends with the body.
async fn watch_h2_player(
    kill: super::ConnectionKill,
    progress: std::sync::Weak<AtomicU64>,
    stream: Arc<Stream>,
    limit: Duration,
    id: u64,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(limit));
    let mut seen = (u64::MAX, 0u64, tokio::time::Instant::now());
    loop {
        tick.tick().await;
        let Some(items) = progress.upgrade().map(|p| p.load(Ordering::Relaxed)) else {
            return;
        };
        let frames_in = stream.stats.frames_in.load(Ordering::Relaxed);
        if items != seen.0 {
            seen = (items, frames_in, tokio::time::Instant::now());
        } else if frames_in > seen.1 && seen.2.elapsed() >= limit {
            warn!(
                session = id,
                "disconnecting http-flv player: took no data for {limit:?} over HTTP/2 (flow-control window closed)"
            );
            kill.kill();
            return;
        }
    }
}

fn flv_body(
    sub: Subscriber,
    guard: SessionGuard,
    hooks: Activity,
    progress: Arc<AtomicU64>,
    slot: Option<Slot>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct St {
        /// Items handed to the connection, for the HTTP/2 stall watchdog.
        progress: Arc<AtomicU64>,
        sub: Subscriber,
        started: bool,
        pending: VecDeque<Bytes>,
        id: u64,
        kicked: tokio::sync::watch::Receiver<bool>,
        /// Keeps the session registered while the response streams.
        guard: SessionGuard,
        /// Sends `donePlay` when the response ends.
        _hooks: Activity,
        /// The connection place of an HTTP/2 stream, given back when the response ends.
        _slot: Option<Slot>,
    }
    let st = St {
        progress,
        sub,
        started: false,
        pending: VecDeque::new(),
        id: guard.id(),
        kicked: guard.entry().kicked(),
        guard,
        _hooks: hooks,
        _slot: slot,
    };
    stream::unfold(st, |mut st| async move {
        st.progress.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = st.pending.pop_front() {
            return Some((Ok(b), st));
        }
        let next = tokio::select! {
            _ = st.kicked.changed() => {
                info!(session = st.id, "http-flv player kicked by the API");
                return None;
            }
            next = next_items(&mut st.sub, &mut st.started) => next,
        };
        match next {
            Ok(items) => {
                let n: usize = items.iter().map(|b| b.len()).sum();
                st.sub.count_out(n);
                st.guard.entry().add_out(n);
                st.pending.extend(items);
                let b = st.pending.pop_front()?;
                Some((Ok(b), st))
            }
            Err(ReaderEnd::StreamEnded) => {
                info!(session = st.id, "http-flv stream ended");
                None
            }
            Err(e @ ReaderEnd::TooSlow(_)) => {
                warn!(session = st.id, "disconnecting http-flv player: {e}");
                Some((Err(std::io::Error::other(e)), st))
            }
        }
    })
}

/// Validates a WebSocket handshake and answers 101; `task` runs on the upgraded connection.
fn upgrade<F, Fut>(mut req: Request, protocol: Option<&'static str>, span: tracing::Span, task: F) -> Response
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let headers = req.headers();
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n").into_response();
    };
    if headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13")
        || req.method() != Method::GET
    {
        return (StatusCode::BAD_REQUEST, "unsupported WebSocket version\n").into_response();
    }
    let accept = ws::accept_key(key);
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "connection cannot be upgraded\n").into_response();
    };
    // The WebSocket outlives its HTTP connection: it keeps the connection's place.
    let slot = req.extensions().get::<super::ConnSlot>().cloned();
    tokio::spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => task(TokioIo::new(upgraded)).await,
                Err(e) => debug!("websocket upgrade failed: {e}"),
            }
            drop(slot);
        }
        .instrument(span),
    );
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header"),
    );
    if let Some(p) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    resp
}

fn upgrade_ws(ctx: Arc<Context>, req: Request, sub: Subscriber, guard: SessionGuard, hooks: Activity) -> Response {
    let span = tracing::info_span!("ws-flv", session = guard.id(), stream = %sub.stream().key);
    upgrade(req, None, span, move |io| async move {
        info!("ws-flv play started");
        match serve_ws(io, sub, &guard, &ctx).await {
            Ok(reason) => info!("ws-flv play ended: {reason}"),
            Err(e) => debug!("ws-flv connection closed: {e}"),
        }
        drop(hooks);
    })
}

async fn upgrade_ws_publisher(ctx: Arc<Context>, req: Request, key: StreamKey, protocol: &'static str) -> Response {
    let guard = ctx
        .sessions
        .open(Protocol::WsFlv, peer(&req).map(|p| p.to_string()).unwrap_or_default());
    let id = guard.id();
    let query = req.uri().query().unwrap_or("").to_string();
    let hooks = match Activity::begin(
        ctx.webhooks.clone(),
        guard.entry().clone(),
        Role::Publisher,
        key.clone(),
        query,
    )
    .await
    {
        Ok(a) => a,
        Err(why) => return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response(),
    };
    let publisher = match super::push::claim(&ctx, &key, id, "ws_flv", peer(&req)).await {
        Ok(p) => p,
        Err(e) => {
            let status = if matches!(e, HubError::AlreadyPublishing(_)) {
                StatusCode::CONFLICT
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return (status, format!("{e}\n")).into_response();
        }
    };
    let span = tracing::info_span!("ws-flv-push", session = id, stream = %key);
    guard.set_activity(Some((Role::Publisher, key.clone())));
    upgrade(req, Some(protocol), span, move |io| async move {
        info!("ws-flv push started");
        match super::push::serve_ws_publisher(io, publisher, &guard, &ctx).await {
            Ok(reason) => info!("ws-flv push ended: {reason}"),
            Err(e) => info!("ws-flv push closed: {e}"),
        }
        drop(hooks);
    })
}

/// Writes `batch` unless the peer accepts nothing for `limit` (every WebSocket write, data
/// or control, goes through here).
pub(super) async fn timed_write<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    batch: &mut Vec<Bytes>,
    limit: Duration,
) -> std::io::Result<()> {
    tokio::time::timeout(limit, write_all_bytes(w, batch))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "player accepted no data"))?
}

async fn serve_ws<IO>(io: IO, mut sub: Subscriber, guard: &SessionGuard, ctx: &Context) -> std::io::Result<&'static str>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let write_timeout = Duration::from_secs(ctx.config.hub.write_timeout_secs);
    let mut shutdown = ctx.shutdown.clone();
    let mut kicked = guard.entry().kicked();
    let mut rbuf = BytesMut::with_capacity(1024);
    let mut batch: Vec<Bytes> = Vec::with_capacity(2 * MAX_BATCH_FRAMES);
    let mut started = false;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                batch.push(ws::close_frame(1001, "server shutting down"));
                let _ = timed_write(&mut wr, &mut batch, write_timeout).await;
                return Ok("server shutdown");
            }
            _ = kicked.changed() => {
                batch.clear();
                batch.push(ws::close_frame(1008, "session closed by the server"));
                let _ = timed_write(&mut wr, &mut batch, write_timeout).await;
                return Ok("kicked by the API");
            }
            items = next_items(&mut sub, &mut started) => {
                match items {
                    Ok(items) => {
                        let n: usize = items.iter().map(|b| b.len()).sum();
                        sub.count_out(n);
                        guard.entry().add_out(n);
                        for tag in items {
                            batch.push(ws::frame_header(ws::OP_BINARY, tag.len()));
                            batch.push(tag);
                        }
                        timed_write(&mut wr, &mut batch, write_timeout).await?;
                    }
                    Err(ReaderEnd::StreamEnded) => {
                        batch.push(ws::close_frame(1000, "stream ended"));
                        timed_write(&mut wr, &mut batch, write_timeout).await?;
                        let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
                        return Ok("stream ended");
                    }
                    Err(e @ ReaderEnd::TooSlow(_)) => {
                        warn!("disconnecting ws-flv player: {e}");
                        batch.clear();
                        batch.push(ws::close_frame(1008, "too slow"));
                        let _ = timed_write(&mut wr, &mut batch, write_timeout).await;
                        return Ok("too slow");
                    }
                }
            }
            n = rd.read_buf(&mut rbuf) => {
                if n? == 0 {
                    return Ok("peer closed");
                }
                loop {
                    match ws::parse_client_frame(&mut rbuf, ws::MAX_CLIENT_PAYLOAD) {
                        Ok(Some(frame)) => match frame.opcode {
                            ws::OP_CLOSE => {
                                batch.clear();
                                batch.push(ws::close_frame(1000, ""));
                                let _ = timed_write(&mut wr, &mut batch, write_timeout).await;
                                return Ok("peer closed");
                            }
                            ws::OP_PING => {
                                batch.clear();
                                batch.push(ws::frame_header(ws::OP_PONG, frame.payload.len()));
                                batch.push(frame.payload);
                                timed_write(&mut wr, &mut batch, write_timeout).await?;
                            }
                            _ => {}
                        },
                        Ok(None) => break,
                        Err(e) => {
                            batch.clear();
                            batch.push(ws::close_frame(1002, "protocol error"));
                            let _ = timed_write(&mut wr, &mut batch, write_timeout).await;
                            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                        }
                    }
                }
            }
        }
    }
}
