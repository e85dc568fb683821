//! A TCP proxy in front of each etcd member's peer port, to cut a member off from its peers or
//! slow its traffic (as etcd's robustness tests do with their own proxy).
//!
//! Every member dials its peers at their advertised URLs, which are these proxies. A member's
//! own proxy sees what its peers send it; what it sends its peers passes through theirs, on
//! connections whose HTTP request head carries its advertised URL (`X-PeerURLs`). So a
//! connection is from a known member when its head names that member's proxy port, and it is
//! held when either end is cut off. Held bytes are kept, not dropped: TCP does the same to a
//! connection across a partition that heals before it times out.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The faults every member's proxy applies.
pub struct Partition {
    /// Member i is cut off from its peers.
    cut: Vec<AtomicBool>,
    /// Each chunk to or from member i waits this long (ms).
    delay_ms: Vec<AtomicU64>,
    /// The proxy port of each member, once bound.
    ports: Mutex<Vec<u16>>,
    /// Connections whose sender was named, and all connections.
    named: AtomicU64,
    connections: AtomicU64,
}

impl Partition {
    pub fn new(members: usize) -> Arc<Self> {
        Arc::new(Partition {
            cut: (0..members).map(|_| AtomicBool::new(false)).collect(),
            delay_ms: (0..members).map(|_| AtomicU64::new(0)).collect(),
            ports: Mutex::new(vec![0; members]),
            named: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        })
    }

    pub fn cut(&self, member: usize, cut: bool) {
        self.cut[member].store(cut, Ordering::SeqCst);
    }

    /// (connections whose sender the proxies named, all connections) so far.
    pub fn named(&self) -> (u64, u64) {
        let named = self.named.load(Ordering::SeqCst);
        (named, self.connections.load(Ordering::SeqCst))
    }

    pub fn delay(&self, member: usize, delay: Duration) {
        self.delay_ms[member].store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Starts member `member`'s proxy, forwarding to its peer port `target`; returns the port
    /// to advertise. Needs a tokio runtime context (`Handle::enter`).
    pub fn proxy(self: &Arc<Self>, member: usize, target: u16) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a proxy");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("bound").port();
        self.ports.lock().unwrap()[member] = port;
        let listener = TcpListener::from_std(listener).expect("in a runtime");
        let partition = self.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let partition = partition.clone();
                tokio::spawn(async move {
                    let _ = partition.forward(inbound, member, target).await;
                });
            }
        });
        port
    }

    /// One connection to member `to`: its first chunk names the sender, then both directions
    /// are pumped through the gate.
    async fn forward(
        self: Arc<Self>,
        mut inbound: TcpStream,
        to: usize,
        target: u16,
    ) -> std::io::Result<()> {
        let mut first = vec![0u8; 16 * 1024];
        let n = inbound.read(&mut first).await?;
        first.truncate(n);
        let from = self.sender(&first, to);
        self.connections.fetch_add(1, Ordering::SeqCst);
        self.named
            .fetch_add(from.is_some() as u64, Ordering::SeqCst);
        let mut outbound = TcpStream::connect(("127.0.0.1", target)).await?;
        self.gate(from, Some(to)).await;
        outbound.write_all(&first).await?;
        let (in_read, in_write) = inbound.into_split();
        let (out_read, out_write) = outbound.into_split();
        let ends = [from, Some(to)];
        tokio::select! {
            r = self.clone().pump(in_read, out_write, ends) => r,
            r = self.clone().pump(out_read, in_write, ends) => r,
        }
    }

    /// The member whose advertised URL the request head names, other than the receiver.
    fn sender(&self, head: &[u8], to: usize) -> Option<usize> {
        let head = String::from_utf8_lossy(head);
        let ports = self.ports.lock().unwrap();
        (0..ports.len())
            .filter(|&m| m != to)
            .find(|&m| head.contains(&format!("127.0.0.1:{}", ports[m])))
    }

    async fn pump(
        self: Arc<Self>,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        ends: [Option<usize>; 2],
    ) -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            self.gate(ends[0], ends[1]).await;
            to.write_all(&buf[..n]).await?;
        }
    }

    /// Waits while either end is cut off, then for the larger of their delays.
    async fn gate(&self, a: Option<usize>, b: Option<usize>) {
        let ends = || [a, b].into_iter().flatten();
        while ends().any(|m| self.cut[m].load(Ordering::SeqCst)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delay = ends()
            .map(|m| self.delay_ms[m].load(Ordering::SeqCst))
            .max()
            .unwrap_or(0);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
}
