//! From hub frames to the bytes of one recording file (sans-IO): FLV tags as published, or
//! fMP4 (an init segment, then one `moof`+`mdat` fragment per `fragment_ms`) through the
//! writer the HLS segmenter uses. Bytes come out only at flush points, so the caller writes
//! (and fsyncs) whole fragments and a crash leaves complete boxes on disk.

use std::sync::Arc;

use bytes::Bytes;
use ferrocast_media::fmp4::{self, Sample, TrackConfig, TrackRun};
use ferrocast_media::MediaError;

use crate::codec::flv;
use crate::codec::media::PacketKind;
use crate::config::RecordFormat;
use crate::hls::track::{self, ms_to_ticks, TrackSetup, Unwrap};
use crate::hub::{FrameKind, MediaFrame};

/// What a new file starts with: the stream's metadata and sequence headers.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    pub metadata: Option<Arc<MediaFrame>>,
    pub video: Option<Arc<MediaFrame>>,
    pub audio: Option<Arc<MediaFrame>>,
    /// The audio configuration (from the sequence header, or a frame for codecs without one).
    pub audio_setup: Option<TrackSetup>,
    /// The audio codec, seen in any audio message (G.711 has no setup MP4 can carry).
    pub audio_codec: Option<crate::codec::media::FourCc>,
}

impl Headers {
    /// Takes in a header frame; true when it changed a configuration already set (the
    /// file being written no longer describes the stream).
    pub fn update(&mut self, f: &Arc<MediaFrame>) -> bool {
        if f.multitrack {
            return false;
        }
        if f.kind == FrameKind::Audio && matches!(f.packet, PacketKind::SequenceHeader | PacketKind::Frame) {
            self.audio_codec = Some(f.codec);
        }
        match (f.kind, f.packet) {
            (FrameKind::Data, _) => {
                self.metadata = Some(f.clone());
                false
            }
            (FrameKind::Video, PacketKind::SequenceHeader) => {
                let changed = self.video.as_ref().is_some_and(|v| v.payload != f.payload);
                self.video = Some(f.clone());
                changed
            }
            (FrameKind::Audio, PacketKind::SequenceHeader) => {
                let changed = self.audio.as_ref().is_some_and(|a| a.payload != f.payload);
                self.audio = Some(f.clone());
                self.audio_setup = track::audio_setup(f);
                changed
            }
            (FrameKind::Audio, PacketKind::Frame) if !track::audio_has_sequence_header(f.codec) => {
                let setup = track::audio_setup(f);
                let changed = self.audio_setup.is_some() && setup.is_some() && self.audio_setup != setup;
                if setup.is_some() {
                    self.audio_setup = setup;
                }
                changed
            }
            _ => false,
        }
    }

    /// Codec names of the tracks (`h264`, `aac`, ...), as ffprobe names them. `in_mp4`:
    /// only the audio an (f)MP4 file can carry.
    pub fn codecs(&self, in_mp4: bool) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(f) = &self.video {
            v.push(f.codec.name().to_string());
        }
        if let Some(c) = self.audio_codec.filter(|_| !in_mp4 || self.audio_setup.is_some()) {
            v.push(c.name().to_string());
        }
        v
    }
}

/// One file being written.
pub enum Writer {
    Flv(FlvWriter),
    Fmp4(Fmp4Writer),
}

impl Writer {
    /// A file starting at `first` (a video keyframe, or for audio-only streams an audio
    /// frame); its start bytes are appended to `out`.
    pub fn start(
        format: RecordFormat,
        headers: &Headers,
        first_ms: u32,
        fragment_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<Writer, MediaError> {
        Ok(match format {
            RecordFormat::Flv => Writer::Flv(FlvWriter::start(headers, first_ms, fragment_ms, out)),
            RecordFormat::Mp4 | RecordFormat::Fmp4 => {
                Writer::Fmp4(Fmp4Writer::start(headers, first_ms, fragment_ms, out)?)
            }
        })
    }

    /// Adds a frame; bytes due for the disk are appended to `out`.
    pub fn push(&mut self, f: &MediaFrame, out: &mut Vec<u8>) -> Result<(), MediaError> {
        match self {
            Writer::Flv(w) => {
                w.push(f, out);
                Ok(())
            }
            Writer::Fmp4(w) => w.push(f, out),
        }
    }

    /// Ends the file: everything still held is appended to `out`. `next_video_ms`: the
    /// timestamp of the keyframe that starts the next file (gives the last frame its length).
    pub fn finish(&mut self, next_video_ms: Option<u32>, out: &mut Vec<u8>) -> Result<(), MediaError> {
        match self {
            Writer::Flv(w) => {
                w.finish(out);
                Ok(())
            }
            Writer::Fmp4(w) => w.finish(next_video_ms, out),
        }
    }

    /// Media seconds written so far.
    pub fn duration_secs(&self) -> f64 {
        match self {
            Writer::Flv(w) => w.duration_ms() as f64 / 1000.0,
            Writer::Fmp4(w) => w.duration_secs(),
        }
    }

    /// Milliseconds from the file's first frame to `ms` (a frame's timestamp).
    pub fn elapsed_ms(&self, ms: u32) -> i64 {
        let first = match self {
            Writer::Flv(w) => w.base,
            Writer::Fmp4(w) => w.base,
        };
        i64::from(ms.wrapping_sub(first) as i32)
    }
}

/// FLV: the file header, the metadata and sequence headers, then every tag as published with
/// timestamps counted from the file's start.
pub struct FlvWriter {
    base: u32,
    fragment_ms: u64,
    buf: Vec<u8>,
    buffered_from: Option<u32>,
    last_ts: u32,
}

impl FlvWriter {
    fn start(headers: &Headers, first_ms: u32, fragment_ms: u64, out: &mut Vec<u8>) -> FlvWriter {
        let has_audio = headers.audio.is_some() || headers.audio_setup.is_some();
        out.extend_from_slice(&flv::header(has_audio, headers.video.is_some()));
        for f in [&headers.metadata, &headers.video, &headers.audio]
            .into_iter()
            .flatten()
        {
            out.extend_from_slice(&tag(f, 0));
        }
        FlvWriter {
            base: first_ms,
            fragment_ms,
            buf: Vec::new(),
            buffered_from: None,
            last_ts: 0,
        }
    }

    fn push(&mut self, f: &MediaFrame, out: &mut Vec<u8>) {
        if f.multitrack {
            return;
        }
        let ts = f.timestamp.wrapping_sub(self.base);
        // Frames from before the file's first keyframe (audio of the cached GOP) are dropped.
        if (ts as i32) < 0 {
            return;
        }
        self.last_ts = self.last_ts.max(ts);
        self.buf.extend_from_slice(&tag(f, ts));
        let from = *self.buffered_from.get_or_insert(ts);
        if u64::from(ts.saturating_sub(from)) >= self.fragment_ms || self.buf.len() >= 4 << 20 {
            out.append(&mut self.buf);
            self.buffered_from = None;
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.buf);
    }

    fn duration_ms(&self) -> u32 {
        self.last_ts
    }
}

fn tag(f: &MediaFrame, ts: u32) -> Bytes {
    let tag_type = match f.kind {
        FrameKind::Audio => flv::TAG_AUDIO,
        FrameKind::Video => flv::TAG_VIDEO,
        FrameKind::Data => flv::TAG_SCRIPT,
    };
    flv::encode_tag(tag_type, ts, &f.payload)
}

#[derive(Debug)]
struct Held {
    ticks: i64,
    cts: i32,
    keyframe: bool,
    data: Bytes,
}

/// One track of an fMP4 file.
struct Fmp4Track {
    id: u32,
    kind: FrameKind,
    timescale: u32,
    unwrap: Unwrap,
    held: Option<Held>,
    /// Samples with known durations, not yet in a fragment.
    ready: Vec<(Held, u32)>,
    /// Decode time of `ready[0]`.
    ready_start: Option<i64>,
    last_duration: u32,
    /// Decode time where the last written sample ends.
    end: i64,
}

impl Fmp4Track {
    fn new(id: u32, kind: FrameKind, timescale: u32) -> Fmp4Track {
        Fmp4Track {
            id,
            kind,
            timescale,
            unwrap: Unwrap::default(),
            held: None,
            ready: Vec::new(),
            ready_start: None,
            last_duration: 0,
            end: 0,
        }
    }

    /// Closes the held sample with the decode time of the one after it.
    fn close_held(&mut self, next_ticks: Option<i64>) {
        let Some(h) = self.held.take() else { return };
        let fallback = if self.last_duration > 0 {
            self.last_duration
        } else {
            match self.kind {
                FrameKind::Video => self.timescale / 25,
                _ => 1024,
            }
        };
        let duration = next_ticks
            .map(|n| n - h.ticks)
            .filter(|d| *d > 0 && *d < i64::from(u32::MAX))
            .map_or(fallback, |d| d as u32);
        self.last_duration = duration;
        self.ready_start.get_or_insert(h.ticks);
        self.end = h.ticks + i64::from(duration);
        self.ready.push((h, duration));
    }
}

/// fMP4: init segment at start, a fragment every `fragment_ms`, timestamps from 0.
pub struct Fmp4Writer {
    base: u32,
    base_ext: i64,
    fragment_ms: i64,
    tracks: Vec<Fmp4Track>,
    sequence: u32,
    fragment_start_ms: i64,
}

impl Fmp4Writer {
    fn start(headers: &Headers, first_ms: u32, fragment_ms: u64, out: &mut Vec<u8>) -> Result<Fmp4Writer, MediaError> {
        let mut setups: Vec<(FrameKind, TrackSetup)> = Vec::new();
        if let Some(v) = &headers.video {
            setups.push((
                FrameKind::Video,
                track::video_setup(v, None).ok_or(MediaError::BadConfig("video"))?,
            ));
        }
        if let Some(a) = &headers.audio_setup {
            setups.push((FrameKind::Audio, a.clone()));
        }
        if setups.is_empty() {
            return Err(MediaError::BadConfig("no track"));
        }
        let configs: Vec<TrackConfig> = setups
            .iter()
            .enumerate()
            .map(|(i, (_, s))| TrackConfig {
                track_id: i as u32 + 1,
                timescale: s.timescale,
                kind: s.kind,
                codec: s.codec.clone(),
            })
            .collect();
        out.extend_from_slice(&fmp4::init_segment(&configs)?);
        let mut base_unwrap = Unwrap::default();
        let base_ext = base_unwrap.extend(first_ms);
        Ok(Fmp4Writer {
            base: first_ms,
            base_ext,
            fragment_ms: fragment_ms as i64,
            tracks: setups
                .iter()
                .zip(&configs)
                .map(|((kind, _), c)| {
                    let mut t = Fmp4Track::new(c.track_id, *kind, c.timescale);
                    t.unwrap.extend(first_ms);
                    t
                })
                .collect(),
            sequence: 0,
            fragment_start_ms: 0,
        })
    }

    fn push(&mut self, f: &MediaFrame, out: &mut Vec<u8>) -> Result<(), MediaError> {
        let Some(t) = self.tracks.iter_mut().find(|t| t.kind == f.kind) else {
            return Ok(());
        };
        let Some(data) = track::sample_data(f) else {
            return Ok(());
        };
        let ms = t.unwrap.extend(f.timestamp) - self.base_ext;
        if ms < 0 {
            return Ok(());
        }
        let ticks = ms_to_ticks(ms, t.timescale);
        t.close_held(Some(ticks));
        t.held = Some(Held {
            ticks,
            cts: ms_to_ticks(i64::from(f.composition_offset), t.timescale) as i32,
            keyframe: f.keyframe || f.kind != FrameKind::Video,
            data,
        });
        if ms - self.fragment_start_ms >= self.fragment_ms {
            self.fragment_start_ms = ms;
            self.flush(out)?;
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), MediaError> {
        let runs: Vec<TrackRun<'_>> = self
            .tracks
            .iter()
            .filter(|t| !t.ready.is_empty())
            .map(|t| TrackRun {
                track_id: t.id,
                base_decode_time: t.ready_start.unwrap_or(0).max(0) as u64,
                samples: t
                    .ready
                    .iter()
                    .map(|(h, d)| Sample {
                        duration: *d,
                        composition_offset: h.cts,
                        keyframe: h.keyframe,
                        data: &h.data,
                    })
                    .collect(),
            })
            .collect();
        if runs.is_empty() {
            return Ok(());
        }
        self.sequence += 1;
        out.extend_from_slice(&fmp4::fragment(self.sequence, &runs)?);
        for t in &mut self.tracks {
            t.ready.clear();
            t.ready_start = None;
        }
        Ok(())
    }

    fn finish(&mut self, next_video_ms: Option<u32>, out: &mut Vec<u8>) -> Result<(), MediaError> {
        for t in &mut self.tracks {
            let next = match (t.kind, next_video_ms) {
                (FrameKind::Video, Some(ms)) => {
                    let ms = t.unwrap.extend(ms) - self.base_ext;
                    Some(ms_to_ticks(ms, t.timescale))
                }
                _ => None,
            };
            t.close_held(next);
        }
        self.flush(out)
    }

    fn duration_secs(&self) -> f64 {
        self.tracks
            .iter()
            .map(|t| t.end as f64 / f64::from(t.timescale))
            .fold(0.0, f64::max)
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Writer::Flv(_) => "Writer::Flv",
            Writer::Fmp4(_) => "Writer::Fmp4",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::media::FourCc;
    use ferrocast_media::faststart::{box_header, Index};

    /// An avcC for 1280x720 High@3.1 as x264 writes it.
    const AVCC: &[u8] = &[
        0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb,
        0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60, 0x01, 0x00,
        0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0,
    ];

    fn video(ts: u32, keyframe: bool, packet: PacketKind, body: &[u8]) -> Arc<MediaFrame> {
        let b0 = if keyframe { 0x17 } else { 0x27 };
        let kind = u8::from(packet == PacketKind::Frame);
        let mut p = vec![b0, kind, 0, 0, 0];
        p.extend_from_slice(body);
        Arc::new(MediaFrame::new(
            FrameKind::Video,
            FourCc::AVC,
            ts,
            0,
            keyframe,
            packet,
            Bytes::from(p),
        ))
    }

    fn headers() -> Headers {
        let mut h = Headers::default();
        h.update(&video(0, true, PacketKind::SequenceHeader, AVCC));
        h
    }

    /// 90 frames at 30 fps from `start` ms, a keyframe every 30.
    fn frames(start: u32) -> Vec<Arc<MediaFrame>> {
        (0..90u32)
            .map(|i| {
                video(
                    start + i * 100 / 3,
                    i % 30 == 0,
                    PacketKind::Frame,
                    &[0, 0, 0, 2, 0x65, i as u8],
                )
            })
            .collect()
    }

    #[test]
    fn fmp4_files_are_whole_boxes_at_every_flush_and_index_back() {
        let mut out = Vec::new();
        let mut w = Writer::start(RecordFormat::Fmp4, &headers(), 5000, 1000, &mut out).unwrap();
        let mut flushes = Vec::new();
        for f in frames(5000) {
            w.push(&f, &mut out).unwrap();
            flushes.push(out.len());
        }
        w.finish(None, &mut out).unwrap();
        // Every flush point ends on a box boundary: what is on disk after a crash parses.
        let mut boundaries = vec![0usize];
        let mut at = 0usize;
        let mut index = Index::new();
        while let Some(h) = box_header(&out[at..]).unwrap() {
            let size = h.size.unwrap() as usize;
            match &h.kind {
                b"moov" => index.push_moov(&out[at..at + size]).unwrap(),
                b"moof" => index.push_moof(at as u64, &out[at..at + size]).unwrap(),
                b"mdat" => index.push_mdat((at + 8) as u64, (size - 8) as u64),
                _ => {}
            }
            at += size;
            boundaries.push(at);
        }
        assert_eq!(at, out.len());
        for f in flushes {
            assert!(boundaries.contains(&f), "a flush at {f} cut a box");
        }
        assert_eq!(index.sample_count(), 90);
        let plan = index.finish().unwrap();
        assert!((plan.duration_secs - 3.0).abs() < 0.01, "{}", plan.duration_secs);
        assert!((w.duration_secs() - 3.0).abs() < 0.01);
    }

    #[test]
    fn flv_files_count_time_from_their_first_keyframe() {
        let mut out = Vec::new();
        let mut w = Writer::start(RecordFormat::Flv, &headers(), 5000, 1000, &mut out).unwrap();
        assert_eq!(&out[..3], b"FLV");
        let early = video(4990, false, PacketKind::Frame, &[1]);
        w.push(&early, &mut out).unwrap();
        for f in frames(5000) {
            w.push(&f, &mut out).unwrap();
        }
        w.finish(None, &mut out).unwrap();
        let mut parser = crate::codec::flv::FlvReader::new(1 << 20);
        let mut buf = bytes::BytesMut::from(&out[..]);
        let mut stamps = Vec::new();
        while let Ok(Some(tag)) = parser.next_tag(&mut buf) {
            stamps.push(tag.timestamp);
        }
        assert_eq!(
            stamps.len(),
            1 + 90,
            "the sequence header, then every frame from the keyframe on"
        );
        assert_eq!((stamps[0], stamps[1]), (0, 0));
        assert_eq!(*stamps.last().unwrap(), 89 * 100 / 3);
    }

    fn audio(codec: FourCc, packet: PacketKind, payload: &'static [u8]) -> Arc<MediaFrame> {
        Arc::new(MediaFrame::new(
            FrameKind::Audio,
            codec,
            0,
            0,
            false,
            packet,
            Bytes::from_static(payload),
        ))
    }

    #[test]
    fn codecs_are_named_as_ffprobe_names_them_and_mp4_lists_only_what_it_carries() {
        let mut h = headers();
        // G.711 A-law (FLV sound format 7): no MP4 sample entry of ours.
        h.update(&audio(FourCc(*b"alaw"), PacketKind::Frame, &[0x72, 0xd5, 0xd5]));
        assert_eq!(h.codecs(false), ["h264", "pcm_alaw"]);
        assert_eq!(h.codecs(true), ["h264"], "an MP4 leaves it out");
        let mut h = headers();
        h.update(&audio(
            FourCc::AAC,
            PacketKind::SequenceHeader,
            &[0xaf, 0x00, 0x12, 0x10],
        ));
        assert_eq!(h.codecs(true), ["h264", "aac"]);
    }
}
