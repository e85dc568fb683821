//! What one client may take: streams per connection, reset floods, connections, handshakes,
//! stalled bodies, slow calls and message size, each checked on the real server with a client
//! that misbehaves on purpose (raw HTTP/2 frames, or the `h2` crate driven by hand).

use std::{path::Path, time::Duration};

use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use zsc::server::Config;

use crate::common::*;

/// Waits long enough for anything that should happen in milliseconds, without hanging a test.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start_with(configure: impl FnOnce(&mut Config) + Send + 'static) -> TestServer {
    TestServer::start_with(tempfile::tempdir().unwrap(), move |dir: &Path| {
        let mut config = test_config(dir);
        configure(&mut config);
        config
    })
    .await
}

// ---- A raw HTTP/2 client: it sends what it likes, whatever the server's SETTINGS say. ----

const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_PING: u8 = 0x6;
const FRAME_GOAWAY: u8 = 0x7;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

struct RawH2 {
    tcp: TcpStream,
}

struct RawFrame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl RawFrame {
    /// The error code of a RST_STREAM or GOAWAY.
    fn error_code(&self) -> u32 {
        let at = if self.kind == FRAME_GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

impl RawH2 {
    async fn connect(server: &TestServer) -> RawH2 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut raw = RawH2 { tcp };
        raw.send(0x4, 0, 0, &[]).await; // an empty SETTINGS
        raw
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        // A server that has had enough closes the connection: later writes may fail.
        let _ = self.tcp.write_all(&frame).await;
    }

    /// Opens a stream (HEADERS with END_HEADERS, not END_STREAM): a call whose body never comes.
    async fn open(&mut self, stream: u32, path: &str) {
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "zsc"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            // HPACK literal without indexing, new name, no Huffman (all shorter than 127).
            block.push(0);
            for s in [name, value] {
                block.push(s.len() as u8);
                block.extend_from_slice(s.as_bytes());
            }
        }
        self.send(FRAME_HEADERS, 0x4, stream, &block).await;
    }

    /// The next frame, or None once the server closed the connection.
    async fn frame(&mut self) -> Option<RawFrame> {
        let mut header = [0u8; 9];
        self.tcp.read_exact(&mut header).await.ok()?;
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0; len];
        self.tcp.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes(header[5..9].try_into().unwrap()) & 0x7fff_ffff;
        Some(RawFrame {
            kind: header[3],
            stream,
            payload,
        })
    }

    /// Frames until `done` says so (or the connection ends); all of them.
    async fn frames_until(&mut self, mut done: impl FnMut(&RawFrame) -> bool) -> Vec<RawFrame> {
        let mut seen = Vec::new();
        tokio::time::timeout(PATIENCE, async {
            while let Some(frame) = self.frame().await {
                let stop = done(&frame);
                seen.push(frame);
                if stop {
                    return;
                }
            }
        })
        .await
        .expect("the server answered in time");
        seen
    }
}

const CHECK: &str = "/grpc.health.v1.Health/Check";

#[tokio::test]
async fn streams_beyond_max_concurrent_streams_are_refused() {
    let server = start_with(|c| c.limits.max_concurrent_streams = 4).await;
    let mut raw = RawH2::connect(&server).await;
    // Six calls whose bodies never come: four stay open, the fifth and sixth are refused.
    for stream in [1, 3, 5, 7, 9, 11] {
        raw.open(stream, CHECK).await;
    }
    let mut refused = Vec::new();
    let frames = raw
        .frames_until(|f| {
            if f.kind == FRAME_RST_STREAM {
                refused.push(f.stream);
            }
            refused.len() == 2
        })
        .await;
    let resets: Vec<(u32, u32)> = frames
        .iter()
        .filter(|f| f.kind == FRAME_RST_STREAM)
        .map(|f| (f.stream, f.error_code()))
        .collect();
    assert_eq!(
        resets,
        [(9, REFUSED_STREAM), (11, REFUSED_STREAM)],
        "only the streams past the limit are refused"
    );
}

#[tokio::test]
async fn a_client_that_keeps_getting_streams_reset_is_disconnected() {
    let server = start_with(|c| {
        c.limits.max_concurrent_streams = 1;
        c.limits.max_local_error_resets = 5;
    })
    .await;
    let mut raw = RawH2::connect(&server).await;
    // One open stream, then a flood of streams the server must refuse (each a local reset).
    for i in 0..50u32 {
        raw.open(1 + 2 * i, CHECK).await;
    }
    let frames = raw.frames_until(|f| f.kind == FRAME_GOAWAY).await;
    let goaway = frames.last().unwrap();
    assert_eq!(
        goaway.kind, FRAME_GOAWAY,
        "the connection is told to go away"
    );
    assert_eq!(goaway.error_code(), ENHANCE_YOUR_CALM);
    let refused = frames.iter().filter(|f| f.kind == FRAME_RST_STREAM).count();
    assert!(refused <= 5, "{refused} resets before the GOAWAY");
    // The server is fine.
    health(&server).await.unwrap();
}

async fn health(server: &TestServer) -> Result<(), tonic::Status> {
    HealthClient::new(server.channel().await)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
}

/// True once the server has closed `tcp` (EOF or reset), waiting up to PATIENCE.
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                // The server's SETTINGS and the like, on a connection it then closes.
                Ok(_) => continue,
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_and_a_freed_slot_is_reused() {
    let server = start_with(|c| c.limits.max_connections = 2).await;
    let first = HealthClient::new(server.channel().await);
    let mut second = HealthClient::new(server.channel().await);
    second.check(HealthCheckRequest::default()).await.unwrap();

    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut third).await,
        "a third connection is closed"
    );
    second.check(HealthCheckRequest::default()).await.unwrap();

    drop(first);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while health(&server).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed connection's slot is never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let server = start_with(|c| c.limits.handshake_timeout = Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();

    // A client that did its handshake may then stay idle for longer than that.
    let (mut client, connection) = h2_client(&server).await;
    tokio::time::sleep(Duration::from_millis(900)).await;

    assert!(closed_by_server(&mut silent).await);
    let (status, _) = call(&mut client, CHECK, &grpc_frame(&[]), true).await;
    assert_eq!(status, Code::Ok);
    drop(connection);
}

#[tokio::test]
async fn a_connection_that_leaves_a_keepalive_ping_unanswered_is_closed() {
    let server = start_with(|c| {
        c.limits.keepalive_interval = Duration::from_millis(200);
        c.limits.keepalive_timeout = Duration::from_millis(200);
    })
    .await;
    // The raw client reads frames but never answers a PING.
    let mut raw = RawH2::connect(&server).await;
    let mut pinged = false;
    tokio::time::timeout(PATIENCE, async {
        while let Some(frame) = raw.frame().await {
            pinged |= frame.kind == FRAME_PING;
        }
    })
    .await
    .expect("the server closed the connection");
    assert!(pinged, "the server sent a PING before closing");
}

// ---- Stalled bodies and slow calls, with the h2 crate driven by hand. ----

async fn h2_client(
    server: &TestServer,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, connection)
}

/// A gRPC message frame header declaring `len` bytes, then `body`.
fn grpc_frame_declaring(len: u32, body: &[u8]) -> Bytes {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(body);
    bytes.into()
}

fn grpc_frame(body: &[u8]) -> Bytes {
    grpc_frame_declaring(body.len() as u32, body)
}

/// Sends `body` (ending the request only if `end`) and returns the call's status code and
/// message, from a trailers-only response or the trailers.
async fn call(
    client: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    body: &Bytes,
    end: bool,
) -> (Code, String) {
    call_as(client, None, path, body, end).await
}

async fn call_as(
    client: &mut h2::client::SendRequest<Bytes>,
    token: Option<&str>,
    path: &str,
    body: &Bytes,
    end: bool,
) -> (Code, String) {
    let mut request = http::Request::post(format!("http://zsc{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(()).unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    let (response, mut send) = ready.send_request(request, false).unwrap();
    send.send_data(body.clone(), end).unwrap();
    let outcome = tokio::time::timeout(PATIENCE, async move {
        let response = response.await.unwrap();
        let (parts, mut body) = response.into_parts();
        let mut headers = parts.headers;
        if !headers.contains_key("grpc-status") {
            while let Some(data) = body.data().await {
                let _ = data;
            }
            headers = body.trailers().await.unwrap().expect("trailers");
        }
        // The request half is kept open until here, as a stalled client would.
        drop(send);
        let status = tonic::Status::from_header_map(&headers).expect("a grpc-status");
        (status.code(), status.message().to_owned())
    })
    .await;
    outcome.expect("the call ended in time")
}

#[tokio::test]
async fn a_request_body_that_stalls_is_ended_by_the_body_read_timeout() {
    let server = start_with(|c| {
        c.limits.body_read_timeout = Duration::from_millis(300);
        c.limits.request_timeout = Duration::from_secs(3600);
    })
    .await;
    let (mut client, _connection) = h2_client(&server).await;
    // A 100-byte message of which 10 bytes come, then nothing.
    let (status, message) = call(
        &mut client,
        CHECK,
        &grpc_frame_declaring(100, &[0; 10]),
        false,
    )
    .await;
    assert_eq!(status, Code::DeadlineExceeded, "{message}");
    assert!(message.contains("body read timeout"), "{message}");
    // The connection still serves.
    let (status, _) = call(&mut client, CHECK, &grpc_frame(&[]), true).await;
    assert_eq!(status, Code::Ok);
}

#[tokio::test]
async fn a_call_without_a_response_by_the_request_timeout_is_deadline_exceeded() {
    let server = start_with(|c| {
        c.limits.body_read_timeout = Duration::from_secs(3600);
        c.limits.request_timeout = Duration::from_millis(300);
    })
    .await;
    let (mut client, _connection) = h2_client(&server).await;
    for path in [CHECK, "/zsc.v1.KeyService/ValidateKey"] {
        let body = grpc_frame_declaring(100, &[0; 10]);
        let token = Some(server.operator_token.as_str());
        let (status, message) = call_as(&mut client, token, path, &body, false).await;
        assert_eq!(status, Code::DeadlineExceeded, "{path}: {message}");
        assert!(message.contains("request timeout"), "{message}");
    }
}

#[tokio::test]
async fn a_started_stream_is_not_cut_by_the_request_timeout() {
    let server = start_with(|c| {
        c.limits.request_timeout = Duration::from_millis(200);
        c.watch.heartbeat = Duration::from_millis(100);
    })
    .await;
    let mut stream = server.watch(watch_from(None)).await.unwrap();
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        next(&mut stream).await.expect("the stream goes on");
    }
}

#[tokio::test]
async fn a_body_declaring_four_mebibytes_is_refused_at_its_header() {
    // The body timeout is long: the refusal must not wait for the rest of the body.
    let server = start_with(|c| c.limits.body_read_timeout = Duration::from_secs(3600)).await;
    let (mut client, _connection) = h2_client(&server).await;
    let (status, message) = call(
        &mut client,
        CHECK,
        &grpc_frame_declaring(4 << 20, &[0; 60 * 1024]),
        false,
    )
    .await;
    assert_eq!(status, Code::ResourceExhausted, "{message}");
    assert!(message.contains("65536-byte limit"), "{message}");
}

#[tokio::test]
async fn a_too_big_message_to_health_is_resource_exhausted_on_every_listener() {
    let server = start_with(|c| c.health_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let huge = HealthCheckRequest {
        service: "x".repeat(70 * 1024),
    };
    let health_only =
        tonic::transport::Channel::from_shared(format!("http://{}", server.health_addr.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    for channel in [server.channel().await, health_only] {
        let mut client = HealthClient::new(channel);
        let message = expect_code(client.check(huge.clone()).await, Code::ResourceExhausted);
        assert!(message.contains("65536"), "{message}");
        // The same connection keeps serving.
        client.check(HealthCheckRequest::default()).await.unwrap();
    }
}
