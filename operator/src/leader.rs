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

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a Lease stays valid without renewal.
pub const LEASE_SECS: i32 = 15;
/// The holder steps down when it has not renewed for this long (well within the lease).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the holder renews and a candidate retries.
pub const RETRY: Duration = Duration::from_secs(2);

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// Labels of the Lease (its fleet), so the fleets of a namespace can be listed.
    labels: std::collections::BTreeMap<String, String>,
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
            observed: std::sync::Mutex::new(None),
        }
    }

    /// Labels the Lease with `fleet` (`ferrocast.io/fleet`), so other fleets see this one.
    pub fn for_fleet(mut self, fleet: &str) -> Elector {
        self.labels
            .insert(crate::render::FLEET_LABEL.to_string(), fleet.to_string());
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
        let mut renewed: Option<Instant> = None;
        let step_down = |why: &str| {
            warn!(lease = %self.name, "stepping down: {why}");
            leader_gauge.set(0);
            leading.send_replace(false);
            crate::Error::LostLease
        };
        loop {
            let began = Instant::now();
            // A round that hangs must not keep a leader past its deadline.
            let limit = match renewed {
                Some(r) => steps_down_at(r).saturating_duration_since(began),
                None => RENEW_DEADLINE,
            };
            match tokio::time::timeout(limit, self.round(Timestamp::now(), began)).await {
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
                if Instant::now() >= steps_down_at(r) {
                    return step_down("no renewal within the renew deadline");
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// When a leader whose last successful renewal began at `renewed` stops leading: before any
/// candidate, which waits a whole lease from when it saw that renewal, may take over.
pub fn steps_down_at(renewed: Instant) -> Instant {
    renewed + RENEW_DEADLINE
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
        let t = Instant::now();
        assert!(steps_down_at(t) < t + lease);
    }
}
