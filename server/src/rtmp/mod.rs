//! RTMP: the sans-IO [`session`] state machine and the [`conn`] driver that owns the socket.

pub mod conn;
pub mod session;
