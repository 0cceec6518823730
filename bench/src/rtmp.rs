//! RTMP player built on the server crate's codecs: simple handshake, connect, createStream,
//! play, then media. Handles SetChunkSize, WindowAckSize (sending Acknowledgements when the
//! server's window is reached, or nginx-rtmp and NMS would stall us) and ping requests.

use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use ferrocast_server::codec::amf0::Amf0Value;
use ferrocast_server::codec::chunk::{ChunkDecoder, RawMessage, DEFAULT_CHUNK_SIZE};
use ferrocast_server::codec::handshake::{ClientHandshake, Progress};
use ferrocast_server::codec::message::{
    split_aggregate, Command, Message, UserControl, TYPE_AGGREGATE, TYPE_AUDIO, TYPE_COMMAND_AMF0, TYPE_COMMAND_AMF3,
    TYPE_SET_CHUNK_SIZE, TYPE_USER_CONTROL, TYPE_VIDEO, TYPE_WINDOW_ACK_SIZE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;

use crate::flv::is_video_keyframe;
use crate::player::READ_BUF;
use crate::stats::{PlayerStats, CONNECTED};
use crate::target::Target;

/// Limits for what the server may send us; generous, this is our own client.
const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
const MAX_MESSAGE_SIZE: u32 = 16 * 1024 * 1024;

const TID_CONNECT: f64 = 1.0;
const TID_CREATE_STREAM: f64 = 2.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    CreatingStream,
    Playing,
}

struct Player<'a> {
    target: &'a Target,
    stats: &'a PlayerStats,
    start: Instant,
    decoder: ChunkDecoder,
    out: BytesMut,
    phase: Phase,
    stream_id: u32,
    /// Bytes received (after the handshake) and when we last acknowledged.
    received: u64,
    acked: u64,
    /// The server's WindowAckSize; 0 until it sends one.
    window: u64,
}

pub async fn play(
    mut sock: TcpStream,
    target: &Target,
    stats: &PlayerStats,
    start: Instant,
    deadline: tokio::time::Instant,
) -> Result<()> {
    let mut input = BytesMut::with_capacity(READ_BUF);
    let mut out = BytesMut::with_capacity(4096);

    let mut handshake = ClientHandshake::new(false);
    handshake.start(&mut out);
    timeout_at(deadline, sock.write_all(&out))
        .await
        .context("handshake timed out")?
        .context("send C0+C1")?;
    out.clear();
    loop {
        let n = timeout_at(deadline, sock.read_buf(&mut input))
            .await
            .context("handshake timed out")?
            .context("read")?;
        if n == 0 {
            bail!("server closed the connection during the handshake");
        }
        stats.add_bytes(n);
        if handshake
            .process(&mut input, &mut out)
            .map_err(|e| anyhow!("handshake: {e}"))?
            == Progress::Done
        {
            break;
        }
    }

    let mut p = Player {
        target,
        stats,
        start,
        decoder: ChunkDecoder::new(MAX_CHUNK_SIZE, MAX_MESSAGE_SIZE),
        out,
        phase: Phase::Connecting,
        stream_id: 0,
        received: 0,
        acked: 0,
        window: 0,
    };
    p.send_command("connect", TID_CONNECT, connect_object(target), vec![], 0);

    loop {
        while let Some(raw) = p.decoder.decode(&mut input).map_err(|e| anyhow!("chunk stream: {e}"))? {
            p.on_message(raw)?;
        }
        if p.window > 0 && p.received - p.acked >= p.window {
            p.acked = p.received;
            Message::Acknowledgement(p.received as u32).encode(&mut p.out, 0, 0, DEFAULT_CHUNK_SIZE);
        }
        if !p.out.is_empty() {
            sock.write_all(&p.out).await.context("send")?;
            p.out.clear();
        }
        if input.capacity() - input.len() < READ_BUF / 2 {
            input.reserve(READ_BUF);
        }
        let n = if p.phase == Phase::Playing && stats.state() == CONNECTED {
            sock.read_buf(&mut input).await.context("read")?
        } else {
            timeout_at(deadline, sock.read_buf(&mut input))
                .await
                .context("play did not start in time")?
                .context("read")?
        };
        if n == 0 {
            bail!("server closed the RTMP connection");
        }
        stats.add_bytes(n);
        p.received += n as u64;
    }
}

fn connect_object(target: &Target) -> Amf0Value {
    Amf0Value::object([
        ("app", Amf0Value::from(target.app.as_str())),
        ("flashVer", "LNX 9,0,124,2".into()),
        ("tcUrl", target.tc_url.as_str().into()),
        ("fpad", false.into()),
        ("capabilities", 15.0.into()),
        ("audioCodecs", 4071.0.into()),
        ("videoCodecs", 252.0.into()),
        ("videoFunction", 1.0.into()),
    ])
}

impl Player<'_> {
    fn send_command(&mut self, name: &str, tid: f64, object: Amf0Value, args: Vec<Amf0Value>, stream_id: u32) {
        Message::Command(Command {
            name: name.to_string(),
            transaction_id: tid,
            object,
            args,
        })
        .encode(&mut self.out, 0, stream_id, DEFAULT_CHUNK_SIZE);
    }

    fn media(&self, type_id: u8, timestamp: u32, payload: &[u8]) {
        if payload.is_empty() {
            return;
        }
        self.stats.media(timestamp);
        if type_id == TYPE_VIDEO {
            self.stats.video_frame();
        }
        if type_id == TYPE_VIDEO && !self.stats.has_keyframe() && is_video_keyframe(payload[0], payload.get(1).copied())
        {
            self.stats.keyframe(self.start.elapsed());
        }
    }

    fn playing(&mut self) {
        self.phase = Phase::Playing;
        self.stats.set_state(CONNECTED);
    }

    fn on_message(&mut self, raw: RawMessage) -> Result<()> {
        match raw.type_id {
            // Media first: the hot path, no decoding beyond two bytes.
            TYPE_AUDIO | TYPE_VIDEO => {
                if self.phase == Phase::Playing && self.stats.state() != CONNECTED {
                    self.playing();
                }
                self.media(raw.type_id, raw.timestamp, &raw.payload);
            }
            TYPE_AGGREGATE => {
                for part in split_aggregate(&raw.payload, raw.timestamp) {
                    if part.type_id == TYPE_AUDIO || part.type_id == TYPE_VIDEO {
                        self.media(part.type_id, part.timestamp, &part.payload);
                    }
                }
            }
            TYPE_SET_CHUNK_SIZE | TYPE_WINDOW_ACK_SIZE | TYPE_USER_CONTROL | TYPE_COMMAND_AMF0 | TYPE_COMMAND_AMF3 => {
                match Message::decode(&raw).map_err(|e| anyhow!("bad message from server: {e}"))? {
                    Message::SetChunkSize(size) => self
                        .decoder
                        .set_chunk_size(size)
                        .map_err(|e| anyhow!("server chunk size: {e}"))?,
                    Message::WindowAckSize(size) => self.window = u64::from(size),
                    Message::UserControl(UserControl::PingRequest(t)) => Message::UserControl(
                        UserControl::PingResponse(t),
                    )
                    .encode(&mut self.out, 0, 0, DEFAULT_CHUNK_SIZE),
                    Message::Command(c) => self.on_command(c)?,
                    _ => {}
                }
            }
            // Metadata, SetPeerBandwidth, acknowledgements and the rest need no answer.
            _ => {}
        }
        Ok(())
    }

    fn on_command(&mut self, c: Command) -> Result<()> {
        match c.name.as_str() {
            "_result" if self.phase == Phase::Connecting && c.transaction_id == TID_CONNECT => {
                self.phase = Phase::CreatingStream;
                self.send_command("createStream", TID_CREATE_STREAM, Amf0Value::Null, vec![], 0);
            }
            "_result" if self.phase == Phase::CreatingStream && c.transaction_id == TID_CREATE_STREAM => {
                let id = c
                    .args
                    .first()
                    .and_then(Amf0Value::as_f64)
                    .context("createStream result without a stream id")?;
                self.stream_id = id as u32;
                self.phase = Phase::Playing;
                // Like ffmpeg: a buffer length, then play(name, start = -1000: live).
                Message::UserControl(UserControl::SetBufferLength {
                    stream_id: self.stream_id,
                    millis: 3000,
                })
                .encode(&mut self.out, 0, 0, DEFAULT_CHUNK_SIZE);
                let name = self.target.stream.clone();
                self.send_command(
                    "play",
                    0.0,
                    Amf0Value::Null,
                    vec![name.into(), (-1000.0).into()],
                    self.stream_id,
                );
            }
            "_error" => {
                let what = c
                    .args
                    .first()
                    .and_then(|a| a.get("description"))
                    .and_then(Amf0Value::as_str)
                    .unwrap_or("");
                bail!("server answered _error in phase {:?}: {what}", self.phase);
            }
            "onStatus" => {
                let info = c.args.first();
                let code = info
                    .and_then(|a| a.get("code"))
                    .and_then(Amf0Value::as_str)
                    .unwrap_or("");
                let level = info
                    .and_then(|a| a.get("level"))
                    .and_then(Amf0Value::as_str)
                    .unwrap_or("");
                match code {
                    "NetStream.Play.Start" | "NetStream.Play.Reset" if self.phase == Phase::Playing => self.playing(),
                    "NetStream.Play.Stop" | "NetStream.Play.Complete" => bail!("server stopped the stream ({code})"),
                    _ if level == "error" => bail!("play refused: {code}"),
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }
}
