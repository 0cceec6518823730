//! FLV container framing: the file header and tags (header, body, previous-tag-size), both
//! ways. HTTP-FLV and WS-FLV send exactly this; FLV push reads it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;
pub const TAG_SCRIPT: u8 = 18;
/// FLV header (9 bytes) plus the first PreviousTagSize0.
pub const HEADER_LEN: usize = 13;
pub const TAG_HEADER_LEN: usize = 11;

/// The FLV file header followed by PreviousTagSize0, flagged for the tracks present.
pub fn header(has_audio: bool, has_video: bool) -> [u8; HEADER_LEN] {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// Writes the 11-byte tag header.
pub fn put_tag_header(out: &mut BytesMut, tag_type: u8, timestamp: u32, data_len: usize) {
    out.put_u8(tag_type);
    out.put_uint(data_len as u64, 3);
    out.put_uint(u64::from(timestamp & 0x00ff_ffff), 3);
    out.put_u8((timestamp >> 24) as u8);
    out.put_uint(0, 3);
}

/// One complete tag (header, body, PreviousTagSize) as a single buffer.
pub fn encode_tag(tag_type: u8, timestamp: u32, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(TAG_HEADER_LEN + body.len() + 4);
    put_tag_header(&mut out, tag_type, timestamp, body.len());
    out.put_slice(body);
    out.put_u32((TAG_HEADER_LEN + body.len()) as u32);
    out.freeze()
}

/// One tag read from an FLV byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub tag_type: u8,
    pub timestamp: u32,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("not an FLV stream (bad signature)")]
    BadSignature,
    #[error("FLV tag of {0} bytes exceeds the limit of {1}")]
    TagTooLarge(usize, usize),
    #[error("FLV header length {0} is invalid")]
    BadHeaderLength(u32),
}

/// Incremental FLV reader: feed bytes, take tags. Caps tag sizes.
#[derive(Debug)]
pub struct FlvReader {
    header_done: bool,
    max_tag: usize,
}

impl FlvReader {
    pub fn new(max_tag: usize) -> Self {
        FlvReader {
            header_done: false,
            max_tag,
        }
    }

    /// `Ok(None)`: need more bytes.
    pub fn next_tag(&mut self, buf: &mut BytesMut) -> Result<Option<Tag>, FlvError> {
        if !self.header_done {
            if buf.len() < 9 {
                if !buf.is_empty() && !b"FLV".starts_with(&buf[..buf.len().min(3)]) {
                    return Err(FlvError::BadSignature);
                }
                return Ok(None);
            }
            if &buf[..3] != b"FLV" {
                return Err(FlvError::BadSignature);
            }
            let len = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
            if !(9..=1024).contains(&len) {
                return Err(FlvError::BadHeaderLength(len));
            }
            if buf.len() < len as usize + 4 {
                return Ok(None);
            }
            buf.advance(len as usize + 4);
            self.header_done = true;
        }
        if buf.len() < TAG_HEADER_LEN {
            return Ok(None);
        }
        let size = ((buf[1] as usize) << 16) | ((buf[2] as usize) << 8) | buf[3] as usize;
        if size > self.max_tag {
            return Err(FlvError::TagTooLarge(size, self.max_tag));
        }
        if buf.len() < TAG_HEADER_LEN + size + 4 {
            return Ok(None);
        }
        let tag_type = buf[0] & 0x1f;
        let timestamp =
            (u32::from(buf[7]) << 24) | (u32::from(buf[4]) << 16) | (u32::from(buf[5]) << 8) | u32::from(buf[6]);
        buf.advance(TAG_HEADER_LEN);
        let body = buf.split_to(size).freeze();
        buf.advance(4);
        Ok(Some(Tag {
            tag_type,
            timestamp,
            body,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_flags_follow_tracks() {
        assert_eq!(header(true, true)[4], 5);
        assert_eq!(header(false, true)[4], 1);
        assert_eq!(header(true, false)[4], 4);
        assert_eq!(&header(true, true)[..], b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00");
    }

    #[test]
    fn tag_encode_and_read_back() {
        // name, type, timestamp, body, expected wire
        let cases: &[(&str, u8, u32, &[u8], &[u8])] = &[
            (
                "video small ts",
                TAG_VIDEO,
                40,
                b"\x17\x01",
                b"\x09\x00\x00\x02\x00\x00\x28\x00\x00\x00\x00\x17\x01\x00\x00\x00\x0d",
            ),
            (
                "audio ts above 24 bits",
                TAG_AUDIO,
                0x0123_4567,
                b"\xaf",
                b"\x08\x00\x00\x01\x23\x45\x67\x01\x00\x00\x00\xaf\x00\x00\x00\x0c",
            ),
            (
                "empty script tag",
                TAG_SCRIPT,
                0,
                b"",
                b"\x12\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0b",
            ),
        ];
        for (name, t, ts, body, wire) in cases {
            assert_eq!(&encode_tag(*t, *ts, body)[..], *wire, "{name}");
            let mut buf = BytesMut::from(&header(true, true)[..]);
            buf.extend_from_slice(wire);
            let mut r = FlvReader::new(1 << 20);
            let tag = r.next_tag(&mut buf).unwrap().unwrap();
            assert_eq!((tag.tag_type, tag.timestamp, &tag.body[..]), (*t, *ts, *body), "{name}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn reader_rejects_bad_signature_and_huge_tags() {
        let mut r = FlvReader::new(100);
        assert_eq!(
            r.next_tag(&mut BytesMut::from(&b"GET / HTTP"[..])),
            Err(FlvError::BadSignature)
        );
        let mut r = FlvReader::new(100);
        let mut buf = BytesMut::from(&header(true, true)[..]);
        buf.extend_from_slice(b"\x09\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00");
        assert_eq!(r.next_tag(&mut buf), Err(FlvError::TagTooLarge(0xff_ffff, 100)));
    }
}
