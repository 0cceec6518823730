//! The fleet: several server pods acting as one. This module owns who the peers are, the
//! shared secret their requests carry, publish claims across pods ([`claim`]), finding the pod
//! that publishes a stream, and the pod-to-pod endpoints on the admin port ([`routes`]).
//!
//! Pods find each other through a static list or a DNS name (a Kubernetes headless Service)
//! and recognise themselves by a random instance id, so a list may include the pod itself.
//! Nothing is stored outside the pods: a stream is owned by the pod its publisher is on.

pub mod claim;
pub mod peers;
pub mod pull;
pub mod routes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::ClusterConfig;
use crate::hub::StreamKey;
use crate::serving::MainRuntime;
use claim::{Claims, Holding, Stamp};
use peers::Peers;

/// Header carrying the shared secret on every pod-to-pod request.
pub const SECRET_HEADER: &str = "x-ferrocast-cluster-secret";

/// Largest answer accepted from a peer (stream and session lists of a busy pod fit).
const MAX_ANSWER_BYTES: usize = 16 << 20;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read the cluster secret {path}: {source}")]
    Secret { path: String, source: std::io::Error },
    #[error("the cluster secret file {0} is empty")]
    EmptySecret(String),
}

/// Who answered a question about a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub pod: String,
    pub instance: u64,
    pub holding: Holding,
}

/// A peer that publishes a stream: where to pull it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pod: String,
    pub addr: SocketAddr,
}

/// What the peers said about a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Go ahead; finish the claim with [`Cluster::finish_claim`] once the hub took it.
    Granted(Stamp),
    /// Published, or claimed first, on `pod`.
    Refused { pod: String },
}

pub struct Cluster {
    /// This pod's name in the API.
    pub pod: String,
    /// Random per process: tells this pod apart from its peers, also in session ids.
    pub instance: u64,
    secret: String,
    peers: Peers,
    claims: Mutex<Claims>,
    /// Recent answers to "who publishes this", so a burst of players asks once.
    owners: Mutex<HashMap<StreamKey, (Instant, Owner)>>,
    /// The streams this pod follows from a peer ([`pull`]), with their wake-up.
    followers: Mutex<HashMap<StreamKey, Arc<pull::Follower>>>,
    timeout: Duration,
    cache: Duration,
    client: HttpClient,
    /// Pulls from peers run here, whichever player's connection started them.
    rt: MainRuntime,
}

impl Cluster {
    /// Starts the fleet membership (peer discovery runs in the background).
    pub fn start(config: &ClusterConfig, instance: u64) -> Result<Arc<Cluster>, ClusterError> {
        let secret = match &config.secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Secret {
                    path: path.display().to_string(),
                    source,
                })?;
                let s = text.trim().to_string();
                if s.is_empty() {
                    return Err(ClusterError::EmptySecret(path.display().to_string()));
                }
                s
            }
            None => String::new(),
        };
        let pod = config
            .pod_name
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| format!("pod-{instance:x}"));
        let cluster = Arc::new(Cluster {
            pod,
            instance,
            secret,
            peers: Peers::new(config),
            claims: Mutex::new(Claims::new(instance)),
            owners: Mutex::new(HashMap::new()),
            followers: Mutex::new(HashMap::new()),
            timeout: Duration::from_millis(config.lookup_timeout_ms),
            cache: Duration::from_millis(config.lookup_cache_ms),
            client: Client::builder(TokioExecutor::new()).build_http(),
            rt: MainRuntime::here(),
        });
        cluster.peers.start(Duration::from_secs(config.dns_refresh_secs));
        info!(pod = %cluster.pod, peers = ?config.peers, dns = ?config.dns, "fleet membership started");
        Ok(cluster)
    }

    fn followers(&self) -> MutexGuard<'_, HashMap<StreamKey, Arc<pull::Follower>>> {
        self.followers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the pull of `key` from a peer, if there is one (a publisher here takes over).
    pub fn stop_pull(&self, key: &StreamKey) {
        if let Some(f) = self.followers().get(key) {
            f.stop.notify_one();
        }
    }

    fn claims(&self) -> MutexGuard<'_, Claims> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `given` is the shared secret (compared without an early exit).
    pub fn secret_matches(&self, given: &str) -> bool {
        !self.secret.is_empty() && crate::auth::constant_time_eq(given.as_bytes(), self.secret.as_bytes())
    }

    /// Sends one request to a peer's admin port; `None` when it fails or is too slow.
    async fn ask(&self, addr: SocketAddr, method: Method, path: &str) -> Option<(StatusCode, Bytes)> {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(SECRET_HEADER, &self.secret)
            .body(Full::new(Bytes::new()))
            .ok()?;
        let work = async {
            let resp = self.client.request(req).await.ok()?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES).collect().await.ok()?;
            Some((status, body.to_bytes()))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Some(r)) => Some(r),
            _ => {
                debug!(peer = %addr, path, "peer did not answer");
                None
            }
        }
    }

    /// Asks every peer at once; each result is the peer's address and its answer, or `None`
    /// for a peer that did not answer. This pod is left out once it recognised itself.
    pub async fn ask_all(&self, method: Method, path: &str) -> Vec<(SocketAddr, Option<(StatusCode, Bytes)>)> {
        let peers = self.peers.list();
        let asks = peers.iter().map(|&addr| {
            let method = method.clone();
            async move { (addr, self.ask(addr, method, path).await) }
        });
        futures_util::future::join_all(asks).await
    }

    /// Asks every peer what it holds for `key`, stamped with `stamp`. Answers from this pod
    /// itself (a list that names it) teach the peer list to skip that address.
    async fn holdings(&self, key: &StreamKey, stamp: Stamp) -> Vec<(SocketAddr, Option<Answer>)> {
        let path = format!(
            "/cluster/v1/streams/{}/{}?clock={}&instance={}",
            key.app, key.name, stamp.clock, stamp.instance
        );
        let mut out = Vec::new();
        for (addr, resp) in self.ask_all(Method::GET, &path).await {
            let answer = resp
                .filter(|(status, _)| status.is_success())
                .and_then(|(_, body)| serde_json::from_slice::<Answer>(&body).ok());
            match answer {
                Some(a) if a.instance == self.instance => self.peers.mark_self(addr),
                a => out.push((addr, a)),
            }
        }
        out
    }

    /// Decides whether a publish of `key` may go ahead on this pod (see [`claim`]).
    pub async fn claim(&self, key: &StreamKey) -> ClaimOutcome {
        let Some(stamp) = self.claims().begin(key) else {
            return ClaimOutcome::Refused { pod: self.pod.clone() };
        };
        let answers = self.holdings(key, stamp).await;
        let holdings: Vec<Holding> = answers
            .iter()
            .filter_map(|(_, a)| a.as_ref().map(|a| a.holding.clone()))
            .collect();
        if claim::wins(stamp, &holdings) {
            return ClaimOutcome::Granted(stamp);
        }
        self.claims().finish(key, stamp);
        let pod = answers
            .into_iter()
            .filter_map(|(_, a)| a)
            .find(|a| match a.holding {
                Holding::Published => true,
                Holding::Pending { stamp: theirs } => theirs < stamp,
                Holding::Nothing => false,
            })
            .map_or_else(|| "another pod".to_string(), |a| a.pod);
        ClaimOutcome::Refused { pod }
    }

    /// Ends a granted claim once the hub accepted (or refused) the publisher.
    pub fn finish_claim(&self, key: &StreamKey, stamp: Stamp) {
        self.claims().finish(key, stamp);
    }

    /// Answers a peer's question (the internal endpoint calls this).
    pub fn answer(&self, key: &StreamKey, stamp: Stamp, published: bool) -> Answer {
        Answer {
            pod: self.pod.clone(),
            instance: self.instance,
            holding: self.claims().answer(key, stamp, published),
        }
    }

    /// The peer publishing `key`, if any answers so within the lookup timeout. A found owner is
    /// reused for `lookup_cache_ms`; "nobody" is not kept (waiting players ask again).
    pub async fn owner(&self, key: &StreamKey) -> Option<Owner> {
        if let Some((at, owner)) = self.owners.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            if at.elapsed() < self.cache {
                return Some(owner.clone());
            }
        }
        let stamp = Stamp {
            clock: 0,
            instance: self.instance,
        };
        let owner = self.holdings(key, stamp).await.into_iter().find_map(|(addr, a)| {
            a.filter(|a| a.holding == Holding::Published)
                .map(|a| Owner { pod: a.pod, addr })
        });
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        owners.retain(|_, (at, _)| at.elapsed() < self.cache);
        if let Some(o) = &owner {
            owners.insert(key.clone(), (Instant::now(), o.clone()));
        }
        owner
    }

    /// Forgets a cached owner (its pull failed: it may have moved).
    pub fn forget_owner(&self, key: &StreamKey) {
        self.owners.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Tells every peer that `key` is now published here, so their waiting players start at
    /// once. Fire and forget: the publisher never waits on it.
    pub fn announce(self: &Arc<Self>, key: &StreamKey) {
        let me = self.clone();
        let path = format!("/cluster/v1/announce/{}/{}", key.app, key.name);
        tokio::spawn(async move {
            for (addr, resp) in me.ask_all(Method::POST, &path).await {
                if resp.is_none() {
                    warn!(peer = %addr, "peer missed a publish announcement");
                }
            }
        });
    }

    /// The secret, for the pull of a stream from a peer.
    pub fn secret(&self) -> &str {
        &self.secret
    }
}
