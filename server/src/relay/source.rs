//! Where a pull reads from: one type over the RTMP(S), HTTP(S)-FLV and RTSP sources, each
//! yielding FLV-shaped media (the message bodies the hub's publishers take), plus the
//! settings every outgoing connection shares.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus::IntCounter;

use super::http_flv::FlvLink;
use super::rtmp::RtmpLink;
use super::rtsp::RtspLink;
use super::url::{RelayUrl, Scheme};
use super::RelayError;
use crate::codec::amf0::Amf0Value;
use crate::rtmp::client::ClientMode;

/// One media item from a source: bodies exactly as RTMP messages and FLV tags carry them.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingest {
    Video(u32, Bytes),
    Audio(u32, Bytes),
    /// `onMetaData` values.
    Metadata(Vec<Amf0Value>),
}

/// Byte counters of one relay: its own (for the API) and the Prometheus series of its mode.
#[derive(Clone)]
pub struct Counters {
    pub bytes_in: Arc<AtomicU64>,
    pub bytes_out: Arc<AtomicU64>,
    pub metric_in: IntCounter,
    pub metric_out: IntCounter,
}

impl Counters {
    pub fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        self.metric_in.inc_by(n as u64);
    }

    pub fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        self.metric_out.inc_by(n as u64);
    }
}

/// What every outgoing relay connection needs.
#[derive(Clone)]
pub struct LinkOptions {
    /// The relay hop path to send (see `relay::hop`).
    pub via: String,
    pub ca_file: Option<PathBuf>,
    pub tls_verify: bool,
    pub connect_timeout: Duration,
    /// A source that sends nothing for this long is dropped (and reconnected).
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub chunk_size: u32,
    pub max_peer_chunk_size: u32,
    pub max_message_size: u32,
    pub counters: Counters,
}

/// An open source, started and ready to yield media.
pub enum Source {
    Rtmp(Box<RtmpLink>),
    Flv(Box<FlvLink>),
    Rtsp(Box<RtspLink>),
}

impl Source {
    pub async fn open(url: &RelayUrl, opts: LinkOptions) -> Result<Source, RelayError> {
        Ok(match url.scheme {
            Scheme::Rtmp | Scheme::Rtmps => Source::Rtmp(Box::new(RtmpLink::open(url, ClientMode::Play, opts).await?)),
            Scheme::Http | Scheme::Https => Source::Flv(Box::new(FlvLink::open(url, opts).await?)),
            Scheme::Rtsp => Source::Rtsp(Box::new(RtspLink::open(url, opts).await?)),
        })
    }

    /// The next media item; `Err(RelayError::Ended)` when the source ended the stream.
    pub async fn next(&mut self) -> Result<Ingest, RelayError> {
        match self {
            Source::Rtmp(l) => l.next().await,
            Source::Flv(l) => l.next().await,
            Source::Rtsp(l) => l.next().await,
        }
    }
}
