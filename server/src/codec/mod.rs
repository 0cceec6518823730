//! Wire formats, pure and synchronous: every decoder tells "need more bytes" apart from
//! "invalid" and caps every length a peer controls.

pub mod aac;
pub mod amf0;
pub mod av1;
pub mod avc;
pub mod bits;
pub mod chunk;
pub mod flv;
pub mod handshake;
pub mod hevc;
pub mod info;
pub mod media;
pub mod message;
pub mod opus;
pub mod vp9;
