//! Live client sessions of every protocol: who is connected, what they publish or play, the
//! bytes they moved, and a handle to kick them. The API lists these and the metrics count them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::hub::StreamKey;
use crate::metrics::Metrics;

/// Transport of a session, as used in metric labels and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Rtmp,
    Rtmps,
    HttpFlv,
    WsFlv,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::Rtmps => "rtmps",
            Protocol::HttpFlv => "http_flv",
            Protocol::WsFlv => "ws_flv",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Publisher,
    Player,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Player => "player",
        }
    }
}

/// One client connection.
#[derive(Debug)]
pub struct SessionEntry {
    pub id: u64,
    pub protocol: Protocol,
    /// Peer address, `ip:port`.
    pub remote: String,
    pub connected: SystemTime,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    activity: Mutex<Option<(Role, StreamKey)>>,
    kick: watch::Sender<bool>,
}

impl SessionEntry {
    pub fn activity(&self) -> Option<(Role, StreamKey)> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Resolves when the session is kicked (API `DELETE /sessions/{id}`).
    pub fn kicked(&self) -> watch::Receiver<bool> {
        self.kick.subscribe()
    }
}

/// All live sessions.
pub struct Sessions {
    map: Mutex<HashMap<u64, Arc<SessionEntry>>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Sessions {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self::with_id_base(metrics, 1)
    }

    /// Sessions numbered from `first` (a fleet gives each pod its own range).
    pub fn with_id_base(metrics: Arc<Metrics>, first: u64) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(first),
            metrics,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<u64, Arc<SessionEntry>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection; it is removed when the guard drops.
    pub fn open(self: &Arc<Self>, protocol: Protocol, remote: String) -> SessionGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (kick, _) = watch::channel(false);
        let entry = Arc::new(SessionEntry {
            id,
            protocol,
            remote,
            connected: SystemTime::now(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            activity: Mutex::new(None),
            kick,
        });
        self.map().insert(id, entry.clone());
        SessionGuard {
            entry,
            sessions: self.clone(),
        }
    }

    pub fn get(&self, id: u64) -> Option<Arc<SessionEntry>> {
        self.map().get(&id).cloned()
    }

    /// Every session, by id.
    pub fn list(&self) -> Vec<Arc<SessionEntry>> {
        let mut v: Vec<_> = self.map().values().cloned().collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Ends a session at once. Returns false if there is no such session.
    pub fn kick(&self, id: u64) -> bool {
        match self.get(id) {
            Some(s) => {
                s.kick.send_replace(true);
                true
            }
            None => false,
        }
    }
}

/// Owns a session's registration.
pub struct SessionGuard {
    entry: Arc<SessionEntry>,
    sessions: Arc<Sessions>,
}

impl SessionGuard {
    pub fn id(&self) -> u64 {
        self.entry.id
    }

    pub fn entry(&self) -> &Arc<SessionEntry> {
        &self.entry
    }

    /// Records what the session does now (publish or play of a stream), or nothing.
    pub fn set_activity(&self, activity: Option<(Role, StreamKey)>) {
        let mut a = self.entry.activity.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((role, key)) = a.take() {
            self.sessions.metrics.session_ended(&key.app, self.entry.protocol, role);
        }
        if let Some((role, key)) = &activity {
            self.sessions
                .metrics
                .session_started(&key.app, self.entry.protocol, *role);
        }
        *a = activity;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.set_activity(None);
        self.sessions.map().remove(&self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_register_kick_and_leave() {
        let sessions = Arc::new(Sessions::new(Arc::new(Metrics::new())));
        let g = sessions.open(Protocol::Rtmp, "127.0.0.1:5000".into());
        let mut kicked = g.entry().kicked();
        g.set_activity(Some((Role::Publisher, StreamKey::new("live", "cam").unwrap())));
        assert_eq!(sessions.list().len(), 1);
        assert!(sessions.kick(g.id()));
        assert!(*kicked.borrow_and_update());
        assert!(!sessions.kick(999));
        drop(g);
        assert!(sessions.list().is_empty());
    }
}
