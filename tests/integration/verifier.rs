//! The Verifier against the real server: cache, eviction, the in-flight race, fail-safe, resume.

use std::time::Duration;

use zsc::proto::*;
use zsc::verifier::{Verifier, VerifierConfig, VerifyError};

use crate::common::*;

fn config(server: &TestServer, token: &str, max_staleness: Duration) -> VerifierConfig {
    let mut config = VerifierConfig::new(server.url(), token);
    config.max_staleness = max_staleness;
    // The server and the Verifier read the same clock here.
    config.max_clock_skew = Duration::from_millis(20);
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config
}

/// Waits up to 10 s for `condition`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A verifier that is subscribed and has `key` cached.
async fn warmed(verifier: &Verifier, email: &str, key: &str) {
    eventually("the stream is up", || verifier.stats().fresh).await;
    let first = verifier.verify(email, key).await.unwrap();
    assert!(!first.cached);
    let second = verifier.verify(email, key).await.unwrap();
    assert!(
        second.cached,
        "the second verify is answered from the cache"
    );
}

/// Polls verify until it rejects (the revocation was applied); it must never take long.
async fn rejected_soon(verifier: &Verifier, email: &str, key: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match verifier.verify(email, key).await {
            Err(VerifyError::Rejected) => return,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "still accepted: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_cached_key_is_rejected_right_after_regenerate_deactivate_and_demote() {
    let server = TestServer::start().await;
    let desk = server.account("desk", Role::Consumer).await;
    // A huge staleness bound: only the stream can make the cache drop a key here.
    let verifier = Verifier::start(config(&server, &desk, Duration::from_secs(600))).unwrap();
    let (org_id, admin) = server.org_with_admin("Acme").await;

    let (key, _) = server.key(&org_id, &admin).await;
    warmed(&verifier, &admin, &key).await;
    let new_key = server.regenerate(&org_id, &admin).await;
    rejected_soon(&verifier, &admin, &key).await;

    warmed(&verifier, &admin, &new_key).await;
    let mut users = server.op_users().await;
    server.deactivate(&admin).await;
    rejected_soon(&verifier, &admin, &new_key).await;

    server.reactivate(&admin).await;
    let (third_key, _) = server.key(&org_id, &admin).await;
    warmed(&verifier, &admin, &third_key).await;
    let demote = UpdateUserProfileRequest {
        email: admin.clone(),
        profile: Profile::Standard as i32,
    };
    users.update_user_profile(demote).await.unwrap();
    rejected_soon(&verifier, &admin, &third_key).await;

    let stats = verifier.stats();
    assert_eq!(stats.applied_sequence, Some(3));
    assert!(
        stats.connected && stats.hits >= 3 && stats.misses >= 3,
        "{stats:?}"
    );
    assert_eq!(stats.cached_keys, 0);
    // Malformed input is decided offline.
    assert!(matches!(
        verifier.verify(&admin, "zsc_nope").await,
        Err(VerifyError::Malformed(_))
    ));
}

#[tokio::test]
async fn a_revocation_during_an_in_flight_validation_never_leaves_the_key_cached() {
    let server = TestServer::start().await;
    let desk = server.account("desk", Role::Consumer).await;
    let verifier = Verifier::start(config(&server, &desk, Duration::from_secs(600))).unwrap();
    eventually("the stream is up", || verifier.stats().fresh).await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, _) = server.key(&org_id, &admin).await;

    // A ValidateKey answer that is "in flight": read by the server, not yet seen by the Verifier.
    let in_flight = server.validate(&admin, &key).await.unwrap();
    // The revocation lands and the Verifier applies it before the answer arrives.
    server.regenerate(&org_id, &admin).await;
    eventually("the revocation is applied", || {
        verifier.stats().applied_sequence == Some(1)
    })
    .await;
    assert!(
        !verifier.admit(&admin, &key, &in_flight),
        "a dead key must not be cached"
    );
    assert!(matches!(
        verifier.verify(&admin, &key).await,
        Err(VerifyError::Rejected)
    ));

    // Control: an answer read after the Verifier subscribed, for a live key, is cached.
    let live = server.regenerate(&org_id, &admin).await;
    let fresh_answer = server.validate(&admin, &live).await.unwrap();
    assert!(verifier.admit(&admin, &live, &fresh_answer));
    assert!(verifier.verify(&admin, &live).await.unwrap().cached);
}

#[tokio::test]
async fn with_the_server_down_the_cache_is_bypassed_and_on_return_nothing_is_missed() {
    let server = TestServer::start().await;
    let desk = server.account("desk", Role::Consumer).await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, _) = server.key(&org_id, &admin).await;
    let staleness = Duration::from_millis(300);
    let verifier = Verifier::start(config(&server, &desk, staleness)).unwrap();
    warmed(&verifier, &admin, &key).await;
    let store_id = verifier.stats().store_id.clone();

    // The server goes away: after max_staleness the cached key fails closed.
    let addr = server.addr.to_string();
    let dir = server.stop().await;
    tokio::time::sleep(staleness + Duration::from_millis(100)).await;
    assert!(!verifier.stats().fresh);
    assert!(matches!(
        verifier.verify(&admin, &key).await,
        Err(VerifyError::Unavailable(_))
    ));

    // While the Verifier cannot reach it, the key is regenerated (on another address).
    let elsewhere = TestServer::start_with(dir, test_config).await;
    elsewhere.regenerate(&org_id, &admin).await;
    let dir = elsewhere.stop().await;

    // The server returns where the Verifier looks; it resumes and applies what it missed.
    let _server = TestServer::start_on(dir, &addr, test_config).await;
    eventually("resumed and caught up", || {
        verifier.stats().applied_sequence == Some(1)
    })
    .await;
    let stats = verifier.stats();
    assert_eq!(
        (stats.flushes, stats.store_id),
        (0, store_id),
        "resumed, not flushed"
    );
    let hits = stats.hits;
    assert!(matches!(
        verifier.verify(&admin, &key).await,
        Err(VerifyError::Rejected)
    ));
    assert_eq!(
        verifier.stats().hits,
        hits,
        "the dead key was not served from the cache"
    );
}

/// Keeps only the newest event, pruning every 50 ms.
fn pruning(dir: &std::path::Path) -> zsc::server::Config {
    let mut config = test_config(dir);
    config.event_retention_count = 1;
    config.event_retention_age = Duration::ZERO;
    config.prune_interval = Duration::from_millis(50);
    config
}

#[tokio::test]
async fn a_cursor_the_server_can_no_longer_serve_flushes_the_cache() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), pruning).await;
    let desk = server.account("desk", Role::Consumer).await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, _) = server.key(&org_id, &admin).await;
    let verifier = Verifier::start(config(&server, &desk, Duration::from_secs(600))).unwrap();
    warmed(&verifier, &admin, &key).await;
    assert_eq!(verifier.stats().applied_sequence, Some(0));

    // While the Verifier is away, three revocations happen and two of them are pruned.
    let addr = server.addr.to_string();
    let elsewhere = TestServer::start_with(server.stop().await, pruning).await;
    for _ in 0..3 {
        elsewhere.regenerate(&org_id, &admin).await;
    }
    // Wait until the pruner has run (a whole-log read is then OUT_OF_RANGE), rather than for a
    // fixed time a loaded machine may not honour.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out_of_range = |s: &tonic::Status| s.code() == tonic::Code::OutOfRange;
        let pruned = match elsewhere.watch(watch_from(Some(0))).await {
            Ok(mut stream) => next(&mut stream).await.is_err_and(|s| out_of_range(&s)),
            Err(status) => out_of_range(&status),
        };
        if pruned {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pruner never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = elsewhere.stop().await;

    // Its cursor (0) is now out of range: it must flush rather than skip ahead.
    let _server = TestServer::start_on(dir, &addr, pruning).await;
    eventually("flushed and resubscribed from the head", || {
        let stats = verifier.stats();
        stats.flushes == 1 && stats.applied_sequence == Some(3)
    })
    .await;
    assert_eq!(verifier.stats().cached_keys, 0);
    assert!(matches!(
        verifier.verify(&admin, &key).await,
        Err(VerifyError::Rejected)
    ));
}

#[tokio::test]
async fn an_answer_from_another_store_is_never_cached() {
    let server = TestServer::start().await;
    let other = TestServer::start().await;
    let desk = server.account("desk", Role::Consumer).await;
    let verifier = Verifier::start(config(&server, &desk, Duration::from_secs(600))).unwrap();
    eventually("the stream is up", || verifier.stats().fresh).await;
    let (org_id, admin) = other.org_with_admin("Acme").await;
    let (key, _) = other.key(&org_id, &admin).await;

    // An answer of another store (say, a restored copy): its sequence is not this log's.
    let foreign = other.validate(&admin, &key).await.unwrap();
    assert_ne!(Some(&foreign.store_id), verifier.stats().store_id.as_ref());
    assert!(!verifier.admit(&admin, &key, &foreign));
    assert_eq!(verifier.stats().cached_keys, 0);

    // Control: the same kind of answer from the store it follows is cached.
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, _) = server.key(&org_id, &admin).await;
    let ours = server.validate(&admin, &key).await.unwrap();
    assert_eq!(Some(&ours.store_id), verifier.stats().store_id.as_ref());
    assert!(verifier.admit(&admin, &key, &ours));
}

/// A TCP proxy that forwards everything, but holds the server's bytes back `delay` before
/// passing them on, as a buffering proxy or a congested path does. Returns its address.
async fn delaying_proxy(target: std::net::SocketAddr, delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut buffer = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = server_read.read(&mut buffer).await {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some((due, bytes)) = rx.recv().await {
                    tokio::time::sleep_until(due).await;
                    if client_write.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_stream_that_arrives_late_never_makes_the_cache_fresh() {
    let server = TestServer::start_fast_heartbeat().await;
    let desk = server.account("desk", Role::Consumer).await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, _) = server.key(&org_id, &admin).await;
    // Everything the server says reaches the Verifier a second late: heartbeats keep coming,
    // ten a second, but what they vouch for is always a second old.
    let mut config = config(&server, &desk, Duration::from_millis(500));
    config.url = delaying_proxy(server.addr, Duration::from_secs(1)).await;
    let verifier = Verifier::start(config).unwrap();
    eventually("the stream is up and checkpoints are applied", || {
        let stats = verifier.stats();
        stats.connected && stats.applied_sequence == Some(0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(!verifier.stats().fresh);
    for _ in 0..3 {
        let answer = verifier.verify(&admin, &key).await.unwrap();
        assert!(!answer.cached, "a late stream must not vouch for the cache");
    }
    assert_eq!(verifier.stats().hits, 0);
}

#[tokio::test]
async fn a_cache_hit_needs_the_owners_email_in_any_case_and_a_well_formed_key() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, _) = server.key(&org_id, &admin).await;
    let desk = server.account("desk", Role::Consumer).await;
    let verifier = Verifier::start(config(&server, &desk, Duration::from_secs(5))).unwrap();
    warmed(&verifier, &admin, &key).await;

    // The same mailbox in other ASCII case is the cached answer.
    let shouted = verifier.verify(&admin.to_uppercase(), &key).await.unwrap();
    assert!(shouted.cached);
    assert_eq!(shouted.owner_email, admin);
    // Another user's email with the cached key is never a hit: the server rejects it.
    let other = verifier.verify("mallory@acme.example.com", &key).await;
    assert!(matches!(other, Err(VerifyError::Rejected)), "{other:?}");
    // A key one character off is malformed, not a miss that reaches the server.
    let mut typo = key.clone();
    let last = typo.pop().unwrap();
    typo.push(if last == 'x' { 'y' } else { 'x' });
    let malformed = verifier.verify(&admin, &typo).await;
    assert!(
        matches!(malformed, Err(VerifyError::Malformed(_))),
        "{malformed:?}"
    );
    // An email the cache cannot fold (surrounding text) is parsed: malformed.
    let garbage = verifier.verify(&format!("{admin} "), &key).await;
    assert!(garbage.is_err(), "{garbage:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hit_that_starts_after_a_revocation_is_applied_serves_the_key() {
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;

    let server = TestServer::start().await;
    let desk = server.account("desk", Role::Consumer).await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, _) = server.key(&org_id, &admin).await;
    // The hook runs once the revocation is applied to the cache.
    let applied = Arc::new(AtomicBool::new(false));
    let mut config = config(&server, &desk, Duration::from_secs(600));
    let flag = applied.clone();
    config.on_revocation = Some(Arc::new(move |_| flag.store(true, SeqCst)));
    let verifier = Arc::new(Verifier::start(config).unwrap());
    warmed(&verifier, &admin, &key).await;

    // Two threads hit the cache without pause (a hit never awaits; a miss would, and is not
    // polled further) while the key is revoked.
    let hits_before = Arc::new(AtomicU64::new(0));
    let hitters: Vec<_> = (0..2)
        .map(|_| {
            let (verifier, applied) = (verifier.clone(), applied.clone());
            let (admin, key, hits_before) = (admin.clone(), key.clone(), hits_before.clone());
            std::thread::spawn(move || {
                let mut misses_after = 0;
                while misses_after < 1000 {
                    let revoked = applied.load(SeqCst);
                    match verifier.verify(&admin, &key).now_or_never() {
                        Some(Ok(answer)) if answer.cached => {
                            assert!(!revoked, "a hit after the revocation was applied");
                            hits_before.fetch_add(1, SeqCst);
                        }
                        _ if revoked => misses_after += 1,
                        _ => {}
                    }
                }
            })
        })
        .collect();
    eventually("the threads are hitting", || {
        hits_before.load(SeqCst) > 1000
    })
    .await;
    server.regenerate(&org_id, &admin).await;
    for hitter in hitters {
        tokio::task::spawn_blocking(move || hitter.join())
            .await
            .unwrap()
            .expect("no hit after the revocation");
    }
    assert_eq!(verifier.stats().cached_keys, 0);
}
