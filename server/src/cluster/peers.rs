//! Who the peers are: a static list of `host:port` and/or a DNS name (a Kubernetes headless
//! Service) resolved again every few seconds, minus the addresses found to be this pod.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::config::ClusterConfig;

#[derive(Debug, Default)]
struct Known {
    /// Every address the names resolve to now.
    resolved: BTreeSet<SocketAddr>,
    /// Addresses that answered with this pod's own instance id.
    me: BTreeSet<SocketAddr>,
}

pub struct Peers {
    names: Vec<String>,
    known: Arc<RwLock<Known>>,
}

impl Peers {
    pub fn new(config: &ClusterConfig) -> Peers {
        let mut names = config.peers.clone();
        names.extend(config.dns.clone());
        // Literal addresses are known at once; names are resolved by `start`.
        let resolved = names.iter().filter_map(|n| n.parse::<SocketAddr>().ok()).collect();
        Peers {
            names,
            known: Arc::new(RwLock::new(Known {
                resolved,
                me: BTreeSet::new(),
            })),
        }
    }

    /// Resolves the names now and then every `every` in the background.
    pub fn start(&self, every: Duration) {
        if self.names.iter().all(|n| n.parse::<SocketAddr>().is_ok()) {
            return;
        }
        let names = self.names.clone();
        let known = Arc::downgrade(&self.known);
        tokio::spawn(async move {
            loop {
                let mut resolved = BTreeSet::new();
                for name in &names {
                    match tokio::net::lookup_host(name.as_str()).await {
                        Ok(addrs) => resolved.extend(addrs),
                        Err(e) => debug!(peer = %name, "cannot resolve: {e}"),
                    }
                }
                let Some(known) = known.upgrade() else { return };
                {
                    let mut k = known.write().unwrap_or_else(|e| e.into_inner());
                    if k.resolved != resolved {
                        info!(peers = ?resolved, "fleet peers changed");
                        if resolved.is_empty() {
                            warn!("no fleet peer resolves; serving local streams only");
                        }
                        k.resolved = resolved;
                    }
                }
                drop(known);
                tokio::time::sleep(every).await;
            }
        });
    }

    /// The peers to ask now.
    pub fn list(&self) -> Vec<SocketAddr> {
        let k = self.known.read().unwrap_or_else(|e| e.into_inner());
        k.resolved.difference(&k.me).copied().collect()
    }

    /// `addr` turned out to be this pod.
    pub fn mark_self(&self, addr: SocketAddr) {
        let mut k = self.known.write().unwrap_or_else(|e| e.into_inner());
        if k.me.insert(addr) {
            debug!(%addr, "this pod is in its own peer list; skipping it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_peers_are_known_at_once_and_self_is_skipped() {
        let config = ClusterConfig {
            peers: vec!["127.0.0.2:9090".into(), "127.0.0.3:9090".into()],
            ..ClusterConfig::default()
        };
        let peers = Peers::new(&config);
        assert_eq!(peers.list().len(), 2);
        peers.mark_self("127.0.0.2:9090".parse().unwrap());
        assert_eq!(peers.list(), vec!["127.0.0.3:9090".parse::<SocketAddr>().unwrap()]);
    }

    #[tokio::test]
    async fn names_resolve_in_the_background() {
        let config = ClusterConfig {
            dns: Some("localhost:9090".into()),
            ..ClusterConfig::default()
        };
        let peers = Peers::new(&config);
        assert!(peers.list().is_empty());
        peers.start(Duration::from_secs(60));
        for _ in 0..100 {
            if !peers.list().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(peers.list().iter().all(|a| a.port() == 9090 && a.ip().is_loopback()));
        assert!(!peers.list().is_empty());
    }
}
