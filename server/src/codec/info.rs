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
pub fn video_info(codec: FourCc, enhanced: bool, body: &[u8]) -> Option<VideoInfo> {
    let config = body.get(if enhanced { 5 } else { 5 }..)?;
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
