//! One live stream: its publisher slot, metadata and sequence headers, GOP cache and the
//! broadcast ring that fans frames out to readers; plus the publisher and reader handles.
//!
//! Locking: the stream lock is taken before the ring's own lock, never the reverse.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

// tokio's clock, so paused-time tests drive rate windows and slow-reader windows too.
use tokio::time::Instant;

use bytes::Bytes;

use super::frame::{metadata_body, FrameKind, MediaFrame};
use super::gop::{GopCache, GopLimits};
use super::ring::{Ring, RingError, RingLimits};
use super::{HubInner, StreamKey};
use crate::codec::amf0::Amf0Value;
use crate::codec::info::{self, AudioInfo, VideoInfo};
use crate::codec::media::{self, FourCc, MediaHeaderError, PacketKind};

/// Who publishes a stream.
#[derive(Debug, Clone)]
pub struct PublisherInfo {
    pub session_id: u64,
    pub protocol: &'static str,
    pub remote: String,
    pub started: SystemTime,
}

/// Counters readable without the stream lock.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Bytes written to this stream's players, all protocols.
    pub bytes_out: AtomicU64,
    /// Egress bitrate over the last window, kbit/s (updated by the readers' writes).
    pub bitrate_out_kbps: AtomicU64,
    /// (window start, bytes_out at window start); `try_lock` only, so writers never wait.
    out_window: Mutex<Option<(Instant, u64)>>,
    /// Frames readers skipped because they fell behind.
    pub frames_dropped: AtomicU64,
    pub readers: AtomicUsize,
}

/// What a stream knows about its tracks and codecs.
#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    pub publisher: Option<PublisherInfo>,
    pub has_audio: bool,
    pub has_video: bool,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
    pub video_codec: Option<FourCc>,
    pub audio_codec: Option<FourCc>,
    /// Frame rate the publisher declared in onMetaData.
    pub metadata_fps: Option<f64>,
    /// Video frame rate measured from timestamps over the last window.
    pub measured_fps: Option<f64>,
    /// Ingest bitrate over the last window, in kbit/s.
    pub bitrate_kbps: u64,
}

impl StreamInfo {
    /// The declared frame rate, else the measured one.
    pub fn fps(&self) -> Option<f64> {
        self.metadata_fps.filter(|f| *f > 0.0).or(self.measured_fps)
    }
}

/// Most side headers kept per stream (tracks are few; this bounds a hostile publisher).
const MAX_SIDE_HEADERS: usize = 16;

/// Identifies the track a side header belongs to: kind, packet type, codec and multitrack
/// track id, read through any ModEx wrappers (whose data, such as a timestamp offset,
/// differs from packet to packet of the same track).
fn side_header_id(f: &MediaFrame) -> Bytes {
    let (packet_type, track) = match f.kind {
        FrameKind::Video => media::parse_video_header(&f.payload)
            .map(|h| (h.packet_type, h.track_id))
            .unwrap_or_default(),
        FrameKind::Audio => media::parse_audio_header(&f.payload)
            .map(|h| (h.packet_type, h.track_id))
            .unwrap_or_default(),
        FrameKind::Data => (0, None),
    };
    let mut id = vec![f.kind as u8, f.packet as u8, packet_type, u8::from(track.is_some())];
    id.push(track.unwrap_or(0));
    id.extend_from_slice(&f.codec.0);
    Bytes::from(id)
}

/// Measures ingest bitrate and video frame rate over windows of about two seconds.
#[derive(Debug, Default)]
struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    first_video_ts: Option<u32>,
    last_video_ts: u32,
    video_frames: u32,
}

impl RateMeter {
    const WINDOW: Duration = Duration::from_secs(2);

    /// Returns (bits per second, frames per second) when a window completes.
    fn record(&mut self, now: Instant, f: &MediaFrame) -> Option<(u64, f64)> {
        let start = *self.window_start.get_or_insert(now);
        self.bytes += f.payload.len() as u64;
        if f.kind == FrameKind::Video && f.packet == PacketKind::Frame && !f.multitrack {
            self.first_video_ts.get_or_insert(f.timestamp);
            self.last_video_ts = f.timestamp;
            self.video_frames += 1;
        }
        let elapsed = now.duration_since(start);
        if elapsed < Self::WINDOW {
            return None;
        }
        let bps = (self.bytes as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
        let span = self
            .last_video_ts
            .wrapping_sub(self.first_video_ts.unwrap_or(self.last_video_ts));
        let fps = if span > 0 && self.video_frames > 1 {
            f64::from(self.video_frames - 1) * 1000.0 / f64::from(span)
        } else {
            0.0
        };
        *self = RateMeter::default();
        Some((bps, (fps * 100.0).round() / 100.0))
    }
}

pub struct Stream {
    pub key: StreamKey,
    pub stats: StreamStats,
    pub created: Instant,
    state: Mutex<StreamState>,
    /// Frames on their way to readers; written under the stream lock, read without it.
    ring: Ring,
    /// Server ids the current publisher's stream passed through before reaching us (the
    /// relay hop marker, origin first): what a relay of this stream must carry on, so a loop
    /// through relays is refused. Empty for a stream published here by an encoder.
    relay_path: Mutex<Vec<String>>,
}

/// Why a publisher could not claim a stream.
#[derive(Debug, Clone)]
pub(super) enum ClaimError {
    /// Someone publishes it already.
    Held(PublisherInfo),
    /// The stream ended (reaped or shut down) after it was looked up: look it up again.
    Ended,
}

struct StreamState {
    info: StreamInfo,
    /// Bumped whenever the publisher slot changes, so a delayed reaper can tell whether
    /// the stream it was started for is still idle.
    generation: u64,
    metadata: Option<Arc<MediaFrame>>,
    video_header: Option<Arc<MediaFrame>>,
    audio_header: Option<Arc<MediaFrame>>,
    /// Headers that are neither metadata nor the default track's sequence headers but that
    /// a late joiner needs: enhanced-RTMP video Metadata (HDR colour info) and multitrack
    /// sequence starts, keyed by the bytes that identify their track.
    side_headers: Vec<(Bytes, Arc<MediaFrame>)>,
    rate: RateMeter,
    /// Bumped when metadata or a sequence header changes; a lagging reader that missed the
    /// change is given the current ones again.
    headers_version: u64,
    gop: GopCache,
    rebase: Rebase,
}

/// Keeps timestamps increasing across publisher reconnects so players continue seamlessly.
#[derive(Debug, Default)]
struct Rebase {
    offset: u32,
    last_out: Option<u32>,
    /// Set when a new publisher takes over; the next frame fixes the offset.
    pending: bool,
}

impl Rebase {
    fn apply(&mut self, ts: u32) -> u32 {
        if self.pending {
            self.pending = false;
            // Continue one frame interval after the last timestamp players saw.
            self.offset = self.last_out.map_or(0, |last| last.wrapping_add(20).wrapping_sub(ts));
        }
        let out = ts.wrapping_add(self.offset);
        self.last_out = Some(out);
        out
    }
}

impl Stream {
    pub(super) fn new(key: StreamKey, limits: GopLimits, ring: RingLimits) -> Stream {
        Stream {
            key,
            stats: StreamStats::default(),
            created: Instant::now(),
            state: Mutex::new(StreamState {
                info: StreamInfo::default(),
                generation: 0,
                metadata: None,
                video_header: None,
                audio_header: None,
                side_headers: Vec::new(),
                rate: RateMeter::default(),
                headers_version: 0,
                gop: GopCache::new(limits),
                rebase: Rebase::default(),
            }),
            ring: Ring::new(ring),
            relay_path: Mutex::new(Vec::new()),
        }
    }

    /// The relay hop path of the current publisher (see the field's doc).
    pub fn relay_path(&self) -> Vec<String> {
        self.relay_path.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lock(&self) -> MutexGuard<'_, StreamState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than losing the stream, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn info(&self) -> StreamInfo {
        self.lock().info.clone()
    }

    pub fn is_published(&self) -> bool {
        self.lock().info.publisher.is_some()
    }

    /// Bytes the GOP cache holds now (payloads and the encodings made of them).
    pub fn gop_bytes(&self) -> usize {
        self.lock().gop.held_bytes()
    }

    /// Bytes the reader ring holds now (frames kept for readers, encodings included; many are
    /// shared with the GOP cache).
    pub fn ring_bytes(&self) -> usize {
        self.ring.held_bytes()
    }

    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Claims the publisher slot. Fails if someone publishes already, or if the stream ended
    /// since it was looked up (the reaper may remove it at any moment before the claim).
    pub(super) fn claim(&self, publisher: PublisherInfo) -> Result<u64, ClaimError> {
        let mut s = self.lock();
        // The ring is closed once, under this lock, when the stream ends (reaped or shut down).
        if self.ring.is_closed() {
            return Err(ClaimError::Ended);
        }
        if let Some(p) = &s.info.publisher {
            return Err(ClaimError::Held(p.clone()));
        }
        s.info.publisher = Some(publisher);
        s.generation += 1;
        s.rebase.pending = s.rebase.last_out.is_some();
        Ok(s.generation)
    }

    /// Frees the publisher slot; returns the generation a reaper must find unchanged.
    pub(super) fn release(&self, generation: u64) -> Option<u64> {
        let mut s = self.lock();
        if s.generation != generation {
            return None;
        }
        s.info.publisher = None;
        s.generation += 1;
        s.gop.clear();
        Some(s.generation)
    }

    /// Ends the stream for every reader; it can no longer be claimed.
    pub(super) fn end(&self) {
        let _s = self.lock();
        self.ring.close();
    }

    /// Ends the stream if nobody publishes it and its publisher slot is still at `generation`;
    /// checked and ended under one lock, so no claim can slip in between.
    pub(super) fn end_if_idle(&self, generation: u64) -> bool {
        let s = self.lock();
        if s.generation != generation || s.info.publisher.is_some() {
            return false;
        }
        self.ring.close();
        true
    }

    /// Caches and queues a frame for readers; with `wake` unset the caller owes the readers a
    /// [`Ring::wake`] if this returns true.
    fn publish_frame(&self, frame: MediaFrame, wake: bool) -> bool {
        let mut s = self.lock();
        let mut frame = frame;
        frame.timestamp = s.rebase.apply(frame.timestamp);
        let frame = Arc::new(frame);
        let now = Instant::now();
        if let Some((bps, fps)) = s.rate.record(now, &frame) {
            s.info.bitrate_kbps = bps / 1000;
            if fps > 0.0 {
                s.info.measured_fps = Some(fps);
            }
        }
        match (frame.kind, frame.packet) {
            (FrameKind::Video | FrameKind::Audio, PacketKind::SequenceHeader | PacketKind::Other)
                if frame.multitrack || frame.packet == PacketKind::Other =>
            {
                let id = side_header_id(&frame);
                if let Some(slot) = s.side_headers.iter_mut().find(|(k, _)| *k == id) {
                    slot.1 = frame.clone();
                } else if s.side_headers.len() < MAX_SIDE_HEADERS {
                    s.side_headers.push((id, frame.clone()));
                }
                s.headers_version += 1;
            }
            (FrameKind::Data, _) => {
                s.metadata = Some(frame.clone());
                s.headers_version += 1;
            }
            (FrameKind::Video, PacketKind::SequenceHeader) => {
                s.video_header = Some(frame.clone());
                s.headers_version += 1;
            }
            (FrameKind::Audio, PacketKind::SequenceHeader) => {
                s.audio_header = Some(frame.clone());
                s.headers_version += 1;
            }
            _ => {
                let has_video = s.info.has_video;
                s.gop.push(&frame, has_video);
            }
        }
        // Readers register under this lock, so with none the ring can be emptied: an idle
        // stream holds its GOP only. The publisher never waits on readers.
        if self.stats.readers.load(Ordering::Relaxed) > 0 {
            if wake {
                self.ring.push(frame);
                return false;
            }
            self.ring.push_quietly(frame);
            return true;
        }
        if !self.ring.is_empty() {
            self.ring.clear();
        }
        false
    }

    /// Registers a reader: headers, the cached GOP and the live receiver are taken under
    /// one lock so the reader sees no gap and no duplicate.
    pub(super) fn subscribe(self: &Arc<Self>, limits: ReaderLimits, options: SubscribeOptions) -> Option<Subscriber> {
        let s = self.lock();
        if self.ring.is_closed() {
            return None;
        }
        let (next, position) = self.ring.join();
        let mut backlog = VecDeque::with_capacity(3 + s.gop.len());
        backlog.extend(s.metadata.iter().cloned());
        backlog.extend(s.video_header.iter().cloned());
        backlog.extend(s.audio_header.iter().cloned());
        backlog.extend(
            s.side_headers
                .iter()
                .map(|(_, f)| f.clone())
                .filter(|f| options.multitrack || !f.multitrack),
        );
        let gop_has_keyframe = s.gop.frames().next().is_some_and(|f| f.keyframe);
        backlog.extend(s.gop.frames().filter(|f| options.multitrack || !f.multitrack).cloned());
        let headers_version = s.headers_version;
        self.stats.readers.fetch_add(1, Ordering::Relaxed);
        drop(s);
        Some(Subscriber {
            stream: self.clone(),
            next,
            position,
            backlog,
            await_keyframe: !gop_has_keyframe,
            drop_audio: false,
            headers_version,
            limits,
            multitrack: options.multitrack,
            skips: VecDeque::new(),
            dropped: 0,
            hold_until: None,
            hold_for_frame: true,
            ended: None,
        })
    }
}

/// The publishing side of a stream. Dropping it unpublishes; players stay attached for the
/// grace period in case the publisher comes back.
pub struct Publisher {
    pub(super) stream: Arc<Stream>,
    pub(super) hub: Arc<HubInner>,
    pub(super) generation: u64,
    /// Between [`Publisher::defer_wakeups`] and [`Publisher::wake_readers`].
    pub(super) defer_wakeups: AtomicBool,
    /// A frame was queued while wake-ups were deferred.
    pub(super) wake_owed: AtomicBool,
}

impl Publisher {
    /// Frames published from now until [`Publisher::wake_readers`] wake the stream's readers
    /// once, then: a connection hands over everything one socket read brought, and its readers
    /// should take it as one batch rather than wake for each frame.
    pub fn defer_wakeups(&self) {
        self.defer_wakeups.store(true, Ordering::Relaxed);
    }

    /// Ends [`Publisher::defer_wakeups`], waking the readers if a frame came meanwhile.
    pub fn wake_readers(&self) {
        self.defer_wakeups.store(false, Ordering::Relaxed);
        if self.wake_owed.swap(false, Ordering::Relaxed) {
            self.stream.ring.wake();
        }
    }

    fn publish(&self, frame: MediaFrame) {
        let defer = self.defer_wakeups.load(Ordering::Relaxed);
        if self.stream.publish_frame(frame, !defer) {
            self.wake_owed.store(true, Ordering::Relaxed);
        }
    }

    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Records the relay hop path this publisher's stream came through (relay ingest only).
    pub fn set_relay_path(&self, path: Vec<String>) {
        *self.stream.relay_path.lock().unwrap_or_else(|e| e.into_inner()) = path;
    }

    fn count_in(&self, len: usize) {
        self.stream.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        self.stream.stats.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Publishes one video message body.
    pub fn push_video(&self, timestamp: u32, payload: Bytes) -> Result<(), MediaHeaderError> {
        self.count_in(payload.len());
        let h = media::parse_video_header(&payload)?;
        let payload = own_if_kept(h.kind, payload);
        if h.keyframe && h.codec == FourCc::VP9 && !h.multitrack {
            // A VP9 configuration record carries no picture size; keyframes do.
            let mut s = self.stream.lock();
            if let Some(v) = s.info.video.as_mut().filter(|v| v.width == 0) {
                if let Some((w, hgt)) = info::vp9_frame_size(&payload) {
                    v.width = w;
                    v.height = hgt;
                }
            }
        }
        if !h.multitrack && (h.kind == PacketKind::SequenceHeader || !self.stream.lock().info.has_video) {
            let mut s = self.stream.lock();
            s.info.has_video = true;
            s.info.video_codec = Some(h.codec);
            if h.kind == PacketKind::SequenceHeader {
                if let Some(v) = info::video_info(h.codec, h.enhanced, &payload) {
                    if s.info.video.as_ref() != Some(&v) {
                        tracing::info!(stream = %self.stream.key, codec = v.codec, width = v.width, height = v.height,
                            profile = %v.profile, level = %v.level, "video track");
                    }
                    s.info.video = Some(v);
                }
            }
        }
        self.publish(
            MediaFrame::new(
                FrameKind::Video,
                h.codec,
                timestamp,
                h.composition_offset,
                h.keyframe,
                h.kind,
                payload,
            )
            .with_multitrack(h.multitrack),
        );
        Ok(())
    }

    /// Publishes one audio message body.
    pub fn push_audio(&self, timestamp: u32, payload: Bytes) -> Result<(), MediaHeaderError> {
        self.count_in(payload.len());
        let h = media::parse_audio_header(&payload)?;
        let payload = own_if_kept(h.kind, payload);
        if !h.multitrack && h.kind == PacketKind::Frame && matches!(h.codec, FourCc::MP3 | FourCc::AC3 | FourCc::EAC3) {
            // MP3 and AC-3 have no sequence header: learn their parameters from a frame.
            let mut s = self.stream.lock();
            if s.info.audio.as_ref().is_none_or(|a| a.sample_rate == 0) {
                if let Some(a) = info::audio_info(h.codec, h.enhanced, &payload).filter(|a| a.sample_rate > 0) {
                    s.info.audio = Some(a);
                }
            }
        }
        if !h.multitrack && (h.kind == PacketKind::SequenceHeader || !self.stream.lock().info.has_audio) {
            let mut s = self.stream.lock();
            s.info.has_audio = true;
            s.info.audio_codec = Some(h.codec);
            if h.kind == PacketKind::SequenceHeader {
                if let Some(a) = info::audio_info(h.codec, h.enhanced, &payload) {
                    if s.info.audio.as_ref() != Some(&a) {
                        tracing::info!(stream = %self.stream.key, codec = a.codec, sample_rate = a.sample_rate,
                            channels = a.channels, profile = %a.profile, "audio track");
                    }
                    s.info.audio = Some(a);
                }
            }
        }
        self.publish(
            MediaFrame::new(FrameKind::Audio, h.codec, timestamp, 0, false, h.kind, payload)
                .with_multitrack(h.multitrack),
        );
        Ok(())
    }

    /// Publishes stream metadata (the values that followed `onMetaData`).
    pub fn push_metadata(&self, values: &[Amf0Value]) {
        let body = metadata_body(values);
        self.count_in(body.len());
        if let Some(meta) = values.first() {
            let mut s = self.stream.lock();
            if meta.get("videocodecid").is_some() || meta.get("width").is_some() {
                s.info.has_video = true;
            }
            if meta.get("audiocodecid").is_some() || meta.get("audiosamplerate").is_some() {
                s.info.has_audio = true;
            }
            s.info.metadata_fps = meta
                .get("framerate")
                .or_else(|| meta.get("videoframerate"))
                .and_then(|v| v.as_f64());
        }
        self.publish(MediaFrame::new(
            FrameKind::Data,
            FourCc::NONE,
            0,
            0,
            false,
            PacketKind::Other,
            body,
        ));
    }
}

/// Sequence headers and other non-frame packets are kept for as long as the stream lives:
/// they get a buffer of their own rather than a slice that would keep a whole read buffer of
/// the publisher's connection alive.
fn own_if_kept(kind: PacketKind, payload: Bytes) -> Bytes {
    match kind {
        PacketKind::Frame => payload,
        _ => Bytes::copy_from_slice(&payload),
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.wake_readers();
        if let Some(generation) = self.stream.release(self.generation) {
            self.stream.relay_path.lock().unwrap_or_else(|e| e.into_inner()).clear();
            let grace = self.hub.settings.publisher_grace;
            super::schedule_reap(&self.hub, self.stream.key.clone(), generation, grace);
        }
    }
}

/// What a reader asks for when it subscribes.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscribeOptions {
    /// Deliver enhanced-RTMP v2 multitrack packets (RTMP players that announced the
    /// Multitrack capability). Other readers get the default track only.
    pub multitrack: bool,
}

/// Bounds on how far a reader may fall behind.
#[derive(Debug, Clone, Copy)]
pub struct ReaderLimits {
    pub max_skips: u32,
    pub window: Duration,
    /// After a batch, a reader waits this long before taking the next one, so each write to
    /// its client carries several frames (SRS's "merged write"). Fewer, larger writes and
    /// wake-ups are what fan-out to thousands of players costs; zero writes every frame at once.
    pub coalesce: Duration,
}

/// Why a reader stops receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReaderEnd {
    #[error("stream ended")]
    StreamEnded,
    #[error("reader too slow: fell behind {0} times")]
    TooSlow(u32),
}

/// A reader of a stream: every output (RTMP play, HTTP-FLV, WS-FLV, ...) is one.
pub struct Subscriber {
    stream: Arc<Stream>,
    /// Sequence number of the next frame to take from the stream's ring.
    next: u64,
    /// `next` as the ring sees it: the frames from there on are kept for this reader.
    position: Arc<AtomicU64>,
    /// Frames to deliver before live ones: headers and the GOP at subscribe, headers again
    /// after a skip that missed a change.
    backlog: VecDeque<Arc<MediaFrame>>,
    /// Video waits for a keyframe (at start without a cached GOP, or after falling behind).
    await_keyframe: bool,
    /// After falling behind, audio waits for the video keyframe too, keeping them in sync.
    drop_audio: bool,
    headers_version: u64,
    limits: ReaderLimits,
    multitrack: bool,
    skips: VecDeque<Instant>,
    dropped: u64,
    /// When the next batch may be taken (write coalescing).
    hold_until: Option<tokio::time::Instant>,
    /// How the coalescing pause is waited out: for the next frame first (the stream's frames
    /// come in bursts, such as a publisher's coalesced reads), or on a timer first (frames
    /// come more often than the pause). Learned from the stream as it goes.
    hold_for_frame: bool,
    /// The end met while a batch was being filled, reported by the next call.
    ended: Option<ReaderEnd>,
}

impl Subscriber {
    /// Every batch is taken as soon as it is ready: for relaying hops (a peer pod's pull),
    /// where a coalescing pause would add to every player's latency downstream.
    pub fn without_coalescing(mut self) -> Self {
        self.limits.coalesce = Duration::ZERO;
        self
    }

    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Frames this reader skipped for falling behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Accounts bytes written to this reader's client.
    pub fn count_out(&self, n: usize) {
        let stats = &self.stream.stats;
        let total = stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if let Ok(mut w) = stats.out_window.try_lock() {
            let now = Instant::now();
            match *w {
                Some((start, at)) if now.duration_since(start) >= Duration::from_secs(2) => {
                    let kbps = (total - at) * 8 / 1000 / now.duration_since(start).as_secs().max(1);
                    stats.bitrate_out_kbps.store(kbps, Ordering::Relaxed);
                    *w = Some((now, total));
                }
                Some(_) => {}
                None => *w = Some((now, total)),
            }
        }
    }

    /// The next frame to send. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Arc<MediaFrame>, ReaderEnd> {
        loop {
            if let Some(f) = self.backlog.pop_front() {
                return Ok(f);
            }
            let res = self.stream.ring.recv(&mut self.next).await;
            self.position.store(self.next, Ordering::Relaxed);
            if let Some(f) = self.accept(res)? {
                return Ok(f);
            }
        }
    }

    /// Appends the next frames to `out` (at most `max_frames`): waits for at least one,
    /// then takes every one that is ready. With write coalescing the call first waits until
    /// the previous batch is `coalesce` old. Cancel-safe: frames are only appended after the
    /// last await point.
    pub async fn recv_batch(&mut self, out: &mut Vec<Arc<MediaFrame>>, max_frames: usize) -> Result<(), ReaderEnd> {
        if let Some(end) = self.ended.take() {
            return Err(end);
        }
        if let Some(at) = self.hold_until {
            self.hold(at).await;
            self.hold_until = None;
        }
        let first = out.len();
        let max = first + max_frames.max(1);
        loop {
            while out.len() < max {
                match self.try_recv() {
                    Ok(Some(f)) => out.push(f),
                    Ok(None) => break,
                    Err(end) if out.len() > first => {
                        self.ended = Some(end);
                        break;
                    }
                    Err(end) => return Err(end),
                }
            }
            if out.len() > first {
                break;
            }
            let f = self.recv().await?;
            out.push(f);
        }
        // A full batch means more is ready (the GOP backlog of a new reader, or a reader
        // catching up): no pause then.
        if !self.limits.coalesce.is_zero() && out.len() < max {
            self.hold_until = Some(tokio::time::Instant::now() + self.limits.coalesce);
        }
        Ok(())
    }

    /// Waits out the coalescing pause that ends at `at`, with one wake-up where it can: a
    /// timer per reader and batch is what fan-out to thousands of players pays for otherwise.
    /// Frames that come in bursts at least a pause apart are taken when they come (a little
    /// early is fine); frames that come more often wait for the timer. Cancel-safe.
    async fn hold(&mut self, at: tokio::time::Instant) {
        if self.hold_for_frame && !self.is_ready() {
            self.stream.ring.wait_ready(self.next).await;
            if at.saturating_duration_since(tokio::time::Instant::now()) <= self.limits.coalesce / 4 {
                return;
            }
            self.hold_for_frame = false;
        }
        tokio::time::sleep_until(at).await;
        if !self.is_ready() {
            self.hold_for_frame = true;
        }
    }

    /// Whether a frame (or the reader's end) is there to take without waiting.
    fn is_ready(&self) -> bool {
        !self.backlog.is_empty() || self.ended.is_some() || self.stream.ring.is_ready(self.next)
    }

    /// The next frame if one is ready now.
    pub fn try_recv(&mut self) -> Result<Option<Arc<MediaFrame>>, ReaderEnd> {
        loop {
            if let Some(f) = self.backlog.pop_front() {
                return Ok(Some(f));
            }
            let res = match self.stream.ring.try_recv(&mut self.next) {
                Err(RingError::Empty) => return Ok(None),
                res => res,
            };
            self.position.store(self.next, Ordering::Relaxed);
            if let Some(f) = self.accept(res)? {
                return Ok(Some(f));
            }
            if !self.backlog.is_empty() {
                continue;
            }
        }
    }

    fn accept(&mut self, res: Result<Arc<MediaFrame>, RingError>) -> Result<Option<Arc<MediaFrame>>, ReaderEnd> {
        match res {
            Ok(f) => Ok(self.filter(f)),
            // `recv` never answers Empty; treat it as nothing yet.
            Err(RingError::Empty) => Ok(None),
            Err(RingError::Closed) => Err(ReaderEnd::StreamEnded),
            Err(RingError::Lagged(n)) => {
                self.fell_behind(n)?;
                Ok(None)
            }
        }
    }

    fn filter(&mut self, f: Arc<MediaFrame>) -> Option<Arc<MediaFrame>> {
        if f.multitrack && !self.multitrack {
            return None;
        }
        match (f.kind, f.packet) {
            (FrameKind::Data, _) | (_, PacketKind::SequenceHeader) | (_, PacketKind::SequenceEnd) => Some(f),
            (FrameKind::Video, _) if self.await_keyframe => {
                if f.keyframe && !f.multitrack {
                    self.await_keyframe = false;
                    self.drop_audio = false;
                    Some(f)
                } else {
                    self.count_drop(1);
                    None
                }
            }
            (FrameKind::Audio, _) if self.drop_audio => {
                self.count_drop(1);
                None
            }
            _ => Some(f),
        }
    }

    fn count_drop(&mut self, n: u64) {
        self.dropped += n;
        self.stream.stats.frames_dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn fell_behind(&mut self, missed: u64) -> Result<(), ReaderEnd> {
        self.count_drop(missed);
        let now = Instant::now();
        self.skips.push_back(now);
        while self
            .skips
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.limits.window)
        {
            self.skips.pop_front();
        }
        if self.skips.len() as u32 > self.limits.max_skips {
            return Err(ReaderEnd::TooSlow(self.skips.len() as u32));
        }
        let s = self.stream.lock();
        let has_video = s.info.has_video;
        if s.headers_version != self.headers_version {
            self.headers_version = s.headers_version;
            self.backlog.extend(s.metadata.iter().cloned());
            self.backlog.extend(s.video_header.iter().cloned());
            self.backlog.extend(s.audio_header.iter().cloned());
            let multitrack = self.multitrack;
            self.backlog.extend(
                s.side_headers
                    .iter()
                    .map(|(_, f)| f.clone())
                    .filter(|f| multitrack || !f.multitrack),
            );
        }
        drop(s);
        if has_video {
            self.await_keyframe = true;
            self.drop_audio = true;
        }
        Ok(())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stream.ring.leave(&self.position);
        self.stream.stats.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebase_continues_after_reconnect() {
        let mut r = Rebase::default();
        assert_eq!(r.apply(0), 0);
        assert_eq!(r.apply(5000), 5000);
        r.pending = true;
        assert_eq!(r.apply(0), 5020);
        assert_eq!(r.apply(33), 5053);
    }
}
