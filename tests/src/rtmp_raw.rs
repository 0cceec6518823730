//! Raw RTMP sockets for robustness tests: a hand-written simple (digest-less) handshake and a
//! way to observe that the server closed the connection.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const HANDSHAKE_SIZE: usize = 1536;

pub async fn connect(port: u16) -> Result<TcpStream> {
    let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| anyhow!("connect to RTMP port {port} timed out"))?
        .with_context(|| format!("connecting to RTMP port {port}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The simple handshake as a client: C0+C1 (1537 bytes), read S0+S1+S2 (3073 bytes), send C2
/// (an echo of S1). Bounded by 5 s.
pub async fn client_handshake(s: &mut TcpStream) -> Result<()> {
    let fut = async {
        let mut c0c1 = vec![0u8; 1 + HANDSHAKE_SIZE];
        c0c1[0] = 3;
        // time (4 bytes) = 0, zero (4 bytes) = 0: the simple scheme; the rest random.
        rand::thread_rng().fill_bytes(&mut c0c1[9..]);
        s.write_all(&c0c1).await?;
        let mut s0s1s2 = vec![0u8; 1 + 2 * HANDSHAKE_SIZE];
        s.read_exact(&mut s0s1s2).await.context("reading S0+S1+S2")?;
        if s0s1s2[0] != 3 {
            bail!("S0 is version {}, expected 3", s0s1s2[0]);
        }
        let s1 = &s0s1s2[1..1 + HANDSHAKE_SIZE];
        s.write_all(s1).await.context("sending C2")?;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| anyhow!("RTMP handshake did not complete within 5 s"))?
}

/// A type-0 chunk header on chunk stream 3 for a message of `len` bytes (24-bit, so at most
/// 0xFFFFFF), message type `type_id`, message stream 0, timestamp 0.
pub fn type0_chunk_header(len: u32, type_id: u8) -> Vec<u8> {
    assert!(len <= 0xFF_FFFF);
    let mut h = vec![0x03, 0, 0, 0];
    h.extend_from_slice(&len.to_be_bytes()[1..]);
    h.push(type_id);
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

/// Writes `data`, treating a peer that already closed (EPIPE / ECONNRESET) as success:
/// returns Ok(false) when the write failed because the connection is gone.
pub async fn write_or_closed(s: &mut TcpStream, data: &[u8]) -> Result<bool> {
    match tokio::time::timeout(Duration::from_secs(5), s.write_all(data)).await {
        Ok(Ok(())) => Ok(true),
        Ok(Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            Ok(false)
        }
        Ok(Err(e)) => Err(e.into()),
        // The server stopped reading but kept the socket open: that is not "closed".
        Err(_) => bail!(
            "write of {} bytes blocked for 5 s (server stopped reading but did not close)",
            data.len()
        ),
    }
}

/// Waits until the server closes the connection (EOF or reset), discarding whatever it sends.
/// Returns the time waited, or an error if it is still open after `within`.
pub async fn wait_closed(s: &mut TcpStream, within: Duration) -> Result<Duration> {
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0usize;
    loop {
        let left = within.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) => return Ok(start.elapsed()),
            Ok(Ok(n)) => received += n,
            Ok(Err(_)) => return Ok(start.elapsed()),
            Err(_) => bail!("connection still open after {within:?} (server sent {received} bytes meanwhile)"),
        }
    }
}
