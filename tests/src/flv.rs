//! An incremental FLV parser: push bytes as they arrive, pull the header and tags.
//!
//! Strict on framing (signature, header size, PreviousTagSize) so that a server that emits a
//! malformed stream fails the tests instead of being silently resynchronised.

use anyhow::{bail, Result};
use bytes::{Buf, Bytes, BytesMut};

pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;
pub const TAG_SCRIPT: u8 = 18;

/// The 9-byte FLV file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlvHeader {
    pub version: u8,
    /// Raw TypeFlags byte (0x04 audio, 0x01 video).
    pub flags: u8,
}

impl FlvHeader {
    pub fn has_audio(&self) -> bool {
        self.flags & 0x04 != 0
    }
    pub fn has_video(&self) -> bool {
        self.flags & 0x01 != 0
    }
}

/// One FLV tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub tag_type: u8,
    /// Full 32-bit timestamp in milliseconds (TimestampExtended included).
    pub timestamp: u32,
    pub data: Bytes,
}

impl Tag {
    pub fn is_video(&self) -> bool {
        self.tag_type == TAG_VIDEO
    }
    pub fn is_audio(&self) -> bool {
        self.tag_type == TAG_AUDIO
    }
    pub fn is_script(&self) -> bool {
        self.tag_type == TAG_SCRIPT
    }

    /// Enhanced-RTMP video tags set the top bit of the first byte.
    fn video_is_ex(&self) -> bool {
        self.is_video() && self.data.first().is_some_and(|b| b & 0x80 != 0)
    }

    /// Video frame type: 1 = keyframe, 2 = inter frame, 5 = video info/command frame.
    pub fn video_frame_type(&self) -> Option<u8> {
        if !self.is_video() {
            return None;
        }
        let b0 = *self.data.first()?;
        Some(if self.video_is_ex() {
            (b0 >> 4) & 0x07
        } else {
            b0 >> 4
        })
    }

    /// Video codec id (legacy FLV): 7 = AVC, 12 = HEVC (non-standard). None for enhanced tags.
    pub fn video_codec_id(&self) -> Option<u8> {
        if !self.is_video() || self.video_is_ex() {
            return None;
        }
        Some(self.data.first()? & 0x0f)
    }

    /// A video keyframe (frame type 1), sequence headers included.
    pub fn is_keyframe(&self) -> bool {
        self.video_frame_type() == Some(1)
    }

    /// A video sequence header (AVC packet type 0, or enhanced PacketTypeSequenceStart).
    pub fn is_video_seq_header(&self) -> bool {
        if !self.is_video() || self.data.len() < 2 {
            return false;
        }
        if self.video_is_ex() {
            return self.data[0] & 0x0f == 0;
        }
        matches!(self.data[0] & 0x0f, 7 | 12 | 13) && self.data[1] == 0
    }

    /// Audio sound format (10 = AAC, 2 = MP3 ...).
    pub fn audio_format(&self) -> Option<u8> {
        if !self.is_audio() {
            return None;
        }
        Some(self.data.first()? >> 4)
    }

    /// An AAC sequence header (AudioSpecificConfig).
    pub fn is_audio_seq_header(&self) -> bool {
        self.is_audio() && self.data.len() >= 2 && self.data[0] >> 4 == 10 && self.data[1] == 0
    }

    pub fn is_seq_header(&self) -> bool {
        self.is_video_seq_header() || self.is_audio_seq_header()
    }

    /// A video frame that carries a picture (not a sequence header, end-of-sequence or command).
    pub fn is_video_frame(&self) -> bool {
        if !self.is_video() || self.is_video_seq_header() {
            return false;
        }
        if self.video_frame_type() == Some(5) {
            return false;
        }
        if !self.video_is_ex() && self.data.len() >= 2 && self.data[0] & 0x0f == 7 {
            return self.data[1] == 1;
        }
        true
    }

    /// An audio frame (not a sequence header).
    pub fn is_audio_frame(&self) -> bool {
        self.is_audio() && !self.is_audio_seq_header()
    }

    /// For a script tag, the first AMF0 string (e.g. "onMetaData").
    pub fn script_name(&self) -> Option<String> {
        if !self.is_script() || self.data.len() < 3 || self.data[0] != 0x02 {
            return None;
        }
        let len = u16::from_be_bytes([self.data[1], self.data[2]]) as usize;
        let s = self.data.get(3..3 + len)?;
        Some(String::from_utf8_lossy(s).into_owned())
    }

    /// A short description for assertion messages.
    pub fn describe(&self) -> String {
        let kind = if self.is_script() {
            format!("script {:?}", self.script_name())
        } else if self.is_video_seq_header() {
            "video seq header".into()
        } else if self.is_audio_seq_header() {
            "audio seq header".into()
        } else if self.is_video() {
            format!("video frame type {:?}", self.video_frame_type())
        } else if self.is_audio() {
            format!("audio format {:?}", self.audio_format())
        } else {
            format!("tag type {}", self.tag_type)
        };
        format!("{kind} @{} ms ({} bytes)", self.timestamp, self.data.len())
    }
}

/// Incremental parser.
#[derive(Debug, Default)]
pub struct FlvParser {
    buf: BytesMut,
    header: Option<FlvHeader>,
    body_started: bool,
    consumed: u64,
}

impl FlvParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The FLV header, once parsed.
    pub fn header(&self) -> Option<FlvHeader> {
        self.header
    }

    /// Bytes not yet parsed into a tag.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete tag, `Ok(None)` if more bytes are needed, `Err` on a malformed stream.
    pub fn next_tag(&mut self) -> Result<Option<Tag>> {
        if self.header.is_none() {
            if self.buf.len() < 9 {
                return Ok(None);
            }
            if &self.buf[..3] != b"FLV" {
                bail!(
                    "stream does not start with an FLV signature: {:02x?}",
                    &self.buf[..9]
                );
            }
            let version = self.buf[3];
            let flags = self.buf[4];
            let size = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
            if size != 9 {
                bail!("FLV header size is {size}, expected 9");
            }
            self.buf.advance(9);
            self.consumed += 9;
            self.header = Some(FlvHeader { version, flags });
        }
        if !self.body_started {
            if self.buf.len() < 4 {
                return Ok(None);
            }
            let prev0 = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            if prev0 != 0 {
                bail!("PreviousTagSize0 is {prev0}, expected 0");
            }
            self.buf.advance(4);
            self.consumed += 4;
            self.body_started = true;
        }
        if self.buf.len() < 11 {
            return Ok(None);
        }
        let b = &self.buf;
        let tag_type = b[0] & 0x1f;
        if b[0] & 0x20 != 0 {
            bail!("encrypted FLV tag (filter bit) at byte {}", self.consumed);
        }
        let size = u32::from_be_bytes([0, b[1], b[2], b[3]]) as usize;
        let timestamp = u32::from_be_bytes([b[7], b[4], b[5], b[6]]);
        let stream_id = u32::from_be_bytes([0, b[8], b[9], b[10]]);
        if !matches!(tag_type, TAG_AUDIO | TAG_VIDEO | TAG_SCRIPT) {
            bail!("unknown FLV tag type {tag_type} at byte {}", self.consumed);
        }
        if stream_id != 0 {
            bail!("FLV StreamID is {stream_id}, expected 0");
        }
        let total = 11 + size + 4;
        if self.buf.len() < total {
            return Ok(None);
        }
        let mut tag_bytes = self.buf.split_to(total);
        let prev = u32::from_be_bytes([
            tag_bytes[total - 4],
            tag_bytes[total - 3],
            tag_bytes[total - 2],
            tag_bytes[total - 1],
        ]);
        if prev as usize != 11 + size {
            bail!(
                "PreviousTagSize {prev} after a tag of {} bytes at byte {}",
                11 + size,
                self.consumed
            );
        }
        self.consumed += total as u64;
        tag_bytes.advance(11);
        tag_bytes.truncate(size);
        Ok(Some(Tag {
            tag_type,
            timestamp,
            data: tag_bytes.freeze(),
        }))
    }
}

/// Parses a complete FLV byte string (e.g. a recorded file). Trailing partial data is an error.
pub fn parse_all(data: &[u8]) -> Result<(FlvHeader, Vec<Tag>)> {
    let mut p = FlvParser::new();
    p.push(data);
    let mut tags = Vec::new();
    while let Some(t) = p.next_tag()? {
        tags.push(t);
    }
    let Some(h) = p.header() else {
        bail!("no FLV header in {} bytes", data.len())
    };
    if p.pending() > 0 {
        bail!("{} trailing bytes after the last complete tag", p.pending());
    }
    Ok((h, tags))
}

/// Like [`parse_all`] but ignores a trailing partial tag (a recording cut by a signal).
pub fn parse_all_lenient(data: &[u8]) -> Result<(FlvHeader, Vec<Tag>)> {
    let mut p = FlvParser::new();
    p.push(data);
    let mut tags = Vec::new();
    while let Some(t) = p.next_tag()? {
        tags.push(t);
    }
    let Some(h) = p.header() else {
        bail!("no FLV header in {} bytes", data.len())
    };
    Ok((h, tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(tag_type: u8, ts: u32, data: &[u8]) -> Vec<u8> {
        let mut v = vec![tag_type];
        v.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        v.extend_from_slice(&ts.to_be_bytes()[1..]);
        v.push((ts >> 24) as u8);
        v.extend_from_slice(&[0, 0, 0]);
        v.extend_from_slice(data);
        v.extend_from_slice(&((11 + data.len()) as u32).to_be_bytes());
        v
    }

    #[test]
    fn parses_header_and_tags_fed_byte_by_byte() {
        let mut s = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        s.extend(tag(18, 0, b"\x02\x00\x0aonMetaData\x08"));
        s.extend(tag(9, 0, &[0x17, 0, 0, 0, 0, 1]));
        s.extend(tag(8, 0, &[0xaf, 0, 0x12, 0x10]));
        s.extend(tag(9, 0x0100_0021, &[0x17, 1, 0, 0, 0]));
        s.extend(tag(9, 33, &[0x27, 1, 0, 0, 0]));
        let mut p = FlvParser::new();
        let mut tags = Vec::new();
        for b in &s {
            p.push(&[*b]);
            while let Some(t) = p.next_tag().unwrap() {
                tags.push(t);
            }
        }
        assert_eq!(p.header().unwrap().flags, 5);
        assert_eq!(tags.len(), 5);
        assert_eq!(tags[0].script_name().as_deref(), Some("onMetaData"));
        assert!(tags[1].is_video_seq_header() && tags[1].is_keyframe());
        assert!(!tags[1].is_video_frame());
        assert!(tags[2].is_audio_seq_header());
        assert!(tags[3].is_video_frame() && tags[3].is_keyframe());
        assert_eq!(tags[3].timestamp, 0x0100_0021);
        assert!(tags[4].is_video_frame() && !tags[4].is_keyframe());
    }

    #[test]
    fn rejects_wrong_previous_tag_size() {
        let mut s = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        let mut t = tag(9, 0, &[0x27, 1]);
        let n = t.len();
        t[n - 1] ^= 1;
        s.extend(t);
        assert!(parse_all(&s).is_err());
    }
}
