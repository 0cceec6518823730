//! Leader election with a `coordination.k8s.io` Lease, so two operator replicas are safe: only
//! the holder reconciles. Writes use the Lease's resourceVersion (optimistic concurrency), so
//! two candidates racing for an expired Lease cannot both win. A leader that cannot renew
//! within the lease duration stops (the process exits and restarts as a candidate), because
//! another replica may already have taken over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a Lease stays valid without renewal.
pub const LEASE_SECS: i32 = 15;
/// How often the holder renews and a candidate retries.
pub const RETRY: Duration = Duration::from_secs(4);

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
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
        }
    }

    /// One round: create, renew or take over the Lease if we may.
    pub async fn round(&self, now: Timestamp) -> Result<Round, kube::Error> {
        let current = match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
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
        let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECS)));
        let expired = spec.renew_time.as_ref().is_none_or(|t| t.0 + duration < now);
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
    /// leadership is lost (the caller must stop reconciling).
    pub async fn run(&self, leading: watch::Sender<bool>, leader_gauge: prometheus::IntGauge) -> crate::Error {
        let mut last_renewal: Option<std::time::Instant> = None;
        loop {
            match self.round(Timestamp::now()).await {
                Ok(Round::Leading) => {
                    if last_renewal.is_none() {
                        info!(lease = %self.name, identity = %self.identity, "became the leader");
                    }
                    last_renewal = Some(std::time::Instant::now());
                    leader_gauge.set(1);
                    leading.send_replace(true);
                }
                Ok(Round::Following(holder)) => {
                    if last_renewal.is_some() {
                        leader_gauge.set(0);
                        leading.send_replace(false);
                        return crate::Error::LostLease;
                    }
                    tracing::debug!(%holder, "waiting for the leader Lease");
                }
                Err(e) => {
                    warn!("leader election: {e}");
                    if last_renewal.is_some_and(|t| t.elapsed() > Duration::from_secs(LEASE_SECS as u64)) {
                        leader_gauge.set(0);
                        leading.send_replace(false);
                        return crate::Error::LostLease;
                    }
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}
