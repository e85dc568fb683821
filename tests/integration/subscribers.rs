//! Who may keep a revocation stream open, and how many: authorization that follows account
//! changes, and the subscriber caps.

use std::time::Duration;

use tonic::{Code, Status, Streaming};
use zsc::proto::{watch_revocations_response::Event, *};

use crate::common::*;

/// Reads until the stream ends with a status; returns it and the revocations seen before it.
async fn end_of(stream: &mut Streaming<WatchRevocationsResponse>) -> (Status, Vec<u64>) {
    let mut revocations = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("the stream ends within 10 s")
        {
            Ok(Some(WatchRevocationsResponse {
                event: Some(Event::Revocation(event)),
            })) => revocations.push(event.sequence),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => return (status, revocations),
        }
    }
}

async fn delete_account(server: &TestServer, name: &str) {
    server
        .op_access()
        .await
        .delete_service_account(DeleteServiceAccountRequest { name: name.into() })
        .await
        .expect("delete account");
}

#[tokio::test]
async fn a_deleted_accounts_stream_is_sent_nothing_more_and_ends_unauthenticated() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;
    let desk = server.account("desk", Role::Consumer).await;
    let mut stream = server.subscribe(&desk).await;
    assert!(matches!(next(&mut stream).await, Ok(Event::Checkpoint(_))));
    server.regenerate(&org_id, &admin).await;
    assert!(matches!(next(&mut stream).await, Ok(Event::Revocation(e)) if e.sequence == 1));

    delete_account(&server, "desk").await;
    // A revocation after the deletion: it wakes the stream, which must not send it.
    server.regenerate(&org_id, &admin).await;
    let (status, revocations) = end_of(&mut stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("desk"), "{}", status.message());
    assert_eq!(revocations, Vec::<u64>::new(), "nothing after the deletion");
}

#[tokio::test]
async fn an_idle_stream_of_a_deleted_account_ends_at_the_next_heartbeat() {
    let server = TestServer::start_fast_heartbeat().await;
    let desk = server.account("desk", Role::Consumer).await;
    let recruit = server.account("recruit", Role::Consumer).await;
    let mut desk_stream = server.subscribe(&desk).await;
    let mut recruit_stream = server.subscribe(&recruit).await;
    assert!(matches!(
        next(&mut desk_stream).await,
        Ok(Event::Checkpoint(_))
    ));

    // Nothing happens in the log: only the heartbeat can notice.
    delete_account(&server, "desk").await;
    let (status, _) = end_of(&mut desk_stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Another account's stream is untouched: it keeps getting heartbeats.
    for _ in 0..5 {
        assert!(matches!(
            next(&mut recruit_stream).await,
            Ok(Event::Checkpoint(_))
        ));
    }
}

/// Opens a stream of `token`'s account; returns it once its first checkpoint arrived.
async fn open(
    server: &TestServer,
    token: &str,
) -> Result<Streaming<WatchRevocationsResponse>, Status> {
    let mut stream = server
        .keys(token)
        .await
        .watch_revocations(watch_from(None))
        .await?
        .into_inner();
    assert!(matches!(next(&mut stream).await, Ok(Event::Checkpoint(_))));
    Ok(stream)
}

/// Opens a stream, retrying while the server has not yet noticed a closed one (up to 10 s).
async fn open_once_released(
    server: &TestServer,
    token: &str,
) -> Streaming<WatchRevocationsResponse> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open(server, token).await {
            Ok(stream) => return stream,
            Err(status) if status.code() == Code::ResourceExhausted => assert!(
                tokio::time::Instant::now() < deadline,
                "the closed stream's slot was never given back: {status:?}"
            ),
            Err(status) => panic!("{status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn streams_past_the_caps_are_refused_and_a_closed_one_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |d| {
        let mut config = test_config(d);
        config.watch.max_subscribers = 3;
        config.watch.max_subscribers_per_account = 2;
        config
    })
    .await;
    let desk = server.account("desk", Role::Consumer).await;
    let recruit = server.account("recruit", Role::Consumer).await;

    // Per account: desk's third stream is refused.
    let mut desk_streams = vec![
        open(&server, &desk).await.unwrap(),
        open(&server, &desk).await.unwrap(),
    ];
    let status = open(&server, &desk).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("desk")
            && status.message().contains("--max-subscribers-per-account"),
        "{}",
        status.message()
    );

    // In all: recruit gets the third slot, then the server is full.
    let recruit_stream = open(&server, &recruit).await.unwrap();
    let status = open(&server, &recruit).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-subscribers"),
        "{}",
        status.message()
    );

    // Closing a stream gives its slot back: to the account and to the server.
    drop(desk_streams.pop());
    desk_streams.push(open_once_released(&server, &desk).await);
    drop(recruit_stream);
    let _recruit_again = open_once_released(&server, &recruit).await;

    // The streams still open keep working.
    for stream in &mut desk_streams {
        assert!(matches!(next(stream).await, Ok(Event::Checkpoint(_))));
    }
}

/// A connection whose reader stops after its first `budget` bytes, as a client that stops
/// reading does: the server's data then piles up on the server side.
struct Stalling {
    tcp: tokio::net::TcpStream,
    budget: usize,
}

impl tokio::io::AsyncRead for Stalling {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.budget == 0 {
            return std::task::Poll::Pending;
        }
        let mut limited = buf.take(self.budget);
        let poll = std::pin::Pin::new(&mut self.tcp).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        self.budget -= n;
        poll
    }
}

impl tokio::io::AsyncWrite for Stalling {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The README's figure for what a stalled subscriber costs the server: the zsc binary in its own
/// process, a log of 2,000 revocations, then 100 subscribers that read from 0 and stop reading
/// (a 4 KiB receive buffer, a 1 GiB HTTP/2 window), one connection each; VmRSS before and after.
#[tokio::test]
#[ignore = "a measurement: cargo test --release --test integration stalled_subscriber_memory -- --ignored --nocapture"]
async fn stalled_subscriber_memory() {
    const STREAMS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", &data_dir];
    let (mut child, _log, addr) = crate::process::spawn_zsc(work.path(), &args, "info").await;
    let pid = child.id().unwrap();
    let token = zsc::testkit::operator_token(dir.path());
    let url = format!("http://{addr}");
    let bearer = || zsc::client::Bearer::new(&token).unwrap();
    let channel = || async {
        tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let mut users =
        user_service_client::UserServiceClient::with_interceptor(channel().await, bearer());
    let mut writers = Vec::new();
    for i in 0..4 {
        let org = users
            .create_org(CreateOrgRequest {
                name: format!("Org {i}"),
                edition: Edition::Enterprise as i32,
            })
            .await
            .unwrap()
            .into_inner();
        let admin = format!("admin@org{i}.example");
        users
            .create_user(CreateUserRequest {
                org_id: org.org_id.clone(),
                email: admin.clone(),
                display_name: "Admin".into(),
                profile: Profile::Administrator as i32,
            })
            .await
            .unwrap();
        let mut keys =
            key_service_client::KeyServiceClient::with_interceptor(channel().await, bearer());
        let generate = GenerateKeyRequest {
            org_id: org.org_id.clone(),
            actor_email: admin.clone(),
        };
        keys.generate_key(generate).await.unwrap();
        writers.push(tokio::spawn(async move {
            for _ in 0..500 {
                let request = RegenerateKeyRequest {
                    org_id: org.org_id.clone(),
                    actor_email: admin.clone(),
                };
                keys.regenerate_key(request).await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid);

    let mut held = Vec::new();
    for _ in 0..STREAMS {
        let target = addr.clone();
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .initial_stream_window_size(1 << 30)
            .initial_connection_window_size(1 << 30)
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let target = target.clone();
                async move {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.set_recv_buffer_size(4096)?;
                    let tcp = socket.connect(target.parse().unwrap()).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(Stalling {
                        tcp,
                        budget: 16 * 1024,
                    }))
                }
            }))
            .await
            .unwrap();
        let mut keys = key_service_client::KeyServiceClient::with_interceptor(channel, bearer());
        held.push(tokio::spawn(async move {
            let stream = keys.watch_revocations(watch_from(Some(0))).await;
            // Holds the stream (and the connection) without reading it.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(stream);
        }));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(pid);
    println!(
        "server VmRSS: {before} KiB before, {after} KiB with {STREAMS} stalled subscribers: {} KiB per subscriber",
        after.saturating_sub(before) / STREAMS as u64
    );
    for task in held {
        task.abort();
    }
    child.kill().await.unwrap();
}
