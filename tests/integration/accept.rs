//! The one accept path: every listener's accepted sockets have TCP_NODELAY set. The server runs
//! in this process, so its side of each connection is one of our own file descriptors: the
//! test finds them (a socket whose local port is the listener's and that has a peer) and asks
//! the kernel with getsockopt. No timing.

use std::os::fd::RawFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use crate::common::*;

/// The local port of socket `fd` and whether it is connected to a peer; `None` when `fd` is
/// not an IPv4 socket.
fn socket_ends(fd: RawFd) -> Option<(u16, bool)> {
    // SAFETY: the address buffers are sized for IPv4 and their lengths passed with them;
    // an fd that is not a socket (or closed meanwhile) only makes the calls fail.
    unsafe {
        let mut local: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let named = libc::getsockname(fd, (&raw mut local).cast(), &mut len);
        if named != 0 || local.sin_family != libc::AF_INET as libc::sa_family_t {
            return None;
        }
        let mut peer: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let connected = libc::getpeername(fd, (&raw mut peer).cast(), &mut len) == 0;
        Some((u16::from_be(local.sin_port), connected))
    }
}

fn nodelay(fd: RawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a c_int and `len` its size, as TCP_NODELAY takes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt(TCP_NODELAY) on fd {fd}");
    value != 0
}

/// This process's sockets accepted on `port` (the server's side of each connection), with
/// whether each has TCP_NODELAY set.
pub fn accepted_on(port: u16) -> Vec<(RawFd, bool)> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|fd| socket_ends(*fd) == Some((port, true)))
        .map(|fd| (fd, nodelay(fd)))
        .collect()
}

/// Asserts that connections were accepted on `addr`'s port and that each has TCP_NODELAY.
pub fn assert_nodelay(what: &str, addr: std::net::SocketAddr) {
    let accepted = accepted_on(addr.port());
    assert!(!accepted.is_empty(), "no accepted {what} connection found");
    let delayed: Vec<_> = accepted.iter().filter(|(_, on)| !on).collect();
    assert!(
        delayed.is_empty(),
        "{what}: accepted sockets without TCP_NODELAY (fd, nodelay): {delayed:?} of {accepted:?}"
    );
}

async fn health_check(channel: Channel) {
    let mut probe = tonic_health::pb::health_client::HealthClient::new(channel);
    probe
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers");
}

#[tokio::test]
async fn every_listener_sets_tcp_nodelay_on_accepted_connections() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |d| {
        let mut config = test_config(d);
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        config.health_listen = Some("127.0.0.1:0".parse().unwrap());
        config
    })
    .await;

    // An answer on each connection means the server has accepted it; each stays open.
    let grpc = server.channel().await;
    health_check(grpc.clone()).await;
    let health_addr = server.health_addr.unwrap();
    let health = Channel::from_shared(format!("http://{health_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    health_check(health.clone()).await;
    let metrics_addr = server.metrics_addr.unwrap();
    let mut scrape = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: zsc\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    scrape.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    assert_nodelay("gRPC", server.addr);
    assert_nodelay("health", health_addr);
    assert_nodelay("metrics", metrics_addr);
    drop((grpc, health, scrape));
}
