//! Who has dropped it: real Verifiers report what they applied, and the console asks which
//! subscribed services confirmed a revocation (ConfirmationService).

use std::time::{Duration, SystemTime};

use tonic::Code;
use zsc::client::Bearer;
use zsc::proto::confirmation_service_client::ConfirmationServiceClient;
use zsc::proto::*;
use zsc::verifier::{Verifier, VerifierConfig};

use crate::common::*;

pub async fn confirmations(server: &TestServer, token: &str) -> ConfirmationServiceClient<Authed> {
    ConfirmationServiceClient::with_interceptor(server.channel().await, Bearer::new(token).unwrap())
}

pub fn by_key(key_id: &str) -> GetRevocationConfirmationsRequest {
    GetRevocationConfirmationsRequest {
        sequence: 0,
        key_id: key_id.into(),
    }
}

/// Asks until `done` holds for the answer (10 s at most), and returns that answer.
pub async fn until_answer(
    client: &mut ConfirmationServiceClient<Authed>,
    request: GetRevocationConfirmationsRequest,
    what: &str,
    done: impl Fn(&GetRevocationConfirmationsResponse) -> bool,
) -> GetRevocationConfirmationsResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client
            .get_revocation_confirmations(request.clone())
            .await
            .expect("query")
            .into_inner();
        if done(&answer) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (10 s at most) until the Verifier has applied its first checkpoint.
async fn following(verifier: &Verifier) {
    for _ in 0..1000 {
        if verifier.stats().applied_sequence.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the Verifier never applied a checkpoint: {:?}",
        verifier.stats()
    );
}

pub fn confirmed_by<'a>(
    answer: &'a GetRevocationConfirmationsResponse,
    service: &str,
) -> Option<&'a RevocationConfirmation> {
    answer.confirmed.iter().find(|c| c.service == service)
}

fn pending_names(answer: &GetRevocationConfirmationsResponse) -> Vec<&str> {
    answer.pending.iter().map(|p| p.service.as_str()).collect()
}

fn time(t: &Option<prost_types::Timestamp>) -> SystemTime {
    SystemTime::try_from(t.expect("time set")).unwrap()
}

fn duration(d: &Option<prost_types::Duration>) -> Duration {
    Duration::try_from(d.expect("duration set")).expect("not negative")
}

/// The Verifier's account ("desk") is named as confirmed, with its lag; an account that holds a
/// stream but never reports ("books") is named as not confirmed; both by key_id and sequence.
#[tokio::test]
async fn a_following_verifier_confirms_and_a_silent_subscriber_does_not() {
    let server = TestServer::start().await;
    let desk = server.account("desk", Role::Consumer).await;
    let books = server.account("books", Role::Consumer).await;
    let console = server.account("crm", Role::Console).await;
    let verifier = Verifier::start(VerifierConfig::new(server.url(), &desk)).unwrap();
    let _books_stream = server.subscribe(&books).await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (_, old_key_id) = server.key(&org_id, &admin).await;
    let mut console = confirmations(&server, &console).await;
    // Until the Verifier has reported, desk is not known as subscribed (or pending).
    following(&verifier).await;

    server.regenerate(&org_id, &admin).await;
    let answer = until_answer(
        &mut console,
        by_key(&old_key_id),
        "desk's confirmation",
        |a| confirmed_by(a, "desk").is_some(),
    )
    .await;
    let revocation = answer.revocation.clone().expect("the revocation");
    assert_eq!(revocation.key_id, old_key_id);
    assert_eq!(revocation.reason(), RevocationReason::Regenerated);
    let desk_confirmed = confirmed_by(&answer, "desk").unwrap();
    let lag = duration(&desk_confirmed.lag);
    let confirm_time = time(&desk_confirmed.confirm_time);
    assert_eq!(
        confirm_time
            .duration_since(time(&revocation.revoke_time))
            .unwrap(),
        lag,
        "the lag is the confirmation time minus the revocation's"
    );
    assert_eq!(pending_names(&answer), ["books"], "{answer:?}");
    assert_eq!(answer.pending[0].applied_sequence, 0);
    assert!(answer.pending[0].last_report_time.is_none());
    assert_eq!(answer.confirmed.len(), 1, "{answer:?}");

    let by_sequence = console
        .get_revocation_confirmations(GetRevocationConfirmationsRequest {
            sequence: revocation.sequence,
            key_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_sequence.revocation, answer.revocation);
    assert_eq!(
        confirmed_by(&by_sequence, "desk").unwrap().confirm_time,
        desk_confirmed.confirm_time
    );
}

/// The reporting service is the token's account: a report names no one else, a console cannot
/// report, no token is refused; a foreign store or a sequence past the head records nothing.
#[tokio::test]
async fn a_report_is_credited_to_its_token_only() {
    let server = TestServer::start().await;
    let desk = server.account("desk", Role::Consumer).await;
    let books = server.account("books", Role::Consumer).await;
    let console_token = server.account("crm", Role::Console).await;
    let _desk_stream = server.subscribe(&desk).await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (_, key_id) = server.key(&org_id, &admin).await;
    server.regenerate(&org_id, &admin).await;
    let store_id = server.store_id().await;
    let head = read_log(&server).await.last().unwrap().sequence;
    let report = |applied_sequence: u64, store_id: &str| ReportAppliedRequest {
        applied_sequence,
        store_id: store_id.into(),
    };

    // Refused reports: they record nothing.
    let mut as_books = confirmations(&server, &books).await;
    expect_code(
        as_books
            .report_applied(report(head, "store_elsewhere"))
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        as_books.report_applied(report(head + 1, &store_id)).await,
        Code::OutOfRange,
    );
    let mut console = confirmations(&server, &console_token).await;
    expect_code(
        console.report_applied(report(head, &store_id)).await,
        Code::PermissionDenied,
    );
    let mut anonymous = ConfirmationServiceClient::new(server.channel().await);
    expect_code(
        anonymous.report_applied(report(head, &store_id)).await,
        Code::Unauthenticated,
    );
    let answer = console
        .get_revocation_confirmations(by_key(&key_id))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.confirmed.is_empty(), "{answer:?}");
    assert_eq!(pending_names(&answer), ["desk"], "{answer:?}");

    // books' report confirms books, and only books: desk is still pending.
    let received = as_books
        .report_applied(report(head, &store_id))
        .await
        .unwrap()
        .into_inner();
    let answer = console
        .get_revocation_confirmations(by_key(&key_id))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = answer
        .confirmed
        .iter()
        .map(|c| c.service.as_str())
        .collect();
    assert_eq!(names, ["books"], "{answer:?}");
    assert_eq!(answer.confirmed[0].confirm_time, received.receive_time);
    assert_eq!(pending_names(&answer), ["desk"], "{answer:?}");
}

/// Confirmations are written to the store: after a restart (no Verifier running) the answer
/// is the same, confirmation time included.
#[tokio::test]
async fn confirmations_survive_a_restart() {
    let server = TestServer::start().await;
    let desk = server.account("desk", Role::Consumer).await;
    let console_token = server.account("crm", Role::Console).await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (_, key_id) = server.key(&org_id, &admin).await;
    server.regenerate(&org_id, &admin).await;
    let store_id = server.store_id().await;
    let head = read_log(&server).await.last().unwrap().sequence;
    let mut as_desk = confirmations(&server, &desk).await;
    let request = ReportAppliedRequest {
        applied_sequence: head,
        store_id,
    };
    as_desk.report_applied(request).await.unwrap();
    let mut console = confirmations(&server, &console_token).await;
    let before = console
        .get_revocation_confirmations(by_key(&key_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.confirmed.len(), 1, "{before:?}");

    let server = server.restart().await;
    let mut console = confirmations(&server, &console_token).await;
    let after = console
        .get_revocation_confirmations(by_key(&key_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.confirmed, before.confirmed);
}

/// On etcd: a Verifier follows and reports to replica A; replica B answers who confirmed (and
/// names the silent subscriber streaming from A as not confirmed).
#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_report_received_by_one_replica_is_answered_by_another() {
    let cluster = tokio::task::spawn_blocking(|| zsc::testing::EtcdCluster::start(3))
        .await
        .unwrap();
    let url = cluster.url("/confirmations");
    let a = TestServer::start_replica(&url, None).await;
    let b = TestServer::start_replica(&url, Some(&a.operator_token)).await;
    let desk = a.account("desk", Role::Consumer).await;
    let books = a.account("books", Role::Consumer).await;
    let console_token = a.account("crm", Role::Console).await;
    let verifier = Verifier::start(VerifierConfig::new(a.url(), &desk)).unwrap();
    let _books_stream = a.subscribe(&books).await;
    let (org_id, admin) = a.org_with_admin("Acme").await;
    let (_, key_id) = a.key(&org_id, &admin).await;
    following(&verifier).await;
    a.regenerate(&org_id, &admin).await;

    let mut on_b = confirmations(&b, &console_token).await;
    let answer = until_answer(
        &mut on_b,
        by_key(&key_id),
        "desk confirmed, books pending, on B",
        |a| confirmed_by(a, "desk").is_some() && a.pending.iter().any(|p| p.service == "books"),
    )
    .await;
    assert_eq!(answer.confirmed.len(), 1, "{answer:?}");
    assert_eq!(answer.pending.len(), 1, "{answer:?}");
}

/// The metrics: how far behind each subscribed service is, and once every subscribed service
/// has confirmed a revocation, one observation of the time it took.
#[tokio::test]
async fn the_metrics_show_who_is_behind_and_when_everyone_confirmed() {
    use crate::operations::{sample, scrape};
    let server = TestServer::start_with_metrics().await;
    let metrics = server.metrics_addr.unwrap();
    let desk = server.account("desk", Role::Consumer).await;
    let books = server.account("books", Role::Consumer).await;
    let verifier = Verifier::start(VerifierConfig::new(server.url(), &desk)).unwrap();
    let _books_stream = server.subscribe(&books).await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;
    following(&verifier).await;
    server.regenerate(&org_id, &admin).await;

    let until = |what: &'static str, done: fn(&str) -> bool| async move {
        for _ in 0..200 {
            let text = scrape(metrics, "/metrics").await;
            if done(&text) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "timed out waiting for {what}: {}",
            scrape(metrics, "/metrics").await
        );
    };
    let text = until("books behind, desk current", |t| {
        t.contains("zsc_revocation_confirmation_behind_sequences{service=\"books\"} 1")
            && t.contains("zsc_revocation_confirmation_behind_sequences{service=\"desk\"} 0")
    })
    .await;
    assert_eq!(sample(&text, "zsc_revocation_subscribed_services"), 2.0);
    assert_eq!(sample(&text, "zsc_revocation_unconfirmed_services"), 1.0);
    assert_eq!(
        sample(&text, "zsc_revocation_confirmation_seconds_count"),
        0.0
    );

    let store_id = server.store_id().await;
    let request = ReportAppliedRequest {
        applied_sequence: 1,
        store_id,
    };
    confirmations(&server, &books)
        .await
        .report_applied(request)
        .await
        .unwrap();
    let text = until("one revocation confirmed by everyone", |t| {
        t.contains("zsc_revocation_confirmation_seconds_count 1")
    })
    .await;
    assert_eq!(sample(&text, "zsc_revocation_unconfirmed_services"), 0.0);
    assert_eq!(
        sample(&text, "zsc_revocation_confirmation_behind_max_seconds"),
        0.0
    );
    assert!(sample(&text, "zsc_revocation_confirmation_seconds_sum") >= 0.0);
}
