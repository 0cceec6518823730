//! Streaming FLV tag-header parser: reads the file header and the 11-byte tag headers (plus
//! the first two body bytes of a video tag, to tell keyframes apart) and skips every payload
//! without copying or buffering it. Input can be cut anywhere.

use std::fmt;

pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;
pub const TAG_SCRIPT: u8 = 18;

/// What the parser reports for each tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagInfo {
    pub tag_type: u8,
    /// Milliseconds, with the extended byte applied.
    pub timestamp: u32,
    pub data_size: u32,
    /// A video tag carrying a keyframe (not a sequence header).
    pub keyframe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvError {
    BadSignature,
    BadHeaderLength(u32),
    /// A tag type other than audio, video or script data: the stream is out of sync.
    BadTagType(u8),
}

impl fmt::Display for FlvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlvError::BadSignature => write!(f, "not an FLV stream (bad signature)"),
            FlvError::BadHeaderLength(n) => write!(f, "bad FLV header length {n}"),
            FlvError::BadTagType(t) => write!(f, "bad FLV tag type {t} (stream out of sync)"),
        }
    }
}

impl std::error::Error for FlvError {}

/// Whether a video tag body starting with `b0` (and `b1`, when the body has it) is a coded
/// keyframe: legacy frame type 1 (for AVC/HEVC/AV1-in-legacy-ids, AVC packet type 1, so not a
/// sequence header or end of sequence), or an enhanced-RTMP header (bit 7 set) with frame type
/// 1 and packet type CodedFrames (1) or CodedFramesX (3).
pub fn is_video_keyframe(b0: u8, b1: Option<u8>) -> bool {
    if b0 & 0x80 != 0 {
        let frame_type = (b0 >> 4) & 0x07;
        let packet_type = b0 & 0x0f;
        frame_type == 1 && matches!(packet_type, 1 | 3)
    } else {
        let frame_type = b0 >> 4;
        let codec_id = b0 & 0x0f;
        if frame_type != 1 {
            return false;
        }
        match codec_id {
            // AVC, and the unofficial legacy ids for HEVC (12) and AV1 (13): packet type byte.
            7 | 12 | 13 => b1 == Some(1),
            _ => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the 9-byte file header.
    FileHeader,
    /// Collecting a tag header (11 bytes, plus up to 2 body bytes of a video tag).
    TagHeader,
    /// Skipping this many bytes (rest of a body and its PreviousTagSize, or header padding).
    Skip(u64),
}

/// Incremental parser; feed it whatever the socket returned.
#[derive(Debug)]
pub struct FlvParser {
    state: State,
    head: [u8; 13],
    have: usize,
}

impl Default for FlvParser {
    fn default() -> Self {
        Self::new()
    }
}

impl FlvParser {
    pub fn new() -> Self {
        FlvParser {
            state: State::FileHeader,
            head: [0; 13],
            have: 0,
        }
    }

    /// How many header bytes the current tag needs: 11, plus the first one or two body
    /// bytes of a video tag once its size is known.
    fn tag_header_target(&self) -> usize {
        if self.have < 4 || self.head[0] & 0x1f != TAG_VIDEO {
            return 11;
        }
        let size = be24(&self.head[1..4]) as usize;
        11 + size.min(2)
    }

    /// Parses `data`, calling `on_tag` for each tag header completed in it.
    pub fn feed(&mut self, mut data: &[u8], mut on_tag: impl FnMut(TagInfo)) -> Result<(), FlvError> {
        while !data.is_empty() {
            match self.state {
                State::Skip(n) => {
                    let take = (n.min(data.len() as u64)) as usize;
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 { State::TagHeader } else { State::Skip(left) };
                }
                State::FileHeader => {
                    let take = (9 - self.have).min(data.len());
                    self.head[self.have..self.have + take].copy_from_slice(&data[..take]);
                    self.have += take;
                    data = &data[take..];
                    if self.have < 9 {
                        // Fail early on a wrong signature.
                        if !b"FLV".starts_with(&self.head[..self.have.min(3)]) {
                            return Err(FlvError::BadSignature);
                        }
                        continue;
                    }
                    if &self.head[..3] != b"FLV" {
                        return Err(FlvError::BadSignature);
                    }
                    let offset = u32::from_be_bytes([self.head[5], self.head[6], self.head[7], self.head[8]]);
                    if !(9..=4096).contains(&offset) {
                        return Err(FlvError::BadHeaderLength(offset));
                    }
                    self.have = 0;
                    // Any header padding, then PreviousTagSize0.
                    self.state = State::Skip(u64::from(offset - 9) + 4);
                }
                State::TagHeader => {
                    // Byte by byte: headers are a few bytes per tag, payloads are skipped whole.
                    self.head[self.have] = data[0];
                    data = &data[1..];
                    self.have += 1;
                    if self.have == 1 {
                        let t = self.head[0] & 0x1f;
                        if !matches!(t, TAG_AUDIO | TAG_VIDEO | TAG_SCRIPT) {
                            return Err(FlvError::BadTagType(self.head[0]));
                        }
                    }
                    let target = self.tag_header_target();
                    if self.have < target {
                        continue;
                    }
                    let h = &self.head;
                    let tag_type = h[0] & 0x1f;
                    let data_size = be24(&h[1..4]);
                    let timestamp = be24(&h[4..7]) | (u32::from(h[7]) << 24);
                    let keyframe = tag_type == TAG_VIDEO
                        && data_size >= 1
                        && is_video_keyframe(h[11], (data_size >= 2).then_some(h[12]));
                    on_tag(TagInfo {
                        tag_type,
                        timestamp,
                        data_size,
                        keyframe,
                    });
                    let peeked = (target - 11) as u64;
                    self.have = 0;
                    self.state = State::Skip(u64::from(data_size) - peeked + 4);
                }
            }
        }
        Ok(())
    }
}

fn be24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(tag_type: u8, ts: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag_type];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        v.extend_from_slice(&(ts & 0xff_ffff).to_be_bytes()[1..]);
        v.push((ts >> 24) as u8);
        v.extend_from_slice(&[0, 0, 0]);
        v.extend_from_slice(body);
        v.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        v
    }

    fn stream() -> (Vec<u8>, Vec<TagInfo>) {
        let mut s = vec![b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0];
        let cases: Vec<(u8, u32, Vec<u8>, bool)> = vec![
            (
                TAG_SCRIPT,
                0,
                b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09".to_vec(),
                false,
            ),
            // AVC sequence header: frame type 1 but packet type 0.
            (TAG_VIDEO, 0, vec![0x17, 0x00, 0, 0, 0, 1, 0x64], false),
            (TAG_AUDIO, 0, vec![0xaf, 0x00, 0x12, 0x10], false),
            (TAG_VIDEO, 0, vec![0x17, 0x01, 0, 0, 0, 0, 0, 0, 0, 5, 0x65], true),
            (TAG_AUDIO, 23, vec![0xaf, 0x01, 1, 2, 3], false),
            (TAG_VIDEO, 33, vec![0x27, 0x01, 0, 0, 0, 0x41], false),
            // Extended timestamp byte.
            (TAG_VIDEO, 0x0100_0010, vec![0x27, 0x01, 0, 0, 0], false),
            // Enhanced RTMP: HEVC keyframe (CodedFramesX), then its sequence start.
            (TAG_VIDEO, 70, vec![0x93, b'h', b'v', b'c', b'1', 0x26], true),
            (TAG_VIDEO, 70, vec![0x90, b'h', b'v', b'c', b'1'], false),
            // A 1-byte video body (legacy non-AVC keyframe) and an empty audio tag.
            (TAG_VIDEO, 80, vec![0x12], true),
            (TAG_AUDIO, 90, vec![], false),
        ];
        let mut want = Vec::new();
        for (t, ts, body, key) in cases {
            s.extend(tag(t, ts, &body));
            want.push(TagInfo {
                tag_type: t,
                timestamp: ts,
                data_size: body.len() as u32,
                keyframe: key,
            });
        }
        (s, want)
    }

    #[test]
    fn whole_stream_in_one_feed() {
        let (s, want) = stream();
        let mut p = FlvParser::new();
        let mut got = Vec::new();
        p.feed(&s, |t| got.push(t)).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn every_split_point_and_byte_by_byte() {
        let (s, want) = stream();
        for cut in 0..s.len() {
            let mut p = FlvParser::new();
            let mut got = Vec::new();
            p.feed(&s[..cut], |t| got.push(t)).unwrap();
            p.feed(&s[cut..], |t| got.push(t)).unwrap();
            assert_eq!(got, want, "cut at {cut}");
        }
        let mut p = FlvParser::new();
        let mut got = Vec::new();
        for b in &s {
            p.feed(std::slice::from_ref(b), |t| got.push(t)).unwrap();
        }
        assert_eq!(got, want);
    }

    #[test]
    fn header_padding_is_skipped() {
        let mut s = vec![b'F', b'L', b'V', 1, 1, 0, 0, 0, 12, 0xaa, 0xbb, 0xcc, 0, 0, 0, 0];
        s.extend(tag(TAG_VIDEO, 5, &[0x17, 1, 0, 0, 0]));
        let mut got = Vec::new();
        FlvParser::new().feed(&s, |t| got.push(t)).unwrap();
        assert_eq!(
            got,
            vec![TagInfo {
                tag_type: 9,
                timestamp: 5,
                data_size: 5,
                keyframe: true
            }]
        );
    }

    #[test]
    fn errors() {
        let cases: Vec<(&str, Vec<u8>, FlvError)> = vec![
            ("bad signature early", b"HTTP".to_vec(), FlvError::BadSignature),
            (
                "bad header length",
                vec![b'F', b'L', b'V', 1, 5, 0, 0, 0, 3],
                FlvError::BadHeaderLength(3),
            ),
            (
                "out of sync",
                vec![b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0, 0x42],
                FlvError::BadTagType(0x42),
            ),
        ];
        for (name, input, err) in cases {
            assert_eq!(FlvParser::new().feed(&input, |_| {}), Err(err), "{name}");
        }
    }

    #[test]
    fn keyframe_detection_table() {
        let cases: Vec<(&str, u8, Option<u8>, bool)> = vec![
            ("avc keyframe nalu", 0x17, Some(1), true),
            ("avc sequence header", 0x17, Some(0), false),
            ("avc end of sequence", 0x17, Some(2), false),
            ("avc inter frame", 0x27, Some(1), false),
            ("avc keyframe without packet type", 0x17, None, false),
            ("legacy hevc (12) keyframe", 0x1c, Some(1), true),
            ("vp6 keyframe", 0x14, None, true),
            ("video info frame", 0x57, Some(1), false),
            ("enhanced coded frames key", 0x91, None, true),
            ("enhanced coded frames x key", 0x93, None, true),
            ("enhanced sequence start", 0x90, None, false),
            ("enhanced inter frame", 0xa1, None, false),
            ("enhanced metadata", 0x94, None, false),
        ];
        for (name, b0, b1, want) in cases {
            assert_eq!(is_video_keyframe(b0, b1), want, "{name}");
        }
    }
}
