//! H.265/HEVC: the HEVCDecoderConfigurationRecord (hvcC) carried by legacy FLV codec id 12
//! and enhanced-RTMP `hvc1` sequence headers, and the sequence parameter set fields we report
//! (size after the conformance window, profile, tier, level, chroma format, bit depth).

use super::bits::{unescape_rbsp, BitReader, EndOfData};

/// NAL unit type of a sequence parameter set.
const NAL_SPS: u8 = 33;
/// Fixed part of an hvcC record, up to and including numOfArrays.
const RECORD_HEADER_LEN: usize = 23;

/// What an HEVC sequence header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcInfo {
    pub profile_idc: u8,
    /// general_profile_compatibility_flags, bit 31 is flag 0.
    pub profile_compatibility: u32,
    pub high_tier: bool,
    pub level_idc: u8,
    pub chroma_format_idc: u32,
    pub bit_depth: u32,
    /// Width and height after the conformance window is cropped away.
    pub width: u32,
    pub height: u32,
}

impl HevcInfo {
    /// Profile name as ffprobe prints it.
    pub fn profile_name(&self) -> &'static str {
        // Encoders may leave general_profile_idc 0 and signal only compatibility flags;
        // the lowest compatible profile is then the one a decoder needs.
        let idc = if self.profile_idc == 0 {
            (1..32u8)
                .find(|j| self.profile_compatibility & (1 << (31 - j)) != 0)
                .unwrap_or(0)
        } else {
            self.profile_idc
        };
        match idc {
            1 => "Main",
            2 => "Main 10",
            3 => "Main Still Picture",
            4 => "Rext",
            5 => "High Throughput 4:4:4",
            6 => "Multiview Main",
            7 => "Scalable Main",
            8 => "3D Main",
            9 => "Screen Content Coding Extensions",
            10 => "Scalable Rext",
            11 => "High Throughput SCC",
            _ => "Other",
        }
    }

    /// Level as "4.1": general_level_idc is 30 times the level number.
    pub fn level_name(&self) -> String {
        format!("{}.{}", self.level_idc / 30, (self.level_idc % 30) / 3)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HevcError {
    #[error("HEVC decoder configuration record is truncated")]
    Truncated,
    #[error("HEVC decoder configuration record has version {0}, expected 1")]
    BadVersion(u8),
    #[error("HEVC decoder configuration record holds no SPS")]
    NoSps,
    #[error("HEVC SPS is corrupt: {0}")]
    BadSps(&'static str),
}

impl From<EndOfData> for HevcError {
    fn from(_: EndOfData) -> Self {
        HevcError::BadSps("ends early")
    }
}

/// Parses an HEVCDecoderConfigurationRecord (the sequence header body after the 5-byte FLV
/// video header) and the first base-layer SPS in its NAL unit arrays.
pub fn parse_decoder_config(record: &[u8]) -> Result<HevcInfo, HevcError> {
    let header = record.get(..RECORD_HEADER_LEN).ok_or(HevcError::Truncated)?;
    if header[0] != 1 {
        return Err(HevcError::BadVersion(header[0]));
    }
    let mut pos = RECORD_HEADER_LEN;
    let mut sps_seen = None;
    for _ in 0..header[22] {
        let nal_type = *record.get(pos).ok_or(HevcError::Truncated)? & 0x3f;
        let count = be16(record, pos + 1)?;
        pos += 3;
        for _ in 0..count {
            let len = usize::from(be16(record, pos)?);
            let nal = record.get(pos + 2..pos + 2 + len).ok_or(HevcError::Truncated)?;
            pos += 2 + len;
            // Multi-layer streams carry SPSs of other layers too; the base layer (nuh_layer_id
            // 0) describes what a plain decoder shows.
            if nal_type == NAL_SPS && nal.len() >= 2 && nal_layer_id(nal) == 0 {
                return merge_record(header, parse_sps(nal)?);
            }
            if nal_type == NAL_SPS {
                sps_seen.get_or_insert(nal);
            }
        }
    }
    match sps_seen {
        Some(nal) => merge_record(header, parse_sps(nal)?),
        None => Err(HevcError::NoSps),
    }
}

/// The record repeats the SPS's profile, tier and level; when both are present the record's
/// values are the ones the sender declared for the whole stream, so they win.
fn merge_record(header: &[u8], mut info: HevcInfo) -> Result<HevcInfo, HevcError> {
    info.high_tier = header[1] & 0x20 != 0;
    info.profile_idc = header[1] & 0x1f;
    info.profile_compatibility = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
    info.level_idc = header[12];
    Ok(info)
}

fn be16(data: &[u8], pos: usize) -> Result<u16, HevcError> {
    match data.get(pos..pos + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(HevcError::Truncated),
    }
}

fn nal_layer_id(nal: &[u8]) -> u8 {
    ((nal[0] & 1) << 5) | (nal[1] >> 3)
}

/// Parses an SPS NAL unit (with its two-byte NAL header).
pub fn parse_sps(nal: &[u8]) -> Result<HevcInfo, HevcError> {
    if nal.len() < 3 || (nal[0] >> 1) & 0x3f != NAL_SPS {
        return Err(HevcError::BadSps("not an SPS NAL unit"));
    }
    let rbsp = unescape_rbsp(&nal[2..]);
    let mut r = BitReader::new(&rbsp);
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)?;
    r.skip(1)?; // sps_temporal_id_nesting_flag

    // profile_tier_level(1, sps_max_sub_layers_minus1): general part is 96 bits.
    r.skip(2)?; // general_profile_space
    let high_tier = r.flag()?;
    let profile_idc = r.bits(5)? as u8;
    let profile_compatibility = r.bits(32)?;
    r.skip(48)?; // source flags and general constraint flags
    let level_idc = r.bits(8)? as u8;
    let mut sub_profile_present = [false; 8];
    let mut sub_level_present = [false; 8];
    for i in 0..max_sub_layers_minus1 as usize {
        sub_profile_present[i] = r.flag()?;
        sub_level_present[i] = r.flag()?;
    }
    if max_sub_layers_minus1 > 0 {
        // reserved_zero_2bits pad the presence flags to 16 bits.
        r.skip(2 * (8 - max_sub_layers_minus1 as usize))?;
    }
    for i in 0..max_sub_layers_minus1 as usize {
        if sub_profile_present[i] {
            r.skip(88)?; // profile space, tier, idc, compatibility and constraint flags
        }
        if sub_level_present[i] {
            r.skip(8)?; // sub_layer_level_idc
        }
    }

    if r.ue()? > 15 {
        return Err(HevcError::BadSps("sps_seq_parameter_set_id"));
    }
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return Err(HevcError::BadSps("chroma_format_idc"));
    }
    let separate_colour_plane = chroma_format_idc == 3 && r.flag()?;
    let coded_width = r.ue()?;
    let coded_height = r.ue()?;
    let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
    if r.flag()? {
        left = r.ue()?;
        right = r.ue()?;
        top = r.ue()?;
        bottom = r.ue()?;
    }
    let bit_depth_minus8 = r.ue()?;
    if bit_depth_minus8 > 8 {
        return Err(HevcError::BadSps("bit_depth_luma_minus8"));
    }
    // Conformance window offsets count chroma samples: SubWidthC x SubHeightC luma samples,
    // or single luma samples when the colour planes are coded separately (ChromaArrayType 0).
    let (sub_w, sub_h) = match (chroma_format_idc, separate_colour_plane) {
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1),
    };
    let width = crop(coded_width, sub_w, left, right).ok_or(HevcError::BadSps("cropping wider than the picture"))?;
    let height = crop(coded_height, sub_h, top, bottom).ok_or(HevcError::BadSps("cropping taller than the picture"))?;
    if width == 0 || height == 0 {
        return Err(HevcError::BadSps("empty picture"));
    }
    Ok(HevcInfo {
        profile_idc,
        profile_compatibility,
        high_tier,
        level_idc,
        chroma_format_idc,
        bit_depth: bit_depth_minus8 + 8,
        width,
        height,
    })
}

fn crop(coded: u32, unit: u32, a: u32, b: u32) -> Option<u32> {
    let offset = u64::from(unit) * (u64::from(a) + u64::from(b));
    u32::try_from(u64::from(coded).checked_sub(offset)?).ok()
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // case tables are tuples of named fields
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// hvcC records from FFmpeg 9 / libx265 (see testdata/README.md): name, enhanced-RTMP
    /// SequenceStart body, width, height, profile, level, chroma format, bit depth.
    const VECTORS: &[(&str, &[u8], u32, u32, &str, &str, u32, u32)] = &[
        (
            "720p main",
            include_bytes!("testdata/hevc_1280x720_main.bin"),
            1280,
            720,
            "Main",
            "3.1",
            1,
            8,
        ),
        (
            "854x480 main cropped from 856",
            include_bytes!("testdata/hevc_854x480_main_cropped.bin"),
            854,
            480,
            "Main",
            "3.0",
            1,
            8,
        ),
        (
            "1080p main 10",
            include_bytes!("testdata/hevc_1920x1080_main10.bin"),
            1920,
            1080,
            "Main 10",
            "4.0",
            1,
            10,
        ),
        (
            "854x480 4:4:4 cropped by single samples",
            include_bytes!("testdata/hevc_854x480_rext_444.bin"),
            854,
            480,
            "Rext",
            "3.0",
            3,
            8,
        ),
        (
            "360p 4:2:2 10-bit",
            include_bytes!("testdata/hevc_640x360_rext_422_10.bin"),
            640,
            360,
            "Rext",
            "2.1",
            2,
            10,
        ),
    ];

    #[test]
    fn sequence_headers_from_ffmpeg() {
        for (name, body, w, h, profile, level, chroma, depth) in VECTORS {
            let i = parse_decoder_config(&body[5..]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((i.width, i.height), (*w, *h), "{name}");
            assert_eq!(
                (i.profile_name(), i.level_name().as_str()),
                (*profile, *level),
                "{name}"
            );
            assert_eq!(
                (i.chroma_format_idc, i.bit_depth, i.high_tier),
                (*chroma, *depth, false),
                "{name}"
            );
        }
    }

    /// Builds a record around one SPS, for cases no encoder at hand produces.
    fn record_with(nals: &[(u8, &[u8])]) -> Vec<u8> {
        let mut r = vec![
            1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93, 0xf0, 0, 0xfc, 0xfd, 0xf8, 0xf8, 0, 0, 0x0f,
        ];
        r.push(nals.len() as u8);
        for (ty, nal) in nals {
            r.extend_from_slice(&[*ty, 0, 1, 0, nal.len() as u8]);
            r.extend_from_slice(nal);
        }
        r
    }

    /// The SPS of the 720p vector, to build variations from.
    fn sps_720p() -> Vec<u8> {
        let body = VECTORS[0].1;
        let rec = &body[5..];
        let mut pos = RECORD_HEADER_LEN;
        loop {
            let ty = rec[pos] & 0x3f;
            let len = usize::from(u16::from_be_bytes([rec[pos + 3], rec[pos + 4]]));
            if ty == NAL_SPS {
                return rec[pos + 5..pos + 5 + len].to_vec();
            }
            pos += 5 + len;
        }
    }

    #[test]
    fn broken_records_are_errors() {
        let sps = sps_720p();
        let full = record_with(&[(0x21, &sps)]);
        let cases: &[(&str, Vec<u8>, HevcError)] = &[
            ("empty", vec![], HevcError::Truncated),
            ("header only partly there", full[..10].to_vec(), HevcError::Truncated),
            ("version 0", [&[0u8][..], &full[1..]].concat(), HevcError::BadVersion(0)),
            ("no arrays", record_with(&[]), HevcError::NoSps),
            (
                "only a VPS",
                record_with(&[(0x20, &[0x40, 0x01, 0x0c])]),
                HevcError::NoSps,
            ),
            (
                "SPS cut inside the array",
                full[..full.len() - 4].to_vec(),
                HevcError::Truncated,
            ),
            (
                "SPS cut inside its NAL",
                record_with(&[(0x21, &sps[..8])]),
                HevcError::BadSps("ends early"),
            ),
            (
                "array type says SPS but NAL is a PPS",
                record_with(&[(0x21, &[0x44, 0x01, 0xc1])]),
                HevcError::BadSps("not an SPS NAL unit"),
            ),
        ];
        for (name, record, err) in cases {
            assert_eq!(parse_decoder_config(record).as_ref(), Err(err), "{name}");
        }
        assert_eq!(
            parse_decoder_config(&full).map(|i| (i.width, i.height)),
            Ok((1280, 720))
        );
    }

    #[test]
    fn profile_and_level_names() {
        let base = HevcInfo {
            profile_idc: 1,
            profile_compatibility: 0,
            high_tier: false,
            level_idc: 123,
            chroma_format_idc: 1,
            bit_depth: 8,
            width: 1,
            height: 1,
        };
        let cases: &[(&str, u8, u32, u8, &str, &str)] = &[
            ("main 4.1", 1, 0, 123, "Main", "4.1"),
            ("main still picture 6.2", 3, 0, 186, "Main Still Picture", "6.2"),
            ("rext 5", 4, 0, 150, "Rext", "5.0"),
            (
                "idc 0 falls back to compatibility flag 2",
                0,
                1 << 29,
                60,
                "Main 10",
                "2.0",
            ),
            ("idc 0 without flags", 0, 0, 30, "Other", "1.0"),
        ];
        for (name, idc, compat, level, profile, level_name) in cases {
            let i = HevcInfo {
                profile_idc: *idc,
                profile_compatibility: *compat,
                level_idc: *level,
                ..base.clone()
            };
            assert_eq!(
                (i.profile_name(), i.level_name().as_str()),
                (*profile, *level_name),
                "{name}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_records_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_decoder_config(&data);
            let _ = parse_sps(&data);
        }

        #[test]
        fn mutated_real_records_never_panic(pos in 5usize..2437, byte in any::<u8>(), cut in 5usize..2437) {
            let mut body = VECTORS[2].1.to_vec();
            let pos = pos.min(body.len() - 1);
            body[pos] = byte;
            body.truncate(cut.max(5));
            let _ = parse_decoder_config(&body[5..]);
        }
    }
}
