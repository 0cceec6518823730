//! Codec information for the API and logs, parsed from sequence headers of any codec.

use serde::Serialize;

use super::media::FourCc;
use super::{aac, avc};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VideoInfo {
    pub codec: &'static str,
    pub width: u32,
    pub height: u32,
    pub profile: String,
    pub level: String,
    pub chroma_format: u32,
    pub bit_depth: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AudioInfo {
    pub codec: &'static str,
    pub profile: String,
    pub sample_rate: u32,
    pub channels: u32,
}

/// Parses a video sequence header message body (FLV VIDEODATA). `None` when the codec is
/// not one we parse or the header is corrupt (the stream is still forwarded).
pub fn video_info(codec: FourCc, _enhanced: bool, body: &[u8]) -> Option<VideoInfo> {
    // Legacy (1 byte + packet type + 3-byte composition time) and enhanced (1 byte + FourCC)
    // headers are both 5 bytes before the configuration record.
    let config = body.get(5..)?;
    if codec == FourCc::AVC {
        let i = avc::parse_decoder_config(config).ok()?;
        return Some(VideoInfo {
            codec: codec.name(),
            width: i.width,
            height: i.height,
            profile: i.profile_name().to_string(),
            level: i.level_name(),
            chroma_format: i.chroma_format_idc,
            bit_depth: i.bit_depth,
        });
    }
    None
}

/// Parses an audio sequence header message body (FLV AUDIODATA).
pub fn audio_info(codec: FourCc, enhanced: bool, body: &[u8]) -> Option<AudioInfo> {
    if codec == FourCc::AAC {
        let config = body.get(if enhanced { 5 } else { 2 }..)?;
        let i = aac::parse_audio_specific_config(config).ok()?;
        return Some(AudioInfo {
            codec: codec.name(),
            profile: i.profile_name().to_string(),
            sample_rate: i.sample_rate,
            channels: i.channels,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// AVC sequence header message bodies from FFmpeg 5.1 (libx264), made with
    /// `ffmpeg -f lavfi -i testsrc=size=WxH:rate=30 -t 0.2 -pix_fmt FMT -c:v libx264
    /// -profile:v PROFILE -f flv out.flv` and read from the first video tag.
    const AVC_VECTORS: &[(&str, &str, u32, u32, &str, &str, u32)] = &[
        ("720p baseline", "17000000000142c01fffe100196742c01fd9005005bb0110000003001000000303c0f183248001000568cb83cb20", 1280, 720, "Baseline", "3.1", 8),
        ("1080p high (cropped from 1088)", "170000000001640028ffe1001b67640028acd940780227e5c044000003000400000300f03c60c65801000668ebe3cb22c0fdf8f800", 1920, 1080, "High", "4.0", 8),
        ("360p main", "1700000000014d401effe10018674d401eeca05017fcb80880000003008000001e078b16cb01000568ebe3cb20", 640, 360, "Main", "3.0", 8),
        ("480p high 10 (yuv420p10le)", "1700000000016e001fffe1001b676e001fa6cd940d83de6f0110000003001000000303c0f183196001000668ebe3cb22c0fdfafa00", 854, 480, "High 10", "3.1", 10),
    ];

    #[test]
    fn avc_sequence_headers_from_ffmpeg() {
        for (name, body, w, h, profile, level, depth) in AVC_VECTORS {
            let i = video_info(FourCc::AVC, false, &hex(body)).unwrap_or_else(|| panic!("{name}: no info"));
            assert_eq!((i.width, i.height), (*w, *h), "{name}");
            assert_eq!((i.profile.as_str(), i.level.as_str(), i.bit_depth), (*profile, *level, *depth), "{name}");
            assert_eq!((i.codec, i.chroma_format), ("h264", 1), "{name}");
        }
    }

    #[test]
    fn aac_sequence_header_from_ffmpeg() {
        // `ffmpeg -f lavfi -i sine=sample_rate=48000 -ac 1 -t 0.2 -c:a aac -f flv a.flv`
        let i = audio_info(FourCc::AAC, false, &hex("af00118856e500")).unwrap();
        assert_eq!(i, AudioInfo { codec: "aac", profile: "LC".into(), sample_rate: 48000, channels: 1 });
    }

    #[test]
    fn corrupt_headers_give_no_info() {
        assert_eq!(video_info(FourCc::AVC, false, &hex("1700000000")), None);
        assert_eq!(video_info(FourCc::AVC, false, &hex("170000000001640028ffe1001b67")), None);
        assert_eq!(audio_info(FourCc::AAC, false, &hex("af00")), None);
    }
}
