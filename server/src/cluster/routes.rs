//! Pod-to-pod endpoints, served on the admin port (never on a public LoadBalancer) under
//! `/cluster/v1`, each refused without the shared secret:
//! - `GET /cluster/v1/streams/{app}/{name}?clock=&instance=`: what this pod holds for a name
//!   (publish claims and owner lookups);
//! - `POST /cluster/v1/announce/{app}/{name}`: a peer now publishes it (waiting players here
//!   start pulling at once);
//! - `GET /cluster/v1/flv/{app}/{name}`: the stream as FLV, for a peer's pull;
//! - `GET /cluster/v1/streams`, `GET /cluster/v1/sessions`, `DELETE /cluster/v1/sessions/{id}`:
//!   this pod's part of the fleet-wide API.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use super::claim::Stamp;
use super::SECRET_HEADER;
use crate::codec::flv;
use crate::hub::{ReaderEnd, StreamKey};
use crate::server::Context;

/// Header of the FLV pull: when the origin's publisher started (Unix milliseconds).
pub const STARTED_HEADER: &str = "x-ferrocast-publisher-started";

/// The routes, or `None` when this server is not part of a fleet.
pub fn router(ctx: Arc<Context>) -> Option<Router> {
    ctx.cluster.as_ref()?;
    Some(
        Router::new()
            .route("/cluster/v1/streams/{app}/{name}", get(holding))
            .route("/cluster/v1/announce/{app}/{name}", post(announce))
            .route("/cluster/v1/flv/{app}/{name}", get(flv_stream))
            .route("/cluster/v1/streams", get(streams))
            .route("/cluster/v1/sessions", get(sessions))
            .route("/cluster/v1/sessions/{id}", delete(kick))
            .layer(middleware::from_fn_with_state(ctx.clone(), require_secret))
            .with_state(ctx),
    )
}

async fn require_secret(State(ctx): State<Arc<Context>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match &ctx.cluster {
        Some(c) if c.secret_matches(given) => next.run(req).await,
        _ => {
            warn!(path = %req.uri().path(), "pod-to-pod request without the cluster secret refused");
            (StatusCode::UNAUTHORIZED, "cluster secret required\n").into_response()
        }
    }
}

#[allow(clippy::result_large_err)]
fn key(ctx: &Context, app: &str, name: &str) -> Result<StreamKey, Response> {
    StreamKey::new(app, name)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response())
        .and_then(|k| {
            if ctx.hub.key(app, name).is_ok() {
                Ok(k)
            } else {
                Err(StatusCode::NOT_FOUND.into_response())
            }
        })
}

#[derive(Deserialize)]
struct Asked {
    #[serde(default)]
    clock: u64,
    #[serde(default)]
    instance: u64,
}

async fn holding(
    State(ctx): State<Arc<Context>>,
    Path((app, name)): Path<(String, String)>,
    Query(asked): Query<Asked>,
) -> Response {
    let Some(cluster) = &ctx.cluster else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Unknown apps hold nothing here; the asker decides for itself whether the app exists.
    let Ok(k) = StreamKey::new(&app, &name) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let stamp = Stamp {
        clock: asked.clock,
        instance: asked.instance,
    };
    Json(cluster.answer(&k, stamp, ctx.publishes_origin(&k))).into_response()
}

async fn announce(State(ctx): State<Arc<Context>>, Path((app, name)): Path<(String, String)>) -> Response {
    let k = match key(&ctx, &app, &name) {
        Ok(k) => k,
        Err(r) => return r,
    };
    super::pull::wake(&ctx, &k);
    StatusCode::NO_CONTENT.into_response()
}

/// The stream as an FLV body, to a peer pulling it for its players. Only a stream whose
/// publisher is connected here (or within its grace) is served: pulls always lead to the
/// origin, so they never form chains or loops.
async fn flv_stream(State(ctx): State<Arc<Context>>, Path((app, name)): Path<(String, String)>) -> Response {
    let k = match key(&ctx, &app, &name) {
        Ok(k) => k,
        Err(r) => return r,
    };
    if !ctx.publishes_origin(&k) {
        return (StatusCode::NOT_FOUND, "not published here\n").into_response();
    }
    let Ok(sub) = ctx.hub.subscribe(&k) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    // The peer's own players coalesce their writes; a pause here would add to theirs.
    let sub = sub.without_coalescing();
    info!(stream = %k, "a peer pulls this stream");
    // Each frame's shared FLV tag is sent as it is: nothing is copied for the peer.
    let pending = std::collections::VecDeque::from([Bytes::copy_from_slice(&flv::header(true, true))]);
    let body = futures_util::stream::unfold(
        (pending, sub, Vec::new()),
        |(mut pending, mut sub, mut batch)| async move {
            loop {
                if let Some(b) = pending.pop_front() {
                    return Some((Ok::<_, std::io::Error>(b), (pending, sub, batch)));
                }
                batch.clear();
                match sub.recv_batch(&mut batch, 64).await {
                    Ok(()) => pending.extend(batch.iter().map(|f| f.flv_tag())),
                    Err(ReaderEnd::StreamEnded) | Err(ReaderEnd::TooSlow(_)) => return None,
                }
            }
        },
    );
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("video/x-flv"));
    let started = ctx
        .hub
        .stream(&k)
        .and_then(|s| s.info().publisher)
        .and_then(|p| p.started.duration_since(std::time::SystemTime::UNIX_EPOCH).ok());
    if let Some(ms) = started.and_then(|d| HeaderValue::from_str(&d.as_millis().to_string()).ok()) {
        resp.headers_mut().insert(STARTED_HEADER, ms);
    }
    resp
}

async fn streams(State(ctx): State<Arc<Context>>) -> Response {
    Json(json!({"streams": crate::api::local_streams_json(&ctx)})).into_response()
}

async fn sessions(State(ctx): State<Arc<Context>>) -> Response {
    Json(json!({"sessions": crate::api::local_sessions_json(&ctx)})).into_response()
}

async fn kick(State(ctx): State<Arc<Context>>, Path(id): Path<u64>) -> Response {
    if ctx.sessions.kick(id) {
        info!(session = id, "session kicked by a peer's API request");
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}
