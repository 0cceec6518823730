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

/// Parses an SPS NAL unit (with its one-byte NAL header).
pub fn parse_sps(nal: &[u8]) -> Result<AvcInfo, AvcError> {
    if nal.len() < 4 || nal[0] & 0x1f != 7 {
        return Err(AvcError::BadSps("not an SPS NAL unit"));
    }
    let rbsp = unescape_rbsp(&nal[1..]);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)? as u8;
    r.skip(8)?; // constraint flags
    let level_idc = r.bits(8)? as u8;
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut bit_depth = 8;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Err(AvcError::BadSps("chroma_format_idc"));
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        bit_depth = r.ue()? + 8;
        r.ue()?; // bit_depth_chroma_minus8
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
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.flag()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return Err(AvcError::BadSps("num_ref_frames_in_pic_order_cnt_cycle"));
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.flag()?; // gaps_in_frame_num_value_allowed
    let width_mbs = r.ue()? + 1;
    let height_map_units = r.ue()? + 1;
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
    let width = (width_mbs * 16)
        .checked_sub(crop_unit_x * (crop_l.saturating_add(crop_r)))
        .ok_or(AvcError::BadSps("cropping wider than the picture"))?;
    let height = (height_map_units * 16 * frame_height_factor)
        .checked_sub(crop_unit_y * (crop_t.saturating_add(crop_b)))
        .ok_or(AvcError::BadSps("cropping taller than the picture"))?;
    Ok(AvcInfo {
        profile_idc,
        level_idc,
        width,
        height,
        chroma_format_idc,
        bit_depth,
    })
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), EndOfData> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            next = (last + delta + 256) % 256;
        }
        last = if next == 0 { last } else { next };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
