//! A bounded MSB-first bit reader: reading past the end is an error, not a panic.

/// Ran out of bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndOfData;

pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// Reads `n` (at most 32) bits.
    pub fn bits(&mut self, n: u32) -> Result<u32, EndOfData> {
        debug_assert!(n <= 32);
        let mut v: u32 = 0;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8).ok_or(EndOfData)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Ok(v)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), EndOfData> {
        if self.pos + n > self.data.len() * 8 {
            return Err(EndOfData);
        }
        self.pos += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_across_bytes_and_stops_at_the_end() {
        let mut r = BitReader::new(&[0b1010_1100, 0b0101_0000]);
        assert_eq!(r.bits(3), Ok(0b101));
        assert_eq!(r.bits(7), Ok(0b011_0001));
        assert_eq!(r.skip(6), Ok(()));
        assert_eq!(r.bits(1), Err(EndOfData));
    }
}
