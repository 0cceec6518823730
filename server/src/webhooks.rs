//! Lifecycle webhooks with Node-Media-Server's event names and fields.
//!
//! `pre*` events are asked before a request is accepted: any receiver answering non-2xx
//! rejects it, and a timeout means what `on_timeout` says. `post*`/`done*` events go through a
//! bounded queue to a background worker, in order, with retries and backoff; a full queue drops and
//! counts, so no connection ever waits on a receiver. Every request carries
//! `X-Ferrocast-Signature: sha256=HEX(HMAC-SHA256(secret, body))` when a secret is set.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, warn};

use crate::auth::AuthError;
use crate::config::{TimeoutPolicy, WebhooksConfig};
use crate::hub::StreamKey;
use crate::metrics::Metrics;
use crate::session::{Role, SessionEntry};

/// One lifecycle event, shaped like Node-Media-Server's webhook body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub event: &'static str,
    pub id: u64,
    pub ip: String,
    pub app: String,
    pub name: String,
    pub query: String,
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

struct Hook {
    url: hyper::Uri,
    events: Vec<String>,
    apps: Vec<String>,
    secret: Option<Vec<u8>>,
}

impl Hook {
    fn wants(&self, e: &Event) -> bool {
        (self.events.is_empty() || self.events.iter().any(|x| x == e.event))
            && (self.apps.is_empty() || self.apps.contains(&e.app))
    }
}

/// Receivers and delivery settings; swapped whole when the config is reloaded.
struct Settings {
    hooks: Vec<Hook>,
    timeout: Duration,
    on_timeout: TimeoutPolicy,
    max_attempts: u32,
}

pub struct Webhooks {
    settings: std::sync::RwLock<Arc<Settings>>,
    client: HttpClient,
    queue: mpsc::Sender<Event>,
    /// Every event, for the API's Server-Sent Events stream.
    events: broadcast::Sender<Event>,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    /// Loads secrets and starts the delivery worker (needs a tokio runtime).
    pub fn start(config: &WebhooksConfig, metrics: Arc<Metrics>) -> Result<Arc<Webhooks>, AuthError> {
        let settings = Self::load(config)?;
        let (queue, rx) = mpsc::channel(config.queue_size.max(1));
        let (events, _) = broadcast::channel(256);
        let client = Client::builder(TokioExecutor::new()).build_http();
        let w = Arc::new(Webhooks {
            settings: std::sync::RwLock::new(Arc::new(settings)),
            client,
            queue,
            events,
            metrics,
        });
        tokio::spawn(worker(Arc::downgrade(&w), rx));
        Ok(w)
    }

    /// Applies reloaded webhook settings (receivers, secrets, timeouts); the queue size stays.
    pub fn reconfigure(&self, config: &WebhooksConfig) -> Result<(), AuthError> {
        let settings = Arc::new(Self::load(config)?);
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
        Ok(())
    }

    fn settings(&self) -> Arc<Settings> {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn load(config: &WebhooksConfig) -> Result<Settings, AuthError> {
        let mut hooks = Vec::new();
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
                .map_err(|e| AuthError::BadKey(format!("webhook url {}: {e}", h.url)))?;
            hooks.push(Hook {
                url,
                events: h.events.clone(),
                apps: h.apps.clone(),
                secret,
            });
        }
        Ok(Settings {
            hooks,
            timeout: Duration::from_millis(config.timeout_ms),
            on_timeout: config.on_timeout,
            max_attempts: config.max_attempts.max(1),
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
                let res = tokio::time::timeout(settings.timeout, self.send(h, body)).await;
                let verdict = match res {
                    Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
                    Ok(Ok(status)) => Err(format!("{} answered {status}", event.event)),
                    Ok(Err(e)) => unreachable_receiver(settings.on_timeout, event, &e),
                    Err(_) => unreachable_receiver(settings.on_timeout, event, "timed out"),
                };
                self.count(event.event, if verdict.is_ok() { "allowed" } else { "rejected" });
                verdict
            }
        });
        for verdict in futures_util::future::join_all(calls).await {
            verdict?;
        }
        Ok(())
    }

    /// Queues a `post*`/`done*` event; never waits.
    pub fn notify(&self, event: Event) {
        let _ = self.events.send(event.clone());
        if !self.settings().hooks.iter().any(|h| h.wants(&event)) {
            return;
        }
        if self.queue.try_send(event).is_err() {
            self.metrics.webhook_dropped.inc();
        }
    }

    fn count(&self, event: &str, result: &str) {
        self.metrics.webhook_calls.with_label_values(&[event, result]).inc();
    }

    async fn send(&self, hook: &Hook, body: Bytes) -> Result<u16, String> {
        let mut req = hyper::Request::post(hook.url.clone()).header("content-type", "application/json");
        if let Some(secret) = &hook.secret {
            req = req.header("x-ferrocast-signature", signature(secret, &body));
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    }

    async fn deliver(&self, event: Event) {
        let body = Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
        let settings = self.settings();
        for hook in settings.hooks.iter().filter(|h| h.wants(&event)) {
            let mut backoff = Duration::from_millis(200);
            let mut delivered = false;
            for attempt in 1..=settings.max_attempts {
                match tokio::time::timeout(settings.timeout, self.send(hook, body.clone())).await {
                    Ok(Ok(status)) if (200..300).contains(&status) => {
                        delivered = true;
                        break;
                    }
                    other => debug!(event = event.event, attempt, "webhook delivery failed: {other:?}"),
                }
                if attempt < settings.max_attempts {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            if delivered {
                self.count(event.event, "delivered");
            } else {
                self.count(event.event, "failed");
                self.metrics.webhook_dropped.inc();
            }
        }
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
            query: self.query.clone(),
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

/// Delivers queued events one after another, so receivers see them in the order they
/// happened (`donePublish` before `doneConnect`); a slow receiver only fills the bounded
/// queue, whose overflow is dropped and counted.
async fn worker(hooks: std::sync::Weak<Webhooks>, mut rx: mpsc::Receiver<Event>) {
    while let Some(event) = rx.recv().await {
        let Some(w) = hooks.upgrade() else { return };
        w.deliver(event).await;
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
