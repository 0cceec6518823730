//! Leader election with a `coordination.k8s.io` Lease, so two operator replicas are safe: only
//! the holder reconciles. Writes use the Lease's resourceVersion (optimistic concurrency), so
//! two candidates racing for an expired Lease cannot both win.
//!
//! Clocks are never compared across replicas: a candidate judges expiry by its own monotonic
//! clock, from when it last saw the Lease record change (as client-go does), never by the
//! holder's `renewTime`. The holder stops leading [`RENEW_DEADLINE`] after its last
//! successful renewal began, which is before any candidate can see the Lease expire
//! ([`LEASE_SECS`] after it saw that renewal), so two replicas never lead at once. A leader
//! that steps down exits and restarts as a candidate.
//!
//! The Lease also tells other fleets of the namespace that this one runs (its fleet label, a
//! holder, a recent `renewTime`: [`is_live`], with a wide margin since that does compare
//! clocks) and whether it claims unlabelled resources ([`unlabelled_served_by_other`]).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a Lease stays valid without renewal.
pub const LEASE_SECS: i32 = 15;
/// The holder steps down when it has not renewed for this long (well within the lease).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the holder renews and a candidate retries.
pub const RETRY: Duration = Duration::from_secs(2);
/// Annotation of a fleet's Lease: `"true"` when the fleet is configured to serve MediaApps
/// and StreamAuths without a fleet label (`--serve-unlabelled`).
pub const SERVES_UNLABELLED_ANNOTATION: &str = "ferrocast.io/serves-unlabelled";
/// A Lease renewed within this long (by the reader's wall clock, against the holder's
/// `renewTime`) belongs to a running fleet. Holders renew every [`RETRY`]; the margin absorbs
/// clock skew between nodes. Only used to tell which fleets run, never to take a Lease over.
pub const LIVE_WITHIN_SECS: i64 = 60;

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// Labels of the Lease (its fleet), so the fleets of a namespace can be listed.
    labels: std::collections::BTreeMap<String, String>,
    /// Annotations of the Lease ([`SERVES_UNLABELLED_ANNOTATION`]).
    annotations: std::collections::BTreeMap<String, String>,
    /// The Lease record last seen (holder, renewTime, resourceVersion) and when, by this
    /// replica's monotonic clock.
    observed: std::sync::Mutex<Option<(String, Instant)>>,
}

/// Identifies one renewal of a Lease: any renewal or change of holder changes it.
fn record(lease: &Lease) -> String {
    let spec = lease.spec.as_ref();
    format!(
        "{}|{:?}|{}",
        spec.and_then(|s| s.holder_identity.as_deref()).unwrap_or(""),
        spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
        lease.metadata.resource_version.as_deref().unwrap_or("")
    )
}

/// What one election round found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// We hold the Lease (acquired or renewed).
    Leading,
    /// Someone else holds a valid Lease.
    Following(String),
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str) -> Elector {
        Elector {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            labels: Default::default(),
            annotations: Default::default(),
            observed: std::sync::Mutex::new(None),
        }
    }

    /// Labels the Lease with `fleet` (`ferrocast.io/fleet`), so other fleets see this one, and
    /// annotates whether the fleet is configured to serve unlabelled resources
    /// ([`SERVES_UNLABELLED_ANNOTATION`]), so only the oldest such fleet of a namespace does.
    pub fn for_fleet(mut self, fleet: &str, serves_unlabelled: bool) -> Elector {
        self.labels
            .insert(crate::render::FLEET_LABEL.to_string(), fleet.to_string());
        self.annotations
            .insert(SERVES_UNLABELLED_ANNOTATION.to_string(), serves_unlabelled.to_string());
        self
    }

    /// One round: create, renew or take over the Lease if we may. `now` is written into the
    /// Lease (for people reading it); `local` is this replica's monotonic time, the only
    /// clock expiry is judged by.
    pub async fn round(&self, now: Timestamp, local: Instant) -> Result<Round, kube::Error> {
        let current = match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
                        annotations: (!self.annotations.is_empty()).then(|| self.annotations.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(LEASE_SECS),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Round::Leading),
                    Err(e) if is_conflict(&e) => Ok(Round::Following("another candidate".into())),
                    Err(e) => Err(e),
                };
            }
            Some(l) => l,
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(LEASE_SECS).max(1) as u64);
        let seen = record(&current);
        let expired = {
            let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
            match observed.as_ref() {
                Some((r, at)) if *r == seen => local.saturating_duration_since(*at) >= duration,
                _ => {
                    // A new renewal: its lease runs from now, by our clock.
                    *observed = Some((seen, local));
                    false
                }
            }
        };
        let mut next = current.clone();
        let mut s = spec.clone();
        if holder == self.identity {
            s.renew_time = Some(MicroTime(now));
        } else if holder.is_empty() || expired {
            s.holder_identity = Some(self.identity.clone());
            s.lease_duration_seconds = Some(LEASE_SECS);
            s.acquire_time = Some(MicroTime(now));
            s.renew_time = Some(MicroTime(now));
            s.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        } else {
            return Ok(Round::Following(holder));
        }
        next.spec = Some(s);
        if !self.labels.is_empty() {
            next.metadata
                .labels
                .get_or_insert_with(Default::default)
                .extend(self.labels.clone());
        }
        if !self.annotations.is_empty() {
            next.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .extend(self.annotations.clone());
        }
        match self.api.replace(&self.name, &PostParams::default(), &next).await {
            Ok(_) => Ok(Round::Leading),
            Err(e) if is_conflict(&e) => Ok(Round::Following("another candidate".into())),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown) so another replica takes over without waiting for expiry.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
            warn!("could not release the leader Lease: {e}");
        }
    }

    /// Campaigns forever: `leading` turns true once the Lease is ours. Returns only when
    /// leadership is lost or could not be renewed within [`RENEW_DEADLINE`] (the caller must
    /// stop reconciling).
    pub async fn run(&self, leading: watch::Sender<bool>, leader_gauge: prometheus::IntGauge) -> crate::Error {
        // When the last successful renewal began: the Lease was written no earlier.
        // Tokio's clock (the monotonic clock, pausable in tests).
        let mut renewed: Option<tokio::time::Instant> = None;
        let step_down = |why: &str| {
            warn!(lease = %self.name, "stepping down: {why}");
            leader_gauge.set(0);
            leading.send_replace(false);
            crate::Error::LostLease
        };
        loop {
            let began = tokio::time::Instant::now();
            // A round that hangs must not keep a leader past its deadline.
            let limit = match renewed {
                Some(r) => steps_down_at(r).saturating_duration_since(began),
                None => RENEW_DEADLINE,
            };
            match tokio::time::timeout(limit, self.round(Timestamp::now(), began.into_std())).await {
                Ok(Ok(Round::Leading)) => {
                    if renewed.is_none() {
                        info!(lease = %self.name, identity = %self.identity, "became the leader");
                    }
                    renewed = Some(began);
                    leader_gauge.set(1);
                    leading.send_replace(true);
                }
                Ok(Ok(Round::Following(holder))) => {
                    if renewed.is_some() {
                        return step_down(&format!("the Lease is held by {holder}"));
                    }
                    tracing::debug!(%holder, "waiting for the leader Lease");
                }
                Ok(Err(e)) => warn!("leader election: {e}"),
                Err(_) => warn!("leader election: the Lease request timed out"),
            }
            if let Some(r) = renewed {
                if tokio::time::Instant::now() >= steps_down_at(r) {
                    return step_down("no renewal within the renew deadline");
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// When a leader whose last successful renewal began at `renewed` stops leading: before any
/// candidate, which waits a whole lease from when it saw that renewal, may take over.
pub fn steps_down_at(renewed: tokio::time::Instant) -> tokio::time::Instant {
    renewed + RENEW_DEADLINE
}

/// Whether `lease` belongs to a running operator: it has a holder and was renewed within
/// [`LIVE_WITHIN_SECS`] of `now` (Unix seconds). A released Lease (uninstall, shutdown) or one
/// left behind by an uninstalled release is not.
pub fn is_live(lease: &Lease, now: i64) -> bool {
    let Some(spec) = lease.spec.as_ref() else { return false };
    let held = spec.holder_identity.as_deref().is_some_and(|h| !h.is_empty());
    let renewed = spec.renew_time.as_ref().map(|t| t.0.as_second());
    held && renewed.is_some_and(|r| (now - r).abs() <= LIVE_WITHIN_SECS)
}

/// The fleet that serves unlabelled resources in a namespace instead of the one holding Lease
/// `own` (both configured to): the fleet of the oldest live Lease claiming it
/// ([`SERVES_UNLABELLED_ANNOTATION`]), if that is not `own`. Oldest by creation time, then by
/// name, so every fleet reaches the same answer; `own` missing counts as the newest.
pub fn unlabelled_served_by_other(leases: &[Lease], own: &str, now: i64) -> Option<String> {
    let claims = |l: &Lease| {
        l.annotations().get(SERVES_UNLABELLED_ANNOTATION).map(String::as_str) == Some("true")
            && l.labels().contains_key(crate::render::FLEET_LABEL)
    };
    let age = |l: &Lease| (l.metadata.creation_timestamp.as_ref().map(|t| t.0), l.name_any());
    let own_age = leases
        .iter()
        .find(|l| l.name_any() == own)
        .map(age)
        .map(|(t, n)| (t.unwrap_or(Timestamp::MAX), n))
        .unwrap_or((Timestamp::MAX, String::new()));
    leases
        .iter()
        .filter(|l| l.name_any() != own && claims(l) && is_live(l, now))
        .filter(|l| {
            let (t, n) = age(l);
            (t.unwrap_or(Timestamp::MAX), n) < own_age
        })
        .min_by_key(|l| age(l))
        .and_then(|l| l.labels().get(crate::render::FLEET_LABEL).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_steps_down_before_a_candidate_can_see_the_lease_expire() {
        // A renewal that began at t is seen by a candidate at t + d (d >= 0); the candidate
        // takes over at t + d + LEASE at the earliest. The leader stops at t + RENEW_DEADLINE,
        // and a round that began before then never runs past it (it is timed out).
        let lease = Duration::from_secs(LEASE_SECS as u64);
        assert!(RENEW_DEADLINE + RETRY < lease, "at least one retry fits before expiry");
        let t = tokio::time::Instant::now();
        assert!(steps_down_at(t) < t + lease);
    }

    fn lease(name: &str, fleet: &str, created: i64, holder: &str, renewed: i64, claims: bool) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "creationTimestamp": Timestamp::from_second(created).unwrap().to_string(),
                "labels": {crate::render::FLEET_LABEL: fleet},
                "annotations": {SERVES_UNLABELLED_ANNOTATION: claims.to_string()},
            },
            "spec": {
                "holderIdentity": holder,
                "renewTime": Timestamp::from_second(renewed).unwrap().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string(),
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_lease_is_live_only_while_held_and_recently_renewed() {
        let now = 1_800_000_000;
        assert!(is_live(&lease("a", "a", now - 500, "pod-1", now - 2, true), now));
        assert!(
            !is_live(&lease("a", "a", now - 500, "", now - 2, true), now),
            "released"
        );
        assert!(
            !is_live(&lease("a", "a", now - 500, "pod-1", now - 3600, true), now),
            "left behind by an uninstalled release"
        );
    }

    #[test]
    fn only_the_oldest_live_fleet_claiming_unlabelled_resources_serves_them() {
        let now = 1_800_000_000;
        let ours = lease("public-operator", "public", now - 100, "pod-1", now, true);
        let older = lease("studio-operator", "studio", now - 900, "pod-2", now - 1, true);
        let newer = lease("late-operator", "late", now - 10, "pod-3", now, true);
        let served_by = |leases: &[Lease]| unlabelled_served_by_other(leases, "public-operator", now);
        assert_eq!(served_by(&[ours.clone(), older.clone()]), Some("studio".into()));
        assert_eq!(served_by(&[ours.clone(), newer]), None, "a newer fleet yields to us");
        let not_claiming = lease("studio-operator", "studio", now - 900, "pod-2", now, false);
        assert_eq!(served_by(&[ours.clone(), not_claiming]), None);
        let released = lease("studio-operator", "studio", now - 900, "", now, true);
        assert_eq!(
            served_by(&[ours.clone(), released]),
            None,
            "an uninstalled fleet serves nothing"
        );
        let stale = lease("studio-operator", "studio", now - 900, "pod-2", now - 3600, true);
        assert_eq!(served_by(&[ours.clone(), stale]), None);
        // Both fleets reach the same answer.
        assert_eq!(unlabelled_served_by_other(&[ours, older], "studio-operator", now), None);
    }
}
