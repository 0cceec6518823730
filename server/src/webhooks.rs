//! Lifecycle webhooks with Node-Media-Server's event names and fields.
//!
//! `pre*` events are asked before a request is accepted: any receiver answering non-2xx
//! rejects it, and a timeout means what `on_timeout` says. `post*`/`done*` events go through a
//! bounded queue per receiver to that receiver's own worker, in order, with retries and
//! backoff; a full queue drops and counts, so no connection ever waits on a receiver, and a
//! dead receiver never delays the others. On shutdown the queued events are delivered within
//! the grace period ([`Webhooks::delivered`]). Every request carries
//! `X-Ferrocast-Signature: sha256=HEX(HMAC-SHA256(secret, body))` when a secret is set.
//! Query strings in events are redacted ([`crate::redact::Query`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{broadcast, mpsc, Notify};
use tracing::{debug, warn};

use crate::auth::AuthError;
use crate::config::{TimeoutPolicy, WebhooksConfig};
use crate::hub::StreamKey;
use crate::metrics::Metrics;
use crate::redact::Query;
use crate::session::{Role, SessionEntry};

/// One lifecycle event, shaped like Node-Media-Server's webhook body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub event: &'static str,
    pub id: u64,
    pub ip: String,
    pub app: String,
    pub name: String,
    /// The request's query string, credentials redacted.
    pub query: Query,
    pub protocol: &'static str,
    /// Milliseconds since the Unix epoch when the session started.
    pub createtime: u64,
    /// Milliseconds since the Unix epoch when it ended (`done*` only).
    pub endtime: Option<u64>,
    pub inbytes: u64,
    pub outbytes: u64,
    /// `connect`, `publish` or `play`.
    pub action: &'static str,
}

pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Where one receiver's requests go.
struct Target {
    url: hyper::Uri,
    secret: Option<Vec<u8>>,
}

struct Hook {
    target: Arc<Target>,
    events: Vec<String>,
    apps: Vec<String>,
    /// This receiver's own `post*`/`done*` queue; its worker ends once the settings holding
    /// it are replaced and the queue is drained.
    queue: mpsc::Sender<(&'static str, Bytes)>,
}

impl Hook {
    fn wants(&self, e: &Event) -> bool {
        self.wants_named(e.event, &e.app)
    }

    fn wants_named(&self, event: &str, app: &str) -> bool {
        (self.events.is_empty() || self.events.iter().any(|x| x == event))
            && (self.apps.is_empty() || self.apps.iter().any(|a| a == app))
    }
}

/// An event that is not a session's (`postRecord`, `doneRecord`): its name, app and JSON
/// body, delivered like `post*`/`done*` events and shown on the SSE feed.
#[derive(Debug, Clone)]
pub struct OtherEvent {
    pub event: &'static str,
    pub app: String,
    pub body: Arc<serde_json::Value>,
}

/// Receivers and delivery settings; swapped whole when the config is reloaded.
struct Settings {
    hooks: Vec<Hook>,
    timeout: Duration,
    on_timeout: TimeoutPolicy,
}

/// Queued and in-flight `post*`/`done*` deliveries, so shutdown can wait for them.
#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

impl Pending {
    fn done(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// What a receiver's worker needs besides its queue.
#[derive(Clone)]
struct Delivery {
    client: HttpClient,
    metrics: Arc<Metrics>,
    pending: Arc<Pending>,
    timeout: Duration,
    max_attempts: u32,
}

pub struct Webhooks {
    settings: std::sync::RwLock<Arc<Settings>>,
    client: HttpClient,
    /// Every event, for the API's Server-Sent Events stream.
    events: broadcast::Sender<Event>,
    /// Events that are not a session's (recordings), for the SSE stream.
    others: broadcast::Sender<OtherEvent>,
    metrics: Arc<Metrics>,
    pending: Arc<Pending>,
}

impl Webhooks {
    /// Loads secrets and starts one delivery worker per receiver (needs a tokio runtime).
    pub fn start(config: &WebhooksConfig, metrics: Arc<Metrics>) -> Result<Arc<Webhooks>, AuthError> {
        let (events, _) = broadcast::channel(256);
        let client = Client::builder(TokioExecutor::new()).build_http();
        let pending = Arc::new(Pending::default());
        let settings = Self::load(config, &client, &metrics, &pending)?;
        Ok(Arc::new(Webhooks {
            settings: std::sync::RwLock::new(Arc::new(settings)),
            client,
            events,
            others: broadcast::channel(256).0,
            metrics,
            pending,
        }))
    }

    /// Applies reloaded webhook settings (receivers, secrets, timeouts, queue sizes). Events
    /// already queued for a receiver are still delivered by its old worker.
    pub fn reconfigure(&self, config: &WebhooksConfig) -> Result<(), AuthError> {
        let settings = Arc::new(Self::load(config, &self.client, &self.metrics, &self.pending)?);
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
        Ok(())
    }

    fn settings(&self) -> Arc<Settings> {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn load(
        config: &WebhooksConfig,
        client: &HttpClient,
        metrics: &Arc<Metrics>,
        pending: &Arc<Pending>,
    ) -> Result<Settings, AuthError> {
        let mut targets = Vec::new();
        for h in &config.hooks {
            let secret = match &h.secret_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|source| AuthError::SecretFile {
                            path: p.display().to_string(),
                            source,
                        })?
                        .trim()
                        .as_bytes()
                        .to_vec(),
                ),
                None => None,
            };
            let url = h
                .url
                .parse()
                .map_err(|e| AuthError::BadKey(format!("webhook url {}: {e}", crate::redact::url(&h.url))))?;
            targets.push((h, Arc::new(Target { url, secret })));
        }
        // Workers start only once every receiver loaded, so a refused reload leaves none behind.
        let delivery = Delivery {
            client: client.clone(),
            metrics: metrics.clone(),
            pending: pending.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            max_attempts: config.max_attempts.max(1),
        };
        let hooks = targets
            .into_iter()
            .map(|(h, target)| {
                let (queue, rx) = mpsc::channel(config.queue_size.max(1));
                tokio::spawn(worker(target.clone(), rx, delivery.clone()));
                Hook {
                    target,
                    events: h.events.clone(),
                    apps: h.apps.clone(),
                    queue,
                }
            })
            .collect();
        Ok(Settings {
            hooks,
            timeout: Duration::from_millis(config.timeout_ms),
            on_timeout: config.on_timeout,
        })
    }

    /// Lifecycle events as they happen (lagging subscribers miss some).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Asks every receiver of a `pre*` event; `Err` carries the reason to refuse.
    pub async fn ask(&self, event: &Event) -> Result<(), String> {
        let _ = self.events.send(event.clone());
        let body = Bytes::from(serde_json::to_vec(event).unwrap_or_default());
        let settings = self.settings();
        let settings = &settings;
        let calls = settings.hooks.iter().filter(|h| h.wants(event)).map(|h| {
            let body = body.clone();
            async move {
                let res = tokio::time::timeout(settings.timeout, send(&self.client, &h.target, body)).await;
                let verdict = match res {
                    Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
                    Ok(Ok(status)) => Err(format!("{} answered {status}", event.event)),
                    Ok(Err(e)) => unreachable_receiver(settings.on_timeout, event, &e),
                    Err(_) => unreachable_receiver(settings.on_timeout, event, "timed out"),
                };
                count(
                    &self.metrics,
                    event.event,
                    if verdict.is_ok() { "allowed" } else { "rejected" },
                );
                verdict
            }
        });
        for verdict in futures_util::future::join_all(calls).await {
            verdict?;
        }
        Ok(())
    }

    /// Queues a `post*`/`done*` event for each receiver that wants it; never waits. A
    /// receiver whose queue is full loses this event (counted), the others still get it.
    pub fn notify(&self, event: Event) {
        let _ = self.events.send(event.clone());
        let settings = self.settings();
        let mut body = None;
        for hook in settings.hooks.iter().filter(|h| h.wants(&event)) {
            let body = body
                .get_or_insert_with(|| Bytes::from(serde_json::to_vec(&event).unwrap_or_default()))
                .clone();
            self.pending.count.fetch_add(1, Ordering::AcqRel);
            if hook.queue.try_send((event.event, body)).is_err() {
                self.pending.done();
                self.metrics.webhook_dropped.inc();
                count(&self.metrics, event.event, "dropped");
            }
        }
    }

    /// Events that are not a session's, as they happen (lagging subscribers miss some).
    pub fn subscribe_other(&self) -> broadcast::Receiver<OtherEvent> {
        self.others.subscribe()
    }

    /// Queues an event that is not a session's for each receiver that wants it; never waits.
    pub fn notify_other(&self, event: &'static str, app: &str, body: serde_json::Value) {
        let body = Arc::new(body);
        let _ = self.others.send(OtherEvent {
            event,
            app: app.to_string(),
            body: body.clone(),
        });
        let settings = self.settings();
        let mut bytes = None;
        for hook in settings.hooks.iter().filter(|h| h.wants_named(event, app)) {
            let bytes = bytes
                .get_or_insert_with(|| Bytes::from(serde_json::to_vec(&*body).unwrap_or_default()))
                .clone();
            self.pending.count.fetch_add(1, Ordering::AcqRel);
            if hook.queue.try_send((event, bytes)).is_err() {
                self.pending.done();
                self.metrics.webhook_dropped.inc();
                count(&self.metrics, event, "dropped");
            }
        }
    }

    /// Completes once every queued `post*`/`done*` delivery has been made or given up.
    pub async fn delivered(&self) {
        loop {
            let idle = self.pending.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.pending.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

fn count(metrics: &Metrics, event: &str, result: &str) {
    metrics.webhook_calls.with_label_values(&[event, result]).inc();
}

async fn send(client: &HttpClient, target: &Target, body: Bytes) -> Result<u16, String> {
    let mut req = hyper::Request::post(target.url.clone()).header("content-type", "application/json");
    if let Some(secret) = &target.secret {
        req = req.header("x-ferrocast-signature", signature(secret, &body));
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

/// Delivers one receiver's queued events one after another, so it sees them in the order
/// they happened (`donePublish` before `doneConnect`). Ends when its queue is closed (the
/// settings were replaced) and drained.
async fn worker(target: Arc<Target>, mut rx: mpsc::Receiver<(&'static str, Bytes)>, d: Delivery) {
    while let Some((event, body)) = rx.recv().await {
        let mut backoff = Duration::from_millis(200);
        let mut delivered = false;
        for attempt in 1..=d.max_attempts {
            match tokio::time::timeout(d.timeout, send(&d.client, &target, body.clone())).await {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    delivered = true;
                    break;
                }
                other => debug!(event, attempt, "webhook delivery failed: {other:?}"),
            }
            if attempt < d.max_attempts {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        if delivered {
            count(&d.metrics, event, "delivered");
        } else {
            count(&d.metrics, event, "failed");
            d.metrics.webhook_dropped.inc();
        }
        d.pending.done();
    }
}

/// A `pre*` receiver that cannot answer: what `on_timeout` says.
fn unreachable_receiver(policy: TimeoutPolicy, event: &Event, why: &str) -> Result<(), String> {
    warn!(event = event.event, "webhook {why}; on_timeout = {policy:?}");
    match policy {
        TimeoutPolicy::Allow => Ok(()),
        TimeoutPolicy::Reject => Err(format!("{} webhook {why}", event.event)),
    }
}

/// The publish or play of one HTTP-FLV / WS-FLV session as webhooks see it: `begin` asks
/// `pre*` and sends `post*`; dropping it sends `done*` with the session's final byte counts.
pub struct Activity {
    hooks: Arc<Webhooks>,
    entry: Arc<SessionEntry>,
    role: Role,
    key: StreamKey,
    query: String,
}

impl Activity {
    pub async fn begin(
        hooks: Arc<Webhooks>,
        entry: Arc<SessionEntry>,
        role: Role,
        key: StreamKey,
        query: String,
    ) -> Result<Activity, String> {
        let a = Activity {
            hooks,
            entry,
            role,
            key,
            query,
        };
        a.hooks.ask(&a.event("pre", false)).await?;
        a.hooks.notify(a.event("post", false));
        Ok(a)
    }

    fn event(&self, phase: &str, ended: bool) -> Event {
        let (event, action) = match (phase, self.role) {
            ("pre", Role::Publisher) => ("prePublish", "publish"),
            ("post", Role::Publisher) => ("postPublish", "publish"),
            (_, Role::Publisher) => ("donePublish", "publish"),
            ("pre", Role::Player) => ("prePlay", "play"),
            ("post", Role::Player) => ("postPlay", "play"),
            (_, Role::Player) => ("donePlay", "play"),
        };
        let ip = self
            .entry
            .remote
            .rsplit_once(':')
            .map_or(self.entry.remote.as_str(), |(ip, _)| ip);
        Event {
            event,
            id: self.entry.id,
            ip: ip.trim_matches(|c| c == '[' || c == ']').to_string(),
            app: self.key.app.clone(),
            name: self.key.name.clone(),
            query: Query::new(&self.query),
            protocol: self.entry.protocol.as_str(),
            createtime: millis(self.entry.connected),
            endtime: ended.then(|| millis(SystemTime::now())),
            inbytes: self.entry.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            outbytes: self.entry.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
            action,
        }
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        self.hooks.notify(self.event("done", true));
    }
}

/// `sha256=` + hex HMAC-SHA256 of the body.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
