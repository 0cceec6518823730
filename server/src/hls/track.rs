//! From hub frames to what the container writers take: a track's configuration from its
//! sequence header (or, for codecs without one, its first frame), and each frame's sample
//! bytes and timestamps. FLV/enhanced-RTMP framing knowledge for HLS lives here.

use bytes::Bytes;
use ferrocast_media::ac3::{Ac3Config, Eac3Config};
use ferrocast_media::fmp4::{CodecConfig, OpusConfig, TrackKind, VIDEO_TIMESCALE};
use ferrocast_media::ts::{ParameterSets, TsAudio, TsVideo};

use crate::codec::info;
use crate::codec::media::{FourCc, PacketKind};
use crate::codec::opus;
use crate::hub::{FrameKind, MediaFrame};

/// A track's configuration, enough for an init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSetup {
    pub kind: TrackKind,
    pub timescale: u32,
    pub codec: CodecConfig,
}

impl TrackSetup {
    /// The TS equivalent of this track, when TS can carry it.
    pub fn ts_video(&self) -> Option<TsVideo> {
        match &self.codec {
            CodecConfig::Avc(r) => ParameterSets::from_avc_record(r).ok().map(TsVideo::Avc),
            CodecConfig::Hevc(r) => ParameterSets::from_hevc_record(r).ok().map(TsVideo::Hevc),
            _ => None,
        }
    }

    pub fn ts_audio(&self) -> Option<TsAudio> {
        match &self.codec {
            CodecConfig::Aac(asc) => TsAudio::aac(asc).ok(),
            CodecConfig::Mp3 => Some(TsAudio::Mp3),
            _ => None,
        }
    }
}

fn enhanced(payload: &[u8], kind: FrameKind) -> bool {
    let b0 = payload.first().copied().unwrap_or(0);
    match kind {
        FrameKind::Video => b0 & 0x80 != 0,
        _ => b0 >> 4 == 9,
    }
}

/// The configuration of a video track from its sequence header; VP9 needs a keyframe too
/// (its record has no picture size), given as `keyframe` once there is one.
pub fn video_setup(header: &MediaFrame, keyframe: Option<&MediaFrame>) -> Option<TrackSetup> {
    let record = header.payload.get(5..)?.to_vec();
    let codec = match header.codec {
        FourCc::AVC => CodecConfig::Avc(record),
        FourCc::HEVC => CodecConfig::Hevc(record),
        FourCc::AV1 => CodecConfig::Av1(record),
        FourCc::VP9 => CodecConfig::Vp9(record),
        _ => return None,
    };
    let (width, height) = if header.codec == FourCc::VP9 {
        info::vp9_frame_size(&keyframe?.payload)?
    } else {
        let i = info::video_info(
            header.codec,
            enhanced(&header.payload, FrameKind::Video),
            &header.payload,
        )?;
        (i.width, i.height)
    };
    Some(TrackSetup {
        kind: TrackKind::Video {
            width: u16::try_from(width).unwrap_or(0),
            height: u16::try_from(height).unwrap_or(0),
        },
        timescale: VIDEO_TIMESCALE,
        codec,
    })
}

/// Whether audio of this codec starts with a sequence header (else the first frame sets it up).
pub fn audio_has_sequence_header(codec: FourCc) -> bool {
    matches!(codec, FourCc::AAC | FourCc::OPUS | FourCc::FLAC)
}

/// The FLAC STREAMINFO block, with whatever a sender put in front of it removed.
fn flac_streaminfo(data: &[u8]) -> Option<Vec<u8>> {
    let mut d = data.strip_prefix(b"fLaC").unwrap_or(data);
    if d.get(..4) == Some(&[0, 0, 0, 0]) {
        d = &d[4..];
    }
    if d.len() >= 4 && d[0] & 0x7f == 0 && d[1..4] == [0, 0, 34] {
        d = &d[4..];
    }
    d.get(..34).map(<[u8]>::to_vec)
}

/// The configuration of an audio track from its sequence header (AAC, Opus, FLAC) or its
/// first frame (MP3, AC-3, E-AC-3).
pub fn audio_setup(frame: &MediaFrame) -> Option<TrackSetup> {
    let enhanced = enhanced(&frame.payload, FrameKind::Audio);
    let body = if enhanced {
        frame.payload.get(5..)?
    } else {
        frame.payload.get(if frame.codec == FourCc::AAC { 2 } else { 1 }..)?
    };
    let (codec, sample_rate, channels) = match frame.codec {
        FourCc::AAC => {
            let i = info::audio_info(frame.codec, enhanced, &frame.payload)?;
            (CodecConfig::Aac(body.to_vec()), i.sample_rate, i.channels)
        }
        FourCc::OPUS => {
            let h = opus::parse_header(body).ok()?;
            // Both header forms end with the channel mapping table when there is one.
            let mapping = if h.mapping_family != 0 {
                body.get(body.len().checked_sub(usize::from(h.channels as u8))?..)?
                    .to_vec()
            } else {
                Vec::new()
            };
            let c = OpusConfig {
                channels: h.channels as u8,
                pre_skip: h.pre_skip,
                input_sample_rate: h.input_sample_rate,
                output_gain: h.output_gain,
                mapping_family: h.mapping_family,
                stream_count: h.stream_count,
                coupled_count: h.coupled_count,
                channel_mapping: mapping,
            };
            (CodecConfig::Opus(c), 48_000, h.channels)
        }
        FourCc::FLAC => {
            let info = flac_streaminfo(body)?;
            let i = info::audio_info(frame.codec, enhanced, &frame.payload)?;
            (CodecConfig::Flac(info), i.sample_rate, i.channels)
        }
        FourCc::AC3 => {
            let c = Ac3Config::parse(body).ok()?;
            let (rate, ch) = (c.sample_rate(), u32::from(c.channels()));
            (CodecConfig::Ac3(c), rate, ch)
        }
        FourCc::EAC3 => {
            let c = Eac3Config::parse(body).ok()?;
            let (rate, ch) = (c.sample_rate(), u32::from(c.channels()));
            (CodecConfig::Eac3(c), rate, ch)
        }
        FourCc::MP3 => {
            let i = info::audio_info(frame.codec, enhanced, &frame.payload).filter(|i| i.sample_rate > 0)?;
            (CodecConfig::Mp3, i.sample_rate, i.channels)
        }
        _ => return None,
    };
    if sample_rate == 0 {
        return None;
    }
    Some(TrackSetup {
        kind: TrackKind::Audio {
            sample_rate,
            channels: u16::try_from(channels).unwrap_or(2),
        },
        timescale: sample_rate,
        codec,
    })
}

/// The coded sample a media frame carries, as ISO-BMFF stores it; `None` for frames that
/// carry no sample (sequence headers, end of sequence, side data).
pub fn sample_data(frame: &MediaFrame) -> Option<Bytes> {
    if frame.packet != PacketKind::Frame || frame.multitrack {
        return None;
    }
    let p = &frame.payload;
    let start = match frame.kind {
        FrameKind::Video if enhanced(p, FrameKind::Video) => {
            let packet_type = p[0] & 0x0f;
            // CodedFrames of AVC and HEVC carry a 24-bit composition time after the FourCC.
            if packet_type == 1 && matches!(frame.codec, FourCc::AVC | FourCc::HEVC) {
                8
            } else {
                5
            }
        }
        FrameKind::Video => 5,
        FrameKind::Audio if enhanced(p, FrameKind::Audio) => 5,
        FrameKind::Audio if frame.codec == FourCc::AAC => 2,
        FrameKind::Audio => 1,
        FrameKind::Data => return None,
    };
    if p.len() <= start {
        return None;
    }
    let data = p.slice(start..);
    if frame.codec == FourCc::AV1 {
        return Some(strip_temporal_delimiters(data));
    }
    Some(data)
}

/// ISO-BMFF AV1 samples carry no temporal delimiter OBUs; senders may include them.
fn strip_temporal_delimiters(data: Bytes) -> Bytes {
    const OBU_TEMPORAL_DELIMITER: u8 = 2;
    let mut spans = Vec::new();
    let mut at = 0;
    let mut found = false;
    while at < data.len() {
        let header = data[at];
        let obu_type = (header >> 3) & 0x0f;
        let has_extension = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let mut p = at + 1 + usize::from(has_extension);
        if !has_size {
            // The last OBU runs to the end of the sample.
            spans.push((at, data.len(), obu_type));
            break;
        }
        let mut size: u64 = 0;
        let mut ok = false;
        for i in 0..8 {
            let Some(b) = data.get(p) else { break };
            size |= u64::from(b & 0x7f) << (7 * i);
            p += 1;
            if b & 0x80 == 0 {
                ok = true;
                break;
            }
        }
        let end = usize::try_from(size).ok().and_then(|s| p.checked_add(s));
        match end {
            Some(end) if ok && end <= data.len() => {
                found |= obu_type == OBU_TEMPORAL_DELIMITER;
                spans.push((at, end, obu_type));
                at = end;
            }
            // Not parseable: leave the sample as the publisher sent it.
            _ => return data,
        }
    }
    if !found {
        return data;
    }
    let mut out = Vec::with_capacity(data.len());
    for (s, e, t) in spans {
        if t != OBU_TEMPORAL_DELIMITER {
            out.extend_from_slice(&data[s..e]);
        }
    }
    Bytes::from(out)
}

/// Extends 32-bit millisecond timestamps to 64 bits across wraps (and small steps back).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unwrap {
    last: Option<(u32, i64)>,
}

impl Unwrap {
    pub fn extend(&mut self, ts: u32) -> i64 {
        let ext = match self.last {
            None => i64::from(ts),
            Some((last, ext)) => ext + i64::from(ts.wrapping_sub(last) as i32),
        };
        self.last = Some((ts, ext));
        ext
    }
}

/// Milliseconds to `timescale` ticks, computed from the absolute time so rounding never
/// accumulates.
pub fn ms_to_ticks(ms: i64, timescale: u32) -> i64 {
    ms * i64::from(timescale) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_continue_across_the_32_bit_wrap() {
        let mut u = Unwrap::default();
        assert_eq!(u.extend(u32::MAX - 10), i64::from(u32::MAX) - 10);
        assert_eq!(u.extend(5), i64::from(u32::MAX) + 6);
        assert_eq!(u.extend(40), i64::from(u32::MAX) + 41);
    }

    #[test]
    fn tick_conversion_does_not_drift() {
        // 1024-sample AAC frames at 48 kHz are 21.333 ms; summed per-frame rounding would drift.
        let ticks: Vec<i64> = (0..3000).map(|i| ms_to_ticks(i * 64 / 3, 48_000)).collect();
        let last = *ticks.last().unwrap();
        assert!((last - 2999 * 1024).abs() <= 48, "{last}");
    }

    #[test]
    fn av1_temporal_delimiters_are_removed() {
        // TD (type 2, size 0), then a frame header OBU (type 3) of 2 bytes.
        let data = Bytes::from_static(&[0x12, 0x00, 0x1a, 0x02, 0xaa, 0xbb]);
        assert_eq!(&strip_temporal_delimiters(data)[..], &[0x1a, 0x02, 0xaa, 0xbb]);
        let bad = Bytes::from_static(&[0x12, 0x09, 0x00]);
        assert_eq!(&strip_temporal_delimiters(bad.clone())[..], &bad[..]);
    }
}
