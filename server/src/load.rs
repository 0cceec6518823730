//! Server load over the last minutes: a small in-memory ring of samples (CPU, memory,
//! bandwidth in and out, sessions) taken every [`INTERVAL`] by one task, served by
//! `GET /api/v1/load` and drawn by the web console. Nothing is kept across restarts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::session::{Role, Sessions};

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept: ten minutes.
pub const CAPACITY: usize = 300;

/// One sample of the server's load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Unix milliseconds.
    pub time: u64,
    /// Process CPU use over the interval, in percent of one core (200 = two cores busy).
    pub cpu_percent: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// Bits per second received (ingest, pushes) and sent (players, relays) over the interval.
    pub in_bits_per_sec: u64,
    pub out_bits_per_sec: u64,
    pub sessions: usize,
    pub publishers: usize,
    pub players: usize,
}

/// The ring of recent samples.
#[derive(Default)]
pub struct LoadHistory {
    samples: Mutex<VecDeque<Sample>>,
}

impl LoadHistory {
    pub fn new() -> Arc<LoadHistory> {
        Arc::new(LoadHistory::default())
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Sample>> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, s: Sample) {
        let mut ring = self.lock();
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// Samples every [`INTERVAL`] until `shutdown` flips.
    pub async fn run(self: Arc<Self>, sessions: Arc<Sessions>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut sampler = Sampler::default();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Some(s) = sampler.sample(&sessions) {
                self.push(s);
            }
        }
    }
}

/// What the previous sample saw, to turn counters into rates.
#[derive(Default)]
struct Sampler {
    last: Option<(std::time::Instant, f64)>,
    /// Bytes in and out of each live session at the previous sample. A session that ended
    /// in between loses its last interval's bytes: its counters are gone with it.
    bytes: HashMap<u64, (u64, u64)>,
}

impl Sampler {
    fn sample(&mut self, sessions: &Sessions) -> Option<Sample> {
        let now = std::time::Instant::now();
        let cpu = process_cpu_secs();
        let list = sessions.list();
        let (mut inb, mut outb, mut publishers, mut players) = (0u64, 0u64, 0, 0);
        let mut bytes = HashMap::with_capacity(list.len());
        for s in &list {
            let (i, o) = (s.bytes_in.load(Relaxed), s.bytes_out.load(Relaxed));
            let (pi, po) = self.bytes.get(&s.id).copied().unwrap_or((0, 0));
            inb += i.saturating_sub(pi);
            outb += o.saturating_sub(po);
            bytes.insert(s.id, (i, o));
            match s.activity() {
                Some((Role::Publisher, _)) => publishers += 1,
                Some((Role::Player, _)) => players += 1,
                None => {}
            }
        }
        self.bytes = bytes;
        let last = self.last.replace((now, cpu.unwrap_or(0.0)));
        // The first call only sets the baseline.
        let (then, cpu_then) = last?;
        let secs = now.duration_since(then).as_secs_f64().max(0.001);
        Some(Sample {
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            cpu_percent: cpu.map_or(0.0, |c| ((c - cpu_then).max(0.0) / secs * 1000.0).round() / 10.0),
            rss_bytes: process_rss().unwrap_or(0),
            in_bits_per_sec: (inb as f64 * 8.0 / secs) as u64,
            out_bits_per_sec: (outb as f64 * 8.0 / secs) as u64,
            sessions: list.len(),
            publishers,
            players,
        })
    }
}

/// Process CPU seconds (user + system) from `/proc/self/stat`.
pub fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime (fields 14 and 15 of the line) in clock ticks, 100 per second on Linux.
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok().map(|t| t / 100.0);
    Some(ticks(11)? + ticks(12)?)
}

/// Resident memory in bytes from `/proc/self/status`.
fn process_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Protocol;

    #[test]
    fn the_ring_keeps_the_latest_samples_in_order() {
        let h = LoadHistory::new();
        let at = |t| Sample {
            time: t,
            cpu_percent: 0.0,
            rss_bytes: 0,
            in_bits_per_sec: 0,
            out_bits_per_sec: 0,
            sessions: 0,
            publishers: 0,
            players: 0,
        };
        for t in 0..(CAPACITY as u64 + 7) {
            h.push(at(t));
        }
        let s = h.samples();
        assert_eq!(s.len(), CAPACITY);
        assert_eq!(s.first().unwrap().time, 7);
        assert_eq!(s.last().unwrap().time, CAPACITY as u64 + 6);
    }

    #[test]
    fn bandwidth_is_the_bytes_sessions_moved_since_the_last_sample() {
        let sessions = Arc::new(Sessions::new(Arc::new(crate::metrics::Metrics::new())));
        let g = sessions.open(Protocol::Rtmp, "10.0.0.1:1".into());
        g.set_activity(Some((
            Role::Publisher,
            crate::hub::StreamKey::new("live", "a").unwrap(),
        )));
        g.entry().bytes_in.store(1_000_000, Relaxed);
        let mut sampler = Sampler::default();
        assert!(sampler.sample(&sessions).is_none(), "the first call is the baseline");
        g.entry().bytes_in.store(1_250_000, Relaxed);
        let s = sampler.sample(&sessions).unwrap();
        assert_eq!((s.sessions, s.publishers, s.players), (1, 1, 0));
        // 250 000 bytes over a few microseconds: a huge rate, but only the delta counts.
        assert!(s.in_bits_per_sec > 2_000_000, "{s:?}");
        assert_eq!(s.out_bits_per_sec, 0);
        assert!(s.rss_bytes > 0);
        let s = sampler.sample(&sessions).unwrap();
        assert_eq!(s.in_bits_per_sec, 0, "nothing moved since");
    }
}
