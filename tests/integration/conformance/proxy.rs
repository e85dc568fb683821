//! A TCP proxy the kit controls, between a Verifier and zsc: it passes bytes, holds back what
//! the server sends (a buffering middlebox), or cuts every connection and refuses new ones (a
//! dropped stream).

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Pass,
    /// Read nothing more from the server and forward nothing to the client: the bytes back up
    /// in the kernel's buffers and the server's HTTP/2 flow control, as behind a stalled proxy.
    Hold,
    /// Close every connection, and every new one as soon as it is accepted.
    Cut,
}

pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// A proxy on 127.0.0.1:0 to `upstream`, passing bytes.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watching) = watch::channel(Mode::Pass);
        let task = tokio::spawn(accept(listener, upstream, watching));
        Proxy { addr, mode, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Mode::Cut);
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    while let Ok((client, _)) = listener.accept().await {
        if *mode.borrow() == Mode::Cut {
            continue; // dropped: closed at once
        }
        tokio::spawn(connection(client, upstream, mode.clone()));
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // the server is down: the client sees its connection closed
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let mut held = mode.clone();
    let down = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = from_server.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            // While held, these bytes wait here and the server's next ones wait in the kernel.
            let _ = held.wait_for(|m| *m != Mode::Hold).await;
            to_client.write_all(&buffer[..n]).await?;
        }
    };
    let up = tokio::io::copy(&mut from_client, &mut to_server);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = mode.wait_for(|m| *m == Mode::Cut) => {}
    }
}
