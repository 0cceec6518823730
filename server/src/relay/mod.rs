//! Relays: outgoing connections that bring streams in from other servers (pull) and send ours
//! out (push), each one supervised with capped, jittered backoff.
//!
//! A pull is a hub publisher like any encoder: a source URL (`rtmp(s)://`, `http(s)://...flv`,
//! `rtsp://`) feeds one stream here. It runs statically (config `relays:` or the API) or on
//! demand, when a player asks for a stream this server does not have: one pull per stream,
//! shared by every player, closed after the last one left, and a source without the stream
//! answers not-found at once ([`Relays::demand_pull`], the API the fleet's pod-to-pod pulls
//! reuse). A push is a hub subscriber like any player, with the same slow-reader policy.
//! Loops are refused through the hop path every relay connection carries ([`hop`]).
//!
//! # Layout
//! - [`url`]: relay URLs, on-demand and push URL building, redaction for logs.
//! - [`hop`]: the relay hop path and loop checks.
//! - [`backoff`]: reconnect delays.
//! - [`tls`]: client TLS (system roots, extra CA, or no verification).
//! - `source`, `rtmp`, `http_flv`, `rtsp`: the source and target connections.
//! - `pull`, `push`: the supervised tasks.

pub mod backoff;
pub mod hop;
mod http_flv;
mod pull;
mod push;
mod rtmp;
mod rtsp;
mod source;
pub mod tls;
pub mod url;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::codec::chunk::ChunkError;
use crate::codec::flv::FlvError;
use crate::config::{AppConfig, Config, PullConfig, PushConfig, RelayConfig, RelayMode};
use crate::hub::{Demand, DemandOutcome, DemandWait, Hub, HubError, HubHooks, StreamKey};
use crate::metrics::Metrics;
use crate::rtmp::client::ClientError;
use crate::serving::MainRuntime;
use source::{Counters, LinkOptions};
pub use url::{redact, RelayUrl, Scheme};

/// Why a relay connection failed. Messages never contain URLs (they may carry keys).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("bad URL: {0}")]
    Url(String),
    #[error("connect: {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("RTMP: {0}")]
    Rtmp(#[from] ClientError),
    #[error("refused: {code}: {description}")]
    Refused { code: String, description: String },
    #[error("the source has no such stream")]
    NotFound,
    #[error("refused by the far end: {0}")]
    LoopRefused(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("FLV: {0}")]
    Flv(#[from] FlvError),
    #[error("RTSP: {0}")]
    Rtsp(String),
    #[error(transparent)]
    Hop(#[from] hop::HopError),
    #[error("the stream ended at the far end")]
    Ended,
    #[error("stream here: {0}")]
    Hub(#[from] HubError),
    #[error("push fell behind the stream: {0}")]
    TooSlow(String),
    #[error("key file {0}: {1}")]
    KeyFile(String, String),
}

impl From<ChunkError> for RelayError {
    fn from(e: ChunkError) -> Self {
        RelayError::Rtmp(ClientError::Chunk(e))
    }
}

impl RelayError {
    /// A loop, refused by us or by the far end: retrying would not help.
    fn is_loop(&self) -> bool {
        matches!(self, RelayError::LoopRefused(_) | RelayError::Hop(_))
    }
}

/// Whether a relay pulls or pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Pull,
    Push,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Pull => "pull",
            Mode::Push => "push",
        }
    }
}

/// Who started a relay (and so how long it lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `relays:` in the config; lives until deleted or the process ends.
    Config,
    /// `POST /api/v1/relays`; lives until deleted or the process ends.
    Api,
    /// An app's `pull`: lives while players watch.
    OnDemand,
    /// An app's `push`: lives while the stream is live.
    App,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    /// Connecting to the far end (or waiting for the source's first frame).
    Connecting,
    /// Media flows.
    Live,
    /// Failed; waiting before the next attempt.
    Backoff,
    /// A push waiting for its stream to be published.
    Waiting,
    /// An on-demand pull whose source has no such stream.
    NotFound,
    /// Stopped for good: a loop, or a refusal retrying cannot fix.
    Failed,
    Stopped,
}

impl RelayState {
    pub const ALL: [RelayState; 7] = [
        RelayState::Connecting,
        RelayState::Live,
        RelayState::Backoff,
        RelayState::Waiting,
        RelayState::NotFound,
        RelayState::Failed,
        RelayState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RelayState::Connecting => "connecting",
            RelayState::Live => "live",
            RelayState::Backoff => "backoff",
            RelayState::Waiting => "waiting",
            RelayState::NotFound => "not_found",
            RelayState::Failed => "failed",
            RelayState::Stopped => "stopped",
        }
    }

    fn is_final(self) -> bool {
        matches!(self, RelayState::NotFound | RelayState::Failed | RelayState::Stopped)
    }
}

/// A relay state change, as the API's event stream shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RelayEvent {
    pub event: &'static str,
    pub id: u64,
    pub mode: Mode,
    pub origin: Origin,
    pub app: String,
    pub name: String,
    /// Source or target, redacted.
    pub url: String,
    pub state: RelayState,
    pub reason: Option<String>,
}

/// TLS options of one relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub ca_file: Option<PathBuf>,
    pub verify: bool,
}

/// What a pull reads and where it publishes.
#[derive(Debug, Clone)]
pub struct PullSpec {
    pub source: RelayUrl,
    pub stream: StreamKey,
    pub tls: TlsOptions,
    /// On demand: stop this long after the last reader left, and stop (not found) when the
    /// first attempt finds nothing. `None`: a static pull, retried until deleted.
    pub idle_close: Option<Duration>,
    /// The relay hop path of the request that wants the stream (servers downstream of us);
    /// our own id is appended on the wire.
    pub via: Vec<String>,
}

/// What a push reads and where it writes.
#[derive(Debug, Clone)]
pub struct PushSpec {
    /// `target` as configured, placeholders unfilled (the key is read at each connect).
    pub target: String,
    pub key_file: Option<PathBuf>,
    pub stream: StreamKey,
    pub tls: TlsOptions,
}

/// One relay: what it is, its state and counters.
pub struct Relay {
    pub id: u64,
    pub mode: Mode,
    pub origin: Origin,
    pub stream: StreamKey,
    /// Source or target, redacted: safe for logs and the API.
    pub url: String,
    pub created: SystemTime,
    state: watch::Sender<RelayState>,
    live_since: Mutex<Option<Instant>>,
    pub reconnects: AtomicU64,
    counters: Counters,
    last_error: Mutex<Option<String>>,
    stop: watch::Sender<bool>,
    /// Strings that must not reach logs or the API (query values, keys, user info); a push
    /// adds its key file's content when it reads it.
    secrets: Mutex<Vec<String>>,
}

impl Relay {
    pub fn state(&self) -> RelayState {
        *self.state.borrow()
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the relay to stop; its task ends at its next await point.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Adds strings to keep out of logs and the API (longest first, so a secret that
    /// contains another is replaced whole).
    fn add_secrets(&self, more: impl IntoIterator<Item = String>) {
        let mut s = Self::lock(&self.secrets);
        s.extend(more.into_iter().filter(|x| x.len() >= 3));
        s.sort_by_key(|x| std::cmp::Reverse(x.len()));
        s.dedup();
    }

    /// `text` with every secret of this relay replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in Self::lock(&self.secrets).iter() {
            t = t.replace(s.as_str(), "***");
        }
        t
    }

    pub fn json(&self) -> Value {
        let uptime = Self::lock(&self.live_since).map_or(0, |t| t.elapsed().as_secs());
        json!({
            "id": self.id,
            "mode": self.mode,
            "origin": self.origin,
            "app": self.stream.app,
            "name": self.stream.name,
            "stream": format!("{}/{}", self.stream.app, self.stream.name),
            (if self.mode == Mode::Pull { "source" } else { "target" }): self.url,
            "state": self.state(),
            "uptime_secs": uptime,
            "reconnects": self.reconnects.load(Ordering::Relaxed),
            "bytes_in": self.counters.bytes_in.load(Ordering::Relaxed),
            "bytes_out": self.counters.bytes_out.load(Ordering::Relaxed),
            "last_error": *Self::lock(&self.last_error),
            "created": self.created.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        })
    }
}

/// Timeouts and sizes every relay connection uses.
#[derive(Debug, Clone)]
struct Settings {
    connect_timeout: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
    play_wait: Duration,
    chunk_size: u32,
    max_peer_chunk_size: u32,
    max_message_size: u32,
}

/// Every relay of this server.
pub struct Relays {
    hub: Hub,
    metrics: Arc<Metrics>,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
    relays: Mutex<BTreeMap<u64, Arc<Relay>>>,
    /// Running on-demand pulls by stream, and app pushes by (stream, target).
    on_demand: Mutex<HashMap<StreamKey, Arc<Relay>>>,
    app_pushes: Mutex<HashMap<(StreamKey, String), Arc<Relay>>>,
    next_id: AtomicU64,
    events: broadcast::Sender<RelayEvent>,
    me: Weak<Relays>,
    /// Relays run here, also the on-demand pulls a player's connection starts.
    rt: MainRuntime,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relays {
    /// Creates the relay manager and plugs it into the hub (on-demand pulls, app pushes).
    pub fn new(config: &Config, hub: Hub, metrics: Arc<Metrics>, shutdown: watch::Receiver<bool>) -> Arc<Relays> {
        let settings = Settings {
            connect_timeout: Duration::from_secs(config.rtmp.handshake_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(config.rtmp.idle_timeout_secs.max(1)),
            write_timeout: Duration::from_secs(config.hub.write_timeout_secs.max(1)),
            play_wait: Duration::from_secs(config.hub.play_wait_secs.max(1)),
            chunk_size: config.rtmp.chunk_size,
            max_peer_chunk_size: config.rtmp.max_peer_chunk_size,
            max_message_size: config.rtmp.max_message_size,
        };
        let relays = Arc::new_cyclic(|me| Relays {
            hub: hub.clone(),
            metrics,
            settings,
            shutdown,
            relays: Mutex::new(BTreeMap::new()),
            on_demand: Mutex::new(HashMap::new()),
            app_pushes: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            events: broadcast::channel(256).0,
            me: me.clone(),
            rt: MainRuntime::here(),
        });
        let hooks: Weak<dyn HubHooks> = Arc::downgrade(&relays) as Weak<dyn HubHooks>;
        hub.set_hooks(hooks);
        relays
    }

    /// Starts the config's static relays (needs a tokio runtime).
    pub fn start_static(&self, config: &Config) {
        for (i, r) in config.relays.iter().enumerate() {
            if let Err(e) = self.add(r, Origin::Config) {
                // Validated at load; only a file that vanished since can fail here.
                warn!("relays[{i}] not started: {e}");
            }
        }
    }

    fn arc(&self) -> Arc<Relays> {
        self.me.upgrade().expect("relays outlive their tasks' spawns")
    }

    /// This server's relay id (what other servers see on a relay path).
    pub fn server_id(&self) -> &'static str {
        hop::server_id()
    }

    pub fn list(&self) -> Vec<Arc<Relay>> {
        lock(&self.relays).values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Arc<Relay>> {
        lock(&self.relays).get(&id).cloned()
    }

    /// State changes of every relay (a lagging receiver misses some).
    pub fn subscribe(&self) -> broadcast::Receiver<RelayEvent> {
        self.events.subscribe()
    }

    /// Counts a relay connection refused here for a loop (logged by the caller).
    pub fn loop_refused(&self) {
        self.metrics.relay_loops_refused.inc();
    }

    /// Starts a static pull or push from its config form (config file or API).
    pub fn add(&self, r: &RelayConfig, origin: Origin) -> Result<Arc<Relay>, RelayError> {
        let stream = parse_stream(&r.stream).map_err(RelayError::Url)?;
        let tls = TlsOptions {
            ca_file: r.ca_file.clone(),
            verify: r.tls_verify,
        };
        match r.mode {
            RelayMode::Pull => Ok(self.start_pull(
                PullSpec {
                    source: RelayUrl::parse(&r.source)?,
                    stream,
                    tls,
                    idle_close: None,
                    via: Vec::new(),
                },
                origin,
            )),
            RelayMode::Push => {
                // Fail now on a bad URL or unreadable key rather than in a retry loop.
                let key = read_key(r.key_file.as_deref())?;
                url::push_url(&r.target, &stream.name, key.as_deref())?;
                Ok(self.start_push(
                    PushSpec {
                        target: r.target.clone(),
                        key_file: r.key_file.clone(),
                        stream,
                        tls,
                    },
                    origin,
                ))
            }
        }
    }

    /// Stops and forgets relay `id`. `false` when there is none.
    pub fn remove(&self, id: u64) -> bool {
        let Some(relay) = lock(&self.relays).get(&id).cloned() else {
            return false;
        };
        info!(relay = id, mode = relay.mode.as_str(), url = %relay.url, "relay deleted");
        relay.stop();
        self.forget(&relay);
        true
    }

    fn register(&self, mode: Mode, origin: Origin, stream: StreamKey, url: String, secrets: Vec<String>) -> Arc<Relay> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let relay = Arc::new(Relay {
            id,
            mode,
            origin,
            stream,
            url,
            created: SystemTime::now(),
            state: watch::channel(RelayState::Connecting).0,
            live_since: Mutex::new(None),
            reconnects: AtomicU64::new(0),
            counters: Counters {
                bytes_in: Arc::new(AtomicU64::new(0)),
                bytes_out: Arc::new(AtomicU64::new(0)),
                metric_in: self.metrics.relay_bytes_in.with_label_values(&[mode.as_str()]),
                metric_out: self.metrics.relay_bytes_out.with_label_values(&[mode.as_str()]),
            },
            last_error: Mutex::new(None),
            stop: watch::channel(false).0,
            secrets: Mutex::new(Vec::new()),
        });
        relay.add_secrets(secrets);
        self.metrics
            .relay_count
            .with_label_values(&[mode.as_str(), RelayState::Connecting.as_str()])
            .inc();
        lock(&self.relays).insert(id, relay.clone());
        self.emit(&relay, None);
        relay
    }

    /// Removes a relay from the registry (once) and from the state gauge.
    fn forget(&self, relay: &Arc<Relay>) {
        if lock(&self.relays).remove(&relay.id).is_none() {
            return;
        }
        self.metrics
            .relay_count
            .with_label_values(&[relay.mode.as_str(), relay.state().as_str()])
            .dec();
        let mut od = lock(&self.on_demand);
        if od.get(&relay.stream).is_some_and(|r| r.id == relay.id) {
            od.remove(&relay.stream);
        }
        drop(od);
        lock(&self.app_pushes).retain(|_, r| r.id != relay.id);
    }

    /// Records a failed attempt that will be retried after `delay`: logged (URLs scrubbed),
    /// counted as a reconnect, and the relay shown in backoff.
    fn retry_later(&self, relay: &Relay, reason: &str, delay: std::time::Duration) {
        warn!(
            "{} failed, retrying in {delay:?}: {}",
            relay.mode.as_str(),
            relay.scrub(reason)
        );
        relay.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .relay_reconnects
            .with_label_values(&[relay.mode.as_str()])
            .inc();
        self.set_state(relay, RelayState::Backoff, Some(reason));
    }

    /// Moves a relay to `state`, keeping the gauge, uptime, last error and events in step.
    fn set_state(&self, relay: &Relay, state: RelayState, reason: Option<&str>) {
        let old = relay.state.send_replace(state);
        let reason = reason.map(|r| relay.scrub(r));
        if let Some(r) = &reason {
            *Relay::lock(&relay.last_error) = Some(r.clone());
        }
        if old == state && reason.is_none() {
            return;
        }
        if old != state && lock(&self.relays).contains_key(&relay.id) {
            let mode = relay.mode.as_str();
            self.metrics.relay_count.with_label_values(&[mode, old.as_str()]).dec();
            self.metrics
                .relay_count
                .with_label_values(&[mode, state.as_str()])
                .inc();
        }
        *Relay::lock(&relay.live_since) = (state == RelayState::Live).then(Instant::now);
        self.emit(relay, reason);
    }

    fn emit(&self, relay: &Relay, reason: Option<String>) {
        let _ = self.events.send(RelayEvent {
            event: "relayState",
            id: relay.id,
            mode: relay.mode,
            origin: relay.origin,
            app: relay.stream.app.clone(),
            name: relay.stream.name.clone(),
            url: relay.url.clone(),
            state: relay.state(),
            reason,
        });
    }

    fn link_options(&self, relay: &Relay, via: String, tls: &TlsOptions) -> LinkOptions {
        let s = &self.settings;
        LinkOptions {
            via,
            ca_file: tls.ca_file.clone(),
            tls_verify: tls.verify,
            connect_timeout: s.connect_timeout,
            idle_timeout: s.idle_timeout,
            write_timeout: s.write_timeout,
            chunk_size: s.chunk_size,
            max_peer_chunk_size: s.max_peer_chunk_size,
            max_message_size: s.max_message_size,
            counters: relay.counters.clone(),
        }
    }

    fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Starts a pull (static, or one the caller shares itself).
    pub fn start_pull(&self, spec: PullSpec, origin: Origin) -> Arc<Relay> {
        let secrets = url_secrets(&spec.source);
        let relay = self.register(
            Mode::Pull,
            origin,
            spec.stream.clone(),
            spec.source.redacted(false),
            secrets,
        );
        info!(relay = relay.id, stream = %spec.stream, source = %relay.url, "relay pull starting");
        self.rt.spawn(pull::run(self.arc(), relay.clone(), spec));
        relay
    }

    /// An on-demand pull of `spec.stream`, started unless one runs already: the waiter
    /// resolves `true` once the stream is published here, `false` when the source has no such
    /// stream (or refuses). This is the shared edge pull every player of the stream rides.
    pub fn demand_pull(&self, spec: PullSpec) -> DemandWait {
        let relay = {
            let mut od = lock(&self.on_demand);
            match od
                .get(&spec.stream)
                .filter(|r| !r.state().is_final() && !r.is_stopping())
            {
                Some(r) => r.clone(),
                None => {
                    let key = spec.stream.clone();
                    let relay = self.start_pull(spec, Origin::OnDemand);
                    od.insert(key, relay.clone());
                    relay
                }
            }
        };
        let mut rx = relay.state.subscribe();
        Box::pin(async move {
            loop {
                match *rx.borrow_and_update() {
                    RelayState::Live => return true,
                    s if s.is_final() => return false,
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        })
    }

    /// Starts a push of one stream.
    pub fn start_push(&self, spec: PushSpec, origin: Origin) -> Arc<Relay> {
        // The key file is read by the push task at each connect (never here, on the publish
        // path); a placeholder shows where it goes, and that part is masked.
        let placeholder = spec.key_file.as_ref().map(|_| "{key}");
        let (shown, secrets) = match url::push_url(&spec.target, &spec.stream.name, placeholder) {
            Ok((u, masked)) => (u.redacted(masked), url_secrets(&u)),
            Err(_) => (redact(&spec.target, true), Vec::new()),
        };
        let relay = self.register(Mode::Push, origin, spec.stream.clone(), shown, secrets);
        info!(relay = relay.id, stream = %spec.stream, target = %relay.url, "relay push starting");
        self.rt.spawn(push::run(self.arc(), relay.clone(), spec));
        relay
    }
}

impl HubHooks for Relays {
    fn demand(&self, key: &StreamKey, demand: &Demand) -> Option<DemandWait> {
        let apps = self.hub.apps();
        let pull = apps.iter().find(|a| a.name == key.app)?.pull.clone()?;
        if demand.via.iter().any(|id| id == hop::server_id()) {
            return Some(Box::pin(async { false }));
        }
        let source = match url::pull_url(&pull.source, &key.name, &demand.query) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(stream = %key, "on-demand pull not started: {e}");
                return Some(Box::pin(async { false }));
            }
        };
        Some(self.demand_pull(PullSpec {
            source,
            stream: key.clone(),
            tls: TlsOptions {
                ca_file: pull.ca_file.clone(),
                verify: pull.tls_verify,
            },
            idle_close: Some(Duration::from_secs(pull.idle_close_secs.max(1))),
            via: demand.via.clone(),
        }))
    }

    fn published(&self, key: &StreamKey) {
        let apps = self.hub.apps();
        let Some(app) = apps.iter().find(|a| a.name == key.app) else {
            return;
        };
        if app.push.is_empty() || self.is_shutting_down() {
            return;
        }
        for p in &app.push {
            let id = (key.clone(), p.target.clone());
            let mut pushes = lock(&self.app_pushes);
            if pushes
                .get(&id)
                .is_some_and(|r| !r.state().is_final() && !r.is_stopping())
            {
                continue;
            }
            let relay = self.start_push(
                PushSpec {
                    target: p.target.clone(),
                    key_file: p.key_file.clone(),
                    stream: key.clone(),
                    tls: TlsOptions {
                        ca_file: p.ca_file.clone(),
                        verify: p.tls_verify,
                    },
                },
                Origin::App,
            );
            pushes.insert(id, relay);
        }
    }
}

/// Before a player subscribes: `false` when it must be answered not-found now. A stream
/// that is not published here is fetched when the app pulls on demand; a relay request (one
/// with a hop path) for a stream nothing can fetch is not-found at once instead of waiting,
/// so the relay upstream of it can say so to its own players.
///
/// While the demand runs, the player holds a waiting reader of the stream, so an on-demand
/// pull (an outbound connection) is started only within `client`'s waiting-stream caps: a
/// client asking for many made-up names is refused by the caps, not served a pull each.
/// Over the caps this answers `true` and the caller's own subscribe gives the refusal.
pub async fn admit_player(
    hub: &Hub,
    key: &StreamKey,
    query: &str,
    via: Vec<String>,
    client: Option<std::net::IpAddr>,
) -> bool {
    let relay_request = !via.is_empty();
    let waiting = if hub.stream(key).is_some_and(|s| s.is_published()) {
        None
    } else {
        match hub.subscribe_from(key, crate::hub::SubscribeOptions::default(), client) {
            Ok(sub) => Some(sub),
            Err(_) => return true,
        }
    };
    match hub
        .demand(
            key,
            Demand {
                query: query.to_string(),
                via,
            },
        )
        .await
    {
        DemandOutcome::Published => true,
        DemandOutcome::Wait if !relay_request => true,
        DemandOutcome::Wait | DemandOutcome::NotFound => {
            if waiting.is_some() {
                drop(waiting);
                hub.reap_if_idle(key);
            }
            false
        }
    }
}

/// `app/name` of a relay's stream.
fn parse_stream(s: &str) -> Result<StreamKey, String> {
    let (app, name) = s.split_once('/').ok_or_else(|| "use app/name".to_string())?;
    StreamKey::new(app, name).map_err(|e| e.to_string())
}

/// The far end's stream key from `path` (trimmed), when there is a key file.
fn read_key(path: Option<&std::path::Path>) -> Result<Option<String>, RelayError> {
    let Some(p) = path else { return Ok(None) };
    let text = std::fs::read_to_string(p).map_err(|e| RelayError::KeyFile(p.display().to_string(), e.to_string()))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(RelayError::KeyFile(p.display().to_string(), "empty".into()));
    }
    Ok(Some(key.to_string()))
}

/// The parts of a URL that may be secrets: query values, password, the whole query.
fn url_secrets(u: &RelayUrl) -> Vec<String> {
    let mut s = Vec::new();
    if !u.query.is_empty() {
        s.push(u.query.clone());
        s.extend(
            u.query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(_, v)| v.to_string()),
        );
    }
    if let Some((_, pass)) = u.userinfo.split_once(':') {
        s.push(pass.to_string());
    }
    s.sort_by_key(|x| std::cmp::Reverse(x.len()));
    s
}

/// Checks an app's `pull` section: `(key, message)` on error.
pub fn check_pull_config(p: &PullConfig) -> Result<(), (String, String)> {
    let u = RelayUrl::parse(&p.source).map_err(|e| ("source".to_string(), e.to_string()))?;
    if u.scheme == Scheme::Rtsp {
        // RTSP paths are per camera, not `{prefix}/{name}`: static pulls only.
        return Err((
            "source".into(),
            "on-demand pulls use rtmp(s):// or http(s):// sources".into(),
        ));
    }
    if p.idle_close_secs == 0 {
        return Err(("idle_close_secs".into(), "must be at least 1".into()));
    }
    Ok(())
}

/// Checks one app `push` entry.
pub fn check_push_config(p: &PushConfig) -> Result<(), (String, String)> {
    check_target(&p.target, p.key_file.is_some())
}

fn check_target(target: &str, has_key_file: bool) -> Result<(), (String, String)> {
    let key = has_key_file.then_some("k");
    let (u, _) = url::push_url(target, "name", key).map_err(|e| ("target".to_string(), e.to_string()))?;
    if !matches!(u.scheme, Scheme::Rtmp | Scheme::Rtmps) {
        return Err(("target".into(), "push targets are rtmp:// or rtmps:// URLs".into()));
    }
    u.rtmp_app_and_name()
        .map_err(|e| ("target".to_string(), e.to_string()))?;
    if has_key_file && !target.contains("{key}") {
        return Err(("key_file".into(), "needs a `{key}` placeholder in `target`".into()));
    }
    Ok(())
}

/// Checks one static relay. With `apps`, its stream's app must be one of them (the API
/// checks against the apps served now; a config file's relay may name an app a later reload
/// or the operator adds, and retries until it exists).
pub fn check_relay_config(r: &RelayConfig, apps: Option<&[AppConfig]>) -> Result<(), (String, String)> {
    let key = parse_stream(&r.stream).map_err(|m| ("stream".to_string(), m))?;
    if apps.is_some_and(|apps| !apps.iter().any(|a| a.name == key.app)) {
        return Err(("stream".into(), format!("no app named {:?}", key.app)));
    }
    match r.mode {
        RelayMode::Pull => {
            if !r.target.is_empty() || r.key_file.is_some() {
                return Err(("target".into(), "a pull has a `source`, not a `target`".into()));
            }
            let u = RelayUrl::parse(&r.source).map_err(|e| ("source".to_string(), e.to_string()))?;
            if matches!(u.scheme, Scheme::Rtmp | Scheme::Rtmps) {
                u.rtmp_app_and_name()
                    .map_err(|e| ("source".to_string(), e.to_string()))?;
            }
        }
        RelayMode::Push => {
            if !r.source.is_empty() {
                return Err(("source".into(), "a push has a `target`, not a `source`".into()));
            }
            check_target(&r.target, r.key_file.is_some())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks_name_the_bad_key() {
        let apps = vec![AppConfig::default()];
        let ok = RelayConfig {
            source: "rtmp://o/live/cam".into(),
            stream: "live/cam".into(),
            ..RelayConfig::default()
        };
        assert_eq!(check_relay_config(&ok, Some(&apps)), Ok(()));
        let bad = |r: RelayConfig| check_relay_config(&r, Some(&apps)).unwrap_err().0;
        assert_eq!(
            bad(RelayConfig {
                stream: "other/cam".into(),
                ..ok.clone()
            }),
            "stream"
        );
        assert_eq!(
            bad(RelayConfig {
                source: "rtmp://o/live".into(),
                ..ok.clone()
            }),
            "source"
        );
        let push = RelayConfig {
            mode: RelayMode::Push,
            source: String::new(),
            target: "rtmp://t/app/{key}".into(),
            ..ok.clone()
        };
        assert_eq!(bad(push.clone()), "target", "{{key}} without key_file");
        let with_key = RelayConfig {
            key_file: Some("/k".into()),
            ..push.clone()
        };
        assert_eq!(check_relay_config(&with_key, Some(&apps)), Ok(()));
        let elsewhere = RelayConfig {
            stream: "other/cam".into(),
            ..ok.clone()
        };
        assert_eq!(
            check_relay_config(&elsewhere, None),
            Ok(()),
            "a config file may name a later app"
        );
        assert_eq!(
            bad(RelayConfig {
                target: "http://t/app".into(),
                ..push
            }),
            "target"
        );
        let pull = PullConfig {
            source: "rtsp://cam/stream".into(),
            ..PullConfig::default()
        };
        assert_eq!(check_pull_config(&pull).unwrap_err().0, "source");
    }

    #[test]
    fn url_secrets_cover_query_values_and_passwords() {
        let u = RelayUrl::parse("rtsp://u:pw123@h/a?key=k-999&x=1").unwrap();
        let s = url_secrets(&u);
        assert!(s.contains(&"k-999".to_string()) && s.contains(&"pw123".to_string()));
        assert_eq!(
            s[0], "key=k-999&x=1",
            "longest first, so a whole query is replaced at once"
        );
    }
}
