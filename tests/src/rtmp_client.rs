//! A small RTMP client built on the server crate's codecs (simple handshake, connect,
//! createStream, then publish or play), for streams no ffmpeg sends: e.g. legacy HEVC with
//! FLV codec id 12, published tag by tag and read back byte for byte.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use ferrocast_server::codec::amf0::Amf0Value;
use ferrocast_server::codec::chunk::{ChunkDecoder, RawMessage, DEFAULT_CHUNK_SIZE};
use ferrocast_server::codec::handshake::{ClientHandshake, Progress};
use ferrocast_server::codec::message::{
    split_aggregate, Command, Message, UserControl, TYPE_AGGREGATE, TYPE_AUDIO, TYPE_DATA_AMF0, TYPE_DATA_AMF3,
    TYPE_VIDEO,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Our outgoing chunk size (announced with SetChunkSize right after the handshake).
const OUT_CHUNK_SIZE: u32 = 60_000;
const MAX_IN: u32 = 16 * 1024 * 1024;
/// Every step of the conversation must complete within this.
const STEP: Duration = Duration::from_secs(10);

/// One audio, video or data message received while playing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// RTMP message type (8 audio, 9 video, 18 data).
    pub type_id: u8,
    pub timestamp: u32,
    pub payload: Bytes,
}

/// A connected RTMP client (after `connect` was answered).
pub struct RtmpClient {
    sock: TcpStream,
    decoder: ChunkDecoder,
    input: BytesMut,
    out: BytesMut,
    stream_id: u32,
    next_tid: f64,
    /// Bytes received, last acknowledged count, the server's window (0: none announced).
    received: u64,
    acked: u64,
    window: u64,
    /// Media that arrived while waiting for a command answer.
    queued: VecDeque<Media>,
    app: String,
}

impl std::fmt::Debug for RtmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpClient")
            .field("app", &self.app)
            .field("stream_id", &self.stream_id)
            .field("received", &self.received)
            .finish()
    }
}

impl RtmpClient {
    /// TCP connect to 127.0.0.1:`port`, simple handshake, SetChunkSize, `connect` to `app`.
    pub async fn connect(port: u16, app: &str) -> Result<RtmpClient> {
        let mut sock = crate::rtmp_raw::connect(port).await?;
        let mut hs = ClientHandshake::new(false);
        let mut out = BytesMut::new();
        let mut input = BytesMut::with_capacity(64 * 1024);
        hs.start(&mut out);
        sock.write_all(&out).await.context("sending C0+C1")?;
        out.clear();
        let deadline = Instant::now() + STEP;
        loop {
            let n = tokio::time::timeout_at(deadline, sock.read_buf(&mut input))
                .await
                .map_err(|_| anyhow!("RTMP handshake did not complete within {STEP:?}"))??;
            if n == 0 {
                bail!("server closed the connection during the handshake");
            }
            if hs
                .process(&mut input, &mut out)
                .map_err(|e| anyhow!("handshake: {e}"))?
                == Progress::Done
            {
                break;
            }
        }
        let mut c = RtmpClient {
            sock,
            decoder: ChunkDecoder::new(MAX_IN, MAX_IN),
            input,
            out,
            stream_id: 0,
            next_tid: 1.0,
            received: 0,
            acked: 0,
            window: 0,
            queued: VecDeque::new(),
            app: app.to_string(),
        };
        Message::SetChunkSize(OUT_CHUNK_SIZE).encode(&mut c.out, 0, 0, DEFAULT_CHUNK_SIZE);
        let tc_url = format!("rtmp://127.0.0.1:{port}/{app}");
        let object = Amf0Value::object([
            ("app", Amf0Value::from(app)),
            ("type", "nonprivate".into()),
            ("flashVer", "FMLE/3.0 (compatible; ferrocast-tests)".into()),
            ("tcUrl", tc_url.as_str().into()),
        ]);
        let answer = c.call("connect", object, vec![], 0).await?;
        if answer.name != "_result" {
            bail!("connect answered {}: {:?}", answer.name, answer.args);
        }
        Ok(c)
    }

    /// createStream, then `publish(name, "live")`; returns once NetStream.Publish.Start arrives.
    pub async fn publish(&mut self, name: &str) -> Result<()> {
        self.create_stream().await?;
        let stream_id = self.stream_id;
        self.send_command("publish", 0.0, vec![name.into(), "live".into()], stream_id);
        self.flush().await?;
        self.wait_status("NetStream.Publish.Start").await
    }

    /// createStream, then `play(name, -1000)`; returns once NetStream.Play.Start arrives.
    pub async fn play(&mut self, name: &str) -> Result<()> {
        self.create_stream().await?;
        let stream_id = self.stream_id;
        Message::UserControl(UserControl::SetBufferLength {
            stream_id,
            millis: 1000,
        })
        .encode(&mut self.out, 0, 0, OUT_CHUNK_SIZE);
        self.send_command("play", 0.0, vec![name.into(), (-1000.0).into()], stream_id);
        self.flush().await?;
        self.wait_status("NetStream.Play.Start").await
    }

    /// Sends `@setDataFrame onMetaData {props}` on the publishing stream.
    pub async fn send_metadata(&mut self, props: Vec<(&str, Amf0Value)>) -> Result<()> {
        Message::Data(vec![
            "@setDataFrame".into(),
            "onMetaData".into(),
            Amf0Value::EcmaArray(props.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        ])
        .encode(&mut self.out, 0, self.stream_id, OUT_CHUNK_SIZE);
        self.flush().await
    }

    /// Sends one audio (8) or video (9) message body on the publishing stream.
    pub async fn send_media(&mut self, type_id: u8, timestamp: u32, payload: Bytes) -> Result<()> {
        let msg = match type_id {
            TYPE_AUDIO => Message::Audio(payload),
            TYPE_VIDEO => Message::Video(payload),
            other => bail!("not a media message type: {other}"),
        };
        msg.encode(&mut self.out, timestamp, self.stream_id, OUT_CHUNK_SIZE);
        self.flush().await
    }

    /// FCUnpublish / deleteStream, as ffmpeg does when it stops publishing.
    pub async fn unpublish(&mut self) -> Result<()> {
        let stream_id = self.stream_id;
        self.send_command("deleteStream", 0.0, vec![f64::from(stream_id).into()], 0);
        self.flush().await
    }

    /// The next audio, video or data message while playing (aggregates split); `Ok(None)`
    /// when the server closed the connection. Errors when nothing arrives within `within`.
    pub async fn next_media(&mut self, within: Duration) -> Result<Option<Media>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(m) = self.queued.pop_front() {
                return Ok(Some(m));
            }
            match self.read_message(deadline).await? {
                None => return Ok(None),
                Some(raw) => {
                    if let Some(cmd) = self.handle(raw)? {
                        if cmd.name == "onStatus" {
                            let code = status_code(&cmd);
                            if code.contains("Failed") || code.contains("Error") {
                                bail!("server sent onStatus {code} while playing");
                            }
                        }
                    }
                }
            }
        }
    }

    async fn create_stream(&mut self) -> Result<()> {
        let answer = self.call("createStream", Amf0Value::Null, vec![], 0).await?;
        let id = answer
            .args
            .first()
            .and_then(Amf0Value::as_f64)
            .with_context(|| format!("createStream answered {} {:?}", answer.name, answer.args))?;
        self.stream_id = id as u32;
        Ok(())
    }

    fn send_command(&mut self, name: &str, tid: f64, args: Vec<Amf0Value>, stream_id: u32) {
        Message::Command(Command {
            name: name.to_string(),
            transaction_id: tid,
            object: Amf0Value::Null,
            args,
        })
        .encode(&mut self.out, 0, stream_id, OUT_CHUNK_SIZE);
    }

    /// Sends a command with a fresh transaction id and waits for its `_result` / `_error`.
    async fn call(&mut self, name: &str, object: Amf0Value, args: Vec<Amf0Value>, stream_id: u32) -> Result<Command> {
        let tid = self.next_tid;
        self.next_tid += 1.0;
        Message::Command(Command {
            name: name.to_string(),
            transaction_id: tid,
            object,
            args,
        })
        .encode(&mut self.out, 0, stream_id, OUT_CHUNK_SIZE);
        self.flush().await?;
        let deadline = Instant::now() + STEP;
        loop {
            let raw = self
                .read_message(deadline)
                .await?
                .with_context(|| format!("server closed the connection before answering {name}"))?;
            if let Some(cmd) = self.handle(raw)? {
                if matches!(cmd.name.as_str(), "_result" | "_error") && cmd.transaction_id == tid {
                    return Ok(cmd);
                }
            }
        }
    }

    async fn wait_status(&mut self, want: &str) -> Result<()> {
        let deadline = Instant::now() + STEP;
        loop {
            let raw = self
                .read_message(deadline)
                .await?
                .with_context(|| format!("server closed the connection before {want}"))?;
            if let Some(cmd) = self.handle(raw)? {
                if cmd.name == "onStatus" {
                    let code = status_code(&cmd);
                    if code == want {
                        return Ok(());
                    }
                    let level = cmd
                        .args
                        .first()
                        .and_then(|a| a.get("level"))
                        .and_then(Amf0Value::as_str)
                        .unwrap_or_default();
                    if level == "error" {
                        bail!(
                            "server answered onStatus {code} (level error) instead of {want}: {:?}",
                            cmd.args
                        );
                    }
                } else if cmd.name == "_error" {
                    bail!("server answered _error instead of {want}: {:?}", cmd.args);
                }
            }
        }
    }

    /// Handles protocol control; queues media; returns commands.
    fn handle(&mut self, raw: RawMessage) -> Result<Option<Command>> {
        match raw.type_id {
            TYPE_AUDIO | TYPE_VIDEO | TYPE_DATA_AMF0 | TYPE_DATA_AMF3 => {
                self.queued.push_back(Media {
                    type_id: raw.type_id,
                    timestamp: raw.timestamp,
                    payload: raw.payload,
                });
                return Ok(None);
            }
            TYPE_AGGREGATE => {
                for part in split_aggregate(&raw.payload, raw.timestamp) {
                    self.queued.push_back(Media {
                        type_id: part.type_id,
                        timestamp: part.timestamp,
                        payload: part.payload,
                    });
                }
                return Ok(None);
            }
            _ => {}
        }
        match Message::decode(&raw).map_err(|e| anyhow!("bad message from the server: {e}"))? {
            Message::SetChunkSize(n) => self
                .decoder
                .set_chunk_size(n)
                .map_err(|e| anyhow!("server chunk size {n}: {e}"))?,
            Message::WindowAckSize(n) => self.window = u64::from(n),
            Message::UserControl(UserControl::PingRequest(t)) => {
                Message::UserControl(UserControl::PingResponse(t)).encode(&mut self.out, 0, 0, OUT_CHUNK_SIZE)
            }
            Message::Command(c) => return Ok(Some(c)),
            _ => {}
        }
        Ok(None)
    }

    /// The next complete message, `Ok(None)` on EOF; acknowledges as the window requires.
    async fn read_message(&mut self, deadline: Instant) -> Result<Option<RawMessage>> {
        loop {
            if let Some(raw) = self
                .decoder
                .decode(&mut self.input)
                .map_err(|e| anyhow!("chunk stream from the server: {e}"))?
            {
                return Ok(Some(raw));
            }
            if self.window > 0 && self.received - self.acked >= self.window / 2 {
                self.acked = self.received;
                Message::Acknowledgement(self.received as u32).encode(&mut self.out, 0, 0, OUT_CHUNK_SIZE);
            }
            self.flush().await?;
            let n = match tokio::time::timeout_at(deadline, self.sock.read_buf(&mut self.input)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Ok(Err(e)) => return Err(e).context("reading from the server"),
                Err(_) => bail!(
                    "nothing from the RTMP server in time ({} bytes received so far)",
                    self.received
                ),
            };
            if n == 0 {
                return Ok(None);
            }
            self.received += n as u64;
        }
    }

    async fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            tokio::time::timeout(STEP, self.sock.write_all(&self.out))
                .await
                .map_err(|_| anyhow!("writing to the RTMP server blocked for {STEP:?}"))?
                .context("writing to the RTMP server")?;
            self.out.clear();
        }
        Ok(())
    }
}

fn status_code(cmd: &Command) -> String {
    cmd.args
        .first()
        .and_then(|a| a.get("code"))
        .and_then(Amf0Value::as_str)
        .unwrap_or_default()
        .to_string()
}
