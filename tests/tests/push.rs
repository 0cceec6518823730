//! FLV push, as Node-Media-Server v4 offers it: an HTTP POST of an FLV body (`ffmpeg -method
//! POST`) and a WebSocket with subprotocol `publisher` (or `post`) to /{app}/{name}.flv publish
//! a stream that RTMP players play; a second push on a live name is refused with 409.

use std::time::{Duration, Instant};

use ferrocast_tests::fixtures::{assert_h264_720p_and_aac_only, ffprobe, LIVE_TIMEOUT};
use ferrocast_tests::modern::decode;
use ferrocast_tests::process::{describe_output, run_bounded, tail};
use ferrocast_tests::{flv, http, require_tool, unique_name, Publisher, TempDir, TestServer};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const SECS: fn(u64) -> Duration = Duration::from_secs;

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
/// An FLV header (audio + video) and PreviousTagSize0: the start of any FLV body.
const FLV_HEADER: &[u8] = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00";

/// Opens a WebSocket to `url` offering `subprotocol`; the handshake's HTTP status (101 when
/// accepted) and the stream when accepted.
async fn ws_connect(url: &str, subprotocol: &str) -> (u16, Option<WsStream>) {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(subprotocol).unwrap());
    let Ok(res) = tokio::time::timeout(SECS(10), tokio_tungstenite::connect_async(req)).await else {
        panic!("WebSocket handshake with {url} took over 10 s");
    };
    match res {
        Ok((ws, resp)) => {
            assert_eq!(
                resp.headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok()),
                Some(subprotocol),
                "the server must accept the offered subprotocol"
            );
            (resp.status().as_u16(), Some(ws))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (resp.status().as_u16(), None),
        Err(e) => panic!("WebSocket handshake with {url} failed: {e}"),
    }
}

/// A second push on `name` (live) is refused with 409, over HTTP POST and over WebSocket
/// (subprotocol `post`).
async fn assert_second_push_refused(server: &TestServer, name: &str) {
    let mut resp = http::request(
        "POST",
        &server.flv_url(name),
        &[("Content-Type", "video/x-flv")],
        Some(FLV_HEADER),
        SECS(5),
    )
    .await
    .unwrap();
    let body = resp.read_to_end(SECS(5)).await.map(|(b, _)| b).unwrap_or_default();
    assert_eq!(
        resp.status,
        409,
        "second HTTP POST push on a live name: {} {}",
        resp.status,
        String::from_utf8_lossy(&body)
    );
    let (status, _) = ws_connect(&server.ws_url(name), "post").await;
    assert_eq!(
        status, 409,
        "second push over WebSocket (subprotocol post) on a live name"
    );
}

#[tokio::test]
async fn http_post_push_plays_over_rtmp_and_a_second_push_is_refused() {
    let server = TestServer::start().await.unwrap();
    let name = unique_name("post");
    let mut publisher = Publisher::builder(&server.flv_url(&name))
        .duration_secs(20)
        .start()
        .unwrap();
    if let Err(e) = server.wait_live(&name, LIVE_TIMEOUT).await {
        panic!(
            "HTTP POST push did not go live: {e:#}\nffmpeg: {:?}\n{}",
            publisher.try_status(),
            publisher.log()
        );
    }

    assert_second_push_refused(&server, &name).await;

    let probe = ffprobe(&server.rtmp_url(&name), &[], 20).await.unwrap();
    assert_h264_720p_and_aac_only(&probe, "HTTP POST push played over RTMP");
    assert!(
        publisher.is_running(),
        "the POST push ended early:\n{}",
        publisher.log()
    );
    let log = server.logs();
    assert!(log.contains("http-flv push started"), "{}", tail(&log, 3000));
    publisher.kill().await;
}

/// Byte offset of each tag in an FLV file, with the tag's timestamp.
fn tag_starts(tags: &[flv::Tag]) -> Vec<(usize, u32)> {
    let mut at = 13;
    tags.iter()
        .map(|t| {
            let start = at;
            at += 11 + t.data.len() + 4;
            (start, t.timestamp)
        })
        .collect()
}

#[tokio::test]
async fn websocket_push_plays_over_rtmp() {
    require_tool("ffmpeg");
    // 6 s of 640x360 H.264 + AAC as an FLV file.
    let dir = TempDir::new("ferrocast-ws-push").unwrap();
    let file = dir.join("push.flv");
    let mut args: Vec<String> = "-hide_banner -nostdin -loglevel error \
        -f lavfi -i testsrc=size=640x360:rate=30 -f lavfi -i sine=frequency=440:sample_rate=44100 \
        -c:v libx264 -preset ultrafast -tune zerolatency -g 30 -pix_fmt yuv420p -c:a aac \
        -t 6 -f flv -y"
        .split_whitespace()
        .map(str::to_string)
        .collect();
    args.push(file.display().to_string());
    let out = run_bounded("ffmpeg", &args, 60).await.unwrap();
    assert!(
        out.status.success(),
        "encoding the FLV failed\n{}",
        describe_output(&out)
    );
    let bytes = std::fs::read(&file).unwrap();
    let (_, tags) = flv::parse_all(&bytes).unwrap();
    let starts = tag_starts(&tags);

    let server = TestServer::start().await.unwrap();
    let name = unique_name("wspush");
    let (status, ws) = ws_connect(&server.ws_url(&name), "publisher").await;
    assert_eq!(status, 101, "WebSocket push (subprotocol publisher) refused");
    let mut ws = ws.unwrap();

    // The file in 16 KiB binary messages (cut anywhere, tags split across messages) at the
    // pace of its timestamps.
    let send = async {
        let start = Instant::now();
        let mut sent = 0usize;
        let mut messages = 0u32;
        for piece in bytes.chunks(16 * 1024) {
            ws.send(Message::binary(piece.to_vec())).await?;
            sent += piece.len();
            messages += 1;
            // The timestamp of the last tag this piece reaches into.
            let ts = starts
                .iter()
                .take_while(|(start, _)| *start < sent)
                .last()
                .map_or(0, |(_, ts)| *ts);
            tokio::time::sleep_until((start + Duration::from_millis(u64::from(ts))).into()).await;
        }
        ws.close(None).await?;
        anyhow::Ok(messages)
    };
    let play = async {
        server.wait_live(&name, LIVE_TIMEOUT).await?;
        assert_second_push_refused(&server, &name).await;
        decode(&require_tool("ffmpeg"), &server.rtmp_url(&name), Some(2), 20).await
    };
    let (sent, report) = tokio::join!(send, play);
    let messages = sent.unwrap();
    assert!(messages >= 10, "only {messages} WebSocket messages");
    report
        .unwrap()
        .assert_decoded("WebSocket push played over RTMP", "h264", Some((640, 360)), "aac", 20);
    let log = server.logs();
    assert!(log.contains("ws-flv push started"), "{}", tail(&log, 3000));
}
