//! Fragmented MP4 / CMAF: init segments (`ftyp` + `moov`) built from track configurations,
//! fragments (`moof` + `mdat`) built from samples, and each codec's sample entry and RFC 6381
//! `CODECS` string.
//!
//! The boxes are written with `mp4-atom`; this module owns what goes into them. Codec
//! configuration records arrive as the publisher sent them (the payload of an RTMP sequence
//! header) and are decoded only as far as the sample entry needs.

use mp4_atom::{
    Ac3, Ac3SpecificBox, Atom, Audio, Av01, Av1c, Avc1, Avcc, Codec, Dfla, Dinf, Dops, Dref, DrefEntry, Eac3,
    Ec3IndependentSubstream, Ec3SpecificBox, Encode, Esds, FixedPoint, Flac, Ftyp, Hdlr, Hvc1, Hvcc, Mdhd, Mdia, Mfhd,
    Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Opus, OpusChannelMapping, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd, Traf, Trak,
    Trex, Trun, TrunEntry, Url, Visual, Vmhd, Vp09, VpcC,
};

use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor};

use crate::ac3::{Ac3Config, Eac3Config};
use crate::MediaError;

/// Timescale of video tracks: 90 kHz, which represents both millisecond timestamps and
/// common frame rates exactly.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// Opus decoder configuration (the fields of `OpusHead` / `dOps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusConfig {
    pub channels: u8,
    pub pre_skip: u16,
    pub input_sample_rate: u32,
    pub output_gain: i16,
    pub mapping_family: u8,
    pub stream_count: u8,
    pub coupled_count: u8,
    /// One entry per output channel; empty for mapping family 0.
    pub channel_mapping: Vec<u8>,
}

/// A track's decoder configuration, as the publisher's sequence header carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecConfig {
    /// AVCDecoderConfigurationRecord (`avcC` payload).
    Avc(Vec<u8>),
    /// HEVCDecoderConfigurationRecord (`hvcC` payload).
    Hevc(Vec<u8>),
    /// AV1CodecConfigurationRecord (`av1C` payload).
    Av1(Vec<u8>),
    /// VPCodecConfigurationRecord as the `vpcC` FullBox payload (version and flags first).
    Vp9(Vec<u8>),
    /// AudioSpecificConfig.
    Aac(Vec<u8>),
    Opus(OpusConfig),
    /// The FLAC STREAMINFO block (34 bytes).
    Flac(Vec<u8>),
    Ac3(Ac3Config),
    Eac3(Eac3Config),
    /// MPEG-1/2 Layer III: no configuration beyond rate and channels.
    Mp3,
}

/// Video or audio, with what the sample entry says about the picture or the sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video { width: u16, height: u16 },
    Audio { sample_rate: u32, channels: u16 },
}

/// One track of an init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    /// 1-based; fragments name their track by it.
    pub track_id: u32,
    /// Ticks per second of this track's timestamps.
    pub timescale: u32,
    pub kind: TrackKind,
    pub codec: CodecConfig,
}

/// One coded sample of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample<'a> {
    /// In the track's timescale.
    pub duration: u32,
    /// Presentation minus decode time, in the track's timescale.
    pub composition_offset: i32,
    /// A sync sample: decoding can start here.
    pub keyframe: bool,
    /// The sample as stored in `mdat` (length-prefixed NAL units for H.264/H.265, OBUs for
    /// AV1, a raw frame for audio).
    pub data: &'a [u8],
}

/// The samples of one track in a fragment, contiguous in decode order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRun<'a> {
    pub track_id: u32,
    /// Decode time of the first sample, in the track's timescale (`tfdt`).
    pub base_decode_time: u64,
    pub samples: Vec<Sample<'a>>,
}

/// `sample_depends_on = 2` (an I-frame).
const FLAGS_SYNC: u32 = 0x0200_0000;
/// `sample_depends_on = 1`, `sample_is_non_sync_sample`.
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

fn bad(what: &'static str) -> MediaError {
    MediaError::BadConfig(what)
}

/// Decodes a record of box kind `A` from its payload bytes (the box header is added here).
fn decode_record<A: Atom>(payload: &[u8], what: &'static str) -> Result<A, MediaError> {
    let size = u32::try_from(payload.len() + 8).map_err(|_| bad(what))?;
    let mut boxed = Vec::with_capacity(payload.len() + 8);
    boxed.extend_from_slice(&size.to_be_bytes());
    boxed.extend_from_slice(A::KIND.as_ref());
    boxed.extend_from_slice(payload);
    let mut buf = &boxed[..];
    <A as mp4_atom::Decode>::decode(&mut buf).map_err(|_| bad(what))
}

impl TrackConfig {
    /// The RFC 6381 codec string (`avc1.64001f`, `hvc1.1.6.L93.B0`, `av01.0.08M.08`,
    /// `vp09.00.31.08`, `mp4a.40.2`, `opus`, `fLaC`, `ac-3`, `ec-3`, `mp4a.40.34`).
    pub fn codec_string(&self) -> Result<String, MediaError> {
        Ok(match &self.codec {
            CodecConfig::Avc(r) => {
                let p = r.get(1..4).ok_or(bad("AVC"))?;
                format!("avc1.{:02x}{:02x}{:02x}", p[0], p[1], p[2])
            }
            CodecConfig::Hevc(r) => {
                let p = r.get(..13).ok_or(bad("HEVC"))?;
                let space = ["", "A", "B", "C"][usize::from(p[1] >> 6)];
                let tier = if p[1] & 0x20 != 0 { 'H' } else { 'L' };
                let profile = p[1] & 0x1f;
                let compat = u32::from_be_bytes([p[2], p[3], p[4], p[5]]).reverse_bits();
                let mut s = format!("hvc1.{space}{profile}.{compat:x}.{tier}{}", p[12]);
                let constraints = &p[6..12];
                let used = constraints.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                for b in &constraints[..used] {
                    s.push_str(&format!(".{b:X}"));
                }
                s
            }
            CodecConfig::Av1(r) => {
                let p = r.get(..3).ok_or(bad("AV1"))?;
                let profile = p[1] >> 5;
                let level = p[1] & 0x1f;
                let tier = if p[2] & 0x80 != 0 { 'H' } else { 'M' };
                let depth = match (p[2] & 0x40 != 0, p[2] & 0x20 != 0) {
                    (true, true) => 12,
                    (true, false) => 10,
                    _ => 8,
                };
                format!("av01.{profile}.{level:02}{tier}.{depth:02}")
            }
            CodecConfig::Vp9(r) => {
                let p = r.get(4..7).ok_or(bad("VP9"))?;
                // A record without a level: report 3.1, which every browser accepts for HD.
                let level = if p[1] == 0 { 31 } else { p[1] };
                format!("vp09.{:02}.{level:02}.{:02}", p[0], p[2] >> 4)
            }
            CodecConfig::Aac(asc) => {
                let b0 = *asc.first().ok_or(bad("AAC"))?;
                let mut aot = b0 >> 3;
                if aot == 31 {
                    let b1 = *asc.get(1).ok_or(bad("AAC"))?;
                    aot = 32 + (((b0 & 7) << 3) | (b1 >> 5));
                }
                format!("mp4a.40.{aot}")
            }
            CodecConfig::Opus(_) => "opus".into(),
            CodecConfig::Flac(_) => "fLaC".into(),
            CodecConfig::Ac3(_) => "ac-3".into(),
            CodecConfig::Eac3(_) => "ec-3".into(),
            CodecConfig::Mp3 => "mp4a.40.34".into(),
        })
    }

    fn is_video(&self) -> bool {
        matches!(self.kind, TrackKind::Video { .. })
    }

    fn sample_entry(&self) -> Result<Codec, MediaError> {
        let visual = |width: u16, height: u16| Visual {
            data_reference_index: 1,
            width,
            height,
            ..Visual::default()
        };
        let audio = |sample_rate: u32, channels: u16| Audio {
            data_reference_index: 1,
            channel_count: channels,
            sample_size: 16,
            // A 16.16 field: rates above 65535 Hz cannot be written and are given as 0
            // (decoders take the rate from the codec configuration).
            sample_rate: FixedPoint::new(u16::try_from(sample_rate).unwrap_or(0), 0),
        };
        let (w, h, rate, channels) = match self.kind {
            TrackKind::Video { width, height } => (width, height, 0, 0),
            TrackKind::Audio { sample_rate, channels } => (0, 0, sample_rate, channels),
        };
        Ok(match &self.codec {
            CodecConfig::Avc(r) => Codec::Avc1(Avc1 {
                visual: visual(w, h),
                avcc: decode_record::<Avcc>(r, "AVC")?,
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
                spatial: None,
            }),
            CodecConfig::Hevc(r) => Codec::Hvc1(Hvc1 {
                visual: visual(w, h),
                hvcc: decode_record::<Hvcc>(r, "HEVC")?,
                lhvc: None,
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
                ccst: None,
                spatial: None,
            }),
            CodecConfig::Av1(r) => Codec::Av01(Av01 {
                visual: visual(w, h),
                av1c: decode_record::<Av1c>(r, "AV1")?,
                btrt: None,
                ccst: None,
                colr: None,
                pasp: None,
                taic: None,
                spatial: None,
            }),
            CodecConfig::Vp9(r) => Codec::Vp09(Vp09 {
                visual: visual(w, h),
                vpcc: decode_record::<VpcC>(r, "VP9")?,
                btrt: None,
                colr: None,
                pasp: None,
                spatial: None,
            }),
            CodecConfig::Aac(asc) => Codec::Mp4a(Mp4a {
                audio: audio(rate, channels),
                esds: esds(0x40, asc.clone()),
                btrt: None,
                taic: None,
            }),
            // MP3 in ISO-BMFF is `mp4a` with object type 0x6B (MPEG-1 audio), as FFmpeg and
            // Apple write it.
            CodecConfig::Mp3 => Codec::Mp4a(Mp4a {
                audio: audio(rate, channels),
                esds: esds(0x6b, Vec::new()),
                btrt: None,
                taic: None,
            }),
            CodecConfig::Opus(o) => Codec::Opus(Opus {
                audio: audio(48_000, u16::from(o.channels)),
                dops: Dops {
                    output_channel_count: o.channels,
                    pre_skip: o.pre_skip,
                    input_sample_rate: o.input_sample_rate,
                    output_gain: o.output_gain,
                    channel_mapping: (o.mapping_family != 0).then(|| OpusChannelMapping {
                        family: o.mapping_family,
                        stream_count: o.stream_count,
                        coupled_count: o.coupled_count,
                        channel_mapping: o.channel_mapping.clone(),
                    }),
                },
                btrt: None,
            }),
            CodecConfig::Flac(info) => {
                if info.len() != 34 {
                    return Err(bad("FLAC"));
                }
                // dfLa payload: FullBox header, then the STREAMINFO metadata block marked last.
                let mut payload = vec![0, 0, 0, 0, 0x80, 0, 0, 34];
                payload.extend_from_slice(info);
                Codec::Flac(Flac {
                    audio: audio(rate, channels),
                    dfla: decode_record::<Dfla>(&payload, "FLAC")?,
                })
            }
            CodecConfig::Ac3(c) => Codec::Ac3(Ac3 {
                audio: audio(c.sample_rate(), c.channels()),
                dac3: Ac3SpecificBox {
                    fscod: c.fscod,
                    bsid: c.bsid,
                    bsmod: c.bsmod,
                    acmod: c.acmod,
                    lfeon: c.lfeon,
                    bit_rate_code: c.bit_rate_code,
                },
            }),
            CodecConfig::Eac3(c) => Codec::Eac3(Eac3 {
                audio: audio(c.sample_rate(), c.channels()),
                dec3: Ec3SpecificBox {
                    data_rate: c.data_rate,
                    substreams: vec![Ec3IndependentSubstream {
                        fscod: c.fscod,
                        bsid: c.bsid,
                        asvc: false,
                        bsmod: c.bsmod,
                        acmod: c.acmod,
                        lfeon: c.lfeon,
                        num_dep_sub: 0,
                        chan_loc: None,
                    }],
                },
            }),
        })
    }

    fn trak(&self) -> Result<Trak, MediaError> {
        let video = self.is_video();
        let (width, height) = match self.kind {
            TrackKind::Video { width, height } => (width, height),
            TrackKind::Audio { .. } => (0, 0),
        };
        Ok(Trak {
            tkhd: Tkhd {
                track_id: self.track_id,
                enabled: true,
                in_movie: true,
                alternate_group: 0,
                volume: if video {
                    FixedPoint::new(0, 0)
                } else {
                    FixedPoint::new(1, 0)
                },
                width: FixedPoint::new(width, 0),
                height: FixedPoint::new(height, 0),
                ..Tkhd::default()
            },
            mdia: Mdia {
                mdhd: Mdhd {
                    timescale: self.timescale,
                    language: "und".into(),
                    ..Mdhd::default()
                },
                hdlr: Hdlr {
                    handler: if video { b"vide".into() } else { b"soun".into() },
                    name: if video {
                        "VideoHandler".into()
                    } else {
                        "SoundHandler".into()
                    },
                },
                minf: Minf {
                    vmhd: video.then(Vmhd::default),
                    smhd: (!video).then(Smhd::default),
                    dinf: Dinf {
                        dref: Dref {
                            entries: vec![DrefEntry::Url(Url::default())],
                        },
                    },
                    stbl: Stbl {
                        stsd: Stsd {
                            codecs: vec![self.sample_entry()?],
                        },
                        stco: Some(Stco::default()),
                        ..Stbl::default()
                    },
                    ..Minf::default()
                },
            },
            ..Trak::default()
        })
    }
}

fn esds(object_type: u8, decoder_specific: Vec<u8>) -> Esds {
    Esds {
        es_desc: EsDescriptor {
            es_id: 0,
            dec_config: DecoderConfig {
                object_type_indication: object_type,
                stream_type: 5, // audio
                up_stream: 0,
                dec_specific: (!decoder_specific.is_empty()).then(|| DecoderSpecific {
                    raw: decoder_specific,
                    ..DecoderSpecific::default()
                }),
                ..DecoderConfig::default()
            },
            ..EsDescriptor::default()
        },
    }
}

/// The init segment of `tracks`: `ftyp` and a `moov` with no samples and an `mvex`, as CMAF
/// requires.
pub fn init_segment(tracks: &[TrackConfig]) -> Result<Vec<u8>, MediaError> {
    let mut out = Vec::with_capacity(1024);
    Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    }
    .encode(&mut out)?;
    let traks = tracks.iter().map(TrackConfig::trak).collect::<Result<Vec<_>, _>>()?;
    Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: FixedPoint::new(1, 0),
            volume: FixedPoint::new(1, 0),
            next_track_id: tracks.iter().map(|t| t.track_id).max().unwrap_or(0) + 1,
            ..Mvhd::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: tracks
                .iter()
                .map(|t| Trex {
                    track_id: t.track_id,
                    default_sample_description_index: 1,
                    ..Trex::default()
                })
                .collect(),
        }),
        trak: traks,
        ..Moov::default()
    }
    .encode(&mut out)?;
    Ok(out)
}

/// Bytes a fragment of these runs takes in `mdat`.
fn data_len(runs: &[TrackRun<'_>]) -> usize {
    runs.iter().flat_map(|r| &r.samples).map(|s| s.data.len()).sum()
}

/// One fragment (`moof` + `mdat`) holding `runs`, each track's samples contiguous in `mdat`
/// in the order of `runs`. `sequence_number` must increase from one fragment to the next.
pub fn fragment(sequence_number: u32, runs: &[TrackRun<'_>]) -> Result<Vec<u8>, MediaError> {
    let moof_with = |offsets: &[i32]| -> Result<Moof, MediaError> {
        let mut traf = Vec::with_capacity(runs.len());
        for (run, offset) in runs.iter().zip(offsets) {
            let entries = run
                .samples
                .iter()
                .map(|s| {
                    Ok(TrunEntry {
                        duration: Some(s.duration),
                        size: Some(u32::try_from(s.data.len()).map_err(|_| MediaError::BadSample("too large"))?),
                        flags: Some(if s.keyframe { FLAGS_SYNC } else { FLAGS_NON_SYNC }),
                        cts: Some(i64::from(s.composition_offset)),
                    })
                })
                .collect::<Result<Vec<_>, MediaError>>()?;
            traf.push(Traf {
                tfhd: Tfhd {
                    track_id: run.track_id,
                    default_base_is_moof: true,
                    ..Tfhd::default()
                },
                tfdt: Some(Tfdt {
                    base_media_decode_time: run.base_decode_time,
                }),
                trun: vec![Trun {
                    data_offset: Some(*offset),
                    samples: entries.into(),
                }],
                ..Traf::default()
            });
        }
        Ok(Moof {
            mfhd: Mfhd { sequence_number },
            traf,
        })
    };
    // The moof's size does not depend on the offset values, so measure it with zeros first.
    let mut probe = Vec::new();
    moof_with(&vec![0; runs.len()])?.encode(&mut probe)?;
    let mdat_payload = data_len(runs);
    let mdat_header = 8;
    let mut offsets = Vec::with_capacity(runs.len());
    let mut at = probe.len() + mdat_header;
    for run in runs {
        offsets.push(i32::try_from(at).map_err(|_| MediaError::BadSample("fragment too large"))?);
        at += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    let mut out = Vec::with_capacity(probe.len() + mdat_header + mdat_payload);
    moof_with(&offsets)?.encode(&mut out)?;
    let mdat_size =
        u32::try_from(mdat_header + mdat_payload).map_err(|_| MediaError::BadSample("fragment too large"))?;
    out.extend_from_slice(&mdat_size.to_be_bytes());
    out.extend_from_slice(b"mdat");
    for s in runs.iter().flat_map(|r| &r.samples) {
        out.extend_from_slice(s.data);
    }
    Ok(out)
}

/// An avcC for 1280x720 High@3.1 as x264 writes it (one SPS, one PPS).
#[cfg(test)]
pub(crate) const TEST_AVCC: &[u8] = &[
    0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01,
    0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60, 0x01, 0x00, 0x06, 0x68,
    0xeb, 0xe3, 0xcb, 0x22, 0xc0,
];

#[cfg(test)]
mod tests {
    use super::*;

    use super::TEST_AVCC as AVCC;

    fn track(codec: CodecConfig, kind: TrackKind) -> TrackConfig {
        TrackConfig {
            track_id: 1,
            timescale: 90_000,
            kind,
            codec,
        }
    }

    #[test]
    fn codec_strings_follow_rfc_6381() {
        let video = TrackKind::Video {
            width: 640,
            height: 360,
        };
        let audio = TrackKind::Audio {
            sample_rate: 48_000,
            channels: 2,
        };
        let hvcc = [
            0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5d, 0xf0, 0x00, 0xfc, 0xfd, 0xf8,
            0xf8, 0x00, 0x00, 0x0f, 0x00,
        ];
        let cases: Vec<(&str, CodecConfig, TrackKind, &str)> = vec![
            ("h264 high 3.1", CodecConfig::Avc(AVCC.to_vec()), video, "avc1.64001f"),
            (
                "hevc main 3.1",
                CodecConfig::Hevc(hvcc.to_vec()),
                video,
                "hvc1.1.6.L93.B0",
            ),
            (
                "av1 main 3.0 8 bit",
                CodecConfig::Av1(vec![0x81, 0x04, 0x0c, 0x00]),
                video,
                "av01.0.04M.08",
            ),
            (
                "vp9 profile 0 level 3.1",
                CodecConfig::Vp9(vec![1, 0, 0, 0, 0, 31, 0x80, 0x02, 0x02, 0x02, 0, 0]),
                video,
                "vp09.00.31.08",
            ),
            ("aac lc", CodecConfig::Aac(vec![0x11, 0x90]), audio, "mp4a.40.2"),
            (
                "he-aac",
                CodecConfig::Aac(vec![0x2b, 0x92, 0x08, 0x00]),
                audio,
                "mp4a.40.5",
            ),
            ("mp3", CodecConfig::Mp3, audio, "mp4a.40.34"),
            ("flac", CodecConfig::Flac(vec![0; 34]), audio, "fLaC"),
        ];
        for (name, codec, kind, want) in cases {
            assert_eq!(track(codec, kind).codec_string().unwrap(), want, "{name}");
        }
    }

    #[test]
    fn fragment_offsets_point_at_each_tracks_samples() {
        let v = [1u8, 2, 3, 4, 5];
        let a = [9u8, 9];
        let runs = vec![
            TrackRun {
                track_id: 1,
                base_decode_time: 90_000,
                samples: vec![Sample {
                    duration: 3000,
                    composition_offset: 0,
                    keyframe: true,
                    data: &v,
                }],
            },
            TrackRun {
                track_id: 2,
                base_decode_time: 48_000,
                samples: vec![Sample {
                    duration: 1024,
                    composition_offset: 0,
                    keyframe: true,
                    data: &a,
                }],
            },
        ];
        let f = fragment(7, &runs).unwrap();
        let mut buf = &f[..];
        let moof = <Moof as mp4_atom::Decode>::decode(&mut buf).unwrap();
        assert_eq!(moof.mfhd.sequence_number, 7);
        let off: Vec<usize> = moof
            .traf
            .iter()
            .map(|t| t.trun[0].data_offset.unwrap() as usize)
            .collect();
        assert_eq!(&f[off[0]..off[0] + 5], &v);
        assert_eq!(&f[off[1]..off[1] + 2], &a);
        assert_eq!(&f[off[0] - 4..off[0]], b"mdat");
        assert_eq!(moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time, 90_000);
    }

    #[test]
    fn malformed_records_are_errors() {
        let video = TrackKind::Video { width: 1, height: 1 };
        for codec in [
            CodecConfig::Avc(vec![1, 2]),
            CodecConfig::Hevc(vec![1]),
            CodecConfig::Av1(vec![]),
            CodecConfig::Vp9(vec![1, 0]),
        ] {
            assert!(init_segment(&[track(codec, video)]).is_err());
        }
    }
}
