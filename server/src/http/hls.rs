//! HLS, LL-HLS and DASH over HTTP under `/{app}/{name}/` (Node-Media-Server v2's layout):
//! `index.m3u8` (multivariant), `muxed.m3u8` / `video.m3u8` / `audio.m3u8` (LL-HLS media
//! playlists with blocking reload), `{track}-init-{hash}.mp4`, `{track}-{epoch}-{msn}.m4s` (segments),
//! `{track}-{epoch}-{msn}.{part}.m4s` (parts), `index.mpd` (DASH), `ts.m3u8` and
//! `ts-{epoch}-{msn}.ts` (MPEG-TS for old players).
//!
//! The playlist request is authorized by the app's play policy and given a session token
//! (`hs`) that every URL it lists carries; segments and parts need that token when the app
//! restricts playing. Responses share the segmenter's bytes (no copy per client).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus::IntCounter;

use crate::auth::{query_param, query_value, Denied};
use crate::config::{AuthMode, HlsMode};
use crate::hls::file::SegmentFile;
use crate::hls::segmenter::{Segmenter, TrackName};
use crate::hls::session::SessionKey;
use crate::hls::{playlist, HlsError, StreamHls};
use crate::hub::{HubError, StreamKey};
use crate::server::Context;
use crate::session::Role;

const PLAYLIST: &str = "application/vnd.apple.mpegurl";
const CACHE_IMMUTABLE: &str = "public, max-age=86400, immutable";
const CACHE_PLAYLIST: &str = "max-age=1";
const CACHE_NEVER: &str = "no-store";

/// What a file name under `/{app}/{name}/` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asset {
    Multivariant,
    Media(TrackName),
    Init(TrackName, String),
    Segment(TrackName, u64, u64),
    Part(TrackName, u64, u64, usize),
    Mpd,
    TsPlaylist,
    TsSegment(u64, u64),
}

impl Asset {
    fn parse(file: &str) -> Option<Asset> {
        match file {
            "index.m3u8" => return Some(Asset::Multivariant),
            "index.mpd" => return Some(Asset::Mpd),
            "ts.m3u8" => return Some(Asset::TsPlaylist),
            _ => {}
        }
        if let Some(track) = file.strip_suffix(".m3u8") {
            return TrackName::parse(track).map(Asset::Media);
        }
        if let Some(rest) = file.strip_prefix("ts-").and_then(|f| f.strip_suffix(".ts")) {
            let (epoch, msn) = rest.split_once('-')?;
            return Some(Asset::TsSegment(epoch.parse().ok()?, msn.parse().ok()?));
        }
        let (track, rest) = file.split_once('-')?;
        let track = TrackName::parse(track)?;
        if rest.starts_with("init-") && rest.ends_with(".mp4") {
            return Some(Asset::Init(track, file.to_string()));
        }
        let rest = rest.strip_suffix(".m4s")?;
        let (epoch, rest) = rest.split_once('-')?;
        let epoch = epoch.parse().ok()?;
        match rest.split_once('.') {
            Some((msn, part)) => Some(Asset::Part(track, epoch, msn.parse().ok()?, part.parse().ok()?)),
            None => Some(Asset::Segment(track, epoch, rest.parse().ok()?)),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Asset::Multivariant | Asset::Media(_) | Asset::TsPlaylist => "playlist",
            Asset::Mpd => "mpd",
            Asset::Init(..) => "init",
            Asset::Segment(..) => "segment",
            Asset::Part(..) => "part",
            Asset::TsSegment(..) => "ts",
        }
    }

    fn is_manifest(&self) -> bool {
        matches!(
            self,
            Asset::Multivariant | Asset::Media(_) | Asset::TsPlaylist | Asset::Mpd
        )
    }
}

/// A response body of shared buffers with an exact length (so Content-Length is sent).
struct Chunks(VecDeque<Bytes>, u64);

impl Chunks {
    fn new(parts: Vec<Bytes>) -> Chunks {
        let len = parts.iter().map(|b| b.len() as u64).sum();
        Chunks(parts.into(), len)
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = self.0.pop_front();
        if let Some(b) = &next {
            self.1 -= b.len() as u64;
        }
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.1)
    }
}

/// An answer to an HLS or DASH request before it meets a transport: hyper's (through
/// [`Reply::into_response`]) or the lean HTTP/1.1 path's ([`super::h1`]).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub cache: &'static str,
    /// Shared with the segmenter: never copied per client.
    pub body: Vec<Bytes>,
    /// The body as a memory file, for transports that can splice it (asked for with
    /// `files` in [`reply`]; complete segments only).
    pub file: Option<Arc<SegmentFile>>,
}

impl Reply {
    fn new(status: StatusCode, body: Vec<Bytes>, content_type: &'static str, cache: &'static str) -> Reply {
        Reply {
            status,
            content_type,
            cache,
            body,
            file: None,
        }
    }

    /// Bytes of the body (its Content-Length).
    pub fn body_len(&self) -> u64 {
        self.body.iter().map(|b| b.len() as u64).sum()
    }

    /// As a hyper response, with the CORS header the FLV routes send.
    pub fn into_response(self, ctx: &Context) -> Response {
        let mut resp = Response::new(Body::new(Chunks::new(self.body)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(self.cache));
        super::flv::cors(ctx, h);
        resp
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn refuse(status: StatusCode, why: &str) -> Reply {
    Reply::new(status, vec![format!("{why}\n").into()], TEXT, CACHE_NEVER)
}

/// Where the request stands after access control.
struct Access {
    /// The public stream (differs from the path when the path named a stream key).
    key: StreamKey,
    session: Option<u64>,
    /// `?hs=...` for every URI handed out.
    query: String,
    /// `../{public}/` when the path held a stream key, so no URI repeats it.
    prefix: String,
    /// The session was issued by this request (no valid token was shown).
    fresh: bool,
    /// When the session's token stops being valid (seconds since the epoch; 0 without one).
    expires: u64,
}

/// Applies the app's play policy. Manifests accept the policy's credential and get a new
/// session; every request may show a session token instead, which is bound to the stream.
#[allow(clippy::result_large_err)]
fn access(ctx: &Context, key: StreamKey, asset: &Asset, query: &str, peer: Option<IpAddr>) -> Result<Access, Reply> {
    let sessions = ctx.hls.session_key(&key.app);
    let now = SystemTime::now();
    let denied = |d: Denied| {
        let status = if d == Denied::Missing {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        refuse(status, &d.to_string())
    };
    let open = ctx
        .hls
        .app_with(&key.app, |a| {
            a.play.auth == AuthMode::None && a.allow.is_empty() && a.deny.is_empty()
        })
        .unwrap_or(false);
    let token = query_param(query, "hs");
    if let Some(token) = &token {
        if let Some(id) = sessions.verify(&key, token, now) {
            ctx.check_address(&key.app, peer).map_err(denied)?;
            return Ok(Access {
                key,
                session: Some(id),
                query: format!("?hs={token}"),
                prefix: String::new(),
                fresh: false,
                expires: SessionKey::expires(token).unwrap_or(0),
            });
        }
    }
    if !asset.is_manifest() {
        if open {
            // Nothing to protect: serve it, uncounted (a token from another replica, or expired).
            return Ok(Access {
                key,
                session: None,
                query: String::new(),
                prefix: String::new(),
                fresh: false,
                expires: 0,
            });
        }
        return Err(match token {
            Some(_) => {
                ctx.metrics
                    .auth_failures
                    .with_label_values(&[&key.app, "bad_session"])
                    .inc();
                refuse(StatusCode::FORBIDDEN, "invalid HLS session")
            }
            None => refuse(StatusCode::UNAUTHORIZED, "missing HLS session"),
        });
    }
    let public = ctx
        .authorize(&key, Role::Player, query, peer, 0)
        .map_err(denied)?
        .unwrap_or_else(|| key.clone());
    let prefix = if public.name != key.name {
        format!("../{}/", public.name)
    } else {
        String::new()
    };
    let (id, token) = sessions.issue(&public, now);
    Ok(Access {
        key: public,
        session: Some(id),
        expires: SessionKey::expires(&token).unwrap_or(0),
        query: format!("?hs={token}"),
        prefix,
        fresh: true,
    })
}

/// `GET`/`HEAD /{app}/{name}/{file}` through hyper and axum.
pub async fn serve(
    State(ctx): State<Arc<Context>>,
    Path((app, name, file)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let query = req.uri().query().unwrap_or("");
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    reply(&ctx, &app, &name, &file, query, peer, false, None)
        .await
        .into_response(&ctx)
}

/// Whether `file` names something under `/{app}/{name}/` ([`reply`] answers it).
pub fn is_asset(file: &str) -> bool {
    Asset::parse(file).is_some()
}

/// What one HTTP/1.1 connection keeps between its HLS and DASH requests: the session it
/// showed last, as checked. A player shows the same token with every request of its
/// playlist, so the MAC, the address lists and the stream lookup are not redone per segment.
/// It is used only for the same stream and token, while the token is valid, the stream is
/// segmented and no reload replaced the apps and their policies since it was checked.
#[derive(Default)]
pub struct Memo(Option<Known>);

/// A stream and session a request was let in with.
struct Known {
    access: Access,
    /// The token `access` holds, as URLs show it.
    token: String,
    stream: Arc<StreamHls>,
    /// The apps and policies it was checked under.
    policy: Arc<crate::server::Access>,
    /// When the stream last heard of this session from here.
    touched: Option<Instant>,
    /// The app's request counters by asset kind, and its byte counter, as used so far.
    requests: Vec<(&'static str, IntCounter)>,
    bytes: Option<IntCounter>,
}

impl Known {
    /// Counts an answered request in the app's metrics.
    fn count(&mut self, ctx: &Context, kind: &'static str, bytes: u64) {
        let app = self.access.key.app.as_str();
        let at = match self.requests.iter().position(|(k, _)| *k == kind) {
            Some(at) => at,
            None => {
                let counter = ctx.metrics.hls_requests.with_label_values(&[app, kind]);
                self.requests.push((kind, counter));
                self.requests.len() - 1
            }
        };
        self.requests[at].1.inc();
        self.bytes
            .get_or_insert_with(|| ctx.metrics.hls_bytes.with_label_values(&[app]))
            .inc_by(bytes);
    }
}

/// How often a connection's requests refresh their stream's last request time and viewer
/// count (much shorter than the on-demand idle time and the viewer window).
const TOUCH_EVERY: Duration = Duration::from_secs(1);

impl Memo {
    /// The remembered session, if it is the one this request shows and still holds.
    fn take_valid(&mut self, ctx: &Context, app: &str, name: &str, token: Option<&str>, now: u64) -> Option<Known> {
        let known = self.0.take()?;
        let same = token == Some(known.token.as_str())
            && known.access.key.app == app
            && known.access.key.name == name
            && now < known.access.expires
            && !known.stream.is_ended()
            && ctx.access_is(&known.policy);
        same.then_some(known)
    }

    /// Keeps `known` for the connection's next requests when it has a session to show.
    fn keep(&mut self, mut known: Known) {
        if known.access.session.is_none() {
            return;
        }
        // Later requests show the session's token under the public name: they are neither
        // the one that issued it nor behind a stream key.
        known.access.fresh = false;
        known.access.prefix.clear();
        known.token = known.access.query.trim_start_matches("?hs=").to_string();
        self.0 = Some(known);
    }
}

/// The answer to `/{app}/{name}/{file}?{query}` (path segments already percent-decoded) from
/// a client at `peer`; with `files`, a complete segment also comes as a memory file. `memo`
/// is the connection's, where it has one.
#[allow(clippy::too_many_arguments)]
pub async fn reply(
    ctx: &Arc<Context>,
    app: &str,
    name: &str,
    file: &str,
    query: &str,
    peer: Option<IpAddr>,
    files: bool,
    mut memo: Option<&mut Memo>,
) -> Reply {
    let Some(asset) = Asset::parse(file) else {
        return refuse(StatusCode::NOT_FOUND, "not found");
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = query_value(query, "hs");
    let remembered = memo
        .as_deref_mut()
        .and_then(|m| m.take_valid(ctx, app, name, token, now));
    let mut known = match remembered {
        Some(known) => known,
        None => match admit(ctx, app, name, &asset, query, peer).await {
            Ok(known) => known,
            Err(refused) => return refused,
        },
    };
    if known.touched.is_none_or(|t| t.elapsed() >= TOUCH_EVERY) {
        known.stream.touch(known.access.session);
        known.touched = Some(Instant::now());
    }
    let (stream, access) = (&known.stream, &known.access);
    let renditions = match asset {
        Asset::Multivariant | Asset::Mpd => renditions_of(ctx, &access.key, peer).await,
        _ => Vec::new(),
    };
    let reply = if renditions.is_empty() {
        answer(ctx, stream, &asset, access, query, files).await
    } else {
        answer_ladder(ctx, stream, renditions, &asset, access).await
    };
    if reply.status == StatusCode::OK {
        known.count(ctx, asset.kind(), reply.body_len());
    }
    if let Some(memo) = memo {
        memo.keep(known);
    }
    reply
}

/// Lets a request in (the app's play policy or its session token) and finds its stream's
/// segmenter, started if needed.
async fn admit(
    ctx: &Arc<Context>,
    app: &str,
    name: &str,
    asset: &Asset,
    query: &str,
    peer: Option<IpAddr>,
) -> Result<Known, Reply> {
    // Taken first: a reload during the checks leaves the memo with the older snapshot, so
    // the next request is checked again.
    let policy = ctx.access();
    let key = match ctx.hub.key(app, name) {
        Ok(k) => k,
        Err(HubError::UnknownApp) => return Err(refuse(StatusCode::NOT_FOUND, "unknown app")),
        Err(e) => return Err(refuse(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    if ctx.hls.app_with(app, |a| a.hls.mode == HlsMode::Off).unwrap_or(false) {
        return Err(refuse(StatusCode::NOT_FOUND, "HLS is off for this app"));
    }
    let access = access(ctx, key, asset, query, peer)?;
    let mut started = ctx.hls.get_or_start(&access.key);
    if matches!(started, Err(HlsError::NotPublished)) && ctx.cluster.is_some() {
        // Published on another pod of the fleet: pull it here (once, for every local reader)
        // and segment it like a local stream.
        started = crate::cluster::pull::await_published(ctx, &access.key, peer)
            .await
            .map_or(started, |()| ctx.hls.get_or_start(&access.key));
    }
    let stream = match started {
        Ok(s) => s,
        Err(HlsError::ShuttingDown) => return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "shutting down")),
        Err(e) => return Err(refuse(StatusCode::NOT_FOUND, &e.to_string())),
    };
    Ok(Known {
        access,
        token: String::new(),
        stream,
        policy,
        touched: None,
        requests: Vec::new(),
        bytes: None,
    })
}

fn respond(body: Vec<Bytes>, content_type: &'static str, cache: &'static str) -> Reply {
    Reply::new(StatusCode::OK, body, content_type, cache)
}

fn text(s: String, content_type: &'static str, cache: &'static str) -> Reply {
    respond(vec![s.into()], content_type, cache)
}

/// How long the first playlist may wait for the first complete segment.
fn startup_wait(seg: &Segmenter) -> Duration {
    Duration::from_millis((seg.settings.target_ms as u64 * 3).max(10_000))
}

/// How long a blocking request may be held (RFC 8216bis: three target durations).
fn block_wait(seg: &Segmenter) -> Duration {
    Duration::from_secs(playlist::target_duration(seg) * 3)
}

/// Whether a track has reached `msn` (complete) or, with `part`, that part of it.
fn reached(seg: &Segmenter, track: TrackName, msn: u64, part: Option<usize>) -> bool {
    let t = seg.track(track);
    let Some(last) = t.segments.back() else { return false };
    match part {
        _ if last.msn > msn => true,
        Some(p) => last.msn == msn && last.parts.len() > p,
        None => last.msn == msn && last.complete,
    }
}

async fn answer(
    ctx: &Context,
    stream: &Arc<StreamHls>,
    asset: &Asset,
    access: &Access,
    query: &str,
    files: bool,
) -> Reply {
    let q = access.query.as_str();
    let prefix = access.prefix.as_str();
    let not_found = || refuse(StatusCode::NOT_FOUND, "not found");
    if asset.is_manifest() {
        let wait = stream.with(startup_wait);
        if !stream.wait_for(wait, Segmenter::ready).await {
            return refuse(StatusCode::NOT_FOUND, "stream has no segment yet");
        }
    }
    match asset {
        Asset::Multivariant => {
            let fps = ctx.hub.stream(&access.key).and_then(|s| s.info().fps());
            let playlist = stream.with(|seg| {
                playlist::multivariant_of(&[playlist::Variant {
                    seg,
                    prefix,
                    query: q,
                    id: "source",
                    fps,
                }])
            });
            text(playlist, PLAYLIST, CACHE_PLAYLIST)
        }
        Asset::Media(track) => {
            if stream.with(|s| s.track(*track).init.is_none()) {
                return not_found();
            }
            // A value that is not a number is refused, not read as absent: a player that
            // meant to block must not get an answer it did not ask for.
            let Ok(msn) = query_param(query, "_HLS_msn").map(|v| v.parse::<u64>()).transpose() else {
                return refuse(StatusCode::BAD_REQUEST, "_HLS_msn is not a media sequence number");
            };
            let Ok(part) = query_param(query, "_HLS_part").map(|v| v.parse::<usize>()).transpose() else {
                return refuse(StatusCode::BAD_REQUEST, "_HLS_part is not a part index");
            };
            // RFC 8216bis 6.2.5.1: YES skips segments; v2 also date ranges, of which there are none.
            let delta = match query_param(query, "_HLS_skip").as_deref() {
                None => false,
                Some("YES" | "v2") => true,
                Some(_) => return refuse(StatusCode::BAD_REQUEST, "_HLS_skip is neither YES nor v2"),
            };
            let Some(msn) = msn else {
                if part.is_some() {
                    return refuse(StatusCode::BAD_REQUEST, "_HLS_part needs _HLS_msn");
                }
                return text(
                    stream.media_playlist(*track, prefix, q, delta),
                    PLAYLIST,
                    CACHE_PLAYLIST,
                );
            };
            // RFC 8216bis 6.2.5.2: more than two segments ahead of the last one is refused.
            let last = stream.with(|s| s.track(*track).last_msn()).unwrap_or(0);
            if msn > last + 2 {
                return refuse(StatusCode::BAD_REQUEST, "_HLS_msn is too far ahead");
            }
            let wait = stream.with(block_wait);
            if !stream.wait_for(wait, |s| reached(s, *track, msn, part)).await {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the requested part did not appear in time",
                );
            }
            text(stream.media_playlist(*track, prefix, q, delta), PLAYLIST, CACHE_NEVER)
        }
        Asset::Mpd => match stream.with(|s| playlist::mpd(s, prefix, q, SystemTime::now())) {
            Some(mpd) => text(mpd, "application/dash+xml", CACHE_PLAYLIST),
            None => refuse(StatusCode::NOT_FOUND, "stream has no segment yet"),
        },
        Asset::TsPlaylist => {
            let fits = stream.with(|s| {
                s.tracks().all(|t| {
                    let setup = &t.init.as_ref().expect("tracks() lists configured tracks").setup;
                    match t.name {
                        TrackName::Video => setup.ts_video().is_some(),
                        TrackName::Audio => setup.ts_audio().is_some(),
                        TrackName::Muxed => true,
                    }
                })
            });
            if !fits {
                return refuse(
                    StatusCode::NOT_FOUND,
                    "the MPEG-TS variant needs H.264 or H.265 video and AAC or MP3 audio",
                );
            }
            if access.fresh {
                return text(
                    stream.with(|s| playlist::ts_multivariant(s, prefix, q)),
                    PLAYLIST,
                    CACHE_PLAYLIST,
                );
            }
            text(
                stream.with(|s| playlist::ts_media(s, prefix, q)),
                PLAYLIST,
                CACHE_PLAYLIST,
            )
        }
        Asset::Init(track, name) => {
            let init = stream.with(|s| {
                let t = s.track(*track);
                t.init
                    .iter()
                    .chain(t.segments.iter().map(|g| &g.init))
                    .find(|i| i.name == *name)
                    .map(|i| (i.bytes.clone(), i.setup.kind))
            });
            match init {
                Some((bytes, kind)) => {
                    let ct = match kind {
                        ferrocast_media::fmp4::TrackKind::Video { .. } => "video/mp4",
                        ferrocast_media::fmp4::TrackKind::Audio { .. } => "audio/mp4",
                    };
                    respond(vec![bytes], ct, CACHE_IMMUTABLE)
                }
                None => not_found(),
            }
        }
        Asset::Segment(track, epoch, msn) => {
            if *epoch != stream.with(|s| s.epoch) {
                return not_found();
            }
            let current = stream.with(|s| s.track(*track).last_msn());
            // The segment in progress is answered once complete.
            if current == Some(*msn) {
                let wait = stream.with(block_wait);
                stream.wait_for(wait, |s| reached(s, *track, *msn, None)).await;
            }
            let parts = stream.with(|s| {
                s.track(*track).segment(*msn).filter(|g| g.complete).map(|g| {
                    let parts = g.parts.iter().map(|p| p.bytes.clone()).collect::<Vec<_>>();
                    (parts, if files { g.file() } else { None })
                })
            });
            match parts {
                Some((parts, file)) => Reply {
                    file,
                    ..respond(parts, "video/iso.segment", CACHE_IMMUTABLE)
                },
                None => not_found(),
            }
        }
        Asset::Part(track, epoch, msn, part) => {
            if *epoch != stream.with(|s| s.epoch) {
                return not_found();
            }
            // The next part (the preload hint) is held until it exists.
            let next = stream.with(|s| playlist::next_part(s.track(*track)));
            if next == Some((*msn, *part)) {
                let wait = stream.with(block_wait);
                stream.wait_for(wait, |s| reached(s, *track, *msn, Some(*part))).await;
            }
            let bytes = stream.with(|s| {
                s.track(*track)
                    .segment(*msn)
                    .and_then(|g| g.parts.get(*part))
                    .map(|p| p.bytes.clone())
            });
            match bytes {
                Some(b) => respond(vec![b], "video/iso.segment", CACHE_IMMUTABLE),
                None => not_found(),
            }
        }
        Asset::TsSegment(epoch, msn) => {
            if *epoch != stream.with(|s| s.epoch) {
                return not_found();
            }
            let ts = stream.with(|s| {
                let file = if files { s.ts_file(*msn) } else { None };
                s.ts_segment(*msn).map(|b| (b, file))
            });
            match ts {
                Some((b, file)) => Reply {
                    file,
                    ..respond(vec![b], "video/mp2t", CACHE_IMMUTABLE)
                },
                None => not_found(),
            }
        }
    }
}

/// The live renditions of `key`: transcoded here, or, for a stream pulled from the pod that
/// has its publisher (and transcodes it), the renditions the rules give it that are published
/// on that pod, pulled here like the source.
async fn renditions_of(
    ctx: &Arc<Context>,
    key: &StreamKey,
    client: Option<std::net::IpAddr>,
) -> Vec<crate::transcode::Rendition> {
    let here = ctx.transcodes.live_renditions(key);
    if !here.is_empty() || ctx.cluster.is_none() || ctx.publishes_origin(key) {
        return here;
    }
    let ruled = ctx.transcodes.ruled_renditions(key);
    let found = futures_util::future::join_all(ruled.iter().map(|r| async {
        ctx.hub.stream(&r.stream).is_some_and(|s| s.is_published())
            || crate::cluster::pull::await_published(ctx, &r.stream, client)
                .await
                .is_ok()
    }))
    .await;
    ruled
        .into_iter()
        .zip(found)
        .filter(|(_, ok)| *ok)
        .map(|(r, _)| r)
        .collect()
}

/// A rendition as a variant: its segmenter, its own session token (the playlist's
/// authorization carries to the renditions of its stream) and its frame rate.
struct LadderRung {
    hls: Arc<StreamHls>,
    id: String,
    prefix: String,
    query: String,
    fps: Option<f64>,
}

/// The multivariant playlist or MPD of a stream with renditions: the source first, then
/// every rendition whose segmenter has a segment within the startup wait.
async fn answer_ladder(
    ctx: &Context,
    stream: &Arc<StreamHls>,
    renditions: Vec<crate::transcode::Rendition>,
    asset: &Asset,
    access: &Access,
) -> Reply {
    let wait = stream.with(startup_wait);
    let fps = |key: &StreamKey| ctx.hub.stream(key).and_then(|s| s.info().fps());
    let sessions = ctx.hls.session_key(&access.key.app);
    let now = SystemTime::now();
    let mut rungs = vec![LadderRung {
        hls: stream.clone(),
        id: "source".into(),
        prefix: access.prefix.clone(),
        query: access.query.clone(),
        fps: fps(&access.key),
    }];
    for r in renditions {
        let Ok(hls) = ctx.hls.get_or_start(&r.stream) else {
            continue;
        };
        // Listed is not watched: the session counts once its player asks for the rendition.
        let (_, token) = sessions.issue(&r.stream, now);
        hls.touch(None);
        rungs.push(LadderRung {
            hls,
            prefix: format!("../{}/", r.stream.name),
            query: format!("?hs={token}"),
            fps: fps(&r.stream),
            id: r.name,
        });
    }
    // Every segmenter gets the same startup wait, concurrently.
    let ready = futures_util::future::join_all(rungs.iter().map(|r| r.hls.wait_for(wait, Segmenter::ready))).await;
    if !ready[0] {
        return refuse(StatusCode::NOT_FOUND, "stream has no segment yet");
    }
    let rungs: Vec<LadderRung> = rungs
        .into_iter()
        .zip(ready)
        .filter(|(_, ok)| *ok)
        .map(|(r, _)| r)
        .collect();
    let streams: Vec<Arc<StreamHls>> = rungs.iter().map(|r| r.hls.clone()).collect();
    StreamHls::with_all(&streams, |segs| {
        let variants: Vec<playlist::Variant> = rungs
            .iter()
            .zip(segs)
            .map(|(r, seg)| playlist::Variant {
                seg,
                prefix: &r.prefix,
                query: &r.query,
                id: &r.id,
                fps: r.fps,
            })
            .collect();
        match asset {
            Asset::Mpd => match playlist::mpd_of(&variants, SystemTime::now()) {
                Some(mpd) => text(mpd, "application/dash+xml", CACHE_PLAYLIST),
                None => refuse(StatusCode::NOT_FOUND, "stream has no segment yet"),
            },
            _ => text(playlist::multivariant_of(&variants), PLAYLIST, CACHE_PLAYLIST),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_map_to_assets() {
        use Asset::*;
        use TrackName::*;
        let cases: &[(&str, Option<Asset>)] = &[
            ("index.m3u8", Some(Multivariant)),
            ("video.m3u8", Some(Media(Video))),
            ("audio.m3u8", Some(Media(Audio))),
            ("muxed.m3u8", Some(Media(Muxed))),
            ("muxed-17-4.1.m4s", Some(Part(Muxed, 17, 4, 1))),
            ("index.mpd", Some(Mpd)),
            ("ts.m3u8", Some(TsPlaylist)),
            ("ts-17-4.ts", Some(TsSegment(17, 4))),
            ("video-init-00ff.mp4", Some(Init(Video, "video-init-00ff.mp4".into()))),
            ("audio-17-4.m4s", Some(Segment(Audio, 17, 4))),
            ("video-17-4.2.m4s", Some(Part(Video, 17, 4, 2))),
            ("other.m3u8", None),
            ("video-x-4.m4s", None),
            ("video-17-4.m4s.m4s", None),
            ("../etc/passwd", None),
            ("index.flv", None),
        ];
        for (file, want) in cases {
            assert_eq!(&Asset::parse(file), want, "{file}");
        }
    }
}
