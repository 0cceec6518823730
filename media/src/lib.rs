//! Ferrocast container writers: pure, synchronous, no I/O and no async runtime.
//!
//! # Layout
//! - [`fmp4`]: fragmented MP4 / CMAF: an init segment from track configurations, a fragment
//!   (`moof` + `mdat`) from samples, the sample entry and RFC 6381 `CODECS` string of every
//!   codec Ferrocast ingests. One writer for HLS, LL-HLS, DASH and (later) recording.
//! - [`ts`]: MPEG-2 transport stream for old HLS players (H.264/H.265 with AAC/MP3).
//! - [`ac3`]: the AC-3 / E-AC-3 syncframe fields their sample entries need.
//! - [`bits`]: a bounded MSB-first bit reader with Exp-Golomb codes (the server's codec
//!   parsers use it too).
//!
//! Inputs come from a publisher, so every parser here caps what it reads by the input's
//! length and reports malformed input as [`MediaError`], never a panic.

pub mod ac3;
pub mod bits;
pub mod fmp4;
pub mod ts;

/// Why a container could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{0} configuration is malformed")]
    BadConfig(&'static str),
    #[error("sample is malformed: {0}")]
    BadSample(&'static str),
    #[error("box writer: {0}")]
    Box(#[from] mp4_atom::Error),
}
