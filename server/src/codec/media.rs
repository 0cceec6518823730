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
}

/// The parsed start of an audio message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioHeader {
    pub codec: FourCc,
    pub kind: PacketKind,
    pub enhanced: bool,
    pub multitrack: bool,
}

/// Why a media message header could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MediaHeaderError {
    #[error("empty media message")]
    Empty,
    #[error("media message shorter than its header")]
    Truncated,
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
        // Enhanced RTMP: [1 bit ex][3 bits frame type][4 bits packet type][FourCC]...
        let frame_type = (b0 >> 4) & 0x07;
        let packet_type = b0 & 0x0f;
        let multitrack = packet_type == 6;
        let (codec, packet_type) = if multitrack {
            // [multitrack type + inner packet type][FourCC]...; inner type tells what it is.
            let b1 = *p.get(1).ok_or(MediaHeaderError::Truncated)?;
            let fourcc = p.get(2..6).ok_or(MediaHeaderError::Truncated)?;
            (FourCc(fourcc.try_into().unwrap_or(*b"vunk")), b1 & 0x0f)
        } else {
            let fourcc = p.get(1..5).ok_or(MediaHeaderError::Truncated)?;
            (FourCc(fourcc.try_into().unwrap_or(*b"vunk")), packet_type)
        };
        let kind = if frame_type == 5 {
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
            sign_extend_24(p.get(5..8).ok_or(MediaHeaderError::Truncated)?)
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
        });
    }
    let frame_type = b0 >> 4;
    let codec = legacy_video_codec(b0 & 0x0f);
    let (kind, composition_offset) = if frame_type == 5 {
        (PacketKind::Other, 0)
    } else if codec == FourCc::AVC || codec == FourCc::HEVC || codec == FourCc::AV1 {
        let hdr = p.get(1..5).ok_or(MediaHeaderError::Truncated)?;
        let kind = match hdr[0] {
            0 => PacketKind::SequenceHeader,
            1 => PacketKind::Frame,
            2 => PacketKind::SequenceEnd,
            _ => PacketKind::Other,
        };
        (kind, sign_extend_24(&hdr[1..4]))
    } else {
        (PacketKind::Frame, 0)
    };
    Ok(VideoHeader {
        codec,
        keyframe: frame_type == 1 && kind == PacketKind::Frame,
        kind,
        composition_offset,
        enhanced: false,
        multitrack: false,
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
        // Enhanced RTMP audio: [4 bits = 9][4 bits packet type][FourCC]...
        let packet_type = b0 & 0x0f;
        let multitrack = packet_type == 5;
        let (codec, packet_type) = if multitrack {
            let b1 = *p.get(1).ok_or(MediaHeaderError::Truncated)?;
            let fourcc = p.get(2..6).ok_or(MediaHeaderError::Truncated)?;
            (FourCc(fourcc.try_into().unwrap_or(*b"aunk")), b1 & 0x0f)
        } else {
            let fourcc = p.get(1..5).ok_or(MediaHeaderError::Truncated)?;
            (FourCc(fourcc.try_into().unwrap_or(*b"aunk")), packet_type)
        };
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
        });
    }
    let codec = legacy_audio_codec(format);
    let kind = if codec == FourCc::AAC {
        match *p.get(1).ok_or(MediaHeaderError::Truncated)? {
            0 => PacketKind::SequenceHeader,
            _ => PacketKind::Frame,
        }
    } else {
        PacketKind::Frame
    };
    Ok(AudioHeader {
        codec,
        kind,
        enhanced: false,
        multitrack: false,
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

    #[test]
    fn truncated_headers_are_errors_not_panics() {
        assert_eq!(parse_video_header(&[]), Err(MediaHeaderError::Empty));
        assert_eq!(parse_video_header(&[0x17, 1]), Err(MediaHeaderError::Truncated));
        assert_eq!(parse_video_header(b"\x91hv"), Err(MediaHeaderError::Truncated));
        assert_eq!(parse_audio_header(&[0xaf]), Err(MediaHeaderError::Truncated));
        assert_eq!(parse_audio_header(&[0x90, b'O']), Err(MediaHeaderError::Truncated));
    }
}
