//! The GOP cache: the frames since the latest video keyframe, so a new reader starts with a
//! picture at once. Bounded by frames and by bytes (each frame charged with its payload and
//! the RTMP and FLV encodings readers make of it); past either bound the GOP is dropped and
//! readers that join meanwhile wait for the next keyframe.

use std::collections::VecDeque;
use std::sync::Arc;

use super::frame::{FrameKind, MediaFrame};

/// How many recent frames an audio-only stream keeps for instant start.
const AUDIO_ONLY_FRAMES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GopLimits {
    pub enabled: bool,
    pub max_frames: usize,
    pub max_bytes: usize,
}

#[derive(Debug)]
pub struct GopCache {
    limits: GopLimits,
    frames: VecDeque<Arc<MediaFrame>>,
    bytes: usize,
    /// The cache starts at a video keyframe (false while waiting for one).
    anchored: bool,
}

impl GopCache {
    pub fn new(limits: GopLimits) -> Self {
        GopCache {
            limits,
            frames: VecDeque::new(),
            bytes: 0,
            anchored: false,
        }
    }

    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
        self.anchored = false;
    }

    /// Adds a media frame (sequence headers and metadata are kept by the stream, not here).
    /// `has_video`: the stream carries video, so the cache is anchored on keyframes.
    pub fn push(&mut self, frame: &Arc<MediaFrame>, has_video: bool) {
        if !self.limits.enabled {
            return;
        }
        if !has_video {
            if frame.kind == FrameKind::Audio {
                self.frames.push_back(frame.clone());
                self.bytes += frame.max_held_bytes();
                while self.frames.len() > AUDIO_ONLY_FRAMES.min(self.limits.max_frames)
                    || self.bytes > self.limits.max_bytes
                {
                    if let Some(f) = self.frames.pop_front() {
                        self.bytes -= f.max_held_bytes();
                    }
                }
            }
            return;
        }
        // Only the default track anchors the GOP; multitrack extras ride along.
        if frame.kind == FrameKind::Video && frame.keyframe && !frame.multitrack {
            self.clear();
            self.anchored = true;
        }
        if !self.anchored {
            return;
        }
        if self.frames.len() + 1 > self.limits.max_frames || self.bytes + frame.max_held_bytes() > self.limits.max_bytes
        {
            // An overlong GOP: serving part of it would start readers mid-GOP. Drop it.
            self.clear();
            return;
        }
        self.bytes += frame.max_held_bytes();
        self.frames.push_back(frame.clone());
    }

    pub fn frames(&self) -> impl Iterator<Item = &Arc<MediaFrame>> {
        self.frames.iter()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes charged against `max_bytes`: each frame at the most it can come to hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes the cached frames hold now, their encodings made so far included.
    pub fn held_bytes(&self) -> usize {
        self.frames.iter().map(|f| f.held_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::media::{FourCc, PacketKind};
    use bytes::Bytes;

    fn video(ts: u32, key: bool, size: usize) -> Arc<MediaFrame> {
        Arc::new(MediaFrame::new(
            FrameKind::Video,
            FourCc::AVC,
            ts,
            0,
            key,
            PacketKind::Frame,
            Bytes::from(vec![0u8; size]),
        ))
    }
    fn audio(ts: u32) -> Arc<MediaFrame> {
        Arc::new(MediaFrame::new(
            FrameKind::Audio,
            FourCc::AAC,
            ts,
            0,
            false,
            PacketKind::Frame,
            Bytes::from_static(b"\xaf\x01\x00"),
        ))
    }
    const LIMITS: GopLimits = GopLimits {
        enabled: true,
        max_frames: 100,
        max_bytes: 1 << 20,
    };

    #[test]
    fn cache_starts_at_latest_keyframe() {
        let mut g = GopCache::new(LIMITS);
        g.push(&video(0, false, 10), true);
        assert!(g.is_empty(), "nothing before the first keyframe");
        g.push(&video(33, true, 10), true);
        g.push(&audio(40), true);
        g.push(&video(66, false, 10), true);
        g.push(&video(99, true, 10), true);
        g.push(&video(133, false, 10), true);
        let ts: Vec<u32> = g.frames().map(|f| f.timestamp).collect();
        assert_eq!(ts, vec![99, 133]);
        assert!(g.frames().next().unwrap().keyframe);
    }

    #[test]
    fn overlong_gop_is_dropped_not_truncated() {
        let mut g = GopCache::new(GopLimits {
            max_frames: 3,
            ..LIMITS
        });
        g.push(&video(0, true, 10), true);
        g.push(&video(1, false, 10), true);
        g.push(&video(2, false, 10), true);
        assert_eq!(g.len(), 3);
        g.push(&video(3, false, 10), true);
        assert!(g.is_empty());
        g.push(&video(4, false, 10), true);
        assert!(g.is_empty(), "stays empty until the next keyframe");
        g.push(&video(5, true, 10), true);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn byte_bound_counts_encodings_and_holds() {
        let one = video(0, false, 1000).max_held_bytes();
        let mut g = GopCache::new(GopLimits {
            max_bytes: one * 2 + one / 2,
            ..LIMITS
        });
        g.push(&video(0, true, 1000), true);
        g.push(&video(1, false, 1000), true);
        assert_eq!(g.bytes(), 2 * one);
        // Counting payloads alone (2000 of 3000+ bytes) would have let a third frame in.
        g.push(&video(2, false, 1000), true);
        assert_eq!(g.bytes(), 0);
    }

    #[test]
    fn held_bytes_report_encodings_once_made() {
        let mut g = GopCache::new(LIMITS);
        let f = video(0, true, 1000);
        g.push(&f, true);
        let before = g.held_bytes();
        f.flv_tag();
        f.shared_rtmp_headers();
        // The FLV tag copies the payload; RTMP's chunk headers live in the frame itself.
        assert!(g.held_bytes() >= before + 1000 + 12, "{} vs {before}", g.held_bytes());
        assert!(g.held_bytes() <= g.bytes());
    }

    #[test]
    fn disabled_cache_keeps_nothing() {
        let mut g = GopCache::new(GopLimits {
            enabled: false,
            ..LIMITS
        });
        g.push(&video(0, true, 10), true);
        assert!(g.is_empty());
    }

    #[test]
    fn audio_only_stream_keeps_a_bounded_window() {
        let mut g = GopCache::new(LIMITS);
        for i in 0..200 {
            g.push(&audio(i), false);
        }
        assert_eq!(g.len(), AUDIO_ONLY_FRAMES);
        assert_eq!(g.frames().next().unwrap().timestamp, 200 - AUDIO_ONLY_FRAMES as u32);
    }
}
