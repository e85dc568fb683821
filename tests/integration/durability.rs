//! Durability, restarts, secrets at rest, limits.

use std::collections::BTreeSet;

use tonic::Code;
use zsc::proto::*;

use crate::common::*;

#[tokio::test]
async fn a_restart_keeps_everything_and_sequences_continue_without_gaps() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let desk = server.account("desk", Role::Consumer).await;
    let mut key = server.key(&org_id, &admin).await.0;
    let mut keys = server.op_keys().await;
    for _ in 0..3 {
        let regen = RegenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: admin.clone(),
        };
        key = keys.regenerate_key(regen).await.unwrap().into_inner().key;
    }
    let org_before = server
        .op_users()
        .await
        .get_org(GetOrgRequest {
            org_id: org_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let info_before = keys
        .get_key_info(GetKeyInfoRequest {
            org_id: org_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    let server = server.restart().await;
    // The operator token file is not rewritten on a restart.
    let mut users = server.op_users().await;
    assert_eq!(
        users
            .get_org(GetOrgRequest {
                org_id: org_id.clone()
            })
            .await
            .unwrap()
            .into_inner(),
        org_before
    );
    let mut keys = server.keys(&desk).await;
    assert_eq!(
        keys.get_key_info(GetKeyInfoRequest {
            org_id: org_id.clone()
        })
        .await
        .unwrap()
        .into_inner(),
        info_before
    );
    assert!(
        server.validate(&admin, &key).await.is_ok(),
        "the key survives a restart"
    );

    let mut keys = server.op_keys().await;
    for _ in 0..3 {
        let regen = RegenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: admin.clone(),
        };
        keys.regenerate_key(regen).await.unwrap();
    }
    let sequences: Vec<u64> = read_log(&server).await.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=6).collect::<Vec<_>>());
}

#[tokio::test]
async fn concurrent_revocations_get_gapless_sequences() {
    let server = TestServer::start().await;
    let orgs = server.orgs_with_keys(8).await;
    server.regenerate_concurrently(&orgs, 10).await;
    // And one incident revocation per org, also at once.
    let mut revokes = Vec::new();
    for (org_id, _) in orgs {
        let mut keys = server.op_keys().await;
        revokes.push(tokio::spawn(async move {
            keys.revoke_key(RevokeKeyRequest { org_id }).await.unwrap()
        }));
    }
    for revoke in revokes {
        revoke.await.unwrap();
    }
    let log = read_log(&server).await;
    let sequences: Vec<u64> = log.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=88).collect::<Vec<_>>());
    let key_ids: BTreeSet<_> = log.iter().map(|e| e.key_id.clone()).collect();
    assert_eq!(key_ids.len(), 88, "every event names a distinct key");
}

#[tokio::test]
async fn no_key_or_token_is_stored_in_plain_text() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (first_key, _) = server.key(&org_id, &admin).await;
    let regen = RegenerateKeyRequest {
        org_id: org_id.clone(),
        actor_email: admin.clone(),
    };
    let second_key = server
        .op_keys()
        .await
        .regenerate_key(regen)
        .await
        .unwrap()
        .into_inner()
        .key;
    let token = server.account("desk", Role::Consumer).await;
    let operator = server.operator_token.clone();
    let dir = server.stop().await;

    let mut files = Vec::new();
    let mut pending = vec![dir.path().to_owned()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    assert!(
        files.len() > 2,
        "the data dir has the database in it: {files:?}"
    );
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        // Keys and tokens are base62, so they would appear verbatim (or without their prefix).
        for secret in [&first_key, &second_key, &token] {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{} holds a secret",
                file.display()
            );
            assert!(
                !contains(&bytes, &secret.as_bytes()[8..]),
                "{} holds a secret's body",
                file.display()
            );
        }
        if file.file_name().unwrap() != "operator.token" {
            assert!(
                !contains(&bytes, &operator.as_bytes()[8..]),
                "{} holds the operator token",
                file.display()
            );
        }
    }
    let token_file = dir.path().join("operator.token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_fails_at_once() {
    let server = TestServer::start().await;
    let started = std::time::Instant::now();
    let error = match zsc::server::Server::open(test_config(server.dir.path())) {
        Ok(_) => panic!("a second server opened a data dir in use"),
        Err(error) => error,
    };
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "it must not wait for the lock"
    );
    assert!(
        error.to_string().contains("in use by another zsc process"),
        "{error}"
    );
    // The first server is unharmed.
    server.orgs().await;
}

#[tokio::test]
async fn an_oversized_request_is_resource_exhausted_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let mut users = server.op_users().await;
    let huge = CreateOrgRequest {
        name: "x".repeat(70 * 1024),
        edition: Edition::Free as i32,
    };
    let message = expect_code(users.create_org(huge).await, Code::ResourceExhausted);
    assert!(message.contains("65536"), "{message}");
    // Same client, same connection: still served.
    let orgs = users
        .list_orgs(ListOrgsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        orgs.orgs.is_empty(),
        "the oversized request changed nothing"
    );
    // Just under the limit gets through the size check (and fails validation on length).
    let under = CreateOrgRequest {
        name: "x".repeat(60 * 1024),
        edition: Edition::Free as i32,
    };
    expect_code(users.create_org(under).await, Code::InvalidArgument);
}

#[tokio::test]
async fn shutdown_reports_not_serving_and_its_wait_is_bounded() {
    let grace = std::time::Duration::from_secs(1);
    let mut server = TestServer::start_with(tempfile::tempdir().unwrap(), move |d| {
        let mut config = test_config(d);
        config.shutdown_grace = grace;
        config
    })
    .await;
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let mut health = HealthClient::new(server.channel().await);
    // A health watch is a stream that never ends by itself: shutdown must not wait for it forever.
    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let started = std::time::Instant::now();
    let stopping = tokio::spawn(async move {
        server.shutdown().await;
        server
    });
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    let server = stopping.await.unwrap();
    assert!(
        started.elapsed() < grace * 5,
        "shutdown took {:?}",
        started.elapsed()
    );
    // Everything was flushed: the data dir opens again at once.
    drop(TestServer::start_with(server.stop().await, test_config).await);
}

#[tokio::test]
async fn a_revocation_whose_caller_gives_up_still_reaches_subscribers() {
    use zsc::domain::{Caller, Edition, Email, Name, Profile};
    use zsc::store::{KeyMode, Store, StoreOptions};
    let by = Caller::cli();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default())
        .unwrap()
        .store;
    let org = store
        .create_org(&by, Name::parse("name", "Acme").unwrap(), Edition::Free)
        .await
        .unwrap();
    let admin = Email::parse("email", "ada@acme.example").unwrap();
    let name = Name::parse("display_name", "Ada").unwrap();
    store
        .create_user(
            &by,
            org.id.clone(),
            admin.clone(),
            name,
            Profile::Administrator,
        )
        .await
        .unwrap();
    store
        .generate_key(&by, &org.id, &admin, KeyMode::New)
        .await
        .unwrap();
    let mut head = store.head();
    assert_eq!(head.borrow_and_update().applied, 0);

    // The caller is gone after the first poll (as a cancelled RPC's handler is): the transaction
    // has committed, and its flush must still happen, or subscribers would never hear of it.
    use futures_util::FutureExt;
    let abandoned = store.revoke_key(&by, &org.id).now_or_never();
    assert!(
        abandoned.is_none(),
        "the call was dropped after one poll, before it answered"
    );
    let durable = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        head.wait_for(|h| h.applied == 1),
    )
    .await;
    assert!(
        durable.is_ok(),
        "the abandoned revocation never became durable and announced"
    );
}
