//! AV1: the AV1CodecConfigurationRecord (av1C) of enhanced-RTMP `av01` sequence headers and
//! the sequence header OBU among its configOBUs, for what we report (profile, level, tier,
//! maximum frame size, bit depth, chroma subsampling).

use super::bits::{BitReader, EndOfData};

/// OBU type of a sequence header.
const OBU_SEQUENCE_HEADER: u32 = 1;
/// Fixed part of an av1C record before the configOBUs.
const RECORD_HEADER_LEN: usize = 4;

/// What an AV1 sequence header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Info {
    pub seq_profile: u8,
    /// seq_level_idx of operating point 0.
    pub seq_level_idx: u8,
    pub high_tier: bool,
    pub bit_depth: u32,
    pub monochrome: bool,
    pub subsampling_x: bool,
    pub subsampling_y: bool,
    pub still_picture: bool,
    /// max_frame_width/height of the sequence header; 0 when the record carried no
    /// sequence header OBU (the size is then only known from the first keyframe).
    pub width: u32,
    pub height: u32,
}

impl Av1Info {
    /// Profile name as ffprobe prints it.
    pub fn profile_name(&self) -> &'static str {
        match self.seq_profile {
            0 => "Main",
            1 => "High",
            2 => "Professional",
            _ => "Other",
        }
    }

    /// Level as "4.0": seq_level_idx packs (major - 2) in the high bits and the minor in the
    /// low two; 31 means no level constraint.
    pub fn level_name(&self) -> String {
        if self.seq_level_idx == 31 {
            return "max".to_string();
        }
        format!("{}.{}", 2 + (self.seq_level_idx >> 2), self.seq_level_idx & 3)
    }

    /// Chroma format in the H.26x numbering: 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub fn chroma_format(&self) -> u32 {
        match (self.monochrome, self.subsampling_x, self.subsampling_y) {
            (true, _, _) => 0,
            (false, true, true) => 1,
            (false, true, false) => 2,
            _ => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Av1Error {
    #[error("AV1 codec configuration record is truncated")]
    Truncated,
    #[error("AV1 codec configuration record starts with {0:#04x}, expected marker and version 1 (0x81)")]
    BadMarker(u8),
    #[error("AV1 OBU is corrupt: {0}")]
    BadObu(&'static str),
    #[error("AV1 sequence header is corrupt: {0}")]
    BadSequenceHeader(&'static str),
}

impl From<EndOfData> for Av1Error {
    fn from(_: EndOfData) -> Self {
        Av1Error::BadSequenceHeader("ends early")
    }
}

/// Parses an AV1CodecConfigurationRecord (the sequence header body after the 5-byte FLV
/// video header). The sequence header OBU, when present, is authoritative; otherwise the
/// record's own summary is returned with a zero size.
pub fn parse_decoder_config(record: &[u8]) -> Result<Av1Info, Av1Error> {
    let header = record.get(..RECORD_HEADER_LEN).ok_or(Av1Error::Truncated)?;
    if header[0] != 0x81 {
        return Err(Av1Error::BadMarker(header[0]));
    }
    let mut obus = &record[RECORD_HEADER_LEN..];
    while !obus.is_empty() {
        let (obu_type, payload, rest) = split_obu(obus)?;
        if obu_type == OBU_SEQUENCE_HEADER {
            return parse_sequence_header(payload);
        }
        obus = rest;
    }
    let seq_profile = header[1] >> 5;
    let high_bitdepth = header[2] & 0x40 != 0;
    let twelve_bit = header[2] & 0x20 != 0;
    Ok(Av1Info {
        seq_profile,
        seq_level_idx: header[1] & 0x1f,
        high_tier: header[2] & 0x80 != 0,
        bit_depth: bit_depth(seq_profile, high_bitdepth, twelve_bit),
        monochrome: header[2] & 0x10 != 0,
        subsampling_x: header[2] & 0x08 != 0,
        subsampling_y: header[2] & 0x04 != 0,
        still_picture: false,
        width: 0,
        height: 0,
    })
}

fn bit_depth(seq_profile: u8, high_bitdepth: bool, twelve_bit: bool) -> u32 {
    match (high_bitdepth, seq_profile == 2 && twelve_bit) {
        (false, _) => 8,
        (true, false) => 10,
        (true, true) => 12,
    }
}

/// Splits the first OBU off `data`: its type, its payload and the bytes after it. An OBU
/// without a size field runs to the end of the data.
pub fn split_obu(data: &[u8]) -> Result<(u32, &[u8], &[u8]), Av1Error> {
    let h = *data.first().ok_or(Av1Error::Truncated)?;
    if h & 0x80 != 0 {
        return Err(Av1Error::BadObu("forbidden bit set"));
    }
    let obu_type = u32::from((h >> 3) & 0x0f);
    let has_extension = h & 0x04 != 0;
    let has_size = h & 0x02 != 0;
    let mut pos = if has_extension { 2 } else { 1 };
    if data.len() < pos {
        return Err(Av1Error::Truncated);
    }
    let size = if has_size {
        let (size, used) = leb128(&data[pos..])?;
        pos += used;
        usize::try_from(size).map_err(|_| Av1Error::BadObu("size"))?
    } else {
        data.len() - pos
    };
    let end = pos.checked_add(size).ok_or(Av1Error::BadObu("size"))?;
    let payload = data.get(pos..end).ok_or(Av1Error::Truncated)?;
    Ok((obu_type, payload, &data[end..]))
}

/// Unsigned LEB128 as AV1 uses it: at most 8 bytes, value below 2^32.
fn leb128(data: &[u8]) -> Result<(u64, usize), Av1Error> {
    let mut value = 0u64;
    for i in 0..8 {
        let b = *data.get(i).ok_or(Av1Error::Truncated)?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if value > u64::from(u32::MAX) {
                return Err(Av1Error::BadObu("leb128 value too large"));
            }
            return Ok((value, i + 1));
        }
    }
    Err(Av1Error::BadObu("leb128 longer than 8 bytes"))
}

/// Parses a sequence header OBU payload (without the OBU header).
pub fn parse_sequence_header(payload: &[u8]) -> Result<Av1Info, Av1Error> {
    let mut r = BitReader::new(payload);
    let seq_profile = r.bits(3)? as u8;
    if seq_profile > 2 {
        return Err(Av1Error::BadSequenceHeader("seq_profile"));
    }
    let still_picture = r.flag()?;
    let reduced_still_picture_header = r.flag()?;
    let seq_level_idx;
    let mut high_tier = false;
    if reduced_still_picture_header {
        seq_level_idx = r.bits(5)? as u8;
    } else {
        let mut decoder_model_info_present = false;
        let mut buffer_delay_length = 0;
        if r.flag()? {
            // timing_info: num_units_in_display_tick, time_scale, equal_picture_interval
            r.skip(64)?;
            if r.flag()? {
                uvlc(&mut r)?; // num_ticks_per_picture_minus_1
            }
            decoder_model_info_present = r.flag()?;
            if decoder_model_info_present {
                buffer_delay_length = r.bits(5)? as usize + 1;
                r.skip(32)?; // num_units_in_decoding_tick
                r.skip(10)?; // buffer_removal_time_length_minus_1, frame_presentation_time_length_minus_1
            }
        }
        let initial_display_delay_present = r.flag()?;
        let operating_points = r.bits(5)? + 1;
        let mut first = None;
        for _ in 0..operating_points {
            r.skip(12)?; // operating_point_idc
            let level = r.bits(5)? as u8;
            let tier = level > 7 && r.flag()?;
            first.get_or_insert((level, tier));
            if decoder_model_info_present && r.flag()? {
                // operating_parameters_info: two buffer delays and low_delay_mode_flag
                r.skip(2 * buffer_delay_length + 1)?;
            }
            if initial_display_delay_present && r.flag()? {
                r.skip(4)?; // initial_display_delay_minus_1
            }
        }
        // operating_points is at least 1, so `first` is set; the fallback is never taken.
        (seq_level_idx, high_tier) = first.unwrap_or((0, false));
    }
    let width_bits = r.bits(4)? + 1;
    let height_bits = r.bits(4)? + 1;
    let width = u64::from(r.bits(width_bits)?) + 1;
    let height = u64::from(r.bits(height_bits)?) + 1;
    if !reduced_still_picture_header && r.flag()? {
        r.skip(7)?; // delta_frame_id_length_minus_2, additional_frame_id_length_minus_1
    }
    r.skip(3)?; // use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    if !reduced_still_picture_header {
        // interintra compound, masked compound, warped motion, dual filter
        r.skip(4)?;
        let enable_order_hint = r.flag()?;
        if enable_order_hint {
            r.skip(2)?; // enable_jnt_comp, enable_ref_frame_mvs
        }
        let seq_force_screen_content_tools = if r.flag()? { 2 } else { r.bits(1)? };
        if seq_force_screen_content_tools > 0 && !r.flag()? {
            r.skip(1)?; // seq_force_integer_mv
        }
        if enable_order_hint {
            r.skip(3)?; // order_hint_bits_minus_1
        }
    }
    r.skip(3)?; // enable_superres, enable_cdef, enable_restoration

    // color_config
    let high_bitdepth = r.flag()?;
    let twelve_bit = seq_profile == 2 && high_bitdepth && r.flag()?;
    let monochrome = seq_profile != 1 && r.flag()?;
    let (mut primaries, mut transfer, mut matrix) = (2, 2, 2); // "unspecified"
    if r.flag()? {
        primaries = r.bits(8)?;
        transfer = r.bits(8)?;
        matrix = r.bits(8)?;
    }
    let (subsampling_x, subsampling_y) = if monochrome {
        (true, true)
    } else if primaries == 1 && transfer == 13 && matrix == 0 {
        // sRGB: always 4:4:4, colour range implied.
        (false, false)
    } else {
        r.skip(1)?; // color_range
        match seq_profile {
            0 => (true, true),
            1 => (false, false),
            _ if twelve_bit => {
                let x = r.flag()?;
                (x, x && r.flag()?)
            }
            _ => (true, false),
        }
    };
    Ok(Av1Info {
        seq_profile,
        seq_level_idx,
        high_tier,
        bit_depth: bit_depth(seq_profile, high_bitdepth, twelve_bit),
        monochrome,
        subsampling_x,
        subsampling_y,
        still_picture,
        // Up to 16 bits each, so they fit.
        width: width as u32,
        height: height as u32,
    })
}

/// Variable-length unsigned code of the AV1 spec (leading zeros, then that many bits).
fn uvlc(r: &mut BitReader<'_>) -> Result<u32, EndOfData> {
    let mut zeros = 0;
    while !r.flag()? {
        zeros += 1;
        if zeros >= 32 {
            return Ok(u32::MAX);
        }
    }
    Ok(((1u64 << zeros) - 1 + u64::from(r.bits(zeros)?)) as u32)
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // case tables are tuples of named fields
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// av1C records from FFmpeg 9 with libaom-av1 and libsvtav1 (see testdata/README.md):
    /// name, enhanced-RTMP SequenceStart body, width, height, profile, level, chroma format,
    /// bit depth.
    const VECTORS: &[(&str, &[u8], u32, u32, &str, &str, u32, u32)] = &[
        (
            "aom 720p 4:2:0",
            include_bytes!("testdata/av1_1280x720_main.bin"),
            1280,
            720,
            "Main",
            "3.1",
            1,
            8,
        ),
        (
            "svt 1080p 10-bit",
            include_bytes!("testdata/av1_1920x1080_main_10.bin"),
            1920,
            1080,
            "Main",
            "4.0",
            1,
            10,
        ),
        (
            "aom 360p 4:4:4",
            include_bytes!("testdata/av1_640x360_high_444.bin"),
            640,
            360,
            "High",
            "2.1",
            3,
            8,
        ),
        (
            "aom 426x240 4:2:2",
            include_bytes!("testdata/av1_426x240_pro_422.bin"),
            426,
            240,
            "Professional",
            "2.0",
            2,
            8,
        ),
        (
            "aom 240p 4:2:0 12-bit",
            include_bytes!("testdata/av1_320x240_pro_420_12.bin"),
            320,
            240,
            "Professional",
            "2.0",
            1,
            12,
        ),
        (
            "aom 240p monochrome",
            include_bytes!("testdata/av1_320x240_main_gray.bin"),
            320,
            240,
            "Main",
            "2.0",
            0,
            8,
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
                (i.chroma_format(), i.bit_depth, i.high_tier, i.still_picture),
                (*chroma, *depth, false, false),
                "{name}"
            );
            // The record's own summary agrees with the sequence header OBU.
            let summary = parse_decoder_config(&body[5..9]).unwrap();
            assert_eq!(
                (summary.seq_profile, summary.seq_level_idx),
                (i.seq_profile, i.seq_level_idx),
                "{name}"
            );
            assert_eq!(
                (summary.chroma_format(), summary.bit_depth, summary.width),
                (*chroma, *depth, 0),
                "{name}"
            );
        }
    }

    #[test]
    fn broken_records_are_errors() {
        let good = &VECTORS[0].1[5..];
        let cases: &[(&str, Vec<u8>, Av1Error)] = &[
            ("empty", vec![], Av1Error::Truncated),
            ("three bytes", good[..3].to_vec(), Av1Error::Truncated),
            (
                "wrong marker",
                [&[0x01u8][..], &good[1..]].concat(),
                Av1Error::BadMarker(0x01),
            ),
            (
                "OBU size beyond the data",
                good[..good.len() - 1].to_vec(),
                Av1Error::Truncated,
            ),
            (
                "forbidden bit",
                [&good[..4], &[0x8a, 0x00][..]].concat(),
                Av1Error::BadObu("forbidden bit set"),
            ),
            (
                "endless leb128",
                [&good[..4], &[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..]].concat(),
                Av1Error::BadObu("leb128 longer than 8 bytes"),
            ),
            (
                "huge leb128",
                [&good[..4], &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x7f][..]].concat(),
                Av1Error::BadObu("leb128 value too large"),
            ),
            (
                "sequence header cut short",
                [&good[..4], &[0x0a, 0x02], &good[6..8]].concat(),
                Av1Error::BadSequenceHeader("ends early"),
            ),
            (
                "seq_profile 7",
                [&good[..4], &[0x0a, 0x01, 0xe0]].concat(),
                Av1Error::BadSequenceHeader("seq_profile"),
            ),
        ];
        for (name, record, err) in cases {
            assert_eq!(parse_decoder_config(record).as_ref(), Err(err), "{name}");
        }
    }

    #[test]
    fn obus_before_the_sequence_header_are_skipped() {
        let good = &VECTORS[0].1[5..];
        // A temporal delimiter (type 2) with a zero size field ahead of the sequence header.
        let record = [&good[..4], &[0x12, 0x00][..], &good[4..]].concat();
        assert_eq!(
            parse_decoder_config(&record).map(|i| (i.width, i.height)),
            Ok((1280, 720))
        );
    }

    #[test]
    fn reduced_still_picture_header() {
        // seq_profile 0, still_picture, reduced header, level 5 (3.1), 16-bit sizes of
        // 1279 x 719, no frame ids, tools, then color_config: 8-bit, not mono, no description,
        // colour range.
        let mut bits = String::from("000" /* profile */);
        bits += "1"; // still_picture
        bits += "1"; // reduced_still_picture_header
        bits += "00101"; // seq_level_idx
        bits += "1111"; // frame_width_bits_minus_1
        bits += "1111"; // frame_height_bits_minus_1
        bits += &format!("{:016b}", 1279);
        bits += &format!("{:016b}", 719);
        bits += "000"; // superblock size, filter intra, intra edge
        bits += "000"; // superres, cdef, restoration
        bits += "0"; // high_bitdepth
        bits += "0"; // mono_chrome
        bits += "0"; // color_description_present_flag
        bits += "0"; // color_range
        bits += "0"; // separate_uv_delta_q
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        let payload: Vec<u8> = (0..bits.len())
            .step_by(8)
            .map(|i| u8::from_str_radix(&bits[i..i + 8], 2).unwrap())
            .collect();
        let i = parse_sequence_header(&payload).unwrap();
        assert_eq!(
            (
                i.width,
                i.height,
                i.still_picture,
                i.level_name().as_str(),
                i.chroma_format()
            ),
            (1280, 720, true, "3.1", 1)
        );
    }

    #[test]
    fn level_names() {
        let cases: &[(&str, u8, &str)] = &[
            ("2.0", 0, "2.0"),
            ("3.1", 5, "3.1"),
            ("5.3", 15, "5.3"),
            ("7.3", 23, "7.3"),
            ("no constraint", 31, "max"),
        ];
        for (name, idx, level) in cases {
            let i = Av1Info {
                seq_profile: 0,
                seq_level_idx: *idx,
                high_tier: false,
                bit_depth: 8,
                monochrome: false,
                subsampling_x: true,
                subsampling_y: true,
                still_picture: false,
                width: 0,
                height: 0,
            };
            assert_eq!(i.level_name(), *level, "{name}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_records_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_decoder_config(&data);
            let _ = parse_sequence_header(&data);
            let mut with_marker = vec![0x81, 0, 0, 0];
            with_marker.extend_from_slice(&data);
            let _ = parse_decoder_config(&with_marker);
        }

        #[test]
        fn mutated_real_records_never_panic(case in 0usize..6, pos in 4usize..24, byte in any::<u8>(), cut in 0usize..24) {
            let mut record = VECTORS[case].1[5..].to_vec();
            let pos = pos.min(record.len() - 1);
            record[pos] = byte;
            record.truncate(cut);
            let _ = parse_decoder_config(&record);
        }
    }
}
