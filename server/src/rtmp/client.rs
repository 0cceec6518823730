//! The sans-IO RTMP client that relays use to pull (play) from and push (publish) to other
//! servers, built on the same codec modules as the server session: handshake, chunk stream,
//! AMF0 and typed messages.
//!
//! It runs connect / createStream / play, or connect / releaseStream / FCPublish /
//! createStream / publish, announcing enhanced RTMP (`fourCcList`, `capsEx`) so HEVC, AV1, VP9
//! and Opus pass through untouched, and carrying a relay hop marker in the connect object so
//! a loop through relays can be detected by the far end. Bytes in, bytes out plus events, like
//! [`super::session::Session`]; the relay driver owns the socket. Media to publish does not
//! pass through here: the driver writes the hub's pre-encoded chunks on [`Client::stream_id`].

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::codec::amf0::Amf0Value;
use crate::codec::chunk::{ChunkDecoder, ChunkError};
use crate::codec::handshake::{ClientHandshake, HandshakeError, Progress};
use crate::codec::message::{self, split_aggregate, Command, Message, MessageError, UserControl};

/// The connect property that carries the relay hop marker (see `relay::hop`).
pub const VIA_PROPERTY: &str = "ferrocastVia";
/// Codecs we announce in `fourCcList`: everything the hub forwards untouched.
const FOURCC_LIST: &[&str] = &[
    "avc1", "hvc1", "av01", "vp09", "vp08", "mp4a", "Opus", "fLaC", "ac-3", "ec-3", ".mp3",
];
/// Enhanced-RTMP v2 `capsEx` multitrack bit: a pull takes every track of the source.
const CAPS_EX_MULTITRACK: f64 = 2.0;
/// Buffer length we ask a source for (what ffmpeg asks).
const PLAY_BUFFER_MS: u32 = 3000;

const TXID_CONNECT: f64 = 1.0;
const TXID_RELEASE: f64 = 2.0;
const TXID_FCPUBLISH: f64 = 3.0;
const TXID_CREATE_STREAM: f64 = 4.0;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("malformed message: {0}")]
    Message(#[from] MessageError),
}

/// Whether the client plays (pulls) or publishes (pushes) its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMode {
    Play,
    Publish,
}

/// What a client connects to and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    pub mode: ClientMode,
    /// The app as sent in `connect` (the first path segment; may carry a `?query`).
    pub app: String,
    pub tc_url: String,
    /// The name given to `play` / `publish`, query string included (stream keys of the far end).
    pub stream: String,
    /// Chunk size we send with (announced right after the handshake).
    pub chunk_size: u32,
    pub max_peer_chunk_size: u32,
    pub max_message_size: u32,
    /// Relay hop marker for the far end; empty sends none.
    pub via: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The server accepted `connect`. `fourccs`: the codecs it announced in its own
    /// `fourCcList` (empty from servers without enhanced RTMP).
    Connected {
        fourccs: Vec<String>,
    },
    /// `NetStream.Play.Start` or `NetStream.Publish.Start`: media may flow.
    Started,
    Video {
        timestamp: u32,
        payload: Bytes,
    },
    Audio {
        timestamp: u32,
        payload: Bytes,
    },
    /// `onMetaData`: the values after the name.
    Metadata(Vec<Amf0Value>),
    /// The server refused a step (`_error` or an `onStatus` of level error), e.g.
    /// `NetStream.Play.StreamNotFound` or `NetConnection.Connect.Rejected`.
    Refused {
        code: String,
        description: String,
    },
    /// The stream ended at the server (`NetStream.Play.UnpublishNotify`, `Play.Stop`,
    /// `Play.Complete`, a StreamEOF, or `NetStream.Unpublish.Success` while publishing).
    Ended {
        code: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Connecting,
    CreatingStream,
    Starting,
    Started,
    Done,
}

pub struct Client {
    config: ClientConfig,
    phase: Phase,
    handshake: ClientHandshake,
    decoder: ChunkDecoder,
    input: BytesMut,
    output: BytesMut,
    events: VecDeque<ClientEvent>,
    stream_id: u32,
    bytes_received: u64,
    last_ack: u64,
    peer_window: u32,
}

impl Client {
    /// A client ready to send C0+C1 (in [`Client::take_output`]).
    pub fn new(config: ClientConfig) -> Client {
        let mut handshake = ClientHandshake::new(true);
        let mut output = BytesMut::with_capacity(4096);
        handshake.start(&mut output);
        Client {
            decoder: ChunkDecoder::new(config.max_peer_chunk_size, config.max_message_size),
            config,
            phase: Phase::Handshake,
            handshake,
            input: BytesMut::with_capacity(16 * 1024),
            output,
            events: VecDeque::new(),
            stream_id: 0,
            bytes_received: 0,
            last_ack: 0,
            peer_window: 0,
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The message stream id the server gave us (0 before createStream answered).
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// The chunk size our output uses.
    pub fn chunk_size(&self) -> u32 {
        self.config.chunk_size
    }

    /// Whether play or publish has started.
    pub fn is_started(&self) -> bool {
        self.phase == Phase::Started
    }

    pub fn take_output(&mut self) -> Bytes {
        self.output.split().freeze()
    }

    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    pub fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Feeds bytes received from the server.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.input.extend_from_slice(data);
        if self.phase == Phase::Handshake {
            match self.handshake.process(&mut self.input, &mut self.output)? {
                Progress::InProgress => return Ok(()),
                Progress::Done => {
                    self.phase = Phase::Connecting;
                    self.send(Message::SetChunkSize(self.config.chunk_size), 0);
                    self.send_connect();
                }
            }
        }
        loop {
            let before = self.input.len();
            let msg = self.decoder.decode(&mut self.input)?;
            self.bytes_received += (before - self.input.len()) as u64;
            self.maybe_ack();
            let Some(raw) = msg else { return Ok(()) };
            match Message::decode(&raw) {
                Ok(m) => self.handle_message(m, raw.timestamp, raw.stream_id)?,
                // Bad metadata is the source's problem, not a reason to drop the relay.
                Err(e @ MessageError::Amf { type_id, .. })
                    if type_id != message::TYPE_COMMAND_AMF0 && type_id != message::TYPE_COMMAND_AMF3 =>
                {
                    tracing::debug!("ignoring data message: {e}");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Ends a publish politely (FCUnpublish, deleteStream) before the driver closes.
    pub fn close(&mut self) {
        if self.phase == Phase::Started && self.config.mode == ClientMode::Publish {
            let name = self.config.stream.clone();
            self.command("FCUnpublish", 0.0, vec![Amf0Value::String(name)], 0);
            self.command(
                "deleteStream",
                0.0,
                vec![Amf0Value::Number(f64::from(self.stream_id))],
                0,
            );
        }
        self.phase = Phase::Done;
    }

    fn maybe_ack(&mut self) {
        if self.peer_window > 0 && self.bytes_received - self.last_ack >= u64::from(self.peer_window) {
            self.last_ack = self.bytes_received;
            self.send(Message::Acknowledgement(self.bytes_received as u32), 0);
        }
    }

    fn send(&mut self, m: Message, stream_id: u32) {
        m.encode(&mut self.output, 0, stream_id, self.config.chunk_size);
    }

    fn command(&mut self, name: &str, txid: f64, args: Vec<Amf0Value>, stream_id: u32) {
        let m = Message::Command(Command {
            name: name.into(),
            transaction_id: txid,
            object: Amf0Value::Null,
            args,
        });
        self.send(m, stream_id);
    }

    fn send_connect(&mut self) {
        let c = &self.config;
        let mut props = vec![
            ("app".to_string(), Amf0Value::from(c.app.as_str())),
            ("type".to_string(), Amf0Value::from("nonprivate")),
            (
                "flashVer".to_string(),
                Amf0Value::from("FMLE/3.0 (compatible; Ferrocast)"),
            ),
            ("tcUrl".to_string(), Amf0Value::from(c.tc_url.as_str())),
        ];
        if c.mode == ClientMode::Play {
            props.extend([
                ("fpad".to_string(), Amf0Value::Boolean(false)),
                ("capabilities".to_string(), Amf0Value::Number(15.0)),
                ("audioCodecs".to_string(), Amf0Value::Number(3575.0)),
                ("videoCodecs".to_string(), Amf0Value::Number(252.0)),
                ("videoFunction".to_string(), Amf0Value::Number(1.0)),
            ]);
        }
        props.push((
            "fourCcList".to_string(),
            Amf0Value::StrictArray(FOURCC_LIST.iter().map(|f| Amf0Value::from(*f)).collect()),
        ));
        if c.mode == ClientMode::Play {
            props.push(("capsEx".to_string(), Amf0Value::Number(CAPS_EX_MULTITRACK)));
        }
        if !c.via.is_empty() {
            props.push((VIA_PROPERTY.to_string(), Amf0Value::from(c.via.as_str())));
        }
        let m = Message::Command(Command {
            name: "connect".into(),
            transaction_id: TXID_CONNECT,
            object: Amf0Value::Object(props),
            args: vec![],
        });
        self.send(m, 0);
    }

    fn handle_message(&mut self, m: Message, timestamp: u32, stream_id: u32) -> Result<(), ClientError> {
        match m {
            Message::SetChunkSize(size) => self.decoder.set_chunk_size(size)?,
            Message::Abort(csid) => self.decoder.abort(csid),
            Message::WindowAckSize(size) => self.peer_window = size,
            Message::Acknowledgement(_) | Message::SetPeerBandwidth { .. } => {}
            Message::UserControl(UserControl::PingRequest(t)) => {
                self.send(Message::UserControl(UserControl::PingResponse(t)), 0)
            }
            Message::UserControl(UserControl::StreamEof(id)) if self.is_playing(id) => self.end("StreamEOF"),
            Message::UserControl(_) => {}
            Message::Video(payload) if self.is_playing(stream_id) && !payload.is_empty() => {
                self.events.push_back(ClientEvent::Video { timestamp, payload })
            }
            Message::Audio(payload) if self.is_playing(stream_id) && !payload.is_empty() => {
                self.events.push_back(ClientEvent::Audio { timestamp, payload })
            }
            Message::Aggregate(body) if self.is_playing(stream_id) => {
                for part in split_aggregate(&body, timestamp) {
                    match part.type_id {
                        message::TYPE_VIDEO if !part.payload.is_empty() => self.events.push_back(ClientEvent::Video {
                            timestamp: part.timestamp,
                            payload: part.payload,
                        }),
                        message::TYPE_AUDIO if !part.payload.is_empty() => self.events.push_back(ClientEvent::Audio {
                            timestamp: part.timestamp,
                            payload: part.payload,
                        }),
                        _ => {}
                    }
                }
            }
            Message::Data(values) if self.is_playing(stream_id) => {
                let mut it = values.into_iter().peekable();
                if it.peek().and_then(|v| v.as_str()) == Some("@setDataFrame") {
                    it.next();
                }
                if it.next().as_ref().and_then(|v| v.as_str()) == Some("onMetaData") {
                    self.events.push_back(ClientEvent::Metadata(it.collect()));
                }
            }
            Message::Command(c) => self.handle_command(c),
            _ => {}
        }
        Ok(())
    }

    fn is_playing(&self, stream_id: u32) -> bool {
        self.config.mode == ClientMode::Play
            && matches!(self.phase, Phase::Starting | Phase::Started)
            && stream_id == self.stream_id
    }

    fn handle_command(&mut self, c: Command) {
        let info = c.args.first();
        let field = |k: &str| {
            info.and_then(|i| i.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        match c.name.as_str() {
            "_result" if self.phase == Phase::Connecting && c.transaction_id == TXID_CONNECT => {
                let fourccs = match c.object.get("fourCcList") {
                    Some(Amf0Value::StrictArray(list)) => list
                        .iter()
                        .filter_map(|v| v.as_str())
                        .take(FOURCC_LIST.len() * 2)
                        .map(str::to_string)
                        .collect(),
                    _ => Vec::new(),
                };
                self.events.push_back(ClientEvent::Connected { fourccs });
                let name = Amf0Value::String(self.config.stream.clone());
                if self.config.mode == ClientMode::Publish {
                    self.command("releaseStream", TXID_RELEASE, vec![name.clone()], 0);
                    self.command("FCPublish", TXID_FCPUBLISH, vec![name], 0);
                }
                self.command("createStream", TXID_CREATE_STREAM, vec![], 0);
                self.phase = Phase::CreatingStream;
            }
            "_result" if self.phase == Phase::CreatingStream && c.transaction_id == TXID_CREATE_STREAM => {
                let Some(id) = info.and_then(|v| v.as_f64()).filter(|id| *id >= 1.0 && *id <= 65_535.0) else {
                    self.refuse("NetConnection.Call.Failed", "createStream answered without a stream id");
                    return;
                };
                self.stream_id = id as u32;
                let name = Amf0Value::String(self.config.stream.clone());
                match self.config.mode {
                    ClientMode::Play => {
                        // -2000: live or recorded, as ffmpeg asks.
                        self.command("play", 0.0, vec![name, Amf0Value::Number(-2000.0)], self.stream_id);
                        self.send(
                            Message::UserControl(UserControl::SetBufferLength {
                                stream_id: self.stream_id,
                                millis: PLAY_BUFFER_MS,
                            }),
                            0,
                        );
                    }
                    ClientMode::Publish => {
                        self.command("publish", 0.0, vec![name, Amf0Value::from("live")], self.stream_id);
                    }
                }
                self.phase = Phase::Starting;
            }
            "_error" if matches!(self.phase, Phase::Connecting | Phase::CreatingStream) => {
                let code = field("code");
                let code = if code.is_empty() {
                    "NetConnection.Call.Failed".to_string()
                } else {
                    code
                };
                self.refuse(&code, &field("description"));
            }
            "onStatus" => {
                let (level, code) = (field("level"), field("code"));
                match code.as_str() {
                    "NetStream.Play.Start" | "NetStream.Publish.Start" if self.phase == Phase::Starting => {
                        self.phase = Phase::Started;
                        self.events.push_back(ClientEvent::Started);
                    }
                    "NetStream.Play.UnpublishNotify" | "NetStream.Play.Stop" | "NetStream.Play.Complete"
                        if self.config.mode == ClientMode::Play && self.phase == Phase::Started =>
                    {
                        self.end(&code)
                    }
                    "NetStream.Unpublish.Success"
                        if self.config.mode == ClientMode::Publish && self.phase == Phase::Started =>
                    {
                        self.end(&code)
                    }
                    _ if level == "error" && self.phase != Phase::Done => {
                        let description = field("description");
                        self.refuse(&code, &description);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn refuse(&mut self, code: &str, description: &str) {
        self.phase = Phase::Done;
        self.events.push_back(ClientEvent::Refused {
            code: code.to_string(),
            description: description.chars().take(256).collect(),
        });
    }

    fn end(&mut self, code: &str) {
        self.phase = Phase::Done;
        self.events.push_back(ClientEvent::Ended { code: code.to_string() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::session::{Session, SessionConfig, SessionEvent};

    const SERVER: SessionConfig = SessionConfig {
        chunk_size: 4096,
        max_peer_chunk_size: 1 << 20,
        max_message_size: 1 << 20,
    };

    fn config(mode: ClientMode) -> ClientConfig {
        ClientConfig {
            mode,
            app: "live".into(),
            tc_url: "rtmp://127.0.0.1:1935/live".into(),
            stream: "cam?key=k1".into(),
            chunk_size: 1000,
            max_peer_chunk_size: 1 << 20,
            max_message_size: 1 << 20,
            via: "a1b2".into(),
        }
    }

    /// Moves bytes both ways until neither side has anything to say; returns the server's
    /// events (answered by `decide`) and the client's events.
    fn pump(
        client: &mut Client,
        server: &mut Session,
        mut decide: impl FnMut(&mut Session, &SessionEvent),
    ) -> (Vec<SessionEvent>, Vec<ClientEvent>) {
        let (mut se, mut ce) = (Vec::new(), Vec::new());
        for _ in 0..32 {
            let mut moved = false;
            if client.has_output() {
                moved = true;
                server.handle_input(&client.take_output()).unwrap();
            }
            while let Some(e) = server.poll_event().unwrap() {
                decide(server, &e);
                se.push(e);
            }
            if server.has_output() {
                moved = true;
                client.handle_input(&server.take_output()).unwrap();
            }
            while let Some(e) = client.next_event() {
                ce.push(e);
            }
            if !moved {
                break;
            }
        }
        (se, ce)
    }

    #[test]
    fn play_runs_connect_create_stream_play_and_receives_media() {
        let mut client = Client::new(config(ClientMode::Play));
        let mut server = Session::new(SERVER);
        let (se, ce) = pump(&mut client, &mut server, |s, e| match e {
            SessionEvent::ConnectRequested(_) => s.accept_connect(),
            SessionEvent::PlayRequested(r) => s.accept_play(r.stream_id),
            _ => {}
        });
        let SessionEvent::ConnectRequested(info) = &se[0] else {
            panic!("{se:?}")
        };
        assert_eq!(info.app, "live");
        assert!(info.enhanced, "fourCcList announced");
        assert!(info.wants_multitrack());
        let SessionEvent::PlayRequested(req) = &se[1] else {
            panic!("{se:?}")
        };
        assert_eq!(
            (req.name.as_str(), req.query.as_str()),
            ("cam", "key=k1"),
            "query carried"
        );
        assert!(matches!(&ce[0], ClientEvent::Connected { fourccs } if fourccs.iter().any(|f| f == "hvc1")));
        assert_eq!(ce[1], ClientEvent::Started);
        assert!(client.is_started());

        // Media on the play stream reaches the client; the hub encodes for stream id 1.
        let mut media = BytesMut::new();
        let hevc = Bytes::from_static(&[0x91, b'h', b'v', b'c', b'1', 0, 0, 0, 0xAA]);
        Message::Video(hevc.clone()).encode(&mut media, 40, client.stream_id(), SERVER.chunk_size);
        client.handle_input(&media).unwrap();
        assert_eq!(
            client.next_event(),
            Some(ClientEvent::Video {
                timestamp: 40,
                payload: hevc
            })
        );

        server.end_play(client.stream_id());
        client.handle_input(&server.take_output()).unwrap();
        assert!(matches!(client.next_event(), Some(ClientEvent::Ended { .. })));
    }

    #[test]
    fn publish_runs_release_fcpublish_create_stream_publish() {
        let mut client = Client::new(config(ClientMode::Publish));
        let mut server = Session::new(SERVER);
        let (se, ce) = pump(&mut client, &mut server, |s, e| match e {
            SessionEvent::ConnectRequested(_) => s.accept_connect(),
            SessionEvent::PublishRequested(r) => s.accept_publish(r.stream_id),
            _ => {}
        });
        let SessionEvent::PublishRequested(req) = &se[1] else {
            panic!("{se:?}")
        };
        assert_eq!((req.name.as_str(), req.query.as_str()), ("cam", "key=k1"));
        assert_eq!(ce.last(), Some(&ClientEvent::Started));

        // What the driver writes: pre-encoded chunks on our stream id at our chunk size.
        let mut out = BytesMut::new();
        let body = Bytes::from(vec![0x17u8; 2500]);
        crate::codec::chunk::encode_message(
            &mut out,
            message::CSID_VIDEO,
            0,
            message::TYPE_VIDEO,
            client.stream_id(),
            &body,
            client.chunk_size(),
        );
        server.handle_input(&out).unwrap();
        assert_eq!(
            server.poll_event().unwrap(),
            Some(SessionEvent::Video {
                timestamp: 0,
                payload: body
            })
        );
        client.close();
        server.handle_input(&client.take_output()).unwrap();
        assert!(matches!(
            server.poll_event().unwrap(),
            Some(SessionEvent::Unpublished { .. })
        ));
    }

    #[test]
    fn not_found_and_rejected_connect_are_refusals() {
        let mut client = Client::new(config(ClientMode::Play));
        let mut server = Session::new(SERVER);
        let (_, ce) = pump(&mut client, &mut server, |s, e| match e {
            SessionEvent::ConnectRequested(_) => s.accept_connect(),
            SessionEvent::PlayRequested(r) => s.reject_play(r.stream_id, "NetStream.Play.StreamNotFound", "no"),
            _ => {}
        });
        assert!(
            matches!(ce.last(), Some(ClientEvent::Refused { code, .. }) if code == "NetStream.Play.StreamNotFound"),
            "{ce:?}"
        );

        let mut client = Client::new(config(ClientMode::Publish));
        let mut server = Session::new(SERVER);
        let (_, ce) = pump(&mut client, &mut server, |s, e| {
            if let SessionEvent::ConnectRequested(_) = e {
                s.reject_connect("relay loop")
            }
        });
        assert!(
            matches!(ce.last(), Some(ClientEvent::Refused { code, description })
                if code == "NetConnection.Connect.Rejected" && description == "relay loop"),
            "{ce:?}"
        );
    }

    #[test]
    fn acknowledges_the_servers_window() {
        let mut client = Client::new(config(ClientMode::Play));
        let mut server = Session::new(SERVER);
        pump(&mut client, &mut server, |s, e| match e {
            SessionEvent::ConnectRequested(_) => s.accept_connect(),
            SessionEvent::PlayRequested(r) => s.accept_play(r.stream_id),
            _ => {}
        });
        let mut big = BytesMut::new();
        Message::WindowAckSize(10_000).encode(&mut big, 0, 0, SERVER.chunk_size);
        for _ in 0..4 {
            Message::Video(Bytes::from(vec![0x27u8; 4000])).encode(&mut big, 0, client.stream_id(), SERVER.chunk_size);
        }
        client.handle_input(&big).unwrap();
        let out = client.take_output();
        let mut decoder = ChunkDecoder::new(1 << 20, 1 << 20);
        decoder.set_chunk_size(1000).unwrap();
        let raw = decoder.decode(&mut BytesMut::from(&out[..])).unwrap().unwrap();
        assert_eq!(raw.type_id, message::TYPE_ACK);
    }

    proptest::proptest! {
        /// Whatever a hostile server sends after the handshake, the client returns an error
        /// or events; it never panics, and refusal texts stay short.
        #[test]
        fn arbitrary_server_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), 1..8)) {
            let mut client = Client::new(config(ClientMode::Play));
            let mut server = Session::new(SERVER);
            server.handle_input(&client.take_output()).unwrap();
            let _ = client.handle_input(&server.take_output());
            for c in chunks {
                if client.handle_input(&c).is_err() {
                    break;
                }
                while let Some(e) = client.next_event() {
                    if let ClientEvent::Refused { description, .. } = e {
                        proptest::prop_assert!(description.chars().count() <= 256);
                    }
                }
            }
        }
    }
}
