//! An RTMP peer that has not connected (or not published) cannot make the server hold far
//! more memory than it sent: command messages are small, AMF0 decoding is bounded, and the
//! messages left unfinished across chunk streams are capped. Asserted on the server's peak
//! RSS (VmHWM), which records even a burst that was freed again.

use std::time::Duration;

use bytes::BytesMut;
use ferrocast_server::codec::amf0::{self, Amf0Value};
use ferrocast_server::codec::chunk::encode_message;
use ferrocast_server::codec::message::{Command, Message};
use ferrocast_tests::rtmp_raw::{self, client_handshake, wait_closed, write_or_closed};
use ferrocast_tests::TestServer;
use tokio::net::TcpStream;

/// Concurrent attackers of each kind.
const ATTACKERS: usize = 4;
/// How much the server's peak RSS may grow while they attack. Unbounded, each kind below
/// makes it hold hundreds of MiB; bounded, the attackers are closed at their first header.
const MAX_PEAK_GROWTH_KB: u64 = 32 * 1024;
/// Long enough that a close before it is the limits' doing, not the idle timeout's.
const IDLE_TIMEOUT_SECS: u64 = 30;
/// Every attacker must be closed within this.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);

async fn handshaken(port: u16) -> TcpStream {
    let mut s = rtmp_raw::connect(port).await.unwrap();
    client_handshake(&mut s).await.unwrap();
    s
}

fn set_chunk_size(size: u32) -> BytesMut {
    let mut out = BytesMut::new();
    Message::SetChunkSize(size).encode(&mut out, 0, 0, 128);
    out
}

/// Writes `wire` in 256 KiB pieces until the server closes; true if it all went out.
async fn feed(s: &mut TcpStream, wire: &[u8]) -> bool {
    for piece in wire.chunks(256 * 1024) {
        if !write_or_closed(s, piece).await.unwrap() {
            return false;
        }
    }
    true
}

/// A 4 MiB `connect` whose argument is a strict array of 4 million nulls: one byte each on
/// the wire, tens of bytes each once decoded.
async fn amf0_bomb(port: u16) {
    let mut s = handshaken(port).await;
    let mut body = BytesMut::new();
    amf0::encode(&Amf0Value::from("connect"), &mut body);
    amf0::encode(&Amf0Value::Number(1.0), &mut body);
    let count = 4 << 20;
    body.extend_from_slice(&[0x0a]);
    body.extend_from_slice(&(count as u32).to_be_bytes());
    body.resize(body.len() + count, 0x05);
    let mut wire = set_chunk_size(1 << 20);
    encode_message(&mut wire, 3, 0, 20, 0, &body, 1 << 20);
    feed(&mut s, &wire).await;
    wait_closed(&mut s, CLOSED_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("a 4 MiB AMF0 bomb before connect: {e:#}"));
}

/// 64 chunk streams, each starting a 16 MiB video message and sending 512 KiB of it, with
/// or without an accepted `connect` first.
async fn unfinished_messages(port: u16, connect_first: bool) {
    let mut s = handshaken(port).await;
    let mut wire = set_chunk_size(65536);
    if connect_first {
        Message::Command(Command {
            name: "connect".into(),
            transaction_id: 1.0,
            object: Amf0Value::object([("app", Amf0Value::from("live"))]),
            args: vec![],
        })
        .encode(&mut wire, 0, 0, 65536);
    }
    let chunk = vec![0x27u8; 65536];
    for round in 0..8 {
        for csid in 3u8..67 {
            if round == 0 {
                // Type 0: timestamp 0, length 0xFFFFFF, video, stream 1.
                wire.extend_from_slice(&[csid, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0]);
            } else {
                wire.extend_from_slice(&[0xc0 | csid]);
            }
            wire.extend_from_slice(&chunk);
        }
    }
    feed(&mut s, &wire).await;
    wait_closed(&mut s, CLOSED_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("64 unfinished 16 MiB messages (connect first: {connect_first}): {e:#}"));
}

/// Messages each under the command cap, started on many chunk streams and never finished:
/// only the cap on their total closes this peer (short of the idle timeout).
async fn many_small_unfinished(port: u16) {
    let mut s = handshaken(port).await;
    let mut wire = set_chunk_size(65536);
    for csid in 3u8..67 {
        // A 60000-byte command message of which 30000 bytes arrive.
        wire.extend_from_slice(&[csid, 0, 0, 0, 0x00, 0xea, 0x60, 20, 0, 0, 0, 0]);
        wire.extend_from_slice(&[0x05; 30000]);
    }
    feed(&mut s, &wire).await;
    wait_closed(&mut s, CLOSED_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("64 unfinished 60000-byte commands: {e:#}"));
}

#[tokio::test]
async fn unauthenticated_rtmp_peers_cannot_make_the_server_hold_much_more_than_they_send() {
    let mut server = TestServer::builder()
        .idle_timeout_secs(IDLE_TIMEOUT_SECS)
        .start()
        .await
        .unwrap();
    let port = server.rtmp_port;
    let before = server.peak_rss_kb().unwrap();
    // One kind at a time, its attackers together.
    for kind in 0..4 {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..ATTACKERS {
            match kind {
                0 => set.spawn(amf0_bomb(port)),
                1 => set.spawn(unfinished_messages(port, false)),
                2 => set.spawn(unfinished_messages(port, true)),
                _ => set.spawn(many_small_unfinished(port)),
            };
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        eprintln!("after attack {kind}: peak RSS {} KiB", server.peak_rss_kb().unwrap());
    }
    let after = server.peak_rss_kb().unwrap();
    eprintln!("server peak RSS {before} KiB -> {after} KiB");
    assert!(
        after.saturating_sub(before) <= MAX_PEAK_GROWTH_KB,
        "peak RSS grew by {} KiB (limit {MAX_PEAK_GROWTH_KB} KiB) under peers that never published",
        after - before
    );
    assert!(server.is_running(), "the server died under the attack");
}
