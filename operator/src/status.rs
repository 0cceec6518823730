//! A MediaApp's status from what the render decided, the Service Kubernetes reports (its
//! load balancer address) and whether the server pods run the rendered config; and the live
//! counts written apart. Pure, like the render.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{Endpoints, MediaApp, MediaAppStatus, ServiceType, SessionCounts};
use crate::fleet::{Live, Rollout, TlsListening};
use crate::render::{condition, joined, AppOutcome, Fleet, Problem, Reason};

/// Whether `svc` is the Service the operator manages for MediaApp `media_app` (and not
/// someone else's object that happens to have its name, nor the Service of a MediaApp of the
/// same name in another namespace).
pub fn is_managed_service(fleet: &Fleet, svc: &Service, media_app: &ObjectMeta) -> bool {
    svc.metadata.labels.as_ref().and_then(|l| fleet.labelled_media_app(l)) == Some(fleet.key_of(media_app))
}

/// The address clients reach the Service at: the load balancer's IP or host name once
/// assigned; the in-cluster DNS name for ClusterIP and NodePort Services.
pub fn service_address(fleet: &Fleet, outcome: &AppOutcome, observed: Option<&Service>) -> Option<String> {
    let name = outcome.service_name.as_ref()?;
    let observed = observed?;
    match outcome.service_type? {
        ServiceType::LoadBalancer => {
            let ingress = observed.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?;
            ingress.iter().find_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        }
        ServiceType::ClusterIP | ServiceType::NodePort => Some(format!("{name}.{}.svc", fleet.namespace)),
    }
}

/// Client URLs at `address`; TLS URLs use the app's first exact host name, which its
/// certificate covers (clients verify against it), else the address, and are listed only when
/// its certificate is served and every ready pod listens there (`tls`).
pub fn endpoints(outcome: &AppOutcome, address: &str, tls: TlsListening) -> Endpoints {
    let p = outcome.ports;
    let app = &outcome.app;
    let host = |addr: &str| {
        if addr.contains(':') {
            format!("[{addr}]")
        } else {
            addr.to_string()
        }
    };
    let plain = host(address);
    let tls_host = outcome
        .tls_hosts
        .iter()
        .find(|h| !h.starts_with("*."))
        .cloned()
        .unwrap_or_else(|| plain.clone());
    Endpoints {
        rtmp: format!("rtmp://{plain}:{}/{app}", p.rtmp),
        rtmps: (outcome.tls_served && tls.rtmps).then(|| format!("rtmps://{tls_host}:{}/{app}", p.rtmps)),
        http_flv: format!("http://{plain}:{}/{app}/{{stream}}.flv", p.http),
        ws_flv: format!("ws://{plain}:{}/{app}/{{stream}}.flv", p.http),
        https_flv: (outcome.tls_served && tls.https)
            .then(|| format!("https://{tls_host}:{}/{app}/{{stream}}.flv", p.https)),
        hls: outcome
            .hls
            .then(|| format!("http://{plain}:{}/{app}/{{stream}}/index.m3u8", p.http)),
        dash: outcome
            .hls
            .then(|| format!("http://{plain}:{}/{app}/{{stream}}/index.mpd", p.http)),
    }
}

/// The `ConfigApplied` condition: whether every ready server pod runs the config revision
/// that serves this app, as the last poll of the pods found.
pub fn config_applied(rollout: &Rollout, revision: &str) -> (&'static str, &'static str, String) {
    match rollout {
        Rollout::Unknown => (
            "Unknown",
            "ConfigPending",
            format!("revision {revision} written; the server pods have not been polled since"),
        ),
        Rollout::NoPods => ("False", "NoServerPods", "no server pod is ready".into()),
        Rollout::Applied { pods, .. } => (
            "True",
            "ConfigApplied",
            format!("all {pods} ready server pods run revision {revision}"),
        ),
        Rollout::Pending { pods, behind } => {
            let refused = behind.values().any(|c| c.as_ref().is_some_and(|c| c.pending));
            let list: Vec<String> = behind
                .iter()
                .map(|(pod, c)| match c {
                    None => format!("{pod} (no answer)"),
                    Some(c) if c.pending => format!(
                        "{pod} (runs {}, a newer config waits or was refused: see its /config-status)",
                        or_none(&c.revision)
                    ),
                    Some(c) => format!("{pod} (runs {})", or_none(&c.revision)),
                })
                .collect();
            (
                "False",
                if refused { "ConfigRefused" } else { "ConfigPending" },
                format!(
                    "{} of {pods} ready server pods run revision {revision}; waiting for {}",
                    pods - behind.len(),
                    list.join(", ")
                ),
            )
        }
    }
}

fn or_none(revision: &str) -> &str {
    if revision.is_empty() {
        "no revision"
    } else {
        revision
    }
}

/// The status of a MediaApp as the reconcile writes it (live counts are written apart).
/// `observed` is the Service of that name as Kubernetes has it: the operator's (after apply)
/// or a foreign one it refused to take over. `rollout` is whether the fleet runs `revision`.
pub fn media_app_status(
    fleet: &Fleet,
    ma: &MediaApp,
    outcome: &AppOutcome,
    observed: Option<&Service>,
    rollout: &Rollout,
    revision: &str,
    now: i64,
) -> MediaAppStatus {
    let mut problems: Vec<Problem> = outcome.problems.clone();
    let observed = match observed {
        Some(svc) if !is_managed_service(fleet, svc, &ma.metadata) => {
            problems.push(Problem {
                reason: Reason::ServiceConflict,
                message: format!(
                    "Service {} exists and is not managed for this MediaApp; it is left alone",
                    outcome.service_name.as_deref().unwrap_or_default()
                ),
            });
            None
        }
        other => other,
    };
    let address = service_address(fleet, outcome, observed);
    if problems.is_empty() && outcome.service_name.is_some() && address.is_none() {
        let message = match observed {
            None => "the Service is not created yet".to_string(),
            Some(_) => "waiting for the load balancer to assign an address".to_string(),
        };
        problems.push(Problem {
            reason: Reason::ServicePending,
            message,
        });
    }
    let previous = ma.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let generation = ma.metadata.generation;
    let (applied_status, applied_reason, applied_message) = config_applied(rollout, revision);
    let applied = applied_status == "True";
    let (ready_status, ready_reason, ready_message) = match problems.first() {
        Some(p) => ("False", p.reason.as_str(), joined(&problems)),
        None if !applied => ("False", applied_reason, applied_message.clone()),
        None => ("True", Reason::Reconciled.as_str(), String::new()),
    };
    // Endpoints are those the fleet serves: the current ones once every ready pod runs this
    // config; while a new revision rolls out, the ones already shown for this generation.
    let endpoints = match (rollout, address.filter(|_| outcome.served)) {
        (Rollout::Applied { tls, .. }, Some(a)) => Some(endpoints(outcome, &a, *tls)),
        (_, Some(_)) => ma
            .status
            .as_ref()
            .filter(|s| s.observed_generation == generation)
            .and_then(|s| s.endpoints.clone()),
        (_, None) => None,
    };
    MediaAppStatus {
        observed_generation: generation,
        conditions: vec![
            condition(
                previous,
                "Ready",
                ready_status,
                ready_reason,
                ready_message,
                generation,
                now,
            ),
            condition(
                previous,
                "ConfigApplied",
                applied_status,
                applied_reason,
                applied_message,
                generation,
                now,
            ),
        ],
        app: Some(outcome.app.clone()),
        service: outcome.service_name.clone(),
        endpoints,
        live_streams: None,
        sessions: None,
    }
}

/// The live counts of a MediaApp's status (written by the live loop under its own field
/// manager, at a bounded rate).
pub fn live_counts(live: &Live, app: &str) -> (i64, SessionCounts) {
    let c = live.app(app);
    (
        c.streams,
        SessionCounts {
            publishers: c.publishers,
            players: c.players,
        },
    )
}

/// The `Ready` condition's reason when it is not ready.
pub fn not_ready_reason(status: &MediaAppStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status != "True")
        .map(|c| c.reason.as_str())
}
