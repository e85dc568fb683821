//! The one shutdown signal of a running server, and everything it must end: every accepted
//! connection (on every listener) and every revocation stream.
//!
//! Shutdown has two steps. [`Shutdown::begin`] is the signal: health goes NOT_SERVING, streams
//! send a last checkpoint and end, tonic stops accepting and lets in-flight RPCs finish. Some
//! connections never end by themselves (a client's `grpc.health.v1.Health/Watch`, an idle
//! keep-alive scrape), so after the grace period [`Shutdown::close_all`] makes every tracked
//! connection fail its next read or write and waits until all of them and all streams are
//! gone: `Server::run` returns with nothing still holding the store.
//!
//! The connection limits live here too, since this is where connections are accepted: at most
//! `max_connections` per listener (one accepted beyond it is closed at once), and a new
//! connection must send its first bytes (the HTTP/2 preface, or the TLS ClientHello) within
//! `handshake_timeout` or it is closed.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::{task_tracker::TaskTrackerToken, TaskTracker},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::telemetry::Throttle;

/// The HTTP/2 client preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"): reading this many bytes
/// ends a connection's handshake deadline. Over TLS the ClientHello is longer than this.
const PREFACE_BYTES: usize = 24;
/// How long accepting pauses after an error such as EMFILE, which would otherwise repeat at once.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What a listener lets in.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

#[derive(Clone, Default)]
pub struct Shutdown {
    /// Cancelled when shutdown begins.
    begun: CancellationToken,
    /// Cancelled when the grace period is over: tracked connections fail from then on.
    kill: CancellationToken,
    /// Tracked connections, the tail's tasks and revocation streams.
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn begin(&self) {
        self.begun.cancel();
    }

    /// Whether shutdown has begun (health is NOT_SERVING from then on).
    pub fn has_begun(&self) -> bool {
        self.begun.is_cancelled()
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

    /// A token that shutdown waits for as it waits for a task: held by what outlives its task
    /// (a revocation stream's body, polled by hyper's task for the HTTP/2 stream) until dropped.
    pub fn hold(&self) -> TaskTrackerToken {
        self.tracker.token()
    }

    /// The listener's connections, tracked and limited. Accept errors (EMFILE, a connection
    /// reset before it was accepted) are logged and skipped, so that they never end serving.
    pub fn incoming(
        &self,
        listener: TcpListener,
        limits: ConnectionLimits,
        refusals: Throttle,
    ) -> impl Stream<Item = io::Result<Tracked>> + Send + 'static {
        let this = self.clone();
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        TcpListenerStream::new(listener)
            .then(move |accepted| {
                let refusals = refusals.clone();
                let admitted = accepted.map(|stream| (stream, slots.clone().try_acquire_owned()));
                async move {
                    match admitted {
                        Ok((stream, Ok(slot))) => Some((stream, slot)),
                        Ok((stream, Err(_))) => {
                            if refusals.allow() {
                                let peer = stream.peer_addr().ok();
                                tracing::info!(
                                    ?peer,
                                    max_connections = limits.max_connections,
                                    "connection refused: at the connection limit"
                                );
                            }
                            None
                        }
                        Err(error) => {
                            if refusals.allow() {
                                tracing::warn!(%error, "accepting a connection failed");
                            }
                            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                            None
                        }
                    }
                }
            })
            .filter_map(move |admitted| {
                let tracked = admitted.map(|(stream, slot)| {
                    Ok(this.track_limited(stream, slot, limits.handshake_timeout))
                });
                async move { tracked }
            })
    }

    /// A connection that is only tracked (no limits): for the metrics endpoint.
    pub fn track(&self, stream: TcpStream) -> Tracked {
        Tracked {
            io: stream,
            killed: Box::pin(self.kill.clone().cancelled_owned()),
            handshake: None,
            read: 0,
            _slot: None,
            _token: self.tracker.token(),
        }
    }

    fn track_limited(
        &self,
        stream: TcpStream,
        slot: OwnedSemaphorePermit,
        handshake_timeout: Duration,
    ) -> Tracked {
        Tracked {
            handshake: Some(Box::pin(tokio::time::sleep(handshake_timeout))),
            _slot: Some(slot),
            ..self.track(stream)
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

/// A TCP connection that fails once shutdown kills it, or when it has not sent its first bytes
/// by its handshake deadline, and counts as open (in the tracker and in its listener's
/// connection slots) until dropped.
pub struct Tracked {
    io: TcpStream,
    /// Boxed so that `Tracked` is `Unpin`, as hyper and tonic require of a connection.
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Until [`PREFACE_BYTES`] have been read.
    handshake: Option<Pin<Box<Sleep>>>,
    read: usize,
    _slot: Option<OwnedSemaphorePermit>,
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
        if let Some(deadline) = self.handshake.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no handshake within the server's handshake timeout",
                )));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.handshake.is_some() {
            self.read += buf.filled().len() - before;
            if self.read >= PREFACE_BYTES {
                self.handshake = None;
            }
        }
        read
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
