//! The send timeout: a connection whose client takes none of the bytes
//! the server is sending for [`SEND_TIMEOUT`] is closed (as nginx's
//! `send_timeout` does).
//!
//! A client that opens a live stream and never reads would otherwise hold
//! its connection, its place among the live streams and the bytes queued
//! for it for ever: no heartbeat gets out to find it gone. `Watched`
//! wraps a connection's socket and notes when a write first finds the
//! socket full; `Progress::stalled` resolves once no write has gone
//! through for the timeout since then. The clock restarts with every write
//! that goes through: a client that reads keeps its connection, unless it
//! takes so little that the kernel does not call its socket writable
//! again within the timeout (about a third of the send buffer), as with
//! nginx. WebSockets have their own rule (pings).

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Longest a client may leave the server's bytes untaken before its
/// connection is closed: three live-stream heartbeats
/// ([`crate::HEARTBEAT`]), as for a WebSocket that answers no ping.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(45);

/// Whether a connection's writes go through, shared by its socket
/// ([`Watched`]) and its connection task.
#[derive(Debug)]
pub(crate) struct Progress {
    /// When the connection was accepted: what stall times count from.
    epoch: Instant,
    /// When a write first found the socket full, in µs after `epoch` plus
    /// one; 0 while writes go through.
    blocked_since: AtomicU64,
    /// Told when a stall begins.
    blocked: Notify,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            blocked_since: AtomicU64::new(0),
            blocked: Notify::new(),
        }
    }
}

impl Progress {
    /// Notes a write that found the socket full (the first since the last
    /// one that went through starts the clock).
    fn blocked(&self) {
        if self.blocked_since.load(Ordering::Relaxed) == 0 {
            let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
            self.blocked_since.store(now + 1, Ordering::Relaxed);
            self.blocked.notify_one();
        }
    }

    /// Notes a write that went through.
    fn wrote(&self) {
        if self.blocked_since.load(Ordering::Relaxed) != 0 {
            self.blocked_since.store(0, Ordering::Relaxed);
        }
    }

    /// Resolves once writes have found the socket full, without one going
    /// through, for `timeout`.
    pub(crate) async fn stalled(&self, timeout: Duration) {
        loop {
            let since = self.blocked_since.load(Ordering::Relaxed);
            if since == 0 {
                // A stall begun since the load has stored a permit.
                self.blocked.notified().await;
                continue;
            }
            tokio::time::sleep_until(self.epoch + Duration::from_micros(since - 1) + timeout).await;
            if self.blocked_since.load(Ordering::Relaxed) == since {
                return;
            }
        }
    }
}

/// A connection's socket, reporting its writes' progress to a [`Progress`].
#[derive(Debug)]
pub(crate) struct Watched<IO> {
    io: IO,
    progress: Arc<Progress>,
}

impl<IO> Watched<IO> {
    /// Wraps `io`, reporting to `progress`.
    pub(crate) fn new(io: IO, progress: Arc<Progress>) -> Self {
        Self { io, progress }
    }

    /// Notes how a write went, and passes its result on.
    fn note<T>(&self, poll: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match &poll {
            Poll::Pending => self.progress.blocked(),
            Poll::Ready(_) => self.progress.wrote(),
        }
        poll
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.note(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that reads nothing stalls the writer; the stall is told after
    /// the timeout, and not while the peer takes bytes.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_takes_nothing_stalls_after_the_timeout() {
        let (near, mut far) = tokio::io::duplex(1024);
        let progress = Arc::new(Progress::default());
        let mut watched = Watched::new(near, Arc::clone(&progress));
        let timeout = Duration::from_secs(45);
        let writer = tokio::spawn(async move {
            let _ = watched.write_all(&[7u8; 64 * 1024]).await;
        });
        // The peer takes a little now and then: no stall.
        let mut buf = [0u8; 512];
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let read = tokio::io::AsyncReadExt::read(&mut far, &mut buf);
            assert!(read.await.unwrap() > 0);
            let stalled = tokio::time::timeout(Duration::from_secs(1), progress.stalled(timeout));
            assert!(stalled.await.is_err(), "a reading peer is not stalled");
        }
        // Then nothing: stalled once the timeout has passed since.
        let began = Instant::now();
        progress.stalled(timeout).await;
        assert!(began.elapsed() <= timeout, "{:?}", began.elapsed());
        writer.abort();
    }
}
