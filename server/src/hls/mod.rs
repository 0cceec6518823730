//! HLS, LL-HLS and DASH from memory: one segmenter per stream, a hub subscriber, whose
//! window every HLS and DASH client reads; nothing is copied per client.
//!
//! # Layout
//! - [`segmenter`]: frames in, init segments, parts and segments out (sans-IO).
//! - [`track`]: codec configuration and sample bytes from FLV / enhanced-RTMP frames.
//! - [`playlist`]: multivariant and LL-HLS media playlists, the TS playlist, the DASH MPD.
//! - [`file`]: complete segments as sealed memory files, spliced into plain-HTTP sockets.
//! - [`session`]: the `hs` session token that carries a playlist's authorization to
//!   segments and counts viewers.
//!
//! This module owns the segmenters' lifecycle: on demand (started by the first request,
//! stopped after `idle_timeout_secs` without one) or always (started when a stream of the
//! app is published), and ended with their stream.

pub mod file;
pub mod playlist;
pub mod segmenter;
pub mod session;
pub mod track;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{AppConfig, Config, HlsMode};
use crate::hub::{Hub, StreamKey, Subscriber};
use crate::metrics::Metrics;
use segmenter::{Segmenter, Settings};
use session::SessionKey;

/// A viewer counts while it requested something within this window.
const VIEWER_WINDOW: Duration = Duration::from_secs(30);
/// Viewers tracked per stream (an approximate count; beyond this new ids are not added).
const MAX_VIEWERS: usize = 200_000;
/// Frames taken from the hub per lock of the segmenter.
const BATCH: usize = 256;

/// Why HLS could not start for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HlsError {
    #[error("HLS is off for this app")]
    Off,
    #[error("stream not found")]
    NotPublished,
    #[error("server is shutting down")]
    ShuttingDown,
}

/// Error loading the HLS session keys.
#[derive(Debug, thiserror::Error)]
#[error("apps[{app}].hls.session_secret_file {path}: {source}")]
pub struct KeyError {
    app: String,
    path: String,
    source: std::io::Error,
}

/// One stream's segmenter, shared by its task and every HLS/DASH request.
pub struct StreamHls {
    pub key: StreamKey,
    state: Mutex<Segmenter>,
    /// Carries the segmenter's version; requests waiting for a part wake on it.
    changed: watch::Sender<u64>,
    last_request: Mutex<Instant>,
    viewers: Mutex<HashMap<u64, Instant>>,
    ended: AtomicBool,
    playlists: playlist::PlaylistCache,
}

impl StreamHls {
    /// Runs `f` on the segmenter under its lock (keep it short: the segmenter task waits).
    pub fn with<R>(&self, f: impl FnOnce(&Segmenter) -> R) -> R {
        f(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Segmenter> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on several segmenters at once (a stream and its renditions), locked in the
    /// order given; only this locks more than one, so the order cannot deadlock.
    pub fn with_all<R>(streams: &[Arc<StreamHls>], f: impl FnOnce(&[&Segmenter]) -> R) -> R {
        let guards: Vec<MutexGuard<'_, Segmenter>> = streams.iter().map(|s| s.lock()).collect();
        let segs: Vec<&Segmenter> = guards.iter().map(|g| &**g).collect();
        f(&segs)
    }

    /// The media playlist of `track` with `query` on every URI (rendered once per change).
    /// A media playlist; `delta` asks for a delta update (`_HLS_skip`).
    pub fn media_playlist(&self, track: segmenter::TrackName, prefix: &str, query: &str, delta: bool) -> String {
        self.playlists.media(&self.lock(), track, prefix, query, delta)
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Waits until `ready` holds, woken by the segmenter (never by polling); false when the
    /// time ran out or the stream ended first.
    pub async fn wait_for(&self, timeout: Duration, ready: impl Fn(&Segmenter) -> bool) -> bool {
        let mut rx = self.changed.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if self.with(&ready) {
                return true;
            }
            if self.is_ended() {
                return false;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.with(&ready),
            }
        }
    }

    /// Records a request (keeps an on-demand segmenter alive) and its session.
    pub fn touch(&self, session: Option<u64>) {
        let now = Instant::now();
        *self.last_request.lock().unwrap_or_else(|e| e.into_inner()) = now;
        if let Some(id) = session {
            let mut v = self.viewers.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() < MAX_VIEWERS || v.contains_key(&id) {
                v.insert(id, now);
            }
        }
    }

    /// Sessions seen within the viewer window (older ones are forgotten).
    pub fn viewers(&self) -> usize {
        let now = Instant::now();
        let mut v = self.viewers.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|_, seen| now.duration_since(*seen) < VIEWER_WINDOW);
        v.len()
    }

    fn idle_for(&self) -> Duration {
        Instant::now().duration_since(*self.last_request.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Every stream's segmenter.
pub struct Hls {
    hub: Hub,
    metrics: Arc<Metrics>,
    streams: Mutex<HashMap<StreamKey, Arc<StreamHls>>>,
    /// Session token keys by app: from `session_secret_file`, else random per process.
    keys: RwLock<HashMap<String, SessionKey>>,
    shutdown: watch::Receiver<bool>,
}

impl Hls {
    pub fn new(
        config: &Config,
        hub: Hub,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Hls>, KeyError> {
        let mut keys = HashMap::new();
        for app in &config.apps {
            keys.insert(app.name.clone(), load_key(app)?);
        }
        Ok(Arc::new(Hls {
            hub,
            metrics,
            streams: Mutex::new(HashMap::new()),
            keys: RwLock::new(keys),
            shutdown,
        }))
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<StreamKey, Arc<StreamHls>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session key of `app` (an app added by a reload gets a random one).
    pub fn session_key(&self, app: &str) -> SessionKey {
        if let Some(k) = self.keys.read().unwrap_or_else(|e| e.into_inner()).get(app) {
            return k.clone();
        }
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(app.to_string())
            .or_insert_with(SessionKey::random)
            .clone()
    }

    /// The app's current configuration (it may have been reloaded).
    pub fn app(&self, app: &str) -> Option<AppConfig> {
        self.app_with(app, AppConfig::clone)
    }

    /// `f` of the app's current configuration, without copying it (per request).
    pub fn app_with<R>(&self, app: &str, f: impl FnOnce(&AppConfig) -> R) -> Option<R> {
        self.hub.apps().iter().find(|a| a.name == app).map(f)
    }

    /// The segmenter of a stream that is segmented now.
    pub fn get(&self, key: &StreamKey) -> Option<Arc<StreamHls>> {
        self.registry().get(key).filter(|s| !s.is_ended()).cloned()
    }

    /// The stream's segmenter, started if needed (the stream must be published).
    pub fn get_or_start(self: &Arc<Self>, key: &StreamKey) -> Result<Arc<StreamHls>, HlsError> {
        if let Some(s) = self.get(key) {
            return Ok(s);
        }
        let app = self.app(&key.app).ok_or(HlsError::NotPublished)?;
        if app.hls.mode == HlsMode::Off {
            return Err(HlsError::Off);
        }
        if *self.shutdown.borrow() {
            return Err(HlsError::ShuttingDown);
        }
        let stream = self
            .hub
            .stream(key)
            .filter(|s| s.is_published())
            .ok_or(HlsError::NotPublished)?;
        let mut streams = self.registry();
        if let Some(s) = streams.get(key).filter(|s| !s.is_ended()) {
            return Ok(s.clone());
        }
        let sub = self.hub.subscribe(key).map_err(|_| HlsError::NotPublished)?;
        let info = stream.info();
        // The publisher's start time: a stream published anew never reuses an old one's URLs.
        let epoch = info
            .publisher
            .as_ref()
            .and_then(|p| p.started.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let h = &app.hls;
        let settings = Settings {
            target_ms: (h.segment_secs * 1000) as i64,
            part_target_ms: h.part_ms as i64,
            window: h.window_segments,
            max_bytes: h.max_bytes,
        };
        let s = Arc::new(StreamHls {
            key: key.clone(),
            state: Mutex::new(Segmenter::new(settings, epoch, info.has_video)),
            changed: watch::channel(0).0,
            last_request: Mutex::new(Instant::now()),
            viewers: Mutex::new(HashMap::new()),
            ended: AtomicBool::new(false),
            playlists: playlist::PlaylistCache::default(),
        });
        streams.insert(key.clone(), s.clone());
        drop(streams);
        let idle = (h.mode == HlsMode::OnDemand).then(|| Duration::from_secs(h.idle_timeout_secs));
        tracing::info!(stream = %key, mode = ?h.mode, "hls segmenter started");
        tokio::spawn(self.clone().run(s.clone(), sub, idle));
        Ok(s)
    }

    /// Feeds one segmenter from its hub subscription until the stream ends, the server
    /// shuts down or (on demand) nobody asked for it within `idle`.
    async fn run(self: Arc<Self>, s: Arc<StreamHls>, mut sub: Subscriber, idle: Option<Duration>) {
        let labels = [s.key.app.clone(), s.key.name.clone()];
        let labels = [labels[0].as_str(), labels[1].as_str()];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut shutdown = self.shutdown.clone();
        let mut batch = Vec::with_capacity(BATCH);
        let why = loop {
            tokio::select! {
                r = sub.recv() => {
                    let Ok(first) = r else { break "stream ended" };
                    batch.push(first);
                    while batch.len() < BATCH {
                        match sub.try_recv() {
                            Ok(Some(f)) => batch.push(f),
                            _ => break,
                        }
                    }
                    let caught_up = batch.len() < BATCH;
                    let (made, version) = {
                        let mut seg = s.lock();
                        let before = seg.segments_made;
                        for f in batch.drain(..) {
                            seg.push(&f);
                        }
                        if caught_up {
                            seg.mark_live(SystemTime::now());
                        }
                        (seg.segments_made - before, seg.version)
                    };
                    if made > 0 {
                        self.metrics.hls_segments.with_label_values(&[labels[0]]).inc_by(made);
                    }
                    // Waiters wake only when something appeared, not for every batch.
                    s.changed.send_if_modified(|v| std::mem::replace(v, version) != version);
                }
                _ = tick.tick() => {
                    if idle.is_some_and(|idle| s.idle_for() > idle) {
                        break "idle";
                    }
                    self.metrics.stream_hls_bytes.with_label_values(&labels).set(s.with(|g| g.held_bytes()) as i64);
                    self.metrics.stream_hls_viewers.with_label_values(&labels).set(s.viewers() as i64);
                }
                _ = shutdown.changed() => break "server shutting down",
            }
        };
        s.ended.store(true, Ordering::Relaxed);
        s.changed.send_modify(|v| *v += 1);
        {
            let mut streams = self.registry();
            if streams.get(&s.key).is_some_and(|cur| Arc::ptr_eq(cur, &s)) {
                streams.remove(&s.key);
            }
        }
        let _ = self.metrics.stream_hls_bytes.remove_label_values(&labels);
        let _ = self.metrics.stream_hls_viewers.remove_label_values(&labels);
        tracing::info!(stream = %s.key, reason = why, "hls segmenter stopped");
    }

    /// Starts the segmenters of `always` apps as their streams are published; runs until
    /// shutdown.
    pub async fn run_always(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let apps = self.hub.apps();
            for stream in self.hub.streams() {
                let always = apps
                    .iter()
                    .any(|a| a.name == stream.key.app && a.hls.mode == HlsMode::Always);
                if always && stream.is_published() && self.get(&stream.key).is_none() {
                    let _ = self.get_or_start(&stream.key);
                }
            }
        }
    }
}

fn load_key(app: &AppConfig) -> Result<SessionKey, KeyError> {
    match &app.hls.session_secret_file {
        Some(path) => SessionKey::from_file(path).map_err(|source| KeyError {
            app: app.name.clone(),
            path: path.display().to_string(),
            source,
        }),
        None => Ok(SessionKey::random()),
    }
}
