//! The hub owns every stream, keyed by `/{app}/{name}`: publishers claim a stream, readers
//! subscribe to it, and streams with no publisher are reaped after a grace period.
//!
//! Locking: the registry lock is taken before a stream's own lock, never the reverse, and
//! neither is held across an await.

mod frame;
mod gop;
mod hooks;
mod stream;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use frame::{FrameKind, MediaFrame, SHARED_PLAY_STREAM_ID};
pub use gop::{GopCache, GopLimits};
pub use hooks::{Demand, DemandOutcome, DemandWait, HubHooks};
pub use stream::{Publisher, PublisherInfo, ReaderEnd, ReaderLimits, Stream, StreamInfo, SubscribeOptions, Subscriber};

use crate::config::{AppConfig, Config};

/// Longest app or stream name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// Whether `name` is a safe app or stream name: 1-128 of `A-Z a-z 0-9 _ - .`, not `.`/`..`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub app: String,
    pub name: String,
}

impl StreamKey {
    pub fn new(app: &str, name: &str) -> Result<StreamKey, HubError> {
        if !is_valid_name(app) || !is_valid_name(name) {
            return Err(HubError::BadName);
        }
        Ok(StreamKey {
            app: app.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/{}", self.app, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("stream name must be 1-128 characters of A-Z a-z 0-9 _ - .")]
    BadName,
    #[error("unknown app")]
    UnknownApp,
    #[error("stream is already being published (session {0})")]
    AlreadyPublishing(u64),
    #[error("server is shutting down")]
    ShuttingDown,
}

/// Hub-wide settings taken from the config.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub publisher_grace: Duration,
    pub play_wait: Duration,
    pub queue_frames: usize,
    pub reader: ReaderLimits,
    pub apps: Vec<AppConfig>,
}

impl HubSettings {
    pub fn from_config(c: &Config) -> Self {
        HubSettings {
            publisher_grace: Duration::from_secs(c.hub.publisher_grace_secs),
            play_wait: Duration::from_secs(c.hub.play_wait_secs),
            queue_frames: c.hub.reader_queue_frames,
            reader: ReaderLimits {
                max_skips: c.hub.slow_reader_max_skips,
                window: Duration::from_secs(c.hub.slow_reader_window_secs),
                coalesce: Duration::from_millis(c.hub.write_coalesce_ms),
            },
            apps: c.apps.clone(),
        }
    }
}

pub(crate) struct HubInner {
    pub(crate) settings: HubSettings,
    /// Starts as `settings.apps`; replaced on config reload.
    apps: std::sync::RwLock<Arc<Vec<AppConfig>>>,
    streams: Mutex<HashMap<StreamKey, Arc<Stream>>>,
    shutting_down: AtomicBool,
    /// Set once by the relay module; weak so the hub never keeps its owner alive.
    hooks: std::sync::OnceLock<std::sync::Weak<dyn HubHooks>>,
}

impl HubInner {
    fn registry(&self) -> MutexGuard<'_, HashMap<StreamKey, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl Hub {
    pub fn new(settings: HubSettings) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                apps: std::sync::RwLock::new(Arc::new(settings.apps.clone())),
                settings,
                streams: Mutex::new(HashMap::new()),
                shutting_down: AtomicBool::new(false),
                hooks: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn settings(&self) -> &HubSettings {
        &self.inner.settings
    }

    /// The apps served now (the config's, or a reloaded set).
    pub fn apps(&self) -> Arc<Vec<AppConfig>> {
        self.inner.apps.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the app set on config reload: new apps are served at once; live streams of
    /// a removed app continue, but new publishes and plays on it are refused.
    pub fn set_apps(&self, apps: Vec<AppConfig>) {
        *self.inner.apps.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(apps);
    }

    fn app(&self, app: &str) -> Result<AppConfig, HubError> {
        self.apps()
            .iter()
            .find(|a| a.name == app)
            .cloned()
            .ok_or(HubError::UnknownApp)
    }

    fn limits(app: &AppConfig) -> GopLimits {
        GopLimits {
            enabled: app.gop_cache,
            max_frames: app.gop_max_frames,
            max_bytes: app.gop_max_bytes,
        }
    }

    /// Validates app and name; the error says which is wrong.
    pub fn key(&self, app: &str, name: &str) -> Result<StreamKey, HubError> {
        let key = StreamKey::new(app, name)?;
        self.app(app)?;
        Ok(key)
    }

    fn get_or_create(&self, key: &StreamKey) -> Result<(Arc<Stream>, bool), HubError> {
        if self.inner.shutting_down.load(Ordering::Relaxed) {
            return Err(HubError::ShuttingDown);
        }
        let app = self.app(&key.app)?;
        let mut streams = self.inner.registry();
        if let Some(s) = streams.get(key) {
            return Ok((s.clone(), false));
        }
        let s = Arc::new(Stream::new(
            key.clone(),
            Self::limits(&app),
            self.inner.settings.queue_frames,
        ));
        streams.insert(key.clone(), s.clone());
        Ok((s, true))
    }

    /// Claims `key` for a publisher. A stream already published is refused; a stream whose
    /// publisher dropped within the grace period is continued.
    pub fn publish(&self, key: &StreamKey, publisher: PublisherInfo) -> Result<Publisher, HubError> {
        self.publish_via(key, publisher, Vec::new())
    }

    /// [`Hub::publish`] for a stream that came through relays: `relay_path` (server ids, origin
    /// first) is recorded before anyone is told of the publish, so a push started by it
    /// carries the path on.
    pub fn publish_via(
        &self,
        key: &StreamKey,
        publisher: PublisherInfo,
        relay_path: Vec<String>,
    ) -> Result<Publisher, HubError> {
        let (stream, _) = self.get_or_create(key)?;
        let generation = stream
            .claim(publisher)
            .map_err(|p| HubError::AlreadyPublishing(p.session_id))?;
        let publisher = Publisher {
            stream,
            hub: self.inner.clone(),
            generation,
        };
        if !relay_path.is_empty() {
            publisher.set_relay_path(relay_path);
        }
        if let Some(hooks) = self.hooks() {
            hooks.published(key);
        }
        Ok(publisher)
    }

    /// Subscribes a reader. A stream nobody publishes yet is created and waits for its
    /// publisher up to the play-wait period.
    pub fn subscribe(&self, key: &StreamKey) -> Result<Subscriber, HubError> {
        self.subscribe_with(key, SubscribeOptions::default())
    }

    /// [`Hub::subscribe`] with reader options.
    pub fn subscribe_with(&self, key: &StreamKey, options: SubscribeOptions) -> Result<Subscriber, HubError> {
        loop {
            let (stream, created) = self.get_or_create(key)?;
            if created {
                schedule_reap(
                    &self.inner,
                    key.clone(),
                    stream.generation(),
                    self.inner.settings.play_wait,
                );
            }
            // A stream reaped between lookup and subscribe has closed its channel: retry.
            if let Some(sub) = stream.subscribe(self.inner.settings.reader, options) {
                return Ok(sub);
            }
        }
    }

    pub fn stream(&self, key: &StreamKey) -> Option<Arc<Stream>> {
        self.inner.registry().get(key).cloned()
    }

    /// Every stream, published or waiting, sorted by key.
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        let mut v: Vec<_> = self.inner.registry().values().cloned().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Ends every stream (readers see the end) and refuses new ones.
    pub fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        let streams: Vec<_> = self.inner.registry().drain().map(|(_, s)| s).collect();
        for s in streams {
            s.end();
        }
    }
}

/// Removes `key` after `delay` unless a publisher claimed it meanwhile.
pub(crate) fn schedule_reap(hub: &Arc<HubInner>, key: StreamKey, generation: u64, delay: Duration) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        reap_if_idle(hub, &key, generation);
        return;
    };
    let hub = Arc::downgrade(hub);
    rt.spawn(async move {
        tokio::time::sleep(delay).await;
        if let Some(hub) = hub.upgrade() {
            reap_if_idle(&hub, &key, generation);
        }
    });
}

fn reap_if_idle(hub: &HubInner, key: &StreamKey, generation: u64) {
    let mut streams = hub.registry();
    let Some(stream) = streams.get(key) else { return };
    if stream.generation() != generation || stream.is_published() {
        return;
    }
    let stream = streams.remove(key).expect("present");
    drop(streams);
    tracing::info!(stream = %key, "stream ended");
    stream.end();
}

#[cfg(test)]
mod tests;
