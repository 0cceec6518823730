//! Faststart MP4 (`ftyp`, `moov` with complete sample tables, then one `mdat`) from a
//! fragmented MP4 as [`crate::fmp4`] writes it.
//!
//! Recordings are written as fMP4 while live, so a crash loses at most the last fragment;
//! when a recording closes (or a restarted server finds one left behind) it is rewritten
//! into a plain MP4 whose `moov` comes first, which every player starts at once.
//!
//! Sans-IO: the caller walks the file's top-level boxes ([`box_header`]), hands the `moov`
//! and each `moof` to an [`Index`] together with where they lie, and announces each `mdat`
//! by position only. [`Index::finish`] returns the bytes that start the new file and the
//! ranges of the old file to copy after them, in order. A fragment whose `mdat` is missing or
//! cut short (the one a crash interrupted) is left out.

use mp4_atom::{
    Co64, Ctts, CttsEntry, Decode, Edts, Elst, ElstEntry, Encode, FixedPoint, Ftyp, Moof, Moov, Stsc, StscEntry, Stss,
    Stsz, StszSamples, Stts, SttsEntry,
};

use crate::MediaError;

/// Longest `moov` or `moof` accepted (they hold box trees, not media).
pub const MAX_META_BOX: u64 = 64 << 20;

/// A top-level box: its type, where its body starts and how long the whole box is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxHeader {
    pub kind: [u8; 4],
    /// Bytes of the header (8, or 16 with a 64-bit size).
    pub header_len: u64,
    /// Bytes of the whole box, header included; `None`: it runs to the end of the file.
    pub size: Option<u64>,
}

/// Reads a box header from the start of `bytes` (give at least 16 bytes when there are);
/// `Ok(None)`: too few bytes for a header.
pub fn box_header(bytes: &[u8]) -> Result<Option<BoxHeader>, MediaError> {
    let Some(head) = bytes.get(..8) else {
        return Ok(None);
    };
    let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let kind = [head[4], head[5], head[6], head[7]];
    let (header_len, size) = match size32 {
        0 => (8, None),
        1 => {
            let Some(ext) = bytes.get(8..16) else {
                return Ok(None);
            };
            let mut b = [0u8; 8];
            b.copy_from_slice(ext);
            (16, Some(u64::from_be_bytes(b)))
        }
        n => (8, Some(u64::from(n))),
    };
    if size.is_some_and(|s| s < header_len) {
        return Err(MediaError::BadSample("box smaller than its header"));
    }
    Ok(Some(BoxHeader { kind, header_len, size }))
}

#[derive(Debug, Clone, Copy)]
struct SampleInfo {
    size: u32,
    duration: u32,
    cts: i64,
    sync: bool,
}

/// One run of one track's samples, contiguous in the source file.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    track: usize,
    /// Where the samples start in the source file.
    offset: u64,
    len: u64,
    first_sample: usize,
    count: usize,
}

#[derive(Debug, Default)]
struct TrackIndex {
    track_id: u32,
    timescale: u32,
    /// Decode time of the first sample (its `tfdt`), in the track's timescale.
    first_dts: Option<u64>,
    samples: Vec<SampleInfo>,
}

/// What to write: `head` (ftyp, moov and the mdat header), then these ranges of the source.
#[derive(Debug)]
pub struct Faststart {
    pub head: Vec<u8>,
    pub copies: Vec<(u64, u64)>,
    /// Longest track, in seconds.
    pub duration_secs: f64,
}

/// The sample tables of a fragmented MP4, gathered box by box.
#[derive(Debug, Default)]
pub struct Index {
    init: Option<Moov>,
    tracks: Vec<TrackIndex>,
    chunks: Vec<Chunk>,
    /// Chunks of the last `moof`, waiting for their `mdat`.
    pending: Vec<Chunk>,
    pending_samples: Vec<(usize, Vec<SampleInfo>)>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// The init segment's `moov` (the whole box).
    pub fn push_moov(&mut self, bytes: &[u8]) -> Result<(), MediaError> {
        let moov = Moov::decode(&mut &bytes[..])?;
        self.tracks = moov
            .trak
            .iter()
            .map(|t| TrackIndex {
                track_id: t.tkhd.track_id,
                timescale: t.mdia.mdhd.timescale.max(1),
                ..TrackIndex::default()
            })
            .collect();
        self.init = Some(moov);
        Ok(())
    }

    /// A `moof` (the whole box) found at `offset` in the source.
    pub fn push_moof(&mut self, offset: u64, bytes: &[u8]) -> Result<(), MediaError> {
        self.pending.clear();
        self.pending_samples.clear();
        let moof = Moof::decode(&mut &bytes[..])?;
        for traf in &moof.traf {
            let Some(track) = self.tracks.iter().position(|t| t.track_id == traf.tfhd.track_id) else {
                return Err(MediaError::BadSample("fragment of an unknown track"));
            };
            if self.tracks[track].first_dts.is_none() && self.tracks[track].samples.is_empty() {
                self.tracks[track].first_dts = Some(traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time));
            }
            let base = match traf.tfhd.base_data_offset {
                Some(b) => b,
                None if traf.tfhd.default_base_is_moof => offset,
                None => return Err(MediaError::BadSample("fragment without a data base")),
            };
            for trun in &traf.trun {
                let mut samples = Vec::with_capacity(trun.samples.len());
                let mut len = 0u64;
                for e in trun.samples.iter() {
                    let size = e.size.or(traf.tfhd.default_sample_size).unwrap_or(0);
                    let flags = e.flags.or(traf.tfhd.default_sample_flags).unwrap_or(0);
                    len += u64::from(size);
                    samples.push(SampleInfo {
                        size,
                        duration: e.duration.or(traf.tfhd.default_sample_duration).unwrap_or(0),
                        cts: e.cts.unwrap_or(0),
                        // sample_is_non_sync_sample clear.
                        sync: flags & 0x0001_0000 == 0,
                    });
                }
                let data_offset = i64::from(trun.data_offset.unwrap_or(0));
                let start = base
                    .checked_add_signed(data_offset)
                    .ok_or(MediaError::BadSample("data offset"))?;
                self.pending.push(Chunk {
                    track,
                    offset: start,
                    len,
                    first_sample: 0,
                    count: samples.len(),
                });
                self.pending_samples.push((track, samples));
            }
        }
        Ok(())
    }

    /// An `mdat` whose bytes lie at `offset..offset + size` of the source (as much as the file
    /// has): the previous `moof`'s runs inside it are kept.
    pub fn push_mdat(&mut self, offset: u64, size: u64) {
        let end = offset.saturating_add(size);
        let pending = std::mem::take(&mut self.pending);
        let samples = std::mem::take(&mut self.pending_samples);
        for (mut chunk, (track, samples)) in pending.into_iter().zip(samples) {
            if chunk.offset < offset || chunk.offset + chunk.len > end || chunk.count == 0 {
                continue;
            }
            let t = &mut self.tracks[track];
            chunk.first_sample = t.samples.len();
            t.samples.extend(samples);
            self.chunks.push(chunk);
        }
    }

    /// Samples indexed so far, all tracks.
    pub fn sample_count(&self) -> usize {
        self.tracks.iter().map(|t| t.samples.len()).sum()
    }

    /// The faststart layout: sample tables for every complete fragment.
    pub fn finish(&self) -> Result<Faststart, MediaError> {
        let Some(init) = &self.init else {
            return Err(MediaError::BadSample("no moov"));
        };
        let data_len: u64 = self.chunks.iter().map(|c| c.len).sum();
        let mdat_header: u64 = if data_len + 8 > u64::from(u32::MAX) { 16 } else { 8 };
        // The moov's size does not depend on the offsets (co64 entries are fixed size): build
        // it with zeros, measure, then again with the real offsets.
        let probe = self.moov(init, 0)?;
        let mut head = Vec::new();
        ftyp().encode(&mut head)?;
        let data_start = head.len() as u64 + probe.len() as u64 + mdat_header;
        head.extend_from_slice(&self.moov(init, data_start)?);
        if mdat_header == 16 {
            head.extend_from_slice(&1u32.to_be_bytes());
            head.extend_from_slice(b"mdat");
            head.extend_from_slice(&(data_len + 16).to_be_bytes());
        } else {
            head.extend_from_slice(&((data_len + 8) as u32).to_be_bytes());
            head.extend_from_slice(b"mdat");
        }
        let duration_secs = self
            .tracks
            .iter()
            .map(|t| (self.track_duration(t) + self.start_offset(t)) as f64 / f64::from(t.timescale))
            .fold(0.0, f64::max);
        Ok(Faststart {
            head,
            copies: self.chunks.iter().map(|c| (c.offset, c.len)).collect(),
            duration_secs,
        })
    }

    fn track_duration(&self, t: &TrackIndex) -> u64 {
        t.samples.iter().map(|s| u64::from(s.duration)).sum()
    }

    /// How much later than the earliest track this track starts, in its own timescale.
    fn start_offset(&self, t: &TrackIndex) -> u64 {
        let secs = |t: &TrackIndex| t.first_dts.unwrap_or(0) as f64 / f64::from(t.timescale);
        let earliest = self
            .tracks
            .iter()
            .filter(|t| !t.samples.is_empty())
            .map(secs)
            .fold(f64::INFINITY, f64::min);
        if !earliest.is_finite() {
            return 0;
        }
        ((secs(t) - earliest).max(0.0) * f64::from(t.timescale)).round() as u64
    }

    fn moov(&self, init: &Moov, data_start: u64) -> Result<Vec<u8>, MediaError> {
        let mut moov = init.clone();
        moov.mvex = None;
        const MOVIE_TIMESCALE: u32 = 1000;
        moov.mvhd.timescale = MOVIE_TIMESCALE;
        let mut movie_duration = 0u64;
        // Each chunk's offset in the new file: chunks are written in source order.
        let mut offsets = Vec::with_capacity(self.chunks.len());
        let mut at = data_start;
        for c in &self.chunks {
            offsets.push(at);
            at += c.len;
        }
        moov.trak.retain(|trak| {
            self.tracks
                .iter()
                .any(|t| t.track_id == trak.tkhd.track_id && !t.samples.is_empty())
        });
        for trak in &mut moov.trak {
            let Some(ti) = self.tracks.iter().position(|t| t.track_id == trak.tkhd.track_id) else {
                continue;
            };
            let t = &self.tracks[ti];
            let duration = self.track_duration(t);
            let offset = self.start_offset(t);
            let to_movie = |ticks: u64| ticks * u64::from(MOVIE_TIMESCALE) / u64::from(t.timescale);
            movie_duration = movie_duration.max(to_movie(duration + offset));
            trak.tkhd.duration = to_movie(duration);
            trak.mdia.mdhd.duration = duration;
            let mut entries = Vec::new();
            if offset > 0 {
                entries.push(ElstEntry {
                    segment_duration: to_movie(offset),
                    media_time: None,
                    media_rate: FixedPoint::new(1, 0),
                });
            }
            // Presentation starts at the first sample's composition time (B-frames put it
            // after 0): players look for a keyframe at that time.
            let first_pts = t.samples.first().map_or(0, |s| s.cts.max(0) as u64);
            entries.push(ElstEntry {
                segment_duration: to_movie(duration),
                media_time: Some(first_pts),
                media_rate: FixedPoint::new(1, 0),
            });
            trak.edts = Some(Edts {
                elst: Some(Elst { entries }),
            });
            let stbl = &mut trak.mdia.minf.stbl;
            stbl.stts = Stts {
                entries: run_lengths(t.samples.iter().map(|s| s.duration))
                    .map(|(sample_count, sample_delta)| SttsEntry {
                        sample_count,
                        sample_delta,
                    })
                    .collect(),
            };
            stbl.ctts = t.samples.iter().any(|s| s.cts != 0).then(|| Ctts {
                entries: run_lengths(t.samples.iter().map(|s| s.cts))
                    .map(|(sample_count, sample_offset)| CttsEntry {
                        sample_count,
                        sample_offset,
                    })
                    .collect(),
            });
            stbl.stss = t.samples.iter().any(|s| !s.sync).then(|| Stss {
                entries: t
                    .samples
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.sync)
                    .map(|(i, _)| i as u32 + 1)
                    .collect(),
            });
            stbl.stsz = Stsz {
                samples: StszSamples::Different {
                    sizes: t.samples.iter().map(|s| s.size).collect(),
                },
            };
            let mine: Vec<(usize, &Chunk)> = self.chunks.iter().enumerate().filter(|(_, c)| c.track == ti).collect();
            let mut stsc = Vec::new();
            for (n, (_, c)) in mine.iter().enumerate() {
                if stsc
                    .last()
                    .is_none_or(|e: &StscEntry| e.samples_per_chunk != c.count as u32)
                {
                    stsc.push(StscEntry {
                        first_chunk: n as u32 + 1,
                        samples_per_chunk: c.count as u32,
                        sample_description_index: 1,
                    });
                }
            }
            stbl.stsc = Stsc { entries: stsc };
            stbl.stco = None;
            stbl.co64 = Some(Co64 {
                entries: mine.iter().map(|(i, _)| offsets[*i]).collect(),
            });
        }
        moov.mvhd.duration = movie_duration;
        let mut out = Vec::new();
        moov.encode(&mut out)?;
        Ok(out)
    }
}

fn ftyp() -> Ftyp {
    Ftyp {
        major_brand: b"isom".into(),
        minor_version: 512,
        compatible_brands: vec![b"isom".into(), b"iso2".into(), b"mp41".into()],
    }
}

/// (count, value) for each run of equal values.
fn run_lengths<T: PartialEq + Copy>(values: impl Iterator<Item = T>) -> impl Iterator<Item = (u32, T)> {
    let mut runs: Vec<(u32, T)> = Vec::new();
    for v in values {
        match runs.last_mut() {
            Some((n, last)) if *last == v => *n += 1,
            _ => runs.push((1, v)),
        }
    }
    runs.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::{self, CodecConfig, Sample, TrackConfig, TrackKind, TrackRun, TEST_AVCC};

    fn source(fragments: usize) -> Vec<u8> {
        let tracks = [TrackConfig {
            track_id: 1,
            timescale: 90_000,
            kind: TrackKind::Video {
                width: 1280,
                height: 720,
            },
            codec: CodecConfig::Avc(TEST_AVCC.to_vec()),
        }];
        let mut out = fmp4::init_segment(&tracks).unwrap();
        for f in 0..fragments {
            let data = [f as u8; 10];
            let samples = (0..3)
                .map(|i| Sample {
                    duration: 3000,
                    composition_offset: 0,
                    keyframe: i == 0,
                    data: &data[..4 + i],
                })
                .collect();
            let run = TrackRun {
                track_id: 1,
                base_decode_time: f as u64 * 9000,
                samples,
            };
            out.extend(fmp4::fragment(f as u32 + 1, &[run]).unwrap());
        }
        out
    }

    fn index(file: &[u8]) -> Index {
        let mut idx = Index::new();
        let mut at = 0usize;
        while let Some(h) = box_header(&file[at..]).unwrap() {
            let size = h.size.map_or(file.len() - at, |s| s as usize);
            let end = (at + size).min(file.len());
            match &h.kind {
                b"moov" => idx.push_moov(&file[at..end]).unwrap(),
                b"moof" if at + size <= file.len() => idx.push_moof(at as u64, &file[at..end]).unwrap(),
                b"mdat" => idx.push_mdat(at as u64, (end - at) as u64),
                _ => {}
            }
            at = end;
        }
        idx
    }

    #[test]
    fn samples_are_copied_in_order_after_a_moov_that_comes_first() {
        let file = source(3);
        let f = index(&file).finish().unwrap();
        let mut out = f.head.clone();
        for (o, l) in &f.copies {
            out.extend_from_slice(&file[*o as usize..(*o + *l) as usize]);
        }
        let kinds: Vec<[u8; 4]> = {
            let mut at = 0;
            let mut v = Vec::new();
            while let Some(h) = box_header(&out[at..]).unwrap() {
                v.push(h.kind);
                at += h.size.unwrap() as usize;
            }
            v
        };
        assert_eq!(kinds, [*b"ftyp", *b"moov", *b"mdat"]);
        let moov_at = box_header(&out).unwrap().unwrap().size.unwrap() as usize;
        let moov = Moov::decode(&mut &out[moov_at..]).unwrap();
        let stbl = &moov.trak[0].mdia.minf.stbl;
        assert_eq!(stbl.stss.as_ref().unwrap().entries, vec![1, 4, 7]);
        let first = stbl.co64.as_ref().unwrap().entries[0] as usize;
        assert_eq!(&out[first..first + 4], &[0, 0, 0, 0], "first sample of fragment 0");
        assert!((f.duration_secs - 0.3).abs() < 1e-9, "{}", f.duration_secs);
    }

    #[test]
    fn a_fragment_cut_short_by_a_crash_is_left_out() {
        let whole = source(3);
        let cut = &whole[..whole.len() - 3];
        let idx = index(cut);
        assert_eq!(idx.sample_count(), 6);
        assert!(idx.finish().is_ok());
    }

    #[test]
    fn box_headers_need_enough_bytes_and_a_sane_size() {
        assert_eq!(box_header(&[0, 0, 0]).unwrap(), None);
        assert!(box_header(&[0, 0, 0, 4, b'f', b'r', b'e', b'e']).is_err());
        let h = box_header(&[0, 0, 0, 1, b'm', b'd', b'a', b't', 0, 0, 0, 0, 0, 0, 0, 32])
            .unwrap()
            .unwrap();
        assert_eq!((h.header_len, h.size), (16, Some(32)));
    }
}
