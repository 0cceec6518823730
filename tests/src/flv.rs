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

    /// An enhanced-RTMP video tag (ExVideoTagHeader): the top bit of the first byte is set.
    pub fn is_ex_video(&self) -> bool {
        self.is_video() && self.data.first().is_some_and(|b| b & 0x80 != 0)
    }

    /// An enhanced-RTMP audio tag (ExAudioTagHeader): SoundFormat 9 (ExHeader).
    pub fn is_ex_audio(&self) -> bool {
        self.is_audio() && self.data.first().is_some_and(|b| b >> 4 == 9)
    }

    /// Video frame type: 1 = keyframe, 2 = inter frame, 5 = video info/command frame.
    pub fn video_frame_type(&self) -> Option<u8> {
        if !self.is_video() {
            return None;
        }
        let b0 = *self.data.first()?;
        Some(if self.is_ex_video() { (b0 >> 4) & 0x07 } else { b0 >> 4 })
    }

    /// Video codec id (legacy FLV): 7 = AVC, 12 = HEVC (non-standard). None for enhanced tags.
    pub fn video_codec_id(&self) -> Option<u8> {
        if !self.is_video() || self.is_ex_video() {
            return None;
        }
        Some(self.data.first()? & 0x0f)
    }

    /// The video packet type. Enhanced tags: the low nibble of the first byte (0 SequenceStart,
    /// 1 CodedFrames, 2 SequenceEnd, 3 CodedFramesX, 4 Metadata, 5 MPEG2TSSequenceStart,
    /// 6 Multitrack, 7 ModEx). Legacy AVC (7) and HEVC (12, 13): the second byte (0 sequence
    /// header, 1 NALUs, 2 end of sequence). None for other legacy codecs.
    pub fn video_packet_type(&self) -> Option<u8> {
        if self.is_ex_video() {
            return Some(self.data[0] & 0x0f);
        }
        match self.video_codec_id()? {
            7 | 12 | 13 => self.data.get(1).copied(),
            _ => None,
        }
    }

    /// The FourCC of a single-track enhanced video tag (e.g. `hvc1`, `av01`, `vp09`, `avc1`).
    pub fn video_fourcc(&self) -> Option<[u8; 4]> {
        if !self.is_ex_video() || matches!(self.data[0] & 0x0f, 6 | 7) {
            return None;
        }
        self.data.get(1..5)?.try_into().ok()
    }

    /// A video keyframe (frame type 1), sequence headers included.
    pub fn is_keyframe(&self) -> bool {
        self.video_frame_type() == Some(1)
    }

    /// A video sequence header (AVC/HEVC packet type 0, or enhanced PacketTypeSequenceStart).
    pub fn is_video_seq_header(&self) -> bool {
        if !self.is_video() || self.data.len() < 2 {
            return false;
        }
        self.video_packet_type() == Some(0)
    }

    /// The audio packet type. Enhanced tags: the low nibble of the first byte (0 SequenceStart,
    /// 1 CodedFrames, 2 SequenceEnd, 4 MultichannelConfig, 5 Multitrack, 7 ModEx). AAC: the
    /// second byte (0 AudioSpecificConfig, 1 raw frame). None for other legacy formats.
    pub fn audio_packet_type(&self) -> Option<u8> {
        if self.is_ex_audio() {
            return Some(self.data[0] & 0x0f);
        }
        match self.audio_format()? {
            10 => self.data.get(1).copied(),
            _ => None,
        }
    }

    /// The FourCC of a single-track enhanced audio tag (e.g. `Opus`, `fLaC`, `mp4a`).
    pub fn audio_fourcc(&self) -> Option<[u8; 4]> {
        if !self.is_ex_audio() || matches!(self.data[0] & 0x0f, 5 | 7) {
            return None;
        }
        self.data.get(1..5)?.try_into().ok()
    }

    /// Audio sound format (10 = AAC, 2 = MP3, 9 = enhanced ExHeader ...).
    pub fn audio_format(&self) -> Option<u8> {
        if !self.is_audio() {
            return None;
        }
        Some(self.data.first()? >> 4)
    }

    /// An audio sequence header: AAC AudioSpecificConfig or enhanced SequenceStart.
    pub fn is_audio_seq_header(&self) -> bool {
        self.is_audio() && self.data.len() >= 2 && self.audio_packet_type() == Some(0)
    }

    pub fn is_seq_header(&self) -> bool {
        self.is_video_seq_header() || self.is_audio_seq_header()
    }

    /// A video frame that carries a picture (not a sequence header, end of sequence, metadata
    /// or command frame).
    pub fn is_video_frame(&self) -> bool {
        if !self.is_video() || self.is_video_seq_header() {
            return false;
        }
        if self.video_frame_type() == Some(5) {
            return false;
        }
        if self.is_ex_video() {
            return matches!(self.video_packet_type(), Some(1 | 3));
        }
        match self.video_packet_type() {
            Some(t) => t == 1,
            None => true,
        }
    }

    /// An audio frame (not a sequence header or an enhanced side packet).
    pub fn is_audio_frame(&self) -> bool {
        if !self.is_audio() || self.data.is_empty() {
            return false;
        }
        match self.audio_packet_type() {
            Some(t) => t == 1,
            None => true,
        }
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
        let fourcc = |f: Option<[u8; 4]>| {
            f.map(|f| format!(" {}", String::from_utf8_lossy(&f)))
                .unwrap_or_default()
        };
        let kind = if self.is_script() {
            format!("script {:?}", self.script_name())
        } else if self.is_video_seq_header() {
            format!("video seq header{}", fourcc(self.video_fourcc()))
        } else if self.is_audio_seq_header() {
            format!("audio seq header{}", fourcc(self.audio_fourcc()))
        } else if self.is_video() {
            format!(
                "video{} frame type {:?} packet type {:?}",
                fourcc(self.video_fourcc()),
                self.video_frame_type(),
                self.video_packet_type()
            )
        } else if self.is_audio() {
            format!(
                "audio{} format {:?} packet type {:?}",
                fourcc(self.audio_fourcc()),
                self.audio_format(),
                self.audio_packet_type()
            )
        } else {
            format!("tag type {}", self.tag_type)
        };
        format!("{kind} @{} ms ({} bytes)", self.timestamp, self.data.len())
    }

    /// The tag as FLV bytes: 11-byte header, data, PreviousTagSize.
    pub fn encode(&self) -> Vec<u8> {
        encode_tag(self.tag_type, self.timestamp, &self.data)
    }
}

/// One FLV tag as bytes: 11-byte header (stream id 0), data, PreviousTagSize.
pub fn encode_tag(tag_type: u8, timestamp: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(11 + data.len() + 4);
    v.push(tag_type);
    v.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    v.extend_from_slice(&timestamp.to_be_bytes()[1..]);
    v.push((timestamp >> 24) as u8);
    v.extend_from_slice(&[0, 0, 0]);
    v.extend_from_slice(data);
    v.extend_from_slice(&((11 + data.len()) as u32).to_be_bytes());
    v
}

/// A complete FLV file: the 9-byte header with `flags`, PreviousTagSize0, then the tags.
pub fn encode_file(flags: u8, tags: &[Tag]) -> Vec<u8> {
    let mut v = vec![b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0];
    for t in tags {
        v.extend_from_slice(&t.encode());
    }
    v
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
                bail!("stream does not start with an FLV signature: {:02x?}", &self.buf[..9]);
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
    fn understands_enhanced_and_legacy_hevc_headers() {
        let t = |tag_type, data: &[u8]| Tag {
            tag_type,
            timestamp: 0,
            data: Bytes::copy_from_slice(data),
        };
        // Enhanced video: SequenceStart, CodedFrames keyframe, CodedFramesX inter frame,
        // Metadata command frame, SequenceEnd.
        let seq = t(9, b"\x90hvc1\x01\x01");
        assert!(seq.is_ex_video() && seq.is_video_seq_header() && !seq.is_video_frame());
        assert_eq!(seq.video_fourcc(), Some(*b"hvc1"));
        let key = t(9, b"\x91hvc1\x00\x00\x21\x00\x00\x00\x05");
        assert!(key.is_video_frame() && key.is_keyframe());
        assert_eq!(key.video_packet_type(), Some(1));
        let inter = t(9, b"\xa3av01\x12\x00");
        assert!(inter.is_video_frame() && !inter.is_keyframe());
        assert_eq!(inter.video_fourcc(), Some(*b"av01"));
        let meta = t(9, b"\xd4vp09\x02\x00\x09colorInfo");
        assert!(!meta.is_video_frame() && !meta.is_video_seq_header());
        assert!(!t(9, b"\x92hvc1").is_video_frame());
        // Legacy HEVC (codec id 12).
        let legacy_seq = t(9, b"\x1c\x00\x00\x00\x00\x01");
        assert!(legacy_seq.is_video_seq_header() && legacy_seq.video_codec_id() == Some(12));
        assert!(t(9, b"\x1c\x01\x00\x00\x00\x00").is_video_frame());
        assert!(!t(9, b"\x1c\x02\x00\x00\x00").is_video_frame());
        // Enhanced audio: Opus SequenceStart, MultichannelConfig, CodedFrames.
        let opus_seq = t(8, b"\x90OpusOpusHead");
        assert!(opus_seq.is_ex_audio() && opus_seq.is_audio_seq_header());
        assert_eq!(opus_seq.audio_fourcc(), Some(*b"Opus"));
        assert!(!t(8, b"\x94Opus\x01\x01").is_audio_frame());
        assert!(t(8, b"\x91Opus\xf8\xff").is_audio_frame());
        // AAC stays as it was.
        assert!(t(8, b"\xaf\x00\x12\x10").is_audio_seq_header());
        assert!(t(8, b"\xaf\x01\x21").is_audio_frame());
    }

    #[test]
    fn encoded_file_parses_back() {
        let tags = vec![
            Tag {
                tag_type: 9,
                timestamp: 0x0100_0021,
                data: Bytes::from_static(b"\x91hvc1\x00\x00\x00\x01"),
            },
            Tag {
                tag_type: 8,
                timestamp: 7,
                data: Bytes::from_static(b"\xaf\x01\x21"),
            },
        ];
        let (h, back) = parse_all(&encode_file(5, &tags)).unwrap();
        assert_eq!(h.flags, 5);
        assert_eq!(back, tags);
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
