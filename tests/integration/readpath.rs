//! The read path across replicas (feature `etcd`): ValidateKey and caller authentication are
//! answered from each replica's memory, yet once a change has answered OK on one replica, no
//! call that starts afterwards on another succeeds with what it killed, and what it created
//! works there at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tonic::Code;
use zsc::testing::EtcdCluster;

use crate::common::*;
use zsc::proto::*;

/// Rounds per kind of change.
const ROUNDS: usize = 40;
/// Callers validating on the other replica while the change is made.
const CALLERS: usize = 3;

#[derive(Clone, Copy, Debug)]
enum Kill {
    Regenerate,
    Revoke,
    Deactivate,
    Demote,
    DeleteAccount,
}

/// One org, its administrator's key, and the consumer token validating it, alive on replica
/// `a`; the change that kills one of them.
struct Round {
    org_id: String,
    admin: String,
    key: String,
    token: String,
}

impl Round {
    async fn make(a: &TestServer, consumer: &str, kill: Kill, n: usize) -> Round {
        let (org_id, admin) = a.org_with_admin(&format!("{kill:?} round {n}")).await;
        let (key, _) = a.key(&org_id, &admin).await;
        let token = match kill {
            Kill::DeleteAccount => a.account(&format!("c{n}"), Role::Consumer).await,
            _ => consumer.to_owned(),
        };
        Round {
            org_id,
            admin,
            key,
            token,
        }
    }

    fn request(&self) -> ValidateKeyRequest {
        ValidateKeyRequest {
            email: self.admin.clone(),
            key: self.key.clone(),
        }
    }

    async fn kill(&self, a: &TestServer, kill: Kill, n: usize) {
        let email = self.admin.clone();
        match kill {
            Kill::Regenerate => drop(a.regenerate(&self.org_id, &email).await),
            Kill::Revoke => {
                let request = RevokeKeyRequest {
                    org_id: self.org_id.clone(),
                };
                a.op_keys().await.revoke_key(request).await.unwrap();
            }
            Kill::Deactivate => {
                let request = DeactivateUserRequest { email };
                a.op_users().await.deactivate_user(request).await.unwrap();
            }
            Kill::Demote => {
                let profile = Profile::Standard as i32;
                let request = UpdateUserProfileRequest { email, profile };
                a.op_users()
                    .await
                    .update_user_profile(request)
                    .await
                    .unwrap();
            }
            Kill::DeleteAccount => {
                let name = format!("c{n}");
                let request = DeleteServiceAccountRequest { name };
                a.op_access()
                    .await
                    .delete_service_account(request)
                    .await
                    .unwrap();
            }
        }
    }
}

/// For `ROUNDS` rounds: callers validate on `b` while the change is made through `a`; no call
/// on `b` that starts after `a`'s OK succeeds, and what `a` created works on `b` at once.
async fn nothing_killed_through_a_succeeds_on_b_after_the_ok(kill: Kill) {
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap();
    let url = cluster.url("/zsc");
    let a = TestServer::start_replica(&url, None).await;
    let b = TestServer::start_replica(&url, Some(&a.operator_token)).await;
    let consumer = a.account("recruit", Role::Consumer).await;
    let mut after_ok = 0;
    for n in 0..ROUNDS {
        let round = Round::make(&a, &consumer, kill, n).await;
        let mut on_b = b.keys(&round.token).await;
        let first = on_b.validate_key(round.request()).await;
        assert!(first.is_ok(), "round {n}: b refused what a made: {first:?}");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut callers = Vec::new();
        for _ in 0..CALLERS {
            let (mut on_b, request) = (on_b.clone(), round.request());
            let (calls, stop) = (calls.clone(), stop.clone());
            callers.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let outcome = on_b.validate_key(request.clone()).await;
                    let code = outcome.err().map(|status| status.code());
                    calls.lock().unwrap().push((started, code));
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        round.kill(&a, kill, n).await;
        let ok = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for caller in callers {
            caller.await.unwrap();
        }
        for (started, code) in calls.lock().unwrap().iter().filter(|c| c.0 > ok) {
            after_ok += 1;
            let code = code.unwrap_or_else(|| {
                panic!(
                    "round {n}: a call on b {:?} after a's OK succeeded",
                    *started - ok
                )
            });
            assert_eq!(code, Code::Unauthenticated, "round {n}");
        }
    }
    println!("{kill:?}: {after_ok} calls on b after a's OK, all refused");
    assert!(after_ok > 0, "no call on b started after a's OK");
}

#[tokio::test]
async fn a_regenerated_key_is_refused_on_every_replica_once_regenerate_key_answers() {
    nothing_killed_through_a_succeeds_on_b_after_the_ok(Kill::Regenerate).await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_every_replica_once_revoke_key_answers() {
    nothing_killed_through_a_succeeds_on_b_after_the_ok(Kill::Revoke).await;
}

#[tokio::test]
async fn a_deactivated_owners_key_is_refused_on_every_replica_once_deactivation_answers() {
    nothing_killed_through_a_succeeds_on_b_after_the_ok(Kill::Deactivate).await;
}

#[tokio::test]
async fn a_demoted_owners_key_is_refused_on_every_replica_once_demotion_answers() {
    nothing_killed_through_a_succeeds_on_b_after_the_ok(Kill::Demote).await;
}

#[tokio::test]
async fn a_deleted_accounts_token_is_refused_on_every_replica_once_deletion_answers() {
    nothing_killed_through_a_succeeds_on_b_after_the_ok(Kill::DeleteAccount).await;
}

/// With etcd gone, a replica cannot know what it missed: ValidateKey answers UNAVAILABLE
/// (within the barrier's bound), never from its memory, even before health notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_unreachable_validation_is_unavailable_never_stale() {
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap();
    let a = TestServer::start_replica(&cluster.url("/zsc"), None).await;
    let (org_id, admin) = a.org_with_admin("Acme").await;
    let (key, _) = a.key(&org_id, &admin).await;
    a.validate(&admin, &key).await.unwrap();
    let mut keys = a.op_keys().await;
    for i in 0..3 {
        cluster.kill(i);
    }
    let request = ValidateKeyRequest {
        email: admin.clone(),
        key: key.clone(),
    };
    let refused = keys.validate_key(request).await;
    expect_code(refused, Code::Unavailable);
}

/// What the revocations acknowledged so far allow a checkpoint to say: one stamped
/// `server_time` must name a `durable_head` at or above every revocation acknowledged before.
fn assert_vouches_truly(checkpoint: &Checkpoint, acknowledged: &[(SystemTime, u64)], what: &str) {
    let stamp = checkpoint
        .server_time
        .expect("a checkpoint has a server_time");
    let server_time = SystemTime::try_from(stamp).unwrap();
    for (ok, sequence) in acknowledged {
        if *ok < server_time {
            assert!(
                checkpoint.durable_head >= *sequence,
                "{what}: at {server_time:?} it vouched for head {} but revocation {sequence} \
                 was acknowledged {:?} earlier",
                checkpoint.durable_head,
                server_time.duration_since(*ok).unwrap()
            );
        }
    }
}

/// A replica paused (SIGSTOP) while another makes revocations, then resumed: no checkpoint it
/// sends, to its open stream or to a new one, names a `durable_head` below a revocation
/// acknowledged before its `server_time`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_never_vouches_below_a_revocation_acknowledged_before_its_time() {
    use crate::process::{spawn_server, Clients};
    use zsc::proto::watch_revocations_response::Event;
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap();
    let url = cluster.url("/zsc");
    let a = TestServer::start_replica(&url, None).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--store", &url, "--heartbeat-interval", "100ms"];
    let (child, _log, addr) = spawn_server(dir.path(), &extra).await;
    let pid = child.id().expect("running").to_string();
    let mut paused = Clients::connect(&addr, &a.operator_token).await;
    let (org_id, admin) = a.org_with_admin("Acme").await;
    a.key(&org_id, &admin).await;
    let mut open = paused
        .keys
        .watch_revocations(watch_from(None))
        .await
        .unwrap()
        .into_inner();
    next(&mut open).await.unwrap();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let mut acknowledged = Vec::new();
    for _ in 0..20 {
        a.regenerate(&org_id, &admin).await;
        let head = read_log(&a).await.last().unwrap().sequence;
        acknowledged.push((SystemTime::now(), head));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal("-CONT");
    let last = acknowledged.last().unwrap().1;
    for _ in 0..3 {
        let request = watch_from(None);
        let mut fresh = paused
            .keys
            .watch_revocations(request)
            .await
            .unwrap()
            .into_inner();
        match next(&mut fresh).await.unwrap() {
            Event::Checkpoint(first) => assert_vouches_truly(&first, &acknowledged, "new stream"),
            other => panic!("a new stream starts with a checkpoint, not {other:?}"),
        }
    }
    // Every checkpoint until it has caught up, and ten heartbeats more.
    let (mut checkpoints, mut caught_up) = (0, 0);
    while caught_up < 10 {
        match next(&mut open).await.unwrap() {
            Event::Checkpoint(checkpoint) => {
                checkpoints += 1;
                assert_vouches_truly(&checkpoint, &acknowledged, "open stream");
                if checkpoint.sequence >= last && checkpoint.durable_head >= last {
                    caught_up += 1;
                }
            }
            Event::Revocation(_) => {}
        }
    }
    println!("{checkpoints} checkpoints on the open stream after resuming, all true");
    drop(child);
}
