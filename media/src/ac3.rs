//! AC-3 and E-AC-3: the fields of the first syncframe that their ISO-BMFF sample entries
//! (`dac3`, `dec3`, ETSI TS 102 366 Annex F) carry. RTMP sends no configuration record for
//! them, so the sample entry is built from a coded frame.

use crate::bits::BitReader;
use crate::MediaError;

/// What `dac3` says about an AC-3 stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ac3Config {
    pub fscod: u8,
    pub bsid: u8,
    pub bsmod: u8,
    pub acmod: u8,
    pub lfeon: bool,
    /// frmsizecod / 2: the nominal bit rate index.
    pub bit_rate_code: u8,
}

/// What `dec3` says about an E-AC-3 stream with one independent substream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eac3Config {
    /// kbit/s.
    pub data_rate: u16,
    pub fscod: u8,
    pub bsid: u8,
    pub bsmod: u8,
    pub acmod: u8,
    pub lfeon: bool,
}

const SYNC: [u8; 2] = [0x0b, 0x77];
const ACMOD_CHANNELS: [u16; 8] = [2, 1, 2, 3, 3, 4, 4, 5];
const BAD: MediaError = MediaError::BadConfig("AC-3");

impl Ac3Config {
    pub fn channels(&self) -> u16 {
        ACMOD_CHANNELS[usize::from(self.acmod & 7)] + u16::from(self.lfeon)
    }

    pub fn sample_rate(&self) -> u32 {
        match self.fscod {
            0 => 48_000,
            1 => 44_100,
            _ => 32_000,
        }
    }

    /// Reads an AC-3 syncframe (bsid up to 10).
    pub fn parse(frame: &[u8]) -> Result<Ac3Config, MediaError> {
        if frame.get(..2) != Some(&SYNC[..]) {
            return Err(BAD);
        }
        let mut r = BitReader::new(frame.get(2..8).ok_or(BAD)?);
        let e = |_| BAD;
        r.skip(16).map_err(e)?; // crc1
        let fscod = r.bits(2).map_err(e)? as u8;
        let frmsizecod = r.bits(6).map_err(e)? as u8;
        let bsid = r.bits(5).map_err(e)? as u8;
        let bsmod = r.bits(3).map_err(e)? as u8;
        let acmod = r.bits(3).map_err(e)? as u8;
        if fscod == 3 || bsid > 10 {
            return Err(BAD);
        }
        if acmod & 1 != 0 && acmod != 1 {
            r.skip(2).map_err(e)?; // cmixlev
        }
        if acmod & 4 != 0 {
            r.skip(2).map_err(e)?; // surmixlev
        }
        if acmod == 2 {
            r.skip(2).map_err(e)?; // dsurmod
        }
        let lfeon = r.bits(1).map_err(e)? == 1;
        Ok(Ac3Config {
            fscod,
            bsid,
            bsmod,
            acmod,
            lfeon,
            bit_rate_code: frmsizecod >> 1,
        })
    }
}

impl Eac3Config {
    pub fn channels(&self) -> u16 {
        ACMOD_CHANNELS[usize::from(self.acmod & 7)] + u16::from(self.lfeon)
    }

    pub fn sample_rate(&self) -> u32 {
        match self.fscod {
            0 => 48_000,
            1 => 44_100,
            _ => 32_000,
        }
    }

    /// Reads the first E-AC-3 syncframe (bsid 11 to 16).
    pub fn parse(frame: &[u8]) -> Result<Eac3Config, MediaError> {
        const BAD: MediaError = MediaError::BadConfig("E-AC-3");
        if frame.get(..2) != Some(&SYNC[..]) {
            return Err(BAD);
        }
        let mut r = BitReader::new(frame.get(2..8).ok_or(BAD)?);
        let e = |_| BAD;
        r.skip(2 + 3).map_err(e)?; // strmtyp, substreamid
        let frmsiz = r.bits(11).map_err(e)?;
        let fscod = r.bits(2).map_err(e)? as u8;
        let (rate, blocks) = if fscod == 3 {
            let rate = match r.bits(2).map_err(e)? {
                0 => 24_000,
                1 => 22_050,
                2 => 16_000,
                _ => return Err(BAD),
            };
            (rate, 6)
        } else {
            let rate = [48_000, 44_100, 32_000][usize::from(fscod)];
            (rate, [1, 2, 3, 6][r.bits(2).map_err(e)? as usize])
        };
        let acmod = r.bits(3).map_err(e)? as u8;
        let lfeon = r.bits(1).map_err(e)? == 1;
        let bsid = r.bits(5).map_err(e)? as u8;
        if !(11..=16).contains(&bsid) {
            return Err(BAD);
        }
        let frame_bytes = (frmsiz + 1) * 2;
        let kbps = u64::from(frame_bytes) * 8 * rate / (256 * blocks) / 1000;
        Ok(Eac3Config {
            data_rate: kbps.min(u64::from(u16::MAX)) as u16,
            fscod,
            bsid,
            bsmod: 0,
            acmod,
            lfeon,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ac3_stereo_48k_syncframe() {
        // 0b77, crc, fscod 0 + frmsizecod 0x1c (384 kbit/s), bsid 8, bsmod 0, acmod 2, dsurmod, lfe 0
        let f = [0x0b, 0x77, 0x00, 0x00, 0x1c, 0x40, 0x40, 0x00];
        let c = Ac3Config::parse(&f).unwrap();
        assert_eq!(
            (c.fscod, c.bsid, c.acmod, c.lfeon, c.bit_rate_code),
            (0, 8, 2, false, 14)
        );
        assert_eq!((c.sample_rate(), c.channels()), (48_000, 2));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Ac3Config::parse(&[0x0b]).is_err());
        assert!(Eac3Config::parse(&[0xff, 0xff, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
