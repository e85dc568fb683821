//! The one shutdown signal of a running server, and everything it must end: every accepted
//! connection (on every listener) and every revocation-stream task.
//!
//! Shutdown has two steps. [`Shutdown::begin`] is the signal: health goes NOT_SERVING, streams
//! send a last checkpoint and end, tonic stops accepting and lets in-flight RPCs finish. Some
//! connections never end by themselves (a client's `grpc.health.v1.Health/Watch`, an idle
//! keep-alive scrape), so after the grace period [`Shutdown::close_all`] makes every tracked
//! connection fail its next read or write and waits until all of them and all stream tasks are
//! gone: `Server::run` returns with nothing still holding the store.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::{task_tracker::TaskTrackerToken, TaskTracker},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

#[derive(Clone, Default)]
pub struct Shutdown {
    /// Cancelled when shutdown begins.
    begun: CancellationToken,
    /// Cancelled when the grace period is over: tracked connections fail from then on.
    kill: CancellationToken,
    /// Tracked connections and stream tasks.
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn begin(&self) {
        self.begun.cancel();
    }

    /// Completes once shutdown has begun.
    pub async fn begun(&self) {
        self.begun.cancelled().await
    }

    /// Runs a task that shutdown waits for (it must end once shutdown begins).
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// The listener's connections, tracked.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<Tracked>> + Send + 'static {
        let this = self.clone();
        TcpListenerStream::new(listener)
            .map(move |accepted| accepted.map(|stream| this.track(stream)))
    }

    pub fn track(&self, stream: TcpStream) -> Tracked {
        Tracked {
            io: stream,
            killed: Box::pin(self.kill.clone().cancelled_owned()),
            _token: self.tracker.token(),
        }
    }

    /// Ends every connection still open and waits (up to `wait`) until they and every stream
    /// task have let go.
    pub async fn close_all(&self, wait: Duration) {
        self.kill.cancel();
        self.tracker.close();
        if tokio::time::timeout(wait, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.tracker.len(),
                "connections or streams still open after shutdown"
            );
        }
    }
}

/// A TCP connection that fails once shutdown kills it, and counts as open until dropped.
pub struct Tracked {
    io: TcpStream,
    /// Boxed so that `Tracked` is `Unpin`, as hyper and tonic require of a connection.
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    _token: TaskTrackerToken,
}

impl Tracked {
    /// The error a killed connection answers every read and write with.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "zsc is shutting down",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connected for Tracked {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}
