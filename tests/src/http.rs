//! A minimal HTTP/1.1 client for `http://host:port/path` URLs (or any connected stream, such
//! as a TLS one) that streams the response body and reports precisely how it ended (clean end
//! of a chunked/sized body vs. connection drop).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connected byte stream: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// Splits `http://host:port/path` (or `ws://`, `https://`, `wss://`) into ("host:port", "/path").
pub fn split_url(url: &str) -> Result<(String, String)> {
    let (rest, default_port) = [("http://", 80), ("ws://", 80), ("https://", 443), ("wss://", 443)]
        .iter()
        .find_map(|(scheme, port)| url.strip_prefix(scheme).map(|r| (r, *port)))
        .ok_or_else(|| anyhow!("not an http(s):// or ws(s):// URL: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    Ok((authority, path.to_string()))
}

/// One piece of a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEvent {
    Data(Bytes),
    /// The body ended as HTTP says it should: the terminating zero-size chunk, the full
    /// Content-Length, or (for a close-delimited body) the connection closing.
    End,
    /// The connection closed (or failed) before the body was complete.
    Truncated(String),
}

#[derive(Debug)]
enum Framing {
    Chunked { remaining: usize, need_crlf: bool },
    Length(u64),
    Close,
}

/// A response whose body is read incrementally.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    stream: BoxIo,
    buf: BytesMut,
    framing: Framing,
    done: bool,
}

impl std::fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("framing", &self.framing)
            .finish()
    }
}

/// Sends `GET url` with extra headers and returns once the response head has arrived
/// (bounded by `head_timeout`).
pub async fn get(url: &str, extra_headers: &[(&str, &str)], head_timeout: Duration) -> Result<HttpResponse> {
    request("GET", url, extra_headers, None, head_timeout).await
}

/// Sends `METHOD url` with extra headers and, when `body` is given, that body with a
/// Content-Length; returns once the response head has arrived (bounded by `head_timeout`).
pub async fn request(
    method: &str,
    url: &str,
    extra_headers: &[(&str, &str)],
    body: Option<&[u8]>,
    head_timeout: Duration,
) -> Result<HttpResponse> {
    if url.starts_with("https://") || url.starts_with("wss://") {
        bail!("{url}: use ferrocast_tests::tls for HTTPS (this client speaks plain TCP)");
    }
    let (authority, path) = split_url(url)?;
    let fut = async {
        let stream = TcpStream::connect(&authority)
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        stream.set_nodelay(true)?;
        request_on(Box::new(stream), method, &authority, &path, extra_headers, body).await
    };
    tokio::time::timeout(head_timeout, fut)
        .await
        .map_err(|_| anyhow!("no response head from {url} within {head_timeout:?}"))?
}

/// Sends `METHOD path` on an open connection (`authority` goes in the Host header) and
/// returns once the response head has arrived. Not bounded: the caller bounds it.
pub async fn request_on(
    mut stream: BoxIo,
    method: &str,
    authority: &str,
    path: &str,
    extra_headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpResponse> {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: ferrocast-tests\r\nAccept: */*\r\n");
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut req = req.into_bytes();
    req.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&req).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            bail!("response head larger than 64 KiB");
        }
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            bail!(
                "connection closed before the response head ({} bytes received)",
                buf.len()
            );
        }
    };
    let head = buf.split_to(head_end + 4);
    let head = String::from_utf8_lossy(&head[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("bad status line {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let framing = if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked {
            remaining: 0,
            need_crlf: false,
        }
    } else if let Some(len) = header("content-length") {
        Framing::Length(len.parse().context("bad content-length")?)
    } else if status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        Framing::Close
    };
    Ok(HttpResponse {
        status,
        headers,
        stream,
        buf,
        framing,
        done: false,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl HttpResponse {
    /// A header value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// Reads more bytes into the buffer; Ok(false) on EOF.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let n = self.stream.read_buf(&mut self.buf).await?;
        Ok(n > 0)
    }

    /// The next piece of the body. After `End` or `Truncated`, keeps returning `End`.
    pub async fn next_event(&mut self) -> BodyEvent {
        if self.done {
            return BodyEvent::End;
        }
        let ev = self.next_event_inner().await;
        if !matches!(ev, BodyEvent::Data(_)) {
            self.done = true;
        }
        ev
    }

    async fn next_event_inner(&mut self) -> BodyEvent {
        loop {
            match &mut self.framing {
                Framing::Close => {
                    if !self.buf.is_empty() {
                        return BodyEvent::Data(self.buf.split().freeze());
                    }
                    match self.fill().await {
                        Ok(true) => continue,
                        Ok(false) => return BodyEvent::End,
                        Err(e) => return BodyEvent::Truncated(e.to_string()),
                    }
                }
                Framing::Length(left) => {
                    if *left == 0 {
                        return BodyEvent::End;
                    }
                    if !self.buf.is_empty() {
                        let n = (*left).min(self.buf.len() as u64) as usize;
                        *left -= n as u64;
                        return BodyEvent::Data(self.buf.split_to(n).freeze());
                    }
                    let left = *left;
                    match self.fill().await {
                        Ok(true) => continue,
                        Ok(false) => return BodyEvent::Truncated(format!("EOF with {left} body bytes missing")),
                        Err(e) => return BodyEvent::Truncated(e.to_string()),
                    }
                }
                Framing::Chunked { remaining, need_crlf } => {
                    if *remaining > 0 {
                        if !self.buf.is_empty() {
                            let n = (*remaining).min(self.buf.len());
                            *remaining -= n;
                            if *remaining == 0 {
                                *need_crlf = true;
                            }
                            return BodyEvent::Data(self.buf.split_to(n).freeze());
                        }
                    } else if *need_crlf {
                        if self.buf.len() >= 2 {
                            if &self.buf[..2] != b"\r\n" {
                                return BodyEvent::Truncated("chunk not followed by CRLF".into());
                            }
                            self.buf.advance(2);
                            *need_crlf = false;
                            continue;
                        }
                    } else if let Some(i) = find(&self.buf, b"\r\n") {
                        let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                        self.buf.advance(i + 2);
                        let size_str = line.split(';').next().unwrap_or("").trim();
                        let size = match usize::from_str_radix(size_str, 16) {
                            Ok(s) => s,
                            Err(_) => return BodyEvent::Truncated(format!("bad chunk size line {line:?}")),
                        };
                        if size == 0 {
                            return BodyEvent::End;
                        }
                        *remaining = size;
                        continue;
                    }
                    match self.fill().await {
                        Ok(true) => continue,
                        Ok(false) => return BodyEvent::Truncated("EOF inside a chunked body".into()),
                        Err(e) => return BodyEvent::Truncated(e.to_string()),
                    }
                }
            }
        }
    }

    /// Reads the whole body (bounded); returns the bytes and whether it ended cleanly.
    pub async fn read_to_end(&mut self, limit: Duration) -> Result<(Vec<u8>, BodyEvent)> {
        let mut out = Vec::new();
        let fut = async {
            loop {
                match self.next_event().await {
                    BodyEvent::Data(d) => out.extend_from_slice(&d),
                    other => return other,
                }
            }
        };
        let end = tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| anyhow!("body did not end within {limit:?}"))?;
        Ok((out, end))
    }
}

/// A TCP connection to `127.0.0.1:port` from the loopback address `local` (any of
/// 127.0.0.0/8), so one test can be several clients.
pub async fn connect_from(local: std::net::IpAddr, port: u16) -> Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(local, 0))?;
    let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(([127, 0, 0, 1], port).into()))
        .await
        .map_err(|_| anyhow!("connecting from {local} to port {port} took over 5 s"))?
        .with_context(|| format!("connecting from {local} to port {port}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// GET a small resource; returns status and body (bounded by `limit`).
pub async fn get_text(url: &str, limit: Duration) -> Result<(u16, String)> {
    let mut resp = get(url, &[], limit).await?;
    let (body, _) = resp.read_to_end(limit).await?;
    Ok((resp.status, String::from_utf8_lossy(&body).into_owned()))
}

/// One response read from a kept-alive connection: status, headers (names lower-cased) and
/// the body its Content-Length gives (none for a HEAD).
#[derive(Debug)]
pub struct KeptAlive {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl KeptAlive {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the next response on a connection that stays open for more (`buf` keeps bytes read
/// past it, such as a pipelined response). Not bounded: the caller bounds it.
pub async fn next_response<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, head_only: bool) -> Result<KeptAlive> {
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            bail!("response head larger than 64 KiB");
        }
        if s.read_buf(buf).await? == 0 {
            bail!("connection closed before a response head");
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len = match head_only {
        true => 0,
        false => headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .context("no content-length")?
            .1
            .parse::<usize>()
            .context("bad content-length")?,
    };
    buf.drain(..end + 4);
    while buf.len() < len {
        if s.read_buf(buf).await? == 0 {
            bail!("connection closed within a body");
        }
    }
    Ok(KeptAlive {
        status,
        headers,
        body: buf.drain(..len).collect(),
    })
}
