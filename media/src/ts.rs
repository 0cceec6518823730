//! MPEG-2 transport stream (ISO/IEC 13818-1) for HLS players that predate fMP4: H.264 or
//! H.265 video and AAC (ADTS) or MP3 audio, one program, PCR on the video PID.
//!
//! A [`TsWriter`] writes one segment: tables first, then PES packets in the order given.
//! Video samples arrive as ISO-BMFF samples (length-prefixed NAL units) and are rewritten
//! to Annex B with an access unit delimiter, and parameter sets before every keyframe.

use crate::MediaError;

pub const PACKET_LEN: usize = 188;
const PID_PMT: u16 = 0x1000;
const PID_VIDEO: u16 = 0x100;
const PID_AUDIO: u16 = 0x101;

/// Video codecs a TS segment can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsVideo {
    /// From an AVCDecoderConfigurationRecord.
    Avc(ParameterSets),
    /// From an HEVCDecoderConfigurationRecord.
    Hevc(ParameterSets),
}

/// Audio codecs a TS segment can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsAudio {
    /// AAC, framed with ADTS headers built from the AudioSpecificConfig.
    Aac {
        object_type: u8,
        frequency_index: u8,
        channel_config: u8,
    },
    Mp3,
}

/// NAL units to repeat before each keyframe, and the NAL length field size of samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterSets {
    pub nal_units: Vec<Vec<u8>>,
    pub length_size: usize,
}

fn take<'a>(r: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], MediaError> {
    if r.len() < n {
        return Err(MediaError::BadConfig(what));
    }
    let (a, b) = r.split_at(n);
    *r = b;
    Ok(a)
}

impl ParameterSets {
    /// SPS and PPS of an AVCDecoderConfigurationRecord.
    pub fn from_avc_record(record: &[u8]) -> Result<ParameterSets, MediaError> {
        const W: &str = "AVC";
        let mut r = record;
        let head = take(&mut r, 5, W)?;
        let length_size = usize::from(head[4] & 3) + 1;
        let mut nal_units = Vec::new();
        // numOfSequenceParameterSets has 5 bits; numOfPictureParameterSets 8.
        for count_mask in [0x1f, 0xff] {
            let count = take(&mut r, 1, W)?[0] & count_mask;
            for _ in 0..count {
                let len = take(&mut r, 2, W)?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                nal_units.push(take(&mut r, len, W)?.to_vec());
            }
        }
        Ok(ParameterSets { nal_units, length_size })
    }

    /// VPS, SPS and PPS (every array) of an HEVCDecoderConfigurationRecord.
    pub fn from_hevc_record(record: &[u8]) -> Result<ParameterSets, MediaError> {
        const W: &str = "HEVC";
        let mut r = record;
        let head = take(&mut r, 23, W)?;
        let length_size = usize::from(head[21] & 3) + 1;
        let arrays = head[22];
        let mut nal_units = Vec::new();
        for _ in 0..arrays {
            take(&mut r, 1, W)?; // completeness + NAL unit type
            let n = take(&mut r, 2, W)?;
            for _ in 0..u16::from_be_bytes([n[0], n[1]]) {
                let len = take(&mut r, 2, W)?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                nal_units.push(take(&mut r, len, W)?.to_vec());
            }
        }
        Ok(ParameterSets { nal_units, length_size })
    }
}

impl TsAudio {
    /// AAC from its AudioSpecificConfig.
    pub fn aac(asc: &[u8]) -> Result<TsAudio, MediaError> {
        let b = asc.get(..2).ok_or(MediaError::BadConfig("AAC"))?;
        let object_type = b[0] >> 3;
        let frequency_index = ((b[0] & 7) << 1) | (b[1] >> 7);
        let channel_config = (b[1] >> 3) & 0xf;
        // ADTS can only say object types 1-4 and a frequency index, not an explicit rate.
        if !(1..=4).contains(&object_type) || frequency_index > 12 {
            return Err(MediaError::BadConfig("AAC (not representable in ADTS)"));
        }
        Ok(TsAudio::Aac {
            object_type,
            frequency_index,
            channel_config,
        })
    }
}

/// The MPEG-2 CRC-32 of PSI sections.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Writes one TS segment.
pub struct TsWriter {
    video: Option<TsVideo>,
    audio: Option<TsAudio>,
    continuity: [u8; 3],
    /// PIDs that have had their first packet in this segment.
    started: [bool; 3],
    out: Vec<u8>,
}

impl TsWriter {
    /// A segment for these streams; its PAT and PMT are written at once.
    pub fn new(video: Option<TsVideo>, audio: Option<TsAudio>) -> TsWriter {
        let mut w = TsWriter {
            video,
            audio,
            continuity: [0; 3],
            started: [false; 3],
            out: Vec::with_capacity(256 * 1024),
        };
        w.write_tables();
        w
    }

    fn pcr_pid(&self) -> u16 {
        if self.video.is_some() {
            PID_VIDEO
        } else {
            PID_AUDIO
        }
    }

    fn write_section(&mut self, pid: u16, section: &[u8]) {
        let mut payload = vec![0u8]; // pointer_field
        payload.extend_from_slice(section);
        payload.extend_from_slice(&crc32(section).to_be_bytes());
        self.write_packets(pid, &payload, None);
    }

    fn write_tables(&mut self) {
        // PAT: program 1 -> PMT PID.
        let pat = [
            0x00,
            0xb0,
            13,
            0x00,
            0x01,
            0xc1,
            0x00,
            0x00,
            0x00,
            0x01,
            0xe0 | (PID_PMT >> 8) as u8,
            PID_PMT as u8,
        ];
        self.write_section(0, &pat);
        let mut streams = Vec::new();
        if let Some(v) = &self.video {
            let ty = match v {
                TsVideo::Avc(_) => 0x1b,
                TsVideo::Hevc(_) => 0x24,
            };
            streams.extend_from_slice(&[ty, 0xe0 | (PID_VIDEO >> 8) as u8, PID_VIDEO as u8, 0xf0, 0x00]);
        }
        if let Some(a) = &self.audio {
            let ty = match a {
                TsAudio::Aac { .. } => 0x0f,
                TsAudio::Mp3 => 0x03,
            };
            streams.extend_from_slice(&[ty, 0xe0 | (PID_AUDIO >> 8) as u8, PID_AUDIO as u8, 0xf0, 0x00]);
        }
        let pcr = self.pcr_pid();
        let section_len = 9 + streams.len() + 4;
        let mut pmt = vec![
            0x02,
            0xb0 | (section_len >> 8) as u8,
            section_len as u8,
            0x00,
            0x01,
            0xc1,
            0x00,
            0x00,
            0xe0 | (pcr >> 8) as u8,
            pcr as u8,
            0xf0,
            0x00,
        ];
        pmt.extend_from_slice(&streams);
        self.write_section(PID_PMT, &pmt);
    }

    fn slot(pid: u16) -> usize {
        match pid {
            PID_VIDEO => 1,
            PID_AUDIO => 2,
            _ => 0,
        }
    }

    fn counter(&mut self, pid: u16) -> u8 {
        let i = Self::slot(pid);
        // PAT and PMT share a slot: each segment writes them once, before any media.
        let c = if pid == 0 || pid == PID_PMT {
            0
        } else {
            self.continuity[i]
        };
        if pid != 0 && pid != PID_PMT {
            self.continuity[i] = (c + 1) & 0xf;
        }
        c
    }

    /// Splits `payload` into packets on `pid`; the first carries a PCR when given.
    fn write_packets(&mut self, pid: u16, payload: &[u8], pcr: Option<u64>) {
        let mut rest = payload;
        let mut first = true;
        while first || !rest.is_empty() {
            let mut pkt = [0xffu8; PACKET_LEN];
            pkt[0] = 0x47;
            pkt[1] = (if first { 0x40 } else { 0 }) | (pid >> 8) as u8;
            pkt[2] = pid as u8;
            let cc = self.counter(pid);
            let mut header = 4;
            let pcr_here = if first { pcr } else { None };
            // Segments are made independently, so each one's continuity counters start
            // afresh: the first packet of each PID says so with discontinuity_indicator.
            let slot = Self::slot(pid);
            let discontinuity = !self.started[slot] && pid != 0 && pid != PID_PMT;
            self.started[slot] = true;
            let adaptation_min = if pcr_here.is_some() {
                8
            } else if discontinuity {
                2
            } else {
                0
            };
            let room = PACKET_LEN - header - adaptation_min;
            let take = rest.len().min(room);
            let stuffing = room - take;
            if adaptation_min > 0 || stuffing > 0 {
                pkt[3] = 0x30 | cc;
                // adaptation_field_length counts what follows the length byte.
                let af_len = adaptation_min + stuffing;
                if af_len == 1 {
                    pkt[4] = 0;
                } else {
                    pkt[4] = (af_len - 1) as u8;
                    let flags = if discontinuity { 0x80 } else { 0 };
                    pkt[5] = flags
                        | if let Some(pcr) = pcr_here {
                            let base = pcr & ((1 << 33) - 1);
                            pkt[6] = (base >> 25) as u8;
                            pkt[7] = (base >> 17) as u8;
                            pkt[8] = (base >> 9) as u8;
                            pkt[9] = (base >> 1) as u8;
                            pkt[10] = ((base & 1) << 7) as u8 | 0x7e;
                            pkt[11] = 0;
                            0x10
                        } else {
                            0
                        };
                }
                header += af_len;
            } else {
                pkt[3] = 0x10 | cc;
            }
            pkt[header..header + take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.out.extend_from_slice(&pkt);
            first = false;
        }
    }

    fn pes(&mut self, pid: u16, stream_id: u8, pts: u64, dts: Option<u64>, data: &[u8], pcr: Option<u64>) {
        let ts = |marker: u8, t: u64| -> [u8; 5] {
            let t = t & ((1 << 33) - 1);
            [
                (marker << 4) | (((t >> 30) as u8) << 1) | 1,
                (t >> 22) as u8,
                (((t >> 15) as u8) << 1) | 1,
                (t >> 7) as u8,
                ((t as u8) << 1) | 1,
            ]
        };
        let dts = dts.filter(|d| *d != pts);
        let header_data_len = if dts.is_some() { 10 } else { 5 };
        let mut pes = Vec::with_capacity(9 + header_data_len + data.len());
        pes.extend_from_slice(&[0, 0, 1, stream_id]);
        let len = 3 + header_data_len + data.len();
        // Video PES may be longer than the 16-bit length field: 0 means unbounded.
        let len_field = if stream_id == 0xe0 || len > 0xffff {
            0
        } else {
            len as u16
        };
        pes.extend_from_slice(&len_field.to_be_bytes());
        pes.push(0x80);
        pes.push(if dts.is_some() { 0xc0 } else { 0x80 });
        pes.push(header_data_len as u8);
        match dts {
            Some(d) => {
                pes.extend_from_slice(&ts(3, pts));
                pes.extend_from_slice(&ts(1, d));
            }
            None => pes.extend_from_slice(&ts(2, pts)),
        }
        pes.extend_from_slice(data);
        self.write_packets(pid, &pes, pcr);
    }

    /// Writes one video access unit. `sample` holds length-prefixed NAL units; times are in
    /// 90 kHz units.
    pub fn video(&mut self, dts: u64, pts: u64, keyframe: bool, sample: &[u8]) -> Result<(), MediaError> {
        let Some(video) = &self.video else {
            return Err(MediaError::BadSample("segment has no video stream"));
        };
        let (params, hevc) = match video {
            TsVideo::Avc(p) => (p, false),
            TsVideo::Hevc(p) => (p, true),
        };
        let mut au = Vec::with_capacity(sample.len() + 64);
        let start = [0u8, 0, 0, 1];
        au.extend_from_slice(&start);
        if hevc {
            au.extend_from_slice(&[0x46, 0x01, 0x50]);
        } else {
            au.extend_from_slice(&[0x09, 0xf0]);
        }
        if keyframe {
            for nal in &params.nal_units {
                au.extend_from_slice(&start);
                au.extend_from_slice(nal);
            }
        }
        let mut rest = sample;
        while !rest.is_empty() {
            if rest.len() < params.length_size {
                return Err(MediaError::BadSample("truncated NAL length"));
            }
            let len = rest[..params.length_size]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            rest = &rest[params.length_size..];
            if len > rest.len() {
                return Err(MediaError::BadSample("NAL unit longer than the sample"));
            }
            let nal = &rest[..len];
            rest = &rest[len..];
            let nal_type = match (hevc, nal.first()) {
                (false, Some(b)) => b & 0x1f,
                (true, Some(b)) => (b >> 1) & 0x3f,
                _ => continue,
            };
            // Drop delimiters the sample already had; ours comes first.
            if (!hevc && nal_type == 9) || (hevc && nal_type == 35) {
                continue;
            }
            au.extend_from_slice(&start);
            au.extend_from_slice(nal);
        }
        // PCR a little behind the DTS, as decoders expect it to lead.
        let pcr = keyframe.then_some(dts.saturating_sub(9000) * 300);
        let pcr = if self.pcr_pid() == PID_VIDEO { pcr } else { None };
        self.pes(PID_VIDEO, 0xe0, pts, Some(dts), &au, pcr);
        Ok(())
    }

    /// Writes one audio frame (a raw AAC frame or an MP3 frame); `pts` in 90 kHz units.
    pub fn audio(&mut self, pts: u64, frame: &[u8]) -> Result<(), MediaError> {
        let Some(audio) = self.audio else {
            return Err(MediaError::BadSample("segment has no audio stream"));
        };
        let pcr = (self.pcr_pid() == PID_AUDIO).then_some(pts * 300);
        match audio {
            TsAudio::Aac {
                object_type,
                frequency_index,
                channel_config,
            } => {
                let len = frame.len() + 7;
                if len > 0x1fff {
                    return Err(MediaError::BadSample("AAC frame too large for ADTS"));
                }
                let mut data = Vec::with_capacity(len);
                data.extend_from_slice(&[
                    0xff,
                    0xf1,
                    ((object_type - 1) << 6) | (frequency_index << 2) | (channel_config >> 2),
                    ((channel_config & 3) << 6) | (len >> 11) as u8,
                    (len >> 3) as u8,
                    (((len & 7) as u8) << 5) | 0x1f,
                    0xfc,
                ]);
                data.extend_from_slice(frame);
                self.pes(PID_AUDIO, 0xc0, pts, None, &data, pcr);
            }
            TsAudio::Mp3 => self.pes(PID_AUDIO, 0xc0, pts, None, frame, pcr),
        }
        Ok(())
    }

    /// The finished segment.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_record_gives_sps_and_pps() {
        let p = ParameterSets::from_avc_record(crate::fmp4::TEST_AVCC).unwrap();
        assert_eq!(p.length_size, 4);
        assert_eq!(p.nal_units.len(), 2);
        assert_eq!(p.nal_units[0][0] & 0x1f, 7);
        assert_eq!(p.nal_units[1][0] & 0x1f, 8);
        assert!(ParameterSets::from_avc_record(&crate::fmp4::TEST_AVCC[..20]).is_err());
    }

    #[test]
    fn packets_are_188_bytes_with_continuity() {
        let p = ParameterSets::from_avc_record(crate::fmp4::TEST_AVCC).unwrap();
        let mut w = TsWriter::new(Some(TsVideo::Avc(p)), Some(TsAudio::aac(&[0x11, 0x90]).unwrap()));
        let sample = [0, 0, 0, 3, 0x65, 1, 2];
        for i in 0..20u64 {
            w.video(i * 3000, i * 3000 + 3000, i == 0, &sample).unwrap();
            w.audio(i * 1920, &[0x21; 400]).unwrap();
        }
        let out = w.finish();
        assert_eq!(out.len() % PACKET_LEN, 0);
        let mut last_cc: std::collections::HashMap<u16, u8> = Default::default();
        for pkt in out.chunks(PACKET_LEN) {
            assert_eq!(pkt[0], 0x47);
            let pid = (u16::from(pkt[1] & 0x1f) << 8) | u16::from(pkt[2]);
            let cc = pkt[3] & 0xf;
            if let Some(prev) = last_cc.insert(pid, cc) {
                assert_eq!(cc, (prev + 1) & 0xf, "pid {pid:#x}");
            }
        }
    }

    #[test]
    fn crc_matches_the_mpeg2_check_value() {
        assert_eq!(crc32(b"123456789"), 0x0376_e6e7);
    }
}
