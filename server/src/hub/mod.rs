//! The hub owns every stream, keyed by `/{app}/{name}`: publishers claim a stream, readers
//! subscribe to it, and streams with no publisher are reaped after a grace period.
//!
//! Locking: the registry lock is taken before a stream's own lock, never the reverse, and
//! neither is held across an await.

mod frame;
mod gop;
mod hooks;
mod ring;
mod stream;
mod waiting;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use frame::{FrameKind, MediaFrame, SHARED_PLAY_STREAM_ID};
pub use gop::{GopCache, GopLimits};
pub use hooks::{Demand, DemandOutcome, DemandWait, HubHooks};
pub use ring::RingLimits;
use stream::ClaimError;
pub use stream::{Publisher, PublisherInfo, ReaderEnd, ReaderLimits, Stream, StreamInfo, SubscribeOptions, Subscriber};
pub use waiting::WaitingLimits;

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
    #[error("stream is already being published on {0}")]
    PublishedElsewhere(String),
    #[error("too many streams of this app wait for a publisher (at most {0})")]
    TooManyWaitingInApp(usize),
    #[error("too many streams wait for a publisher for this client (at most {0})")]
    TooManyWaitingForClient(usize),
}

/// Hub-wide settings taken from the config.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub publisher_grace: Duration,
    pub play_wait: Duration,
    pub queue_frames: usize,
    /// Bytes the reader ring of a stream may hold (frames counted with their encodings).
    pub queue_bytes: usize,
    pub reader: ReaderLimits,
    pub apps: Vec<AppConfig>,
    pub waiting: WaitingLimits,
}

impl HubSettings {
    pub fn from_config(c: &Config) -> Self {
        HubSettings {
            publisher_grace: Duration::from_secs(c.hub.publisher_grace_secs),
            play_wait: Duration::from_secs(c.hub.play_wait_secs),
            queue_frames: c.hub.reader_queue_frames,
            queue_bytes: c.hub.reader_queue_bytes,
            reader: ReaderLimits {
                max_skips: c.hub.slow_reader_max_skips,
                window: Duration::from_secs(c.hub.slow_reader_window_secs),
                coalesce: Duration::from_millis(c.hub.write_coalesce_ms),
            },
            apps: c.apps.clone(),
            waiting: WaitingLimits {
                per_app: c.hub.max_waiting_streams_per_app,
                per_client: c.hub.max_waiting_streams_per_ip,
            },
        }
    }
}

pub(crate) struct HubInner {
    pub(crate) settings: HubSettings,
    /// Starts as `settings.apps`; replaced on config reload.
    apps: std::sync::RwLock<Arc<Vec<AppConfig>>>,
    streams: Mutex<HashMap<StreamKey, Arc<Stream>>>,
    /// Streams readers created that nobody published yet; only changed with the registry
    /// locked (registry lock first).
    waiting: Mutex<waiting::WaitingStreams>,
    shutting_down: AtomicBool,
    /// Set once by the relay module; weak so the hub never keeps its owner alive.
    hooks: std::sync::OnceLock<std::sync::Weak<dyn HubHooks>>,
}

impl HubInner {
    fn registry(&self) -> MutexGuard<'_, HashMap<StreamKey, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn waiting(&self) -> MutexGuard<'_, waiting::WaitingStreams> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
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
                waiting: Mutex::new(waiting::WaitingStreams::new(settings.waiting)),
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
        // Asked on every HLS request: look, do not clone the app's config.
        if !self.apps().iter().any(|a| a.name == app) {
            return Err(HubError::UnknownApp);
        }
        Ok(key)
    }

    /// The stream of `key`, created if needed; `reader` creates a waiting stream for that
    /// client (`Some(None)`: the server itself), counted against the waiting-stream caps.
    fn get_or_create(&self, key: &StreamKey, reader: Option<Option<IpAddr>>) -> Result<(Arc<Stream>, bool), HubError> {
        if self.inner.shutting_down.load(Ordering::Relaxed) {
            return Err(HubError::ShuttingDown);
        }
        let app = self.app(&key.app)?;
        let mut streams = self.inner.registry();
        if let Some(s) = streams.get(key) {
            return Ok((s.clone(), false));
        }
        if let Some(client) = reader {
            self.inner.waiting().admit(key, client)?;
        }
        let ring = RingLimits {
            max_frames: self.inner.settings.queue_frames,
            max_bytes: self.inner.settings.queue_bytes,
        };
        let s = Arc::new(Stream::new(key.clone(), Self::limits(&app), ring));
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
        loop {
            let (stream, _) = self.get_or_create(key, None)?;
            let generation = match stream.claim(publisher.clone()) {
                Ok(generation) => generation,
                Err(ClaimError::Held(p)) => return Err(HubError::AlreadyPublishing(p.session_id)),
                // Reaped between lookup and claim: the registry no longer has it, so the next
                // lookup creates a fresh stream (or says the hub is shutting down).
                Err(ClaimError::Ended) => continue,
            };
            {
                // Published now, so no longer waiting (unless it was reaped meanwhile and the
                // entry is a newer stream's).
                let registry = self.inner.registry();
                if registry.get(key).is_some_and(|s| Arc::ptr_eq(s, &stream)) {
                    self.inner.waiting().remove(key);
                }
            }
            let publisher = Publisher {
                stream,
                hub: self.inner.clone(),
                generation,
                defer_wakeups: AtomicBool::new(false),
                wake_owed: AtomicBool::new(false),
            };
            if !relay_path.is_empty() {
                publisher.set_relay_path(relay_path);
            }
            if let Some(hooks) = self.hooks() {
                hooks.published(key);
            }
            return Ok(publisher);
        }
    }

    /// Subscribes a reader. A stream nobody publishes yet is created and waits for its
    /// publisher up to the play-wait period.
    pub fn subscribe(&self, key: &StreamKey) -> Result<Subscriber, HubError> {
        self.subscribe_with(key, SubscribeOptions::default())
    }

    /// [`Hub::subscribe`] with reader options.
    pub fn subscribe_with(&self, key: &StreamKey, options: SubscribeOptions) -> Result<Subscriber, HubError> {
        self.subscribe_from(key, options, None)
    }

    /// [`Hub::subscribe_with`] for a client at `client` (`None`: the server itself): a stream
    /// it creates by waiting counts against the per-app and per-client waiting caps.
    pub fn subscribe_from(
        &self,
        key: &StreamKey,
        options: SubscribeOptions,
        client: Option<IpAddr>,
    ) -> Result<Subscriber, HubError> {
        loop {
            let (stream, created) = self.get_or_create(key, Some(client))?;
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

    /// Ends `key` now if nobody publishes or reads it (a waiting stream whose last reader
    /// learnt it does not exist), instead of after the play wait.
    /// (A subscriber racing this finds the ring closed and subscribes again.)
    pub fn reap_if_idle(&self, key: &StreamKey) {
        let Some(stream) = self.stream(key) else { return };
        if stream.stats.readers.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            reap_if_idle(&self.inner, key, stream.generation());
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
        let streams: Vec<_> = {
            let mut registry = self.inner.registry();
            self.inner.waiting().clear();
            registry.drain().map(|(_, s)| s).collect()
        };
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
    // Ended under the stream's lock before it leaves the registry: a publisher that looked
    // it up just before cannot claim it any more and looks it up again.
    if !stream.end_if_idle(generation) {
        return;
    }
    streams.remove(key);
    hub.waiting().remove(key);
    drop(streams);
    tracing::info!(stream = %key, "stream ended");
}

#[cfg(test)]
mod tests;
