//! Replicas over a real 3-member etcd cluster on loopback (feature `etcd`): what one replica
//! does, the others see; etcd or replica failures lose no acknowledged change and revive no key.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use zsc::proto::{watch_revocations_response::Event, *};
use zsc::testing::EtcdCluster;

use crate::common::*;
use crate::process::run_zsc;

type KeyServiceClientAuthed = key_service_client::KeyServiceClient<Authed>;

async fn cluster() -> EtcdCluster {
    tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
}

/// Two replicas on one store; the first initialised it.
async fn replicas(cluster: &EtcdCluster, prefix: &str) -> (TestServer, TestServer) {
    let url = cluster.url(prefix);
    let a = TestServer::start_replica(&url, None).await;
    let b = TestServer::start_replica(&url, Some(&a.operator_token)).await;
    (a, b)
}

async fn store_id(server: &TestServer) -> String {
    let mut stream = server.watch(watch_from(None)).await.unwrap();
    match next(&mut stream).await.unwrap() {
        Event::Checkpoint(checkpoint) => checkpoint.store_id,
        other => panic!("expected a checkpoint first, got {other:?}"),
    }
}

async fn serving(server: &TestServer) -> Option<ServingStatus> {
    let mut health = HealthClient::new(server.channel().await);
    let response = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

async fn wait_for_status(server: &TestServer, wanted: ServingStatus) {
    for _ in 0..200 {
        if serving(server).await == Some(wanted) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health never became {wanted:?}");
}

#[tokio::test]
async fn a_key_generated_through_one_replica_validates_on_another() {
    let cluster = cluster().await;
    let (a, b) = replicas(&cluster, "/shared").await;
    assert_eq!(store_id(&a).await, store_id(&b).await);
    let (org_id, admin) = a.org_with_admin("Acme").await;
    let (key, _) = a.key(&org_id, &admin).await;
    let validated = b
        .validate(&admin, &key)
        .await
        .expect("valid on the other replica");
    assert_eq!(validated.org.unwrap().org_id, org_id);
    // A store under another prefix of the same cluster is another store.
    let other = TestServer::start_replica(&cluster.url("/other"), None).await;
    assert_ne!(store_id(&other).await, store_id(&a).await);
    expect_code(other.validate(&admin, &key).await, Code::Unauthenticated);
}

#[tokio::test]
async fn a_revocation_made_through_one_replica_reaches_a_subscriber_of_another() {
    let cluster = cluster().await;
    let (a, b) = replicas(&cluster, "/zsc").await;
    let (org_id, admin) = a.org_with_admin("Acme").await;
    let (old, _) = a.key(&org_id, &admin).await;
    let mut stream = b.watch(watch_from(None)).await.unwrap();
    assert!(matches!(
        next(&mut stream).await.unwrap(),
        Event::Checkpoint(_)
    ));
    let mut latencies = Vec::new();
    for round in 1..=20u64 {
        let started = Instant::now();
        a.regenerate(&org_id, &admin).await;
        loop {
            match next(&mut stream).await.unwrap() {
                Event::Revocation(event) => {
                    assert_eq!(event.sequence, round);
                    latencies.push(started.elapsed());
                    break;
                }
                Event::Checkpoint(_) => {}
            }
        }
    }
    expect_code(b.validate(&admin, &old).await, Code::Unauthenticated);
    latencies.sort();
    println!(
        "revocation latency, RegenerateKey on replica A to a subscriber of replica B (20 rounds): p50 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_etcd_leader_during_regenerations_loses_nothing_and_revives_no_key() {
    let mut cluster = cluster().await;
    let (a, b) = replicas(&cluster, "/zsc").await;
    let (org_id, admin) = a.org_with_admin("Acme").await;
    a.key(&org_id, &admin).await;
    let request = || RegenerateKeyRequest {
        org_id: org_id.clone(),
        actor_email: admin.clone(),
    };
    let (keys_a, keys_b) = (a.op_keys().await, b.op_keys().await);
    let run = |mut keys: KeyServiceClientAuthed| {
        let request = request();
        async move {
            let mut acknowledged = Vec::new();
            for _ in 0..30 {
                match keys.regenerate_key(request.clone()).await {
                    Ok(response) => acknowledged.push(response.into_inner()),
                    Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acknowledged
        }
    };
    let killer = async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let leader = tokio::task::block_in_place(|| cluster.leader()).expect("a leader");
        cluster.kill(leader);
        leader
    };
    let (from_a, from_b, _killed) = tokio::join!(run(keys_a), run(keys_b), killer);
    let acknowledged: Vec<_> = from_a.into_iter().chain(from_b).collect();
    assert!(
        acknowledged.len() > 10,
        "only {} acknowledged",
        acknowledged.len()
    );
    // A replica may stand down while the cluster elects a leader; it comes back by itself.
    wait_for_status(&a, ServingStatus::Serving).await;
    wait_for_status(&b, ServingStatus::Serving).await;

    // The log is gapless and holds every acknowledged regeneration's revocation.
    let log = read_log(&b).await;
    let sequences: Vec<u64> = log.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=log.len() as u64).collect::<Vec<_>>());
    // Each acknowledged regeneration revoked one key.
    assert!(
        log.len() >= acknowledged.len(),
        "{} events, {} acknowledged",
        log.len(),
        acknowledged.len()
    );
    // Exactly one key is alive, and no revoked key validates on either replica.
    let alive = a
        .op_keys()
        .await
        .get_key_info(GetKeyInfoRequest {
            org_id: org_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .key_id;
    assert!(
        log.iter().all(|e| e.key_id != alive),
        "the live key is in the log"
    );
    for response in &acknowledged {
        let key_id = &response.info.as_ref().unwrap().key_id;
        assert!(
            *key_id == alive || log.iter().any(|e| e.key_id == *key_id),
            "acknowledged key {key_id} is neither alive nor revoked in the log"
        );
        let validated = a.validate(&admin, &response.key).await;
        assert_eq!(
            validated.is_ok(),
            *key_id == alive,
            "key {key_id} revived or lost"
        );
        let validated = b.validate(&admin, &response.key).await;
        assert_eq!(
            validated.is_ok(),
            *key_id == alive,
            "key {key_id} revived or lost on b"
        );
    }
}

#[tokio::test]
async fn killing_a_replica_leaves_the_others_serving() {
    let cluster = cluster().await;
    let (a, mut b) = replicas(&cluster, "/zsc").await;
    let (org_id, admin) = a.org_with_admin("Acme").await;
    b.shutdown().await;
    drop(b);
    let (key, _) = a.key(&org_id, &admin).await;
    a.validate(&admin, &key).await.expect("the survivor serves");
    let c = TestServer::start_replica(&cluster.url("/zsc"), Some(&a.operator_token)).await;
    c.validate(&admin, &key)
        .await
        .expect("a new replica serves the same store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_all_of_etcd_down_a_replica_is_not_serving_and_refuses_then_recovers() {
    let mut cluster = cluster().await;
    let (a, _b) = replicas(&cluster, "/zsc").await;
    let (org_id, admin) = a.org_with_admin("Acme").await;
    let (key, _) = a.key(&org_id, &admin).await;
    wait_for_status(&a, ServingStatus::Serving).await;
    let mut stream = a.watch(watch_from(None)).await.unwrap();
    assert!(matches!(
        next(&mut stream).await.unwrap(),
        Event::Checkpoint(_)
    ));
    for i in 0..3 {
        cluster.kill(i);
    }
    let down = Instant::now();
    wait_for_status(&a, ServingStatus::NotServing).await;
    println!("NOT_SERVING {:?} after etcd went down", down.elapsed());
    let refused = a
        .op_keys()
        .await
        .regenerate_key(RegenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: admin.clone(),
        })
        .await;
    expect_code(refused, Code::Unavailable);
    // Cut off from etcd, the replica cannot vouch for freshness: its streams end (a Verifier
    // then fails closed or moves to another replica), and validation is refused.
    for checkpoints in 0.. {
        assert!(
            checkpoints < 20,
            "the stream went on vouching while etcd was down"
        );
        match next(&mut stream).await {
            Ok(Event::Checkpoint(_)) => continue,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                break;
            }
        }
    }
    expect_code(a.validate(&admin, &key).await, Code::Unavailable);
    tokio::task::block_in_place(|| {
        for i in 0..3 {
            cluster.members_restart_async(i);
        }
        cluster.wait_all_healthy();
    });
    wait_for_status(&a, ServingStatus::Serving).await;
    // Back: a new stream on the same replica hears of the next revocation (its revocation
    // tail follows the store again).
    let mut stream = a.watch(watch_from(None)).await.unwrap();
    let head = match next(&mut stream).await.unwrap() {
        Event::Checkpoint(checkpoint) => checkpoint.sequence,
        other => panic!("expected a checkpoint first, got {other:?}"),
    };
    a.regenerate(&org_id, &admin).await;
    loop {
        match next(&mut stream).await.unwrap() {
            Event::Revocation(event) => {
                assert_eq!(event.sequence, head + 1);
                break;
            }
            Event::Checkpoint(_) => {}
        }
    }
}

#[tokio::test]
async fn a_sled_backup_restored_into_etcd_is_served_by_replicas_under_a_new_store_id() {
    let cluster = cluster().await;
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;
    server.regenerate(&org_id, &admin).await;
    let (key, old_id) = (
        server.regenerate(&org_id, &admin).await,
        store_id(&server).await,
    );
    let old_token = server.operator_token.clone();
    let dir = server.stop().await;
    let backup = dir.path().join("zsc.backup");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let url = cluster.url("/migrated");
    let output = run_zsc(&[
        "backup",
        "--data-dir",
        &path(dir.path()),
        "--out",
        &path(&backup),
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    let output = run_zsc(&["restore", "--in", &path(&backup), "--store", &url]).await;
    assert!(output.status.success(), "{output:?}");
    // Into a prefix that holds a store already: refused.
    let again = run_zsc(&["restore", "--in", &path(&backup), "--store", &url]).await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{again:?}"
    );

    // The replicas find the store initialised: neither writes a token; the old one works.
    let a = TestServer::start_replica(&url, Some(&old_token)).await;
    let b = TestServer::start_replica(&url, Some(&old_token)).await;
    let new_id = store_id(&a).await;
    assert_ne!(new_id, old_id, "a restore is a new store");
    assert_eq!(store_id(&b).await, new_id);
    b.validate(&admin, &key)
        .await
        .expect("the migrated key validates");
    assert_eq!(read_log(&a).await.len(), 2, "the log came along");
    // The recovery path works against etcd too, while replicas run.
    let tokens = tempfile::tempdir().unwrap();
    let output = run_zsc(&[
        "operator-token",
        "--store",
        &url,
        "--data-dir",
        &path(tokens.path()),
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    let token = zsc::testkit::operator_token(tokens.path());
    let mut keys = a.keys(&token).await;
    let mut accepted = false;
    for _ in 0..100 {
        let info = keys
            .get_key_info(GetKeyInfoRequest {
                org_id: org_id.clone(),
            })
            .await;
        if info.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        accepted,
        "the new operator token is accepted by a running replica"
    );
    // And an etcd store backs up like a data dir.
    let second = dir.path().join("etcd.backup");
    let output = run_zsc(&["backup", "--store", &url, "--out", &path(&second)]).await;
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&new_id),
        "{output:?}"
    );
}

#[tokio::test]
async fn one_replica_at_a_time_holds_the_pruning_turn() {
    use zsc::store::{EtcdUrl, Store};
    let cluster = cluster().await;
    let url: EtcdUrl = cluster.url("/zsc").parse().unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::open_etcd(&url, dirs.0.path()).await.unwrap().store;
    let b = Store::open_etcd(&url, dirs.1.path()).await.unwrap().store;
    let hold = Duration::from_millis(600);
    assert!(a.take_turn("prune", hold).await.unwrap());
    assert!(
        !b.take_turn("prune", hold).await.unwrap(),
        "two replicas pruning at once"
    );
    assert!(
        a.take_turn("prune", hold).await.unwrap(),
        "the holder keeps its turn"
    );
    // A holder that stops renewing (a dead replica) loses the turn once it expires.
    let mut taken = false;
    for _ in 0..100 {
        if b.take_turn("prune", hold).await.unwrap() {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(taken, "the turn never passed on");
    assert!(!a.take_turn("prune", hold).await.unwrap());
}

#[tokio::test]
async fn a_deleted_account_is_refused_by_every_replica() {
    let cluster = cluster().await;
    let (a, b) = replicas(&cluster, "/zsc").await;
    let token = a.account("recruit", Role::Consumer).await;
    let (org_id, admin) = a.org_with_admin("Acme").await;
    let (key, _) = a.key(&org_id, &admin).await;
    let mut on_b = b.keys(&token).await;
    let request = ValidateKeyRequest { email: admin, key };
    // The new account reaches the other replica's copy of the accounts within a moment.
    let mut accepted = false;
    for _ in 0..100 {
        if on_b.validate_key(request.clone()).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(accepted, "replica b never learned of the new account");
    a.op_access()
        .await
        .delete_service_account(DeleteServiceAccountRequest {
            name: "recruit".into(),
        })
        .await
        .unwrap();
    let mut refused = false;
    for _ in 0..100 {
        match on_b.validate_key(request.clone()).await {
            Err(status) if status.code() == Code::Unauthenticated => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(refused, "replica b still accepts a deleted account");
}

#[tokio::test]
async fn a_sigkilled_replica_leaves_the_others_serving_and_its_subscriber_resumes_on_a_survivor() {
    use crate::process::{spawn_server, Clients};
    let cluster = cluster().await;
    let url = cluster.url("/zsc");
    let a = TestServer::start_replica(&url, None).await;
    // The replica to kill is the real binary, killed with SIGKILL.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _log, addr) = spawn_server(dir.path(), &["--store", &url]).await;
    assert!(
        !dir.path().join("operator.token").exists(),
        "only the initialising replica writes the token"
    );
    let mut doomed = Clients::connect(&addr, &a.operator_token).await;
    let (org_id, admin) = a.org_with_admin("Acme").await;
    a.key(&org_id, &admin).await;
    let mut stream = doomed
        .keys
        .watch_revocations(watch_from(Some(0)))
        .await
        .unwrap()
        .into_inner();
    let mut cursor = 0;
    let mut store_id = String::new();
    for _ in 0..3 {
        a.regenerate(&org_id, &admin).await;
    }
    while cursor < 3 || store_id.is_empty() {
        match next(&mut stream).await.unwrap() {
            Event::Revocation(event) => {
                assert_eq!(event.sequence, cursor + 1);
                cursor = event.sequence;
            }
            Event::Checkpoint(checkpoint) => store_id = checkpoint.store_id,
        }
    }
    child.kill().await.unwrap();
    // Changes go on through the survivor while the subscriber is away...
    let mut latest = String::new();
    for _ in 0..2 {
        latest = a.regenerate(&org_id, &admin).await;
    }
    a.validate(&admin, &latest)
        .await
        .expect("the survivor serves");
    // ...and it resumes there from its cursor: same store, same sequences, nothing missed.
    let resume = WatchRevocationsRequest {
        after_sequence: Some(cursor),
        store_id,
        org_ids: Vec::new(),
    };
    let mut resumed = a.watch(resume).await.unwrap();
    let mut sequences = Vec::new();
    loop {
        match next(&mut resumed).await.unwrap() {
            Event::Revocation(event) => sequences.push(event.sequence),
            Event::Checkpoint(checkpoint) if checkpoint.sequence >= 5 => break,
            Event::Checkpoint(_) => {}
        }
    }
    assert_eq!(sequences, [4, 5]);
}

#[tokio::test]
async fn a_verifier_given_several_replicas_moves_to_a_survivor_and_misses_no_revocation() {
    use zsc::verifier::{Verifier, VerifierConfig, VerifyError};
    let cluster = cluster().await;
    let (mut a, b) = replicas(&cluster, "/verifier").await;
    let (org_id, admin) = a.org_with_admin("Acme").await;
    let (key, _) = a.key(&org_id, &admin).await;
    let desk = a.account("desk", Role::Consumer).await;
    let mut config = VerifierConfig::new(a.url(), &desk);
    config.fallback_urls = vec![b.url()];
    config.max_clock_skew = Duration::from_millis(20);
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    let verifier = Verifier::start(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !verifier.verify(&admin, &key).await.is_ok_and(|v| v.cached) {
        assert!(Instant::now() < deadline, "the key was never cached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The replica the Verifier follows goes away; a revocation is made through the other.
    a.shutdown().await;
    let new_key = b.regenerate(&org_id, &admin).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match verifier.verify(&admin, &key).await {
            Err(VerifyError::Rejected) => break,
            other => assert!(
                Instant::now() < deadline,
                "the old key is still accepted: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It follows the survivor now: the new key validates there and gets cached.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !verifier
        .verify(&admin, &new_key)
        .await
        .is_ok_and(|v| v.cached)
    {
        assert!(Instant::now() < deadline, "the new key was never cached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(verifier.stats().fresh, "fresh again, on the survivor");
    assert_eq!(
        verifier.stats().flushes,
        0,
        "resumed from its cursor, not from scratch"
    );
}
