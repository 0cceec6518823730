//! H.264: the AVCDecoderConfigurationRecord and the sequence parameter set fields we
//! report (size, profile, level, chroma format, bit depth).

use super::bits::{unescape_rbsp, BitReader, EndOfData};

/// What the first SPS of an AVC sequence header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcInfo {
    pub profile_idc: u8,
    pub level_idc: u8,
    pub width: u32,
    pub height: u32,
    pub chroma_format_idc: u32,
    pub bit_depth: u32,
}

impl AvcInfo {
    /// Profile name as ffprobe prints it.
    pub fn profile_name(&self) -> &'static str {
        match self.profile_idc {
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 => "High",
            110 => "High 10",
            122 => "High 4:2:2",
            244 => "High 4:4:4 Predictive",
            _ => "Other",
        }
    }

    /// Level as "3.1".
    pub fn level_name(&self) -> String {
        format!("{}.{}", self.level_idc / 10, self.level_idc % 10)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvcError {
    #[error("AVC decoder configuration record is truncated")]
    Truncated,
    #[error("AVC decoder configuration record has version {0}, expected 1")]
    BadVersion(u8),
    #[error("AVC decoder configuration record holds no SPS")]
    NoSps,
    #[error("SPS is corrupt: {0}")]
    BadSps(&'static str),
}

impl From<EndOfData> for AvcError {
    fn from(_: EndOfData) -> Self {
        AvcError::BadSps("ends early")
    }
}

/// Parses an AVCDecoderConfigurationRecord (the body of an AVC sequence header after the
/// 5-byte FLV video header) and its first SPS.
pub fn parse_decoder_config(record: &[u8]) -> Result<AvcInfo, AvcError> {
    if record.len() < 8 {
        return Err(AvcError::Truncated);
    }
    if record[0] != 1 {
        return Err(AvcError::BadVersion(record[0]));
    }
    if record[5] & 0x1f == 0 {
        return Err(AvcError::NoSps);
    }
    let len = usize::from(u16::from_be_bytes([record[6], record[7]]));
    let sps = record.get(8..8 + len).ok_or(AvcError::Truncated)?;
    parse_sps(sps)
}

/// Most macroblocks across or down a picture: level 6.2 allows 139264 macroblocks per
/// frame and no dimension above sqrt(8 x 139264) = 1055 (16880 samples).
const MAX_DIMENSION_IN_MBS: u32 = 1055;

/// Reads an Exp-Golomb value the spec bounds to `max`; larger means a corrupt SPS.
fn ue_at_most(r: &mut BitReader<'_>, max: u32, field: &'static str) -> Result<u32, AvcError> {
    let v = r.ue()?;
    if v > max {
        return Err(AvcError::BadSps(field));
    }
    Ok(v)
}

/// Parses an SPS NAL unit (with its one-byte NAL header).
///
/// Every field that feeds arithmetic is checked against the range the spec allows, so a
/// crafted SPS is an error, never an overflow.
pub fn parse_sps(nal: &[u8]) -> Result<AvcInfo, AvcError> {
    if nal.len() < 4 || nal[0] & 0x1f != 7 {
        return Err(AvcError::BadSps("not an SPS NAL unit"));
    }
    let rbsp = unescape_rbsp(&nal[1..]);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)? as u8;
    r.skip(8)?; // constraint flags
    let level_idc = r.bits(8)? as u8;
    ue_at_most(&mut r, 31, "seq_parameter_set_id")?;
    let mut chroma_format_idc = 1;
    let mut bit_depth = 8;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = ue_at_most(&mut r, 3, "chroma_format_idc")?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        bit_depth = ue_at_most(&mut r, 6, "bit_depth_luma_minus8")? + 8;
        ue_at_most(&mut r, 6, "bit_depth_chroma_minus8")?;
        r.flag()?; // qpprime_y_zero_transform_bypass
        if r.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    ue_at_most(&mut r, 12, "log2_max_frame_num_minus4")?;
    match ue_at_most(&mut r, 2, "pic_order_cnt_type")? {
        0 => {
            ue_at_most(&mut r, 12, "log2_max_pic_order_cnt_lsb_minus4")?;
        }
        1 => {
            r.flag()?;
            r.se()?;
            r.se()?;
            let n = ue_at_most(&mut r, 255, "num_ref_frames_in_pic_order_cnt_cycle")?;
            for _ in 0..n {
                r.se()?;
            }
        }
        _ => {}
    }
    ue_at_most(&mut r, 16, "max_num_ref_frames")?;
    r.flag()?; // gaps_in_frame_num_value_allowed
    let width_mbs = ue_at_most(&mut r, MAX_DIMENSION_IN_MBS - 1, "pic_width_in_mbs_minus1")? + 1;
    let height_map_units = ue_at_most(&mut r, MAX_DIMENSION_IN_MBS - 1, "pic_height_in_map_units_minus1")? + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.flag()?; // mb_adaptive_frame_field
    }
    r.flag()?; // direct_8x8_inference
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0, 0, 0, 0);
    if r.flag()? {
        crop_l = r.ue()?;
        crop_r = r.ue()?;
        crop_t = r.ue()?;
        crop_b = r.ue()?;
    }
    let frame_height_factor = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane { 0 } else { chroma_format_idc };
    let (sub_w, sub_h) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let crop_unit_x = if chroma_array_type == 0 { 1 } else { sub_w };
    let crop_unit_y = if chroma_array_type == 0 {
        frame_height_factor
    } else {
        sub_h * frame_height_factor
    };
    let width =
        crop(width_mbs * 16, crop_unit_x, crop_l, crop_r).ok_or(AvcError::BadSps("cropping wider than the picture"))?;
    let height = crop(height_map_units * 16 * frame_height_factor, crop_unit_y, crop_t, crop_b)
        .ok_or(AvcError::BadSps("cropping taller than the picture"))?;
    if width == 0 || height == 0 {
        return Err(AvcError::BadSps("empty picture"));
    }
    Ok(AvcInfo {
        profile_idc,
        level_idc,
        width,
        height,
        chroma_format_idc,
        bit_depth,
    })
}

/// `coded` minus `unit` x (`a` + `b`), in 64 bits so no offset the peer sends overflows.
fn crop(coded: u32, unit: u32, a: u32, b: u32) -> Option<u32> {
    let offset = u64::from(unit) * (u64::from(a) + u64::from(b));
    u32::try_from(u64::from(coded).checked_sub(offset)?).ok()
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), AvcError> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(AvcError::BadSps("delta_scale"));
            }
            next = (last + delta + 256) % 256;
        }
        last = if next == 0 { last } else { next };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Writes SPS fields MSB first, Exp-Golomb included, to build SPSs no encoder makes.
    #[derive(Default)]
    struct Bits {
        bits: Vec<bool>,
    }

    impl Bits {
        fn u(mut self, n: u32, v: u64) -> Self {
            for i in (0..n).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
            self
        }
        fn ue(self, v: u64) -> Self {
            let code = v + 1;
            let len = 64 - code.leading_zeros();
            self.u(len - 1, 0).u(len, code)
        }
        fn se(self, v: i64) -> Self {
            self.ue(if v > 0 { 2 * v as u64 - 1 } else { 2 * v.unsigned_abs() })
        }
        /// NAL header, the fields, the stop bit; no emulation prevention needed for these.
        fn nal(self) -> Vec<u8> {
            let mut b = self.u(1, 1);
            while b.bits.len() % 8 != 0 {
                b.bits.push(false);
            }
            let mut out = vec![0x67];
            out.extend(
                b.bits
                    .chunks(8)
                    .map(|c| c.iter().fold(0u8, |a, &x| (a << 1) | u8::from(x))),
            );
            out
        }
    }

    /// A High-profile SPS up to the picture size: `scaling` fills the first scaling list,
    /// then sizes and cropping follow.
    fn high_sps(bit_depth_minus8: u64, scaling: &[i64], width_mbs_minus1: u64, crop: Option<[u64; 4]>) -> Vec<u8> {
        let mut b = Bits::default().u(8, 100).u(8, 0).u(8, 40).ue(0); // profile, flags, level, id
        b = b.ue(1).ue(bit_depth_minus8).ue(0).u(1, 0); // 4:2:0, depths, bypass
        if scaling.is_empty() {
            b = b.u(1, 0);
        } else {
            b = b.u(1, 1).u(1, 1);
            for d in scaling {
                b = b.se(*d);
            }
            b = b.u(7, 0); // the other seven lists absent
        }
        b = b.ue(0).ue(2).ue(1).u(1, 0); // frame num, poc type 2, refs, gaps
        b = b.ue(width_mbs_minus1).ue(44).u(1, 1).u(1, 1); // 45 map units, frame_mbs_only, 8x8
        b = match crop {
            Some([l, r, t, bo]) => b.u(1, 1).ue(l).ue(r).ue(t).ue(bo),
            None => b.u(1, 0),
        };
        b.u(1, 0).nal() // no VUI
    }

    #[test]
    fn built_sps_reads_back() {
        let i = parse_sps(&high_sps(2, &[], 79, Some([0, 0, 0, 0]))).unwrap();
        assert_eq!((i.width, i.height, i.bit_depth, i.profile_idc), (1280, 720, 10, 100));
        // A scaling list whose first delta ends it (next scale 0) reads too.
        let i = parse_sps(&high_sps(0, &[-8], 79, Some([0, 8, 0, 4]))).unwrap();
        assert_eq!((i.width, i.height), (1264, 712));
    }

    #[test]
    fn crafted_sps_values_are_errors_not_overflows() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "width near 2^32 macroblocks",
                high_sps(0, &[], u64::from(u32::MAX) - 1, None),
                "pic_width_in_mbs_minus1",
            ),
            (
                "width over the level limit",
                high_sps(0, &[], 1055, None),
                "pic_width_in_mbs_minus1",
            ),
            (
                "bit depth beyond 14",
                high_sps(7, &[], 79, None),
                "bit_depth_luma_minus8",
            ),
            (
                "bit depth near 2^32",
                high_sps(u64::from(u32::MAX) - 1, &[], 79, None),
                "bit_depth_luma_minus8",
            ),
            (
                "scaling delta beyond -128..=127",
                high_sps(0, &[i64::from(i32::MAX)], 79, None),
                "delta_scale",
            ),
            (
                "scaling delta at the most negative value",
                high_sps(0, &[-i64::from(i32::MAX)], 79, None),
                "delta_scale",
            ),
            (
                "crop offsets near 2^32",
                high_sps(
                    0,
                    &[],
                    79,
                    Some([u64::from(u32::MAX) - 1, u64::from(u32::MAX) - 1, 0, 0]),
                ),
                "cropping wider than the picture",
            ),
            (
                "cropping everything",
                high_sps(0, &[], 79, Some([320, 320, 0, 0])),
                "empty picture",
            ),
        ];
        for (name, nal, field) in cases {
            assert_eq!(parse_sps(&nal), Err(AvcError::BadSps(field)), "{name}");
        }
    }

    proptest! {
        #[test]
        fn parse_sps_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut nal = vec![0x67];
            nal.extend_from_slice(&body);
            let _ = parse_sps(&nal);
        }
    }

    #[test]
    fn truncated_and_foreign_records_are_errors() {
        assert_eq!(parse_decoder_config(&[1, 100]), Err(AvcError::Truncated));
        assert_eq!(
            parse_decoder_config(&[2, 100, 0, 31, 0xff, 0xe1, 0, 4]),
            Err(AvcError::BadVersion(2))
        );
        assert_eq!(
            parse_decoder_config(&[1, 100, 0, 31, 0xff, 0xe0, 0, 0]),
            Err(AvcError::NoSps)
        );
        assert_eq!(
            parse_decoder_config(&[1, 100, 0, 31, 0xff, 0xe1, 0, 40, 0x67]),
            Err(AvcError::Truncated)
        );
    }
}
