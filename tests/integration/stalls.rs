//! Stalled revocation streams end by a clock: streams whose HTTP/2 window never opens, on
//! connections that still answer PINGs, give their slots back at once and, after a grace, their
//! connections are closed.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tonic::Code;
use zsc::proto::{watch_revocations_response::Event, *};

use crate::common::*;
use crate::operations::{sample, scrape};

const CONNECTIONS: usize = 10;
const STREAMS_EACH: usize = 5;
const STALLED: usize = CONNECTIONS * STREAMS_EACH;

/// A WatchRevocationsRequest from the head, framed as a gRPC message.
fn watch_frame() -> Bytes {
    let message = watch_from(None).encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    frame.freeze()
}

/// A connection whose initial stream window is 0 and that never sends WINDOW_UPDATE (h2 answers
/// PINGs by itself), with `STREAMS_EACH` revocation streams open on it. The returned task ends
/// when the server closes the connection.
async fn stalled_connection(server: &TestServer, token: &str) -> tokio::task::JoinHandle<()> {
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    let driving = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut streams = Vec::new();
    for _ in 0..STREAMS_EACH {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "http://{}/zsc.v1.KeyService/WatchRevocations",
                server.addr
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        body.send_data(watch_frame(), true).unwrap();
        streams.push(response);
        client = client.ready().await.unwrap();
    }
    tokio::spawn(async move {
        // The handles are held (never read) until the connection ends.
        let _held = (client, streams);
        let _ = driving.await;
    })
}

/// The value of `series`; 0 for a counter not yet counted.
async fn metric(server: &TestServer, series: &str) -> f64 {
    let text = scrape(server.metrics_addr.unwrap(), "/metrics").await;
    if !text.contains(&format!("{series} ")) {
        return 0.0;
    }
    sample(&text, series)
}

/// Waits (up to 30 s) until `series` reads `value`.
async fn until_metric(server: &TestServer, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = metric(server, series).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is {now}, not {value}, after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn streams_that_never_open_their_window_are_ended_by_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |d| {
        let mut config = test_config(d);
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        config.watch.stall_timeout = Duration::from_millis(500);
        config.watch.heartbeat = Duration::from_millis(100);
        // The stalled streams and one reader fill the account's cap.
        config.watch.max_subscribers_per_account = STALLED + 1;
        config
    })
    .await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;
    let desk = server.account("desk", Role::Consumer).await;

    // A subscriber that reads, beside them, is never taken for stalled.
    let mut reader = server
        .keys(&desk)
        .await
        .watch_revocations(watch_from(None))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut reader).await, Ok(Event::Checkpoint(_))));
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(stalled_connection(&server, &desk).await);
    }
    let ended = "zsc_revocation_subscribers_ended_total{reason=\"stalled\"}";
    until_metric(&server, ended, STALLED as f64).await;
    until_metric(&server, "zsc_revocation_subscribers", 1.0).await;
    for connection in connections {
        tokio::time::timeout(Duration::from_secs(30), connection)
            .await
            .expect("the server closed every stalled connection")
            .unwrap();
    }

    // The slots are free: the account may open streams again, and the reader still hears.
    let mut again = server
        .keys(&desk)
        .await
        .watch_revocations(watch_from(None))
        .await
        .expect("a slot given back by a stalled stream")
        .into_inner();
    assert!(matches!(next(&mut again).await, Ok(Event::Checkpoint(_))));
    server.regenerate(&org_id, &admin).await;
    loop {
        match next(&mut reader).await {
            Ok(Event::Revocation(event)) => {
                assert_eq!(event.sequence, 1);
                break;
            }
            Ok(Event::Checkpoint(_)) => {}
            Err(status) => panic!("the reader was ended: {status:?}"),
        }
    }
    assert_eq!(metric(&server, ended).await, STALLED as f64);
    // And the cap still holds once they are counted again.
    let mut held = Vec::new();
    for _ in 0..STALLED - 1 {
        let mut keys = server.keys(&desk).await;
        held.push(keys.watch_revocations(watch_from(None)).await.unwrap());
    }
    let refused = server
        .keys(&desk)
        .await
        .watch_revocations(watch_from(None))
        .await;
    expect_code(refused, Code::ResourceExhausted);
}
