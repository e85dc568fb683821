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
