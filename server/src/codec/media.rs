//! FLV/RTMP audio and video tag headers, legacy and enhanced-RTMP (FourCC) alike.
//!
//! Owns the mapping from the first bytes of an audio or video message to a FourCC codec id,
//! the frame type and the packet type, so that the hub can tell keyframes and sequence
//! headers apart for every codec without knowing codec internals.

use std::fmt;

/// A four-character codec code as used by enhanced RTMP; legacy FLV codec ids map onto it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub [u8; 4]);

impl FourCc {
    pub const AVC: FourCc = FourCc(*b"avc1");
    pub const HEVC: FourCc = FourCc(*b"hvc1");
    pub const AV1: FourCc = FourCc(*b"av01");
    pub const VP9: FourCc = FourCc(*b"vp09");
    pub const VP8: FourCc = FourCc(*b"vp08");
    pub const AAC: FourCc = FourCc(*b"mp4a");
    pub const MP3: FourCc = FourCc(*b".mp3");
    pub const OPUS: FourCc = FourCc(*b"Opus");
    pub const FLAC: FourCc = FourCc(*b"fLaC");
    pub const AC3: FourCc = FourCc(*b"ac-3");
    pub const EAC3: FourCc = FourCc(*b"ec-3");
    /// Placeholder for data messages (onMetaData), which have no codec.
    pub const NONE: FourCc = FourCc(*b"none");

    /// Short human name, as ffprobe would print it.
    pub fn name(self) -> &'static str {
        match &self.0 {
            b"avc1" => "h264",
            b"hvc1" => "hevc",
            b"av01" => "av1",
            b"vp09" => "vp9",
            b"vp08" => "vp8",
            b"mp4a" => "aac",
            b".mp3" => "mp3",
            b"Opus" => "opus",
            b"fLaC" => "flac",
            b"ac-3" => "ac3",
            b"ec-3" => "eac3",
            b"h263" => "flv1",
            b"scr1" => "screen",
            b"vp6f" => "vp6f",
            b"vp6a" => "vp6a",
            b"scr2" => "screen2",
            b"nlmo" => "nellymoser",
            b"alaw" => "pcm_alaw",
            b"ulaw" => "pcm_mulaw",
            b"spex" => "speex",
            b"lpcm" => "pcm",
            b"adpc" => "adpcm_swf",
            b"none" => "none",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an audio or video message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// Decoder configuration (AVCDecoderConfigurationRecord, AudioSpecificConfig, ...).
    SequenceHeader,
    /// Coded media.
    Frame,
    /// End of sequence marker.
    SequenceEnd,
    /// Side information that is neither config nor media (enhanced-RTMP metadata, video
    /// command frames, multichannel config).
    Other,
}

/// The parsed start of a video message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoHeader {
    pub codec: FourCc,
    pub keyframe: bool,
    pub kind: PacketKind,
    /// Composition time offset in ms (pts - dts) where the format carries one.
    pub composition_offset: i32,
    /// Enhanced RTMP (FourCC) header rather than the legacy codec-id nibble.
    pub enhanced: bool,
    /// Enhanced-RTMP v2 multitrack packet.
    pub multitrack: bool,
    /// The enhanced-RTMP packet type after any ModEx wrappers (for multitrack, the type of
    /// the tracks); for legacy headers the AVCPacketType-style byte, or 1 for coded frames.
    pub packet_type: u8,
    /// The first track's id in a multitrack packet.
    pub track_id: Option<u8>,
    /// Where the codec data starts in the message body: after the FourCC or codec id,
    /// packet type, composition time and any ModEx wrappers. For multitrack packets, where
    /// the first track's id starts.
    pub body_offset: usize,
    /// A ModEx TimestampOffsetNano: nanoseconds to add to the message timestamp.
    pub timestamp_offset_nanos: Option<u32>,
}

/// The parsed start of an audio message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioHeader {
    pub codec: FourCc,
    pub kind: PacketKind,
    pub enhanced: bool,
    pub multitrack: bool,
    /// The enhanced-RTMP packet type after any ModEx wrappers; 0 or 1 for legacy AAC, 1 for
    /// other legacy codecs.
    pub packet_type: u8,
    /// The first track's id in a multitrack packet.
    pub track_id: Option<u8>,
    /// Where the codec data starts in the message body (see [`VideoHeader::body_offset`]).
    pub body_offset: usize,
    /// A ModEx TimestampOffsetNano: nanoseconds to add to the message timestamp.
    pub timestamp_offset_nanos: Option<u32>,
}

/// Why a media message header could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MediaHeaderError {
    #[error("empty media message")]
    Empty,
    #[error("media message shorter than its header")]
    Truncated,
    #[error("more than {MAX_MODEX} ModEx wrappers around one packet")]
    TooManyModEx,
}

/// Enhanced-RTMP v2 packet type (video and audio alike) that wraps the real packet type
/// with modifier data.
const PACKET_TYPE_MODEX: u8 = 7;
/// ModEx modifier: a 24-bit nanosecond offset to the message timestamp.
const MODEX_TIMESTAMP_OFFSET_NANO: u8 = 0;
/// Most ModEx wrappers unwrapped around one packet. The spec defines one modifier, so real
/// packets carry one; the cap keeps a crafted chain from being walked at length.
pub const MAX_MODEX: usize = 8;
/// Enhanced-RTMP video packet types.
const VIDEO_METADATA: u8 = 4;
const VIDEO_MULTITRACK: u8 = 6;
/// Enhanced-RTMP audio multitrack packet type.
const AUDIO_MULTITRACK: u8 = 5;
/// Enhanced-RTMP video frame type of command frames (no codec data, no FourCC).
const FRAME_TYPE_COMMAND: u8 = 5;

/// The ModEx wrappers of an enhanced packet: the packet type they wrap, where the rest of
/// the header continues, and a TimestampOffsetNano if one was given.
///
/// Each wrapper is `[size - 1: u8 (0xff: then size - 1: u16)][data][modifier type: 4 bits |
/// packet type: 4 bits]`; wrappers may nest until the packet type is not ModEx.
fn unwrap_modex(p: &[u8], packet_type: u8) -> Result<(u8, usize, Option<u32>), MediaHeaderError> {
    let mut packet_type = packet_type;
    let mut pos = 1;
    let mut nanos = None;
    let mut wrappers = 0;
    while packet_type == PACKET_TYPE_MODEX {
        wrappers += 1;
        if wrappers > MAX_MODEX {
            return Err(MediaHeaderError::TooManyModEx);
        }
        let mut size = usize::from(*p.get(pos).ok_or(MediaHeaderError::Truncated)?) + 1;
        pos += 1;
        if size == 256 {
            let b = p.get(pos..pos + 2).ok_or(MediaHeaderError::Truncated)?;
            size = usize::from(u16::from_be_bytes([b[0], b[1]])) + 1;
            pos += 2;
        }
        let data = p.get(pos..pos + size).ok_or(MediaHeaderError::Truncated)?;
        pos += size;
        let b = *p.get(pos).ok_or(MediaHeaderError::Truncated)?;
        pos += 1;
        packet_type = b & 0x0f;
        if b >> 4 == MODEX_TIMESTAMP_OFFSET_NANO {
            // The spec requires at least 3 bytes; shorter data carries no usable offset.
            if let Some(d) = data.get(..3) {
                nanos = Some((u32::from(d[0]) << 16) | (u32::from(d[1]) << 8) | u32::from(d[2]));
            }
        }
    }
    Ok((packet_type, pos, nanos))
}

fn fourcc_at(p: &[u8], pos: usize) -> Result<FourCc, MediaHeaderError> {
    let b = p.get(pos..pos + 4).ok_or(MediaHeaderError::Truncated)?;
    Ok(FourCc([b[0], b[1], b[2], b[3]]))
}

/// After an enhanced header's packet type (and ModEx): the codec, whether it is multitrack,
/// the (inner) packet type, the first track id and where the FourCC ends.
fn enhanced_codec(
    p: &[u8],
    pos: usize,
    packet_type: u8,
    multitrack_type: u8,
) -> Result<(FourCc, bool, u8, Option<u8>, usize), MediaHeaderError> {
    if packet_type != multitrack_type {
        return Ok((fourcc_at(p, pos)?, false, packet_type, None, pos + 4));
    }
    // [multitrack type: 4 bits | packet type of the tracks: 4 bits][FourCC][track id]...;
    // with ManyTracksManyCodecs (type 2) each track carries its own FourCC before its id,
    // so the same bytes name the first track's codec.
    let b = *p.get(pos).ok_or(MediaHeaderError::Truncated)?;
    let codec = fourcc_at(p, pos + 1)?;
    let track = *p.get(pos + 5).ok_or(MediaHeaderError::Truncated)?;
    Ok((codec, true, b & 0x0f, Some(track), pos + 5))
}

fn legacy_video_codec(id: u8) -> FourCc {
    match id {
        2 => FourCc(*b"h263"),
        3 => FourCc(*b"scr1"),
        4 => FourCc(*b"vp6f"),
        5 => FourCc(*b"vp6a"),
        6 => FourCc(*b"scr2"),
        7 => FourCc::AVC,
        12 => FourCc::HEVC,
        13 => FourCc::AV1,
        _ => FourCc(*b"vunk"),
    }
}

fn sign_extend_24(b: &[u8]) -> i32 {
    let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
    ((v << 8) as i32) >> 8
}

/// Parses the header of a video message (the FLV VIDEODATA body).
pub fn parse_video_header(p: &[u8]) -> Result<VideoHeader, MediaHeaderError> {
    let b0 = *p.first().ok_or(MediaHeaderError::Empty)?;
    if b0 & 0x80 != 0 {
        // Enhanced RTMP: [1 bit ex][3 bits frame type][4 bits packet type], ModEx wrappers,
        // then [FourCC] (or a multitrack header, or a command byte)...
        let frame_type = (b0 >> 4) & 0x07;
        let (packet_type, pos, nanos) = unwrap_modex(p, b0 & 0x0f)?;
        if frame_type == FRAME_TYPE_COMMAND && packet_type != VIDEO_METADATA {
            // A video command (e.g. seek start/end): one byte, no FourCC, no codec data.
            p.get(pos).ok_or(MediaHeaderError::Truncated)?;
            return Ok(VideoHeader {
                codec: FourCc(*b"vunk"),
                keyframe: false,
                kind: PacketKind::Other,
                composition_offset: 0,
                enhanced: true,
                multitrack: false,
                packet_type,
                track_id: None,
                body_offset: pos + 1,
                timestamp_offset_nanos: nanos,
            });
        }
        let (codec, multitrack, packet_type, track_id, mut body_offset) =
            enhanced_codec(p, pos, packet_type, VIDEO_MULTITRACK)?;
        let kind = if frame_type == FRAME_TYPE_COMMAND {
            PacketKind::Other
        } else {
            match packet_type {
                0 | 5 => PacketKind::SequenceHeader,
                1 | 3 => PacketKind::Frame,
                2 => PacketKind::SequenceEnd,
                _ => PacketKind::Other,
            }
        };
        // CodedFrames (1) of AVC and HEVC carry a 24-bit composition time after the FourCC.
        let composition_offset = if !multitrack && packet_type == 1 && (codec == FourCc::AVC || codec == FourCc::HEVC) {
            let cts = sign_extend_24(p.get(body_offset..body_offset + 3).ok_or(MediaHeaderError::Truncated)?);
            body_offset += 3;
            cts
        } else {
            0
        };
        return Ok(VideoHeader {
            codec,
            keyframe: frame_type == 1 && kind == PacketKind::Frame,
            kind,
            composition_offset,
            enhanced: true,
            multitrack,
            packet_type,
            track_id,
            body_offset,
            timestamp_offset_nanos: nanos,
        });
    }
    let frame_type = b0 >> 4;
    let codec = legacy_video_codec(b0 & 0x0f);
    let (kind, packet_type, composition_offset, body_offset) = if frame_type == 5 {
        (PacketKind::Other, 1, 0, 1)
    } else if codec == FourCc::AVC || codec == FourCc::HEVC || codec == FourCc::AV1 {
        let hdr = p.get(1..5).ok_or(MediaHeaderError::Truncated)?;
        let kind = match hdr[0] {
            0 => PacketKind::SequenceHeader,
            1 => PacketKind::Frame,
            2 => PacketKind::SequenceEnd,
            _ => PacketKind::Other,
        };
        (kind, hdr[0], sign_extend_24(&hdr[1..4]), 5)
    } else {
        (PacketKind::Frame, 1, 0, 1)
    };
    Ok(VideoHeader {
        codec,
        keyframe: frame_type == 1 && kind == PacketKind::Frame,
        kind,
        composition_offset,
        enhanced: false,
        multitrack: false,
        packet_type,
        track_id: None,
        body_offset,
        timestamp_offset_nanos: None,
    })
}

fn legacy_audio_codec(format: u8) -> FourCc {
    match format {
        0 | 3 => FourCc(*b"lpcm"),
        1 => FourCc(*b"adpc"),
        2 | 14 => FourCc::MP3,
        4..=6 => FourCc(*b"nlmo"),
        7 => FourCc(*b"alaw"),
        8 => FourCc(*b"ulaw"),
        10 => FourCc::AAC,
        11 => FourCc(*b"spex"),
        13 => FourCc::OPUS,
        _ => FourCc(*b"aunk"),
    }
}

/// Parses the header of an audio message (the FLV AUDIODATA body).
pub fn parse_audio_header(p: &[u8]) -> Result<AudioHeader, MediaHeaderError> {
    let b0 = *p.first().ok_or(MediaHeaderError::Empty)?;
    let format = b0 >> 4;
    if format == 9 {
        // Enhanced RTMP audio: [4 bits = 9][4 bits packet type], ModEx wrappers, [FourCC]...
        let (packet_type, pos, nanos) = unwrap_modex(p, b0 & 0x0f)?;
        let (codec, multitrack, packet_type, track_id, body_offset) =
            enhanced_codec(p, pos, packet_type, AUDIO_MULTITRACK)?;
        let kind = match packet_type {
            0 => PacketKind::SequenceHeader,
            1 => PacketKind::Frame,
            2 => PacketKind::SequenceEnd,
            _ => PacketKind::Other,
        };
        return Ok(AudioHeader {
            codec,
            kind,
            enhanced: true,
            multitrack,
            packet_type,
            track_id,
            body_offset,
            timestamp_offset_nanos: nanos,
        });
    }
    let codec = legacy_audio_codec(format);
    let (kind, packet_type, body_offset) = if codec == FourCc::AAC {
        match *p.get(1).ok_or(MediaHeaderError::Truncated)? {
            0 => (PacketKind::SequenceHeader, 0, 2),
            _ => (PacketKind::Frame, 1, 2),
        }
    } else {
        (PacketKind::Frame, 1, 1)
    };
    Ok(AudioHeader {
        codec,
        kind,
        enhanced: false,
        multitrack: false,
        packet_type,
        track_id: None,
        body_offset,
        timestamp_offset_nanos: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_headers_table() {
        // (name, bytes, codec, keyframe, kind, composition offset, enhanced)
        let cases: &[(&str, &[u8], FourCc, bool, PacketKind, i32, bool)] = &[
            (
                "avc sequence header",
                &[0x17, 0, 0, 0, 0, 1],
                FourCc::AVC,
                false,
                PacketKind::SequenceHeader,
                0,
                false,
            ),
            (
                "avc keyframe",
                &[0x17, 1, 0, 0, 0x28, 0],
                FourCc::AVC,
                true,
                PacketKind::Frame,
                40,
                false,
            ),
            (
                "avc inter frame negative cts",
                &[0x27, 1, 0xff, 0xff, 0xd8, 0],
                FourCc::AVC,
                false,
                PacketKind::Frame,
                -40,
                false,
            ),
            (
                "avc end of sequence",
                &[0x17, 2, 0, 0, 0],
                FourCc::AVC,
                false,
                PacketKind::SequenceEnd,
                0,
                false,
            ),
            (
                "legacy hevc id 12 keyframe",
                &[0x1c, 1, 0, 0, 0, 9],
                FourCc::HEVC,
                true,
                PacketKind::Frame,
                0,
                false,
            ),
            (
                "sorenson h263 inter",
                &[0x22, 9],
                FourCc(*b"h263"),
                false,
                PacketKind::Frame,
                0,
                false,
            ),
            (
                "video command frame",
                &[0x57, 0],
                FourCc::AVC,
                false,
                PacketKind::Other,
                0,
                false,
            ),
            (
                "enhanced hevc sequence start",
                b"\x90hvc1\x01",
                FourCc::HEVC,
                false,
                PacketKind::SequenceHeader,
                0,
                true,
            ),
            (
                "enhanced hevc coded frames with cts",
                b"\x91hvc1\x00\x00\x21\x00",
                FourCc::HEVC,
                true,
                PacketKind::Frame,
                33,
                true,
            ),
            (
                "enhanced av1 coded frames x inter",
                b"\xa3av01\x00",
                FourCc::AV1,
                false,
                PacketKind::Frame,
                0,
                true,
            ),
            (
                "enhanced vp9 keyframe x",
                b"\x93vp09\x00",
                FourCc::VP9,
                true,
                PacketKind::Frame,
                0,
                true,
            ),
            (
                "enhanced metadata",
                b"\x94hvc1\x02",
                FourCc::HEVC,
                false,
                PacketKind::Other,
                0,
                true,
            ),
            (
                "enhanced sequence end",
                b"\x92av01",
                FourCc::AV1,
                false,
                PacketKind::SequenceEnd,
                0,
                true,
            ),
        ];
        for (name, bytes, codec, key, kind, cts, enhanced) in cases {
            let h = parse_video_header(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(h.codec, *codec, "{name}");
            assert_eq!(h.keyframe, *key, "{name}");
            assert_eq!(h.kind, *kind, "{name}");
            assert_eq!(h.composition_offset, *cts, "{name}");
            assert_eq!(h.enhanced, *enhanced, "{name}");
        }
    }

    #[test]
    fn audio_headers_table() {
        let cases: &[(&str, &[u8], FourCc, PacketKind)] = &[
            (
                "aac sequence header",
                &[0xaf, 0, 0x12, 0x10],
                FourCc::AAC,
                PacketKind::SequenceHeader,
            ),
            ("aac raw", &[0xaf, 1, 0x21], FourCc::AAC, PacketKind::Frame),
            ("mp3", &[0x2f, 0xff, 0xfb], FourCc::MP3, PacketKind::Frame),
            ("nellymoser", &[0x6e, 0], FourCc(*b"nlmo"), PacketKind::Frame),
            ("speex", &[0xb2, 0], FourCc(*b"spex"), PacketKind::Frame),
            ("g711 alaw", &[0x72, 0], FourCc(*b"alaw"), PacketKind::Frame),
            ("g711 mulaw", &[0x82, 0], FourCc(*b"ulaw"), PacketKind::Frame),
            (
                "enhanced opus sequence start",
                b"\x90Opus\x01",
                FourCc::OPUS,
                PacketKind::SequenceHeader,
            ),
            ("enhanced opus frame", b"\x91Opus\xfc", FourCc::OPUS, PacketKind::Frame),
            ("enhanced aac fourcc", b"\x91mp4a\x21", FourCc::AAC, PacketKind::Frame),
        ];
        for (name, bytes, codec, kind) in cases {
            let h = parse_audio_header(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((h.codec, h.kind), (*codec, *kind), "{name}");
        }
    }

    /// Wraps an enhanced header's tail (`rest`, starting with the packet type byte's
    /// replacement) in one ModEx TimestampOffsetNano wrapper: `first` keeps the frame type
    /// bits and gets packet type 7.
    fn modex(first: u8, data: &[u8], inner_packet_type: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![(first & 0xf0) | 7];
        if data.len() >= 256 {
            p.push(0xff);
            p.extend_from_slice(&((data.len() - 1) as u16).to_be_bytes());
        } else {
            p.push((data.len() - 1) as u8);
        }
        p.extend_from_slice(data);
        p.push(inner_packet_type); // modifier type 0 (TimestampOffsetNano) in the high bits
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn modex_is_unwrapped_to_the_packet_it_wraps() {
        let nanos = [0x01, 0x86, 0xa0]; // 100000 ns
                                        // An HEVC keyframe (CodedFrames with composition time) wrapped in ModEx.
        let key = modex(0x90, &nanos, 1, b"hvc1\x00\x00\x21\x26\x01");
        let h = parse_video_header(&key).unwrap();
        assert_eq!(
            (h.codec, h.keyframe, h.kind, h.composition_offset, h.packet_type),
            (FourCc::HEVC, true, PacketKind::Frame, 33, 1)
        );
        assert_eq!(h.timestamp_offset_nanos, Some(100_000));
        assert_eq!(
            &key[h.body_offset..],
            b"\x26\x01",
            "codec data follows the composition time"
        );

        // An AV1 sequence start and an inter frame wrapped the same way.
        let start = modex(0x90, &nanos, 0, b"av01\x81\x00\x0c\x00");
        let h = parse_video_header(&start).unwrap();
        assert_eq!(
            (h.codec, h.kind, h.keyframe),
            (FourCc::AV1, PacketKind::SequenceHeader, false)
        );
        assert_eq!(&start[h.body_offset..], b"\x81\x00\x0c\x00");
        let inter = modex(0xa0, &nanos, 3, b"av01\x12\x00");
        let h = parse_video_header(&inter).unwrap();
        assert_eq!((h.kind, h.keyframe), (PacketKind::Frame, false));

        // Wrappers nest; the 16-bit size form carries 256 bytes and more.
        let inner = modex(0x90, &[0; 300], 3, b"vp09\x82");
        let outer = modex(0x90, &nanos, 7, &inner[1..]);
        let h = parse_video_header(&outer).unwrap();
        assert_eq!((h.codec, h.keyframe, h.kind), (FourCc::VP9, true, PacketKind::Frame));
        assert_eq!(&outer[h.body_offset..], b"\x82");

        // A wrapped multitrack keyframe stays multitrack.
        let multi = modex(0x90, &nanos, 6, b"\x01hvc1\x02\x00\x00\x00\x26");
        let h = parse_video_header(&multi).unwrap();
        assert!(h.multitrack && h.keyframe, "{h:?}");
        assert_eq!((h.codec, h.track_id), (FourCc::HEVC, Some(2)));

        // Audio: a wrapped Opus frame and sequence start.
        let frame = modex(0x90, &nanos, 1, b"Opus\xfc");
        let h = parse_audio_header(&frame).unwrap();
        assert_eq!(
            (h.codec, h.kind, h.timestamp_offset_nanos),
            (FourCc::OPUS, PacketKind::Frame, Some(100_000))
        );
        assert_eq!(&frame[h.body_offset..], b"\xfc");
        let start = modex(0x90, &nanos, 0, b"OpusHead");
        let h = parse_audio_header(&start).unwrap();
        assert_eq!(h.kind, PacketKind::SequenceHeader);
        assert_eq!(&start[h.body_offset..], b"Head");
    }

    #[test]
    fn malformed_modex_is_an_error() {
        // Size says 3 bytes of data, 2 follow.
        assert_eq!(
            parse_video_header(&[0x97, 0x02, 0, 0]),
            Err(MediaHeaderError::Truncated)
        );
        // 16-bit size cut short.
        assert_eq!(
            parse_video_header(&[0x97, 0xff, 0x01]),
            Err(MediaHeaderError::Truncated)
        );
        // No packet type byte after the data.
        assert_eq!(
            parse_audio_header(&[0x97, 0x00, 0x00]),
            Err(MediaHeaderError::Truncated)
        );
        // ModEx wrapping ModEx wrapping ... beyond the cap.
        let mut chain = vec![0x97];
        for _ in 0..=MAX_MODEX {
            chain.extend_from_slice(&[0x00, 0x00, 0x07]);
        }
        chain.extend_from_slice(b"hvc1");
        assert_eq!(parse_video_header(&chain), Err(MediaHeaderError::TooManyModEx));
    }

    #[test]
    fn enhanced_command_frames_have_no_fourcc() {
        let h = parse_video_header(&[0xd1, 0x00]).unwrap();
        assert_eq!((h.kind, h.keyframe, h.body_offset), (PacketKind::Other, false, 2));
        assert_eq!(parse_video_header(&[0xd1]), Err(MediaHeaderError::Truncated));
    }

    #[test]
    fn truncated_headers_are_errors_not_panics() {
        assert_eq!(parse_video_header(&[]), Err(MediaHeaderError::Empty));
        assert_eq!(parse_video_header(&[0x17, 1]), Err(MediaHeaderError::Truncated));
        assert_eq!(parse_video_header(b"\x91hv"), Err(MediaHeaderError::Truncated));
        assert_eq!(parse_audio_header(&[0xaf]), Err(MediaHeaderError::Truncated));
        assert_eq!(parse_audio_header(&[0x90, b'O']), Err(MediaHeaderError::Truncated));
    }
}
