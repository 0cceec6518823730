//! HTTP-FLV and WS-FLV players (over plain TCP or TLS, HTTP-FLV also over HTTP/2): connect,
//! then pull FLV tags as they arrive and learn how the stream ended.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::flv::{FlvHeader, FlvParser, Tag};
use crate::http::{self, BodyEvent, BoxIo, HttpResponse};

/// The request side of an HTTP/2 connection (kept so the connection stays up).
pub type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>;

/// How a player's stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The HTTP response body ended properly (terminating chunk / length / close-delimited).
    HttpComplete,
    /// The HTTP connection dropped in the middle of the body.
    HttpTruncated(String),
    /// A WebSocket close frame arrived (code, reason).
    WsClose(Option<(u16, String)>),
    /// The WebSocket connection ended without a close frame.
    WsEof,
    WsError(String),
}

enum Source {
    Http(Box<HttpResponse>),
    /// The sender keeps the HTTP/2 connection's request side alive while the body streams.
    Http2 {
        body: Box<hyper::body::Incoming>,
        _sender: H2Sender,
    },
    Ws(Box<WebSocketStream<BoxIo>>),
}

/// A live FLV player over HTTP or WebSocket.
pub struct FlvPlayer {
    url: String,
    source: Source,
    parser: FlvParser,
    /// Set once the stream ended.
    pub end: Option<StreamEnd>,
    /// When the request was sent.
    pub started: Instant,
    /// Payload bytes received.
    pub bytes: u64,
    /// WebSocket binary messages received (0 for HTTP).
    pub ws_messages: u64,
    /// Tags returned so far.
    pub tags: u64,
}

impl std::fmt::Debug for FlvPlayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlvPlayer")
            .field("url", &self.url)
            .field("end", &self.end)
            .field("bytes", &self.bytes)
            .field("tags", &self.tags)
            .finish()
    }
}

impl FlvPlayer {
    /// GET an HTTP-FLV URL; fails unless the status is 200. `head_timeout` bounds the wait for
    /// the response head (a server may hold it until the stream is published).
    pub async fn http(url: &str, head_timeout: Duration) -> Result<FlvPlayer> {
        let started = Instant::now();
        let resp = http::get(url, &[], head_timeout).await?;
        if resp.status != 200 {
            bail!("GET {url} answered {} (headers {:?})", resp.status, resp.headers);
        }
        Ok(Self::from_http(url, resp, started))
    }

    fn new(url: &str, source: Source, started: Instant) -> FlvPlayer {
        FlvPlayer {
            url: url.to_string(),
            source,
            parser: FlvParser::new(),
            end: None,
            started,
            bytes: 0,
            ws_messages: 0,
            tags: 0,
        }
    }

    /// Wraps a response obtained with [`http::get`] (e.g. to inspect headers first).
    pub fn from_http(url: &str, resp: HttpResponse, started: Instant) -> FlvPlayer {
        Self::new(url, Source::Http(Box::new(resp)), started)
    }

    /// Plays the body of an HTTP/2 response (see [`crate::tls::h2_get`]).
    pub fn from_h2(url: &str, body: hyper::body::Incoming, sender: H2Sender, started: Instant) -> FlvPlayer {
        Self::new(
            url,
            Source::Http2 {
                body: Box::new(body),
                _sender: sender,
            },
            started,
        )
    }

    /// Opens a WS-FLV URL (bounded by `timeout`).
    pub async fn ws(url: &str, timeout: Duration) -> Result<FlvPlayer> {
        let (authority, _) = http::split_url(url)?;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(&authority))
            .await
            .map_err(|_| anyhow!("connecting to {authority} took over {timeout:?}"))?
            .with_context(|| format!("connecting to {authority}"))?;
        tcp.set_nodelay(true)?;
        Self::ws_on(url, Box::new(tcp), timeout).await
    }

    /// Opens WS-FLV on a connected stream (for WSS, a TLS stream; `url` is `wss://...`).
    pub async fn ws_on(url: &str, io: BoxIo, timeout: Duration) -> Result<FlvPlayer> {
        let started = Instant::now();
        let (ws, resp) = tokio::time::timeout(timeout, tokio_tungstenite::client_async(url, io))
            .await
            .map_err(|_| anyhow!("WebSocket handshake with {url} did not finish within {timeout:?}"))?
            .with_context(|| format!("WebSocket handshake with {url}"))?;
        if resp.status().as_u16() != 101 {
            bail!("WebSocket {url} answered {}", resp.status());
        }
        Ok(Self::new(url, Source::Ws(Box::new(ws)), started))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn header(&self) -> Option<FlvHeader> {
        self.parser.header()
    }

    /// Reads one chunk from the source into the parser; sets `end` when the stream ends.
    async fn read_more(&mut self) {
        match &mut self.source {
            Source::Http(resp) => match resp.next_event().await {
                BodyEvent::Data(d) => self.push(&d),
                BodyEvent::End => self.end = Some(StreamEnd::HttpComplete),
                BodyEvent::Truncated(why) => self.end = Some(StreamEnd::HttpTruncated(why)),
            },
            Source::Http2 { body, .. } => match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(d) = frame.into_data() {
                        self.push(&d)
                    }
                }
                Some(Err(e)) => self.end = Some(StreamEnd::HttpTruncated(e.to_string())),
                None => self.end = Some(StreamEnd::HttpComplete),
            },
            Source::Ws(ws) => match ws.next().await {
                Some(Ok(Message::Binary(d))) => {
                    self.ws_messages += 1;
                    self.push(&d)
                }
                Some(Ok(Message::Close(frame))) => {
                    self.end = Some(StreamEnd::WsClose(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ))
                }
                Some(Ok(_)) => {} // ping/pong/text: tungstenite answers pings itself
                Some(Err(e)) => self.end = Some(StreamEnd::WsError(e.to_string())),
                None => self.end = Some(StreamEnd::WsEof),
            },
        }
    }

    fn push(&mut self, d: &Bytes) {
        self.bytes += d.len() as u64;
        self.parser.push(d);
    }

    /// The next tag, `Ok(None)` once the stream has ended. Not bounded: use [`Self::next_tag_within`].
    pub async fn next_tag(&mut self) -> Result<Option<Tag>> {
        loop {
            if let Some(t) = self
                .parser
                .next_tag()
                .with_context(|| format!("malformed FLV from {}", self.url))?
            {
                self.tags += 1;
                return Ok(Some(t));
            }
            if self.end.is_some() {
                if self.parser.pending() > 0 && self.parser.header().is_some() {
                    // A partial tag before the end is fine for a cut live stream; ignore.
                }
                return Ok(None);
            }
            self.read_more().await;
        }
    }

    /// The next tag within `d`; an error if nothing arrives in time.
    pub async fn next_tag_within(&mut self, d: Duration) -> Result<Option<Tag>> {
        match tokio::time::timeout(d, self.next_tag()).await {
            Ok(r) => r,
            Err(_) => bail!(
                "no FLV tag from {} within {d:?} ({} tags, {} bytes so far)",
                self.url,
                self.tags,
                self.bytes
            ),
        }
    }

    /// Reads tags until `pred` matches one (returned together with every tag read before it),
    /// bounded by `d`. Errors if the stream ends or time runs out first.
    pub async fn read_until(&mut self, d: Duration, mut pred: impl FnMut(&Tag) -> bool) -> Result<Vec<Tag>> {
        let deadline = Instant::now() + d;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let t = match tokio::time::timeout(left, self.next_tag()).await {
                Ok(r) => r?,
                Err(_) => bail!(
                    "condition not met on {} within {d:?}; {} tags read: {}",
                    self.url,
                    seen.len(),
                    summarize(&seen)
                ),
            };
            match t {
                Some(t) => {
                    let hit = pred(&t);
                    seen.push(t);
                    if hit {
                        return Ok(seen);
                    }
                }
                None => bail!(
                    "stream {} ended ({:?}) before the condition was met; {} tags read: {}",
                    self.url,
                    self.end,
                    seen.len(),
                    summarize(&seen)
                ),
            }
        }
    }

    /// Reads every tag arriving during `d` (stops early if the stream ends).
    pub async fn read_for(&mut self, d: Duration) -> Result<Vec<Tag>> {
        let deadline = Instant::now() + d;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(seen);
            }
            match tokio::time::timeout(left, self.next_tag()).await {
                Ok(Ok(Some(t))) => seen.push(t),
                Ok(Ok(None)) => return Ok(seen),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(seen),
            }
        }
    }

    /// Reads (and discards) until the stream ends; returns the end and the tags read, or an
    /// error if it has not ended within `d`.
    pub async fn wait_end(&mut self, d: Duration) -> Result<(StreamEnd, Vec<Tag>)> {
        let deadline = Instant::now() + d;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.next_tag()).await {
                Ok(Ok(Some(t))) => seen.push(t),
                Ok(Ok(None)) => return Ok((self.end.clone().expect("ended"), seen)),
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!(
                    "stream {} still open after {d:?} ({} more tags, last: {:?})",
                    self.url,
                    seen.len(),
                    seen.last().map(Tag::describe)
                ),
            }
        }
    }
}

/// A compact description of a tag sequence for assertion messages.
pub fn summarize(tags: &[Tag]) -> String {
    let mut s: Vec<String> = tags.iter().take(12).map(Tag::describe).collect();
    if tags.len() > 12 {
        s.push(format!("... ({} more)", tags.len() - 12));
    }
    s.join("; ")
}

/// Checks that each track's media timestamps never go backwards; returns a description of the
/// first violation.
pub fn check_monotonic(tags: &[Tag]) -> std::result::Result<(), String> {
    let mut last_v: Option<u32> = None;
    let mut last_a: Option<u32> = None;
    for (i, t) in tags.iter().enumerate() {
        let last = if t.is_video_frame() {
            &mut last_v
        } else if t.is_audio_frame() {
            &mut last_a
        } else {
            continue;
        };
        if let Some(prev) = *last {
            if t.timestamp < prev {
                return Err(format!(
                    "tag #{i} ({}) goes back from {prev} ms; around it: {}",
                    t.describe(),
                    summarize(&tags[i.saturating_sub(3)..(i + 3).min(tags.len())])
                ));
            }
        }
        *last = Some(t.timestamp);
    }
    Ok(())
}
