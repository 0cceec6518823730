//! Waiting streams: those a reader created by asking for a name nobody publishes yet. Each
//! holds a stream's memory for the play-wait period, so they are counted per app and per
//! client address and refused over the caps, before anyone has to authenticate to make one.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{HubError, StreamKey};
use crate::limits::client_key;

/// Caps on waiting streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingLimits {
    pub per_app: usize,
    pub per_client: usize,
}

impl WaitingLimits {
    pub const UNLIMITED: WaitingLimits = WaitingLimits {
        per_app: usize::MAX,
        per_client: usize::MAX,
    };
}

/// The waiting streams now, with who created each. Guarded by the hub's registry lock
/// discipline: only changed while the registry is locked.
#[derive(Debug)]
pub(crate) struct WaitingStreams {
    limits: WaitingLimits,
    by_key: HashMap<StreamKey, Option<IpAddr>>,
    per_app: HashMap<String, usize>,
    per_client: HashMap<IpAddr, usize>,
}

impl WaitingStreams {
    pub(crate) fn new(limits: WaitingLimits) -> Self {
        WaitingStreams {
            limits,
            by_key: HashMap::new(),
            per_app: HashMap::new(),
            per_client: HashMap::new(),
        }
    }

    /// Counts a new waiting stream for `key`, created by `client` (`None`: the server itself),
    /// or refuses it when its app or its client is at the cap.
    pub(crate) fn admit(&mut self, key: &StreamKey, client: Option<IpAddr>) -> Result<(), HubError> {
        // A stream is only created when none is registered, so an entry left for this key
        // belongs to a stream that is gone: drop it rather than count the key twice.
        self.remove(key);
        let client = client.map(client_key);
        if self.per_app.get(&key.app).copied().unwrap_or(0) >= self.limits.per_app {
            return Err(HubError::TooManyWaitingInApp(self.limits.per_app));
        }
        if let Some(ip) = client {
            if self.per_client.get(&ip).copied().unwrap_or(0) >= self.limits.per_client {
                return Err(HubError::TooManyWaitingForClient(self.limits.per_client));
            }
            *self.per_client.entry(ip).or_insert(0) += 1;
        }
        *self.per_app.entry(key.app.clone()).or_insert(0) += 1;
        self.by_key.insert(key.clone(), client);
        Ok(())
    }

    /// `key` no longer waits: it was published or reaped.
    pub(crate) fn remove(&mut self, key: &StreamKey) {
        let Some(client) = self.by_key.remove(key) else { return };
        decrement(&mut self.per_app, &key.app);
        if let Some(ip) = client {
            decrement(&mut self.per_client, &ip);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.by_key.clear();
        self.per_app.clear();
        self.per_client.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, k: &K) {
    if let Some(n) = map.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            map.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::super::{Hub, HubSettings, PublisherInfo, SubscribeOptions};
    use super::*;

    fn hub(per_app: usize, per_client: usize) -> Hub {
        Hub::new(HubSettings {
            waiting: WaitingLimits { per_app, per_client },
            ..super::super::tests::settings()
        })
    }

    fn key(name: &str) -> StreamKey {
        StreamKey::new("live", name).unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn play(hub: &Hub, name: &str, from: Option<IpAddr>) -> Result<super::super::Subscriber, HubError> {
        hub.subscribe_from(&key(name), SubscribeOptions::default(), from)
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_streams_are_capped_per_client_and_per_app() {
        let hub = hub(3, 2);
        let _a = play(&hub, "a", ip("192.0.2.1")).unwrap();
        let _b = play(&hub, "b", ip("192.0.2.1")).unwrap();
        assert_eq!(
            play(&hub, "c", ip("192.0.2.1")).err(),
            Some(HubError::TooManyWaitingForClient(2))
        );
        let _a2 = play(&hub, "a", ip("192.0.2.1")).expect("joining a waiting stream creates nothing");
        let _c = play(&hub, "c", ip("192.0.2.2")).unwrap();
        assert_eq!(
            play(&hub, "d", ip("192.0.2.3")).err(),
            Some(HubError::TooManyWaitingInApp(3))
        );
        assert_eq!(hub.streams().len(), 3, "refused plays leave no stream behind");
    }

    #[tokio::test(start_paused = true)]
    async fn a_published_or_reaped_stream_stops_counting() {
        let hub = hub(10, 1);
        let _a = play(&hub, "a", ip("2001:db8::1")).unwrap();
        assert!(
            play(&hub, "b", ip("2001:db8::2")).is_err(),
            "the same /64 is the same client"
        );
        let who = PublisherInfo {
            session_id: 1,
            protocol: "rtmp",
            remote: String::new(),
            started: SystemTime::now(),
        };
        let _p = hub.publish(&key("a"), who).unwrap();
        let b = play(&hub, "b", ip("2001:db8::2")).expect("a published stream no longer waits");
        drop(b);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(hub.stream(&key("b")).is_none(), "reaped after the play wait");
        play(&hub, "c", ip("2001:db8::3")).expect("a reaped stream no longer counts");
        assert_eq!(hub.inner.waiting().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn plays_by_the_server_itself_count_per_app_only() {
        let hub = hub(2, 1);
        let _a = play(&hub, "a", None).unwrap();
        let _b = play(&hub, "b", None).unwrap();
        assert_eq!(play(&hub, "c", None).err(), Some(HubError::TooManyWaitingInApp(2)));
    }
}
