//! WatchRevocations: ordering, resume, checkpoints, filters, OUT_OF_RANGE.

use std::time::Duration;

use tonic::Code;
use zsc::proto::{watch_revocations_response::Event, *};

use crate::common::*;

fn checkpoint(event: Event) -> Checkpoint {
    match event {
        Event::Checkpoint(c) => c,
        other => panic!("expected a checkpoint, got {other:?}"),
    }
}

fn revocation(event: Event) -> RevocationEvent {
    match event {
        Event::Revocation(r) => r,
        other => panic!("expected a revocation, got {other:?}"),
    }
}

/// Collects revocations until one with `last` arrives (checkpoints are skipped).
async fn revocations_until(
    stream: &mut tonic::Streaming<WatchRevocationsResponse>,
    last: u64,
) -> Vec<RevocationEvent> {
    let mut events = Vec::new();
    loop {
        if let Event::Revocation(event) = next(stream).await.expect("stream ok") {
            let sequence = event.sequence;
            events.push(event);
            if sequence >= last {
                return events;
            }
        }
    }
}

fn sequences(events: &[RevocationEvent]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

#[tokio::test]
async fn from_the_head_a_checkpoint_comes_first_then_live_events() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (_, key_id) = server.key(&org_id, &admin).await;
    server.regenerate(&org_id, &admin).await;

    let mut stream = server.watch(watch_from(None)).await.unwrap();
    let first = checkpoint(next(&mut stream).await.unwrap());
    assert_eq!(first.sequence, 1, "the head");
    assert!(first.store_id.starts_with("st_"));

    let regen_key_id = server
        .op_keys()
        .await
        .get_key_info(GetKeyInfoRequest {
            org_id: org_id.clone(),
        })
        .await
        .unwrap();
    server.regenerate(&org_id, &admin).await;
    let live = revocation(next(&mut stream).await.unwrap());
    assert_eq!(live.sequence, 2);
    assert_eq!(live.key_id, regen_key_id.into_inner().key_id);
    assert_ne!(live.key_id, key_id);
}

#[tokio::test]
async fn from_a_cursor_history_then_a_checkpoint_then_live() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;
    for _ in 0..5 {
        server.regenerate(&org_id, &admin).await;
    }
    let mut stream = server.watch(server.resume_from(2).await).await.unwrap();
    let history: Vec<_> = [
        next(&mut stream).await,
        next(&mut stream).await,
        next(&mut stream).await,
    ]
    .into_iter()
    .map(|e| revocation(e.unwrap()).sequence)
    .collect();
    assert_eq!(history, [3, 4, 5]);
    assert_eq!(checkpoint(next(&mut stream).await.unwrap()).sequence, 5);
    server.regenerate(&org_id, &admin).await;
    assert_eq!(revocation(next(&mut stream).await.unwrap()).sequence, 6);

    // 0 means the whole log; at the head, just the checkpoint.
    let mut all = server.watch(watch_from(Some(0))).await.unwrap();
    assert_eq!(
        sequences(&revocations_until(&mut all, 6).await),
        (1..=6).collect::<Vec<_>>()
    );
    let mut at_head = server.watch(server.resume_from(6).await).await.unwrap();
    assert_eq!(checkpoint(next(&mut at_head).await.unwrap()).sequence, 6);
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeat_checkpoints() {
    let server = TestServer::start_fast_heartbeat().await;
    let mut stream = server.watch(watch_from(None)).await.unwrap();
    let started = tokio::time::Instant::now();
    for _ in 0..4 {
        assert_eq!(checkpoint(next(&mut stream).await.unwrap()).sequence, 0);
    }
    // Four checkpoints (the first at once, then heartbeats) in well under the 10 s limit.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_subscriber_resumes_across_a_server_restart_without_missing_anything() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;
    let mut stream = server.watch(watch_from(None)).await.unwrap();
    let store_id = checkpoint(next(&mut stream).await.unwrap()).store_id;
    for _ in 0..3 {
        server.regenerate(&org_id, &admin).await;
    }
    let applied = revocations_until(&mut stream, 3).await;
    assert_eq!(sequences(&applied), [1, 2, 3]);

    // Shutdown: a last checkpoint, then UNAVAILABLE.
    let restarting = tokio::spawn(server.restart());
    let mut goodbye = Vec::new();
    let end = loop {
        match stream.message().await {
            Ok(Some(message)) => goodbye.push(message.event.unwrap()),
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(
        matches!(goodbye.last(), Some(Event::Checkpoint(c)) if c.sequence == 3),
        "{goodbye:?}"
    );
    let server = restarting.await.unwrap();

    for _ in 0..4 {
        server.regenerate(&org_id, &admin).await;
    }
    let resume = WatchRevocationsRequest {
        after_sequence: Some(3),
        store_id: store_id.clone(),
        org_ids: vec![],
    };
    let mut resumed = server.watch(resume).await.unwrap();
    assert_eq!(
        sequences(&revocations_until(&mut resumed, 7).await),
        [4, 5, 6, 7]
    );
    let caught_up = checkpoint(next(&mut resumed).await.unwrap());
    assert_eq!((caught_up.sequence, caught_up.store_id), (7, store_id));
}

#[tokio::test]
async fn a_stopped_subscriber_catches_up_on_ten_thousand_revocations_in_order() {
    let server = TestServer::start().await;
    let orgs = server.orgs_with_keys(16).await;
    let mut stream = server.watch(watch_from(None)).await.unwrap();
    assert_eq!(checkpoint(next(&mut stream).await.unwrap()).sequence, 0);
    // The subscriber now reads nothing while 10,000 revocations land.
    server.regenerate_concurrently(&orgs, 625).await;
    let events = revocations_until(&mut stream, 10_000).await;
    assert_eq!(sequences(&events), (1..=10_000).collect::<Vec<_>>());
}

#[tokio::test]
async fn concurrent_revocations_reach_every_subscriber_in_the_same_order() {
    let server = TestServer::start().await;
    let orgs = server.orgs_with_keys(8).await;
    let mut subscribers = Vec::new();
    for _ in 0..10 {
        let mut stream = server.watch(watch_from(None)).await.unwrap();
        checkpoint(next(&mut stream).await.unwrap());
        subscribers.push(tokio::spawn(async move {
            revocations_until(&mut stream, 160).await
        }));
    }
    server.regenerate_concurrently(&orgs, 20).await;
    let mut seen = Vec::new();
    for subscriber in subscribers {
        seen.push(subscriber.await.unwrap());
    }
    assert_eq!(sequences(&seen[0]), (1..=160).collect::<Vec<_>>());
    for other in &seen[1..] {
        assert_eq!(
            other, &seen[0],
            "every subscriber sees the same events in the same order"
        );
    }
}

#[tokio::test]
async fn org_filters_send_only_those_orgs_and_checkpoints_still_advance() {
    let server = TestServer::start().await;
    let (acme, acme_admin) = server.org_with_admin("Acme").await;
    let (globex, globex_admin) = server.org_with_admin("Globex").await;
    server.key(&acme, &acme_admin).await;
    server.key(&globex, &globex_admin).await;
    let request = WatchRevocationsRequest {
        after_sequence: None,
        store_id: String::new(),
        org_ids: vec![acme.clone()],
    };
    let mut stream = server.watch(request).await.unwrap();
    checkpoint(next(&mut stream).await.unwrap());
    server.regenerate(&globex, &globex_admin).await; // 1, filtered out
    server.regenerate(&acme, &acme_admin).await; // 2
    server.regenerate(&globex, &globex_admin).await; // 3, filtered out
    let mut got = Vec::new();
    let last = loop {
        match next(&mut stream).await.unwrap() {
            Event::Revocation(event) => got.push(event),
            Event::Checkpoint(c) if c.sequence == 3 => break c,
            Event::Checkpoint(_) => {}
        }
    };
    assert_eq!(sequences(&got), [2]);
    assert_eq!(got[0].org_id, acme);
    assert_eq!(
        last.sequence, 3,
        "the filtered subscriber still learns how far the log is"
    );

    let bad = WatchRevocationsRequest {
        org_ids: vec!["not-an-org".into()],
        ..Default::default()
    };
    assert_eq!(
        server.watch(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn cursors_the_log_cannot_serve_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |d| {
        let mut config = test_config(d);
        config.event_retention_count = 5;
        config.event_retention_age = Duration::ZERO;
        config.prune_interval = Duration::from_millis(50);
        config
    })
    .await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;

    let foreign = WatchRevocationsRequest {
        store_id: "st_someoneelse0000".into(),
        ..Default::default()
    };
    let message = server.watch(foreign).await.unwrap_err();
    assert_eq!(message.code(), Code::OutOfRange);
    assert!(message.message().contains("flush"), "{}", message.message());

    let future = server.watch(server.resume_from(5).await).await.unwrap_err();
    assert_eq!(future.code(), Code::OutOfRange);
    assert!(
        future.message().contains("beyond the head"),
        "{}",
        future.message()
    );

    for _ in 0..20 {
        server.regenerate(&org_id, &admin).await;
    }
    // Wait for the pruner: at least 5 kept, the rest go. Even 0 ("the whole log") is then a
    // cursor the log cannot serve: a subscriber that applied nothing must not skip 1..=15.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match server.watch(watch_from(Some(0))).await {
            Err(status) if status.message().contains("oldest retained: 16") => {
                assert_eq!(status.code(), Code::OutOfRange);
                assert!(
                    status.message().contains("after_sequence = 15"),
                    "{}",
                    status.message()
                );
                break;
            }
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "pruning did not happen"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pruned = server.watch(server.resume_from(3).await).await.unwrap_err();
    assert_eq!(pruned.code(), Code::OutOfRange);
    assert!(
        pruned.message().contains("no longer retained"),
        "{}",
        pruned.message()
    );
    // The oldest retained cursor still works: after 15 come 16..=20, then a checkpoint.
    let mut ok = server.watch(server.resume_from(15).await).await.unwrap();
    assert_eq!(
        sequences(&revocations_until(&mut ok, 20).await),
        [16, 17, 18, 19, 20]
    );
    assert_eq!(checkpoint(next(&mut ok).await.unwrap()).sequence, 20);
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_ended_and_resumes_from_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |d| {
        let mut config = test_config(d);
        config.watch.stall_timeout = Duration::from_millis(300);
        config
    })
    .await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;
    // A client with a tiny HTTP/2 window, so a reader that stops blocks the server quickly.
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(1024)
        .initial_connection_window_size(1024)
        .connect()
        .await
        .unwrap();
    let bearer = zsc::client::Bearer::new(&server.operator_token).unwrap();
    let mut client = key_service_client::KeyServiceClient::with_interceptor(channel, bearer);
    let mut stream = client
        .watch_revocations(watch_from(None))
        .await
        .unwrap()
        .into_inner();
    checkpoint(next(&mut stream).await.unwrap());

    for _ in 0..300 {
        server.regenerate(&org_id, &admin).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut applied = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(WatchRevocationsResponse {
                event: Some(Event::Revocation(e)),
            })) => {
                assert_eq!(e.sequence, applied + 1);
                applied = e.sequence;
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(applied < 300, "the stall ended the stream before the end");
    let mut resumed = client
        .watch_revocations(server.resume_from(applied).await)
        .await
        .unwrap()
        .into_inner();
    let rest = revocations_until(&mut resumed, 300).await;
    assert_eq!(sequences(&rest), (applied + 1..=300).collect::<Vec<_>>());
}

#[tokio::test]
async fn events_younger_than_the_retention_age_are_kept_whatever_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |d| {
        let mut config = test_config(d);
        config.event_retention_count = 1;
        config.event_retention_age = Duration::from_secs(3600);
        config.prune_interval = Duration::from_millis(20);
        config
    })
    .await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;
    for _ in 0..10 {
        server.regenerate(&org_id, &admin).await;
    }
    // Many pruner runs later, nothing is gone: both bounds must be passed to prune.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sequences(&read_log(&server).await),
        (1..=10).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_cursor_above_zero_without_its_store_id_is_invalid() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;
    for _ in 0..3 {
        server.regenerate(&org_id, &admin).await;
    }
    // Without store_id, a cursor from a restored or replaced store would skip events silently.
    let status = server.watch(watch_from(Some(2))).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("needs store_id"),
        "{}",
        status.message()
    );
    // 0 (the whole log) and unset (the head) need none; with its store_id, 2 resumes.
    assert_eq!(sequences(&read_log(&server).await), [1, 2, 3]);
    let mut head = server.watch(watch_from(None)).await.unwrap();
    assert_eq!(checkpoint(next(&mut head).await.unwrap()).sequence, 3);
    let mut resumed = server.watch(server.resume_from(2).await).await.unwrap();
    assert_eq!(revocation(next(&mut resumed).await.unwrap()).sequence, 3);
}

#[tokio::test]
async fn checkpoints_carry_the_servers_time_and_durable_head() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;
    server.regenerate(&org_id, &admin).await;
    let before = std::time::SystemTime::now();
    let mut stream = server.watch(watch_from(None)).await.unwrap();
    let first = checkpoint(next(&mut stream).await.unwrap());
    let after = std::time::SystemTime::now();
    let stamped =
        std::time::SystemTime::try_from(first.server_time.expect("server_time set")).unwrap();
    // One machine, one clock: the stamp falls between the two readings around the call.
    assert!(before <= stamped && stamped <= after, "{stamped:?}");
    assert_eq!((first.sequence, first.durable_head), (1, 1));
}

#[tokio::test]
async fn a_stream_busy_with_events_still_gets_a_checkpoint_every_heartbeat() {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |d| {
        let mut config = test_config(d);
        config.watch.heartbeat = Duration::from_millis(300);
        config
    })
    .await;
    let orgs = server.orgs_with_keys(4).await;
    let mut stream = server.watch(watch_from(None)).await.unwrap();
    checkpoint(next(&mut stream).await.unwrap());
    // Four writers revoke without a pause (at most 1,000 each) until the subscriber has seen
    // three complete checkpoints among the events: a checkpoint is due every heartbeat, not
    // only after a heartbeat without events.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (org_id, admin) in orgs {
        let (stop, mut keys) = (stop.clone(), server.op_keys().await);
        writers.push(tokio::spawn(async move {
            for _ in 0..1_000 {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                let request = RegenerateKeyRequest {
                    org_id: org_id.clone(),
                    actor_email: admin.clone(),
                };
                keys.regenerate_key(request).await.unwrap();
            }
            true
        }));
    }
    let mut complete = 0;
    let mut last = 0;
    while complete < 3 {
        match next(&mut stream).await.unwrap() {
            Event::Revocation(event) => last = event.sequence,
            Event::Checkpoint(c) => {
                assert!(c.sequence >= last);
                if c.sequence > 0 && c.sequence >= c.durable_head {
                    complete += 1;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        assert!(
            !writer.await.unwrap(),
            "a writer finished its 1,000 revocations before three checkpoints came"
        );
    }
}
