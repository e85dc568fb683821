//! Open connections by peer address, so that something other than the task that serves a
//! connection can close it.
//!
//! A revocation stream that HTTP/2 flow control stalled is never polled again by hyper (it
//! waits for window with a frame queued), and tonic offers no per-connection GOAWAY: closing
//! the stream's connection is the only way left to end it and free what it holds
//! (`api/stall.rs` decides when). A closed connection fails its next read and write, as one
//! does at the end of shutdown's grace period (`shutdown.rs`).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use tokio_util::sync::CancellationToken;

/// Cheap to clone; clones share the table.
#[derive(Clone, Default)]
pub struct Peers {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each peer's open connections (more than one only when a client reaches two of our
    /// listeners from the same address and port), by an id of their own.
    open: Mutex<HashMap<SocketAddr, Vec<(u64, CancellationToken)>>>,
    next_id: AtomicU64,
}

impl Peers {
    /// Lists a connection from `peer` until the returned guard is dropped; `close` is what
    /// [`Peers::close`] cancels.
    pub fn register(&self, peer: SocketAddr, close: CancellationToken) -> Registered {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut open = self.inner.open.lock().expect("lock poisoned");
        open.entry(peer).or_default().push((id, close));
        Registered {
            peers: self.clone(),
            peer,
            id,
        }
    }

    /// Closes every open connection from `peer`; false if there was none.
    pub fn close(&self, peer: SocketAddr) -> bool {
        let open = self.inner.open.lock().expect("lock poisoned");
        let Some(connections) = open.get(&peer) else {
            return false;
        };
        for (_, close) in connections {
            close.cancel();
        }
        true
    }
}

/// A connection's place in [`Peers`]; removed on drop.
pub struct Registered {
    peers: Peers,
    peer: SocketAddr,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut open = self.peers.inner.open.lock().expect("lock poisoned");
        if let Some(connections) = open.get_mut(&self.peer) {
            connections.retain(|(id, _)| *id != self.id);
            if connections.is_empty() {
                open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_cancels_the_peers_connections_until_they_are_dropped() {
        let peers = Peers::default();
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let (ta, tb) = (CancellationToken::new(), CancellationToken::new());
        let registered = peers.register(a, ta.clone());
        let _other = peers.register(b, tb.clone());
        assert!(peers.close(a));
        assert!(ta.is_cancelled() && !tb.is_cancelled());
        drop(registered);
        assert!(!peers.close(a), "a dropped connection is no longer listed");
    }
}
