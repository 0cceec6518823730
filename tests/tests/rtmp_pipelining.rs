//! Encoders pipeline their commands: everything from `connect` to the first keyframe may
//! arrive in one write, before any answer. The server handles it in order and drops nothing
//! that follows an accepted publish: a player gets the metadata, both sequence headers and
//! the keyframe. The other end of the scale: a publisher that sends very little is still read
//! promptly.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferrocast_server::codec::amf0::Amf0Value;
use ferrocast_server::codec::chunk::{ChunkDecoder, DEFAULT_CHUNK_SIZE};
use ferrocast_server::codec::message::{Command, Message};
use ferrocast_tests::rtmp_raw::{self, client_handshake};
use ferrocast_tests::{unique_name, FlvPlayer, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An AVC sequence header (1280x720 Baseline) and AAC one (LC 48 kHz mono) as FFmpeg
/// sends them.
const AVC_HEADER: &[u8] = b"\x17\x00\x00\x00\x00\x01\x42\xc0\x1f\xff\xe1\x00\x19\x67\x42\xc0\x1f\xd9\x00\x50\x05\xbb\x01\x10\x00\x00\x03\x00\x10\x00\x00\x03\x03\xc0\xf1\x83\x24\x80\x01\x00\x05\x68\xcb\x83\xcb\x20";
const AAC_HEADER: &[u8] = b"\xaf\x00\x11\x88\x56\xe5\x00";

fn command(name: &str, txid: f64, object: Amf0Value, args: Vec<Amf0Value>) -> Message {
    Message::Command(Command {
        name: name.into(),
        transaction_id: txid,
        object,
        args,
    })
}

/// Reads what the server sends until an `onStatus` with `code` arrives (10 s at most).
async fn wait_status(s: &mut TcpStream, code: &str) -> Vec<String> {
    let mut decoder = ChunkDecoder::new(1 << 20, 1 << 24);
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(raw) = decoder.decode(&mut buf).unwrap() {
            match Message::decode(&raw).unwrap() {
                Message::SetChunkSize(n) => decoder.set_chunk_size(n).unwrap(),
                Message::Command(c) => {
                    let status = c
                        .args
                        .first()
                        .and_then(|a| a.get("code"))
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string();
                    seen.push(format!("{} {status}", c.name));
                    if status == code {
                        return seen;
                    }
                }
                _ => {}
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read_buf(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {code} within 10 s; got {seen:?}"))
            .unwrap();
        assert!(n > 0, "server closed the connection; got {seen:?}");
    }
}

#[tokio::test]
async fn media_written_together_with_publish_reaches_players() {
    let server = TestServer::start().await.unwrap();
    let name = unique_name("pipelined");
    let mut s = rtmp_raw::connect(server.rtmp_port).await.unwrap();
    client_handshake(&mut s).await.unwrap();

    let keyframe = Bytes::from(
        [
            &b"\x17\x01\x00\x00\x00\x00\x00\x00\x05\x65\x88\x84\x00"[..],
            &[0x55; 4000],
        ]
        .concat(),
    );
    let mut wire = BytesMut::new();
    Message::SetChunkSize(4096).encode(&mut wire, 0, 0, DEFAULT_CHUNK_SIZE);
    let tc_url = format!("rtmp://127.0.0.1:{}/live", server.rtmp_port);
    let object = Amf0Value::object([("app", Amf0Value::from("live")), ("tcUrl", tc_url.as_str().into())]);
    for (m, stream_id) in [
        (command("connect", 1.0, object, vec![]), 0),
        (
            command("releaseStream", 2.0, Amf0Value::Null, vec![name.as_str().into()]),
            0,
        ),
        (
            command("FCPublish", 3.0, Amf0Value::Null, vec![name.as_str().into()]),
            0,
        ),
        (command("createStream", 4.0, Amf0Value::Null, vec![]), 0),
        (
            command(
                "publish",
                5.0,
                Amf0Value::Null,
                vec![name.as_str().into(), "live".into()],
            ),
            1,
        ),
        (
            Message::Data(vec![
                "@setDataFrame".into(),
                "onMetaData".into(),
                Amf0Value::EcmaArray(vec![
                    ("width".into(), Amf0Value::Number(1280.0)),
                    ("height".into(), Amf0Value::Number(720.0)),
                    ("encoder".into(), "pipelining-test".into()),
                ]),
            ]),
            1,
        ),
        (Message::Video(Bytes::from_static(AVC_HEADER)), 1),
        (Message::Audio(Bytes::from_static(AAC_HEADER)), 1),
        (Message::Video(keyframe.clone()), 1),
    ] {
        m.encode(&mut wire, 0, stream_id, 4096);
    }
    // One write: nothing waits for an answer.
    s.write_all(&wire).await.unwrap();
    let seen = wait_status(&mut s, "NetStream.Publish.Start").await;
    assert!(
        seen.iter().filter(|l| l.starts_with("_result")).count() >= 4,
        "connect, releaseStream, FCPublish and createStream were all answered: {seen:?}"
    );

    let mut player = FlvPlayer::http(&server.flv_url(&name), Duration::from_secs(10))
        .await
        .unwrap();
    let tags = player
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap_or_else(|e| panic!("player: {e:#}; server log:\n{}", server.logs()));
    let described: Vec<String> = tags.iter().map(|t| t.describe()).collect();
    eprintln!("player got {described:?}");
    let script = tags
        .iter()
        .find(|t| t.is_script())
        .expect("onMetaData reached the player");
    assert_eq!(script.script_name().as_deref(), Some("onMetaData"), "{described:?}");
    let video_header = tags.iter().find(|t| t.is_video_seq_header()).expect("AVC header");
    assert_eq!(&video_header.data[..], AVC_HEADER);
    let audio_header = tags.iter().find(|t| t.is_audio_seq_header()).expect("AAC header");
    assert_eq!(&audio_header.data[..], AAC_HEADER);
    assert_eq!(&tags.last().unwrap().data[..], &keyframe[..], "{described:?}");
    drop(s);
}

/// A publisher that sends little (an audio-only stream at a few hundred bytes a second) is
/// read within the read-coalescing pause: the server asks the kernel to wake it only once a
/// full read is queued while the pause runs, and must lift that at the pause's end, or such a
/// stream would sit unread until 16 KB piled up.
#[tokio::test]
async fn a_trickling_publisher_reaches_players_frame_by_frame() {
    use ferrocast_tests::rtmp_client::RtmpClient;
    let server = TestServer::start().await.unwrap();
    let name = unique_name("trickle");
    let mut publisher = RtmpClient::connect(server.rtmp_port, "live").await.unwrap();
    publisher.publish(&name).await.unwrap();
    publisher
        .send_media(8, 0, Bytes::from_static(AAC_HEADER))
        .await
        .unwrap();
    let mut player = RtmpClient::connect(server.rtmp_port, "live").await.unwrap();
    player.play(&name).await.unwrap();
    // 20-byte AAC frames every 50 ms: 400 bytes a second.
    for i in 1..=20u32 {
        let mut frame = vec![0xaf, 0x01];
        frame.extend_from_slice(&[i as u8; 18]);
        publisher.send_media(8, i * 50, Bytes::from(frame)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Each frame must reach the player long before 16 KB could have piled up (40 s).
        loop {
            let m = player
                .next_media(Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("frame {i} never reached the player: {e:#}"))
                .expect("the server closed the player");
            if m.type_id == 8 && m.timestamp == i * 50 {
                break;
            }
        }
    }
}
