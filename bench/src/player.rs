//! One simulated player per task: HTTP-FLV and WS-FLV here, RTMP in [`crate::rtmp`], HLS in
//! [`crate::hls`].
//!
//! Players parse only what the report needs (tag headers, timestamps, keyframe flags) and
//! skip payloads in place. A player never returns `Ok`: the stream runs until the benchmark
//! exits, so any end is a failure with a reason.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;

use crate::flv::{FlvParser, TagInfo, TAG_AUDIO, TAG_VIDEO};
use crate::http::{parse_response_head, ChunkedDecoder, ResponseHead, MAX_HEAD};
use crate::stats::{PlayerStats, CONNECTED};
use crate::target::{Protocol, Target};
use crate::ws::{client_frame, Control, WsDecoder, OP_PONG};

/// Socket read size. Big enough that a player that fell behind catches up in few reads.
pub const READ_BUF: usize = 32 * 1024;

/// Runs one player until it fails. `deadline`: by when the server must have accepted it.
pub async fn run(target: &Target, stats: &PlayerStats, index: usize, deadline: tokio::time::Instant) -> Result<()> {
    let start = Instant::now();
    if matches!(target.protocol, Protocol::Hls | Protocol::LlHls) {
        let ll = target.protocol == Protocol::LlHls;
        return timeout_at(
            deadline + std::time::Duration::from_secs(86_400),
            crate::hls::play(target, stats, start, ll),
        )
        .await
        .context("HLS player")?;
    }
    let sock = timeout_at(deadline, TcpStream::connect(target.addr))
        .await
        .context("connect timed out")?
        .context("connect")?;
    sock.set_nodelay(true).ok();
    match target.protocol {
        Protocol::Rtmp => crate::rtmp::play(sock, target, stats, start, deadline).await,
        Protocol::HttpFlv => http_flv(sock, target, stats, start, deadline).await,
        Protocol::WsFlv => ws_flv(sock, target, stats, start, deadline, index).await,
        Protocol::Hls | Protocol::LlHls => unreachable!("handled above"),
    }
}

/// What every FLV-carrying player does with a tag.
#[inline]
pub fn on_tag(stats: &PlayerStats, start: Instant, tag: TagInfo) {
    if tag.tag_type == TAG_AUDIO || tag.tag_type == TAG_VIDEO {
        stats.media(tag.timestamp);
        if tag.tag_type == TAG_VIDEO {
            stats.video_frame();
        }
        if tag.keyframe && !stats.has_keyframe() {
            stats.keyframe(start.elapsed());
        }
    }
}

/// Sends `request` and reads the response head. Returns the head, the read buffer and how
/// many bytes of it are filled (the body starts at `head.len`).
async fn request(
    sock: &mut TcpStream,
    request: &[u8],
    stats: &PlayerStats,
    deadline: tokio::time::Instant,
) -> Result<(ResponseHead, Vec<u8>, usize)> {
    timeout_at(deadline, sock.write_all(request))
        .await
        .context("request timed out")?
        .context("send request")?;
    let mut buf = vec![0u8; READ_BUF.max(MAX_HEAD + 1)];
    let mut filled = 0;
    loop {
        let n = timeout_at(deadline, sock.read(&mut buf[filled..]))
            .await
            .context("no HTTP response in time")?
            .context("read response")?;
        if n == 0 {
            bail!("server closed the connection before answering");
        }
        stats.add_bytes(n);
        filled += n;
        if let Some(head) = parse_response_head(&buf[..filled])? {
            return Ok((head, buf, filled));
        }
    }
}

async fn http_flv(
    mut sock: TcpStream,
    target: &Target,
    stats: &PlayerStats,
    start: Instant,
    deadline: tokio::time::Instant,
) -> Result<()> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferrocast-bench\r\nAccept: */*\r\n\r\n",
        target.path, target.authority
    );
    let (head, mut buf, filled) = request(&mut sock, req.as_bytes(), stats, deadline).await?;
    if head.status != 200 {
        bail!("HTTP status {}", head.status);
    }
    stats.set_state(CONNECTED);
    let mut flv = FlvParser::new();
    let mut chunked = head.chunked.then(ChunkedDecoder::new);
    let mut body = |data: &[u8], flv: &mut FlvParser| -> Result<()> {
        match chunked.as_mut() {
            Some(dec) => {
                dec.feed(data, |b| flv.feed(b, |t| on_tag(stats, start, t)).map_err(Into::into))?;
                if dec.is_done() {
                    bail!("HTTP response ended (last chunk)");
                }
                Ok(())
            }
            None => flv.feed(data, |t| on_tag(stats, start, t)).map_err(Into::into),
        }
    };
    body(&buf[head.len..filled], &mut flv)?;
    loop {
        let n = sock.read(&mut buf).await.context("read")?;
        if n == 0 {
            bail!("server closed the HTTP-FLV stream");
        }
        stats.add_bytes(n);
        body(&buf[..n], &mut flv)?;
    }
}

async fn ws_flv(
    mut sock: TcpStream,
    target: &Target,
    stats: &PlayerStats,
    start: Instant,
    deadline: tokio::time::Instant,
    index: usize,
) -> Result<()> {
    // Any 16 bytes will do for the key; make them differ per player.
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&(index as u64).to_be_bytes());
    nonce[8..].copy_from_slice(&(start.elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15).to_be_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferrocast-bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.path, target.authority
    );
    let (head, mut buf, filled) = request(&mut sock, req.as_bytes(), stats, deadline).await?;
    if head.status != 101 {
        bail!("WebSocket upgrade refused: HTTP status {}", head.status);
    }
    stats.set_state(CONNECTED);
    let mut flv = FlvParser::new();
    let mut ws = WsDecoder::new();
    let mut range = head.len..filled;
    loop {
        let controls = ws.feed(&buf[range], |b| {
            flv.feed(b, |t| on_tag(stats, start, t)).map_err(Into::into)
        })?;
        for c in controls {
            match c {
                Control::Ping(payload) => sock
                    .write_all(&client_frame(OP_PONG, &payload))
                    .await
                    .context("send pong")?,
                Control::Pong => {}
                Control::Close => bail!("server closed the WebSocket"),
            }
        }
        let n = sock.read(&mut buf).await.context("read")?;
        if n == 0 {
            bail!("server closed the WS-FLV connection");
        }
        stats.add_bytes(n);
        range = 0..n;
    }
}
