//! Ferrocast media engine.
//!
//! # Layout
//! - [`api`]: the REST API under `/api/v1` (login, streams, sessions, kick, URLs).
//! - [`auth`]: per-app publish and play policies (signed URLs), secrets from files.
//! - [`config`]: the YAML configuration types (shared with the operator).
//! - [`codec`]: pure, synchronous wire formats: AMF0, RTMP handshake and chunk stream,
//!   typed RTMP messages, FLV tags, H.264/AAC sequence headers. No tokio.
//! - [`rtmp`]: the sans-IO RTMP [`rtmp::session`] and its socket driver [`rtmp::conn`].
//! - [`hub`]: streams, the GOP cache and zero-copy fan-out to readers.
//! - [`hls`]: HLS, LL-HLS and DASH from an in-memory CMAF segmenter per stream.
//! - [`http`]: the public axum router (HTTP-FLV, WS-FLV, HLS/DASH) and the admin router.
//! - [`server`]: listeners (plain and TLS), connection limits and graceful shutdown.
//! - [`session`]: the registry of live client sessions (listing, kicking, counting).
//! - [`tls`]: certificates for RTMPS and HTTPS: PEM loading, SNI selection, live reload.
//! - [`webhooks`]: lifecycle webhooks (pre* decide, post*/done* queued) and the event feed.
//! - [`metrics`]: every Prometheus metric the server exports.

pub mod api;
pub mod auth;
pub mod codec;
pub mod config;
pub mod hls;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod net;
pub mod rtmp;
pub mod server;
pub mod session;
pub mod tls;
pub mod webhooks;
