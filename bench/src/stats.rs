//! Per-player counters (written by the player's task only, read by the reporter) and the
//! arithmetic of the report: percentiles and the keep-up test.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// Player states.
pub const CONNECTING: u8 = 0;
/// The server accepted the session (HTTP 200, WebSocket 101, RTMP play started).
pub const CONNECTED: u8 = 1;
/// Connecting failed, or the connection ended or broke.
pub const FAILED: u8 = 2;

/// A media timestamp advance of at least this share of the wall-clock window is "real time".
pub const KEEP_UP_RATIO: f64 = 0.95;

#[derive(Debug, Default)]
pub struct PlayerStats {
    state: AtomicU8,
    /// Bytes read from the socket.
    bytes: AtomicU64,
    /// Timestamp (ms) of the latest audio or video tag.
    media_ts: AtomicU32,
    has_media: AtomicBool,
    /// Video tags (frames) received, sequence headers included.
    video_frames: AtomicU64,
    /// Microseconds from connect start to the first video keyframe, plus one (0 = none yet).
    first_keyframe_us: AtomicU64,
    /// HLS: times the simulated playback buffer ran dry.
    stalls: AtomicU64,
}

/// One reading of a player's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub state: u8,
    pub bytes: u64,
    pub media_ts: Option<u32>,
    pub video_frames: u64,
    pub stalls: u64,
}

impl PlayerStats {
    pub fn set_state(&self, s: u8) {
        self.state.store(s, Relaxed);
    }

    pub fn state(&self) -> u8 {
        self.state.load(Relaxed)
    }

    /// Only the player's own task writes, so load + store is enough (and cheaper than an
    /// atomic add).
    pub fn add_bytes(&self, n: usize) {
        self.bytes.store(self.bytes.load(Relaxed) + n as u64, Relaxed);
    }

    pub fn media(&self, timestamp: u32) {
        self.media_ts.store(timestamp, Relaxed);
        if !self.has_media.load(Relaxed) {
            self.has_media.store(true, Relaxed);
        }
    }

    pub fn stall(&self) {
        self.stalls.store(self.stalls.load(Relaxed) + 1, Relaxed);
    }

    pub fn video_frame(&self) {
        self.video_frames.store(self.video_frames.load(Relaxed) + 1, Relaxed);
    }

    /// Records the first keyframe; later calls do nothing.
    pub fn keyframe(&self, since_connect_start: std::time::Duration) {
        if self.first_keyframe_us.load(Relaxed) == 0 {
            self.first_keyframe_us
                .store(since_connect_start.as_micros() as u64 + 1, Relaxed);
        }
    }

    pub fn has_keyframe(&self) -> bool {
        self.first_keyframe_us.load(Relaxed) != 0
    }

    /// Time to first keyframe in milliseconds.
    pub fn first_keyframe_ms(&self) -> Option<f64> {
        match self.first_keyframe_us.load(Relaxed) {
            0 => None,
            us => Some((us - 1) as f64 / 1000.0),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            media_ts: self.has_media.load(Relaxed).then(|| self.media_ts.load(Relaxed)),
            video_frames: self.video_frames.load(Relaxed),
            stalls: self.stalls.load(Relaxed),
        }
    }
}

/// Whether a player kept up with real time between two snapshots `window_ms` apart: connected
/// at both ends, and its media timestamp advanced by at least [`KEEP_UP_RATIO`] of the window
/// (the difference is taken modulo 2^32, as RTMP timestamps wrap).
pub fn keeps_up(start: &Snapshot, end: &Snapshot, window_ms: f64) -> bool {
    if start.state != CONNECTED || end.state != CONNECTED {
        return false;
    }
    let (Some(a), Some(b)) = (start.media_ts, end.media_ts) else {
        return false;
    };
    let advance = b.wrapping_sub(a) as i32;
    f64::from(advance) >= KEEP_UP_RATIO * window_ms
}

/// Players keeping up, over all players asked for (so failed and missing players count
/// against it).
pub fn keep_up_fraction(start: &[Snapshot], end: &[Snapshot], window_ms: f64, players: usize) -> (usize, f64) {
    let n = start.iter().zip(end).filter(|(a, b)| keeps_up(a, b, window_ms)).count();
    let fraction = if players == 0 { 0.0 } else { n as f64 / players as f64 };
    (n, fraction)
}

/// Video frames per second each player received over the window (players connected at both
/// ends only), ascending. With a constant-rate source, a player whose server skipped frames
/// for it shows up below the source rate even when its timestamps kept up.
pub fn video_fps(start: &[Snapshot], end: &[Snapshot], window_secs: f64) -> Vec<f64> {
    let mut v: Vec<f64> = start
        .iter()
        .zip(end)
        .filter(|(a, b)| a.state == CONNECTED && b.state == CONNECTED)
        .map(|(a, b)| (b.video_frames - a.video_frames) as f64 / window_secs)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Nearest-rank percentile (`p` in 0..=100) of an ascending slice.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let cases: Vec<(&str, &[f64], f64, Option<f64>)> = vec![
            ("empty", &[], 50.0, None),
            ("single p50", &[7.0], 50.0, Some(7.0)),
            ("single p99", &[7.0], 99.0, Some(7.0)),
            ("1..100 p50", &v, 50.0, Some(50.0)),
            ("1..100 p99", &v, 99.0, Some(99.0)),
            ("1..100 p100", &v, 100.0, Some(100.0)),
            ("1..100 p0 is the minimum", &v, 0.0, Some(1.0)),
            ("four values p50", &[1.0, 2.0, 3.0, 4.0], 50.0, Some(2.0)),
            ("four values p99", &[1.0, 2.0, 3.0, 4.0], 99.0, Some(4.0)),
        ];
        for (name, input, p, want) in cases {
            assert_eq!(percentile(input, p), want, "{name}");
        }
    }

    fn snap(state: u8, ts: Option<u32>) -> Snapshot {
        Snapshot {
            state,
            bytes: 0,
            media_ts: ts,
            video_frames: 0,
            stalls: 0,
        }
    }

    #[test]
    fn keep_up_table() {
        let window = 10_000.0;
        let cases: Vec<(&str, Snapshot, Snapshot, bool)> = vec![
            (
                "exactly real time",
                snap(CONNECTED, Some(1000)),
                snap(CONNECTED, Some(11_000)),
                true,
            ),
            (
                "at the 95% bound",
                snap(CONNECTED, Some(1000)),
                snap(CONNECTED, Some(10_500)),
                true,
            ),
            (
                "just under the bound",
                snap(CONNECTED, Some(1000)),
                snap(CONNECTED, Some(10_499)),
                false,
            ),
            (
                "stalled",
                snap(CONNECTED, Some(1000)),
                snap(CONNECTED, Some(1000)),
                false,
            ),
            (
                "failed during the window",
                snap(CONNECTED, Some(1000)),
                snap(FAILED, Some(11_000)),
                false,
            ),
            (
                "connected late",
                snap(CONNECTING, None),
                snap(CONNECTED, Some(11_000)),
                false,
            ),
            (
                "no media yet",
                snap(CONNECTED, None),
                snap(CONNECTED, Some(11_000)),
                false,
            ),
            (
                "timestamp wraps",
                snap(CONNECTED, Some(u32::MAX - 999)),
                snap(CONNECTED, Some(9_000)),
                true,
            ),
            (
                "timestamp went back",
                snap(CONNECTED, Some(50_000)),
                snap(CONNECTED, Some(100)),
                false,
            ),
        ];
        for (name, a, b, want) in cases {
            assert_eq!(keeps_up(&a, &b, window), want, "{name}");
        }
    }

    #[test]
    fn keep_up_fraction_counts_missing_players() {
        let start = vec![
            snap(CONNECTED, Some(0)),
            snap(CONNECTED, Some(0)),
            snap(CONNECTED, Some(0)),
        ];
        let end = vec![
            snap(CONNECTED, Some(10_000)),
            snap(CONNECTED, Some(2_000)),
            snap(FAILED, Some(10_000)),
        ];
        assert_eq!(keep_up_fraction(&start, &end, 10_000.0, 4), (1, 0.25));
        assert_eq!(keep_up_fraction(&[], &[], 10_000.0, 0), (0, 0.0));
    }

    #[test]
    fn video_fps_of_connected_players() {
        let s = |state, frames| Snapshot {
            state,
            bytes: 0,
            media_ts: None,
            video_frames: frames,
            stalls: 0,
        };
        let start = vec![s(CONNECTED, 10), s(CONNECTED, 0), s(CONNECTING, 0), s(CONNECTED, 5)];
        let end = vec![s(CONNECTED, 310), s(CONNECTED, 150), s(CONNECTED, 300), s(FAILED, 50)];
        assert_eq!(video_fps(&start, &end, 10.0), vec![15.0, 30.0]);
    }

    #[test]
    fn player_counters() {
        let p = PlayerStats::default();
        assert_eq!(
            p.snapshot(),
            Snapshot {
                state: CONNECTING,
                bytes: 0,
                media_ts: None,
                video_frames: 0,
                stalls: 0
            }
        );
        p.add_bytes(10);
        p.add_bytes(5);
        p.media(40);
        p.video_frame();
        p.stall();
        p.set_state(CONNECTED);
        assert_eq!(
            p.snapshot(),
            Snapshot {
                state: CONNECTED,
                bytes: 15,
                media_ts: Some(40),
                video_frames: 1,
                stalls: 1
            }
        );
        assert_eq!(p.first_keyframe_ms(), None);
        p.keyframe(std::time::Duration::from_micros(12_500));
        p.keyframe(std::time::Duration::from_secs(9));
        assert_eq!(p.first_keyframe_ms(), Some(12.5));
    }
}
