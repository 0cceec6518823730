//! Entry points for coverage-guided fuzzing: one function per parser that takes peer bytes.
//!
//! The libFuzzer targets in `fuzz/` call these, and the test suite replays the committed
//! corpus and every crash found through the same functions, so what the fuzzer explores is
//! what the suite checks, without the fuzzing toolchain. Each entry must return normally for
//! any input; a panic (including an arithmetic overflow, which the fuzz build checks) is a
//! bug. Where a parser has an encoder, the entry also checks that what decodes re-encodes
//! to something that decodes the same way. Results nobody looks at go through
//! [`black_box`]: the parsers are pure, and an optimizer that sees a result unused removes
//! the call, and with it everything the fuzzer was meant to explore.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};

use crate::auth::query_param;
use crate::codec::amf0;
use crate::codec::chunk::{encode_message, ChunkDecoder, RawMessage};
use crate::codec::flv::FlvReader;
use crate::codec::handshake::{ClientHandshake, ServerHandshake, HANDSHAKE_SIZE};
use crate::codec::media::{self, FourCc};
use crate::codec::message::{split_aggregate, Message};
use crate::codec::{aac, av1, avc, hevc, info, opus, vp9};
use crate::config::Config;
use crate::hls::session::SessionKey;
use crate::http::h1::{self, Parsed};
use crate::http::hls::is_asset;
use crate::http::push::FlvIngest;
use crate::http::ws;
use crate::hub::{Hub, HubSettings, PublisherInfo, StreamKey};
use crate::rtmp::session::{Session, SessionConfig, SessionEvent};

/// A fuzz target: its name (the directory of its corpus) and its entry function.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `scripts/fuzz.sh` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "handshake",
        run: handshake,
    },
    Target {
        name: "chunk_stream",
        run: chunk_stream,
    },
    Target {
        name: "amf0",
        run: amf0_values,
    },
    Target {
        name: "rtmp_message",
        run: rtmp_message,
    },
    Target {
        name: "rtmp_session",
        run: rtmp_session,
    },
    Target {
        name: "flv_tags",
        run: flv_tags,
    },
    Target {
        name: "flv_push",
        run: flv_push,
    },
    Target {
        name: "media_header",
        run: media_header,
    },
    Target { name: "avc", run: avc },
    Target {
        name: "hevc",
        run: hevc,
    },
    Target { name: "av1", run: av1 },
    Target { name: "vp9", run: vp9 },
    Target { name: "aac", run: aac },
    Target {
        name: "opus",
        run: opus,
    },
    Target {
        name: "audio_config",
        run: audio_config,
    },
    Target {
        name: "ws_frames",
        run: ws_frames,
    },
    Target {
        name: "http_request",
        run: http_request,
    },
];

/// The entry function of the target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|t| t.name == name).map(|t| t.run)
}

/// Splits `data` into a control byte and the rest; inputs too short to carry one do nothing.
fn control(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(c, rest)| (*c, rest))
}

/// The server side of the handshake fed in two reads (the control byte picks where the
/// first ends), and the client side reading the same bytes as S0+S1+S2.
pub fn handshake(data: &[u8]) {
    let Some((split, rest)) = control(data) else { return };
    let cut = (usize::from(split) * 16).min(rest.len());
    let mut server = ServerHandshake::new();
    let mut out = BytesMut::new();
    let mut input = BytesMut::from(&rest[..cut]);
    if server.process(&mut input, &mut out).is_ok() {
        input.extend_from_slice(&rest[cut..]);
        let _ = black_box(server.process(&mut input, &mut out));
    }
    let mut client = ClientHandshake::new(split & 1 == 1);
    let mut c0c1 = BytesMut::new();
    client.start(&mut c0c1);
    let _ = black_box(client.process(&mut BytesMut::from(rest), &mut BytesMut::new()));
}

/// Chunk reassembly at a chunk size the control byte picks. Every message decoded must come
/// out the same after encoding it again.
pub fn chunk_stream(data: &[u8]) {
    let Some((size, rest)) = control(data) else { return };
    let chunk_size = 1 + u32::from(size) * 8;
    let mut dec = ChunkDecoder::new(1 << 16, 1 << 16);
    dec.set_message_limits(1 << 16, 1 << 12);
    dec.set_share_input(size & 1 == 1);
    if dec.set_chunk_size(chunk_size).is_err() {
        return;
    }
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(m)) = dec.decode(&mut buf) {
        let mut wire = BytesMut::new();
        encode_message(
            &mut wire,
            m.csid,
            m.timestamp,
            m.type_id,
            m.stream_id,
            &m.payload,
            chunk_size,
        );
        let mut again = ChunkDecoder::new(1 << 16, 1 << 16);
        again.set_chunk_size(chunk_size).expect("the size was accepted once");
        let back = again.decode(&mut wire).expect("our own encoding decodes");
        assert_eq!(back.as_ref(), Some(&m), "chunk message did not round-trip");
        assert!(wire.is_empty());
    }
}

/// AMF0 values. What decodes must encode to bytes that decode and re-encode identically
/// (compared as bytes: NaN never equals itself).
pub fn amf0_values(data: &[u8]) {
    let Ok(values) = amf0::decode_all(data) else { return };
    let mut first = BytesMut::new();
    amf0::encode_all(&values, &mut first);
    let again = amf0::decode_all(&first).expect("our own encoding decodes");
    let mut second = BytesMut::new();
    amf0::encode_all(&again, &mut second);
    assert_eq!(first, second, "AMF0 did not round-trip");
}

/// Typed RTMP messages of the type in the control byte, and aggregates split into parts.
/// A message that decodes must re-encode into one that decodes.
pub fn rtmp_message(data: &[u8]) {
    let Some((type_id, rest)) = control(data) else { return };
    let raw = RawMessage {
        csid: 3,
        timestamp: 0,
        type_id,
        stream_id: 1,
        payload: Bytes::copy_from_slice(rest),
    };
    if let Ok(m) = Message::decode(&raw) {
        let (type_id, payload) = m.to_body();
        let back = RawMessage {
            type_id,
            payload,
            ..raw.clone()
        };
        assert!(Message::decode(&back).is_ok(), "re-encoded {m:?} does not decode");
    }
    for part in split_aggregate(&raw.payload, 1000) {
        let _ = black_box(media::parse_video_header(&part.payload));
    }
}

/// A whole server session after a valid handshake: the input is the client's chunk stream,
/// fed in reads of a size the control byte picks. Connects and publishes are accepted, and
/// plays accepted or refused, so every state is reachable.
pub fn rtmp_session(data: &[u8]) {
    let Some((read_size, rest)) = control(data) else { return };
    let mut session = Session::new(SessionConfig {
        chunk_size: 4096,
        max_peer_chunk_size: 1 << 16,
        max_message_size: 1 << 20,
    });
    let mut c0c1 = vec![0u8; 1 + HANDSHAKE_SIZE];
    c0c1[0] = 3;
    session.handle_input(&c0c1).expect("a simple C0+C1 is accepted");
    session.handle_input(&[0; HANDSHAKE_SIZE]).expect("any C2 is accepted");
    for read in rest.chunks(usize::from(read_size).max(1) * 16) {
        if session.handle_input(read).is_err() {
            return;
        }
        loop {
            match session.poll_event() {
                Ok(Some(SessionEvent::ConnectRequested(_))) => session.accept_connect(),
                Ok(Some(SessionEvent::PublishRequested(r))) => session.accept_publish(r.stream_id),
                Ok(Some(SessionEvent::PlayRequested(r))) if r.name.len() % 2 == 0 => session.accept_play(r.stream_id),
                Ok(Some(SessionEvent::PlayRequested(r))) => {
                    session.reject_play(r.stream_id, "NetStream.Play.StreamNotFound", "no")
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let _ = black_box(session.take_output());
    }
}

/// FLV tags read in reads of a size the control byte picks, each body parsed as what its
/// tag type says.
pub fn flv_tags(data: &[u8]) {
    let Some((read_size, rest)) = control(data) else { return };
    let mut reader = FlvReader::new(1 << 16);
    let mut buf = BytesMut::new();
    for read in rest.chunks(usize::from(read_size).max(1) * 16) {
        buf.extend_from_slice(read);
        loop {
            match reader.next_tag(&mut buf) {
                Ok(Some(tag)) => match tag.tag_type {
                    8 => drop(black_box(media::parse_audio_header(&tag.body))),
                    9 => drop(black_box(media::parse_video_header(&tag.body))),
                    _ => drop(black_box(amf0::decode_all(&tag.body))),
                },
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// An FLV push body (HTTP POST or WebSocket) published into a hub, then read back by a
/// late joiner in both output encodings, as players get it.
pub fn flv_push(data: &[u8]) {
    let Some((read_size, rest)) = control(data) else { return };
    let hub = Hub::new(HubSettings::from_config(&Config::default()));
    let key = StreamKey::new("live", "fuzz").expect("a valid name");
    let info = PublisherInfo {
        session_id: 1,
        protocol: "http_flv",
        remote: "127.0.0.1:1".into(),
        started: std::time::SystemTime::UNIX_EPOCH,
    };
    let publisher = hub.publish(&key, info).expect("a fresh hub takes the stream");
    let mut ingest = FlvIngest::new(publisher, 1 << 16);
    for read in rest.chunks(usize::from(read_size).max(1) * 16) {
        if ingest.feed(read).is_err() {
            break;
        }
    }
    let mut reader = hub.subscribe(&key).expect("the stream exists");
    while let Ok(Some(frame)) = reader.try_recv() {
        let _ = black_box(frame.rtmp_chunks(1, 128).to_bytes());
        let _ = black_box(frame.flv_tag());
    }
}

/// Audio and video message headers (legacy, enhanced, ModEx, multitrack), and the codec
/// summary read through them for every codec we know.
pub fn media_header(data: &[u8]) {
    if let Ok(h) = media::parse_video_header(data) {
        assert!(h.body_offset <= data.len(), "video body offset past the end");
    }
    if let Ok(h) = media::parse_audio_header(data) {
        assert!(h.body_offset <= data.len(), "audio body offset past the end");
    }
    let video = [FourCc::AVC, FourCc::HEVC, FourCc::AV1, FourCc::VP9];
    let audio = [
        FourCc::AAC,
        FourCc::OPUS,
        FourCc::FLAC,
        FourCc::AC3,
        FourCc::EAC3,
        FourCc::MP3,
    ];
    for enhanced in [false, true] {
        for codec in video {
            let _ = black_box(info::video_info(codec, enhanced, data));
        }
        for codec in audio {
            let _ = black_box(info::audio_info(codec, enhanced, data));
        }
    }
    let _ = black_box(info::vp9_frame_size(data));
}

/// AVCDecoderConfigurationRecord and a bare SPS.
pub fn avc(data: &[u8]) {
    let _ = black_box(avc::parse_decoder_config(data));
    let _ = black_box(avc::parse_sps(data));
}

/// HEVCDecoderConfigurationRecord and a bare SPS.
pub fn hevc(data: &[u8]) {
    let _ = black_box(hevc::parse_decoder_config(data));
    let _ = black_box(hevc::parse_sps(data));
}

/// AV1CodecConfigurationRecord, OBU framing and a bare sequence header.
pub fn av1(data: &[u8]) {
    let _ = black_box(av1::parse_decoder_config(data));
    let _ = black_box(av1::parse_sequence_header(data));
    let mut rest = data;
    while let Ok((_, _, tail)) = av1::split_obu(rest) {
        if tail.len() >= rest.len() {
            break;
        }
        rest = tail;
    }
}

/// VPCodecConfigurationRecord and a keyframe's uncompressed header.
pub fn vp9(data: &[u8]) {
    let _ = black_box(vp9::parse_decoder_config(data));
    let _ = black_box(vp9::parse_keyframe(data));
}

/// AudioSpecificConfig.
pub fn aac(data: &[u8]) {
    let _ = black_box(aac::parse_audio_specific_config(data));
}

/// OpusHead (enhanced-RTMP Opus sequence start).
pub fn opus(data: &[u8]) {
    let _ = black_box(opus::parse_header(data));
}

/// The audio configs read inline: FLAC STREAMINFO, AC-3 / E-AC-3 sync frames and MPEG
/// audio frame headers, in their enhanced-RTMP bodies (and MP3 in a legacy one too).
pub fn audio_config(data: &[u8]) {
    for codec in [
        FourCc::FLAC,
        FourCc::AC3,
        FourCc::EAC3,
        FourCc::MP3,
        FourCc::OPUS,
        FourCc::AAC,
    ] {
        for packet_type in [0u8, 1] {
            let mut body = vec![0x90 | packet_type];
            body.extend_from_slice(&codec.0);
            body.extend_from_slice(data);
            let _ = black_box(info::audio_info(codec, true, &body));
        }
    }
    let mut legacy = vec![0x2f];
    legacy.extend_from_slice(data);
    let _ = black_box(info::audio_info(FourCc::MP3, false, &legacy));
}

/// WebSocket frames from a client (FLV push), with the payload cap the push uses.
pub fn ws_frames(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = ws::parse_client_frame(&mut buf, ws::MAX_CLIENT_PAYLOAD) {
        assert!(frame.payload.len() <= ws::MAX_CLIENT_PAYLOAD);
    }
}

/// HTTP/1.1 requests as the lean HLS path reads them off one connection, pipelined; the
/// control byte says where a read may end inside each head. A request the path takes is never
/// taken before its head is whole, parses the same from exactly its own bytes, and names an
/// HLS asset outside the routes left to the router. Its session token, made up by the input,
/// never verifies, and its LL-HLS parameters parse as the handler parses them.
pub fn http_request(data: &[u8]) {
    let Some((split, rest)) = control(data) else { return };
    let elsewhere = |app: &str| app == "api" || app == "admin";
    let sessions = SessionKey::random();
    let mut at = 0;
    while at < rest.len() {
        let buf = &rest[at..];
        match h1::parse(buf, elsewhere) {
            Parsed::Lean(head) => {
                assert!(head.len > 0 && head.len <= buf.len(), "head of {} bytes", head.len);
                let cut = usize::from(split) * 8 % head.len;
                if cut < h1::MAX_HEAD {
                    assert_eq!(h1::parse(&buf[..cut], elsewhere), Parsed::Partial, "taken at {cut}");
                }
                let again = h1::parse(&buf[..head.len], elsewhere);
                assert!(
                    matches!(&again, Parsed::Lean(h) if *h == head),
                    "{again:?} against {head:?}"
                );
                assert!(is_asset(head.file) && !elsewhere(head.app));
                if let (Ok(key), Some(token)) = (StreamKey::new(head.app, head.name), query_param(head.query, "hs")) {
                    assert!(sessions.verify(&key, &token, std::time::SystemTime::now()).is_none());
                }
                let msn = query_param(head.query, "_HLS_msn").and_then(|v| v.parse::<u64>().ok());
                let part = query_param(head.query, "_HLS_part").and_then(|v| v.parse::<usize>().ok());
                black_box((msn, part, head.head_only, head.close));
                at += head.len;
            }
            Parsed::Partial => {
                assert!(buf.len() < h1::MAX_HEAD, "{} bytes still partial", buf.len());
                break;
            }
            Parsed::Other => break,
        }
    }
}

#[cfg(test)]
mod tests;
