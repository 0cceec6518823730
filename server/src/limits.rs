//! Connection limits of a listener family (RTMP with RTMPS, HTTP with HTTPS): a total and a
//! cap per client address. A [`Slot`] holds one place in both until it drops: a TCP
//! connection, a WebSocket that outlived its HTTP/1.1 connection, or an HTTP/2 stream
//! carrying FLV.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The address a client is counted under: IPv4 (also when mapped into IPv6), or the /64 of an
/// IPv6 address, since one subscriber usually holds a whole /64 and could rotate through it.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        },
    }
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    #[error("connection limit reached")]
    Total,
    #[error("connection limit per client address reached")]
    PerClient,
}

pub struct ConnLimits {
    total: Arc<Semaphore>,
    max_total: usize,
    max_per_client: usize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// One place in a [`ConnLimits`]; given back when dropped.
pub struct Slot {
    _total: OwnedSemaphorePermit,
    client: Option<(IpAddr, Arc<ConnLimits>)>,
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            max_per_client,
            per_client: Mutex::new(HashMap::new()),
        })
    }

    fn clients(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place in the total only: taken at accept, before the client's address is known for
    /// sure (a PROXY protocol header may still name it). See [`ConnLimits::admit_client`].
    pub fn try_total(&self) -> Result<Slot, LimitHit> {
        let permit = self.total.clone().try_acquire_owned().map_err(|_| LimitHit::Total)?;
        Ok(Slot {
            _total: permit,
            client: None,
        })
    }

    /// Counts `slot` (taken with [`ConnLimits::try_total`]) against its client's address.
    pub fn admit_client(self: &Arc<Self>, slot: &mut Slot, ip: IpAddr) -> Result<(), LimitHit> {
        debug_assert!(slot.client.is_none(), "a slot is counted for one client");
        let key = client_key(ip);
        let mut clients = self.clients();
        let n = clients.entry(key).or_insert(0);
        if *n >= self.max_per_client {
            return Err(LimitHit::PerClient);
        }
        *n += 1;
        slot.client = Some((key, self.clone()));
        Ok(())
    }

    /// A place in the total and under the client's address.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, LimitHit> {
        let mut slot = self.try_total()?;
        self.admit_client(&mut slot, ip)?;
        Ok(slot)
    }

    /// Places taken now.
    pub fn in_use(&self) -> usize {
        self.max_total - self.total.available_permits()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((key, limits)) = self.client.take() {
            let mut clients = limits.clients();
            if let Some(n) = clients.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    clients.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_cannot_take_every_place() {
        let limits = ConnLimits::new(4, 2);
        let a1 = limits.try_acquire(ip("192.0.2.1")).unwrap();
        let _a2 = limits.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(limits.try_acquire(ip("192.0.2.1")).err(), Some(LimitHit::PerClient));
        let _b1 = limits.try_acquire(ip("192.0.2.2")).unwrap();
        let _b2 = limits.try_acquire(ip("::ffff:192.0.2.2")).unwrap();
        assert_eq!(
            limits.try_acquire(ip("192.0.2.3")).err(),
            Some(LimitHit::Total),
            "the total holds"
        );
        assert_eq!(limits.in_use(), 4);
        drop(a1);
        assert_eq!(limits.in_use(), 3);
        let _a3 = limits.try_acquire(ip("192.0.2.1")).unwrap();
    }

    #[test]
    fn a_refused_client_gives_its_total_place_back() {
        let limits = ConnLimits::new(2, 1);
        let _a = limits.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(limits.try_acquire(ip("192.0.2.1")).err(), Some(LimitHit::PerClient));
        assert_eq!(limits.in_use(), 1);
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_client() {
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        let limits = ConnLimits::new(10, 1);
        let _a = limits.try_acquire(ip("2001:db8::1")).unwrap();
        assert_eq!(
            limits.try_acquire(ip("2001:db8::ffff:1")).err(),
            Some(LimitHit::PerClient)
        );
        let _b = limits.try_acquire(ip("2001:db8:0:1::1")).unwrap();
    }
}
