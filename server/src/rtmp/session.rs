//! The sans-IO RTMP server session: bytes in, bytes out plus events.
//!
//! It runs the handshake, decodes chunks, answers protocol and command messages and turns
//! the rest into [`SessionEvent`]s. Requests that need a decision (connect, publish, play)
//! are raised as events and answered by the caller with `accept_*` / `reject_*`, which is
//! where access control and webhooks plug in. Media for players does not pass through
//! here: the connection writes the hub's pre-encoded chunks directly.
//!
//! Messages are handled strictly in order. Encoders pipeline: `publish`, `@setDataFrame`,
//! sequence headers and the first keyframe often arrive in one write, and commands follow
//! `connect` before its answer. So once a request is raised, decoding stops until the
//! caller answers it; what follows waits in the input buffer (bounded) and is decoded by
//! [`Session::poll_event`] afterwards, under the rules the answer set.
//!
//! Until a publish is accepted every message is held to [`MAX_COMMAND_MESSAGE_SIZE`]; only
//! an accepted publisher may send media messages up to `max_message_size`.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::codec::amf0::Amf0Value;
use crate::codec::chunk::{ChunkDecoder, ChunkError, DEFAULT_CHUNK_SIZE};
use crate::codec::handshake::{HandshakeError, Progress, ServerHandshake};
use crate::codec::message::{self, split_aggregate, Command, Message, MessageError, UserControl};

/// Window acknowledgement size and peer bandwidth we announce (Node-Media-Server's values).
const WINDOW_ACK_SIZE: u32 = 5_000_000;
/// A client may create this many message streams on one connection.
const MAX_STREAMS: u32 = 16;
/// Largest command message (and, before a publish is accepted, any message). The largest
/// real commands are enhanced-RTMP `connect`s with codec lists, under 2 KiB; 64 KiB leaves
/// room for long tokens in URLs while keeping what an unauthenticated peer can make us
/// buffer and decode small.
pub const MAX_COMMAND_MESSAGE_SIZE: u32 = 64 * 1024;
/// Most bytes a peer may have buffered with us while one of its requests awaits our
/// answer: enough for what encoders pipeline after `publish` (metadata, sequence headers,
/// a first keyframe). The connection stops reading while it decides, so this only bounds
/// a driver that keeps feeding.
pub const MAX_PIPELINED_INPUT: usize = 4 << 20;
/// How much the input buffer offers each socket read (see [`Session::input_buffer`]).
pub const READ_SIZE: usize = 16 * 1024;
/// Messages are slices of the input buffer (no copy) only while its allocation is at most
/// this big: a slice keeps the whole allocation alive for as long as a cache holds the frame,
/// so a peer must not be able to make a tiny frame pin a large buffer.
const SHARED_INPUT_MAX: usize = 4 * READ_SIZE;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("malformed message: {0}")]
    Message(#[from] MessageError),
    #[error("{0} before connect")]
    NotConnected(&'static str),
    #[error("peer sent over {MAX_PIPELINED_INPUT} bytes while a request awaited its answer")]
    TooMuchPipelined,
}

/// Settings a session needs from the server config.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub chunk_size: u32,
    pub max_peer_chunk_size: u32,
    /// Largest media or data message an accepted publisher may send.
    pub max_message_size: u32,
}

impl SessionConfig {
    fn command_message_limit(&self) -> u32 {
        MAX_COMMAND_MESSAGE_SIZE.min(self.max_message_size)
    }
}

/// What the peer asked in `connect`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConnectInfo {
    /// App path without any query string.
    pub app: String,
    /// Query string that came with the app (`live?token=...`), without the `?`.
    pub query: String,
    pub tc_url: String,
    pub flash_ver: String,
    pub object_encoding: f64,
    /// The client announced enhanced RTMP (fourCcList, FourCC info maps or capsEx).
    pub enhanced: bool,
    /// The client's enhanced-RTMP v2 extended capabilities (`capsEx`).
    pub caps_ex: u32,
    /// Relay hop path a relay client sent (`ferrocastVia`; see `relay::hop`), empty otherwise.
    pub via: String,
}

/// Enhanced-RTMP v2 `capsEx` bit: the peer handles multitrack packets.
pub const CAPS_EX_MULTITRACK: u32 = 0x02;
/// Enhanced-RTMP v2 `capsEx` bit: the peer handles ModEx packets.
pub const CAPS_EX_MODEX: u32 = 0x04;
/// `FourCcInfoMask` CanForward: we relay these codecs untouched (we decode none).
const FOURCC_CAN_FORWARD: f64 = 4.0;
const VIDEO_FOURCCS: &[&str] = &["avc1", "hvc1", "av01", "vp09", "vp08"];
const AUDIO_FOURCCS: &[&str] = &["mp4a", "Opus", "fLaC", "ac-3", "ec-3", ".mp3"];

impl ConnectInfo {
    pub fn wants_multitrack(&self) -> bool {
        self.caps_ex & CAPS_EX_MULTITRACK != 0
    }
}

/// A publish or play request.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRequest {
    pub stream_id: u32,
    /// Stream name without the query string.
    pub name: String,
    /// Query string of the stream name (`key?sign=...`), without the `?`.
    pub query: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// Answer with [`Session::accept_connect`] or [`Session::reject_connect`].
    ConnectRequested(ConnectInfo),
    /// Answer with [`Session::accept_publish`] or [`Session::reject_publish`].
    PublishRequested(StreamRequest),
    /// Answer with [`Session::accept_play`] or [`Session::reject_play`].
    PlayRequested(StreamRequest),
    Video {
        timestamp: u32,
        payload: Bytes,
    },
    Audio {
        timestamp: u32,
        payload: Bytes,
    },
    /// `@setDataFrame onMetaData` / `onMetaData`: the values after the name.
    Metadata(Vec<Amf0Value>),
    /// The publisher ended its stream (FCUnpublish, deleteStream or closeStream).
    Unpublished {
        stream_id: u32,
    },
    /// The player stopped (deleteStream, closeStream, play stop).
    PlayStopped {
        stream_id: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Chunks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    None,
    Publishing(u32),
    Playing(u32),
}

pub struct Session {
    config: SessionConfig,
    phase: Phase,
    handshake: ServerHandshake,
    decoder: ChunkDecoder,
    input: BytesMut,
    /// Size of the allocation `input` views (frames may hold slices of it).
    input_alloc: usize,
    output: BytesMut,
    events: VecDeque<SessionEvent>,
    connect: Option<ConnectInfo>,
    connected: bool,
    connect_txid: f64,
    next_stream_id: u32,
    role: Role,
    pending_request: Option<u32>,
    /// A connect, publish or play request was raised and not answered yet: decoding waits.
    awaiting_answer: bool,
    /// The chunk size our output uses: the RTMP default until we announce ours.
    out_chunk_size: u32,
    bytes_received: u64,
    last_ack: u64,
    peer_window: u32,
}

impl Session {
    pub fn new(config: SessionConfig) -> Self {
        Session {
            config,
            phase: Phase::Handshake,
            handshake: ServerHandshake::new(),
            decoder: ChunkDecoder::new(config.max_peer_chunk_size, config.command_message_limit()),
            input: BytesMut::with_capacity(READ_SIZE),
            input_alloc: READ_SIZE,
            output: BytesMut::with_capacity(8192),
            events: VecDeque::new(),
            connect: None,
            connected: false,
            connect_txid: 1.0,
            next_stream_id: 1,
            role: Role::None,
            pending_request: None,
            awaiting_answer: false,
            out_chunk_size: DEFAULT_CHUNK_SIZE,
            bytes_received: 0,
            last_ack: 0,
            peer_window: 0,
        }
    }

    pub fn handshake_done(&self) -> bool {
        self.phase == Phase::Chunks
    }

    pub fn used_complex_handshake(&self) -> bool {
        self.handshake.is_complex()
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn connect_info(&self) -> Option<&ConnectInfo> {
        self.connect.as_ref()
    }

    /// Bytes to send to the peer now.
    pub fn take_output(&mut self) -> Bytes {
        self.output.split().freeze()
    }

    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// The next event, decoding more of the buffered input when none is queued and no
    /// request awaits an answer.
    pub fn poll_event(&mut self) -> Result<Option<SessionEvent>, SessionError> {
        if self.events.is_empty() && !self.awaiting_answer {
            self.process()?;
        }
        Ok(self.events.pop_front())
    }

    /// Whether a connect, publish or play request awaits `accept_*` / `reject_*`.
    pub fn awaiting_answer(&self) -> bool {
        self.awaiting_answer
    }

    /// The buffer to read socket bytes into, with room for a read of about [`READ_SIZE`];
    /// call [`Session::process`] after filling it. Reading straight into it spares a copy of
    /// every byte a publisher sends.
    pub fn input_buffer(&mut self) -> &mut BytesMut {
        if self.input.capacity() - self.input.len() < READ_SIZE / 4 {
            // Frames may still hold slices of the allocation: it is reused once they are all
            // gone, otherwise the rest moves to a fresh allocation of a known size.
            if !self.input.try_reclaim(READ_SIZE) {
                let mut fresh = BytesMut::with_capacity(self.input.len() + READ_SIZE);
                fresh.extend_from_slice(&self.input);
                self.input = fresh;
                self.input_alloc = self.input.capacity();
            }
        }
        &mut self.input
    }

    /// Feeds bytes received from the peer.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), SessionError> {
        if self.awaiting_answer && self.input.len() + data.len() > MAX_PIPELINED_INPUT {
            return Err(SessionError::TooMuchPipelined);
        }
        self.input.extend_from_slice(data);
        self.input_alloc = self.input_alloc.max(self.input.capacity());
        self.process()
    }

    /// Processes whatever is buffered in the input buffer.
    pub fn process(&mut self) -> Result<(), SessionError> {
        if self.awaiting_answer && self.input.len() > MAX_PIPELINED_INPUT {
            return Err(SessionError::TooMuchPipelined);
        }
        if self.phase == Phase::Handshake {
            match self.handshake.process(&mut self.input, &mut self.output)? {
                Progress::InProgress => return Ok(()),
                Progress::Done => self.phase = Phase::Chunks,
            }
        }
        self.decoder.set_share_input(self.input_alloc <= SHARED_INPUT_MAX);
        while !self.awaiting_answer {
            let before = self.input.len();
            let msg = self.decoder.decode(&mut self.input)?;
            self.bytes_received += (before - self.input.len()) as u64;
            self.maybe_ack();
            match msg {
                Some(raw) => {
                    let timestamp = raw.timestamp;
                    let stream_id = raw.stream_id;
                    match Message::from_raw(raw) {
                        Ok(m) => self.handle_message(m, timestamp, stream_id)?,
                        // A bad AMF body in a data message is the publisher's problem, not a
                        // reason to drop a live stream; commands must parse.
                        Err(e @ MessageError::Amf { type_id, .. })
                            if type_id != message::TYPE_COMMAND_AMF0 && type_id != message::TYPE_COMMAND_AMF3 =>
                        {
                            tracing::debug!("ignoring data message: {e}");
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    fn maybe_ack(&mut self) {
        if self.peer_window > 0 && self.bytes_received - self.last_ack >= u64::from(self.peer_window) {
            self.last_ack = self.bytes_received;
            self.send(Message::Acknowledgement(self.bytes_received as u32), 0);
        }
    }

    fn send(&mut self, m: Message, stream_id: u32) {
        m.encode(&mut self.output, 0, stream_id, self.out_chunk_size);
    }

    fn handle_message(&mut self, m: Message, timestamp: u32, stream_id: u32) -> Result<(), SessionError> {
        match m {
            Message::SetChunkSize(size) => self.decoder.set_chunk_size(size)?,
            Message::Abort(csid) => self.decoder.abort(csid),
            Message::WindowAckSize(size) => self.peer_window = size,
            Message::Acknowledgement(_) | Message::SetPeerBandwidth { .. } => {}
            Message::UserControl(UserControl::PingRequest(t)) => {
                self.send(Message::UserControl(UserControl::PingResponse(t)), 0)
            }
            Message::UserControl(_) => {}
            Message::Video(payload) => {
                if self.is_publishing(stream_id) && !payload.is_empty() {
                    self.events.push_back(SessionEvent::Video { timestamp, payload });
                }
            }
            Message::Audio(payload) => {
                if self.is_publishing(stream_id) && !payload.is_empty() {
                    self.events.push_back(SessionEvent::Audio { timestamp, payload });
                }
            }
            Message::Aggregate(body) => {
                if self.is_publishing(stream_id) {
                    for part in split_aggregate(&body, timestamp) {
                        match part.type_id {
                            message::TYPE_VIDEO if !part.payload.is_empty() => {
                                self.events.push_back(SessionEvent::Video {
                                    timestamp: part.timestamp,
                                    payload: part.payload,
                                })
                            }
                            message::TYPE_AUDIO if !part.payload.is_empty() => {
                                self.events.push_back(SessionEvent::Audio {
                                    timestamp: part.timestamp,
                                    payload: part.payload,
                                })
                            }
                            _ => {}
                        }
                    }
                }
            }
            Message::Data(values) => self.handle_data(values, stream_id),
            Message::Command(c) => self.handle_command(c, stream_id)?,
            Message::Other { .. } => {}
        }
        Ok(())
    }

    fn is_publishing(&self, stream_id: u32) -> bool {
        matches!(self.role, Role::Publishing(id) if id == stream_id)
    }

    fn handle_data(&mut self, values: Vec<Amf0Value>, stream_id: u32) {
        if !self.is_publishing(stream_id) {
            return;
        }
        let mut it = values.into_iter().peekable();
        if it.peek().and_then(|v| v.as_str()) == Some("@setDataFrame") {
            it.next();
        }
        if it.next().as_ref().and_then(|v| v.as_str()) == Some("onMetaData") {
            self.events.push_back(SessionEvent::Metadata(it.collect()));
        }
    }

    fn handle_command(&mut self, c: Command, stream_id: u32) -> Result<(), SessionError> {
        let arg_str = |i: usize| c.args.get(i).and_then(|v| v.as_str()).unwrap_or("").to_string();
        match c.name.as_str() {
            "connect" => {
                if self.connect.is_some() {
                    return Ok(());
                }
                let obj = &c.object;
                let s = |k: &str| obj.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                let full_app = s("app");
                let (app, query) = split_query(&full_app);
                let info = ConnectInfo {
                    app: app.trim_end_matches('/').to_string(),
                    query: query.to_string(),
                    tc_url: s("tcUrl"),
                    flash_ver: s("flashVer"),
                    object_encoding: obj.get("objectEncoding").and_then(|v| v.as_f64()).unwrap_or(0.0),
                    enhanced: ["fourCcList", "videoFourCcInfoMap", "audioFourCcInfoMap", "capsEx"]
                        .iter()
                        .any(|k| obj.get(k).is_some()),
                    caps_ex: obj.get("capsEx").and_then(|v| v.as_f64()).map_or(0, |v| v as u32),
                    via: s(crate::rtmp::client::VIA_PROPERTY),
                };
                self.connect_txid = c.transaction_id;
                self.connect = Some(info.clone());
                self.awaiting_answer = true;
                self.events.push_back(SessionEvent::ConnectRequested(info));
            }
            _ if !self.connected => return Err(SessionError::NotConnected("command")),
            "releaseStream" | "FCPublish" | "FCSubscribe" => {
                self.send_result(c.transaction_id, Amf0Value::Null, vec![Amf0Value::Undefined]);
            }
            "createStream" => {
                if self.next_stream_id > MAX_STREAMS {
                    self.send_error(c.transaction_id, "NetConnection.Call.Failed", "too many streams");
                    return Ok(());
                }
                let id = self.next_stream_id;
                self.next_stream_id += 1;
                self.send_result(
                    c.transaction_id,
                    Amf0Value::Null,
                    vec![Amf0Value::Number(f64::from(id))],
                );
            }
            "publish" | "play" => {
                let publish = c.name == "publish";
                if self.role != Role::None || self.pending_request.is_some() {
                    let code = if publish {
                        "NetStream.Publish.BadConnection"
                    } else {
                        "NetStream.Play.Failed"
                    };
                    self.on_status(stream_id, "error", code, "Connection already publishing or playing");
                    return Ok(());
                }
                let full = arg_str(0);
                let (name, query) = split_query(&full);
                let req = StreamRequest {
                    stream_id,
                    name: name.to_string(),
                    query: query.to_string(),
                };
                self.pending_request = Some(stream_id);
                self.awaiting_answer = true;
                self.events.push_back(if publish {
                    SessionEvent::PublishRequested(req)
                } else {
                    SessionEvent::PlayRequested(req)
                });
            }
            "FCUnpublish" => {
                if let Role::Publishing(id) = self.role {
                    self.unpublish(id);
                }
                self.send_result(c.transaction_id, Amf0Value::Null, vec![Amf0Value::Undefined]);
            }
            "deleteStream" | "closeStream" => {
                let id = if c.name == "deleteStream" {
                    c.args.first().and_then(|v| v.as_f64()).map_or(stream_id, |v| v as u32)
                } else {
                    stream_id
                };
                match self.role {
                    Role::Publishing(p) if p == id => self.unpublish(p),
                    Role::Playing(p) if p == id => {
                        self.role = Role::None;
                        self.events.push_back(SessionEvent::PlayStopped { stream_id: p });
                    }
                    _ => {}
                }
            }
            "getStreamLength" => {
                self.send_result(c.transaction_id, Amf0Value::Null, vec![Amf0Value::Number(0.0)]);
            }
            "_checkbw" => {
                self.send_result(c.transaction_id, Amf0Value::Null, vec![]);
            }
            "pause" | "receiveAudio" | "receiveVideo" | "seek" | "_result" | "_error" | "onBWDone" => {}
            other => {
                tracing::debug!(command = other, "ignoring unknown RTMP command");
                if c.transaction_id > 0.0 {
                    self.send_error(c.transaction_id, "NetConnection.Call.Failed", "Method not found");
                }
            }
        }
        Ok(())
    }

    fn unpublish(&mut self, stream_id: u32) {
        self.role = Role::None;
        let limit = self.config.command_message_limit();
        self.decoder.set_message_limits(limit, limit);
        self.on_status(
            stream_id,
            "status",
            "NetStream.Unpublish.Success",
            "Stream is now unpublished",
        );
        self.events.push_back(SessionEvent::Unpublished { stream_id });
    }

    fn send_result(&mut self, txid: f64, object: Amf0Value, args: Vec<Amf0Value>) {
        let m = Message::Command(Command {
            name: "_result".into(),
            transaction_id: txid,
            object,
            args,
        });
        self.send(m, 0);
    }

    fn send_error(&mut self, txid: f64, code: &str, description: &str) {
        let info = status_object("error", code, description);
        let m = Message::Command(Command {
            name: "_error".into(),
            transaction_id: txid,
            object: Amf0Value::Null,
            args: vec![info],
        });
        self.send(m, 0);
    }

    fn on_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let m = Message::Command(Command {
            name: "onStatus".into(),
            transaction_id: 0.0,
            object: Amf0Value::Null,
            args: vec![status_object(level, code, description)],
        });
        self.send(m, stream_id);
    }

    /// Accepts `connect`: window size, bandwidth, our chunk size and `_result`.
    pub fn accept_connect(&mut self) {
        if self.connected {
            return;
        }
        self.connected = true;
        self.awaiting_answer = false;
        let encoding = self.connect.as_ref().map_or(0.0, |c| c.object_encoding);
        let enhanced = self.connect.as_ref().is_some_and(|c| c.enhanced);
        self.send(Message::WindowAckSize(WINDOW_ACK_SIZE), 0);
        self.send(
            Message::SetPeerBandwidth {
                size: WINDOW_ACK_SIZE,
                limit_type: 2,
            },
            0,
        );
        self.send(Message::SetChunkSize(self.config.chunk_size), 0);
        // Everything after SetChunkSize uses it, and nothing before did.
        self.out_chunk_size = self.config.chunk_size;
        let mut props = vec![
            ("fmsVer".to_string(), Amf0Value::from("FMS/3,0,1,123")),
            ("capabilities".to_string(), Amf0Value::Number(31.0)),
        ];
        if enhanced {
            // Enhanced RTMP: the server echoes what it supports with the same names.
            let list = VIDEO_FOURCCS
                .iter()
                .chain(AUDIO_FOURCCS)
                .map(|f| Amf0Value::from(*f))
                .collect();
            let map = |codecs: &[&str]| {
                Amf0Value::Object(
                    codecs
                        .iter()
                        .map(|f| (f.to_string(), Amf0Value::Number(FOURCC_CAN_FORWARD)))
                        .collect(),
                )
            };
            props.push(("fourCcList".into(), Amf0Value::StrictArray(list)));
            props.push(("videoFourCcInfoMap".into(), map(VIDEO_FOURCCS)));
            props.push(("audioFourCcInfoMap".into(), map(AUDIO_FOURCCS)));
            props.push((
                "capsEx".into(),
                Amf0Value::Number(f64::from(CAPS_EX_MULTITRACK | CAPS_EX_MODEX)),
            ));
        }
        let props = Amf0Value::Object(props);
        let info = Amf0Value::object([
            ("level", Amf0Value::from("status")),
            ("code", Amf0Value::from("NetConnection.Connect.Success")),
            ("description", Amf0Value::from("Connection succeeded.")),
            ("objectEncoding", Amf0Value::Number(encoding)),
        ]);
        self.send_result(self.connect_txid, props, vec![info]);
    }

    /// Refuses `connect`; the caller closes the connection after flushing output.
    pub fn reject_connect(&mut self, description: &str) {
        self.awaiting_answer = false;
        let info = status_object("error", "NetConnection.Connect.Rejected", description);
        let m = Message::Command(Command {
            name: "_error".into(),
            transaction_id: self.connect_txid,
            object: Amf0Value::Null,
            args: vec![info],
        });
        self.send(m, 0);
    }

    pub fn accept_publish(&mut self, stream_id: u32) {
        self.pending_request = None;
        self.awaiting_answer = false;
        self.role = Role::Publishing(stream_id);
        self.decoder
            .set_message_limits(self.config.max_message_size, self.config.command_message_limit());
        self.send(Message::UserControl(UserControl::StreamBegin(stream_id)), 0);
        self.on_status(stream_id, "status", "NetStream.Publish.Start", "Start publishing");
    }

    /// Refuses a publish with `code` (e.g. `NetStream.Publish.BadName`).
    pub fn reject_publish(&mut self, stream_id: u32, code: &str, description: &str) {
        self.pending_request = None;
        self.awaiting_answer = false;
        self.on_status(stream_id, "error", code, description);
    }

    /// Accepts a play: StreamBegin, Play.Reset, Play.Start and sample access. Media follows
    /// from the hub on `stream_id`.
    pub fn accept_play(&mut self, stream_id: u32) {
        self.pending_request = None;
        self.awaiting_answer = false;
        self.role = Role::Playing(stream_id);
        self.send(Message::UserControl(UserControl::StreamBegin(stream_id)), 0);
        self.on_status(
            stream_id,
            "status",
            "NetStream.Play.Reset",
            "Playing and resetting stream.",
        );
        self.on_status(stream_id, "status", "NetStream.Play.Start", "Started playing stream.");
        let access = Message::Data(vec![
            Amf0Value::from("|RtmpSampleAccess"),
            Amf0Value::Boolean(true),
            Amf0Value::Boolean(true),
        ]);
        self.send(access, stream_id);
    }

    pub fn reject_play(&mut self, stream_id: u32, code: &str, description: &str) {
        self.pending_request = None;
        self.awaiting_answer = false;
        self.on_status(stream_id, "error", code, description);
    }

    /// Tells a player its stream ended: UnpublishNotify, StreamEOF and Play.Stop.
    pub fn end_play(&mut self, stream_id: u32) {
        self.on_status(
            stream_id,
            "status",
            "NetStream.Play.UnpublishNotify",
            "Stream is now unpublished.",
        );
        self.send(Message::UserControl(UserControl::StreamEof(stream_id)), 0);
        self.on_status(stream_id, "status", "NetStream.Play.Stop", "Stopped playing stream.");
        self.role = Role::None;
    }

    /// Tells a publisher the server stops its stream (shutdown or kick).
    pub fn end_publish(&mut self, stream_id: u32, description: &str) {
        self.on_status(stream_id, "status", "NetStream.Unpublish.Success", description);
        self.role = Role::None;
    }
}

fn status_object(level: &str, code: &str, description: &str) -> Amf0Value {
    Amf0Value::object([
        ("level", Amf0Value::from(level)),
        ("code", Amf0Value::from(code)),
        ("description", Amf0Value::from(description)),
    ])
}

/// Splits `name?query` into its parts.
pub fn split_query(s: &str) -> (&str, &str) {
    match s.split_once('?') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests;
