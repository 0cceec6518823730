//! Opus: the sequence header of enhanced-RTMP `Opus` audio, in either form a sender may use:
//! the Ogg identification header `OpusHead` (RFC 7845 §5.1, what FFmpeg sends) or the
//! ISO-BMFF `dOps` box payload (Opus in ISOBMFF §4.3.2), with or without its box header.

/// What an Opus sequence header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusInfo {
    pub form: OpusHeaderForm,
    pub channels: u32,
    /// Samples at 48 kHz to drop from the start of the decoded stream.
    pub pre_skip: u16,
    /// Sample rate of the encoder's input; 0 when unknown. Opus always decodes at 48 kHz.
    pub input_sample_rate: u32,
    /// Gain in Q7.8 dB to apply on output.
    pub output_gain: i16,
    pub mapping_family: u8,
    /// Streams and coupled (stereo) streams; 1 and channels-1 for family 0.
    pub stream_count: u8,
    pub coupled_count: u8,
}

impl OpusInfo {
    /// The rate to report: the encoder's input rate, or Opus's 48 kHz when it is unknown.
    pub fn sample_rate(&self) -> u32 {
        if self.input_sample_rate == 0 {
            48_000
        } else {
            self.input_sample_rate
        }
    }
}

/// The layout the header came in; the fields are the same, the byte order differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpusHeaderForm {
    /// "OpusHead" magic, little-endian fields.
    OpusHead,
    /// dOps box payload, big-endian fields.
    DOps,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpusError {
    #[error("Opus header is truncated")]
    Truncated,
    #[error("Opus header is neither OpusHead nor a dOps box")]
    UnknownForm,
    #[error("Opus header has unsupported version {0}")]
    BadVersion(u8),
    #[error("Opus header is invalid: {0}")]
    BadValue(&'static str),
}

const MAGIC: &[u8; 8] = b"OpusHead";
/// Fields after the magic (OpusHead) or from the start (dOps) up to the mapping family.
const FIXED_LEN: usize = 11;

/// Parses an Opus sequence header (the audio message body after the 5-byte enhanced-RTMP
/// audio header).
pub fn parse_header(data: &[u8]) -> Result<OpusInfo, OpusError> {
    let (form, fields) = if let Some(rest) = data.strip_prefix(MAGIC) {
        (OpusHeaderForm::OpusHead, rest)
    } else if data.get(4..8) == Some(b"dOps") {
        (OpusHeaderForm::DOps, &data[8..])
    } else if data.first() == Some(&0) {
        (OpusHeaderForm::DOps, data)
    } else if data.len() < MAGIC.len() && MAGIC.starts_with(data) {
        return Err(OpusError::Truncated);
    } else {
        return Err(OpusError::UnknownForm);
    };
    let f = fields.get(..FIXED_LEN).ok_or(OpusError::Truncated)?;
    let version = f[0];
    match form {
        // RFC 7845: a major version (upper nibble) other than 0 is incompatible.
        OpusHeaderForm::OpusHead if version >> 4 != 0 => return Err(OpusError::BadVersion(version)),
        OpusHeaderForm::DOps if version != 0 => return Err(OpusError::BadVersion(version)),
        _ => {}
    }
    let channels = f[1];
    let (pre_skip, input_sample_rate, output_gain) = match form {
        OpusHeaderForm::OpusHead => (
            u16::from_le_bytes([f[2], f[3]]),
            u32::from_le_bytes([f[4], f[5], f[6], f[7]]),
            i16::from_le_bytes([f[8], f[9]]),
        ),
        OpusHeaderForm::DOps => (
            u16::from_be_bytes([f[2], f[3]]),
            u32::from_be_bytes([f[4], f[5], f[6], f[7]]),
            i16::from_be_bytes([f[8], f[9]]),
        ),
    };
    let mapping_family = f[10];
    if channels == 0 {
        return Err(OpusError::BadValue("zero channels"));
    }
    let (stream_count, coupled_count) = if mapping_family == 0 {
        // Family 0 is mono or stereo in one stream, with no mapping table.
        if channels > 2 {
            return Err(OpusError::BadValue("more than two channels in mapping family 0"));
        }
        (1, channels - 1)
    } else {
        let table = fields
            .get(FIXED_LEN..FIXED_LEN + 2 + usize::from(channels))
            .ok_or(OpusError::Truncated)?;
        let (streams, coupled) = (table[0], table[1]);
        if streams == 0 || coupled > streams || usize::from(streams) + usize::from(coupled) > 255 {
            return Err(OpusError::BadValue("stream counts"));
        }
        (streams, coupled)
    };
    Ok(OpusInfo {
        form,
        channels: u32::from(channels),
        pre_skip,
        input_sample_rate,
        output_gain,
        mapping_family,
        stream_count,
        coupled_count,
    })
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // case tables are tuples of named fields
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Opus sequence headers from FFmpeg 9 / libopus (see testdata/README.md): name,
    /// enhanced-RTMP SequenceStart body, channels, reported sample rate, mapping family,
    /// streams, coupled streams.
    const VECTORS: &[(&str, &[u8], u32, u32, u8, u8, u8)] = &[
        (
            "48 kHz stereo",
            include_bytes!("testdata/opus_48k_stereo.bin"),
            2,
            48000,
            0,
            1,
            1,
        ),
        (
            "48 kHz mono",
            include_bytes!("testdata/opus_48k_mono.bin"),
            1,
            48000,
            0,
            1,
            0,
        ),
        (
            "16 kHz mono input",
            include_bytes!("testdata/opus_16k_mono.bin"),
            1,
            16000,
            0,
            1,
            0,
        ),
        (
            "48 kHz 5.1",
            include_bytes!("testdata/opus_48k_5.1.bin"),
            6,
            48000,
            1,
            4,
            2,
        ),
    ];

    #[test]
    fn headers_from_ffmpeg() {
        for (name, body, channels, rate, family, streams, coupled) in VECTORS {
            let i = parse_header(&body[5..]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(i.form, OpusHeaderForm::OpusHead, "{name}");
            assert_eq!(
                (i.channels, i.sample_rate(), i.mapping_family),
                (*channels, *rate, *family),
                "{name}"
            );
            assert_eq!(
                (i.stream_count, i.coupled_count, i.pre_skip, i.output_gain),
                (*streams, *coupled, 312, 0),
                "{name}"
            );
        }
    }

    /// The same headers rewritten as dOps payloads: version 0, big-endian fields.
    fn as_dops(opus_head: &[u8]) -> Vec<u8> {
        let f = &opus_head[8..];
        let mut d = vec![0, f[1]];
        d.extend_from_slice(&[f[3], f[2], f[7], f[6], f[5], f[4], f[9], f[8], f[10]]);
        d.extend_from_slice(&f[11..]);
        d
    }

    #[test]
    fn dops_forms_read_the_same() {
        for (name, body, ..) in VECTORS {
            let head = parse_header(&body[5..]).unwrap();
            let dops = as_dops(&body[5..]);
            let boxed = [&((dops.len() + 8) as u32).to_be_bytes()[..], b"dOps", &dops].concat();
            for (form, data) in [("payload", dops.clone()), ("box", boxed)] {
                let i = parse_header(&data).unwrap_or_else(|e| panic!("{name} {form}: {e}"));
                assert_eq!(
                    i,
                    OpusInfo {
                        form: OpusHeaderForm::DOps,
                        ..head.clone()
                    },
                    "{name} {form}"
                );
            }
        }
    }

    #[test]
    fn unknown_rate_reads_as_48k() {
        let mut head = VECTORS[0].1[5..].to_vec();
        head[12..16].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(parse_header(&head).map(|i| i.sample_rate()), Ok(48000));
    }

    #[test]
    fn broken_headers_are_errors() {
        let stereo = &VECTORS[0].1[5..];
        let surround = &VECTORS[3].1[5..];
        let cases: &[(&str, Vec<u8>, OpusError)] = &[
            ("empty", vec![], OpusError::Truncated),
            ("magic only partly there", b"Opus".to_vec(), OpusError::Truncated),
            ("magic only", b"OpusHead".to_vec(), OpusError::Truncated),
            ("other magic", b"OpusTags\x01\x02".to_vec(), OpusError::UnknownForm),
            ("cut before the family", stereo[..18].to_vec(), OpusError::Truncated),
            (
                "major version 1",
                [&stereo[..8], &[0x10], &stereo[9..]].concat(),
                OpusError::BadVersion(0x10),
            ),
            (
                "boxed dOps version 1",
                [&[0u8, 0, 0, 19][..], b"dOps", &[1, 2], &[0; 9]].concat(),
                OpusError::BadVersion(1),
            ),
            (
                "zero channels",
                [&stereo[..9], &[0], &stereo[10..]].concat(),
                OpusError::BadValue("zero channels"),
            ),
            (
                "three channels in family 0",
                [&stereo[..9], &[3], &stereo[10..]].concat(),
                OpusError::BadValue("more than two channels in mapping family 0"),
            ),
            (
                "mapping table cut",
                surround[..surround.len() - 1].to_vec(),
                OpusError::Truncated,
            ),
            (
                "no streams",
                [&surround[..19], &[0], &surround[20..]].concat(),
                OpusError::BadValue("stream counts"),
            ),
            (
                "more coupled than streams",
                [&surround[..20], &[5], &surround[21..]].concat(),
                OpusError::BadValue("stream counts"),
            ),
        ];
        for (name, data, err) in cases {
            assert_eq!(parse_header(data).as_ref(), Err(err), "{name}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..48)) {
            let _ = parse_header(&data);
            let _ = parse_header(&[&MAGIC[..], &data].concat());
            let _ = parse_header(&[&[0, 0, 0, 0][..], b"dOps", &data].concat());
        }
    }
}
