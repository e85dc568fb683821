//! The kit's fault scenarios: the stream dropped and the server stopped, a paused server, a
//! proxy that holds the stream's bytes back, a restore (a new store id), a replica failing
//! over to another.

use std::time::Duration;

use tokio::time::Instant;
use zsc::proto::{access_service_client::AccessServiceClient, CreateServiceAccountRequest, Role};

use super::line::{Answer, LineVerifier, Settings, VerifierCommand};
use super::proxy::{Mode, Proxy};
use super::*;

/// Polls for three bounds after `since`: never a stale ACCEPT, and failing closed by the end.
async fn fails_closed(verifier: &mut LineVerifier, email: &str, key: &str, since: Instant) {
    let answers = no_accept_past_the_bound(verifier, email, key, since, MAX_STALENESS * 3).await;
    assert_eq!(
        answers.last(),
        Some(&Answer::Unavailable),
        "fail closed: the last answers {:?} {}",
        last(&answers),
        verifier.context()
    );
}

/// The last few answers, for a failure message.
fn last(answers: &[Answer]) -> &[Answer] {
    &answers[answers.len().saturating_sub(5)..]
}

/// A kit whose Verifier follows the server through a proxy, the key cached: (the kit, the
/// proxy, the Verifier, the administrator).
async fn behind_a_proxy(command: &VerifierCommand) -> (Kit, Proxy, LineVerifier, String) {
    let kit = Kit::start().await;
    let proxy = Proxy::start(kit.server.addr).await;
    let mut verifier = kit
        .verifier_of(command, vec![proxy.url()], MAX_STALENESS)
        .await;
    let admin = kit.admin.clone();
    cached(&mut verifier, &admin, &kit.key).await;
    (kit, proxy, verifier, admin)
}

#[tokio::test]
async fn kit_a_dropped_stream_or_a_stopped_server_fails_closed_and_nothing_is_missed() {
    for command in verifiers() {
        dropped_then_stopped(&command).await;
    }
}

async fn dropped_then_stopped(command: &VerifierCommand) {
    let (mut kit, proxy, mut verifier, admin) = behind_a_proxy(command).await;

    // The stream dropped, and the path stays down: the cache stops answering within the bound.
    proxy.set(Mode::Cut);
    fails_closed(&mut verifier, &admin, &kit.key, Instant::now()).await;
    let stats = verifier.stats().await;
    assert!(!stats.fresh, "fresh with the path cut: {stats:?}");
    // A revocation while the Verifier is away is applied when it is back, from its cursor.
    let (_, new_key) = kit.regenerate().await.await.unwrap();
    proxy.set(Mode::Pass);
    let what = "the key regenerated while the stream was down";
    until(&mut verifier, &admin, &kit.key, what, |a| {
        *a == Answer::Reject
    })
    .await;
    cached(&mut verifier, &admin, &new_key).await;
    let stats = verifier.stats().await;
    assert!(stats.connected && stats.fresh, "back: {stats:?}");
    assert_eq!(
        (stats.applied_sequence, stats.flushes),
        (Some(1), 0),
        "resumed from its cursor, without a flush {}",
        verifier.context()
    );

    // The server stopped: the same.
    let dir = kit.stop_server().await;
    fails_closed(&mut verifier, &admin, &new_key, Instant::now()).await;
    kit.start_server(dir).await;
    cached(&mut verifier, &admin, &new_key).await;
    verifier.quit().await;
}

#[tokio::test]
async fn kit_a_paused_server_gives_no_stale_accept_and_the_verifier_recovers_after_resume() {
    for command in verifiers() {
        paused(&command).await;
    }
}

/// A consumer account's token, made by the operator on the server at `addr`.
pub(super) async fn consumer(addr: &str, operator: &str) -> String {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = zsc::client::Bearer::new(operator).unwrap();
    let request = CreateServiceAccountRequest {
        name: "desk".into(),
        role: Role::Consumer as i32,
    };
    let response = AccessServiceClient::with_interceptor(channel, bearer)
        .create_service_account(request)
        .await
        .unwrap();
    response.into_inner().token
}

/// A Verifier following the server at `addr` with the kit's bound.
pub(super) async fn verifier_at(
    command: &VerifierCommand,
    addr: &str,
    token: &str,
) -> LineVerifier {
    let settings = Settings {
        urls: vec![format!("http://{addr}")],
        token: token.to_owned(),
        max_staleness: MAX_STALENESS,
        max_clock_skew: MAX_CLOCK_SKEW,
    };
    LineVerifier::start(command, &settings).await
}

fn signal(child: &tokio::process::Child, signal: libc::c_int) {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, which it keeps until we reap it.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

async fn paused(command: &VerifierCommand) {
    use crate::process::{operator_token, spawn_server, Clients};
    let dir = tempfile::tempdir().unwrap();
    let heartbeat = format!("{}ms", HEARTBEAT.as_millis());
    let extra = ["--heartbeat-interval", &heartbeat];
    let (mut child, _log, addr) = spawn_server(dir.path(), &extra).await;
    let operator = operator_token(dir.path());
    let mut clients = Clients::connect(&addr, &operator).await;
    let (org_id, admin, key) = clients.org_with_key("Acme").await;
    let token = consumer(&addr, &operator).await;
    let mut verifier = verifier_at(command, &addr, &token).await;
    cached(&mut verifier, &admin, &key).await;

    signal(&child, libc::SIGSTOP);
    let paused_at = Instant::now();
    let answers =
        no_accept_past_the_bound(&mut verifier, &admin, &key, paused_at, MAX_STALENESS * 3).await;
    signal(&child, libc::SIGCONT);
    assert!(
        !answers.last().unwrap().accepted(),
        "still accepting when resumed: the last answers {:?}",
        last(&answers)
    );
    // Back: the cache is used again, and a revocation made now is applied.
    cached(&mut verifier, &admin, &key).await;
    let mut keys = clients.keys.clone();
    let request = zsc::proto::RegenerateKeyRequest {
        org_id,
        actor_email: admin.clone(),
    };
    let regenerate = acknowledged(async move { keys.regenerate_key(request).await.unwrap() });
    rejection_after(&mut verifier, &admin, &key, regenerate).await;
    verifier.quit().await;
    child.kill().await.unwrap();
}

#[tokio::test]
async fn kit_a_proxy_holding_the_streams_bytes_makes_the_cache_stop_answering_within_the_bound() {
    for command in verifiers() {
        held(&command).await;
    }
}

async fn held(command: &VerifierCommand) {
    let (kit, proxy, mut verifier, admin) = behind_a_proxy(command).await;

    // Nothing the server sends gets through from here on; the last checkpoint that did was
    // stamped by the server before this instant.
    proxy.set(Mode::Hold);
    let held_at = Instant::now();
    // A revocation the Verifier cannot hear of while the bytes are held.
    let (_, new_key) = kit.regenerate().await.await.unwrap();
    let answers =
        no_accept_past_the_bound(&mut verifier, &admin, &kit.key, held_at, MAX_STALENESS * 3).await;
    assert!(
        !answers.last().unwrap().accepted(),
        "still accepting: the last answers {:?}",
        last(&answers)
    );
    proxy.set(Mode::Pass);
    let what = "the key regenerated while the bytes were held";
    until(&mut verifier, &admin, &kit.key, what, |a| {
        *a == Answer::Reject
    })
    .await;
    cached(&mut verifier, &admin, &new_key).await;
    verifier.quit().await;
}

#[tokio::test]
async fn kit_a_restore_is_a_new_store_and_the_verifier_flushes() {
    for command in verifiers() {
        restored(&command).await;
    }
}

async fn restored(command: &VerifierCommand) {
    let mut kit = Kit::start().await;
    let mut verifier = kit.verifier(command).await;
    let admin = kit.admin.clone();
    // A backup taken while the first key is the org's.
    let dir = kit.stop_server().await;
    let work = tempfile::tempdir().unwrap();
    let backup = work.path().join("zsc.backup");
    zsc::store::backup(dir.path(), &backup).unwrap();
    kit.start_server(dir).await;
    // Two regenerations later the Verifier has the third key cached, at sequence 2.
    kit.regenerate().await.await.unwrap();
    let (_, third) = kit.regenerate().await.await.unwrap();
    cached(&mut verifier, &admin, &third).await;
    let old_store = kit.server.store_id().await;

    // Restored from the backup: a new store whose log is at 0 and that never saw the third key.
    kit.stop_server().await;
    let restored = tempfile::tempdir().unwrap();
    zsc::store::restore(&backup, restored.path()).unwrap();
    std::fs::write(
        restored.path().join("operator.token"),
        &kit.server.operator_token,
    )
    .unwrap();
    kit.start_server(restored).await;
    let new_store = kit.server.store_id().await;
    assert_ne!(new_store, old_store);
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let stats = verifier.stats().await;
        if stats.store_id.as_deref() == Some(new_store.as_str()) {
            assert!(stats.flushes >= 1, "a new store without a flush: {stats:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never followed the new store: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let what = "the key only the old store knew";
    let answer = until(&mut verifier, &admin, &third, what, |a| {
        *a != Answer::Unavailable
    })
    .await;
    assert_eq!(answer, Answer::Reject, "{}", verifier.context());
    // The first key is the org's again; its revocation is sequence 1 of the new store, which
    // a Verifier that kept its old cursor (2) would skip.
    cached(&mut verifier, &admin, &kit.key).await;
    rejection_after(&mut verifier, &admin, &kit.key, kit.regenerate().await).await;
    verifier.quit().await;
}

#[cfg(not(feature = "etcd"))]
#[tokio::test]
async fn kit_a_replica_failing_over_to_another_misses_nothing_and_does_not_flush() {
    println!(
        "kit: SKIPPED replica failover: it needs the etcd feature (two sled servers cannot share a store); `cargo test --features etcd` runs it"
    );
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn kit_a_replica_failing_over_to_another_misses_nothing_and_does_not_flush() {
    for command in verifiers() {
        failover(&command).await;
    }
}

/// Replicas keep the default heartbeat (1 s), so this scenario's bound is wider.
#[cfg(feature = "etcd")]
async fn failover(command: &VerifierCommand) {
    let cluster = tokio::task::spawn_blocking(|| zsc::testing::EtcdCluster::start(1))
        .await
        .unwrap();
    let url = cluster.url("/kit");
    let a = TestServer::start_replica(&url, None).await;
    let b = TestServer::start_replica(&url, Some(&a.operator_token)).await;
    let mut kit = Kit::on(a).await;
    let urls = vec![kit.server.url(), b.url()];
    let bound = Duration::from_secs(3);
    let mut verifier = kit.verifier_of(command, urls, bound).await;
    let admin = kit.admin.clone();
    cached(&mut verifier, &admin, &kit.key).await;
    let store = verifier.stats().await.store_id;

    // The replica followed goes away; a revocation is made through the other.
    kit.server.shutdown().await;
    let mut keys = b.op_keys().await;
    let request = zsc::proto::RegenerateKeyRequest {
        org_id: kit.org_id.clone(),
        actor_email: admin.clone(),
    };
    let regenerate = acknowledged(async move {
        let response = keys.regenerate_key(request).await.expect("regenerate");
        response.into_inner().key
    });
    let (_, new_key) = rejection_within(&mut verifier, &admin, &kit.key, regenerate, bound).await;
    cached(&mut verifier, &admin, &new_key).await;
    let stats = verifier.stats().await;
    assert_eq!(
        (stats.store_id, stats.flushes, stats.applied_sequence),
        (store, 0, Some(1)),
        "resumed on the survivor from its cursor {}",
        verifier.context()
    );
    verifier.quit().await;
}
