//! RTMP: the sans-IO [`session`] state machine and the [`conn`] driver that owns the socket,
//! plus the sans-IO [`client`] that relays use to pull from and push to other servers.

pub mod client;
pub mod conn;
pub mod session;
