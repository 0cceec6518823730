//! Harness for Ferrocast's end-to-end tests.
//!
//! Every test drives the real `ferrocast` binary (see [`env::server_bin`]) with real clients:
//! ffmpeg, ffprobe, rtmpdump, GStreamer, a Rust WebSocket / HTTP client and headless Chromium.
//! External tools are installed by `scripts/test.sh`; a test never skips because one is
//! missing, it fails naming the tool ([`env::require_tool`]).
//!
//! - [`env`]: where the workspace, the server binary, `.tools/` and external tools are.
//! - [`process`]: external processes bounded with `timeout -k`, killed with their process group.
//! - [`fixtures`]: a live stream ([`fixtures::Live`]) and ffprobe checks.
//! - [`server`]: [`server::TestServer`] on free ports with a generated YAML config.
//! - [`publisher`]: an ffmpeg publisher of a generated H.264/AAC stream.
//! - [`flv`]: an incremental FLV parser (header, tags, keyframe and sequence-header flags).
//! - [`http`]: a minimal HTTP/1.1 client that streams a response body (chunked or not).
//! - [`kube_mount`]: a directory laid out as the kubelet mounts ConfigMaps and Secrets (`..data`).
//! - [`player`]: HTTP-FLV and WS-FLV players yielding FLV tags and how the stream ended.
//! - [`rtmp_raw`]: raw RTMP sockets (hand-written simple handshake) for robustness tests.
//! - [`rtmp_client`]: an RTMP publisher / player on the server crate's codecs (legacy HEVC).
//! - [`tls`]: a throwaway CA (rcgen), Kubernetes-style certificate files, and HTTPS (HTTP/1.1,
//!   HTTP/2) and WSS clients trusting the CA.
//! - [`modern`]: FFmpeg 9 from imageio-ffmpeg (HEVC, AV1, VP9, Opus) and `ffmpeg -f null` checks.
//! - [`peers`]: other servers relays talk to: nginx with the RTMP module, GStreamer's RTSP server.

pub mod env;
pub mod fixtures;
pub mod flv;
pub mod http;
pub mod kube_mount;
pub mod modern;
pub mod peers;
pub mod player;
pub mod process;
pub mod publisher;
pub mod rtmp_client;
pub mod rtmp_raw;
pub mod server;
pub mod tls;
pub mod webhook;

pub use env::{require_tool, server_bin, workspace_root, TempDir};
pub use fixtures::Live;
pub use flv::{FlvHeader, FlvParser, Tag};
pub use player::{FlvPlayer, StreamEnd};
pub use process::{run_bounded, Proc};
pub use publisher::{publish_accepted, Publisher};
pub use server::{TestServer, TestServerBuilder};

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A stream name unique within this test run, so tests sharing nothing never collide.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{:x}", std::process::id(), nanos & 0xffff)
}

/// An argon2 PHC hash of `password`, as API user files hold them.
pub fn argon2_phc(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes make a salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes")
        .to_string()
}
