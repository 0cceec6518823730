//! Server side of WebSocket (RFC 6455), just what WS-FLV needs: the accept key, unmasked
//! binary and close frames out, and parsing the client's masked frames (close, ping).
//!
//! Written here rather than taken from a WebSocket library so a media frame's payload is
//! never copied per reader: the frame header is a few bytes written before the shared FLV tag.

use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Client messages we accept; WS-FLV players send nothing but control frames.
pub const MAX_CLIENT_PAYLOAD: usize = 64 * 1024;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Header of an unmasked, final server frame of `len` payload bytes.
pub fn frame_header(opcode: u8, len: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(10);
    out.put_u8(0x80 | opcode);
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= 0xffff {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
    out.freeze()
}

/// A complete close frame with a status code.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let reason = &reason.as_bytes()[..reason.len().min(120)];
    let mut out = BytesMut::from(&frame_header(OP_CLOSE, 2 + reason.len())[..]);
    out.put_u16(code);
    out.put_slice(reason);
    out.freeze()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("client frame is not masked")]
    Unmasked,
    #[error("client frame of {0} bytes is too large")]
    TooLarge(u64),
    #[error("control frame is fragmented or longer than 125 bytes")]
    BadControlFrame,
    #[error("reserved bits or opcode {0:#x} used")]
    Reserved(u8),
}

/// Parses one client frame from the front of `buf`; `Ok(None)` means more bytes are needed.
pub fn parse_client_frame(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Frame>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsError::Reserved(b0));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(WsError::Reserved(opcode));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Unmasked);
    }
    let (len, mut pos) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            (u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")), 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode >= OP_CLOSE && (len > 125 || !fin) {
        return Err(WsError::BadControlFrame);
    }
    if len > max_payload as u64 {
        return Err(WsError::TooLarge(len));
    }
    let len = len as usize;
    if buf.len() < pos + 4 + len {
        return Ok(None);
    }
    let mask = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
    pos += 4;
    buf.advance(pos);
    let mut payload = buf.split_to(len);
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload: payload.freeze(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn frame_header_lengths() {
        let cases: &[(&str, usize, &[u8])] = &[
            ("short", 5, &[0x82, 5]),
            ("16-bit", 300, &[0x82, 126, 1, 44]),
            ("64-bit", 70000, &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]),
        ];
        for (name, len, want) in cases {
            assert_eq!(&frame_header(OP_BINARY, *len)[..], *want, "{name}");
        }
    }

    fn masked(opcode: u8, payload: &[u8]) -> BytesMut {
        let mask = [1u8, 2, 3, 4];
        let mut out = BytesMut::new();
        out.put_u8(0x80 | opcode);
        out.put_u8(0x80 | payload.len() as u8);
        out.put_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn parses_masked_close_and_ping() {
        let mut buf = masked(OP_CLOSE, &[0x03, 0xe8]);
        buf.extend_from_slice(&masked(OP_PING, b"hi"));
        let close = parse_client_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((close.opcode, &close.payload[..]), (OP_CLOSE, &[0x03, 0xe8][..]));
        let ping = parse_client_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((ping.opcode, &ping.payload[..]), (OP_PING, &b"hi"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_frame_needs_more() {
        let full = masked(OP_BINARY, b"hello");
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(parse_client_frame(&mut buf, 1024), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(
            parse_client_frame(&mut BytesMut::from(&[0x82u8, 0x01, 0][..]), 1024),
            Err(WsError::Unmasked)
        );
        assert_eq!(
            parse_client_frame(&mut BytesMut::from(&[0x82u8, 0xff, 0, 0, 0, 1, 0, 0, 0, 0][..]), 1024),
            Err(WsError::TooLarge(1 << 32))
        );
        assert_eq!(
            parse_client_frame(&mut BytesMut::from(&[0x09u8, 0x80][..]), 1024),
            Err(WsError::BadControlFrame)
        );
        assert_eq!(
            parse_client_frame(&mut BytesMut::from(&[0xc2u8, 0x80][..]), 1024),
            Err(WsError::Reserved(0xc2))
        );
    }
}
