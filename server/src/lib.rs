//! Ferrocast media engine.
//!
//! # Layout
//! - [`api`]: the REST API under `/api/v1` (login, streams, sessions, kick, URLs).
//! - [`auth`]: per-app publish and play policies (signed URLs), secrets from files.
//! - [`cluster`]: the fleet: peers, publish claims across pods, pulls from the owning pod.
//! - [`config`]: the YAML configuration types (shared with the operator).
//! - [`codec`]: pure, synchronous wire formats: AMF0, RTMP handshake and chunk stream,
//!   typed RTMP messages, FLV tags, H.264/AAC sequence headers. No tokio.
//! - [`rtmp`]: the sans-IO RTMP [`rtmp::session`] and its socket driver [`rtmp::conn`], and
//!   the sans-IO [`rtmp::client`] relays use.
//! - [`relay`]: pulls from and pushes to other servers (RTMP(S), HTTP(S)-FLV, RTSP), static
//!   and on demand, supervised; loop detection; the relay API's state.
//! - [`hub`]: streams, the GOP cache and zero-copy fan-out to readers.
//! - [`hls`]: HLS, LL-HLS and DASH from an in-memory CMAF segmenter per stream.
//! - [`record`]: recordings (FLV, MP4, fMP4) to the scratch disk, uploads to object storage.
//! - [`http`]: the public axum router (HTTP-FLV, WS-FLV, HLS/DASH) and the admin router.
//! - [`console`]: the web console at `/admin/` and the embeddable player page (embedded assets).
//! - [`load`]: the ring of recent server load samples behind the console's charts.
//! - [`server`]: listeners (plain and TLS), connection limits and graceful shutdown.
//! - [`limits`]: connection places per listener family, in total and per client address.
//! - [`net`]: socket wrappers (write stalls, first-read deadline) and the PROXY protocol step.
//! - [`proxy_protocol`]: the sans-IO PROXY protocol v1/v2 header parser.
//! - [`session`]: the registry of live client sessions (listing, kicking, counting).
//! - [`transcode`]: ffmpeg renditions of a source (fission), supervised, published to the hub.
//! - [`tls`]: certificates for RTMPS and HTTPS: PEM loading, SNI selection, live reload.
//! - [`webhooks`]: lifecycle webhooks (pre* decide, post*/done* queued) and the event feed.
//! - [`metrics`]: every Prometheus metric the server exports.
//! - `fuzzing` (hidden): the fuzz entry points shared by `fuzz/` and the corpus replay test.
//! - [`redact`]: credentials (keys, tokens, signatures) kept out of logs, webhooks and events.
//! - [`reload`]: what a reload may change; the revision and status of the config in service.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod console;
#[doc(hidden)]
pub mod fuzzing;
pub mod hls;
pub mod http;
pub mod hub;
pub mod limits;
pub mod load;
pub mod metrics;
pub mod net;
pub mod proxy_protocol;
pub mod record;
pub mod redact;
pub mod relay;
pub mod reload;
pub mod rtmp;
pub mod server;
pub mod serving;
pub mod session;
pub mod tls;
pub mod transcode;
pub mod utc;
pub mod webhooks;
