//! Codec information for the API and logs, parsed from sequence headers of any codec.
//!
//! Owns the step from a whole FLV video or audio message body to a codec-neutral summary:
//! where the codec's configuration starts in the body, which parser reads it, and how its
//! profile and level are named. The codec parsers themselves live in their own modules;
//! the few audio codecs whose headers fit in a dozen lines (FLAC, AC-3, E-AC-3, MP3) are
//! read here.

use serde::Serialize;

use super::bits::BitReader;
use super::media::{self, FourCc, PacketKind};
use super::{aac, av1, avc, hevc, opus, vp9};

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
/// not one we parse or the header is corrupt or empty (the stream is still forwarded).
///
/// VP9's configuration record has no picture size, so its width and height are 0 here;
/// [`vp9_frame_size`] reads them from the first keyframe.
pub fn video_info(codec: FourCc, _enhanced: bool, body: &[u8]) -> Option<VideoInfo> {
    // The header parser knows where the record starts: after the legacy packet type and
    // composition time, or after the FourCC and any ModEx wrappers.
    let config = body.get(media::parse_video_header(body).ok()?.body_offset..)?;
    // (width, height, profile, level, chroma format, bit depth)
    let (width, height, profile, level, chroma_format, bit_depth) = match codec {
        FourCc::AVC => {
            let i = avc::parse_decoder_config(config).ok()?;
            (
                i.width,
                i.height,
                i.profile_name().to_string(),
                i.level_name(),
                i.chroma_format_idc,
                i.bit_depth,
            )
        }
        FourCc::HEVC => {
            let i = hevc::parse_decoder_config(config).ok()?;
            (
                i.width,
                i.height,
                i.profile_name().to_string(),
                i.level_name(),
                i.chroma_format_idc,
                i.bit_depth,
            )
        }
        FourCc::AV1 => {
            let i = av1::parse_decoder_config(config).ok()?;
            (
                i.width,
                i.height,
                i.profile_name().to_string(),
                i.level_name(),
                i.chroma_format(),
                i.bit_depth,
            )
        }
        FourCc::VP9 => {
            let i = vp9::parse_decoder_config(config).ok()?;
            (
                0,
                0,
                i.profile_name().to_string(),
                i.level_name(),
                i.chroma_format(),
                i.bit_depth,
            )
        }
        _ => return None,
    };
    Some(VideoInfo {
        codec: codec.name(),
        width,
        height,
        profile,
        level,
        chroma_format,
        bit_depth,
    })
}

/// Picture size of an enhanced-RTMP `vp09` CodedFrames or CodedFramesX message body that
/// holds a keyframe, for filling in what the VP9 sequence header cannot say. `None` for
/// any other message.
pub fn vp9_frame_size(body: &[u8]) -> Option<(u32, u32)> {
    let h = media::parse_video_header(body).ok()?;
    if !h.enhanced || h.multitrack || h.codec != FourCc::VP9 || h.kind != PacketKind::Frame {
        return None;
    }
    vp9::parse_keyframe_size(body.get(h.body_offset..)?)
}

/// Parses an audio sequence header message body (FLV AUDIODATA).
///
/// MP3 has no sequence header and FFmpeg sends an empty AC-3/E-AC-3 SequenceStart, so for
/// these the body of a coded frame is accepted too and its first frame header is read. For
/// FLAC, AC-3, E-AC-3 and MP3 a header we cannot read still names the codec, with rate and
/// channels 0.
pub fn audio_info(codec: FourCc, enhanced: bool, body: &[u8]) -> Option<AudioInfo> {
    // After the legacy header byte(s), or after the FourCC and any ModEx wrappers.
    let payload = body.get(media::parse_audio_header(body).ok()?.body_offset..)?;
    let enhanced_payload = || Some(payload).filter(|_| enhanced);
    let named = |sample_rate: u32, channels: u32| AudioInfo {
        codec: codec.name(),
        profile: String::new(),
        sample_rate,
        channels,
    };
    match codec {
        FourCc::AAC => {
            let i = aac::parse_audio_specific_config(payload).ok()?;
            Some(AudioInfo {
                codec: codec.name(),
                profile: i.profile_name().to_string(),
                sample_rate: i.sample_rate,
                channels: i.channels,
            })
        }
        FourCc::OPUS => {
            // Legacy FLV has no Opus; only the enhanced form has a sequence header.
            let i = opus::parse_header(enhanced_payload()?).ok()?;
            Some(named(i.sample_rate(), i.channels))
        }
        FourCc::FLAC => {
            let (rate, channels) = enhanced_payload().and_then(flac_stream_info).unwrap_or((0, 0));
            Some(named(rate, channels))
        }
        FourCc::AC3 | FourCc::EAC3 => {
            let (rate, channels) = enhanced_payload().and_then(ac3_info).unwrap_or((0, 0));
            Some(named(rate, channels))
        }
        FourCc::MP3 => {
            let (rate, channels) = mpeg_audio_header(payload).unwrap_or((0, 0));
            Some(named(rate, channels))
        }
        _ => None,
    }
}

/// Sample rate and channels from FLAC's STREAMINFO. FFmpeg sends the bare 34-byte block;
/// other senders may keep the "fLaC" marker, the metadata block header, or the dfLa box's
/// version and flags in front of it.
fn flac_stream_info(data: &[u8]) -> Option<(u32, u32)> {
    let mut d = data.strip_prefix(b"fLaC").unwrap_or(data);
    if d.get(..4) == Some(&[0, 0, 0, 0]) {
        d = &d[4..]; // dfLa FullBox version 0, flags 0 (a block size of 0 is invalid)
    }
    if d.len() >= 4 && d[0] & 0x7f == 0 && d[1..4] == [0, 0, 34] {
        d = &d[4..]; // metadata block header: STREAMINFO (type 0), 34 bytes
    }
    let block = d.get(..34)?;
    let mut r = BitReader::new(&block[10..]);
    let rate = r.bits(20).ok()?;
    let channels = r.bits(3).ok()? + 1;
    if rate == 0 || u16::from_be_bytes([block[0], block[1]]) < 16 {
        return None;
    }
    Some((rate, channels))
}

/// Sample rate and channels from the first AC-3 or E-AC-3 syncframe (syncinfo + the start
/// of bsi), told apart by bsid as decoders do.
fn ac3_info(frame: &[u8]) -> Option<(u32, u32)> {
    const ACMOD_CHANNELS: [u32; 8] = [2, 1, 2, 3, 3, 4, 4, 5];
    let f = frame.get(..8)?;
    if f[0..2] != [0x0b, 0x77] {
        return None;
    }
    let bsid = f[5] >> 3;
    let mut r = BitReader::new(&f[2..]);
    if bsid <= 10 {
        r.skip(16).ok()?; // crc1
        let rate = match r.bits(2).ok()? {
            0 => 48_000,
            1 => 44_100,
            2 => 32_000,
            _ => return None,
        };
        r.skip(6 + 5 + 3).ok()?; // frmsizecod, bsid, bsmod
        let acmod = r.bits(3).ok()?;
        if acmod & 1 != 0 && acmod != 1 {
            r.skip(2).ok()?; // cmixlev
        }
        if acmod & 4 != 0 {
            r.skip(2).ok()?; // surmixlev
        }
        if acmod == 2 {
            r.skip(2).ok()?; // dsurmod
        }
        let lfe = r.bits(1).ok()?;
        Some((rate, ACMOD_CHANNELS[acmod as usize] + lfe))
    } else if bsid <= 16 {
        r.skip(2 + 3 + 11).ok()?; // strmtyp, substreamid, frmsiz
        let rate = match r.bits(2).ok()? {
            0 => 48_000,
            1 => 44_100,
            2 => 32_000,
            // fscod 3: reduced rates in fscod2, instead of numblkscod
            _ => match r.bits(2).ok()? {
                0 => 24_000,
                1 => 22_050,
                2 => 16_000,
                _ => return None,
            },
        };
        if rate >= 32_000 {
            r.skip(2).ok()?; // numblkscod
        }
        let acmod = r.bits(3).ok()?;
        let lfe = r.bits(1).ok()?;
        Some((rate, ACMOD_CHANNELS[acmod as usize] + lfe))
    } else {
        None
    }
}

/// Sample rate and channels from an MPEG audio frame header.
fn mpeg_audio_header(frame: &[u8]) -> Option<(u32, u32)> {
    let h = frame.get(..4)?;
    if h[0] != 0xff || h[1] & 0xe0 != 0xe0 {
        return None;
    }
    let divisor = match (h[1] >> 3) & 3 {
        3 => 1, // MPEG-1
        2 => 2, // MPEG-2
        0 => 4, // MPEG-2.5
        _ => return None,
    };
    if (h[1] >> 1) & 3 == 0 {
        return None; // reserved layer
    }
    let rate = match (h[2] >> 2) & 3 {
        0 => 44_100,
        1 => 48_000,
        2 => 32_000,
        _ => return None,
    } / divisor;
    let channels = if h[3] >> 6 == 3 { 1 } else { 2 };
    Some((rate, channels))
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // case tables are tuples of named fields
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
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
            assert_eq!(
                (i.profile.as_str(), i.level.as_str(), i.bit_depth),
                (*profile, *level, *depth),
                "{name}"
            );
            assert_eq!((i.codec, i.chroma_format), ("h264", 1), "{name}");
        }
    }

    #[test]
    fn aac_sequence_header_from_ffmpeg() {
        // `ffmpeg -f lavfi -i sine=sample_rate=48000 -ac 1 -t 0.2 -c:a aac -f flv a.flv`
        let i = audio_info(FourCc::AAC, false, &hex("af00118856e500")).unwrap();
        assert_eq!(
            i,
            AudioInfo {
                codec: "aac",
                profile: "LC".into(),
                sample_rate: 48000,
                channels: 1
            }
        );
    }

    #[test]
    fn corrupt_headers_give_no_info() {
        assert_eq!(video_info(FourCc::AVC, false, &hex("1700000000")), None);
        assert_eq!(
            video_info(FourCc::AVC, false, &hex("170000000001640028ffe1001b67")),
            None
        );
        assert_eq!(audio_info(FourCc::AAC, false, &hex("af00")), None);
    }

    fn video(codec: &'static str, w: u32, h: u32, profile: &str, level: &str, chroma: u32, depth: u32) -> VideoInfo {
        VideoInfo {
            codec,
            width: w,
            height: h,
            profile: profile.into(),
            level: level.into(),
            chroma_format: chroma,
            bit_depth: depth,
        }
    }

    fn audio(codec: &'static str, profile: &str, rate: u32, channels: u32) -> AudioInfo {
        AudioInfo {
            codec,
            profile: profile.into(),
            sample_rate: rate,
            channels,
        }
    }

    /// The 720p HEVC record behind a legacy codec id 12 header (keyframe, sequence header,
    /// composition time 0), as CDN encoders send it.
    fn legacy_hevc_720p() -> Vec<u8> {
        [
            &[0x1c, 0, 0, 0, 0][..],
            &include_bytes!("testdata/hevc_1280x720_main.bin")[5..],
        ]
        .concat()
    }

    /// Enhanced-RTMP sequence headers from FFmpeg 9 (see testdata/README.md), plus the
    /// legacy HEVC form.
    #[test]
    fn video_sequence_headers_from_ffmpeg_9() {
        let legacy_hevc = legacy_hevc_720p();
        let cases: &[(&str, FourCc, bool, &[u8], VideoInfo)] = &[
            (
                "hevc 720p",
                FourCc::HEVC,
                true,
                include_bytes!("testdata/hevc_1280x720_main.bin"),
                video("hevc", 1280, 720, "Main", "3.1", 1, 8),
            ),
            (
                "hevc legacy id 12 720p",
                FourCc::HEVC,
                false,
                &legacy_hevc,
                video("hevc", 1280, 720, "Main", "3.1", 1, 8),
            ),
            (
                "hevc 854x480 cropped",
                FourCc::HEVC,
                true,
                include_bytes!("testdata/hevc_854x480_main_cropped.bin"),
                video("hevc", 854, 480, "Main", "3.0", 1, 8),
            ),
            (
                "hevc 1080p main 10",
                FourCc::HEVC,
                true,
                include_bytes!("testdata/hevc_1920x1080_main10.bin"),
                video("hevc", 1920, 1080, "Main 10", "4.0", 1, 10),
            ),
            (
                "hevc 4:4:4",
                FourCc::HEVC,
                true,
                include_bytes!("testdata/hevc_854x480_rext_444.bin"),
                video("hevc", 854, 480, "Rext", "3.0", 3, 8),
            ),
            (
                "hevc 4:2:2 10-bit",
                FourCc::HEVC,
                true,
                include_bytes!("testdata/hevc_640x360_rext_422_10.bin"),
                video("hevc", 640, 360, "Rext", "2.1", 2, 10),
            ),
            (
                "av1 720p",
                FourCc::AV1,
                true,
                include_bytes!("testdata/av1_1280x720_main.bin"),
                video("av1", 1280, 720, "Main", "3.1", 1, 8),
            ),
            (
                "av1 1080p 10-bit",
                FourCc::AV1,
                true,
                include_bytes!("testdata/av1_1920x1080_main_10.bin"),
                video("av1", 1920, 1080, "Main", "4.0", 1, 10),
            ),
            (
                "av1 4:4:4",
                FourCc::AV1,
                true,
                include_bytes!("testdata/av1_640x360_high_444.bin"),
                video("av1", 640, 360, "High", "2.1", 3, 8),
            ),
            (
                "av1 4:2:2",
                FourCc::AV1,
                true,
                include_bytes!("testdata/av1_426x240_pro_422.bin"),
                video("av1", 426, 240, "Professional", "2.0", 2, 8),
            ),
            (
                "av1 12-bit",
                FourCc::AV1,
                true,
                include_bytes!("testdata/av1_320x240_pro_420_12.bin"),
                video("av1", 320, 240, "Professional", "2.0", 1, 12),
            ),
            (
                "av1 monochrome",
                FourCc::AV1,
                true,
                include_bytes!("testdata/av1_320x240_main_gray.bin"),
                video("av1", 320, 240, "Main", "2.0", 0, 8),
            ),
            (
                "vp9 profile 0",
                FourCc::VP9,
                true,
                include_bytes!("testdata/vp9_1280x720_p0.bin"),
                video("vp9", 0, 0, "Profile 0", "3.1", 1, 8),
            ),
            (
                "vp9 profile 2",
                FourCc::VP9,
                true,
                include_bytes!("testdata/vp9_854x480_p2_10.bin"),
                video("vp9", 0, 0, "Profile 2", "3.0", 1, 10),
            ),
            (
                "vp9 profile 1 4:4:4",
                FourCc::VP9,
                true,
                include_bytes!("testdata/vp9_640x360_p1_444.bin"),
                video("vp9", 0, 0, "Profile 1", "2.1", 3, 8),
            ),
            (
                "vp9 profile 1 RGB",
                FourCc::VP9,
                true,
                include_bytes!("testdata/vp9_320x240_p1_gbrp.bin"),
                video("vp9", 0, 0, "Profile 1", "2.0", 3, 8),
            ),
            (
                "vp9 profile 3",
                FourCc::VP9,
                true,
                include_bytes!("testdata/vp9_320x240_p3_444_12.bin"),
                video("vp9", 0, 0, "Profile 3", "2.0", 3, 12),
            ),
        ];
        for (name, codec, enhanced, body, want) in cases {
            assert_eq!(video_info(*codec, *enhanced, body).as_ref(), Some(want), "{name}");
        }
    }

    #[test]
    fn vp9_keyframes_give_the_size() {
        let cases: &[(&str, &[u8], Option<(u32, u32)>)] = &[
            (
                "720p",
                include_bytes!("testdata/vp9_1280x720_p0.frame.bin"),
                Some((1280, 720)),
            ),
            (
                "854x480 10-bit",
                include_bytes!("testdata/vp9_854x480_p2_10.frame.bin"),
                Some((854, 480)),
            ),
            (
                "360p 4:4:4",
                include_bytes!("testdata/vp9_640x360_p1_444.frame.bin"),
                Some((640, 360)),
            ),
            (
                "240p RGB",
                include_bytes!("testdata/vp9_320x240_p1_gbrp.frame.bin"),
                Some((320, 240)),
            ),
            (
                "240p profile 3",
                include_bytes!("testdata/vp9_320x240_p3_444_12.frame.bin"),
                Some((320, 240)),
            ),
            // Second frame of the 720p stream: CodedFrames, inter frame.
            (
                "inter frame",
                &hex("a17670303986004092f1214006002873bfa3ad16d5cd5f14"),
                None,
            ),
            ("sequence start", include_bytes!("testdata/vp9_1280x720_p0.bin"), None),
            ("other codec", b"\x91av01\x82\x49\x83\x42\x00\x4f\xf0\x2c\xf6", None),
            (
                "legacy header",
                b"\x17\x01\x00\x00\x00\x82\x49\x83\x42\x00\x4f\xf0\x2c\xf6",
                None,
            ),
            ("empty", b"", None),
            ("header only", b"\x91vp09", None),
        ];
        for (name, body, want) in cases {
            assert_eq!(vp9_frame_size(body), *want, "{name}");
        }
    }

    /// Audio sequence headers (or, for MP3 and AC-3, first frames) from FFmpeg 9.
    #[test]
    fn audio_headers_from_ffmpeg_9() {
        let cases: &[(&str, FourCc, bool, &[u8], AudioInfo)] = &[
            (
                "opus 48k stereo",
                FourCc::OPUS,
                true,
                include_bytes!("testdata/opus_48k_stereo.bin"),
                audio("opus", "", 48000, 2),
            ),
            (
                "opus 48k mono",
                FourCc::OPUS,
                true,
                include_bytes!("testdata/opus_48k_mono.bin"),
                audio("opus", "", 48000, 1),
            ),
            (
                "opus 16k input",
                FourCc::OPUS,
                true,
                include_bytes!("testdata/opus_16k_mono.bin"),
                audio("opus", "", 16000, 1),
            ),
            (
                "opus 5.1",
                FourCc::OPUS,
                true,
                include_bytes!("testdata/opus_48k_5.1.bin"),
                audio("opus", "", 48000, 6),
            ),
            (
                "flac 44.1k stereo",
                FourCc::FLAC,
                true,
                include_bytes!("testdata/flac_44k_stereo_16.bin"),
                audio("flac", "", 44100, 2),
            ),
            (
                "flac 96k mono",
                FourCc::FLAC,
                true,
                include_bytes!("testdata/flac_96k_mono_24.bin"),
                audio("flac", "", 96000, 1),
            ),
            (
                "ac3 empty sequence start",
                FourCc::AC3,
                true,
                &hex("9061632d33"),
                audio("ac3", "", 0, 0),
            ),
            (
                "ac3 first frame",
                FourCc::AC3,
                true,
                include_bytes!("testdata/ac3_48k_stereo.frame.bin"),
                audio("ac3", "", 48000, 2),
            ),
            (
                "eac3 first frame 5.1",
                FourCc::EAC3,
                true,
                include_bytes!("testdata/eac3_48k_5.1.frame.bin"),
                audio("eac3", "", 48000, 6),
            ),
            (
                "mp3 legacy 44.1k stereo",
                FourCc::MP3,
                false,
                include_bytes!("testdata/mp3_44k_stereo.frame.bin"),
                audio("mp3", "", 44100, 2),
            ),
            (
                "mp3 legacy 22.05k mono",
                FourCc::MP3,
                false,
                include_bytes!("testdata/mp3_22k_mono.frame.bin"),
                audio("mp3", "", 22050, 1),
            ),
            (
                "aac legacy 44.1k stereo",
                FourCc::AAC,
                false,
                &hex("af00121056e500"),
                audio("aac", "LC", 44100, 2),
            ),
            // FFmpeg 9 still sends AAC with the legacy header; the FourCC form carries the
            // same AudioSpecificConfig after 5 bytes.
            (
                "aac enhanced mp4a",
                FourCc::AAC,
                true,
                &hex("906d7034611210"),
                audio("aac", "LC", 44100, 2),
            ),
        ];
        for (name, codec, enhanced, body, want) in cases {
            assert_eq!(audio_info(*codec, *enhanced, body).as_ref(), Some(want), "{name}");
        }
    }

    #[test]
    fn other_audio_header_forms() {
        let streaminfo = &include_bytes!("testdata/flac_44k_stereo_16.bin")[5..];
        let with = |prefix: &[u8]| [&hex("90664c6143")[..], prefix, streaminfo].concat();
        let cases: &[(&str, FourCc, Vec<u8>, u32, u32)] = &[
            (
                "flac with fLaC marker and block header",
                FourCc::FLAC,
                with(b"fLaC\x80\x00\x00\x22"),
                44100,
                2,
            ),
            (
                "flac as dfLa payload",
                FourCc::FLAC,
                with(b"\x00\x00\x00\x00\x80\x00\x00\x22"),
                44100,
                2,
            ),
            ("mp3 enhanced", FourCc::MP3, hex("902e6d7033fffb9064"), 44100, 2),
            (
                "e-ac-3 reduced rate mono",
                FourCc::EAC3,
                [&hex("9165632d33")[..], &[0x0b, 0x77, 0x00, 0x7f, 0xc2, 0x80, 0, 0]].concat(),
                24000,
                1,
            ),
            (
                "ac-3 44.1k 5.1",
                FourCc::AC3,
                [&hex("9161632d33")[..], &[0x0b, 0x77, 0, 0, 0x40, 0x40, 0xe7, 0x80]].concat(),
                44100,
                6,
            ),
        ];
        for (name, codec, body, rate, channels) in cases {
            let i = audio_info(*codec, true, body).unwrap_or_else(|| panic!("{name}: no info"));
            assert_eq!((i.sample_rate, i.channels), (*rate, *channels), "{name}");
        }
    }

    #[test]
    fn corrupt_modern_headers_give_no_info() {
        let hevc = include_bytes!("testdata/hevc_1280x720_main.bin");
        let video_cases: &[(&str, FourCc, &[u8])] = &[
            // libaom's first SequenceStart from FFmpeg 9 is empty; the record follows later.
            ("av1 empty sequence start", FourCc::AV1, &hex("9061763031")),
            ("av1 record without marker", FourCc::AV1, &hex("906176303101050c00")),
            ("hevc cut in the record", FourCc::HEVC, &hevc[..40]),
            ("hevc header only", FourCc::HEVC, &hevc[..5]),
            ("vp9 cut record", FourCc::VP9, &hex("90767030390100000000")),
            ("vp9 version 7", FourCc::VP9, &hex("907670303907000000001f820202020000")),
            ("unparsed codec", FourCc::VP8, &hex("9076703038010000")),
        ];
        for (name, codec, body) in video_cases {
            assert_eq!(video_info(*codec, true, body), None, "{name}");
        }
        let audio_cases: &[(&str, FourCc, bool, &[u8], Option<AudioInfo>)] = &[
            ("opus empty", FourCc::OPUS, true, &hex("904f707573"), None),
            (
                "opus cut",
                FourCc::OPUS,
                true,
                &hex("904f7075734f70757348656164010238"),
                None,
            ),
            ("opus legacy", FourCc::OPUS, false, &hex("d04f707573"), None),
            (
                "flac cut names the codec",
                FourCc::FLAC,
                true,
                &hex("90664c6143040004"),
                Some(audio("flac", "", 0, 0)),
            ),
            (
                "ac3 without syncword names the codec",
                FourCc::AC3,
                true,
                &hex("9161632d330b78fe9514404300"),
                Some(audio("ac3", "", 0, 0)),
            ),
            (
                "mp3 garbage names the codec",
                FourCc::MP3,
                false,
                &hex("2f00112233"),
                Some(audio("mp3", "", 0, 0)),
            ),
            ("unparsed codec", FourCc(*b"spex"), false, &hex("b200"), None),
        ];
        for (name, codec, enhanced, body, want) in audio_cases {
            assert_eq!(audio_info(*codec, *enhanced, body), *want, "{name}");
        }
    }

    mod never_panic {
        use super::*;
        use proptest::prelude::*;

        const VIDEO: [FourCc; 4] = [FourCc::AVC, FourCc::HEVC, FourCc::AV1, FourCc::VP9];
        const AUDIO: [FourCc; 6] = [
            FourCc::AAC,
            FourCc::OPUS,
            FourCc::FLAC,
            FourCc::AC3,
            FourCc::EAC3,
            FourCc::MP3,
        ];

        proptest! {
            #[test]
            fn arbitrary_bodies(data in proptest::collection::vec(any::<u8>(), 0..200), enhanced in any::<bool>()) {
                for codec in VIDEO {
                    let _ = video_info(codec, enhanced, &data);
                }
                for codec in AUDIO {
                    let _ = audio_info(codec, enhanced, &data);
                }
                let _ = vp9_frame_size(&data);
                let _ = vp9_frame_size(&[&b"\x91vp09"[..], &data].concat());
            }
        }
    }
}
