//! The history checker's finding, made a test (feature `etcd`): while an etcd member is cut
//! off from its peers (the history harness's proxy on the peer ports) or paused (SIGSTOP),
//! again and again, and two replicas revoke keys, no ValidateKey that starts after a
//! revocation's OK, on any replica, answers a `sequence` below that revocation. One replica
//! reaches etcd through the member that is cut off only, one through every member.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use zsc::testing::EtcdCluster;

use crate::common::*;
use crate::history::proxy::Partition;
use zsc::proto::*;

/// How long each fault is held: past the barrier's 3 s bound, so that the health probe of a
/// replica whose member is cut off fails (it goes NOT_SERVING) and it must come back.
const HOLD: Duration = Duration::from_secs(4);

/// Faults, each held for [`HOLD`], on the member replica `b` reaches and on the leader in
/// turn: two cuts, then two pauses (SIGSTOP), and so on.
fn cuts() -> usize {
    std::env::var("ZSC_STALE_CUTS").map_or(8, |n| n.parse().expect("a number of cuts"))
}

/// What the run saw: (when the OK arrived, the revocation's sequence), and (when the call
/// started, the sequence it answered, the replica).
#[derive(Default)]
struct Seen {
    acked: Vec<(SystemTime, u64)>,
    answers: Vec<(SystemTime, u64, &'static str)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_validation_answers_a_head_below_a_revocation_acknowledged_before_it_while_members_are_cut_off(
) {
    let partition = Partition::new(3);
    let (p, handle) = (partition.clone(), tokio::runtime::Handle::current());
    let mut cluster = tokio::task::spawn_blocking(move || {
        let _runtime = handle.enter();
        EtcdCluster::start_behind(3, &[], |i, port| p.proxy(i, port))
    })
    .await
    .unwrap();
    let cut_member = 2;
    let only_cut = format!(
        "etcd://127.0.0.1:{}/stale",
        cluster.members[cut_member].client_port
    );
    let a = TestServer::start_replica(&cluster.url("/stale"), None).await;
    let b = TestServer::start_replica(&only_cut, Some(&a.operator_token)).await;
    let c = TestServer::start_replica(&cluster.url("/stale"), Some(&a.operator_token)).await;
    let (stable, admin) = a.org_with_admin("Stable").await;
    let (key, _) = a.key(&stable, &admin).await;
    let (churn, churner) = a.org_with_admin("Churn").await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(revoke_until(
        a.op_keys().await,
        (churn, churner),
        seen.clone(),
        stop.clone(),
    )));
    let (churn, churner) = a.org_with_admin("Churn on c").await;
    tasks.push(tokio::spawn(revoke_until(
        c.op_keys().await,
        (churn, churner),
        seen.clone(),
        stop.clone(),
    )));
    for (server, name) in [(&b, "b (the cut member only)"), (&c, "c (every member)")] {
        for _ in 0..2 {
            let request = ValidateKeyRequest {
                email: admin.clone(),
                key: key.clone(),
            };
            let keys = server.op_keys().await;
            let (seen, stop) = (seen.clone(), stop.clone());
            tasks.push(tokio::spawn(validate_until(
                keys, request, name, seen, stop,
            )));
        }
    }
    for n in 0..cuts() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let member = match n % 2 {
            0 => cut_member,
            _ => tokio::task::block_in_place(|| cluster.leader()).unwrap_or(cut_member),
        };
        let pid = cluster.pid(member).expect("running") as i32;
        let pause = (n / 2) % 2 == 1;
        hold(&partition, member, pid, pause, true);
        tokio::time::sleep(HOLD).await;
        hold(&partition, member, pid, pause, false);
        tokio::task::block_in_place(|| cluster.wait_all_healthy());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    let stale: Vec<String> = seen
        .answers
        .iter()
        .filter_map(|(invoked, sequence, on)| {
            let (at, acked) = seen
                .acked
                .iter()
                .find(|(at, acked)| at <= invoked && acked > sequence)?;
            let before = invoked.duration_since(*at).unwrap();
            Some(format!(
                "on {on}: answered {sequence}, below revocation {acked} acknowledged {before:?} \
                 before the call"
            ))
        })
        .collect();
    println!(
        "{} cuts, {} revocations acknowledged, {} validations answered, {} below an \
         acknowledged revocation",
        cuts(),
        seen.acked.len(),
        seen.answers.len(),
        stale.len()
    );
    assert!(
        seen.acked.len() > cuts(),
        "too few revocations to prove anything"
    );
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

/// Cuts member `member` off from its peers, or (`pause`) stops its process; `on: false` heals.
fn hold(partition: &Partition, member: usize, pid: i32, pause: bool, on: bool) {
    if !pause {
        return partition.cut(member, on);
    }
    let signal = if on { libc::SIGSTOP } else { libc::SIGCONT };
    // SAFETY: kill(2) on an etcd member this test started.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Generates and revokes the churn org's key through `keys` until `stop`, noting each OK.
async fn revoke_until(
    mut keys: zsc::proto::key_service_client::KeyServiceClient<Authed>,
    (org_id, actor): (String, String),
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let generate = GenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: actor.clone(),
        };
        let _ = keys.generate_key(generate).await;
        let revoke = RevokeKeyRequest {
            org_id: org_id.clone(),
        };
        if let Ok(response) = keys.revoke_key(revoke).await {
            let event = response.into_inner().event.expect("a revocation");
            let acked = (SystemTime::now(), event.sequence);
            seen.lock().unwrap().acked.push(acked);
        }
    }
}

/// Validates `request` through `keys` until `stop`, noting each answer's sequence.
async fn validate_until(
    mut keys: zsc::proto::key_service_client::KeyServiceClient<Authed>,
    request: ValidateKeyRequest,
    on: &'static str,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let invoked = SystemTime::now();
        match keys.validate_key(request.clone()).await {
            Ok(answer) => {
                let answer = (invoked, answer.into_inner().sequence, on);
                seen.lock().unwrap().answers.push(answer);
            }
            // Refused while the replica cannot confirm (UNAVAILABLE): not an answer.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
