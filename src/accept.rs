//! The one accept path: every connection on every listener (gRPC, the plaintext health
//! listener, metrics) comes in here, and only here is a socket turned into a connection.
//!
//! For each accepted socket, in order:
//! 1. `TCP_NODELAY` is set. tonic sets it only on listeners it binds itself, and we hand it
//!    accepted sockets (`serve_with_incoming_shutdown`); without it a small answer waits for the
//!    client's delayed ACK (Nagle): measured from a grpc-java client, 20-25% of ValidateKey
//!    calls took an extra ~40 ms.
//! 2. The listener's connection limit: at most `max_connections` open at once (one beyond it
//!    is closed at once). Per-address limits belong beside it: [`Accept::admit`] has the
//!    peer's address.
//! 3. The connection is tracked for shutdown ([`Shutdown`]), with its handshake deadline.
//! 4. On a TLS listener, the TLS handshake, in a task of its own (a slow client never holds up
//!    the next accept), with the configuration current at that moment ([`ServerTls`]): a
//!    reloaded certificate serves new connections while open ones keep theirs. tonic then
//!    serves plain streams.
//!
//! Accept errors (EMFILE, a connection reset before it was accepted) are logged and skipped,
//! so that they never end serving.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, Semaphore},
};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::either::Either;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::shutdown::{ConnectionLimits, Shutdown, Tracked};
use crate::telemetry::Throttle;
use crate::tls::ServerTls;

/// How long accepting pauses after an error such as EMFILE, which would otherwise repeat at once.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Accepted connections waiting for the server to take them.
const BACKLOG: usize = 64;

/// How one listener accepts.
#[derive(Clone)]
pub struct Accept {
    pub shutdown: Shutdown,
    /// `None`: tracked for shutdown only, with no limit or deadline (the metrics endpoint).
    pub limits: Option<ConnectionLimits>,
    /// The budget for log lines a client can cause at will.
    pub refusals: Throttle,
    /// Terminate TLS on this listener.
    pub tls: Option<ServerTls>,
}

impl Accept {
    /// The listener's connections, until shutdown begins or the receiver is dropped.
    pub fn incoming(self, listener: TcpListener) -> ReceiverStream<io::Result<Connection>> {
        let (sender, receiver) = mpsc::channel(BACKLOG);
        let shutdown = self.shutdown.clone();
        shutdown.spawn(self.accept_forever(listener, sender));
        ReceiverStream::new(receiver)
    }

    async fn accept_forever(
        self,
        listener: TcpListener,
        sender: mpsc::Sender<io::Result<Connection>>,
    ) {
        let slots = self
            .limits
            .map(|limits| Arc::new(Semaphore::new(limits.max_connections)));
        loop {
            let accepted = tokio::select! {
                () = self.shutdown.begun() => return,
                () = sender.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if self.refusals.allow() {
                        tracing::warn!(%error, "accepting a connection failed");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Some(tracked) = self.admit(stream, peer, slots.as_ref()) else {
                continue;
            };
            match &self.tls {
                None => {
                    let connection = Connection {
                        io: Either::Left(tracked),
                    };
                    if sender.send(Ok(connection)).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    tokio::spawn(handshake(tls.clone(), tracked, peer, sender.clone()));
                }
            }
        }
    }

    /// Sets `TCP_NODELAY`, applies the listener's limit and tracks the connection; `None` when
    /// it is refused (and closed, by dropping it).
    fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        slots: Option<&Arc<Semaphore>>,
    ) -> Option<Tracked> {
        if let Err(error) = stream.set_nodelay(true) {
            if self.refusals.allow() {
                tracing::warn!(%error, %peer, "cannot set TCP_NODELAY on a connection");
            }
        }
        let (Some(limits), Some(slots)) = (self.limits, slots) else {
            return Some(self.shutdown.track(stream));
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(
                self.shutdown
                    .track_limited(stream, slot, limits.handshake_timeout),
            ),
            Err(_) => {
                if self.refusals.allow() {
                    tracing::info!(
                        %peer,
                        max_connections = limits.max_connections,
                        "connection refused: at the connection limit"
                    );
                }
                None
            }
        }
    }
}

/// Hands the connection over once its TLS handshake is done; a failed one is closed.
async fn handshake(
    tls: ServerTls,
    tracked: Tracked,
    peer: SocketAddr,
    sender: mpsc::Sender<io::Result<Connection>>,
) {
    match tls.handshake(tracked).await {
        Ok(stream) => {
            let connection = Connection {
                io: Either::Right(Box::new(stream)),
            };
            let _ = sender.send(Ok(connection)).await;
        }
        Err(error) => tracing::debug!(%error, %peer, "TLS handshake failed"),
    }
}

/// An accepted connection, as every server of ours reads and writes it: plain, or TLS
/// terminated here.
pub struct Connection {
    io: Either<Tracked, Box<TlsStream<Tracked>>>,
}

impl Connection {
    fn tcp(&self) -> &Tracked {
        match &self.io {
            Either::Left(tracked) => tracked,
            Either::Right(tls) => tls.get_ref().0,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.tcp().connect_info().remote_addr
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp().connect_info()
    }
}
