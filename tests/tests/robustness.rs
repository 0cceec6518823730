//! Misbehaving RTMP peers are closed, and only they: a live stream keeps flowing to an
//! HTTP-FLV player throughout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocast_tests::rtmp_raw::{self, client_handshake, type0_chunk_header, wait_closed, write_or_closed};
use ferrocast_tests::{FlvPlayer, Live, TestServer};
use rand::{RngCore, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

const HANDSHAKE_TIMEOUT_SECS: u64 = 2;
const IDLE_TIMEOUT_SECS: u64 = 5;
const MAX_MESSAGE_SIZE: u64 = 1 << 20;

/// A live stream on a server with short timeouts and a 1 MiB message cap, watched by an
/// HTTP-FLV player that counts video frames in the background.
struct Watched {
    live: Live,
    frames: Arc<AtomicU64>,
    last_ts: Arc<AtomicU64>,
    player: JoinHandle<anyhow::Result<()>>,
}

impl Watched {
    async fn start(prefix: &str) -> Watched {
        let live = Live::start_with(
            prefix,
            TestServer::builder()
                .handshake_timeout_secs(HANDSHAKE_TIMEOUT_SECS)
                .idle_timeout_secs(IDLE_TIMEOUT_SECS)
                .max_message_size(MAX_MESSAGE_SIZE),
            |p| p,
        )
        .await
        .unwrap();
        let mut player = FlvPlayer::http(&live.flv_url(), Duration::from_secs(10)).await.unwrap();
        let frames = Arc::new(AtomicU64::new(0));
        let last_ts = Arc::new(AtomicU64::new(0));
        let (f, l) = (frames.clone(), last_ts.clone());
        let player = tokio::spawn(async move {
            loop {
                match player.next_tag_within(Duration::from_secs(5)).await? {
                    Some(t) if t.is_video_frame() => {
                        f.fetch_add(1, Ordering::SeqCst);
                        l.store(t.timestamp as u64, Ordering::SeqCst);
                    }
                    Some(_) => {}
                    None => anyhow::bail!("player stream ended: {:?}", player.end),
                }
            }
        });
        let mut w = Watched {
            live,
            frames,
            last_ts,
            player,
        };
        w.assert_flowing("before the attack").await;
        w
    }

    /// Asserts the player receives at least 1 s worth of video in the next 1.5 s, with
    /// advancing timestamps.
    async fn assert_flowing(&mut self, when: &str) {
        let (c0, t0) = (self.frames.load(Ordering::SeqCst), self.last_ts.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (c1, t1) = (self.frames.load(Ordering::SeqCst), self.last_ts.load(Ordering::SeqCst));
        if self.player.is_finished() {
            let res = (&mut self.player).await;
            panic!("the HTTP-FLV player stopped {when}: {res:?}");
        }
        assert!(
            c1 - c0 >= 30,
            "the HTTP-FLV player got {} video frames in 1.5 s {when} (timestamps {t0} -> {t1})",
            c1 - c0
        );
        assert!(t1 > t0, "player timestamps did not advance {when}: {t0} -> {t1}");
    }

    async fn finish(mut self, what: &str) {
        self.assert_flowing(&format!("after {what}")).await;
        assert!(
            self.live.publisher.is_running(),
            "publisher died after {what}:\n{}",
            self.live.publisher.log()
        );
        assert!(self.live.server.is_running(), "server died after {what}");
        self.player.abort();
    }
}

#[tokio::test]
async fn random_bytes_instead_of_a_handshake_close_only_that_connection() {
    let w = Watched::start("rand").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xfe77_0ca5);
    let mut junk = vec![0u8; 64 * 1024];
    rng.fill_bytes(&mut junk);
    junk[0] = 0x47; // not RTMP version 3
    let mut s = rtmp_raw::connect(w.live.server.rtmp_port).await.unwrap();
    let _ = write_or_closed(&mut s, &junk).await.unwrap();
    let t = wait_closed(&mut s, Duration::from_secs(3))
        .await
        .unwrap_or_else(|e| panic!("64 KiB of random bytes: {e:#}"));
    eprintln!("closed after {t:?}");
    w.finish("random bytes").await;
}

#[tokio::test]
async fn random_chunk_stream_after_a_valid_handshake_closes_only_that_connection() {
    let w = Watched::start("randchunk").await;
    let mut s = rtmp_raw::connect(w.live.server.rtmp_port).await.unwrap();
    client_handshake(&mut s).await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0002);
    let mut junk = vec![0u8; 64 * 1024];
    rng.fill_bytes(&mut junk);
    let _ = write_or_closed(&mut s, &junk).await.unwrap();
    // Garbage that happens to look like a partial message may leave the server waiting for
    // the rest: then the idle timeout must close it.
    let t = wait_closed(&mut s, Duration::from_secs(IDLE_TIMEOUT_SECS + 3))
        .await
        .unwrap_or_else(|e| panic!("64 KiB of random chunk data after the handshake: {e:#}"));
    eprintln!("closed after {t:?}");
    w.finish("random chunk data").await;
}

#[tokio::test]
async fn huge_announced_message_length_closes_only_that_connection() {
    let w = Watched::start("huge").await;
    let mut s = rtmp_raw::connect(w.live.server.rtmp_port).await.unwrap();
    client_handshake(&mut s).await.unwrap();
    // A command message (type 20) announcing 0xFFFFFF bytes, over max_message_size (1 MiB),
    // followed by a first chunk of payload; the server must not buffer towards 16 MiB.
    let mut msg = type0_chunk_header(0xFF_FFFF, 20);
    msg.extend_from_slice(&[0x02; 128]);
    let start = Instant::now();
    let mut open = write_or_closed(&mut s, &msg).await.unwrap();
    // keep feeding continuation chunks (fmt 3, csid 3) for a while unless it is closed
    for _ in 0..64 {
        if !open {
            break;
        }
        let mut chunk = vec![0xC3u8];
        chunk.extend_from_slice(&[0x02; 128]);
        open = write_or_closed(&mut s, &chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = wait_closed(&mut s, Duration::from_secs(3))
        .await
        .unwrap_or_else(|e| panic!("a message announcing 0xFFFFFF bytes (cap {MAX_MESSAGE_SIZE}): {e:#}"));
    eprintln!("closed {t:?} after the feed, {:?} after the header", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(IDLE_TIMEOUT_SECS),
        "closed only after {:?}: that is the idle timeout, not the message size cap",
        start.elapsed()
    );
    w.finish("a huge message length").await;
}

#[tokio::test]
async fn stalled_handshake_is_closed_after_the_handshake_timeout() {
    let w = Watched::start("stall").await;
    let mut s = rtmp_raw::connect(w.live.server.rtmp_port).await.unwrap();
    s.write_all(&[3]).await.unwrap(); // C0 only, then nothing
    let start = Instant::now();
    let t = wait_closed(&mut s, Duration::from_secs(HANDSHAKE_TIMEOUT_SECS + 3))
        .await
        .unwrap_or_else(|e| panic!("a handshake stalled after C0 (timeout {HANDSHAKE_TIMEOUT_SECS} s): {e:#}"));
    assert!(
        t >= Duration::from_millis(HANDSHAKE_TIMEOUT_SECS * 1000 - 500),
        "closed after {t:?}, before the {HANDSHAKE_TIMEOUT_SECS} s handshake timeout"
    );
    eprintln!("closed after {:?}", start.elapsed());
    w.finish("a stalled handshake").await;
}
