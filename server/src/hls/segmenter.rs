//! The in-memory CMAF segmenter of one stream: hub frames in, init segments, parts and
//! segments out, with a window of the last N segments. Synchronous and clock-free (the
//! caller passes the wall clock), so it is tested without a runtime.
//!
//! Rules:
//! - Video drives the cuts: a segment starts at a keyframe, when the keyframe lies in a
//!   later slot of the stream timeline (`slot = round(ms / target)`) than the segment's own
//!   start. A GOP longer than the target gives a longer segment, never one without a keyframe.
//! - Audio follows the video cuts (same media sequence numbers, cut at the first audio
//!   sample at or after the video cut); an audio-only stream cuts on the slot rule itself.
//! - The first media sequence number is the slot of the first keyframe, later ones count up
//!   by one. While every GOP is at most the target (the usual setup) sequence number equals
//!   slot, so two segmenters of the same stream timeline produce the same numbers and names.
//! - A part is closed as soon as the next sample would make it longer than the part target.
//! - Samples are copied once, into their part's `moof`+`mdat`; segments are their parts.
//! - With video and audio, a third, muxed track holds both in one fragment per part (video
//!   on track 1, audio on track 2): its parts and segments are the video's, each carrying the
//!   audio samples that began before the video part's end. HLS players get it from the
//!   multivariant playlist, which halves their requests; DASH keeps the two tracks.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ferrocast_media::fmp4::{self, Sample, TrackConfig, TrackRun};
use ferrocast_media::ts::TsWriter;

use super::file::SegmentFile;
use super::track::{self, ms_to_ticks, TrackSetup, Unwrap};
use crate::codec::media::PacketKind;
use crate::hub::{FrameKind, MediaFrame};

/// Segmenting parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub target_ms: i64,
    pub part_target_ms: i64,
    /// Complete segments kept.
    pub window: usize,
    /// Bytes the window may hold; older segments go first.
    pub max_bytes: usize,
}

/// Which of a stream's tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackName {
    Video,
    Audio,
    /// Video and audio in the same fragments.
    Muxed,
}

impl TrackName {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackName::Video => "video",
            TrackName::Audio => "audio",
            TrackName::Muxed => "muxed",
        }
    }

    pub fn parse(s: &str) -> Option<TrackName> {
        match s {
            "video" => Some(TrackName::Video),
            "audio" => Some(TrackName::Audio),
            "muxed" => Some(TrackName::Muxed),
            _ => None,
        }
    }
}

/// An init segment; its name is derived from its bytes, so equal configurations share it.
#[derive(Debug)]
pub struct Init {
    pub name: String,
    pub bytes: Bytes,
    pub setup: TrackSetup,
    /// RFC 6381 codec string (both tracks' for the muxed track).
    pub codec: String,
}

/// A sample's place in its part, for rewriting into MPEG-TS.
#[derive(Debug, Clone)]
struct SampleRef {
    dts: i64,
    cts: i64,
    keyframe: bool,
    data: Bytes,
}

/// One LL-HLS part: a CMAF chunk (`moof` + `mdat`).
#[derive(Debug)]
pub struct Part {
    pub duration: f64,
    /// Starts with a keyframe (audio parts always do).
    pub independent: bool,
    pub bytes: Bytes,
    samples: Vec<SampleRef>,
}

/// A segment: its parts, complete once the next one started.
#[derive(Debug)]
pub struct Segment {
    pub msn: u64,
    /// Timeline slot of its first sample.
    slot: i64,
    /// Decode time of the first sample, in the track's timescale.
    pub start: i64,
    pub start_ms: i64,
    /// Seconds; known once complete.
    pub duration: f64,
    pub parts: Vec<Part>,
    pub complete: bool,
    /// A new timeline or configuration starts here (EXT-X-DISCONTINUITY).
    pub discontinuity: bool,
    pub init: Arc<Init>,
    /// The MPEG-TS rendering (video track only), made once on first request.
    ts: OnceLock<Option<Bytes>>,
    /// The segment, and its MPEG-TS rendering, as memory files to splice into sockets, made
    /// once on first request (`None`: the file could not be made; responses write the bytes).
    file: OnceLock<Option<Arc<SegmentFile>>>,
    ts_file: OnceLock<Option<Arc<SegmentFile>>>,
}

impl Segment {
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len()).sum()
    }

    /// Memory it holds: its parts and, once asked for, its MPEG-TS rendering and their
    /// memory files.
    fn held(&self) -> usize {
        let ts = self.ts.get().and_then(|t| t.as_ref()).map_or(0, |b| b.len());
        let file =
            |f: &OnceLock<Option<Arc<SegmentFile>>>| f.get().and_then(|f| f.as_ref()).map_or(0, |f| f.len() as usize);
        ts + self.bytes() + file(&self.file) + file(&self.ts_file)
    }

    /// The complete segment as a memory file, made on the first call.
    pub fn file(&self) -> Option<Arc<SegmentFile>> {
        if !self.complete {
            return None;
        }
        memory_file(&self.file, || self.parts.iter().map(|p| &p.bytes[..]).collect())
    }

    /// Duration in the track's timescale (complete segments).
    pub fn ticks(&self, timescale: u32) -> i64 {
        (self.duration * f64::from(timescale)).round() as i64
    }
}

#[derive(Debug, Clone)]
struct Pending {
    ms: i64,
    dts: i64,
    cts: i64,
    keyframe: bool,
    data: Bytes,
}

/// One track's state and window.
#[derive(Debug)]
pub struct Track {
    pub name: TrackName,
    pub timescale: u32,
    pub init: Option<Arc<Init>>,
    /// Complete segments, then the one being filled (if any).
    pub segments: VecDeque<Segment>,
    unwrap: Unwrap,
    held: Option<Pending>,
    /// Finished samples of the part being filled, with their durations.
    part: Vec<(Pending, i64)>,
    part_ticks: i64,
    /// The configuration changed: the next cut starts a discontinuity.
    reconfigured: bool,
    /// A gap (reset) happened: the next segment starts a discontinuity.
    gap: bool,
    /// Discontinuities that left the window (EXT-X-DISCONTINUITY-SEQUENCE).
    pub discontinuity_sequence: u64,
}

impl Track {
    fn new(name: TrackName) -> Track {
        Track {
            name,
            timescale: 1000,
            init: None,
            segments: VecDeque::new(),
            unwrap: Unwrap::default(),
            held: None,
            part: Vec::new(),
            part_ticks: 0,
            reconfigured: false,
            gap: false,
            discontinuity_sequence: 0,
        }
    }

    fn evict_oldest(&mut self) {
        if self.segments.pop_front().is_some() {
            // The tag before the next segment now opens the playlist and is dropped too.
            if self.segments.front().is_some_and(|n| n.discontinuity) {
                self.discontinuity_sequence += 1;
            }
        }
    }

    /// Completes the segment in progress at `end_dts`, keeping `window` complete segments;
    /// its duration in seconds.
    fn complete_current(&mut self, end_dts: i64, window: usize) -> Option<f64> {
        let timescale = f64::from(self.timescale);
        let seg = self.current()?;
        seg.complete = true;
        seg.duration = (end_dts - seg.start).max(0) as f64 / timescale;
        let duration = seg.duration;
        while self.complete_segments().count() > window {
            self.evict_oldest();
        }
        Some(duration)
    }

    /// Opens a segment at sample `s` (nothing while the track has no init segment).
    fn open_segment(&mut self, msn: u64, slot: i64, s: &Pending, discontinuity: bool) {
        let Some(init) = self.init.clone() else { return };
        self.reconfigured = false;
        self.gap = false;
        self.segments.push_back(Segment {
            msn,
            slot,
            start: s.dts,
            start_ms: s.ms,
            duration: 0.0,
            parts: Vec::new(),
            complete: false,
            discontinuity,
            init,
            ts: OnceLock::new(),
            file: OnceLock::new(),
            ts_file: OnceLock::new(),
        });
    }

    fn current(&mut self) -> Option<&mut Segment> {
        self.segments.back_mut().filter(|s| !s.complete)
    }

    pub fn last_msn(&self) -> Option<u64> {
        self.segments.back().map(|s| s.msn)
    }

    /// (msn, parts) of the newest part there is.
    pub fn progress(&self) -> Option<(u64, usize)> {
        self.segments.back().map(|s| (s.msn, s.parts.len()))
    }

    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        let s = self.segments.get(usize::try_from(msn.checked_sub(first)?).ok()?)?;
        (s.msn == msn).then_some(s)
    }

    pub fn complete_segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.complete)
    }
}

/// A stream's segmenter.
pub struct Segmenter {
    pub settings: Settings,
    /// Part of every media URL, so a new stream never reuses an old stream's names.
    pub epoch: u64,
    pub video: Track,
    pub audio: Track,
    /// Video and audio together; configured once both are.
    pub muxed: Track,
    /// Finished audio samples (with durations) not yet in a muxed part.
    mux_audio: VecDeque<(Pending, i64)>,
    /// Whether the stream has video: then audio waits for the video cuts.
    expect_video: bool,
    video_header: Option<Arc<MediaFrame>>,
    /// Video cuts audio has not reached yet: (msn, ms, discontinuity).
    cuts: VecDeque<(u64, i64, bool)>,
    /// Wall clock of a timeline instant, once the segmenter caught up with the live edge.
    anchor: Option<(SystemTime, i64)>,
    /// Longest segment seen, seconds (EXT-X-TARGETDURATION never shrinks).
    pub longest: f64,
    pub segments_made: u64,
    /// Bumped whenever a part, segment or init appears.
    pub version: u64,
}

const MAX_PENDING_CUTS: usize = 32;
/// Audio samples waiting for a muxed part (about 5 s of AAC; video parts close every part
/// target, so more means the video stopped or the audio runs far ahead of it).
const MAX_MUX_AUDIO: usize = 256;
/// Track ids in the muxed init segment and fragments.
const MUXED_VIDEO_ID: u32 = 1;
const MUXED_AUDIO_ID: u32 = 2;

impl Segmenter {
    pub fn new(settings: Settings, epoch: u64, expect_video: bool) -> Segmenter {
        Segmenter {
            settings,
            epoch,
            video: Track::new(TrackName::Video),
            audio: Track::new(TrackName::Audio),
            muxed: Track::new(TrackName::Muxed),
            mux_audio: VecDeque::new(),
            expect_video,
            video_header: None,
            cuts: VecDeque::new(),
            anchor: None,
            longest: 0.0,
            segments_made: 0,
            version: 0,
        }
    }

    pub fn track(&self, name: TrackName) -> &Track {
        match name {
            TrackName::Video => &self.video,
            TrackName::Audio => &self.audio,
            TrackName::Muxed => &self.muxed,
        }
    }

    /// Tracks with an init segment, video first.
    pub fn tracks(&self) -> impl Iterator<Item = &Track> {
        [&self.video, &self.audio].into_iter().filter(|t| t.init.is_some())
    }

    /// The track whose segments define the playlist's progress (video when there is one).
    pub fn main_track(&self) -> &Track {
        if self.video.init.is_some() || self.expect_video {
            &self.video
        } else {
            &self.audio
        }
    }

    /// Bytes the window holds.
    pub fn held_bytes(&self) -> usize {
        let pending = |t: &Track| t.part.iter().map(|(p, _)| p.data.len()).sum::<usize>();
        let waiting: usize = self.mux_audio.iter().map(|(p, _)| p.data.len()).sum();
        waiting
            + [&self.video, &self.audio, &self.muxed]
                .iter()
                .map(|t| t.segments.iter().map(Segment::held).sum::<usize>() + pending(t))
                .sum::<usize>()
    }

    /// Every configured track has a complete segment (players open all of them at once;
    /// some, like FFmpeg, fail on a rendition without segments).
    pub fn ready(&self) -> bool {
        self.main_track().complete_segments().next().is_some()
            && self.tracks().all(|t| t.complete_segments().next().is_some())
            && (self.muxed.init.is_none() || self.muxed.complete_segments().next().is_some())
    }

    /// The wall-clock time of a timeline millisecond (program date time).
    pub fn wall_clock(&self, ms: i64) -> Option<SystemTime> {
        let (wall, at) = self.anchor?;
        let delta = ms - at;
        Some(if delta >= 0 {
            wall + Duration::from_millis(delta as u64)
        } else {
            wall - Duration::from_millis(delta.unsigned_abs())
        })
    }

    /// Called after each batch of frames; the first call that finds the segmenter at the
    /// live edge fixes the mapping from timeline to wall clock.
    pub fn mark_live(&mut self, now: SystemTime) {
        if self.anchor.is_none() {
            if let Some(h) = self.video.held.as_ref().or(self.audio.held.as_ref()) {
                self.anchor = Some((now, h.ms));
                // Playlists now carry program date times.
                self.version += 1;
            }
        }
    }

    fn slot(&self, ms: i64) -> i64 {
        let t = self.settings.target_ms.max(1);
        (ms + t / 2).div_euclid(t)
    }

    /// Takes one hub frame.
    pub fn push(&mut self, frame: &Arc<MediaFrame>) {
        match (frame.kind, frame.packet) {
            (FrameKind::Video, PacketKind::SequenceHeader) if !frame.multitrack => {
                self.expect_video = true;
                self.video_header = Some(frame.clone());
                if let Some(setup) = track::video_setup(frame, None) {
                    self.configure(TrackName::Video, setup);
                }
            }
            (FrameKind::Audio, PacketKind::SequenceHeader) if !frame.multitrack => {
                if let Some(setup) = track::audio_setup(frame) {
                    self.configure(TrackName::Audio, setup);
                }
            }
            (FrameKind::Video, PacketKind::Frame) if !frame.multitrack => {
                if self.video.init.is_none() && frame.keyframe {
                    // VP9's picture size comes from its first keyframe.
                    if let Some(setup) = self
                        .video_header
                        .as_deref()
                        .and_then(|h| track::video_setup(h, Some(frame)))
                    {
                        self.configure(TrackName::Video, setup);
                    }
                }
                if self.video.init.is_some() {
                    self.push_sample(TrackName::Video, frame);
                }
            }
            (FrameKind::Audio, PacketKind::Frame) if !frame.multitrack => {
                if self.audio.init.is_none() && !track::audio_has_sequence_header(frame.codec) {
                    if let Some(setup) = track::audio_setup(frame) {
                        self.configure(TrackName::Audio, setup);
                    }
                }
                if self.audio.init.is_some() {
                    self.push_sample(TrackName::Audio, frame);
                }
            }
            _ => {}
        }
    }

    fn track_mut(&mut self, name: TrackName) -> &mut Track {
        match name {
            TrackName::Video => &mut self.video,
            TrackName::Audio => &mut self.audio,
            TrackName::Muxed => &mut self.muxed,
        }
    }

    fn configure(&mut self, name: TrackName, setup: TrackSetup) {
        let track = self.track_mut(name);
        if track.init.as_ref().is_some_and(|i| i.setup == setup) {
            return;
        }
        let config = TrackConfig {
            track_id: 1,
            timescale: setup.timescale,
            kind: setup.kind,
            codec: setup.codec.clone(),
        };
        let (Ok(bytes), Ok(codec)) = (fmp4::init_segment(std::slice::from_ref(&config)), config.codec_string()) else {
            tracing::warn!(
                track = name.as_str(),
                "unusable codec configuration for HLS; track left out"
            );
            return;
        };
        let name_str = format!("{}-init-{:016x}.mp4", name.as_str(), fnv1a(&bytes));
        let had = track.init.is_some();
        track.timescale = setup.timescale;
        track.init = Some(Arc::new(Init {
            name: name_str,
            bytes: Bytes::from(bytes),
            setup,
            codec,
        }));
        // A timescale change would mislabel held samples; drop them (the track restarts at
        // its next cut).
        if had {
            track.reconfigured = true;
            track.held = None;
            if name == TrackName::Audio {
                self.mux_audio.clear();
            }
        }
        self.version += 1;
        self.configure_muxed();
    }

    /// (Re)makes the muxed init segment once video and audio are both configured.
    fn configure_muxed(&mut self) {
        let (Some(v), Some(a)) = (&self.video.init, &self.audio.init) else {
            return;
        };
        let config = |setup: &TrackSetup, track_id| TrackConfig {
            track_id,
            timescale: setup.timescale,
            kind: setup.kind,
            codec: setup.codec.clone(),
        };
        let Ok(bytes) = fmp4::init_segment(&[config(&v.setup, MUXED_VIDEO_ID), config(&a.setup, MUXED_AUDIO_ID)])
        else {
            return;
        };
        let name = format!("muxed-init-{:016x}.mp4", fnv1a(&bytes));
        if self.muxed.init.as_ref().is_some_and(|i| i.name == name) {
            return;
        }
        let init = Init {
            name,
            bytes: Bytes::from(bytes),
            setup: v.setup.clone(),
            codec: format!("{},{}", v.codec, a.codec),
        };
        let t = &mut self.muxed;
        t.reconfigured = t.init.is_some();
        t.timescale = v.setup.timescale;
        t.init = Some(Arc::new(init));
        self.version += 1;
    }

    fn push_sample(&mut self, name: TrackName, frame: &MediaFrame) {
        let Some(data) = track::sample_data(frame) else { return };
        let t = self.track_mut(name);
        let ms = t.unwrap.extend(frame.timestamp);
        let timescale = t.timescale;
        let new = Pending {
            ms,
            dts: ms_to_ticks(ms, timescale),
            cts: ms_to_ticks(i64::from(frame.composition_offset), timescale),
            keyframe: name == TrackName::Audio || frame.keyframe,
            data,
        };
        let held = t.held.take();
        match name {
            // Video cuts as soon as the keyframe arrives, so audio that follows it already
            // finds the cut.
            TrackName::Video => {
                if let Some(h) = held {
                    let duration = (new.dts - h.dts).max(1);
                    self.add_to_part(name, h, duration);
                }
                self.maybe_cut(name, &new);
            }
            TrackName::Audio | TrackName::Muxed => {
                if let Some(h) = held {
                    let duration = (new.dts - h.dts).max(1);
                    self.maybe_cut(name, &h);
                    self.add_to_part(name, h, duration);
                }
            }
        }
        self.track_mut(name).held = Some(new);
    }

    /// Starts a new segment before `s` when the rules say so.
    fn maybe_cut(&mut self, name: TrackName, s: &Pending) {
        let slot = self.slot(s.ms);
        let cut: Option<(u64, bool)> = match name {
            // Cut with the video (cut_muxed).
            TrackName::Muxed => None,
            TrackName::Video => {
                let t = &self.video;
                let last = t.segments.back();
                let open = last.is_some_and(|l| !l.complete);
                if !s.keyframe {
                    None
                } else if !open {
                    let msn = last.map_or(slot.max(0) as u64, |l| (l.msn + 1).max(slot.max(0) as u64));
                    Some((msn, last.is_some() || t.reconfigured || t.gap))
                } else if t.reconfigured || slot > last.map_or(i64::MIN, |l| l.slot) {
                    Some((last.map_or(0, |l| l.msn + 1), t.reconfigured))
                } else {
                    None
                }
            }
            TrackName::Audio if self.expect_video => {
                let current = self.audio.segments.back().filter(|l| !l.complete).map(|l| l.msn);
                let mut found = None;
                while let Some(&(msn, at, disc)) = self.cuts.front() {
                    if current.is_some_and(|c| msn <= c) {
                        self.cuts.pop_front();
                        continue;
                    }
                    if s.ms >= at {
                        found = Some((msn, disc || self.audio.reconfigured));
                        self.cuts.pop_front();
                    } else {
                        break;
                    }
                }
                found
            }
            TrackName::Audio => {
                let t = &self.audio;
                let last = t.segments.back();
                let open = last.is_some_and(|l| !l.complete);
                if !open {
                    let msn = last.map_or(slot.max(0) as u64, |l| (l.msn + 1).max(slot.max(0) as u64));
                    Some((msn, last.is_some() || t.reconfigured || t.gap))
                } else if t.reconfigured || slot > last.map_or(i64::MIN, |l| l.slot) {
                    Some((last.map_or(0, |l| l.msn + 1), t.reconfigured))
                } else {
                    None
                }
            }
        };
        if let Some((msn, discontinuity)) = cut {
            self.close_segment(name, s.dts);
            if name == TrackName::Video {
                self.cut_muxed(msn, slot, s, discontinuity);
            }
            if name == TrackName::Video && self.expect_video {
                self.cuts.push_back((msn, s.ms, discontinuity));
                if self.cuts.len() > MAX_PENDING_CUTS {
                    self.cuts.pop_front();
                }
            }
            self.track_mut(name).open_segment(msn, slot, s, discontinuity);
            self.version += 1;
        }
    }

    /// Ends the muxed segment with the video's and starts the next one at the same keyframe.
    fn cut_muxed(&mut self, msn: u64, slot: i64, s: &Pending, discontinuity: bool) {
        let t = &mut self.muxed;
        t.complete_current(s.dts, self.settings.window);
        let discontinuity = discontinuity || t.reconfigured || t.gap;
        t.open_segment(msn, slot, s, discontinuity);
        self.version += 1;
    }

    /// The muxed part matching a video part just closed: its samples, and the audio samples
    /// that began before its end (later ones wait for the next part).
    fn mux_part(&mut self, video: &[(Pending, i64)], sequence: u32, duration: f64) {
        let timescale = i64::from(self.video.timescale.max(1));
        let Some((last, last_ticks)) = video.last() else { return };
        let end_ms = last.ms + last_ticks * 1000 / timescale;
        let n = self.mux_audio.iter().take_while(|(p, _)| p.ms < end_ms).count();
        let mut audio: Vec<(Pending, i64)> = self.mux_audio.drain(..n).collect();
        if self.muxed.reconfigured {
            // The audio changed: its samples wait for the next segment's init.
            audio.clear();
        }
        let Some(seg) = self.muxed.current() else { return };
        let mut runs = vec![run_of(MUXED_VIDEO_ID, video)];
        if !audio.is_empty() {
            runs.push(run_of(MUXED_AUDIO_ID, &audio));
        }
        match fmp4::fragment(sequence, &runs) {
            Ok(bytes) => seg.parts.push(Part {
                duration,
                independent: video[0].0.keyframe,
                bytes: Bytes::from(bytes),
                samples: Vec::new(),
            }),
            Err(e) => tracing::warn!(track = "muxed", "cannot write a part: {e}"),
        }
        self.version += 1;
    }

    /// Adds a finished sample (its duration known) to the part being filled.
    fn add_to_part(&mut self, name: TrackName, s: Pending, duration: i64) {
        if name == TrackName::Audio && self.muxed.init.is_some() {
            if self.mux_audio.len() >= MAX_MUX_AUDIO {
                self.mux_audio.pop_front();
            }
            // Its own copy: a small audio frame waiting here must not keep the publisher's
            // shared read buffer (up to 64 KiB) alive.
            let own = Pending {
                data: Bytes::copy_from_slice(&s.data),
                ..s.clone()
            };
            self.mux_audio.push_back((own, duration));
        }
        let part_target = ms_to_ticks(self.settings.part_target_ms, self.track(name).timescale).max(1);
        let t = self.track_mut(name);
        if t.current().is_none() {
            // Before the first cut (audio ahead of video, or video before a keyframe).
            return;
        }
        if !t.part.is_empty() && t.part_ticks + duration > part_target {
            self.close_part(name);
        }
        let t = self.track_mut(name);
        t.part_ticks += duration;
        t.part.push((s, duration));
        if t.part_ticks >= part_target {
            self.close_part(name);
        }
        self.enforce_memory_bound(name);
    }

    fn close_part(&mut self, name: TrackName) {
        let t = self.track_mut(name);
        if t.part.is_empty() {
            return;
        }
        let samples: Vec<(Pending, i64)> = std::mem::take(&mut t.part);
        let ticks = std::mem::take(&mut t.part_ticks);
        let timescale = t.timescale;
        let Some(seg) = t.current() else { return };
        let sequence = ((seg.msn as u32) << 8) | (seg.parts.len() as u32 & 0xff);
        let bytes = match fmp4::fragment(sequence, &[run_of(1, &samples)]) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(track = name.as_str(), "cannot write a part: {e}");
                return;
            }
        };
        let data_len: usize = samples.iter().map(|(p, _)| p.data.len()).sum();
        let mut at = bytes.len() - data_len;
        let refs = samples
            .iter()
            .map(|(p, _)| {
                let r = SampleRef {
                    dts: p.dts,
                    cts: p.cts,
                    keyframe: p.keyframe,
                    data: bytes.slice(at..at + p.data.len()),
                };
                at += p.data.len();
                r
            })
            .collect();
        let duration = ticks as f64 / f64::from(timescale);
        seg.parts.push(Part {
            duration,
            independent: samples[0].0.keyframe,
            bytes,
            samples: refs,
        });
        self.version += 1;
        if name == TrackName::Video {
            self.mux_part(&samples, sequence, duration);
        }
    }

    fn close_segment(&mut self, name: TrackName, end_dts: i64) {
        self.close_part(name);
        let window = self.settings.window;
        let Some(d) = self.track_mut(name).complete_current(end_dts, window) else {
            return;
        };
        self.longest = self.longest.max(d);
        self.segments_made += 1;
        self.version += 1;
    }

    /// Keeps the window within `max_bytes`: oldest complete segments go first; a segment
    /// in progress that alone exceeds the bound is dropped and the track restarts at its
    /// next cut.
    fn enforce_memory_bound(&mut self, name: TrackName) {
        let max = self.settings.max_bytes;
        while self.held_bytes() > max {
            self.version += 1;
            let oldest = [&self.video, &self.audio, &self.muxed]
                .into_iter()
                .filter(|t| t.segments.front().is_some_and(|s| s.complete))
                .min_by_key(|t| t.segments.front().map(|s| s.start_ms))
                .map(|t| t.name);
            match oldest {
                Some(n) => self.track_mut(n).evict_oldest(),
                None => {
                    let t = self.track_mut(name);
                    if t.current().is_some() {
                        t.segments.pop_back();
                    }
                    t.part.clear();
                    t.part_ticks = 0;
                    t.gap = true;
                    // The muxed segment in progress holds this track's samples too.
                    if self.muxed.current().is_some() {
                        self.muxed.segments.pop_back();
                        self.muxed.gap = true;
                    }
                    tracing::warn!(
                        track = name.as_str(),
                        max_bytes = max,
                        "HLS segment in progress exceeds hls.max_bytes (keyframes too far apart?); dropped"
                    );
                    break;
                }
            }
        }
    }

    /// The MPEG-TS rendering of segment `msn` (video and audio of the same sequence number),
    /// or `None` if the stream's codecs do not fit TS or the segment is not complete.
    pub fn ts_segment(&self, msn: u64) -> Option<Bytes> {
        let main = self.main_track();
        let seg = main.segment(msn).filter(|s| s.complete)?;
        seg.ts
            .get_or_init(|| {
                let video = self.video.segment(msn).filter(|s| s.complete);
                let audio = self.audio.segment(msn).filter(|s| s.complete);
                let ts_video = match video {
                    Some(v) => Some(v.init.setup.ts_video()?),
                    None => None,
                };
                let ts_audio = match audio {
                    Some(a) => Some(a.init.setup.ts_audio()?),
                    None => None,
                };
                let mut w = TsWriter::new(ts_video, ts_audio);
                let to_90k = |ticks: i64, timescale: u32| (ticks.max(0) as u64) * 90_000 / u64::from(timescale.max(1));
                let vs = video.into_iter().flat_map(|s| &s.parts).flat_map(|p| &p.samples);
                let mut as_ = audio
                    .into_iter()
                    .flat_map(|s| &s.parts)
                    .flat_map(|p| &p.samples)
                    .peekable();
                let ats = self.audio.timescale;
                let vts = self.video.timescale;
                for v in vs {
                    let vdts = to_90k(v.dts, vts);
                    while let Some(a) = as_.next_if(|a| to_90k(a.dts, ats) <= vdts) {
                        w.audio(to_90k(a.dts, ats), &a.data).ok()?;
                    }
                    let pts = to_90k(v.dts + v.cts, vts);
                    w.video(vdts, pts, v.keyframe, &v.data).ok()?;
                }
                for a in as_ {
                    w.audio(to_90k(a.dts, ats), &a.data).ok()?;
                }
                Some(Bytes::from(w.finish()))
            })
            .clone()
    }

    /// The MPEG-TS rendering of segment `msn` as a memory file, made on the first call.
    pub fn ts_file(&self, msn: u64) -> Option<Arc<SegmentFile>> {
        let ts = self.ts_segment(msn)?;
        let seg = self.main_track().segment(msn)?;
        memory_file(&seg.ts_file, || vec![&ts[..]])
    }
}

/// The memory file in `cell`, made from `pieces` on the first call. A failure (no `memfd`
/// here, or out of memory) is logged once per segment and the caller writes the bytes.
fn memory_file<'a>(
    cell: &OnceLock<Option<Arc<SegmentFile>>>,
    pieces: impl FnOnce() -> Vec<&'a [u8]>,
) -> Option<Arc<SegmentFile>> {
    cell.get_or_init(|| match SegmentFile::new(pieces()) {
        Ok(f) => Some(Arc::new(f)),
        Err(e) => {
            tracing::warn!("hls: no memory file for a segment, writing it per response instead: {e}");
            None
        }
    })
    .clone()
}

/// A fragment's run of finished samples (non-empty) on `track_id`.
fn run_of(track_id: u32, samples: &[(Pending, i64)]) -> TrackRun<'_> {
    TrackRun {
        track_id,
        base_decode_time: samples[0].0.dts.max(0) as u64,
        samples: samples
            .iter()
            .map(|(p, d)| Sample {
                duration: u32::try_from(*d).unwrap_or(u32::MAX),
                composition_offset: i32::try_from(p.cts).unwrap_or(0),
                keyframe: p.keyframe,
                data: &p.data,
            })
            .collect(),
    }
}

/// FNV-1a, 64 bit: a stable name for an init segment's bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;
