//! The lean HTTP/1.1 path: HLS and DASH GETs and HEADs (`/{app}/{name}/{file}`, the bulk of
//! the requests once players follow live playlists) are parsed with `httparse` and answered
//! with one vectored write of the response head and the segmenter's shared buffers, without
//! the per-request allocations of hyper and axum (docs/benchmarks.md). The first request that
//! is anything else (another route, a body, an upgrade, HTTP/1.0, a percent-encoded path, a
//! head too large for this path) hands the connection, with the bytes already read, to hyper
//! for the rest of its life.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::HeaderValue;
use axum::Router;
use bytes::{Buf, BytesMut};
use futures_util::future::{FusedFuture, FutureExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::hls::{self, Reply};
use super::ConnSlot;
use crate::hls::file::{SegmentFile, SplicePipe};
use crate::net::{Prefixed, StallGuard};
use crate::server::Context;
use crate::serving::ServingThreads;

/// The largest request head this path reads; a larger one goes to hyper with its own limits.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// Headers this path parses; a request with more goes to hyper.
const MAX_HEADERS: usize = 32;

/// What the start of a connection's buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// Not a whole request head yet.
    Partial,
    /// An HLS or DASH request this path answers.
    Lean(Head<'a>),
    /// Anything else: hyper answers it, and every later request on the connection.
    Other,
}

/// A lean request, borrowing the buffer it was parsed from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head<'a> {
    /// Bytes of the head (the request has no body).
    pub(crate) len: usize,
    /// HEAD: the same head as GET, without the body.
    pub(crate) head_only: bool,
    pub(crate) app: &'a str,
    pub(crate) name: &'a str,
    pub(crate) file: &'a str,
    pub(crate) query: &'a str,
    /// The client asked to close after this response (`Connection: close`).
    pub(crate) close: bool,
}

/// Parses the request at the start of `buf`. `routed_elsewhere(app)` is true for first path
/// segments the router gives to other routes (the API, the console).
pub(crate) fn parse(buf: &[u8], routed_elsewhere: impl Fn(&str) -> bool) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parsed::Partial,
        // Malformed, too many headers or too large: hyper refuses it properly.
        _ => return Parsed::Other,
    };
    let head_only = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Parsed::Other,
    };
    if req.version != Some(1) {
        return Parsed::Other;
    }
    let Some(target) = req.path else { return Parsed::Other };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    // Percent-encoded segments are decoded by the router: leave them to it.
    let Some(path) = path.strip_prefix('/').filter(|p| !p.contains('%')) else {
        return Parsed::Other;
    };
    let mut segments = path.split('/');
    let (Some(app), Some(name), Some(file), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Parsed::Other;
    };
    if app.is_empty() || name.is_empty() || !hls::is_asset(file) || routed_elsewhere(app) {
        return Parsed::Other;
    }
    let mut close = false;
    for h in req.headers.iter() {
        let value = h.value;
        if h.name.eq_ignore_ascii_case("content-length") {
            if value.trim_ascii() != b"0" {
                return Parsed::Other;
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade")
            || h.name.eq_ignore_ascii_case("expect")
        {
            return Parsed::Other;
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    Parsed::Lean(Head {
        len,
        head_only,
        app,
        name,
        file,
        query,
        close,
    })
}

/// Writes the response head for `reply` into `out` (cleared first). `allow_origin` is the CORS
/// header's value when it is a valid header value. Built by copying, without `core::fmt`:
/// it is written for every request.
fn write_head(out: &mut Vec<u8>, reply: &Reply, allow_origin: Option<&str>, date: &str, close: bool) {
    out.clear();
    let status = reply.status;
    for piece in [
        "HTTP/1.1 ",
        status.as_str(),
        " ",
        status.canonical_reason().unwrap_or(""),
        "\r\ncontent-type: ",
        reply.content_type,
        "\r\ncache-control: ",
        reply.cache,
        "\r\n",
    ] {
        out.extend_from_slice(piece.as_bytes());
    }
    if let Some(origin) = allow_origin {
        out.extend_from_slice(b"access-control-allow-origin: ");
        out.extend_from_slice(origin.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    push_decimal(out, reply.body_len());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\ndate: ");
    out.extend_from_slice(date.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

thread_local! {
    /// The Date header's value, formatted once a second per thread.
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

fn with_date<T>(f: impl FnOnce(&str) -> T) -> T {
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        f(text)
    })
}

/// A plain-HTTP connection as [`super::serve_connection`] wraps it.
type Plain = StallGuard<Prefixed<tokio::net::TcpStream>>;

/// The TCP socket under a plain-HTTP connection (`None` under TLS, whose bytes must pass
/// through rustls).
fn plain_socket<IO: 'static>(io: &IO) -> Option<&tokio::net::TcpStream> {
    let plain = (io as &dyn std::any::Any).downcast_ref::<Plain>()?;
    Some(plain.get_ref().get_ref())
}

/// Moves a plain-HTTP connection, with the bytes read from it (`buf`) and any it had not
/// handed out yet, to one of `threads`, and serves it there with `serve`.
///
/// Why: HLS players send many short requests. On the main work-stealing runtime each burst
/// of them also wakes a second worker (a futex call and a context switch) to take half of
/// it; on a serving thread the connection stays with one event loop, as with an nginx
/// worker. FLV players stay on the main runtime, where their publisher wakes them without
/// crossing threads (docs/configuration.md, "Serving threads").
fn hop_to<F, Fut>(threads: &ServingThreads, io: Plain, mut buf: BytesMut, write_timeout: Duration, serve: F)
where
    F: FnOnce(Plain, BytesMut) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (unread, socket) = io.into_inner().into_parts();
    buf.extend_from_slice(&unread);
    threads.serve(socket, move |socket| {
        serve(
            StallGuard::new(Prefixed::new(bytes::Bytes::new(), socket), write_timeout),
            buf,
        )
    });
}

/// Writes `head`, then `file` spliced through a pipe, on the plain-HTTP connection `io`;
/// `None` (nothing written) when `io` is not one or no pipe can be had (out of descriptors):
/// the caller then writes the bytes. A peer that accepts nothing for `limit` fails it with
/// `TimedOut`.
async fn send_file<IO: 'static>(
    io: &IO,
    head: &[u8],
    file: &SegmentFile,
    limit: Duration,
) -> Option<std::io::Result<()>> {
    let socket = plain_socket(io)?;
    let mut pipe = match SplicePipe::take() {
        Ok(pipe) => pipe,
        Err(e) => {
            tracing::debug!("no pipe for a segment, writing it instead: {e}");
            return None;
        }
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
    let sent = async {
        let mut sent = 0;
        while sent < head.len() {
            let rest = &head[sent..];
            sent += writable_step(socket, limit, || crate::net::send_more(fd, rest)).await?;
        }
        let mut offset = 0;
        while offset < file.len() || !pipe.is_empty() {
            let (at, p) = (&mut offset, &mut pipe);
            let n = writable_step(socket, limit, || p.send(file, at, fd)).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    };
    let sent = sent.await;
    // A pipe left holding bytes (the peer failed) is closed, not kept.
    pipe.give_back();
    Some(sent)
}

/// Runs the non-blocking write `f` once `socket` takes data; fails with `TimedOut` when it
/// takes none for `limit`.
async fn writable_step(
    socket: &tokio::net::TcpStream,
    limit: Duration,
    f: impl FnMut() -> std::io::Result<usize>,
) -> std::io::Result<usize> {
    tokio::time::timeout(limit, socket.async_io(tokio::io::Interest::WRITABLE, f))
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer accepted no data",
            ))
        })
}

/// Serves one HTTP/1.1 connection: lean requests here, then, from the first other request on,
/// hyper ([`super::serve_hyper_h1`]). On server shutdown the response in flight is finished
/// (within the grace period) and the connection closed.
///
/// `hop`: the serving threads a plain-HTTP connection moves to when its first request is
/// HLS or DASH (`http.hls_threads`); see [`hop_to`].
pub(super) async fn serve<IO>(
    io: IO,
    peer: SocketAddr,
    slot: ConnSlot,
    router: Router,
    ctx: Arc<Context>,
    hop: Option<Arc<ServingThreads>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let write_timeout = Duration::from_secs(ctx.config.hub.write_timeout_secs);
    let moving = serve_buffered(io, BytesMut::new(), peer, slot, router, ctx, hop.is_some()).await;
    if let (Some(threads), Some(m)) = (hop, moving) {
        hop_to(&threads, m.io, m.buf, write_timeout, move |io, buf| async move {
            serve_buffered(io, buf, peer, m.slot, m.router, m.ctx, false).await;
        });
    }
}

/// A plain-HTTP connection leaving for a serving thread, with what serves it.
struct Moving {
    io: Plain,
    buf: BytesMut,
    slot: ConnSlot,
    router: Router,
    ctx: Arc<Context>,
}

/// [`serve`] with `buf` already read from `io`; with `hop`, a plain-HTTP connection whose
/// next request is HLS or DASH is handed back to move before it is answered.
async fn serve_buffered<IO>(
    mut io: IO,
    mut buf: BytesMut,
    peer: SocketAddr,
    slot: ConnSlot,
    router: Router,
    ctx: Arc<Context>,
    mut hop: bool,
) -> Option<Moving>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request_timeout = Duration::from_secs(ctx.config.http.request_timeout_secs);
    let grace = Duration::from_secs(ctx.config.hub.shutdown_grace_secs);
    let allow_origin = HeaderValue::from_str(&ctx.config.http.allow_origin)
        .is_ok()
        .then_some(ctx.config.http.allow_origin.as_str());
    let routed_elsewhere = |app: &str| super::routed_elsewhere(&ctx, app);
    let write_timeout = Duration::from_secs(ctx.config.hub.write_timeout_secs);
    // Complete segments are spliced from memory files on plain HTTP (crate::hls::file).
    let files = ctx.config.http.sendfile && plain_socket(&io).is_some();
    // One shutdown waiter for the connection's life: a new one per request would take the
    // shared lock of the shutdown signal's waiter list twice per request, from every thread.
    let mut shutdown = ctx.shutdown.clone();
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    }
    .fuse();
    tokio::pin!(stopped);
    let mut head = Vec::new();
    let mut memo = hls::Memo::default();
    // Like hyper's header read timeout: from the end of one response to the end of the next
    // request's head, so idle keep-alive connections are closed too.
    let deadline = tokio::time::sleep(request_timeout);
    tokio::pin!(deadline);
    loop {
        // A shutdown seen while a response was in flight ends the connection here.
        if stopped.is_terminated() {
            return None;
        }
        let request = match parse(&buf, routed_elsewhere) {
            Parsed::Lean(_) if hop => {
                hop = false;
                let mut plain = Some(io);
                match (&mut plain as &mut dyn std::any::Any).downcast_mut::<Option<Plain>>() {
                    Some(moving) => {
                        return moving.take().map(|io| Moving {
                            io,
                            buf,
                            slot,
                            router,
                            ctx: ctx.clone(),
                        })
                    }
                    None => match plain {
                        Some(not_plain) => io = not_plain,
                        None => return None,
                    },
                }
                continue;
            }
            Parsed::Lean(request) => request,
            Parsed::Other => break,
            Parsed::Partial => {
                buf.reserve(1024);
                tokio::select! {
                    biased;
                    read = io.read_buf(&mut buf) => match read {
                        Ok(0) => return None,
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::debug!("http connection ended: {e}");
                            return None;
                        }
                    },
                    _ = &mut deadline => {
                        tracing::debug!("http connection ended: no request within {request_timeout:?}");
                        return None;
                    }
                    _ = &mut stopped => return None,
                }
            }
        };
        let answered = async {
            let reply = hls::reply(
                &ctx,
                request.app,
                request.name,
                request.file,
                request.query,
                Some(peer.ip()),
                files,
                Some(&mut memo),
            )
            .await;
            // A draining pod sends its HLS players to the others by closing after each answer.
            let close = request.close || ctx.is_draining();
            with_date(|date| write_head(&mut head, &reply, allow_origin, date, close));
            let file = reply.file.as_deref().filter(|f| !request.head_only && !f.is_empty());
            let sent = match file {
                Some(file) => send_file(&io, &head, file, write_timeout).await,
                None => None,
            };
            let written = match sent {
                Some(sent) => sent,
                None => {
                    let body = if request.head_only {
                        &reply.body[..0]
                    } else {
                        &reply.body[..]
                    };
                    crate::net::write_all_pieces(&mut io, || {
                        std::iter::once(&head[..]).chain(body.iter().map(|b| &b[..]))
                    })
                    .await
                }
            };
            (written, close)
        };
        let len = request.len;
        let (written, close) = tokio::select! {
            biased;
            done = answered => done,
            _ = async {
                (&mut stopped).await;
                tokio::time::sleep(grace).await;
            } => return None,
        };
        if let Err(e) = written {
            tracing::debug!("http connection ended: {e}");
            return None;
        }
        if close {
            let _ = io.shutdown().await;
            return None;
        }
        buf.advance(len);
        deadline.as_mut().reset(tokio::time::Instant::now() + request_timeout);
    }
    super::serve_hyper_h1(Prefixed::new(buf.freeze(), io), peer, slot, router, ctx).await;
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn lean(req: &str) -> Parsed<'_> {
        parse(req.as_bytes(), |app| app == "api")
    }

    #[test]
    fn hls_gets_and_heads_are_lean() {
        let req =
            "GET /live/cam/muxed.m3u8?_HLS_msn=4&hs=abc HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /next";
        assert_eq!(
            lean(req),
            Parsed::Lean(Head {
                len: req.len() - "GET /next".len(),
                head_only: false,
                app: "live",
                name: "cam",
                file: "muxed.m3u8",
                query: "_HLS_msn=4&hs=abc",
                close: false,
            })
        );
        let Parsed::Lean(head) = lean("HEAD /live/cam/index.m3u8 HTTP/1.1\r\nconnection: Keep-Alive, Close\r\n\r\n")
        else {
            panic!("HEAD is lean");
        };
        assert!(head.head_only && head.close && head.query.is_empty());
        assert!(matches!(
            lean("GET /live/cam/muxed-1-2.3.m4s HTTP/1.1\r\ncontent-length: 0\r\n\r\n"),
            Parsed::Lean(_)
        ));
    }

    #[test]
    fn a_partial_head_waits_for_more() {
        assert_eq!(lean(""), Parsed::Partial);
        assert_eq!(
            lean("GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        );
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        let others = [
            // Other routes and methods.
            "GET /live/cam.flv HTTP/1.1\r\n\r\n",
            "GET /live/cam/other.txt HTTP/1.1\r\n\r\n",
            "GET /api/v1/index.m3u8 HTTP/1.1\r\n\r\n",
            "GET /live/cam/index.m3u8/x HTTP/1.1\r\n\r\n",
            "GET //cam/index.m3u8 HTTP/1.1\r\n\r\n",
            "OPTIONS /live/cam/index.m3u8 HTTP/1.1\r\n\r\n",
            "POST /live/cam/index.m3u8 HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi",
            // What this path does not handle.
            "GET /live/cam/index.m3u8 HTTP/1.0\r\n\r\n",
            "GET /live/c%61m/index.m3u8 HTTP/1.1\r\n\r\n",
            "GET http://x/live/cam/index.m3u8 HTTP/1.1\r\n\r\n",
            "GET /live/cam/index.m3u8 HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello",
            "GET /live/cam/index.m3u8 HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET /live/cam/index.m3u8 HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            "GET /live/cam/index.m3u8 HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            // Malformed.
            "GET /live/cam/index.m3u8 HTTP/1.1\r\nbad header\r\n\r\n",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7f\x03\x03",
        ];
        for req in others {
            assert_eq!(lean(req), Parsed::Other, "{req:?}");
        }
        let many = format!(
            "GET /live/cam/index.m3u8 HTTP/1.1\r\n{}\r\n",
            "x-a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(lean(&many), Parsed::Other);
        let huge = format!("GET /live/cam/index.m3u8 HTTP/1.1\r\nx-a: {}", "b".repeat(MAX_HEAD));
        assert_eq!(lean(&huge), Parsed::Other);
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 686_135, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn the_head_carries_length_type_cache_cors_and_close() {
        let reply = Reply {
            status: StatusCode::OK,
            content_type: "video/iso.segment",
            cache: "no-store",
            body: vec![bytes::Bytes::from_static(b"abc"), bytes::Bytes::from_static(b"de")],
            file: None,
        };
        let mut out = b"stale".to_vec();
        write_head(&mut out, &reply, Some("*"), "Mon, 30 Nov 2026 20:00:00 GMT", true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: video/iso.segment\r\ncache-control: no-store\r\n\
             access-control-allow-origin: *\r\ncontent-length: 5\r\nconnection: close\r\n\
             date: Mon, 30 Nov 2026 20:00:00 GMT\r\n\r\n"
        );
        let refused = Reply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            ..reply
        };
        let mut out = Vec::new();
        write_head(&mut out, &refused, None, "d", false);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{out}");
        assert!(!out.contains("access-control") && !out.contains("connection:"), "{out}");
    }

    /// A connection moving to a serving thread keeps every byte: those this path read, then
    /// those its wrapper had not handed out yet; and it is served on that thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_moved_connection_is_served_on_a_serving_thread_with_its_bytes() {
        use tokio::io::AsyncReadExt;
        let threads = ServingThreads::start(1).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let io = StallGuard::new(
            Prefixed::new(bytes::Bytes::from_static(b"-unread"), socket),
            Duration::from_secs(5),
        );
        let buf = BytesMut::from(&b"GET /live/cam/index.m3u8"[..]);
        hop_to(&threads, io, buf, Duration::from_secs(5), |mut io, buf| async move {
            let name = std::thread::current().name().unwrap_or("").to_string();
            io.write_all(format!("{name} ").as_bytes()).await.unwrap();
            io.write_all(&buf).await.unwrap();
        });
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "ferrocast-serve-0 GET /live/cam/index.m3u8-unread");
    }
}
