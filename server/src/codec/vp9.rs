//! VP9: the VP codec configuration record (vpcC) of enhanced-RTMP `vp09` sequence headers,
//! and the picture size from a keyframe's uncompressed header, since vpcC carries none.

use super::bits::{BitReader, EndOfData};

/// vpcC version 1: 4-byte FullBox header, then 8 bytes of fields.
const RECORD_V1_LEN: usize = 12;
/// frame_sync_code that follows the frame type bits of every keyframe.
const SYNC_CODE: u32 = 0x49_83_42;
/// color_space value meaning RGB, which is always 4:4:4.
const CS_RGB: u32 = 7;

/// What a vpcC record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vp9Config {
    pub profile: u8,
    /// Level times ten (31 is level 3.1); 0 when the sender did not say.
    pub level: u8,
    pub bit_depth: u32,
    /// 0: 4:2:0 vertical, 1: 4:2:0 colocated with luma, 2: 4:2:2, 3: 4:4:4.
    pub chroma_subsampling: u8,
    pub full_range: bool,
    pub colour_primaries: u8,
    pub transfer_characteristics: u8,
    pub matrix_coefficients: u8,
}

impl Vp9Config {
    /// Profile name as ffprobe prints it.
    pub fn profile_name(&self) -> &'static str {
        match self.profile {
            0 => "Profile 0",
            1 => "Profile 1",
            2 => "Profile 2",
            3 => "Profile 3",
            _ => "Other",
        }
    }

    /// Level as "3.1"; "unspecified" for 0.
    pub fn level_name(&self) -> String {
        if self.level == 0 {
            return "unspecified".to_string();
        }
        format!("{}.{}", self.level / 10, self.level % 10)
    }

    /// Chroma format in the H.26x numbering: 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub fn chroma_format(&self) -> u32 {
        match self.chroma_subsampling {
            0 | 1 => 1,
            2 => 2,
            _ => 3,
        }
    }
}

/// What a keyframe's uncompressed header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vp9Keyframe {
    pub profile: u8,
    pub bit_depth: u32,
    pub color_space: u32,
    pub subsampling_x: bool,
    pub subsampling_y: bool,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Vp9Error {
    #[error("VP9 configuration record is truncated")]
    Truncated,
    #[error("VP9 configuration record has version {0}, expected 0 or 1")]
    BadVersion(u8),
    #[error("VP9 configuration record has an invalid {0}")]
    BadValue(&'static str),
    #[error("VP9 frame is not a keyframe")]
    NotKeyframe,
    #[error("VP9 frame header is corrupt: {0}")]
    BadFrame(&'static str),
}

impl From<EndOfData> for Vp9Error {
    fn from(_: EndOfData) -> Self {
        Vp9Error::BadFrame("ends early")
    }
}

/// Parses a VPCodecConfigurationRecord (the sequence header body after the 5-byte FLV video
/// header). Version 1 is what FFmpeg writes; version 0, from the first draft of the binding,
/// packs colour space and transfer function differently and is accepted as well.
pub fn parse_decoder_config(record: &[u8]) -> Result<Vp9Config, Vp9Error> {
    let version = *record.first().ok_or(Vp9Error::Truncated)?;
    let f = record.get(4..).ok_or(Vp9Error::Truncated)?;
    let config = match version {
        1 => {
            let f = record.get(4..RECORD_V1_LEN).ok_or(Vp9Error::Truncated)?;
            Vp9Config {
                profile: f[0],
                level: f[1],
                bit_depth: u32::from(f[2] >> 4),
                chroma_subsampling: (f[2] >> 1) & 7,
                full_range: f[2] & 1 != 0,
                colour_primaries: f[3],
                transfer_characteristics: f[4],
                matrix_coefficients: f[5],
            }
        }
        0 => {
            // profile, level, bitDepth(4) colorSpace(4), chromaSubsampling(4)
            // transferFunction(3) fullRange(1), codecInitializationDataSize(16); its colour
            // codes are not the ISO/IEC 23091-2 ones, so they are reported as unspecified.
            let f = f.get(..6).ok_or(Vp9Error::Truncated)?;
            Vp9Config {
                profile: f[0],
                level: f[1],
                bit_depth: u32::from(f[2] >> 4),
                chroma_subsampling: f[3] >> 4,
                full_range: f[3] & 1 != 0,
                colour_primaries: 2,
                transfer_characteristics: 2,
                matrix_coefficients: 2,
            }
        }
        v => return Err(Vp9Error::BadVersion(v)),
    };
    if config.profile > 3 {
        return Err(Vp9Error::BadValue("profile"));
    }
    if !matches!(config.bit_depth, 8 | 10 | 12) {
        return Err(Vp9Error::BadValue("bit depth"));
    }
    if config.chroma_subsampling > 3 {
        return Err(Vp9Error::BadValue("chroma subsampling"));
    }
    Ok(config)
}

/// Width and height of a VP9 keyframe; `None` for inter frames, frames shown from the
/// reference buffer, or anything that is not a VP9 frame.
pub fn parse_keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    parse_keyframe(frame).ok().map(|k| (k.width, k.height))
}

/// Parses the uncompressed header of a keyframe up to its frame size. A superframe starts
/// with its first frame, so it parses the same.
pub fn parse_keyframe(frame: &[u8]) -> Result<Vp9Keyframe, Vp9Error> {
    let mut r = BitReader::new(frame);
    if r.bits(2)? != 2 {
        return Err(Vp9Error::BadFrame("frame marker"));
    }
    let low = r.bits(1)?;
    let high = r.bits(1)?;
    let profile = (high << 1 | low) as u8;
    if profile == 3 && r.flag()? {
        return Err(Vp9Error::BadFrame("reserved bit after profile 3"));
    }
    if r.flag()? {
        return Err(Vp9Error::NotKeyframe); // show_existing_frame
    }
    if r.flag()? {
        return Err(Vp9Error::NotKeyframe); // frame_type 1 is a non-key frame
    }
    r.skip(2)?; // show_frame, error_resilient_mode
    if r.bits(24)? != SYNC_CODE {
        return Err(Vp9Error::BadFrame("sync code"));
    }
    // color_config
    let bit_depth = if profile >= 2 {
        if r.flag()? {
            12
        } else {
            10
        }
    } else {
        8
    };
    let color_space = r.bits(3)?;
    let (subsampling_x, subsampling_y) = if color_space != CS_RGB {
        r.skip(1)?; // color_range
        if profile == 1 || profile == 3 {
            let xy = (r.flag()?, r.flag()?);
            r.skip(1)?; // reserved_zero
            xy
        } else {
            (true, true)
        }
    } else {
        if profile == 1 || profile == 3 {
            r.skip(1)?; // reserved_zero
        } else {
            // RGB needs 4:4:4, which profiles 0 and 2 cannot code.
            return Err(Vp9Error::BadFrame("RGB in profile 0 or 2"));
        }
        (false, false)
    };
    let width = r.bits(16)? + 1;
    let height = r.bits(16)? + 1;
    Ok(Vp9Keyframe {
        profile,
        bit_depth,
        color_space,
        subsampling_x,
        subsampling_y,
        width,
        height,
    })
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // case tables are tuples of named fields
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// vpcC records and keyframe starts from FFmpeg 9 / libvpx-vp9 (see testdata/README.md):
    /// name, SequenceStart body, first keyframe body (first 64 bytes), width, height, profile,
    /// level, bit depth, vpcC chroma subsampling, full range, matrix coefficients.
    const VECTORS: &[(&str, &[u8], &[u8], u32, u32, &str, &str, u32, u8, bool, u8)] = &[
        (
            "720p profile 0",
            include_bytes!("testdata/vp9_1280x720_p0.bin"),
            include_bytes!("testdata/vp9_1280x720_p0.frame.bin"),
            1280,
            720,
            "Profile 0",
            "3.1",
            8,
            1,
            false,
            2,
        ),
        (
            "854x480 profile 2 10-bit",
            include_bytes!("testdata/vp9_854x480_p2_10.bin"),
            include_bytes!("testdata/vp9_854x480_p2_10.frame.bin"),
            854,
            480,
            "Profile 2",
            "3.0",
            10,
            1,
            false,
            2,
        ),
        (
            "360p profile 1 4:4:4",
            include_bytes!("testdata/vp9_640x360_p1_444.bin"),
            include_bytes!("testdata/vp9_640x360_p1_444.frame.bin"),
            640,
            360,
            "Profile 1",
            "2.1",
            8,
            3,
            false,
            2,
        ),
        (
            "240p profile 1 RGB",
            include_bytes!("testdata/vp9_320x240_p1_gbrp.bin"),
            include_bytes!("testdata/vp9_320x240_p1_gbrp.frame.bin"),
            320,
            240,
            "Profile 1",
            "2.0",
            8,
            3,
            true,
            0,
        ),
        (
            "240p profile 3 4:4:4 12-bit",
            include_bytes!("testdata/vp9_320x240_p3_444_12.bin"),
            include_bytes!("testdata/vp9_320x240_p3_444_12.frame.bin"),
            320,
            240,
            "Profile 3",
            "2.0",
            12,
            3,
            false,
            2,
        ),
    ];

    #[test]
    fn records_and_keyframes_from_ffmpeg() {
        for (name, header, frame, w, h, profile, level, depth, sub, full, matrix) in VECTORS {
            let c = parse_decoder_config(&header[5..]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                (c.profile_name(), c.level_name().as_str(), c.bit_depth),
                (*profile, *level, *depth),
                "{name}"
            );
            assert_eq!(
                (c.chroma_subsampling, c.full_range, c.matrix_coefficients),
                (*sub, *full, *matrix),
                "{name}"
            );
            let k = parse_keyframe(&frame[5..]).unwrap_or_else(|e| panic!("{name} keyframe: {e}"));
            assert_eq!((k.width, k.height), (*w, *h), "{name}");
            assert_eq!(
                (u32::from(k.profile), k.bit_depth),
                (u32::from(c.profile), c.bit_depth),
                "{name}"
            );
            assert_eq!(k.subsampling_x && k.subsampling_y, c.chroma_format() == 1, "{name}");
            assert_eq!(parse_keyframe_size(&frame[5..]), Some((*w, *h)), "{name}");
        }
    }

    #[test]
    fn broken_records_are_errors() {
        let good = &VECTORS[0].1[5..];
        let cases: &[(&str, Vec<u8>, Vp9Error)] = &[
            ("empty", vec![], Vp9Error::Truncated),
            ("cut after the flags", good[..6].to_vec(), Vp9Error::Truncated),
            ("version 2", [&[2u8][..], &good[1..]].concat(), Vp9Error::BadVersion(2)),
            (
                "profile 4",
                [&good[..4], &[4], &good[5..]].concat(),
                Vp9Error::BadValue("profile"),
            ),
            (
                "bit depth 9",
                [&good[..6], &[0x92], &good[7..]].concat(),
                Vp9Error::BadValue("bit depth"),
            ),
            (
                "chroma subsampling 5",
                [&good[..6], &[0x8a], &good[7..]].concat(),
                Vp9Error::BadValue("chroma subsampling"),
            ),
        ];
        for (name, record, err) in cases {
            assert_eq!(parse_decoder_config(record).as_ref(), Err(err), "{name}");
        }
        // Version 0: profile 2, level 4.1, 10-bit with colour space 1, 4:2:0 colocated.
        let v0 = parse_decoder_config(&[0, 0, 0, 0, 2, 41, 0xa1, 0x10, 0, 0]).unwrap();
        assert_eq!(
            (v0.profile, v0.level_name().as_str(), v0.bit_depth, v0.chroma_format()),
            (2, "4.1", 10, 1)
        );
    }

    #[test]
    fn frames_without_a_size_are_rejected() {
        let key = &VECTORS[0].2[5..];
        let cases: &[(&str, Vec<u8>, Vp9Error)] = &[
            ("empty", vec![], Vp9Error::BadFrame("ends early")),
            (
                "inter frame from the same stream",
                vec![0x86, 0x00, 0x40, 0x92],
                Vp9Error::NotKeyframe,
            ),
            ("show existing frame", vec![0x88], Vp9Error::NotKeyframe),
            (
                "wrong frame marker",
                vec![0x02, 0x49, 0x83, 0x42],
                Vp9Error::BadFrame("frame marker"),
            ),
            (
                "wrong sync code",
                vec![0x82, 0x49, 0x83, 0x43, 0, 0, 0, 0, 0],
                Vp9Error::BadFrame("sync code"),
            ),
            (
                "cut inside the size",
                key[..6].to_vec(),
                Vp9Error::BadFrame("ends early"),
            ),
            (
                "RGB in profile 0",
                vec![0x82, 0x49, 0x83, 0x42, 0xe0, 0, 0, 0, 0],
                Vp9Error::BadFrame("RGB in profile 0 or 2"),
            ),
        ];
        for (name, frame, err) in cases {
            assert_eq!(parse_keyframe(frame).as_ref(), Err(err), "{name}");
            assert_eq!(parse_keyframe_size(frame), None, "{name}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_decoder_config(&data);
            let _ = parse_keyframe(&data);
        }

        #[test]
        fn mutated_keyframes_never_panic(case in 0usize..5, pos in 0usize..59, byte in any::<u8>(), cut in 0usize..59) {
            let mut frame = VECTORS[case].2[5..].to_vec();
            frame[pos] = byte;
            frame.truncate(cut);
            let _ = parse_keyframe(&frame);
        }
    }
}
