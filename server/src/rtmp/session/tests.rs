//! Session tests without sockets: a client handshake and chunk codec drive the session.

use bytes::BytesMut;

use super::*;
use crate::codec::chunk::{ChunkDecoder, RawMessage};
use crate::codec::handshake::ClientHandshake;

const CONFIG: SessionConfig = SessionConfig {
    chunk_size: 60000,
    max_peer_chunk_size: 1 << 20,
    max_message_size: 1 << 20,
};

/// A client that has completed the handshake, with a decoder for what the server sends.
struct Client {
    session: Session,
    decoder: ChunkDecoder,
    chunk_size: u32,
}

impl Client {
    fn new(complex: bool) -> Client {
        let mut session = Session::new(CONFIG);
        let mut hs = ClientHandshake::new(complex);
        let mut c = BytesMut::new();
        hs.start(&mut c);
        session.handle_input(&c).unwrap();
        let mut s = BytesMut::from(&session.take_output()[..]);
        let mut c2 = BytesMut::new();
        assert_eq!(hs.process(&mut s, &mut c2).unwrap(), Progress::Done);
        session.handle_input(&c2).unwrap();
        assert!(session.handshake_done());
        assert_eq!(session.used_complex_handshake(), complex);
        Client {
            session,
            decoder: ChunkDecoder::new(1 << 20, 1 << 20),
            chunk_size: 128,
        }
    }

    fn send(&mut self, m: Message, stream_id: u32) {
        let mut out = BytesMut::new();
        m.encode(&mut out, 0, stream_id, self.chunk_size);
        if let Message::SetChunkSize(n) = m {
            self.chunk_size = n;
        }
        self.session.handle_input(&out).unwrap();
    }

    fn command(&mut self, name: &str, txid: f64, args: Vec<Amf0Value>, stream_id: u32) {
        let object = if name == "connect" {
            args[0].clone()
        } else {
            Amf0Value::Null
        };
        let args = if name == "connect" { vec![] } else { args };
        self.send(
            Message::Command(Command {
                name: name.into(),
                transaction_id: txid,
                object,
                args,
            }),
            stream_id,
        );
    }

    /// Everything the server sent since the last call.
    fn received(&mut self) -> Vec<(RawMessage, Message)> {
        let mut buf = BytesMut::from(&self.session.take_output()[..]);
        let mut out = Vec::new();
        while let Some(raw) = self.decoder.decode(&mut buf).unwrap() {
            let m = Message::decode(&raw).unwrap();
            if let Message::SetChunkSize(n) = m {
                self.decoder.set_chunk_size(n).unwrap();
            }
            out.push((raw, m));
        }
        out
    }

    fn events(&mut self) -> Vec<SessionEvent> {
        std::iter::from_fn(|| self.session.poll_event().unwrap()).collect()
    }

    fn connect(&mut self, app: &str, encoding: f64) {
        let obj = Amf0Value::object([
            ("app", Amf0Value::from(app)),
            ("tcUrl", Amf0Value::from(format!("rtmp://localhost/{app}"))),
            ("objectEncoding", Amf0Value::Number(encoding)),
        ]);
        self.command("connect", 1.0, vec![obj], 0);
        let ev = self.events();
        assert!(matches!(&ev[..], [SessionEvent::ConnectRequested(_)]), "{ev:?}");
        self.session.accept_connect();
    }
}

fn status_codes(msgs: &[(RawMessage, Message)]) -> Vec<(u32, String)> {
    msgs.iter()
        .filter_map(|(raw, m)| match m {
            Message::Command(c) if c.name == "onStatus" => Some((
                raw.stream_id,
                c.args[0].get("code").and_then(|v| v.as_str()).unwrap_or("").to_string(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn connect_with_object_encoding_3_is_answered() {
    for complex in [false, true] {
        let mut c = Client::new(complex);
        c.connect("live?token=abc", 3.0);
        assert_eq!(c.session.connect_info().unwrap().app, "live");
        assert_eq!(c.session.connect_info().unwrap().query, "token=abc");
        let got = c.received();
        let kinds: Vec<_> = got.iter().map(|(_, m)| m.clone()).collect();
        assert_eq!(kinds[0], Message::WindowAckSize(5_000_000));
        assert_eq!(
            kinds[1],
            Message::SetPeerBandwidth {
                size: 5_000_000,
                limit_type: 2
            }
        );
        assert_eq!(kinds[2], Message::SetChunkSize(60000));
        let Message::Command(result) = &kinds[3] else {
            panic!("{:?}", kinds[3])
        };
        assert_eq!((result.name.as_str(), result.transaction_id), ("_result", 1.0));
        assert_eq!(
            result.args[0].get("code").and_then(|v| v.as_str()),
            Some("NetConnection.Connect.Success")
        );
        assert_eq!(result.args[0].get("objectEncoding").and_then(|v| v.as_f64()), Some(3.0));
    }
}

#[test]
fn publish_flow_like_ffmpeg() {
    let mut c = Client::new(false);
    c.send(Message::SetChunkSize(4096), 0);
    c.connect("live", 0.0);
    c.received();
    c.command("releaseStream", 2.0, vec!["cam".into()], 0);
    c.command("FCPublish", 3.0, vec!["cam".into()], 0);
    c.command("createStream", 4.0, vec![], 0);
    let got = c.received();
    let Message::Command(cs) = &got.last().unwrap().1 else {
        panic!()
    };
    assert_eq!(
        (cs.name.as_str(), cs.transaction_id, cs.args[0].as_f64()),
        ("_result", 4.0, Some(1.0))
    );
    c.command("publish", 5.0, vec!["cam?key=1".into(), "live".into()], 1);
    assert_eq!(
        c.events(),
        vec![SessionEvent::PublishRequested(StreamRequest {
            stream_id: 1,
            name: "cam".into(),
            query: "key=1".into()
        })]
    );
    c.session.accept_publish(1);
    assert_eq!(
        status_codes(&c.received()),
        vec![(1, "NetStream.Publish.Start".to_string())]
    );

    let meta = Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(1280.0))]);
    c.send(
        Message::Data(vec!["@setDataFrame".into(), "onMetaData".into(), meta.clone()]),
        1,
    );
    let big = Bytes::from(vec![0x17u8; 10_000]);
    c.send(Message::Video(big.clone()), 1);
    c.send(Message::Audio(Bytes::from_static(b"\xaf\x01\x00")), 1);
    let ev = c.events();
    assert_eq!(ev[0], SessionEvent::Metadata(vec![meta]));
    assert_eq!(
        ev[1],
        SessionEvent::Video {
            timestamp: 0,
            payload: big
        }
    );
    assert!(matches!(ev[2], SessionEvent::Audio { .. }));

    c.command("FCUnpublish", 6.0, vec!["cam".into()], 1);
    assert_eq!(c.events(), vec![SessionEvent::Unpublished { stream_id: 1 }]);
    assert!(status_codes(&c.received()).contains(&(1, "NetStream.Unpublish.Success".to_string())));
}

#[test]
fn rejected_publish_gets_bad_name() {
    let mut c = Client::new(false);
    c.connect("live", 0.0);
    c.command("createStream", 2.0, vec![], 0);
    c.command("publish", 3.0, vec!["cam".into()], 1);
    c.events();
    c.received();
    c.session
        .reject_publish(1, "NetStream.Publish.BadName", "already publishing");
    assert_eq!(
        status_codes(&c.received()),
        vec![(1, "NetStream.Publish.BadName".to_string())]
    );
    assert_eq!(c.session.role(), Role::None);
}

#[test]
fn play_flow_and_end_use_the_created_stream_id() {
    let mut c = Client::new(true);
    c.connect("live", 0.0);
    c.command("createStream", 2.0, vec![], 0);
    c.command("createStream", 3.0, vec![], 0);
    c.received();
    c.command("getStreamLength", 4.0, vec!["cam".into()], 0);
    c.command("play", 0.0, vec!["cam".into(), Amf0Value::Number(-2.0)], 2);
    assert!(matches!(&c.events()[..], [SessionEvent::PlayRequested(r)] if r.stream_id == 2 && r.name == "cam"));
    c.session.accept_play(2);
    let got = c.received();
    assert!(got
        .iter()
        .any(|(_, m)| *m == Message::UserControl(UserControl::StreamBegin(2))));
    assert_eq!(
        status_codes(&got),
        vec![
            (2, "NetStream.Play.Reset".to_string()),
            (2, "NetStream.Play.Start".to_string())
        ]
    );
    c.session.end_play(2);
    let got = c.received();
    assert!(got
        .iter()
        .any(|(_, m)| *m == Message::UserControl(UserControl::StreamEof(2))));
    assert_eq!(status_codes(&got)[0], (2, "NetStream.Play.UnpublishNotify".to_string()));
}

#[test]
fn ping_request_is_answered_and_window_acknowledged() {
    let mut c = Client::new(false);
    c.connect("live", 0.0);
    c.received();
    c.send(Message::UserControl(UserControl::PingRequest(42)), 0);
    assert_eq!(c.received()[0].1, Message::UserControl(UserControl::PingResponse(42)));
    c.send(Message::WindowAckSize(1000), 0);
    c.command("createStream", 2.0, vec![], 0);
    c.command("publish", 3.0, vec!["cam".into()], 1);
    c.session.accept_publish(1);
    c.received();
    c.send(Message::Video(Bytes::from(vec![0x27u8; 1500])), 1);
    assert!(c
        .received()
        .iter()
        .any(|(_, m)| matches!(m, Message::Acknowledgement(n) if *n > 1000)));
}

#[test]
fn media_before_publish_is_ignored_and_commands_before_connect_fail() {
    let mut c = Client::new(false);
    let mut out = BytesMut::new();
    Message::Command(Command {
        name: "createStream".into(),
        transaction_id: 2.0,
        object: Amf0Value::Null,
        args: vec![],
    })
    .encode(&mut out, 0, 0, 128);
    assert!(matches!(
        c.session.handle_input(&out),
        Err(SessionError::NotConnected(_))
    ));
    let mut c = Client::new(false);
    c.connect("live", 0.0);
    c.send(Message::Video(Bytes::from_static(b"\x17\x01")), 1);
    assert!(c.events().is_empty());
}

#[test]
fn split_query_parts() {
    assert_eq!(split_query("cam?sign=1-abc"), ("cam", "sign=1-abc"));
    assert_eq!(split_query("cam"), ("cam", ""));
}

#[test]
fn enhanced_connect_is_answered_with_our_codecs_and_caps() {
    let mut c = Client::new(false);
    let obj = Amf0Value::object([
        ("app", Amf0Value::from("live")),
        ("fourCcList", Amf0Value::StrictArray(vec!["hvc1".into(), "av01".into()])),
        ("capsEx", Amf0Value::Number(2.0)),
    ]);
    c.command("connect", 1.0, vec![obj], 0);
    let ev = c.events();
    let SessionEvent::ConnectRequested(info) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert!(info.enhanced && info.wants_multitrack());
    c.session.accept_connect();
    let got = c.received();
    let Some(Message::Command(result)) = got
        .iter()
        .map(|(_, m)| m)
        .find(|m| matches!(m, Message::Command(c) if c.name == "_result"))
    else {
        panic!("no _result")
    };
    let Some(Amf0Value::StrictArray(list)) = result.object.get("fourCcList") else {
        panic!("{:?}", result.object)
    };
    for f in ["hvc1", "av01", "vp09", "Opus"] {
        assert!(list.contains(&Amf0Value::from(f)), "{f} listed");
    }
    assert_eq!(
        result
            .object
            .get("videoFourCcInfoMap")
            .and_then(|m| m.get("hvc1"))
            .and_then(|v| v.as_f64()),
        Some(4.0)
    );
    assert_eq!(result.object.get("capsEx").and_then(|v| v.as_f64()), Some(6.0));
}

#[test]
fn legacy_connect_gets_no_enhanced_properties() {
    let mut c = Client::new(false);
    c.connect("live", 0.0);
    let got = c.received();
    let Some(Message::Command(result)) = got
        .iter()
        .map(|(_, m)| m)
        .find(|m| matches!(m, Message::Command(c) if c.name == "_result"))
    else {
        panic!("no _result")
    };
    assert!(result.object.get("fourCcList").is_none());
    assert!(!c.session.connect_info().unwrap().wants_multitrack());
}

/// Chunks of `messages` (message, stream id) as one client write at chunk size `chunk_size`.
fn wire(messages: &[(Message, u32)], chunk_size: u32) -> BytesMut {
    let mut out = BytesMut::new();
    for (m, stream_id) in messages {
        m.encode(&mut out, 0, *stream_id, chunk_size);
    }
    out
}

fn cmd(name: &str, txid: f64, object: Amf0Value, args: Vec<Amf0Value>) -> Message {
    Message::Command(Command {
        name: name.into(),
        transaction_id: txid,
        object,
        args,
    })
}

fn connect_object(app: &str) -> Amf0Value {
    Amf0Value::object([
        ("app", Amf0Value::from(app)),
        ("tcUrl", Amf0Value::from(format!("rtmp://localhost/{app}"))),
    ])
}

#[test]
fn everything_pipelined_with_publish_is_delivered_in_order_after_acceptance() {
    let mut c = Client::new(false);
    let meta = Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(1280.0))]);
    let avc_header = Bytes::from_static(b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f");
    let aac_header = Bytes::from_static(b"\xaf\x00\x12\x10");
    let key = Bytes::from(vec![0x17u8; 3000]);
    // What an encoder that does not wait for answers writes at once.
    let all = wire(
        &[
            (Message::SetChunkSize(4096), 0),
            (cmd("connect", 1.0, connect_object("live"), vec![]), 0),
            (cmd("releaseStream", 2.0, Amf0Value::Null, vec!["cam".into()]), 0),
            (cmd("FCPublish", 3.0, Amf0Value::Null, vec!["cam".into()]), 0),
            (cmd("createStream", 4.0, Amf0Value::Null, vec![]), 0),
            (
                cmd("publish", 5.0, Amf0Value::Null, vec!["cam".into(), "live".into()]),
                1,
            ),
            (
                Message::Data(vec!["@setDataFrame".into(), "onMetaData".into(), meta.clone()]),
                1,
            ),
            (Message::Video(avc_header.clone()), 1),
            (Message::Audio(aac_header.clone()), 1),
            (Message::Video(key.clone()), 1),
        ],
        4096,
    );
    // SetChunkSize is the first message, so everything after it uses 4096 (and the first
    // message itself fits in 128).
    c.session.handle_input(&all).unwrap();
    assert!(matches!(&c.events()[..], [SessionEvent::ConnectRequested(_)]));
    assert!(c.session.awaiting_answer());
    c.session.accept_connect();
    let ev = c.events();
    assert!(
        matches!(&ev[..], [SessionEvent::PublishRequested(r)] if r.stream_id == 1),
        "{ev:?}"
    );
    // connect, releaseStream, FCPublish and createStream were answered in order.
    let txids: Vec<f64> = c
        .received()
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Command(r) if r.name == "_result" => Some(r.transaction_id),
            _ => None,
        })
        .collect();
    assert_eq!(txids, vec![1.0, 2.0, 3.0, 4.0]);
    c.session.accept_publish(1);
    assert_eq!(
        c.events(),
        vec![
            SessionEvent::Metadata(vec![meta]),
            SessionEvent::Video {
                timestamp: 0,
                payload: avc_header
            },
            SessionEvent::Audio {
                timestamp: 0,
                payload: aac_header
            },
            SessionEvent::Video {
                timestamp: 0,
                payload: key
            },
        ]
    );
}

#[test]
fn commands_sent_before_the_connect_answer_are_answered_after_it() {
    let mut c = Client::new(false);
    let all = wire(
        &[
            (cmd("connect", 1.0, connect_object("live"), vec![]), 0),
            (cmd("createStream", 2.0, Amf0Value::Null, vec![]), 0),
            (cmd("play", 0.0, Amf0Value::Null, vec!["cam".into()]), 1),
        ],
        128,
    );
    c.session.handle_input(&all).unwrap();
    assert!(matches!(&c.events()[..], [SessionEvent::ConnectRequested(_)]));
    assert!(c.received().is_empty(), "nothing is answered before connect is decided");
    c.session.accept_connect();
    assert!(matches!(&c.events()[..], [SessionEvent::PlayRequested(r)] if r.name == "cam"));
    let results: Vec<(f64, Option<f64>)> = c
        .received()
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Command(r) if r.name == "_result" => Some((r.transaction_id, r.args[0].as_f64())),
            _ => None,
        })
        .collect();
    assert_eq!(results, vec![(1.0, None), (2.0, Some(1.0))]);
}

#[test]
fn a_long_connect_rejection_reason_reaches_the_client_intact() {
    // The client still reads at the default chunk size 128: we never announced ours.
    let reason = format!("Rejected by the preConnect webhook: {}", "no such tenant; ".repeat(20));
    let mut c = Client::new(false);
    c.command("connect", 1.0, vec![connect_object("live")], 0);
    c.events();
    c.session.reject_connect(&reason);
    let got = c.received();
    let [(_, Message::Command(error))] = &got[..] else {
        panic!("{got:?}")
    };
    assert_eq!((error.name.as_str(), error.transaction_id), ("_error", 1.0));
    assert_eq!(
        error.args[0].get("description").and_then(|v| v.as_str()),
        Some(reason.as_str())
    );
    assert_eq!(
        error.args[0].get("code").and_then(|v| v.as_str()),
        Some("NetConnection.Connect.Rejected")
    );
}

#[test]
fn replies_before_our_set_chunk_size_use_the_default_chunk_size() {
    let mut c = Client::new(false);
    // A ping before connect is answered; a long unknown-method error after connect is
    // chunked at our announced size, which the client decodes after SetChunkSize.
    c.send(Message::UserControl(UserControl::PingRequest(7)), 0);
    assert_eq!(c.received()[0].1, Message::UserControl(UserControl::PingResponse(7)));
    c.connect("live", 0.0);
    let got = c.received();
    assert!(got.iter().any(|(_, m)| *m == Message::SetChunkSize(60000)));
    let long = "m".repeat(500);
    c.command(&long, 2.0, vec![], 0);
    let got = c.received();
    assert!(
        matches!(&got[..], [(_, Message::Command(e))] if e.name == "_error"),
        "{got:?}"
    );
}

#[test]
fn commands_stay_small_and_media_may_be_large_only_once_publishing() {
    let big_video = Message::Video(Bytes::from(vec![0x17u8; 100_000]));
    // Before publish, a 100 KB media message is refused at its header.
    let mut c = Client::new(false);
    c.connect("live", 0.0);
    let mut out = BytesMut::new();
    big_video.encode(&mut out, 0, 1, 128);
    assert!(matches!(
        c.session.handle_input(&out[..200]),
        Err(SessionError::Chunk(ChunkError::MessageTooLarge(
            100_000,
            MAX_COMMAND_MESSAGE_SIZE
        )))
    ));
    // After an accepted publish it is media like any other.
    let mut c = Client::new(false);
    c.connect("live", 0.0);
    c.command("createStream", 2.0, vec![], 0);
    c.command("publish", 3.0, vec!["cam".into()], 1);
    c.events();
    c.session.accept_publish(1);
    c.send(big_video, 1);
    assert!(matches!(&c.events()[..], [SessionEvent::Video { payload, .. }] if payload.len() == 100_000));
    // Commands stay capped.
    let huge_command = cmd("FCUnpublish", 4.0, Amf0Value::Null, vec!["x".repeat(100_000).into()]);
    let mut out = BytesMut::new();
    huge_command.encode(&mut out, 0, 1, 128);
    assert!(matches!(
        c.session.handle_input(&out[..200]),
        Err(SessionError::Chunk(ChunkError::MessageTooLarge(
            _,
            MAX_COMMAND_MESSAGE_SIZE
        )))
    ));
}

#[test]
fn a_command_that_decodes_into_too_many_values_closes_the_session() {
    let mut c = Client::new(false);
    c.send(Message::SetChunkSize(65536), 0);
    // 60 KB of nulls in a strict array: under the size cap, over the value cap.
    let mut body = BytesMut::new();
    crate::codec::amf0::encode(&Amf0Value::from("connect"), &mut body);
    crate::codec::amf0::encode(&Amf0Value::Number(1.0), &mut body);
    body.extend_from_slice(&[0x0a]);
    body.extend_from_slice(&60_000u32.to_be_bytes());
    body.resize(body.len() + 60_000, 0x05);
    let mut out = BytesMut::new();
    crate::codec::chunk::encode_message(&mut out, 3, 0, 20, 0, &body, 65536);
    assert!(matches!(
        c.session.handle_input(&out),
        Err(SessionError::Message(MessageError::Amf {
            source: crate::codec::amf0::AmfError::TooManyValues,
            ..
        }))
    ));
}

#[test]
fn input_pipelined_behind_an_unanswered_request_is_bounded() {
    let mut c = Client::new(false);
    c.command("connect", 1.0, vec![connect_object("live")], 0);
    assert!(c.session.awaiting_answer());
    let junk = vec![0u8; 1 << 20];
    for _ in 0..4 {
        c.session.handle_input(&junk).unwrap();
    }
    assert!(matches!(
        c.session.handle_input(&junk),
        Err(SessionError::TooMuchPipelined)
    ));
}

#[test]
fn frames_are_slices_of_the_input_only_while_its_allocation_is_small() {
    let mut c = Client::new(false);
    c.send(Message::SetChunkSize(1 << 20), 0);
    c.connect("live", 0.0);
    c.command("createStream", 2.0, vec![], 0);
    c.command("publish", 3.0, vec!["cam".into()], 1);
    c.events();
    c.session.accept_publish(1);
    let audio = |c: &mut Client| {
        c.send(Message::Audio(Bytes::from_static(b"\xaf\x01\x00\x01")), 1);
        match c.events().pop() {
            Some(SessionEvent::Audio { payload, .. }) => payload,
            other => panic!("{other:?}"),
        }
    };
    let shared = audio(&mut c);
    assert!(!shared.is_unique(), "a small frame is a slice of the input buffer");
    // A peer that makes the input buffer large (a big chunk) must not have small frames pin it.
    c.send(Message::Video(Bytes::from(vec![0x17u8; 200_000])), 1);
    c.events();
    assert!(c.session.input_alloc > SHARED_INPUT_MAX);
    let copied = audio(&mut c);
    assert!(copied.is_unique(), "copied out of a large input buffer");
}
