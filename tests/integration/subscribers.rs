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
    let mut stream = server
        .keys(&desk)
        .await
        .watch_revocations(watch_from(None))
        .await
        .unwrap()
        .into_inner();
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
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |d| {
        let mut config = test_config(d);
        config.watch.heartbeat = Duration::from_millis(100);
        config
    })
    .await;
    let desk = server.account("desk", Role::Consumer).await;
    let recruit = server.account("recruit", Role::Consumer).await;
    let mut desk_stream = server
        .keys(&desk)
        .await
        .watch_revocations(watch_from(None))
        .await
        .unwrap()
        .into_inner();
    let mut recruit_stream = server
        .keys(&recruit)
        .await
        .watch_revocations(watch_from(None))
        .await
        .unwrap()
        .into_inner();
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
