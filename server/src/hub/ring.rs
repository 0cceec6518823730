//! The broadcast ring of one stream: the recent frames every reader takes from, bounded in
//! frames and in bytes (what the frames really hold, their cached encodings included).
//!
//! Why not `tokio::sync::broadcast`: its ring is bounded in slots only, so 512 slots of
//! 16 MiB messages could pin gigabytes per stream. Here the publisher evicts the oldest
//! frames when either bound is passed, and a reader whose next frame was evicted learns how
//! many it missed (and skips to a keyframe, as before). The publisher never waits on a reader.
//!
//! Readers publish their positions, and every few pushes the publisher lets go of the frames
//! every reader has taken: a ring of readers that keep up holds a few frames, not its bounds.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::Notify;

use super::frame::MediaFrame;

/// Bounds of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLimits {
    pub max_frames: usize,
    /// Bytes the ring's frames may hold (counted as [`MediaFrame::max_held_bytes`]). The newest
    /// frame is always kept, even when it alone is larger.
    pub max_bytes: usize,
}

/// What a reader gets besides a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// Nothing new yet.
    Empty,
    /// The reader's next frames were evicted; it continues at the oldest frame kept.
    Lagged(u64),
    /// The stream ended.
    Closed,
}

#[derive(Debug, Default)]
struct RingState {
    frames: VecDeque<Arc<MediaFrame>>,
    /// Sequence number of `frames[0]`; a frame's sequence number never changes.
    first_seq: u64,
    bytes: usize,
    closed: bool,
    /// Each reader's position (the sequence number of its next frame, or an earlier one).
    readers: Vec<Arc<AtomicU64>>,
    /// Pushes since frames every reader has taken were last let go.
    since_release: u32,
}

impl RingState {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.frames.len() as u64
    }

    fn pop_front(&mut self) {
        if let Some(f) = self.frames.pop_front() {
            self.bytes -= f.max_held_bytes();
            self.first_seq += 1;
        }
    }
}

/// Frames every reader has taken are let go every this many pushes: finding the slowest
/// reader reads every reader's position.
const RELEASE_EVERY: u32 = 16;

#[derive(Debug)]
pub struct Ring {
    limits: RingLimits,
    state: RwLock<RingState>,
    notify: Notify,
}

impl Ring {
    pub fn new(limits: RingLimits) -> Ring {
        Ring {
            limits: RingLimits {
                max_frames: limits.max_frames.max(1),
                max_bytes: limits.max_bytes,
            },
            state: RwLock::new(RingState::default()),
            notify: Notify::new(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, RingState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, RingState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a frame, evicting the oldest past either bound, and wakes waiting readers.
    pub fn push(&self, frame: Arc<MediaFrame>) {
        self.push_quietly(frame);
        self.notify.notify_waiters();
    }

    /// Appends a frame without waking readers: the caller calls [`Ring::wake`] after a batch.
    pub fn push_quietly(&self, frame: Arc<MediaFrame>) {
        {
            let mut s = self.write();
            if s.closed {
                return;
            }
            s.bytes += frame.max_held_bytes();
            s.frames.push_back(frame);
            while s.frames.len() > self.limits.max_frames || (s.bytes > self.limits.max_bytes && s.frames.len() > 1) {
                s.pop_front();
            }
            s.since_release += 1;
            if s.since_release >= RELEASE_EVERY {
                s.since_release = 0;
                let end = s.end_seq();
                let oldest = s.readers.iter().map(|r| r.load(Ordering::Relaxed)).min().unwrap_or(end);
                while s.first_seq < oldest && !s.frames.is_empty() {
                    s.pop_front();
                }
            }
        }
    }

    /// Places a new reader after every frame already in the ring; its position (to keep
    /// current with [`Ring::try_recv`] and [`Ring::recv`]'s `next`) holds the frames it has
    /// not taken yet. Give it back with [`Ring::leave`].
    pub fn join(&self) -> (u64, Arc<AtomicU64>) {
        let mut s = self.write();
        let next = s.end_seq();
        let pos = Arc::new(AtomicU64::new(next));
        s.readers.push(pos.clone());
        (next, pos)
    }

    /// Forgets a reader's position.
    pub fn leave(&self, pos: &Arc<AtomicU64>) {
        let mut s = self.write();
        if let Some(i) = s.readers.iter().position(|r| Arc::ptr_eq(r, pos)) {
            s.readers.swap_remove(i);
        }
    }

    /// Wakes the readers waiting for a frame.
    pub fn wake(&self) {
        self.notify.notify_waiters();
    }

    /// Drops every frame (no reader needs them); readers positioned at the end are unaffected.
    pub fn clear(&self) {
        let mut s = self.write();
        while !s.frames.is_empty() {
            s.pop_front();
        }
    }

    /// Ends the ring: readers get [`RingError::Closed`] once they have read what is left.
    pub fn close(&self) {
        self.write().closed = true;
        self.notify.notify_waiters();
    }

    /// Whether the stream ended.
    pub fn is_closed(&self) -> bool {
        self.read().closed
    }

    /// Bytes the frames in the ring hold now (encodings made so far included).
    pub fn held_bytes(&self) -> usize {
        self.read().frames.iter().map(|f| f.held_bytes()).sum()
    }

    pub fn len(&self) -> usize {
        self.read().frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame at `*next` if there is one, advancing `*next`.
    pub fn try_recv(&self, next: &mut u64) -> Result<Arc<MediaFrame>, RingError> {
        let s = self.read();
        if *next < s.first_seq {
            let missed = s.first_seq - *next;
            *next = s.first_seq;
            return Err(RingError::Lagged(missed));
        }
        match s.frames.get((*next - s.first_seq) as usize) {
            Some(f) => {
                *next += 1;
                Ok(f.clone())
            }
            None if s.closed => Err(RingError::Closed),
            None => Err(RingError::Empty),
        }
    }

    /// Whether a read at `next` would answer at once (a frame, a lag or the end).
    pub fn is_ready(&self, next: u64) -> bool {
        let s = self.read();
        next < s.first_seq || next < s.end_seq() || s.closed
    }

    /// Waits until a read at `next` would answer at once, taking nothing. Cancel-safe.
    pub async fn wait_ready(&self, next: u64) {
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            if self.is_ready(next) {
                return;
            }
            notified.await;
        }
    }

    /// Waits for the frame at `*next` (or a lag or the end). Cancel-safe: `*next` only moves
    /// when a result is returned.
    pub async fn recv(&self, next: &mut u64) -> Result<Arc<MediaFrame>, RingError> {
        loop {
            // Registered before looking, so a push between the look and the wait still wakes us.
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            match self.try_recv(next) {
                Err(RingError::Empty) => notified.await,
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::media::{FourCc, PacketKind};
    use crate::hub::frame::FrameKind;
    use bytes::Bytes;

    fn frame(size: usize) -> Arc<MediaFrame> {
        Arc::new(MediaFrame::new(
            FrameKind::Video,
            FourCc::AVC,
            0,
            0,
            false,
            PacketKind::Frame,
            Bytes::from(vec![0u8; size]),
        ))
    }

    #[test]
    fn frames_every_reader_has_taken_are_let_go() {
        let ring = Ring::new(RingLimits {
            max_frames: 512,
            max_bytes: usize::MAX,
        });
        let (mut fast, fast_pos) = ring.join();
        let (slow, slow_pos) = ring.join();
        for _ in 0..64 {
            ring.push(frame(10));
            ring.try_recv(&mut fast).unwrap();
            fast_pos.store(fast, Ordering::Relaxed);
        }
        assert_eq!(ring.len(), 64, "kept for the reader that took nothing yet");
        slow_pos.store(slow + 40, Ordering::Relaxed);
        for _ in 0..RELEASE_EVERY {
            ring.push(frame(10));
        }
        assert_eq!(
            ring.len() as u32,
            64 - 40 + RELEASE_EVERY,
            "the frames both have taken are gone"
        );
        ring.leave(&slow_pos);
        for _ in 0..RELEASE_EVERY {
            ring.push(frame(10));
        }
        assert_eq!(
            ring.len() as u32,
            2 * RELEASE_EVERY,
            "only what the fast reader has not taken"
        );
        ring.leave(&fast_pos);
        for _ in 0..RELEASE_EVERY {
            ring.push(frame(10));
        }
        assert!(ring.is_empty(), "no reader: nothing kept");
    }

    #[test]
    fn bounded_in_frames() {
        let ring = Ring::new(RingLimits {
            max_frames: 4,
            max_bytes: usize::MAX,
        });
        let (mut next, _position) = ring.join();
        for _ in 0..10 {
            ring.push(frame(10));
        }
        assert_eq!(ring.len(), 4);
        assert_eq!(ring.try_recv(&mut next).err(), Some(RingError::Lagged(6)));
        for _ in 0..4 {
            assert!(ring.try_recv(&mut next).is_ok());
        }
        assert_eq!(ring.try_recv(&mut next).err(), Some(RingError::Empty));
    }

    #[test]
    fn bounded_in_bytes_counting_encodings() {
        let one = frame(1000).max_held_bytes();
        // The FLV tag is a copy of the payload; RTMP adds only its chunk headers.
        assert!(
            one >= 2000 + 25,
            "payload, RTMP and FLV encodings are all counted: {one}"
        );
        let ring = Ring::new(RingLimits {
            max_frames: 512,
            max_bytes: one * 3,
        });
        for _ in 0..100 {
            ring.push(frame(1000));
        }
        assert_eq!(ring.len(), 3, "the byte bound wins over the frame bound");
        // A single frame over the bound is still delivered.
        ring.push(frame(100_000));
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn closed_after_the_rest_is_read() {
        let ring = Ring::new(RingLimits {
            max_frames: 8,
            max_bytes: usize::MAX,
        });
        let (mut next, _position) = ring.join();
        ring.push(frame(1));
        ring.close();
        ring.push(frame(1));
        assert!(ring.try_recv(&mut next).is_ok());
        assert_eq!(ring.try_recv(&mut next).err(), Some(RingError::Closed));
    }

    #[test]
    fn clear_keeps_readers_at_the_end_in_place() {
        let ring = Ring::new(RingLimits {
            max_frames: 8,
            max_bytes: usize::MAX,
        });
        ring.push(frame(1));
        let (mut next, _position) = ring.join();
        ring.clear();
        ring.push(frame(1));
        assert!(ring.try_recv(&mut next).is_ok(), "no lag reported");
    }

    #[tokio::test]
    async fn recv_wakes_on_push() {
        let ring = Arc::new(Ring::new(RingLimits {
            max_frames: 8,
            max_bytes: usize::MAX,
        }));
        let (mut next, _position) = ring.join();
        let r = ring.clone();
        let waiter = tokio::spawn(async move { r.recv(&mut next).await.map(|f| f.payload.len()) });
        tokio::task::yield_now().await;
        ring.push(frame(7));
        assert_eq!(waiter.await.unwrap().ok(), Some(7));
    }
}
