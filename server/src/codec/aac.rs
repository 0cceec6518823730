//! AAC AudioSpecificConfig: object type, sample rate and channels.

use super::bits::{BitReader, EndOfData};

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacInfo {
    pub object_type: u32,
    pub sample_rate: u32,
    pub channels: u32,
}

impl AacInfo {
    /// Profile name as ffprobe prints it.
    pub fn profile_name(&self) -> &'static str {
        match self.object_type {
            1 => "Main",
            2 => "LC",
            3 => "SSR",
            4 => "LTP",
            5 => "HE-AAC",
            29 => "HE-AACv2",
            23 => "LD",
            39 => "ELD",
            _ => "Other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AacError {
    #[error("AudioSpecificConfig is truncated")]
    Truncated,
    #[error("AudioSpecificConfig has reserved sample rate index {0}")]
    BadSampleRate(u32),
}

impl From<EndOfData> for AacError {
    fn from(_: EndOfData) -> Self {
        AacError::Truncated
    }
}

/// Parses an AudioSpecificConfig (the AAC sequence header body after its 2-byte FLV header).
pub fn parse_audio_specific_config(asc: &[u8]) -> Result<AacInfo, AacError> {
    let mut r = BitReader::new(asc);
    let mut object_type = r.bits(5)?;
    if object_type == 31 {
        object_type = 32 + r.bits(6)?;
    }
    let index = r.bits(4)?;
    let sample_rate = match index {
        15 => r.bits(24)?,
        i if (i as usize) < SAMPLE_RATES.len() => SAMPLE_RATES[i as usize],
        i => return Err(AacError::BadSampleRate(i)),
    };
    let channels = match r.bits(4)? {
        7 => 8,
        c => c,
    };
    Ok(AacInfo {
        object_type,
        sample_rate,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_specific_config_table() {
        let cases: &[(&str, &[u8], Result<AacInfo, AacError>)] = &[
            (
                "LC 44.1k stereo (ffmpeg aac)",
                &[0x12, 0x10],
                Ok(AacInfo {
                    object_type: 2,
                    sample_rate: 44100,
                    channels: 2,
                }),
            ),
            (
                "LC 48k stereo",
                &[0x11, 0x90],
                Ok(AacInfo {
                    object_type: 2,
                    sample_rate: 48000,
                    channels: 2,
                }),
            ),
            (
                "LC 48k mono",
                &[0x11, 0x88],
                Ok(AacInfo {
                    object_type: 2,
                    sample_rate: 48000,
                    channels: 1,
                }),
            ),
            (
                "HE-AAC 24k stereo",
                &[0x2b, 0x10],
                Ok(AacInfo {
                    object_type: 5,
                    sample_rate: 24000,
                    channels: 2,
                }),
            ),
            (
                "explicit sample rate 12345",
                &[0x17, 0x80, 0x18, 0x1c, 0x90],
                Ok(AacInfo {
                    object_type: 2,
                    sample_rate: 12345,
                    channels: 2,
                }),
            ),
            (
                "7.1 channel config 7",
                &[0x11, 0xb8],
                Ok(AacInfo {
                    object_type: 2,
                    sample_rate: 48000,
                    channels: 8,
                }),
            ),
            (
                "reserved sample rate index",
                &[0x16, 0x90],
                Err(AacError::BadSampleRate(13)),
            ),
            ("truncated", &[0x12], Err(AacError::Truncated)),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(&parse_audio_specific_config(bytes), want, "{name}");
        }
    }
}
