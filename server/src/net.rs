//! Socket helpers: vectored writes of shared buffers, and connection wrappers that bound how
//! long a peer may stall a write or keep quiet before its first request.

use std::io::IoSlice;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Most buffers passed to one `writev`.
const MAX_IOVECS: usize = 256;

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
        let slices: Vec<IoSlice<'_>> = bufs[first..end].iter().map(|b| IoSlice::new(b)).collect();
        let mut n = w.write_vectored(&slices).await?;
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

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstReadDeadline<IO> {
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
}
