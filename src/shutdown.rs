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
//! Connections are accepted in `accept.rs` (the one accept path), which applies the limits:
//! at most `max_connections` per listener (one accepted beyond it is closed at once), and a new
//! connection must send its first bytes (the HTTP/2 preface, or the TLS ClientHello) within
//! `handshake_timeout` or it is closed ([`Tracked`] keeps that deadline).

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::OwnedSemaphorePermit,
    time::Sleep,
};
use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::{task_tracker::TaskTrackerToken, TaskTracker},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::peers::{Peers, Registered};

/// The HTTP/2 client preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"): reading this many bytes
/// ends a connection's handshake deadline. Over TLS the ClientHello is longer than this.
const PREFACE_BYTES: usize = 24;

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
    /// Tracked connections by peer, so that one can be closed on its own (`peers.rs`).
    peers: Peers,
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

    /// Every tracked connection, by peer address.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// A connection that is only tracked (no limits): for the metrics endpoint. Connections
    /// come in through `accept.rs`, the one accept path.
    pub(crate) fn track(&self, stream: TcpStream) -> Tracked {
        let close = self.kill.child_token();
        let listed = stream
            .peer_addr()
            .ok()
            .map(|peer| self.peers.register(peer, close.clone()));
        Tracked {
            io: stream,
            killed: Box::pin(close.cancelled_owned()),
            _listed: listed,
            handshake: None,
            read: 0,
            _slot: None,
            _token: self.tracker.token(),
        }
    }

    /// A connection that holds one of its listener's `slot`s and must send its first bytes
    /// within `handshake_timeout`.
    pub(crate) fn track_limited(
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

/// A TCP connection that fails once shutdown kills it or [`Peers::close`] closes it, or when it has not sent its first bytes
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
    _listed: Option<Registered>,
}

impl Tracked {
    /// The error a killed connection answers every read and write with.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by zsc (shutting down, or every stream on it stalled)",
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
