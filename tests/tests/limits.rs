//! Anonymous clients cannot make the server hold more than its limits: waiting streams are
//! capped per client address and per app (and make no metric series), HEAD never waits,
//! WebSockets and HTTP/2 FLV streams keep connection places, one address cannot take every
//! connection, and silent pushers free their stream name.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ferrocast_tests::http::{connect_from, get_text, request_on};
use ferrocast_tests::rtmp_client::RtmpClient;
use ferrocast_tests::rtmp_raw::{client_handshake, wait_closed, write_or_closed};
use ferrocast_tests::server::TlsCertificate;
use ferrocast_tests::tls::{h2_get, SecretDir, TestCa};
use ferrocast_tests::{unique_name, FlvPlayer, Live, TempDir, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `METHOD /live/{name}.flv` from loopback address `from`: the status and, unless it is 200
/// (a player waiting for its stream), the body. The connection is closed afterwards.
async fn request_from(server: &TestServer, from: IpAddr, method: &str, name: &str) -> Result<(u16, String)> {
    let tcp = connect_from(from, server.http_port).await?;
    let authority = format!("127.0.0.1:{}", server.http_port);
    let path = format!("/live/{name}.flv");
    let mut resp = tokio::time::timeout(
        Duration::from_secs(5),
        request_on(Box::new(tcp), method, &authority, &path, &[], None),
    )
    .await
    .map_err(|_| anyhow!("{method} {path} from {from}: no response head within 5 s"))??;
    if resp.status == 200 || method == "HEAD" {
        return Ok((resp.status, String::new()));
    }
    let (body, _) = resp.read_to_end(Duration::from_secs(5)).await?;
    Ok((resp.status, String::from_utf8_lossy(&body).into_owned()))
}

async fn play_from(server: &TestServer, from: IpAddr, name: &str) -> (u16, String) {
    request_from(server, from, "GET", name)
        .await
        .unwrap_or_else(|e| panic!("GET {name} from {from}: {e:#}"))
}

#[tokio::test]
async fn waiting_streams_are_capped_per_client_address_and_per_app() {
    let server = TestServer::builder()
        .section_yaml("hub", "max_waiting_streams_per_app: 5")
        .section_yaml("hub", "max_waiting_streams_per_ip: 2")
        .start()
        .await
        .unwrap();
    let (a, b, c) = (ip("127.0.0.1"), ip("127.0.0.2"), ip("127.0.0.3"));
    let w = |i: u32| format!("wait{i}");
    assert_eq!(play_from(&server, a, &w(1)).await.0, 200);
    assert_eq!(play_from(&server, a, &w(2)).await.0, 200);
    let (status, why) = play_from(&server, a, &w(3)).await;
    assert_eq!(status, 429, "a third waiting stream from one address: {why}");
    assert!(why.contains("wait for a publisher"), "the refusal says why: {why:?}");
    assert_eq!(
        play_from(&server, a, &w(1)).await.0,
        200,
        "joining a stream that already waits creates nothing"
    );

    // RTMP plays of unpublished names count the same way.
    let mut rtmp = RtmpClient::connect(server.rtmp_port, "live").await.unwrap();
    let err = rtmp.play(&w(9)).await.expect_err("a third waiting stream over RTMP");
    assert!(
        format!("{err:#}").contains("NetStream.Play.StreamNotFound"),
        "RTMP refusal: {err:#}"
    );

    assert_eq!(play_from(&server, b, &w(3)).await.0, 200);
    assert_eq!(play_from(&server, b, &w(4)).await.0, 200);
    assert_eq!(play_from(&server, c, &w(5)).await.0, 200);
    let (status, why) = play_from(&server, c, &w(6)).await;
    assert_eq!(status, 503, "a sixth waiting stream in the app: {why}");
    assert!(why.contains("of this app"), "the refusal says why: {why:?}");

    // A published stream no longer waits: its client and its app may wait on another.
    let mut publisher = RtmpClient::connect(server.rtmp_port, "live").await.unwrap();
    publisher.publish(&w(1)).await.unwrap();
    assert_eq!(play_from(&server, a, &w(7)).await.0, 200);
}

/// GETs for `n` distinct names from `from`, 64 at a time, each closed once its head arrived:
/// (answered 200, answered 429).
async fn flood(server: &TestServer, from: IpAddr, prefix: &str, n: usize) -> (usize, usize) {
    use futures_util::StreamExt;
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}_{i}")).collect();
    let statuses: Vec<u16> = futures_util::stream::iter(names.iter())
        .map(|name| async move { play_from(server, from, name).await.0 })
        .buffer_unordered(64)
        .collect()
        .await;
    let count = |s| statuses.iter().filter(|&&x| x == s).count();
    assert_eq!(count(200) + count(429), n, "statuses: {statuses:?}");
    (count(200), count(429))
}

#[tokio::test]
async fn thousands_of_anonymous_gets_hold_bounded_memory_and_make_no_series() {
    let server = TestServer::builder().start().await.unwrap();
    // Warm the server's connection handling up from another address first, so what is
    // measured is what the flood leaves behind.
    flood(&server, ip("127.0.0.2"), "warm", 500).await;
    let before = server.rss_bytes().unwrap();
    let (waiting, refused) = flood(&server, ip("127.0.0.1"), "flood", 5000).await;
    let after = server.rss_bytes().unwrap();
    let grown = after.saturating_sub(before) as f64 / (1 << 20) as f64;
    eprintln!("5000 GETs: {waiting} waiting, {refused} refused; RSS {before} -> {after} (+{grown:.1} MiB)");
    assert_eq!(waiting, 32, "hub.max_waiting_streams_per_ip defaults to 32");
    assert!(
        grown < 16.0,
        "RSS grew by {grown:.1} MiB for 5000 GETs of unpublished names"
    );
    let (_, metrics) = get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
        .await
        .unwrap();
    let series: Vec<&str> = metrics.lines().filter(|l| l.contains("stream=\"flood_")).collect();
    assert!(
        series.is_empty(),
        "waiting streams have metric series: {} such lines, e.g. {:?}",
        series.len(),
        series.first()
    );
}

#[tokio::test]
async fn head_answers_at_once_and_never_waits() {
    let live = Live::start_with(
        "head",
        TestServer::builder()
            .play_wait_secs(60)
            .section_yaml("hub", "max_waiting_streams_per_ip: 1"),
        |p| p,
    )
    .await
    .unwrap();
    let server = &live.server;
    let me = ip("127.0.0.1");
    for i in 0..20 {
        let (status, _) = request_from(server, me, "HEAD", &format!("nothing{i}")).await.unwrap();
        assert_eq!(status, 404, "HEAD of a stream nobody publishes");
    }
    let tcp = connect_from(me, server.http_port).await.unwrap();
    let resp = request_on(
        Box::new(tcp),
        "HEAD",
        "127.0.0.1",
        &format!("/live/{}.flv", live.name),
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "HEAD of the live stream");
    assert_eq!(resp.header("content-type"), Some("video/x-flv"));
    // The HEADs left no waiting stream behind: this address may still wait on one (and one only).
    assert_eq!(play_from(server, me, "after_heads_1").await.0, 200);
    assert_eq!(play_from(server, me, "after_heads_2").await.0, 429);
}

#[tokio::test]
async fn websockets_keep_their_connection_place() {
    let live = Live::start_with(
        "wsplaces",
        TestServer::builder().section_yaml("http", "max_connections: 3"),
        |p| p.duration_secs(120),
    )
    .await
    .unwrap();
    // The places fill up with WebSockets (the HTTP-FLV player that saw the stream go live
    // gives its place back once the server notices it left).
    let mut players = Vec::new();
    for _ in 0..100 {
        if players.len() == 3 {
            break;
        }
        match FlvPlayer::ws(&live.ws_url(), Duration::from_secs(5)).await {
            Ok(mut p) => {
                p.read_until(Duration::from_secs(10), |t| t.is_video_frame())
                    .await
                    .expect("an admitted WS-FLV player gets video");
                players.push(p);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(players.len(), 3, "three WS-FLV players are admitted");
    // Their HTTP connections ended at the upgrade, yet they still hold the places.
    let mut extra = 0;
    for _ in 0..5 {
        if let Ok(mut p) = FlvPlayer::ws(&live.ws_url(), Duration::from_secs(5)).await {
            if p.read_until(Duration::from_secs(10), |t| t.is_video_frame())
                .await
                .is_ok()
            {
                extra += 1;
            }
        }
    }
    assert_eq!(extra, 0, "WS-FLV players beyond http.max_connections 3 were served");
    drop(players.pop());
    let mut again = None;
    for _ in 0..50 {
        if let Ok(p) = FlvPlayer::ws(&live.ws_url(), Duration::from_secs(5)).await {
            again = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    again.expect("a WebSocket that ended gives its place back");
}

#[tokio::test]
async fn http2_flv_streams_take_connection_places() {
    let ca = TestCa::new("limits test CA");
    let dir = TempDir::new("limits-tls").unwrap();
    let secret = SecretDir::create(&dir.join("default"), &ca.issue(&["localhost"])).unwrap();
    let server = TestServer::builder()
        .tls(vec![TlsCertificate::new(secret.cert_file(), secret.key_file(), &[])])
        .section_yaml("http", "max_connections: 3")
        .start()
        .await
        .unwrap();
    let port = server.https_port();
    let name = unique_name("h2places");
    let path = format!("/live/{name}.flv");
    // The connection takes one place and each FLV stream on it one more.
    let (parts, _body1, mut sender) = h2_get(port, "localhost", &ca, &path).await.unwrap();
    assert_eq!(parts.status, 200, "first HTTP/2 player");
    let get = |sender: &mut ferrocast_tests::player::H2Sender| {
        let req = hyper::Request::get(format!("https://localhost:{port}{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let fut = sender.send_request(req);
        async move {
            tokio::time::timeout(Duration::from_secs(10), fut)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let second = get(&mut sender).await;
    assert_eq!(second.status(), 200, "second HTTP/2 player");
    let third = get(&mut sender).await;
    assert_eq!(
        third.status(),
        503,
        "a third FLV stream would be the fourth place of http.max_connections 3"
    );
    drop(second);
    let mut fourth = 0;
    for _ in 0..50 {
        fourth = get(&mut sender).await.status().as_u16();
        if fourth == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fourth, 200, "an ended HTTP/2 stream gives its place back");
}

/// True once the server closed `s` (EOF or reset) within `d`.
async fn closed_within(s: &mut TcpStream, d: Duration) -> bool {
    wait_closed(s, d).await.is_ok()
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let server = TestServer::builder()
        .section_yaml("http", "max_connections_per_ip: 2")
        .section_yaml("rtmp", "max_connections_per_ip: 2")
        .start()
        .await
        .unwrap();
    let (a, b) = (ip("127.0.0.1"), ip("127.0.0.2"));

    // Two connections answered once (so both are surely admitted), kept open.
    let mut held_http = Vec::new();
    for _ in 0..2 {
        let tcp = connect_from(a, server.http_port).await.unwrap();
        let resp = request_on(Box::new(tcp), "HEAD", "127.0.0.1", "/live/held.flv", &[], None)
            .await
            .unwrap();
        assert_eq!(resp.status, 404);
        held_http.push(resp);
    }
    let mut held = Vec::new();
    let mut third = connect_from(a, server.http_port).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(5)).await,
        "a third HTTP connection from one address is closed"
    );
    assert_eq!(
        play_from(&server, b, "other_client").await.0,
        200,
        "another address is served"
    );

    for _ in 0..2 {
        let mut s = connect_from(a, server.rtmp_port).await.unwrap();
        client_handshake(&mut s).await.unwrap();
        held.push(s);
    }
    let mut third = connect_from(a, server.rtmp_port).await.unwrap();
    let _ = write_or_closed(&mut third, &[3]).await;
    assert!(
        closed_within(&mut third, Duration::from_secs(5)).await,
        "a third RTMP connection from one address is closed"
    );
    let mut other = connect_from(b, server.rtmp_port).await.unwrap();
    client_handshake(&mut other)
        .await
        .expect("another address completes the RTMP handshake");
}

// --- pushers ----------------------------------------------------------------------------------

const IDLE_SECS: u64 = 2;
const FLV_HEADER: &[u8] = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00";

/// Reads a response head from a raw socket: its status.
async fn read_status(s: &mut TcpStream, within: Duration) -> Result<u16> {
    let mut head = Vec::new();
    let fut = async {
        while !head.ends_with(b"\r\n\r\n") {
            let b = s.read_u8().await.context("reading the response head")?;
            head.push(b);
            if head.len() > 8192 {
                bail!("response head over 8 KiB");
            }
        }
        let line = String::from_utf8_lossy(&head);
        line.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line in {line:?}"))
    };
    tokio::time::timeout(within, fut)
        .await
        .map_err(|_| anyhow!("no response head within {within:?}"))?
}

/// Whether an RTMP publish of `name` is accepted now (the client is dropped at once).
async fn rtmp_publish_accepted(server: &TestServer, name: &str) -> bool {
    let mut c = RtmpClient::connect(server.rtmp_port, "live").await.unwrap();
    c.publish(name).await.is_ok()
}

#[tokio::test]
async fn silent_http_post_pusher_frees_the_name_after_the_idle_timeout() {
    let server = TestServer::builder()
        .idle_timeout_secs(IDLE_SECS)
        .start()
        .await
        .unwrap();
    let name = unique_name("silentpost");
    let mut s = TcpStream::connect(("127.0.0.1", server.http_port)).await.unwrap();
    let head = format!(
        "POST /live/{name}.flv HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        FLV_HEADER.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(FLV_HEADER).await.unwrap();
    s.write_all(b"\r\n").await.unwrap();
    // Give the server the push before the RTMP publisher asks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !rtmp_publish_accepted(&server, &name).await,
        "the POST holds the name while it is not idle yet"
    );
    let status = read_status(&mut s, Duration::from_secs(IDLE_SECS + 8))
        .await
        .expect("the silent POST is answered once idle");
    assert_eq!(status, 408);
    assert!(
        rtmp_publish_accepted(&server, &name).await,
        "the name is free after the silent pusher was closed"
    );
}

/// A masked client WebSocket frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Opens a WebSocket FLV pusher for `name` on `s` and sends the FLV header.
async fn ws_pusher(s: &mut TcpStream, name: &str) {
    let req = format!(
        "GET /live/{name}.flv HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: publisher\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(read_status(s, Duration::from_secs(5)).await.unwrap(), 101);
    s.write_all(&client_frame(0x2, FLV_HEADER)).await.unwrap();
}

#[tokio::test]
async fn silent_websocket_pusher_is_closed_after_the_idle_timeout() {
    let server = TestServer::builder()
        .idle_timeout_secs(IDLE_SECS)
        .start()
        .await
        .unwrap();
    let name = unique_name("silentws");
    let mut s = TcpStream::connect(("127.0.0.1", server.http_port)).await.unwrap();
    ws_pusher(&mut s, &name).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !rtmp_publish_accepted(&server, &name).await,
        "the WebSocket pusher holds the name while it is not idle yet"
    );
    let mut close = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(IDLE_SECS + 8), s.read_exact(&mut close))
        .await
        .expect("a close frame once idle")
        .unwrap();
    assert_eq!(
        (close[0], u16::from_be_bytes([close[2], close[3]])),
        (0x88, 1008),
        "close frame"
    );
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    assert!(
        rtmp_publish_accepted(&server, &name).await,
        "the name is free after the silent pusher was closed"
    );
}

#[tokio::test]
async fn websocket_pusher_that_never_reads_its_pongs_is_closed() {
    let server = TestServer::builder().write_timeout_secs(2).start().await.unwrap();
    let name = unique_name("pongs");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small receive window, so unread pongs back up into the server soon.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(([127, 0, 0, 1], server.http_port).into()).await.unwrap();
    ws_pusher(&mut s, &name).await;
    let ping = client_frame(0x9, &[b'p'; 125]);
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 64).collect();
    let mut open = true;
    for _ in 0..100_000 {
        open = write_or_closed(&mut s, &burst)
            .await
            .expect("the server keeps reading or closes; it never just stops");
        if !open {
            break;
        }
    }
    assert!(!open, "a pusher that never reads its pongs is closed");
}
