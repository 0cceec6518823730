//! The controllers: watch MediaApps and StreamAuths (and the Secrets, StreamAuths and
//! Services related to them), gather the render's inputs, apply its outputs with server-side
//! apply, write statuses and events, and count it all in metrics.
//!
//! Every reconcile renders the whole fleet (one ConfigMap and one Secret are shared by all
//! apps), so the fleet part is serialized behind one lock and always uses fresh inputs. A
//! deleted MediaApp has nothing left to reconcile, so a small loop also re-renders the fleet
//! on deletions and periodically; it prunes Services and generated certificates whose
//! MediaApp is gone (owner references make Kubernetes do the same).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::crd::{MediaApp, MediaAppStatus, StreamAuth, StreamAuthStatus};
use crate::fleet::Live;
use crate::metrics::Metrics;
use crate::render::{
    self, Desired, Fleet, Inputs, FIELD_MANAGER, GENERATED_CERT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MEDIAAPP_LABEL,
};
use crate::status::{media_app_status, not_ready_reason};
use crate::Error;

/// Requeue when nothing else triggers a reconcile (drift repair, certificate renewal).
const RESYNC: Duration = Duration::from_secs(300);
/// Requeue after a failed reconcile.
const RETRY: Duration = Duration::from_secs(15);
/// How often the server pods' live counts are read.
pub const LIVE_POLL: Duration = Duration::from_secs(15);
/// Per-pod timeout for reading live counts.
const LIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub fleet: Fleet,
    pub media_apps: Store<MediaApp>,
    pub stream_auths: Store<StreamAuth>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// The last live counts; `None` until the first poll.
    pub live: RwLock<Option<Live>>,
    fleet_lock: tokio::sync::Mutex<()>,
    /// Unix seconds; a function so tests can fix the clock.
    pub clock: fn() -> i64,
}

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Context {
    pub fn new(
        client: Client,
        fleet: Fleet,
        media_apps: Store<MediaApp>,
        stream_auths: Store<StreamAuth>,
        metrics: Metrics,
        identity: &str,
    ) -> Context {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity.to_string()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            fleet,
            media_apps,
            stream_auths,
            metrics,
            live: RwLock::new(None),
            fleet_lock: tokio::sync::Mutex::new(()),
            clock: system_now,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), &self.fleet.namespace)
    }

    /// Reads the render's inputs: resources from the caches, referenced Secrets from the API
    /// (in name order; a missing one is simply absent).
    pub async fn gather(&self) -> Result<Inputs, Error> {
        let mut media_apps: Vec<MediaApp> = self.media_apps.state().iter().map(|a| (**a).clone()).collect();
        media_apps.sort_by_key(|a| a.metadata.name.clone());
        let mut stream_auths: Vec<StreamAuth> = self.stream_auths.state().iter().map(|a| (**a).clone()).collect();
        stream_auths.sort_by_key(|a| a.metadata.name.clone());
        let mut names: BTreeSet<String> = BTreeSet::new();
        names.extend(stream_auths.iter().flat_map(StreamAuth::secret_names));
        names.extend(media_apps.iter().flat_map(MediaApp::secret_names));
        let wants_api_key = stream_auths.iter().any(|s| s.spec.api_users.is_some());
        if wants_api_key {
            names.insert(self.fleet.secret.clone());
        }
        let api: Api<Secret> = self.api();
        let mut secrets = BTreeMap::new();
        for name in names {
            if let Some(s) = api.get_opt(&name).await? {
                secrets.insert(name, s);
            }
        }
        // The API token key lives in the fleet Secret; made once, then kept.
        let api_token_key = wants_api_key.then(|| {
            secrets
                .get(&self.fleet.secret)
                .and_then(|s| {
                    s.data
                        .as_ref()?
                        .get(render::API_TOKEN_KEY)
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                })
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect())
        });
        Ok(Inputs {
            media_apps,
            stream_auths,
            secrets,
            api_token_key,
            now: (self.clock)(),
        })
    }

    /// Generates or renews self-signed certificates that are missing or due, applies their
    /// Secrets, and puts them into `inputs`.
    async fn ensure_certificates(&self, inputs: &mut Inputs) -> Result<(), Error> {
        let api: Api<Secret> = self.api();
        for ma in &inputs.media_apps {
            let Some(tls) = ma
                .spec
                .tls
                .as_ref()
                .filter(|t| t.enabled && t.secret_name.is_none() && !t.hosts.is_empty())
            else {
                continue;
            };
            let name = ma.name_any();
            let secret_name = render::generated_cert_secret(&name);
            let existing = inputs.secrets.get(&secret_name);
            if existing.is_some() && !render::is_generated_cert(existing, &name) {
                // Someone else's Secret with our name: never overwrite it (the render reports it).
                continue;
            }
            let Some(why) = crate::tls::renewal_reason(existing, &tls.hosts, inputs.now) else {
                continue;
            };
            let generated = crate::tls::generate(&tls.hosts, inputs.now).map_err(|message| Error::Certificate {
                media_app: name.clone(),
                message,
            })?;
            let (data, annotations) = crate::tls::secret_contents(&generated, &tls.hosts);
            let mut secret = Secret {
                type_: Some("kubernetes.io/tls".into()),
                data: Some(data),
                ..Default::default()
            };
            secret.metadata.name = Some(secret_name.clone());
            secret.metadata.namespace = Some(self.fleet.namespace.clone());
            secret.metadata.annotations = Some(annotations);
            secret.metadata.labels = Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (MEDIAAPP_LABEL.to_string(), name.clone()),
                (GENERATED_CERT_LABEL.to_string(), "true".to_string()),
            ]));
            secret.metadata.owner_references = ma.controller_owner_ref(&()).map(|r| vec![r]);
            let applied = api.patch(&secret_name, &apply_params(), &Patch::Apply(&secret)).await?;
            info!(mediaapp = %name, reason = why, "self-signed certificate generated");
            self.event(
                ma,
                EventType::Normal,
                "CertificateIssued",
                "GenerateCertificate",
                format!(
                    "self-signed certificate for {} generated ({why}), valid 90 days",
                    tls.hosts.join(", ")
                ),
            )
            .await;
            inputs.secrets.insert(secret_name, applied);
        }
        Ok(())
    }

    /// Renders the fleet and applies its ConfigMap and Secret; prunes what no MediaApp wants.
    pub async fn sync_fleet(&self) -> Result<(Inputs, Desired), Error> {
        let _one_at_a_time = self.fleet_lock.lock().await;
        let mut inputs = self.gather().await?;
        self.ensure_certificates(&mut inputs).await?;
        let desired = render::render(&self.fleet, &inputs)?;
        let cms: Api<ConfigMap> = self.api();
        cms.patch(
            &self.fleet.config_map,
            &apply_params(),
            &Patch::Apply(&desired.config_map),
        )
        .await?;
        let secrets: Api<Secret> = self.api();
        secrets
            .patch(&self.fleet.secret, &apply_params(), &Patch::Apply(&desired.secret))
            .await?;
        self.prune(&desired).await?;
        self.metrics.managed_objects.with_label_values(&["ConfigMap"]).set(1);
        self.metrics
            .managed_objects
            .with_label_values(&["Secret"])
            .set(1 + desired.generated_certs.len() as i64);
        self.metrics
            .managed_objects
            .with_label_values(&["Service"])
            .set(desired.services.len() as i64);
        Ok((inputs, desired))
    }

    /// Deletes managed Services and generated certificates that the render no longer wants.
    async fn prune(&self, desired: &Desired) -> Result<(), Error> {
        let services: Api<Service> = self.api();
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY},{MEDIAAPP_LABEL}");
        for svc in services.list(&ListParams::default().labels(&selector)).await? {
            let owner = svc.labels().get(MEDIAAPP_LABEL).cloned().unwrap_or_default();
            let wanted = desired
                .services
                .get(&owner)
                .is_some_and(|d| d.metadata.name == svc.metadata.name);
            if !wanted {
                let name = svc.name_any();
                delete_ignoring_absent(&services, &name).await?;
                info!(service = %name, mediaapp = %owner, "deleted a Service no MediaApp asks for");
            }
        }
        let secrets: Api<Secret> = self.api();
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY},{GENERATED_CERT_LABEL}");
        for s in secrets.list_metadata(&ListParams::default().labels(&selector)).await? {
            let owner = s.labels().get(MEDIAAPP_LABEL).cloned().unwrap_or_default();
            if !desired.generated_certs.contains_key(&owner) {
                let name = s.name_any();
                delete_ignoring_absent(&secrets, &name).await?;
                info!(secret = %name, mediaapp = %owner, "deleted a generated certificate no MediaApp uses");
            }
        }
        Ok(())
    }

    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        // An event that cannot be written is not worth failing a reconcile over.
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!("cannot publish event {reason}: {e}");
        }
    }

    /// Publishes an event when the `Ready` condition flips or its reason changes.
    async fn ready_event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        before: Option<&crate::crd::Condition>,
        after: &crate::crd::Condition,
    ) {
        let changed = before.is_none_or(|b| b.status != after.status || b.reason != after.reason);
        if !changed {
            return;
        }
        if after.status == "True" {
            self.event(
                obj,
                EventType::Normal,
                "Ready",
                "Reconcile",
                "reconciled; the fleet serves it".into(),
            )
            .await;
        } else {
            self.event(
                obj,
                EventType::Warning,
                &after.reason,
                "Reconcile",
                after.message.clone(),
            )
            .await;
        }
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn ready(conditions: &[crate::crd::Condition]) -> Option<&crate::crd::Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// Reconciles one MediaApp: the fleet, its Service, its status.
pub async fn reconcile_media_app(ma: Arc<MediaApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.time("MediaApp").start_timer();
    let name = ma.name_any();
    let (inputs, desired) = ctx.sync_fleet().await?;
    let Some(outcome) = desired.apps.get(&name) else {
        // Not in the cache yet (or just deleted): the next event brings it.
        return Ok(Action::requeue(RETRY));
    };
    let observed = match desired.services.get(&name) {
        Some(svc) => {
            let api: Api<Service> = ctx.api();
            let svc_name = render::service_name(&name);
            match api.get_opt(&svc_name).await? {
                // Someone else's Service with our name: never take it over (status says so).
                Some(existing) if !crate::status::is_managed_service(&existing, &name) => Some(existing),
                _ => Some(api.patch(&svc_name, &apply_params(), &Patch::Apply(svc)).await?),
            }
        }
        None => None,
    };
    let live = ctx.live.read().unwrap_or_else(|e| e.into_inner()).clone();
    let status = media_app_status(&ctx.fleet, &ma, outcome, observed.as_ref(), live.as_ref(), inputs.now);
    let before = ma.status.as_ref().and_then(|s| ready(&s.conditions));
    if let Some(after) = ready(&status.conditions) {
        ctx.ready_event(ma.as_ref(), before, after).await;
    }
    if ma.status.as_ref() != Some(&status) {
        patch_status::<MediaApp, MediaAppStatus>(&ctx, &name, &status).await?;
    }
    let reason = not_ready_reason(&status);
    ctx.metrics
        .mediaapp_ready
        .with_label_values(&[&name])
        .set(i64::from(reason.is_none()));
    ctx.metrics.reconciled("MediaApp", reason);
    // Come back before a generated certificate is due for renewal.
    let renew_in = inputs
        .secrets
        .get(&render::generated_cert_secret(&name))
        .filter(|_| desired.generated_certs.contains_key(&name))
        .and_then(crate::tls::renew_at)
        .map(|t| Duration::from_secs((t - inputs.now).max(60) as u64));
    Ok(Action::requeue(renew_in.map_or(RESYNC, |r| r.min(RESYNC))))
}

/// Reconciles one StreamAuth: the fleet (API users are fleet-wide) and its status.
pub async fn reconcile_stream_auth(sa: Arc<StreamAuth>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.time("StreamAuth").start_timer();
    let name = sa.name_any();
    let (_, desired) = ctx.sync_fleet().await?;
    let Some(status) = desired.stream_auths.get(&name) else {
        return Ok(Action::requeue(RETRY));
    };
    let before = sa.status.as_ref().and_then(|s| ready(&s.conditions));
    if let Some(after) = ready(&status.conditions) {
        ctx.ready_event(sa.as_ref(), before, after).await;
    }
    if sa.status.as_ref() != Some(status) {
        patch_status::<StreamAuth, StreamAuthStatus>(&ctx, &name, status).await?;
    }
    let reason = status
        .conditions
        .iter()
        .find(|c| c.status != "True")
        .map(|c| c.reason.as_str());
    ctx.metrics.reconciled("StreamAuth", reason);
    Ok(Action::requeue(RESYNC))
}

async fn patch_status<K, S>(ctx: &Context, name: &str, status: &S) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: serde::Serialize,
{
    let api: Api<K> = ctx.api();
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(&body)).await?;
    Ok(())
}

pub fn error_policy_media_app(ma: Arc<MediaApp>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(mediaapp = %ma.name_any(), "reconcile failed: {error}");
    ctx.metrics.failed("MediaApp", error.reason());
    Action::requeue(RETRY)
}

pub fn error_policy_stream_auth(sa: Arc<StreamAuth>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(streamauth = %sa.name_any(), "reconcile failed: {error}");
    ctx.metrics.failed("StreamAuth", error.reason());
    Action::requeue(RETRY)
}

/// MediaApps affected by a change of Secret `secret`: directly (TLS, webhooks) or through a
/// StreamAuth they use.
pub fn media_apps_for_secret(
    secret: &str,
    media_apps: &[Arc<MediaApp>],
    stream_auths: &[Arc<StreamAuth>],
) -> Vec<ObjectRef<MediaApp>> {
    let auths: BTreeSet<String> = stream_auths
        .iter()
        .filter(|s| s.secret_names().iter().any(|n| n == secret))
        .map(|s| s.name_any())
        .collect();
    media_apps
        .iter()
        .filter(|m| m.secret_names().iter().any(|n| n == secret) || m.auth_refs().iter().any(|r| auths.contains(r)))
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// MediaApps whose `authRef` names StreamAuth `name`.
pub fn media_apps_for_stream_auth(name: &str, media_apps: &[Arc<MediaApp>]) -> Vec<ObjectRef<MediaApp>> {
    media_apps
        .iter()
        .filter(|m| m.auth_refs().iter().any(|r| r == name))
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// StreamAuths to re-check when MediaApp `ma` changes: those it names now and those that
/// still list it in `usedBy`.
pub fn stream_auths_for_media_app(ma: &MediaApp, stream_auths: &[Arc<StreamAuth>]) -> Vec<ObjectRef<StreamAuth>> {
    let name = ma.name_any();
    let refs = ma.auth_refs();
    stream_auths
        .iter()
        .filter(|s| refs.contains(&s.name_any()) || s.status.as_ref().is_some_and(|st| st.used_by.contains(&name)))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// Reads live counts from the server pods, publishes them as metrics and triggers a
/// reconcile of every MediaApp whose counts in status are out of date.
pub async fn live_loop(
    ctx: Arc<Context>,
    server_admin_port: u16,
    trigger: futures::channel::mpsc::Sender<ObjectRef<MediaApp>>,
) {
    let pods: Api<Pod> = ctx.api();
    let selector = crate::cli::selector_string(&ctx.fleet.selector);
    let mut trigger = trigger;
    loop {
        match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                let addrs: Vec<std::net::SocketAddr> = list
                    .items
                    .iter()
                    .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                    .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse::<std::net::IpAddr>().ok())
                    .map(|ip| std::net::SocketAddr::new(ip, server_admin_port))
                    .collect();
                let live = crate::fleet::poll(&addrs, LIVE_TIMEOUT).await;
                for ma in ctx.media_apps.state() {
                    let name = ma.name_any();
                    let counts = live.app(&ma.app_name());
                    ctx.metrics
                        .mediaapp_live_streams
                        .with_label_values(&[&name])
                        .set(counts.streams);
                    ctx.metrics
                        .mediaapp_sessions
                        .with_label_values(&[&name, "publisher"])
                        .set(counts.publishers);
                    ctx.metrics
                        .mediaapp_sessions
                        .with_label_values(&[&name, "player"])
                        .set(counts.players);
                    let shown = ma.status.as_ref().map(|s| (s.live_streams, s.sessions.clone()));
                    let now = (
                        Some(counts.streams),
                        Some(crate::crd::SessionCounts {
                            publishers: counts.publishers,
                            players: counts.players,
                        }),
                    );
                    if shown.as_ref() != Some(&now) {
                        let _ = trigger.try_send(ObjectRef::from_obj(ma.as_ref()));
                    }
                }
                *ctx.live.write().unwrap_or_else(|e| e.into_inner()) = Some(live);
            }
            Err(e) => warn!("cannot list the server pods for live counts: {e}"),
        }
        tokio::time::sleep(LIVE_POLL).await;
    }
}

/// Re-renders the fleet at start, whenever a MediaApp or StreamAuth is deleted, and
/// periodically, so the shared ConfigMap and Secret never keep a deleted app.
pub async fn fleet_loop(ctx: Arc<Context>) {
    let notify = Arc::new(tokio::sync::Notify::new());
    let deletions = |api_stream: futures::stream::BoxStream<'static, Option<String>>,
                     notify: Arc<tokio::sync::Notify>,
                     metrics: Metrics| async move {
        let mut s = api_stream;
        while let Some(deleted) = s.next().await {
            if let Some(name) = deleted {
                metrics.forget_mediaapp(&name);
                notify.notify_one();
            }
        }
    };
    let ma_events = watcher(ctx.api::<MediaApp>(), watcher::Config::default())
        .default_backoff()
        .map(|e| match e {
            Ok(watcher::Event::Delete(ma)) => Some(ma.name_any()),
            _ => None,
        })
        .boxed();
    let sa_events = watcher(ctx.api::<StreamAuth>(), watcher::Config::default())
        .default_backoff()
        .map(|e| match e {
            Ok(watcher::Event::Delete(_)) => Some(String::new()),
            _ => None,
        })
        .boxed();
    tokio::spawn(deletions(ma_events, notify.clone(), ctx.metrics.clone()));
    tokio::spawn(deletions(sa_events, notify.clone(), ctx.metrics.clone()));
    loop {
        if let Err(e) = ctx.sync_fleet().await {
            // MediaApp and StreamAuth reconciles hit the same error and count it.
            warn!("fleet sync failed: {e}");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// Runs both controllers and the fleet and live loops until `shutdown` resolves.
pub async fn run(
    client: Client,
    fleet: Fleet,
    metrics: Metrics,
    identity: &str,
    server_admin_port: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = fleet.namespace.clone();
    let media_apps: Api<MediaApp> = Api::namespaced(client.clone(), &ns);
    let stream_auths: Api<StreamAuth> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);

    let sa_controller = Controller::new(stream_auths.clone(), watcher::Config::default());
    let sa_store = sa_controller.store();
    let ma_controller = Controller::new(media_apps.clone(), watcher::Config::default());
    let ma_store = ma_controller.store();

    let (trigger_tx, trigger_rx) = futures::channel::mpsc::channel(256);
    let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
    // Secrets are watched by metadata only: names are all the mapping needs, and secret
    // values then never travel to the operator just for a trigger.
    let secret_events = |api: Api<PartialObjectMeta<Secret>>| {
        watcher(api, watcher::Config::default())
            .default_backoff()
            .touched_objects()
    };

    let (mas, sas) = (ma_store.clone(), sa_store.clone());
    let (mas2, sas2) = (ma_store.clone(), sa_store.clone());
    let ma_controller = ma_controller
        .owns(services, watcher::Config::default().labels(&managed))
        .watches(stream_auths.clone(), watcher::Config::default(), move |sa| {
            media_apps_for_stream_auth(&sa.name_any(), &mas.state())
        })
        .watches_stream(secret_events(secrets.clone()), move |s| {
            media_apps_for_secret(&s.name_any(), &mas2.state(), &sas.state())
        })
        .reconcile_on(trigger_rx);
    let sas3 = sa_store.clone();
    let sa_controller = sa_controller
        .watches(media_apps.clone(), watcher::Config::default(), move |ma| {
            stream_auths_for_media_app(&ma, &sas2.state())
        })
        .watches_stream(secret_events(secrets), move |s| {
            let name = s.name_any();
            sas3.state()
                .iter()
                .filter(|a| a.secret_names().contains(&name))
                .map(|a| ObjectRef::from_obj(a.as_ref()))
                .collect::<Vec<_>>()
        });

    let ctx = Arc::new(Context::new(
        client,
        fleet,
        ma_store.clone(),
        sa_store.clone(),
        metrics,
        identity,
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let ma_run = ma_controller
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(reconcile_media_app, error_policy_media_app, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("MediaApp controller: {e}");
            }
        });
    let sa_run = sa_controller
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(reconcile_stream_auth, error_policy_stream_auth, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("StreamAuth controller: {e}");
            }
        });
    let loops = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = tokio::join!(ma_store.wait_until_ready(), sa_store.wait_until_ready());
            info!("caches synced; reconciling");
            tokio::join!(fleet_loop(ctx.clone()), live_loop(ctx, server_admin_port, trigger_tx));
        })
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    tokio::join!(ma_run, sa_run);
    loops.abort();
}
