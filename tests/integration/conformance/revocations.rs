//! The kit's revocation scenarios: a revocation while the key is cached (RegenerateKey,
//! RevokeKey), the owner deactivated or demoted, a revocation racing an in-flight ValidateKey,
//! and a rate-limited ValidateKey.

use std::time::Duration;

use tokio::time::Instant;
use zsc::proto::*;

use super::line::{Answer, VerifierCommand};
use super::*;

/// Regenerations per Verifier in the revocation scenario (ZSC_KIT_ROUNDS for more, e.g. 50
/// for the performance page's p50/p99).
fn rounds() -> usize {
    std::env::var("ZSC_KIT_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10)
}

/// The median and the largest of `ms`.
fn summary(ms: &mut [f64]) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "p50 {:.1} ms, max {:.1} ms over {}",
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        ms.len()
    )
}

#[tokio::test]
async fn kit_a_cached_key_is_rejected_within_the_bound_after_regenerate_or_revoke() {
    for command in verifiers() {
        regenerate_then_revoke(&command).await;
    }
}

async fn regenerate_then_revoke(command: &VerifierCommand) {
    let kit = Kit::start().await;
    let mut verifier = kit.verifier(command).await;
    let mut key = kit.key.clone();
    let mut latencies = Vec::new();
    for _ in 0..rounds() {
        let (org_id, _) = cached(&mut verifier, &kit.admin, &key).await;
        assert_eq!(org_id, kit.org_id);
        let (ms, new_key) =
            rejection_after(&mut verifier, &kit.admin, &key, kit.regenerate().await).await;
        latencies.push(ms);
        key = new_key;
    }
    cached(&mut verifier, &kit.admin, &key).await;
    let mut keys = kit.server.op_keys().await;
    let request = RevokeKeyRequest {
        org_id: kit.org_id.clone(),
    };
    let revoke = acknowledged(async move { keys.revoke_key(request).await.expect("revoke") });
    let (revoked, _) = rejection_after(&mut verifier, &kit.admin, &key, revoke).await;
    println!(
        "kit: {}: OK -> first rejection after RegenerateKey: {}; after RevokeKey: {revoked:.1} ms",
        verifier.name,
        summary(&mut latencies)
    );
    let applied = verifier.stats().await.applied_sequence;
    assert_eq!(applied, Some(rounds() as u64 + 1), "{}", verifier.context());
    verifier.quit().await;
}

#[tokio::test]
async fn kit_deactivating_or_demoting_the_owner_drops_the_cached_key() {
    for command in verifiers() {
        deactivate_then_demote(&command).await;
    }
}

async fn deactivate_then_demote(command: &VerifierCommand) {
    let kit = Kit::start().await;
    let mut verifier = kit.verifier(command).await;
    let admin = kit.admin.clone();
    cached(&mut verifier, &admin, &kit.key).await;
    // The right key with another email, a malformed key and a request the protocol lacks.
    let stranger = verifier.verify("someone@else.example.com", &kit.key).await;
    assert_eq!(stranger, Answer::Reject, "{}", verifier.context());
    let malformed = verifier.verify(&admin, "zsc_nope").await;
    assert_eq!(malformed, Answer::Reject, "{}", verifier.context());
    let unknown = verifier.ask("frobnicate").await;
    assert!(unknown.starts_with("ERROR "), "{unknown:?}");

    let mut users = kit.server.op_users().await;
    let request = DeactivateUserRequest {
        email: admin.clone(),
    };
    let deactivate = acknowledged(async move { users.deactivate_user(request).await.unwrap() });
    let (deactivated, _) = rejection_after(&mut verifier, &admin, &kit.key, deactivate).await;

    let mut users = kit.server.op_users().await;
    let reactivate = ReactivateUserRequest {
        email: admin.clone(),
    };
    users.reactivate_user(reactivate).await.unwrap();
    let (key, _) = kit.server.key(&kit.org_id, &admin).await;
    cached(&mut verifier, &admin, &key).await;
    let demote = UpdateUserProfileRequest {
        email: admin.clone(),
        profile: Profile::Standard as i32,
    };
    let demote = acknowledged(async move { users.update_user_profile(demote).await.unwrap() });
    let (demoted, _) = rejection_after(&mut verifier, &admin, &key, demote).await;
    println!(
        "kit: {}: OK -> first rejection after deactivation {deactivated:.1} ms, demotion {demoted:.1} ms",
        verifier.name
    );
    let stats = verifier.stats().await;
    assert_eq!(stats.applied_sequence, Some(2), "{}", verifier.context());
    assert_eq!(stats.cached_keys, 0, "{stats:?}");
    verifier.quit().await;
}

/// Rounds of a verify of an uncached key racing its regeneration.
const RACE_ROUNDS: u64 = 25;

#[tokio::test]
async fn kit_a_revocation_racing_an_in_flight_validate_key_is_never_cached() {
    for command in verifiers() {
        race(&command).await;
    }
}

async fn race(command: &VerifierCommand) {
    let kit = Kit::start().await;
    let mut verifier = kit.verifier(command).await;
    let deadline = Instant::now() + EVENTUALLY;
    while !verifier.stats().await.fresh {
        assert!(
            Instant::now() < deadline,
            "never fresh {}",
            verifier.context()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut key, mut accepted) = (kit.key.clone(), 0);
    for round in 1..=RACE_ROUNDS {
        // The regeneration starts 0-3 ms after the verify, so the ValidateKey it makes is read
        // sometimes before the revocation and sometimes after.
        let delay = Duration::from_micros(rand::random_range(0..3_000));
        let regenerate = {
            let mut keys = kit.server.op_keys().await;
            let request = RegenerateKeyRequest {
                org_id: kit.org_id.clone(),
                actor_email: kit.admin.clone(),
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                keys.regenerate_key(request).await.expect("regenerate")
            })
        };
        let during = verifier.verify(&kit.admin, &key).await;
        accepted += usize::from(during.accepted());
        let new_key = regenerate.await.unwrap().into_inner().key;
        let deadline = Instant::now() + EVENTUALLY;
        while verifier.stats().await.applied_sequence < Some(round) {
            assert!(
                Instant::now() < deadline,
                "revocation {round} never applied"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let after = verifier.verify(&kit.admin, &key).await;
        assert_eq!(
            after,
            Answer::Reject,
            "round {round}: the revocation was applied, yet the old key is not rejected (cached from an answer read before it?) {}",
            verifier.context()
        );
        key = new_key;
    }
    println!(
        "kit: {}: in-flight race: {accepted} of {RACE_ROUNDS} verifies answered before their revocation, none cached past it",
        verifier.name
    );
    verifier.quit().await;
}

#[tokio::test]
async fn kit_resource_exhausted_from_validate_key_fails_closed_for_that_call() {
    let help = crate::process::run_zsc(&["serve", "--help"]).await;
    if !String::from_utf8_lossy(&help.stdout).contains("--rate-limit") {
        println!(
            "kit: SKIPPED resource_exhausted scenario: this zsc has no `serve --rate-limit` (per-caller rate limits are not merged yet)"
        );
        return;
    }
    for command in verifiers() {
        rate_limited(&command).await;
    }
}

/// With a low per-caller limit, a burst of ValidateKey calls (misses) meets RESOURCE_EXHAUSTED:
/// those calls fail closed (UNAVAILABLE: never ACCEPT, never REJECT of a good key), the
/// cached key still answers, and the good key is accepted once the limit lets calls through.
async fn rate_limited(command: &VerifierCommand) {
    use crate::process::{operator_token, spawn_server, Clients};
    let limit = std::env::var("ZSC_KIT_RATE_LIMIT").unwrap_or_else(|_| "2/s".into());
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--heartbeat-interval", "100ms", "--rate-limit", &limit];
    let (_child, _log, addr) = spawn_server(dir.path(), &extra).await;
    let operator = operator_token(dir.path());
    let mut clients = Clients::connect(&addr, &operator).await;
    let (org_id, admin, old_key) = clients.org_with_key("Acme").await;
    let regenerate = RegenerateKeyRequest {
        org_id,
        actor_email: admin.clone(),
    };
    let response = clients.keys.regenerate_key(regenerate).await.unwrap();
    let new_key = response.into_inner().key;
    let good = clients.org_with_key("Globex").await;
    let token = super::faults::consumer(&addr, &operator).await;
    let mut verifier = super::faults::verifier_at(command, &addr, &token).await;
    cached(&mut verifier, &good.1, &good.2).await;
    let mut exhausted = 0;
    for _ in 0..50 {
        // A revoked key is never cached: each is a ValidateKey call.
        let answer = verifier.verify(&admin, &old_key).await;
        assert!(!answer.accepted(), "{}", verifier.context());
        exhausted += usize::from(answer == Answer::Unavailable);
    }
    assert!(
        exhausted > 0,
        "50 calls at once never met the limit of {limit}"
    );
    until(
        &mut verifier,
        &admin,
        &new_key,
        "the good key once the limit allows",
        |a| {
            assert_ne!(
                *a,
                Answer::Reject,
                "a rate-limited call must not reject a good key"
            );
            a.accepted()
        },
    )
    .await;
    verifier.quit().await;
}
