//! The controllers: watch MediaApps and StreamAuths of every namespace the fleet serves (and
//! the Secrets, StreamAuths and Services related to them), gather the render's inputs, apply
//! its outputs with server-side apply, write statuses and events, and count it all in metrics.
//!
//! Every reconcile renders the whole fleet (one ConfigMap and one Secret are shared by all
//! apps), so the fleet part is serialized behind one lock; it writes only when the render
//! changed. Reconciles follow spec changes only (the generation), never status writes, and
//! read Secrets from a watch cache, so a status write costs no fleet sync. Secrets are applied
//! before the ConfigMap that names them. A deleted MediaApp has nothing left to reconcile, so
//! a small loop also re-renders the fleet on deletions and periodically; it prunes Services
//! and generated certificates whose MediaApp is gone, by their labels (owner references make
//! Kubernetes do the same for MediaApps of the fleet namespace; they cannot cross namespaces).
//! Statuses and events go to each resource in its own namespace. The live loop polls the
//! server pods: counts go to metrics and, at a bounded rate, to status under their own field
//! manager; a change in whether the pods run the current config re-reconciles the MediaApps
//! (`ConfigApplied`, `Ready`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, PredicateConfig, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::crd::{MediaApp, MediaAppStatus, StreamAuth};
use crate::fleet::{Live, Rollout};
use crate::metrics::Metrics;
use crate::render::{
    self, Desired, Fleet, Inputs, FLEET_LABEL, GENERATED_CERT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MEDIAAPP_LABEL,
};
use crate::scope;
use crate::status::{media_app_status, not_ready_reason};
use crate::Error;

/// Requeue when nothing else triggers a reconcile (drift repair, certificate renewal).
const RESYNC: Duration = Duration::from_secs(300);
/// Requeue after a failed reconcile.
const RETRY: Duration = Duration::from_secs(15);
/// How often the server pods are read while they run the current config.
pub const LIVE_POLL: Duration = Duration::from_secs(15);
/// How often they are read while a new config rolls out (so `Ready` follows within seconds).
pub const ROLLOUT_POLL: Duration = Duration::from_secs(2);
/// At most one live-count status write per MediaApp in this time.
pub const LIVE_STATUS_INTERVAL: Duration = Duration::from_secs(60);
/// Per-pod timeout for reading a pod's metrics.
const LIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub fleet: Fleet,
    pub media_apps: Store<MediaApp>,
    pub stream_auths: Store<StreamAuth>,
    /// The Secrets of the fleet's namespaces, from a watch (Helm release records left out).
    pub secrets: Store<Secret>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// The last poll of the server pods; `None` until the first poll after the current
    /// config was written.
    pub live: RwLock<Option<Live>>,
    /// The fleet lock; holds what was last applied (the render's revision and the objects
    /// it wants), so an unchanged render writes nothing.
    applied: tokio::sync::Mutex<Option<String>>,
    /// The revision of the config last written.
    revision: RwLock<String>,
    /// Wakes the live loop when a new revision was written.
    poll_now: tokio::sync::Notify,
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
        secrets: Store<Secret>,
        metrics: Metrics,
        identity: &str,
    ) -> Context {
        let reporter = Reporter {
            controller: fleet.field_manager(),
            instance: Some(identity.to_string()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            fleet,
            media_apps,
            stream_auths,
            secrets,
            metrics,
            live: RwLock::new(None),
            applied: tokio::sync::Mutex::new(None),
            revision: RwLock::new(String::new()),
            poll_now: tokio::sync::Notify::new(),
            clock: system_now,
        }
    }

    /// The revision of the config last written (empty before the first sync).
    pub fn revision(&self) -> String {
        self.revision.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the server pods run the current config, from the last poll.
    pub fn rollout(&self) -> Rollout {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        crate::fleet::rollout(&self.revision(), live.as_ref())
    }

    fn apply_params(&self) -> PatchParams {
        PatchParams::apply(&self.fleet.field_manager()).force()
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

    /// The API of a resource's own namespace (for its status).
    fn api_of<K>(&self, obj: &impl Resource) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), self.fleet.namespace_of(obj.meta()))
    }

    /// Reads the render's inputs, all from the watch caches: this fleet's resources and the
    /// Secrets they reference, each from the resource's own namespace (a missing one is
    /// simply absent); generated certificates from the fleet namespace. Waits until the caches have
    /// listed once, so a starting operator never renders from empty caches.
    pub async fn gather(&self) -> Result<Inputs, Error> {
        let ready = async {
            let _ = tokio::join!(
                self.media_apps.wait_until_ready(),
                self.stream_auths.wait_until_ready(),
                self.secrets.wait_until_ready()
            );
        };
        ready.await;
        let mut media_apps: Vec<MediaApp> = self
            .media_apps
            .state()
            .iter()
            .filter(|a| self.fleet.serves(&a.metadata))
            .map(|a| (**a).clone())
            .collect();
        media_apps.sort_by_key(|a| self.fleet.key_of(&a.metadata));
        let mut stream_auths: Vec<StreamAuth> = self
            .stream_auths
            .state()
            .iter()
            .filter(|a| self.fleet.serves(&a.metadata))
            .map(|a| (**a).clone())
            .collect();
        stream_auths.sort_by_key(|a| self.fleet.key_of(&a.metadata));
        // (namespace, name) of every Secret to read.
        let fleet_ns = self.fleet.namespace.as_str();
        let mut names: BTreeSet<(&str, String)> = BTreeSet::new();
        for sa in &stream_auths {
            let ns = self.fleet.namespace_of(&sa.metadata);
            names.extend(sa.secret_names().into_iter().map(|n| (ns, n)));
        }
        for ma in &media_apps {
            let ns = self.fleet.namespace_of(&ma.metadata);
            names.extend(ma.secret_names().into_iter().map(|n| (ns, n)));
            names.insert((fleet_ns, self.fleet.generated_cert_secret(&ma.metadata)));
        }
        let wants_api_key = stream_auths.iter().any(|s| s.spec.api_users.is_some());
        // The fleet Secret holds what is made once and kept: the revision salt, the API key.
        names.insert((fleet_ns, self.fleet.secret.clone()));
        let mut secrets = BTreeMap::new();
        for (ns, name) in names {
            if let Some(s) = self.secrets.get(&ObjectRef::new(&name).within(ns)) {
                secrets.insert(self.fleet.key(ns, &name), (*s).clone());
            }
        }
        let kept = |key: &str| {
            secrets
                .get(&self.fleet.secret)
                .and_then(|s| {
                    s.data
                        .as_ref()?
                        .get(key)
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                })
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect())
        };
        let api_token_key = wants_api_key.then(|| kept(render::API_TOKEN_KEY));
        let revision_salt = Some(kept(render::REVISION_SALT_KEY));
        let cluster_secret = Some(kept(render::CLUSTER_SECRET_KEY));
        Ok(Inputs {
            media_apps,
            stream_auths,
            secrets,
            api_token_key,
            revision_salt,
            cluster_secret,
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
            let name = self.fleet.key_of(&ma.metadata);
            // In the fleet namespace, so its key in the inputs is its name.
            let secret_name = self.fleet.generated_cert_secret(&ma.metadata);
            let existing = inputs.secrets.get(&secret_name);
            if existing.is_some() && !render::is_generated_cert(&self.fleet, existing, &ma.metadata) {
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
            let mut labels = BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (FLEET_LABEL.to_string(), self.fleet.name.clone()),
                (GENERATED_CERT_LABEL.to_string(), "true".to_string()),
            ]);
            labels.extend(
                self.fleet
                    .media_app_labels(&ma.metadata)
                    .map(|(k, v)| (k.to_string(), v)),
            );
            secret.metadata.labels = Some(labels);
            secret.metadata.owner_references = render::owner_reference(&self.fleet, ma);
            let applied = api
                .patch(&secret_name, &self.apply_params(), &Patch::Apply(&secret))
                .await?;
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

    /// Renders the fleet; when the render changed since the last write (or `force`), applies
    /// its Secret, then the ConfigMap that names the Secret's files, and prunes what no
    /// MediaApp wants.
    pub async fn sync_fleet(&self, force: bool) -> Result<(Inputs, Desired), Error> {
        let mut applied = self.applied.lock().await;
        let mut inputs = self.gather().await?;
        self.ensure_certificates(&mut inputs).await?;
        let desired = render::render(&self.fleet, &inputs)?;
        let key = format!(
            "{} {:?} {:?}",
            desired.revision,
            desired.services.keys().collect::<Vec<_>>(),
            desired.generated_certs.keys().collect::<Vec<_>>()
        );
        if force || applied.as_deref() != Some(key.as_str()) {
            // The Secret first: a server that sees the new config finds its files (and the
            // config's revision file makes it wait for them if the kubelet is slower).
            let secrets: Api<Secret> = self.api();
            secrets
                .patch(&self.fleet.secret, &self.apply_params(), &Patch::Apply(&desired.secret))
                .await?;
            let cms: Api<ConfigMap> = self.api();
            cms.patch(
                &self.fleet.config_map,
                &self.apply_params(),
                &Patch::Apply(&desired.config_map),
            )
            .await?;
            self.prune(&desired).await?;
            let mut revision = self.revision.write().unwrap_or_else(|e| e.into_inner());
            if *revision != desired.revision {
                info!(revision = %desired.revision, "server config written");
                // Poll the pods soon, so Ready follows the rollout within seconds.
                self.poll_now.notify_one();
            }
            *revision = desired.revision.clone();
            *applied = Some(key);
        }
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
        let fleet = &self.fleet.name;
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY},{FLEET_LABEL}={fleet},{MEDIAAPP_LABEL}");
        for svc in services.list(&ListParams::default().labels(&selector)).await? {
            let owner = self.fleet.labelled_media_app(svc.labels()).unwrap_or_default();
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
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY},{FLEET_LABEL}={fleet},{GENERATED_CERT_LABEL}");
        for s in secrets.list_metadata(&ListParams::default().labels(&selector)).await? {
            let owner = self.fleet.labelled_media_app(s.labels()).unwrap_or_default();
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
        // A rollout in progress is routine: the status says it, an event would be noise.
        if !changed || after.reason == "ConfigPending" {
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
    if !ctx.fleet.serves(&ma.metadata) {
        // Labelled for another fleet: that fleet's operator reconciles it. The fleet that
        // serves unlabelled resources says so when no such fleet runs here.
        if ctx.fleet.serves_unlabelled_now() {
            report_outside_any_fleet(&ctx, &ma).await?;
        }
        return Ok(Action::requeue(RESYNC));
    }
    let _timer = ctx.metrics.time("MediaApp").start_timer();
    // Its key in the render (`<namespace>/<name>` outside the fleet namespace) names it in
    // metrics too.
    let name = ctx.fleet.key_of(&ma.metadata);
    let (inputs, desired) = ctx.sync_fleet(false).await?;
    let Some(outcome) = desired.apps.get(&name) else {
        // Not in the cache yet (or just deleted): the next event brings it.
        return Ok(Action::requeue(RETRY));
    };
    let observed = match desired.services.get(&name) {
        Some(svc) => {
            let api: Api<Service> = ctx.api();
            let svc_name = ctx.fleet.service_name(&ma.metadata);
            match api.get_opt(&svc_name).await? {
                // Someone else's Service with our name (or another namespace's MediaApp's):
                // never take it over (status says so).
                Some(existing) if !crate::status::is_managed_service(&ctx.fleet, &existing, &ma.metadata) => {
                    Some(existing)
                }
                _ => Some(api.patch(&svc_name, &ctx.apply_params(), &Patch::Apply(svc)).await?),
            }
        }
        None => None,
    };
    let status = media_app_status(
        &ctx.fleet,
        &ma,
        outcome,
        observed.as_ref(),
        &ctx.rollout(),
        &desired.revision,
        inputs.now,
    );
    let before = ma.status.as_ref().and_then(|s| ready(&s.conditions));
    if let Some(after) = ready(&status.conditions) {
        ctx.ready_event(ma.as_ref(), before, after).await;
    }
    // Live counts are the live loop's; only the rest is compared and written here.
    let shown = ma.status.clone().map(|s| MediaAppStatus {
        live_streams: None,
        sessions: None,
        ..s
    });
    if shown.as_ref() != Some(&status) {
        patch_status(&ctx, ma.as_ref(), &status, &ctx.fleet.field_manager()).await?;
    }
    match outcome.tls_not_after.filter(|_| outcome.tls_served) {
        Some(t) => ctx.metrics.certificate_expiry.with_label_values(&[&name]).set(t),
        None => {
            let _ = ctx.metrics.certificate_expiry.remove_label_values(&[&name]);
        }
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
        .get(&ctx.fleet.generated_cert_secret(&ma.metadata))
        .filter(|_| desired.generated_certs.contains_key(&name))
        .and_then(crate::tls::renew_at)
        .map(|t| Duration::from_secs((t - inputs.now).max(60) as u64));
    Ok(Action::requeue(renew_in.map_or(RESYNC, |r| r.min(RESYNC))))
}

/// The Leases of the running fleets of the fleet namespace (labelled `ferrocast.io/fleet`,
/// held and recently renewed: an uninstalled release leaves its Lease behind, released).
async fn live_fleet_leases(ctx: &Context) -> Result<Vec<k8s_openapi::api::coordination::v1::Lease>, Error> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = ctx.api();
    let list = leases.list(&ListParams::default().labels(FLEET_LABEL)).await?;
    let now = (ctx.clock)();
    Ok(list
        .items
        .into_iter()
        .filter(|l| crate::leader::is_live(l, now))
        .collect())
}

/// The fleets running in the fleet namespace: the `ferrocast.io/fleet` labels of the
/// operators' live leader Leases.
async fn fleets_here(ctx: &Context) -> Result<BTreeSet<String>, Error> {
    Ok(live_fleet_leases(ctx)
        .await?
        .iter()
        .filter_map(|l| l.labels().get(FLEET_LABEL).cloned())
        .collect())
}

/// For a fleet configured to serve unlabelled resources: reads the fleets' Leases and leaves
/// unlabelled resources to an older running fleet that claims them too, or takes them back
/// once none does. Says so in the log and `ferrocast_operator_serves_unlabelled` when that
/// changes; returns whether it changed.
pub async fn check_unlabelled(ctx: &Context) -> Result<bool, Error> {
    if !ctx.fleet.serves_unlabelled {
        ctx.metrics.serves_unlabelled.set(0);
        return Ok(false);
    }
    let leases = live_fleet_leases(ctx).await?;
    let other = crate::leader::unlabelled_served_by_other(&leases, &ctx.fleet.lease, (ctx.clock)());
    let elsewhere = other.is_some();
    let before = ctx
        .fleet
        .unlabelled_elsewhere
        .swap(elsewhere, std::sync::atomic::Ordering::Relaxed);
    ctx.metrics.serves_unlabelled.set(i64::from(!elsewhere));
    if before == elsewhere {
        return Ok(false);
    }
    match other {
        Some(other) => warn!(
            fleet = %ctx.fleet.name, older = %other,
            "fleet {other:?} of this namespace, older than this one, serves MediaApps and StreamAuths without a {FLEET_LABEL} label: this fleet leaves them to it (set operator.serveUnlabelled=false here)"
        ),
        None => {
            info!(fleet = %ctx.fleet.name, "no older fleet of this namespace serves unlabelled MediaApps and StreamAuths any more: this fleet serves them")
        }
    }
    Ok(true)
}

/// Whether fleet `fleet`'s operator has written this resource's status (its field manager
/// owns status fields): then that fleet runs somewhere, if not in this namespace.
pub fn status_written_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, fleet: &str) -> bool {
    let manager = format!("{fleet}-operator");
    meta.managed_fields
        .iter()
        .flatten()
        .any(|f| f.manager.as_deref() == Some(manager.as_str()) && f.subresource.as_deref() == Some("status"))
}

/// A MediaApp labelled for a fleet that runs nowhere is served by nobody: say so in its status
/// (`Ready: False`, reason `NoFleet`) and an event. The fleets this operator can see are those
/// of its own namespace (their Leases). A watched namespace may also be served by a fleet of a
/// third namespace: a MediaApp whose status that fleet's operator has written is left to it.
async fn report_outside_any_fleet(ctx: &Context, ma: &MediaApp) -> Result<(), Error> {
    let Some(wanted) = ma.labels().get(FLEET_LABEL).cloned() else {
        return Ok(());
    };
    let fleets = fleets_here(ctx).await?;
    if fleets.contains(&wanted) {
        return Ok(());
    }
    let ns = ctx.fleet.namespace_of(&ma.metadata);
    if ns != ctx.fleet.namespace && status_written_by(&ma.metadata, &wanted) {
        return Ok(());
    }
    let running = fleets.iter().cloned().collect::<Vec<_>>().join(", ");
    let message = if ns == ctx.fleet.namespace {
        format!("no Ferrocast fleet {wanted:?} runs in namespace {ns} (fleets here: {running}); fix the {FLEET_LABEL} label")
    } else {
        format!(
            "no Ferrocast fleet {wanted:?} serves namespace {ns}: none runs in namespace {} (fleets there: {running}) and none has served this MediaApp; fix the {FLEET_LABEL} label",
            ctx.fleet.namespace
        )
    };
    let previous = ma.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let ready = render::condition(
        previous,
        "Ready",
        "False",
        "NoFleet",
        message,
        ma.metadata.generation,
        (ctx.clock)(),
    );
    let before = ma.status.as_ref().and_then(|s| self::ready(&s.conditions));
    if before.is_some_and(|b| b.reason == ready.reason && b.message == ready.message) {
        return Ok(());
    }
    ctx.ready_event(ma, before, &ready).await;
    let status = json!({"observedGeneration": ma.metadata.generation, "conditions": [ready]});
    patch_status(ctx, ma, &status, &ctx.fleet.field_manager()).await
}

/// Reconciles one StreamAuth: the fleet (API users are fleet-wide) and its status.
pub async fn reconcile_stream_auth(sa: Arc<StreamAuth>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.fleet.serves(&sa.metadata) {
        // Checked again later: an unlabelled one becomes this fleet's when an older fleet
        // that served unlabelled resources goes.
        return Ok(Action::requeue(RESYNC));
    }
    let _timer = ctx.metrics.time("StreamAuth").start_timer();
    let name = ctx.fleet.key_of(&sa.metadata);
    let (_, desired) = ctx.sync_fleet(false).await?;
    let Some(status) = desired.stream_auths.get(&name) else {
        return Ok(Action::requeue(RETRY));
    };
    let before = sa.status.as_ref().and_then(|s| ready(&s.conditions));
    if let Some(after) = ready(&status.conditions) {
        ctx.ready_event(sa.as_ref(), before, after).await;
    }
    if sa.status.as_ref() != Some(status) {
        patch_status(&ctx, sa.as_ref(), status, &ctx.fleet.field_manager()).await?;
    }
    let reason = status
        .conditions
        .iter()
        .find(|c| c.status != "True")
        .map(|c| c.reason.as_str());
    ctx.metrics.reconciled("StreamAuth", reason);
    Ok(Action::requeue(RESYNC))
}

/// Applies `status` to `obj`'s status, in its own namespace.
async fn patch_status<K, S>(ctx: &Context, obj: &K, status: &S, field_manager: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: serde::Serialize,
{
    let name = obj.name_any();
    let api: Api<K> = ctx.api_of(obj);
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&name, &PatchParams::apply(field_manager).force(), &Patch::Apply(&body))
        .await?;
    Ok(())
}

/// Writes a MediaApp's live counts into its status under the live field manager (the
/// reconcile's fields are left alone, and no reconcile follows: reconciles follow the
/// generation).
pub async fn write_live_counts(ctx: &Context, ma: &MediaApp, live: &Live) -> Result<(), Error> {
    let (streams, sessions) = crate::status::live_counts(live, &ma.app_name());
    let status = json!({"liveStreams": streams, "sessions": sessions});
    patch_status(ctx, ma, &status, &ctx.fleet.live_field_manager()).await
}

/// MediaApp and StreamAuth events that can change what the operator renders: creation, spec
/// changes (a new `metadata.generation`), label changes (which fleet serves it) and deletion
/// marks. Status writes, the operator's own included, pass no event, so they never cause a
/// reconcile or a fleet sync.
pub fn spec_changes<K, S>(stream: S) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Clone + Send + 'static,
    S: futures::Stream<Item = Result<K, watcher::Error>> + Send,
{
    stream.predicate_filter(
        |o: &K| {
            use std::hash::{Hash, Hasher};
            let meta = o.meta();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                meta.generation,
                meta.labels.as_ref().and_then(|l| l.get(FLEET_LABEL)),
                meta.deletion_timestamp.is_some(),
            )
                .hash(&mut h);
            Some(h.finish())
        },
        PredicateConfig::default(),
    )
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

/// MediaApps affected by a change of Secret `secret` of namespace `namespace`: directly (TLS,
/// webhooks, relays: Secrets of their own namespace; their generated certificate in the fleet
/// namespace) or through a StreamAuth of their namespace they use.
pub fn media_apps_for_secret(
    fleet: &Fleet,
    namespace: &str,
    secret: &str,
    media_apps: &[Arc<MediaApp>],
    stream_auths: &[Arc<StreamAuth>],
) -> Vec<ObjectRef<MediaApp>> {
    let auths: BTreeSet<String> = stream_auths
        .iter()
        .filter(|s| fleet.namespace_of(&s.metadata) == namespace && s.secret_names().iter().any(|n| n == secret))
        .map(|s| s.name_any())
        .collect();
    media_apps
        .iter()
        .filter(|m| {
            let own = fleet.namespace_of(&m.metadata) == namespace
                && (m.secret_names().iter().any(|n| n == secret) || m.auth_refs().iter().any(|r| auths.contains(r)));
            let generated = namespace == fleet.namespace && fleet.generated_cert_secret(&m.metadata) == secret;
            own || generated
        })
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// MediaApps whose `authRef` names StreamAuth `sa` (of their own namespace).
pub fn media_apps_for_stream_auth(sa: &StreamAuth, media_apps: &[Arc<MediaApp>]) -> Vec<ObjectRef<MediaApp>> {
    let name = sa.name_any();
    media_apps
        .iter()
        .filter(|m| m.metadata.namespace == sa.metadata.namespace && m.auth_refs().contains(&name))
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// StreamAuths (of its namespace) to re-check when MediaApp `ma` changes: those it names now
/// and those that still list it in `usedBy`.
pub fn stream_auths_for_media_app(ma: &MediaApp, stream_auths: &[Arc<StreamAuth>]) -> Vec<ObjectRef<StreamAuth>> {
    let name = ma.name_any();
    let refs = ma.auth_refs();
    stream_auths
        .iter()
        .filter(|s| s.metadata.namespace == ma.metadata.namespace)
        .filter(|s| refs.contains(&s.name_any()) || s.status.as_ref().is_some_and(|st| st.used_by.contains(&name)))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The MediaApp a per-app object (Service) is labelled for.
pub fn media_app_of(fleet: &Fleet, labels: &BTreeMap<String, String>) -> Option<ObjectRef<MediaApp>> {
    let name = labels.get(MEDIAAPP_LABEL)?;
    let ns = labels.get(render::MEDIAAPP_NAMESPACE_LABEL).unwrap_or(&fleet.namespace);
    Some(ObjectRef::new(name).within(ns))
}

/// The server pods to poll: running and ready (a pod that is not ready serves no client and
/// is not waited for), with their admin address.
pub fn ready_pods(pods: &[Pod], admin_port: u16) -> Vec<(String, std::net::SocketAddr)> {
    pods.iter()
        .filter(|p| {
            let status = p.status.as_ref();
            status.and_then(|s| s.phase.as_deref()) == Some("Running")
                && status
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.as_deref()?.parse::<std::net::IpAddr>().ok()?;
            Some((p.name_any(), std::net::SocketAddr::new(ip, admin_port)))
        })
        .collect()
}

/// Polls the ready server pods: live counts go to metrics and, when changed and at most once
/// per [`LIVE_STATUS_INTERVAL`] per MediaApp, to status; when whether the pods run the
/// current config changes, every MediaApp is reconciled (for `ConfigApplied` and `Ready`).
/// Polls every [`LIVE_POLL`], or every [`ROLLOUT_POLL`] while a config rolls out.
pub async fn live_loop(
    ctx: Arc<Context>,
    server_admin_port: u16,
    trigger: futures::channel::mpsc::Sender<ObjectRef<MediaApp>>,
) {
    let pods: Api<Pod> = ctx.api();
    let selector = crate::cli::selector_string(&ctx.fleet.selector);
    let mut trigger = trigger;
    let mut last_rollout: Option<Rollout> = None;
    let mut written: BTreeMap<String, Instant> = BTreeMap::new();
    let mut leases_read = Instant::now();
    loop {
        if leases_read.elapsed() >= LIVE_POLL {
            leases_read = Instant::now();
            unlabelled_turn(&ctx, &mut trigger).await;
        }
        match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                let live = crate::fleet::poll(&ready_pods(&list.items, server_admin_port), LIVE_TIMEOUT).await;
                *ctx.live.write().unwrap_or_else(|e| e.into_inner()) = Some(live.clone());
                for ma in ctx.media_apps.state().iter().filter(|m| ctx.fleet.serves(&m.metadata)) {
                    let name = ctx.fleet.key_of(&ma.metadata);
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
                    let (streams, sessions) = crate::status::live_counts(&live, &ma.app_name());
                    let due = written.get(&name).is_none_or(|t| t.elapsed() >= LIVE_STATUS_INTERVAL);
                    if due && shown != Some((Some(streams), Some(sessions))) {
                        written.insert(name.clone(), Instant::now());
                        if let Err(e) = write_live_counts(&ctx, ma, &live).await {
                            warn!(mediaapp = %name, "cannot write live counts: {e}");
                        }
                    }
                }
                let rollout = ctx.rollout();
                if last_rollout.as_ref() != Some(&rollout) {
                    for ma in ctx.media_apps.state().iter().filter(|m| ctx.fleet.serves(&m.metadata)) {
                        let _ = trigger.try_send(ObjectRef::from_obj(ma.as_ref()));
                    }
                    last_rollout = Some(rollout);
                }
            }
            Err(e) => warn!("cannot list the server pods: {e}"),
        }
        let pause = match last_rollout {
            Some(Rollout::Applied { .. }) => LIVE_POLL,
            _ => ROLLOUT_POLL,
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = ctx.poll_now.notified() => {}
        }
    }
}

/// Reads which fleet serves unlabelled resources ([`check_unlabelled`]); when that changed,
/// re-renders the fleet (taking them in or pruning their Services) and reconciles every
/// MediaApp (their statuses).
async fn unlabelled_turn(ctx: &Context, trigger: &mut futures::channel::mpsc::Sender<ObjectRef<MediaApp>>) {
    match check_unlabelled(ctx).await {
        Ok(false) => {}
        Ok(true) => {
            if let Err(e) = ctx.sync_fleet(false).await {
                warn!("fleet sync failed: {e}");
            }
            for ma in ctx.media_apps.state().iter() {
                let _ = trigger.try_send(ObjectRef::from_obj(ma.as_ref()));
            }
        }
        Err(e) => warn!("cannot read the fleets' Leases: {e}"),
    }
}

/// Re-renders the fleet at start, whenever a MediaApp or StreamAuth is deleted, and
/// periodically (forced: drift repair), so the shared ConfigMap and Secret never keep a
/// deleted app.
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
    let namespaces = ctx.fleet.namespaces();
    let fleet = ctx.fleet.clone();
    let ma_events = futures::stream::select_all(scope::watches::<MediaApp>(
        &ctx.client,
        &namespaces,
        &watcher::Config::default(),
    ))
    .map(move |e| match e {
        Ok(watcher::Event::Delete(ma)) => Some(fleet.key_of(&ma.metadata)),
        _ => None,
    })
    .boxed();
    let sa_events = futures::stream::select_all(scope::watches::<StreamAuth>(
        &ctx.client,
        &namespaces,
        &watcher::Config::default(),
    ))
    .map(|e| match e {
        Ok(watcher::Event::Delete(_)) => Some(String::new()),
        _ => None,
    })
    .boxed();
    tokio::spawn(deletions(ma_events, notify.clone(), ctx.metrics.clone()));
    tokio::spawn(deletions(sa_events, notify.clone(), ctx.metrics.clone()));
    let mut force = true;
    loop {
        if let Err(e) = ctx.sync_fleet(force).await {
            // MediaApp and StreamAuth reconciles hit the same error and count it.
            warn!("fleet sync failed: {e}");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        tokio::select! {
            _ = notify.notified() => force = false,
            _ = tokio::time::sleep(RESYNC) => force = true,
        }
    }
}

/// Helm keeps release records as Secrets of this type; the operator never needs them.
const NOT_HELM_RELEASES: &str = "type!=helm.sh/release.v1";

/// Runs both controllers and the fleet and live loops until `shutdown` resolves.
pub async fn run(
    client: Client,
    fleet: Fleet,
    metrics: Metrics,
    identity: &str,
    server_admin_port: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // The fleet's own namespace and the watched ones: one watch per namespace, merged.
    let namespaces = fleet.namespaces();
    let services: Api<Service> = Api::namespaced(client.clone(), &fleet.namespace);

    let (ma_store, ma_writer) = reflector::store::<MediaApp>();
    let (sa_store, sa_writer) = reflector::store::<StreamAuth>();
    let (secret_store, secret_writer) = reflector::store::<Secret>();
    let all = watcher::Config::default();
    let ma_stream = spec_changes(
        scope::merged(&client, &namespaces, &all, ma_store.clone())
            .reflect(ma_writer)
            .applied_objects(),
    );
    let sa_stream = spec_changes(
        scope::merged(&client, &namespaces, &all, sa_store.clone())
            .reflect(sa_writer)
            .applied_objects(),
    );
    // One Secret watch fills the cache the render reads and triggers the resources that
    // reference a changed Secret.
    let (ma_trigger_tx, ma_trigger_rx) = futures::channel::mpsc::channel(256);
    let (sa_trigger_tx, sa_trigger_rx) = futures::channel::mpsc::channel(256);
    let secret_events = scope::merged(
        &client,
        &namespaces,
        &watcher::Config::default().fields(NOT_HELM_RELEASES),
        secret_store.clone(),
    )
    .reflect(secret_writer)
    .touched_objects();
    let _secret_triggers = {
        let (mas, sas) = (ma_store.clone(), sa_store.clone());
        let (mut ma_tx, mut sa_tx) = (ma_trigger_tx.clone(), sa_trigger_tx);
        let fleet = fleet.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut events = std::pin::pin!(secret_events);
            while let Some(e) = events.next().await {
                let secret = match e {
                    Ok(s) => s,
                    // A namespace whose Secrets cannot be watched keeps the cache from being
                    // ready: say why (the watch retries with backoff).
                    Err(e) => {
                        warn!("Secret watch: {e}");
                        continue;
                    }
                };
                let (ns, name) = (fleet.namespace_of(&secret.metadata).to_string(), secret.name_any());
                for r in media_apps_for_secret(&fleet, &ns, &name, &mas.state(), &sas.state()) {
                    let _ = ma_tx.try_send(r);
                }
                for a in sas
                    .state()
                    .iter()
                    .filter(|a| fleet.namespace_of(&a.metadata) == ns && a.secret_names().contains(&name))
                {
                    let _ = sa_tx.try_send(ObjectRef::from_obj(a.as_ref()));
                }
            }
        }))
    };

    let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY},{FLEET_LABEL}={}", fleet.name);
    let (mas, sas) = (ma_store.clone(), sa_store.clone());
    let sa_changes = spec_changes(scope::touched::<StreamAuth>(&client, &namespaces, &all));
    // Services are found by their labels, not owner references: another namespace's MediaApp
    // cannot own an object of the fleet namespace.
    let service_fleet = fleet.clone();
    let ma_controller = Controller::for_stream(ma_stream, ma_store.clone())
        .watches(services, watcher::Config::default().labels(&managed), move |svc| {
            media_app_of(&service_fleet, svc.labels())
        })
        .watches_stream(sa_changes, move |sa| media_apps_for_stream_auth(&sa, &mas.state()))
        .reconcile_on(ma_trigger_rx);
    let ma_changes = spec_changes(scope::touched::<MediaApp>(&client, &namespaces, &all));
    let sa_controller = Controller::for_stream(sa_stream, sa_store.clone())
        .watches_stream(ma_changes, move |ma| stream_auths_for_media_app(&ma, &sas.state()))
        .reconcile_on(sa_trigger_rx);

    let ctx = Arc::new(Context::new(
        client,
        fleet,
        ma_store.clone(),
        sa_store.clone(),
        secret_store.clone(),
        metrics,
        identity,
    ));
    // Before any reconcile, so a fleet that leaves unlabelled resources to an older one never
    // serves them meanwhile.
    if let Err(e) = check_unlabelled(&ctx).await {
        warn!("cannot read the fleets' Leases: {e}");
    }
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
    // Aborted when this future ends or is dropped (a lost Lease): the loops write too.
    let _loops = AbortOnDrop({
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = tokio::join!(
                ma_store.wait_until_ready(),
                sa_store.wait_until_ready(),
                secret_store.wait_until_ready()
            );
            info!("caches synced; reconciling");
            tokio::join!(
                fleet_loop(ctx.clone()),
                live_loop(ctx, server_admin_port, ma_trigger_tx)
            );
        })
    });
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    tokio::join!(ma_run, sa_run);
}

/// A spawned task that is aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
