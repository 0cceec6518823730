//! Socket helpers: vectored writes of shared buffers, connection wrappers that bound how
//! long a peer may stall a write or keep quiet before its first request, and the PROXY
//! protocol step that finds a connection's real client behind a load balancer.

use std::io::IoSlice;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Most buffers passed to one `writev`: enough for a live batch (a frame is a header and its
/// payload, plus a header per further chunk). The slices live in the write's future, which
/// every connection task carries, so they are kept few.
const MAX_IOVECS: usize = 32;

/// Writes every buffer in order with vectored writes, without copying them, then flushes:
/// a TLS stream may keep encrypted records buffered when the socket pushed back, and they
/// must not wait there for the next write (an RTMP reply or a last frame could stall).
pub async fn write_all_bytes<W: AsyncWrite + Unpin>(w: &mut W, bufs: &mut Vec<Bytes>) -> std::io::Result<()> {
    let mut first = 0;
    while first < bufs.len() {
        if bufs[first].is_empty() {
            first += 1;
            continue;
        }
        let end = (first + MAX_IOVECS).min(bufs.len());
        // Not allocated: this runs for every write to every player.
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        for (slice, b) in slices.iter_mut().zip(&bufs[first..end]) {
            *slice = IoSlice::new(b);
        }
        let mut n = w.write_vectored(&slices[..end - first]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let b = &mut bufs[first];
            let take = n.min(b.len());
            b.advance(take);
            n -= take;
            if b.is_empty() {
                first += 1;
            }
        }
    }
    bufs.clear();
    w.flush().await
}

/// Writes a sequence of borrowed pieces in order with vectored writes, then flushes (as
/// [`write_all_bytes`]). `pieces` gives the same pieces each time it is called: after a
/// partial write the pieces already written are skipped.
pub async fn write_all_pieces<'a, W, F, I>(w: &mut W, pieces: F) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    F: Fn() -> I,
    I: Iterator<Item = &'a [u8]>,
{
    let mut written = 0;
    loop {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        let mut skip = written;
        for piece in pieces() {
            if skip >= piece.len() {
                skip -= piece.len();
                continue;
            }
            slices[count] = IoSlice::new(&piece[skip..]);
            skip = 0;
            count += 1;
            if count == MAX_IOVECS {
                break;
            }
        }
        if count == 0 {
            break;
        }
        let n = w.write_vectored(&slices[..count]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    w.flush().await
}

/// Writes pass straight through to `self.inner`: for wrappers that only change reading.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<IO: AsyncWrite + Unpin> AsyncWrite for $wrapper<IO> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

/// Wraps a connection so that a write the peer does not accept for `limit` fails with
/// `TimedOut`, even when the protocol layer above (hyper) only waits for writability.
pub struct StallGuard<IO> {
    inner: IO,
    limit: std::time::Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> StallGuard<IO> {
    pub fn new(inner: IO, limit: std::time::Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.inner
    }

    pub fn into_inner(self) -> IO {
        self.inner
    }

    fn on_write<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        res: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future;
        use std::task::Poll;
        match res {
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "peer accepted no data",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StallGuard<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let res = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, res)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let res = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let res = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, res)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Wraps a connection so that reading fails with `TimedOut` unless the peer's first bytes
/// arrive within `limit`. HTTP/2 has no header read timeout of its own, and without this a
/// client could hold a connection slot forever after the TLS handshake.
pub struct FirstReadDeadline<IO> {
    inner: IO,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> FirstReadDeadline<IO> {
    pub fn new(inner: IO, limit: std::time::Duration) -> Self {
        FirstReadDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FirstReadDeadline<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        let before = buf.filled().len();
        let res = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let Some(deadline) = self.deadline.as_mut() else {
            return res;
        };
        match res {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.deadline = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no request from the peer",
            ))),
            other => other,
        }
    }
}

write_through!(FirstReadDeadline);

/// A connection whose first bytes were read ahead (looking for a PROXY protocol header):
/// reads return them before the socket's own.
pub struct Prefixed<IO> {
    prefix: Bytes,
    inner: IO,
}

impl<IO> Prefixed<IO> {
    pub fn new(prefix: Bytes, inner: IO) -> Self {
        Prefixed { prefix, inner }
    }

    pub fn get_ref(&self) -> &IO {
        &self.inner
    }

    /// The bytes not read yet and the connection under them.
    pub fn into_parts(self) -> (Bytes, IO) {
        (self.prefix, self.inner)
    }
}

impl<IO: std::os::fd::AsRawFd> std::os::fd::AsRawFd for Prefixed<IO> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.inner.as_raw_fd()
    }
}

/// Sends `buf` on the socket `fd` with `MSG_MORE`: the kernel holds it to go out with the
/// data sent next (a response head before its `sendfile` body). A full socket gives
/// `WouldBlock`.
pub fn send_more(fd: std::os::fd::RawFd, buf: &[u8]) -> std::io::Result<usize> {
    // SAFETY: send reads at most `buf.len()` bytes from `buf`, which outlives the call; a
    // stale or non-socket fd only makes the call fail.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_MORE | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// How much must be queued on a TCP socket before the kernel reports it readable
/// (`SO_RCVLOWAT`). Linux re-checks the queue when this is set, so lowering it to 1 wakes a
/// waiting reader at once if anything is there; a FIN always wakes. Errors are ignored: the
/// worst outcome is one wake-up per arriving segment, as without it.
pub fn set_recv_low_water(fd: std::os::fd::RawFd, bytes: usize) {
    let value = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local; a stale or
    // non-socket fd only makes the call fail.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

write_through!(Prefixed);

/// Who may send a PROXY protocol header on a listener, and how long they have.
#[derive(Debug, Clone)]
pub struct ProxyPolicy {
    pub trusted: Vec<crate::auth::Cidr>,
    pub header_timeout: std::time::Duration,
}

/// Why a connection was closed before its protocol started.
#[derive(Debug, thiserror::Error)]
pub enum ProxyRefusal {
    #[error("no PROXY header or first bytes within {0:?}")]
    Timeout(std::time::Duration),
    #[error("closed before its first bytes")]
    Closed,
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("PROXY header from an untrusted address (not in proxy_protocol.trusted_cidrs)")]
    Untrusted,
    #[error(transparent)]
    Malformed(#[from] crate::proxy_protocol::ProxyError),
}

/// The PROXY protocol step of a listener that has it on: a trusted peer's header (v1 or v2)
/// names the client, a trusted peer without one is its own client, and a header from anyone
/// else closes the connection. Bytes read past the header are kept for the protocol. With
/// `policy` `None` (the listener has it off) nothing is read.
pub async fn accept_proxied<IO: tokio::io::AsyncRead + Unpin>(
    mut io: IO,
    peer: std::net::SocketAddr,
    policy: Option<&ProxyPolicy>,
) -> Result<(Prefixed<IO>, std::net::SocketAddr), ProxyRefusal> {
    use crate::proxy_protocol::{detect, parse, Detect, Header, MAX_HEADER_LEN};
    use tokio::io::AsyncReadExt;
    let Some(policy) = policy else {
        return Ok((Prefixed::new(Bytes::new(), io), peer));
    };
    let trusted = policy.trusted.iter().any(|c| c.contains(peer.ip()));
    let mut buf = [0u8; MAX_HEADER_LEN];
    let mut filled = 0;
    let step = async {
        loop {
            let header = match detect(&buf[..filled]) {
                Detect::Plain => return Ok((None, 0)),
                Detect::Proxy if !trusted => return Err(ProxyRefusal::Untrusted),
                Detect::Proxy => parse(&buf[..filled])?,
                Detect::NeedMore => None,
            };
            if let Some((header, len)) = header {
                return Ok((Some(header), len));
            }
            // `parse` refuses a header longer than the buffer before it fills up.
            let n = io.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Err(ProxyRefusal::Closed);
            }
            filled += n;
        }
    };
    let (header, used) = tokio::time::timeout(policy.header_timeout, step)
        .await
        .map_err(|_| ProxyRefusal::Timeout(policy.header_timeout))??;
    let rest = Bytes::copy_from_slice(&buf[used..filled]);
    let client = match header {
        Some(Header::Client(addr)) => addr,
        Some(Header::Local) | None => peer,
    };
    Ok((Prefixed::new(rest, io), client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_everything_in_order() {
        let mut out = Vec::new();
        let mut bufs: Vec<Bytes> = (0..200u32).map(|i| Bytes::from(i.to_string())).collect();
        let want: Vec<u8> = bufs.iter().flat_map(|b| b.to_vec()).collect();
        write_all_bytes(&mut out, &mut bufs).await.unwrap();
        assert_eq!(out, want);
        assert!(bufs.is_empty());
    }

    #[tokio::test]
    async fn borrowed_pieces_are_written_in_order_across_partial_writes() {
        let pieces: Vec<Vec<u8>> = (0..100u32)
            .map(|i| i.to_string().repeat(i as usize % 7).into_bytes())
            .collect();
        let want: Vec<u8> = pieces.concat();
        // A pipe that takes 5 bytes at a time: every write is partial.
        let (mut writer, mut reader) = tokio::io::duplex(5);
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut got)
                .await
                .unwrap();
            got
        });
        write_all_pieces(&mut writer, || pieces.iter().map(Vec::as_slice))
            .await
            .unwrap();
        drop(writer);
        assert_eq!(read.await.unwrap(), want);
    }

    #[tokio::test]
    async fn nothing_stays_buffered_in_the_writer() {
        let mut out = tokio::io::BufWriter::new(Vec::new());
        let mut bufs = vec![Bytes::from_static(b"reply")];
        write_all_bytes(&mut out, &mut bufs).await.unwrap();
        assert_eq!(
            out.get_ref().as_slice(),
            b"reply",
            "a buffering writer (like TLS) was flushed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn first_read_deadline_only_bounds_the_first_bytes() {
        use tokio::io::AsyncReadExt;
        let limit = std::time::Duration::from_secs(10);
        let (_quiet_peer, quiet) = tokio::io::duplex(64);
        let mut quiet = FirstReadDeadline::new(quiet, limit);
        let err = quiet.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

        let (mut peer, io) = tokio::io::duplex(64);
        let mut io = FirstReadDeadline::new(io, limit);
        peer.write_all(b"a").await.unwrap();
        assert_eq!(io.read_u8().await.unwrap(), b'a');
        let later = tokio::spawn(async move {
            tokio::time::sleep(limit * 3).await;
            peer.write_all(b"b").await.unwrap();
            peer
        });
        assert_eq!(
            io.read_u8().await.unwrap(),
            b'b',
            "after the first bytes the peer may stay quiet"
        );
        drop(later.await.unwrap());
    }

    fn policy(trusted: &str) -> ProxyPolicy {
        ProxyPolicy {
            trusted: vec![crate::auth::Cidr::parse(trusted).unwrap()],
            header_timeout: std::time::Duration::from_secs(5),
        }
    }

    async fn proxied(
        wire: &[u8],
        peer: &str,
        policy: Option<&ProxyPolicy>,
    ) -> Result<(Vec<u8>, std::net::SocketAddr), ProxyRefusal> {
        use tokio::io::AsyncReadExt;
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(wire).await.unwrap();
        drop(client);
        let (mut io, addr) = accept_proxied(server, peer.parse().unwrap(), policy).await?;
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        Ok((rest, addr))
    }

    #[tokio::test]
    async fn a_trusted_header_names_the_client_and_the_rest_is_kept() {
        let p = policy("10.0.0.0/8");
        let (rest, addr) = proxied(
            b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 1935\r\n\x03rtmp",
            "10.1.1.1:4000",
            Some(&p),
        )
        .await
        .unwrap();
        assert_eq!(
            (rest.as_slice(), addr),
            (&b"\x03rtmp"[..], "203.0.113.7:5000".parse().unwrap())
        );
        let (rest, addr) = proxied(b"GET / HTTP/1.1\r\n", "10.1.1.1:4000", Some(&p)).await.unwrap();
        assert_eq!(
            (rest.as_slice(), addr),
            (&b"GET / HTTP/1.1\r\n"[..], "10.1.1.1:4000".parse().unwrap()),
            "a trusted peer without a header is its own client"
        );
    }

    #[tokio::test]
    async fn an_untrusted_header_is_refused_and_plain_bytes_pass() {
        let p = policy("10.0.0.0/8");
        let refused = proxied(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "192.0.2.1:1", Some(&p)).await;
        assert!(matches!(refused, Err(ProxyRefusal::Untrusted)), "{refused:?}");
        let (rest, addr) = proxied(b"POST /live/a.flv", "192.0.2.1:1", Some(&p)).await.unwrap();
        assert_eq!(
            (rest.as_slice(), addr),
            (&b"POST /live/a.flv"[..], "192.0.2.1:1".parse().unwrap())
        );
        let (rest, _) = proxied(b"PROXY TCP4 x", "192.0.2.1:1", None).await.unwrap();
        assert_eq!(
            rest, b"PROXY TCP4 x",
            "a listener without PROXY protocol reads nothing ahead"
        );
    }

    #[tokio::test]
    async fn a_malformed_or_endless_header_is_refused() {
        let p = policy("10.0.0.0/8");
        let bad = proxied(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", "10.0.0.2:1", Some(&p)).await;
        assert!(matches!(bad, Err(ProxyRefusal::Malformed(_))), "{bad:?}");
        let mut endless = b"PROXY ".to_vec();
        endless.extend_from_slice(&[b'1'; 300]);
        let endless = proxied(&endless, "10.0.0.2:1", Some(&p)).await;
        assert!(matches!(endless, Err(ProxyRefusal::Malformed(_))), "{endless:?}");
        let closed = proxied(b"PROX", "10.0.0.2:1", Some(&p)).await;
        assert!(matches!(closed, Err(ProxyRefusal::Closed)), "{closed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let p = policy("10.0.0.0/8");
        let (_client, server) = tokio::io::duplex(64);
        let res = accept_proxied(server, "10.0.0.2:1".parse().unwrap(), Some(&p)).await;
        assert!(matches!(res, Err(ProxyRefusal::Timeout(_))), "{:?}", res.err());
    }
}
