//! The IO wrapper that notices a client which accepts no bytes (a stalled stream).

use crate::conn::ConnInfo;
use hyper::rt::{Read, ReadBufCursor, Write};
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// Fails writes once the peer has accepted no byte for `timeout`.
///
/// Without it a client that stops reading holds its stream open for ever: the body is
/// not polled while hyper's buffer is full (so nothing more is buffered), but the
/// connection, its buffers and its place under `max_streams` stay taken. The timer is
/// created only when a write would block, so streams that keep up pay nothing for it.
pub struct StallGuard<T> {
    inner: T,
    timeout: Duration,
    blocked_since: Option<Pin<Box<Sleep>>>,
    info: Arc<ConnInfo>,
}

impl<T> StallGuard<T> {
    pub fn new(inner: T, timeout: Duration, info: Arc<ConnInfo>) -> Self {
        StallGuard {
            inner,
            timeout,
            blocked_since: None,
            info,
        }
    }

    /// Called when a write made progress (`Some(n)`, n > 0) or would block (`None`).
    fn progress(&mut self, cx: &mut Context<'_>, wrote: Option<usize>) -> Poll<io::Result<()>> {
        if wrote.is_some_and(|n| n > 0) {
            self.blocked_since = None;
            return Poll::Ready(Ok(()));
        }
        let timeout = self.timeout;
        let timer = self
            .blocked_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if timer.as_mut().poll(cx).is_ready() {
            self.info.mark_stalled();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client accepted no bytes within the stall timeout",
            )));
        }
        Poll::Pending
    }
}

impl<T: Read + Unpin> Read for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> StallGuard<T> {
    fn guard(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(n)) => {
                let _ = self.progress(cx, Some(n));
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.progress(cx, None) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
        }
    }
}

impl<T: Write + Unpin> Write for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => match self.progress(cx, None) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
            done => done,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
