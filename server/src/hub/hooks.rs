//! What outside modules plug into the hub: on-demand sources for a play of a stream nobody
//! publishes here (relay edge pulls; later, pulls from fleet peers), and a notice when a
//! publisher claims a stream (pushes start then). The hub only calls out; it never waits on
//! a hook while holding a lock, and a hub without hooks behaves as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use super::{Hub, StreamKey};

/// A play request that found its stream unpublished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demand {
    /// The player's query string (passed through to the source: its keys or signatures).
    pub query: String,
    /// The relay hop path the request came through (empty for an ordinary player).
    pub via: Vec<String>,
}

/// Resolves `true` once a source publishes the stream here, `false` when the source has no
/// such stream (or refused).
pub type DemandWait = Pin<Box<dyn Future<Output = bool> + Send>>;

/// What a play should do after [`Hub::demand`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemandOutcome {
    /// The stream is published: subscribe.
    Published,
    /// Nothing can fetch it: subscribe and wait for a publisher as usual.
    Wait,
    /// The source answered that it has no such stream (or did not within the play wait):
    /// answer the protocol's not-found.
    NotFound,
}

pub trait HubHooks: Send + Sync {
    /// A player asked for `key`, which nobody publishes here. `None`: nothing to fetch it from.
    fn demand(&self, key: &StreamKey, demand: &Demand) -> Option<DemandWait>;
    /// A publisher claimed `key` (a new stream, or a publisher returning within the grace).
    fn published(&self, key: &StreamKey);
}

impl Hub {
    /// Installs the hooks (once; later calls are ignored).
    pub fn set_hooks(&self, hooks: Weak<dyn HubHooks>) {
        let _ = self.inner.hooks.set(hooks);
    }

    pub(super) fn hooks(&self) -> Option<Arc<dyn HubHooks>> {
        self.inner.hooks.get().and_then(Weak::upgrade)
    }

    /// Before a player subscribes: when `key` is not published and a hook can fetch it, waits
    /// (at most the play wait) until it is published or known not to exist.
    pub async fn demand(&self, key: &StreamKey, demand: Demand) -> DemandOutcome {
        if self.stream(key).is_some_and(|s| s.is_published()) {
            return DemandOutcome::Published;
        }
        let Some(wait) = self.hooks().and_then(|h| h.demand(key, &demand)) else {
            return DemandOutcome::Wait;
        };
        match tokio::time::timeout(self.inner.settings.play_wait, wait).await {
            Ok(true) => DemandOutcome::Published,
            Ok(false) | Err(_) => DemandOutcome::NotFound,
        }
    }
}
