//! One simulated publisher per task: RTMP (handshake, connect, createStream, publish), FLV
//! over an HTTP POST (chunked, `Expect: 100-continue`) or over a WebSocket (subprotocol
//! `publisher`), then the clip replayed in real time from the shared encodings of
//! [`crate::clip`]: each message written when its timestamp is due (or, with a send
//! interval, the messages due within it in one write). A publisher never returns `Ok`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use ferrocast_server::codec::amf0::Amf0Value;
use ferrocast_server::codec::chunk::{ChunkDecoder, RawMessage, DEFAULT_CHUNK_SIZE};
use ferrocast_server::codec::handshake::{ClientHandshake, Progress};
use ferrocast_server::codec::message::{Command, Message, UserControl};
use ferrocast_server::net::write_all_bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::clip::{http_chunk, ws_frame, Clip, Wire, RTMP_CHUNK_SIZE};
use crate::http::parse_response_head;
use crate::stats::{Snapshot, CONNECTED};
use crate::target::{Protocol, Target};
use crate::ws::{client_frame, Control, WsDecoder, OP_PONG};

/// The server refused the publish (onStatus error, HTTP error status).
pub const REFUSED: u8 = 3;
/// Publishing, then the connection ended or broke.
pub const DROPPED: u8 = 4;
/// Connecting failed (refused connection, timeout, protocol error before an answer).
pub const FAILED: u8 = crate::stats::FAILED;

/// Counters of one publisher, written by its task only.
#[derive(Debug, Default)]
pub struct PublisherStats {
    state: AtomicU8,
    /// Bytes written to the socket.
    bytes: AtomicU64,
    /// Timestamp (ms) of the latest media message written.
    sent_ts: AtomicU32,
    has_sent: AtomicBool,
    /// Microseconds from connect start to the server's acceptance, plus one (0 = not yet).
    accept_us: AtomicU64,
    /// Our end's port (the connection's identity in /proc/net/tcp), 0 until connected.
    local_port: AtomicU32,
}

impl PublisherStats {
    pub fn set_state(&self, s: u8) {
        self.state.store(s, Relaxed);
    }

    pub fn state(&self) -> u8 {
        self.state.load(Relaxed)
    }

    fn sent(&self, bytes: usize, timestamp: Option<u32>) {
        self.bytes.store(self.bytes.load(Relaxed) + bytes as u64, Relaxed);
        if let Some(ts) = timestamp {
            self.sent_ts.store(ts, Relaxed);
            self.has_sent.store(true, Relaxed);
        }
    }

    fn accepted(&self, since_start: Duration) {
        self.accept_us.store(since_start.as_micros() as u64 + 1, Relaxed);
        self.set_state(CONNECTED);
    }

    pub fn accept_ms(&self) -> Option<f64> {
        match self.accept_us.load(Relaxed) {
            0 => None,
            us => Some((us - 1) as f64 / 1000.0),
        }
    }

    pub fn local_port(&self) -> u16 {
        self.local_port.load(Relaxed) as u16
    }

    /// As a player snapshot: media timestamp = the latest one sent.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            media_ts: self.has_sent.load(Relaxed).then(|| self.sent_ts.load(Relaxed)),
            video_frames: 0,
            stalls: 0,
        }
    }
}

/// How a publisher ended: refused by the server, or any other failure.
#[derive(Debug)]
pub enum End {
    Refused(String),
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for End {
    fn from(e: E) -> Self {
        End::Failed(e.into())
    }
}

/// What every publisher shares.
pub struct Shared {
    pub clip: Clip,
    /// Messages due within this long are written together (0: each when it is due).
    pub send_interval: Duration,
}

/// Runs one publisher of `target` until it fails. `deadline`: by when the server must have
/// accepted it.
pub async fn run(target: &Target, shared: &Shared, stats: &PublisherStats, deadline: Instant) -> Result<(), End> {
    let start = Instant::now();
    let sock = timeout_at(deadline, TcpStream::connect(target.addr))
        .await
        .context("connect timed out")?
        .context("connect")?;
    sock.set_nodelay(true).ok();
    if let Ok(a) = sock.local_addr() {
        stats.local_port.store(u32::from(a.port()), Relaxed);
    }
    let (rd, wr) = sock.into_split();
    let mut io = Io {
        rd,
        wr,
        input: BytesMut::with_capacity(4096),
    };
    match target.protocol {
        Protocol::Rtmp => rtmp(&mut io, target, shared, stats, start, deadline).await,
        Protocol::HttpFlv => http_post(&mut io, target, shared, stats, start, deadline).await,
        Protocol::WsFlv => ws(&mut io, target, shared, stats, start, deadline).await,
        Protocol::Hls | Protocol::LlHls => Err(End::Failed(anyhow!("HLS is not an ingest protocol"))),
    }
}

struct Io {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    input: BytesMut,
}

impl Io {
    /// Reads more input; an end of stream is an error.
    async fn read(&mut self) -> Result<()> {
        if self.input.capacity() - self.input.len() < 1024 {
            self.input.reserve(4096);
        }
        if self.rd.read_buf(&mut self.input).await.context("read")? == 0 {
            bail!("server closed the connection");
        }
        Ok(())
    }

    async fn read_by(&mut self, deadline: Instant, what: &str) -> Result<()> {
        timeout_at(deadline, self.read())
            .await
            .map_err(|_| anyhow!("{what}: no answer in time"))?
    }
}

/// What the replay loop does with bytes the server sends while we publish.
trait Inbound {
    /// Handles buffered input; `Err` ends the publisher (the server ended or refused it).
    /// Replies go to `out`.
    fn on_input(&mut self, input: &mut BytesMut, out: &mut Vec<Bytes>) -> Result<()>;
}

/// Writes the clip's head, then its media in real time, until the connection ends.
async fn replay(
    io: &mut Io,
    wire: Wire,
    first: Vec<Bytes>,
    shared: &Shared,
    stats: &PublisherStats,
    inbound: &mut impl Inbound,
) -> Result<()> {
    let clip = &shared.clip;
    let mut batch = first;
    batch.extend(clip.head(wire));
    let n: usize = batch.iter().map(Bytes::len).sum();
    write_all_bytes(&mut io.wr, &mut batch).await.context("send")?;
    stats.sent(n, None);

    let t0 = Instant::now();
    let ahead = shared.send_interval.as_millis() as u64;
    let (mut lap, mut items, mut next) = (0, clip.media(wire, 0), 0);
    let sleep = tokio::time::sleep_until(t0);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            read = io.rd.read_buf(&mut io.input) => {
                if read.context("read")? == 0 {
                    bail!("server closed the connection");
                }
                inbound.on_input(&mut io.input, &mut batch)?;
                if !batch.is_empty() {
                    write_all_bytes(&mut io.wr, &mut batch).await.context("send")?;
                }
                if io.input.capacity() - io.input.len() < 1024 {
                    io.input.reserve(4096);
                }
            }
            _ = &mut sleep => {
                let horizon = t0.elapsed().as_millis() as u64 + ahead;
                let (mut bytes, mut ts) = (0, None);
                while items[next].due_ms <= horizon {
                    bytes += items[next].bytes.len();
                    ts = Some(items[next].timestamp);
                    batch.push(items[next].bytes.clone());
                    next += 1;
                    if next == items.len() {
                        lap += 1;
                        items = clip.media(wire, lap);
                        next = 0;
                    }
                }
                write_all_bytes(&mut io.wr, &mut batch).await.context("send")?;
                stats.sent(bytes, ts);
                sleep.as_mut().reset(t0 + Duration::from_millis(items[next].due_ms));
            }
        }
    }
}

// --- RTMP ------------------------------------------------------------------------------------

const TID_CONNECT: f64 = 1.0;
const TID_CREATE_STREAM: f64 = 4.0;

struct RtmpIn {
    decoder: ChunkDecoder,
    /// Our output chunk size (after our SetChunkSize).
    chunk_size: u32,
}

impl RtmpIn {
    fn command(&self, name: &str, tid: f64, object: Amf0Value, args: Vec<Amf0Value>, stream_id: u32) -> Bytes {
        let mut out = BytesMut::new();
        Message::Command(Command {
            name: name.into(),
            transaction_id: tid,
            object,
            args,
        })
        .encode(&mut out, 0, stream_id, self.chunk_size);
        out.freeze()
    }

    /// Protocol control: chunk size, pings. Returns commands for the caller.
    fn control(&mut self, raw: &RawMessage, out: &mut Vec<Bytes>) -> Result<Option<Command>> {
        match Message::decode(raw) {
            Ok(Message::SetChunkSize(size)) => self
                .decoder
                .set_chunk_size(size)
                .map_err(|e| anyhow!("server chunk size: {e}"))?,
            Ok(Message::UserControl(UserControl::PingRequest(t))) => {
                let mut b = BytesMut::new();
                Message::UserControl(UserControl::PingResponse(t)).encode(&mut b, 0, 0, self.chunk_size);
                out.push(b.freeze());
            }
            Ok(Message::Command(c)) => return Ok(Some(c)),
            Ok(_) => {}
            Err(e) => bail!("bad message from server: {e}"),
        }
        Ok(None)
    }
}

/// The `code` and `level` of an onStatus / _error info object.
fn status(c: &Command) -> (String, String) {
    let info = c.args.first();
    let field = |k| {
        info.and_then(|a| a.get(k))
            .and_then(Amf0Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (field("code"), field("level"))
}

impl Inbound for RtmpIn {
    fn on_input(&mut self, input: &mut BytesMut, out: &mut Vec<Bytes>) -> Result<()> {
        while let Some(raw) = self.decoder.decode(input).map_err(|e| anyhow!("chunk stream: {e}"))? {
            if let Some(c) = self.control(&raw, out)? {
                let (code, level) = status(&c);
                if c.name == "_error" || level == "error" || code == "NetStream.Unpublish.Success" {
                    bail!("server ended the publish: {} {code}", c.name);
                }
            }
        }
        Ok(())
    }
}

async fn rtmp(
    io: &mut Io,
    target: &Target,
    shared: &Shared,
    stats: &PublisherStats,
    start: Instant,
    deadline: Instant,
) -> Result<(), End> {
    let mut out = BytesMut::with_capacity(4096);
    let mut handshake = ClientHandshake::new(false);
    handshake.start(&mut out);
    io.wr.write_all(&out).await.context("send C0+C1")?;
    out.clear();
    loop {
        io.read_by(deadline, "handshake").await?;
        if handshake
            .process(&mut io.input, &mut out)
            .map_err(|e| anyhow!("handshake: {e}"))?
            == Progress::Done
        {
            break;
        }
    }
    let mut rin = RtmpIn {
        decoder: ChunkDecoder::new(16 << 20, 16 << 20),
        chunk_size: DEFAULT_CHUNK_SIZE,
    };
    // Like OBS and ffmpeg: our chunk size first, then connect.
    Message::SetChunkSize(RTMP_CHUNK_SIZE).encode(&mut out, 0, 0, DEFAULT_CHUNK_SIZE);
    rin.chunk_size = RTMP_CHUNK_SIZE;
    let connect = Amf0Value::object([
        ("app", Amf0Value::from(target.app.as_str())),
        ("type", "nonprivate".into()),
        ("flashVer", "FMLE/3.0 (compatible; ferrocast-bench)".into()),
        ("tcUrl", target.tc_url.as_str().into()),
    ]);
    out.extend_from_slice(&rin.command("connect", TID_CONNECT, connect, vec![], 0));
    io.wr.write_all(&out).await.context("send connect")?;
    drop(out);

    let name = target.stream.clone();
    let mut replies = Vec::new();
    loop {
        io.read_by(deadline, "publish").await?;
        while let Some(raw) = rin
            .decoder
            .decode(&mut io.input)
            .map_err(|e| anyhow!("chunk stream: {e}"))?
        {
            let Some(c) = rin.control(&raw, &mut replies)? else {
                continue;
            };
            let (code, level) = status(&c);
            match c.name.as_str() {
                "_result" if c.transaction_id == TID_CONNECT => {
                    for (cmd, tid) in [("releaseStream", 2.0), ("FCPublish", 3.0)] {
                        replies.push(rin.command(cmd, tid, Amf0Value::Null, vec![name.as_str().into()], 0));
                    }
                    replies.push(rin.command("createStream", TID_CREATE_STREAM, Amf0Value::Null, vec![], 0));
                }
                "_result" if c.transaction_id == TID_CREATE_STREAM => {
                    let id = c.args.first().and_then(Amf0Value::as_f64).unwrap_or(0.0);
                    if id != 1.0 {
                        return Err(End::Failed(anyhow!(
                            "createStream gave stream id {id}; the bench publishes on 1"
                        )));
                    }
                    let args = vec![name.as_str().into(), "live".into()];
                    replies.push(rin.command("publish", 5.0, Amf0Value::Null, args, 1));
                }
                "onStatus" if code == "NetStream.Publish.Start" => {
                    stats.accepted(start.elapsed());
                    write_all_bytes(&mut io.wr, &mut replies).await.context("send")?;
                    return match replay(io, Wire::Rtmp, Vec::new(), shared, stats, &mut rin).await {
                        Err(e) => Err(End::Failed(e)),
                        Ok(()) => unreachable!("replay never ends well"),
                    };
                }
                "_error" if c.transaction_id == TID_CONNECT => return Err(End::Refused(format!("connect: {code}"))),
                "_error" => {}
                "onStatus" if level == "error" => return Err(End::Refused(code)),
                _ => {}
            }
        }
        if !replies.is_empty() {
            write_all_bytes(&mut io.wr, &mut replies).await.context("send")?;
        }
    }
}

// --- FLV over HTTP POST and WebSocket -----------------------------------------------------------

struct HttpIn;

impl Inbound for HttpIn {
    fn on_input(&mut self, input: &mut BytesMut, _: &mut Vec<Bytes>) -> Result<()> {
        match parse_response_head(input)? {
            Some(head) => bail!("server answered HTTP {} during the push", head.status),
            None => Ok(()),
        }
    }
}

async fn http_post(
    io: &mut Io,
    target: &Target,
    shared: &Shared,
    stats: &PublisherStats,
    start: Instant,
    deadline: Instant,
) -> Result<(), End> {
    // `Expect: 100-continue`: the server says "go on" when it starts reading the body, that
    // is once it accepted the publish; a refusal comes as the final status instead.
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferrocast-bench\r\nContent-Type: video/x-flv\r\n\
         Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        target.path, target.authority
    );
    io.wr.write_all(req.as_bytes()).await.context("send request")?;
    let head = loop {
        io.read_by(deadline, "POST").await?;
        if let Some(h) = parse_response_head(&io.input)? {
            break h;
        }
    };
    if head.status != 100 {
        return Err(End::Refused(format!("HTTP {}", head.status)));
    }
    let _ = io.input.split_to(head.len);
    stats.accepted(start.elapsed());
    let first = vec![http_chunk(&flv_header(&shared.clip))];
    Err(End::Failed(
        replay(io, Wire::HttpChunked, first, shared, stats, &mut HttpIn)
            .await
            .err()
            .unwrap_or_else(|| anyhow!("push ended")),
    ))
}

struct WsIn(WsDecoder);

impl Inbound for WsIn {
    fn on_input(&mut self, input: &mut BytesMut, out: &mut Vec<Bytes>) -> Result<()> {
        let controls = self.0.feed(input, |_| Ok(()))?;
        input.clear();
        for c in controls {
            match c {
                Control::Ping(p) => out.push(Bytes::from(client_frame(OP_PONG, &p))),
                Control::Pong => {}
                Control::Close => bail!("server closed the WebSocket"),
            }
        }
        Ok(())
    }
}

async fn ws(
    io: &mut Io,
    target: &Target,
    shared: &Shared,
    stats: &PublisherStats,
    start: Instant,
    deadline: Instant,
) -> Result<(), End> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferrocast-bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: ZmVycm9jYXN0LWJlbmNoLTE=\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: publisher\r\n\r\n",
        target.path, target.authority
    );
    io.wr.write_all(req.as_bytes()).await.context("send request")?;
    let head = loop {
        io.read_by(deadline, "WebSocket upgrade").await?;
        if let Some(h) = parse_response_head(&io.input)? {
            break h;
        }
    };
    if head.status != 101 {
        return Err(End::Refused(format!("HTTP {}", head.status)));
    }
    let _ = io.input.split_to(head.len);
    stats.accepted(start.elapsed());
    let first = vec![ws_frame(&flv_header(&shared.clip))];
    let mut inbound = WsIn(WsDecoder::new());
    Err(End::Failed(
        replay(io, Wire::WsFrames, first, shared, stats, &mut inbound)
            .await
            .err()
            .unwrap_or_else(|| anyhow!("push ended")),
    ))
}

fn flv_header(clip: &Clip) -> Vec<u8> {
    ferrocast_server::codec::flv::header(clip.has_audio, clip.has_video).to_vec()
}

/// `url` with `index` appended to its stream name (before `.flv` and any query).
pub fn indexed_url(url: &str, index: usize) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut s = match base.strip_suffix(".flv") {
        Some(stem) => format!("{stem}{index}.flv"),
        None => format!("{base}{index}"),
    };
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_get_the_index() {
        let cases = [
            ("rtmp://127.0.0.1/live/pub", 7, "rtmp://127.0.0.1/live/pub7"),
            (
                "http://127.0.0.1:8000/live/s.flv",
                0,
                "http://127.0.0.1:8000/live/s0.flv",
            ),
            (
                "ws://127.0.0.1:8000/live/s.flv?k=v",
                12,
                "ws://127.0.0.1:8000/live/s12.flv?k=v",
            ),
            (
                "rtmp://127.0.0.1/live/s?sign=1-ab",
                3,
                "rtmp://127.0.0.1/live/s3?sign=1-ab",
            ),
        ];
        for (url, i, want) in cases {
            assert_eq!(indexed_url(url, i), want);
        }
    }
}
