//! The audit trail (who changed what) and key usage (who validates a key).

use std::time::{Duration, SystemTime};

use tonic::Code;
use zsc::proto::{audit_service_client::AuditServiceClient, *};

use crate::common::*;
use crate::process::run_zsc;

type Audit = AuditServiceClient<Authed>;

impl TestServer {
    pub async fn audit(&self, token: &str) -> Audit {
        let bearer = zsc::client::Bearer::new(token).unwrap();
        AuditServiceClient::with_interceptor(self.channel().await, bearer)
    }
}

/// Every entry the listing returns for `request`, following page tokens.
async fn list_all(audit: &mut Audit, mut request: ListAuditEventsRequest) -> Vec<AuditEvent> {
    let mut all = Vec::new();
    loop {
        let page = audit
            .list_audit_events(request.clone())
            .await
            .expect("list audit events")
            .into_inner();
        all.extend(page.events);
        if page.next_page_token.is_empty() {
            return all;
        }
        request.page_token = page.next_page_token;
    }
}

fn of_org(org_id: &str) -> ListAuditEventsRequest {
    ListAuditEventsRequest {
        org_id: org_id.into(),
        ..Default::default()
    }
}

/// The one entry with `action`, failing unless there is exactly one.
fn only(events: &[AuditEvent], action: AuditAction) -> &AuditEvent {
    let found: Vec<_> = events.iter().filter(|e| e.action() == action).collect();
    assert_eq!(found.len(), 1, "{action:?} in {events:#?}");
    found[0]
}

#[tokio::test]
async fn every_change_is_audited_once_with_its_caller_actor_target_and_revocation() {
    let server = TestServer::start().await;
    let console = server.account("crm-console", Role::Console).await;
    let mut users = server.users(&console).await;
    let mut keys = server.keys(&console).await;
    let org_id = server
        .op_users()
        .await
        .create_org(CreateOrgRequest {
            name: "Acme".into(),
            edition: Edition::Enterprise as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .org_id;
    let ada = "ada@acme.example.com";
    let create = CreateUserRequest {
        org_id: org_id.clone(),
        email: ada.into(),
        display_name: "Ada".into(),
        profile: Profile::Administrator as i32,
    };
    users.create_user(create).await.unwrap();
    let generate = GenerateKeyRequest {
        org_id: org_id.clone(),
        actor_email: ada.into(),
    };
    let first = keys
        .generate_key(generate.clone())
        .await
        .unwrap()
        .into_inner();
    let regen = RegenerateKeyRequest {
        org_id: org_id.clone(),
        actor_email: ada.into(),
    };
    let second = keys.regenerate_key(regen).await.unwrap().into_inner();
    let demote = UpdateUserProfileRequest {
        email: ada.into(),
        profile: Profile::Standard as i32,
    };
    users.update_user_profile(demote).await.unwrap();
    let email = || DeactivateUserRequest { email: ada.into() };
    users.deactivate_user(email()).await.unwrap();
    let reactivate = ReactivateUserRequest { email: ada.into() };
    users.reactivate_user(reactivate).await.unwrap();
    let promote = UpdateUserProfileRequest {
        email: ada.into(),
        profile: Profile::Administrator as i32,
    };
    users.update_user_profile(promote).await.unwrap();
    let third = keys.generate_key(generate).await.unwrap().into_inner();
    let revoked = server.revoke(&org_id).await;
    server.account("desk", Role::Consumer).await;
    server
        .op_access()
        .await
        .delete_service_account(DeleteServiceAccountRequest {
            name: "desk".into(),
        })
        .await
        .unwrap();

    let mut audit = server.audit(&server.operator_token).await;
    let all = list_all(&mut audit, ListAuditEventsRequest::default()).await;
    // Newest first, gapless: the store's first start created the operator account.
    let sequences: Vec<u64> = all.iter().map(|e| e.sequence).collect();
    let expected: Vec<u64> = (1..=all.len() as u64).rev().collect();
    assert_eq!(sequences, expected);
    assert_eq!(all.len(), 14, "{all:#?}");
    let log = read_log(&server).await;
    let revocation = |key_id: &str| log.iter().find(|e| e.key_id == key_id).unwrap().sequence;

    let bootstrap = all.last().unwrap();
    assert_eq!(bootstrap.action(), AuditAction::ServiceAccountCreated);
    assert_eq!(
        (bootstrap.caller.as_str(), bootstrap.target.as_str()),
        ("zsc-cli", "operator")
    );

    let org = only(&all, AuditAction::OrgCreated);
    assert_eq!(
        (org.caller.as_str(), org.caller_role()),
        ("operator", Role::Operator)
    );
    assert_eq!(
        (org.org_id.as_str(), org.target.as_str()),
        (org_id.as_str(), "Acme")
    );

    let user = only(&all, AuditAction::UserCreated);
    assert_eq!(
        (user.caller.as_str(), user.caller_role()),
        ("crm-console", Role::Console)
    );
    assert_eq!(user.target, ada);
    assert_eq!(user.actor_email, "", "CreateUser names no actor");

    let generated: Vec<_> = all
        .iter()
        .filter(|e| e.action() == AuditAction::KeyGenerated)
        .collect();
    assert_eq!(generated.len(), 2);
    let first_id = &first.info.unwrap().key_id;
    let second_id = &second.info.unwrap().key_id;
    let third_id = &third.info.unwrap().key_id;
    assert_eq!(generated[1].target, *first_id);
    assert_eq!(generated[0].target, *third_id);
    for entry in &generated {
        assert_eq!(
            (entry.actor_email.as_str(), entry.revocation_sequence),
            (ada, 0)
        );
    }

    let regenerated = only(&all, AuditAction::KeyRegenerated);
    assert_eq!(regenerated.target, *second_id);
    assert_eq!(regenerated.actor_email, ada);
    assert_eq!(regenerated.revocation_sequence, revocation(first_id));

    let profile: Vec<_> = all
        .iter()
        .filter(|e| e.action() == AuditAction::UserProfileChanged)
        .collect();
    assert_eq!(profile.len(), 2);
    // The demotion revoked the second key; the promotion revoked nothing.
    assert_eq!(profile[1].revocation_sequence, revocation(second_id));
    assert_eq!(profile[0].revocation_sequence, 0);

    // Deactivating a user whose key the demotion already revoked revokes nothing.
    let deactivated = only(&all, AuditAction::UserDeactivated);
    assert_eq!(
        (deactivated.target.as_str(), deactivated.revocation_sequence),
        (ada, 0)
    );
    only(&all, AuditAction::UserReactivated);

    let key_revoked = only(&all, AuditAction::KeyRevoked);
    assert_eq!(key_revoked.target, *third_id);
    assert_eq!(key_revoked.revocation_sequence, revoked.sequence);
    assert_eq!(key_revoked.caller, "operator");

    let created = all
        .iter()
        .find(|e| e.action() == AuditAction::ServiceAccountCreated && e.target == "desk")
        .unwrap();
    assert_eq!(
        (created.caller.as_str(), created.org_id.as_str()),
        ("operator", "")
    );
    assert_eq!(
        only(&all, AuditAction::ServiceAccountDeleted).target,
        "desk"
    );
}

#[tokio::test]
async fn a_refused_change_or_a_no_op_records_nothing() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let mut audit = server.audit(&server.operator_token).await;
    let count = |all: Vec<AuditEvent>| all.len();
    let before = count(list_all(&mut audit, ListAuditEventsRequest::default()).await);

    let mut keys = server.op_keys().await;
    let regen = RegenerateKeyRequest {
        org_id: org_id.clone(),
        actor_email: admin.clone(),
    };
    expect_code(keys.regenerate_key(regen).await, Code::NotFound);
    let standard = "sam@acme.example.com";
    server.user(&org_id, standard, Profile::Standard).await;
    let by_standard = GenerateKeyRequest {
        org_id: org_id.clone(),
        actor_email: standard.into(),
    };
    expect_code(keys.generate_key(by_standard).await, Code::PermissionDenied);
    let twin = CreateOrgRequest {
        name: "ACME".into(),
        edition: Edition::Free as i32,
    };
    let mut users = server.op_users().await;
    expect_code(users.create_org(twin).await, Code::AlreadyExists);
    let reactivate = ReactivateUserRequest {
        email: admin.clone(),
    };
    users.reactivate_user(reactivate).await.expect("a no-op");
    let desk = server.account("desk", Role::Consumer).await;
    let consumer_call = server
        .users(&desk)
        .await
        .create_org(CreateOrgRequest {
            name: "Globex".into(),
            edition: Edition::Free as i32,
        })
        .await;
    expect_code(consumer_call, Code::PermissionDenied);

    let after = list_all(&mut audit, ListAuditEventsRequest::default()).await;
    // Only the user and the account created above were recorded.
    assert_eq!(after.len(), before + 2, "{after:#?}");
    assert_eq!(after[0].action(), AuditAction::ServiceAccountCreated);
    assert_eq!(after[1].action(), AuditAction::UserCreated);
}

#[tokio::test]
async fn the_console_reads_one_org_at_a_time_and_consumers_none() {
    let server = TestServer::start().await;
    let (acme, _) = server.org_with_admin("Acme").await;
    let (globex, _) = server.org_with_admin("Globex").await;
    let console = server.account("crm-console", Role::Console).await;
    let mut audit = server.audit(&console).await;

    let everything = audit
        .list_audit_events(ListAuditEventsRequest::default())
        .await;
    let message = expect_code(everything, Code::InvalidArgument);
    assert!(message.contains("org_id"), "{message}");
    let acme_only = list_all(&mut audit, of_org(&acme)).await;
    assert_eq!(acme_only.len(), 2, "org and user created: {acme_only:#?}");
    assert!(acme_only.iter().all(|e| e.org_id == acme));
    let globex_only = list_all(&mut audit, of_org(&globex)).await;
    assert!(globex_only.iter().all(|e| e.org_id == globex));

    let desk = server.account("desk", Role::Consumer).await;
    let refused = server
        .audit(&desk)
        .await
        .list_audit_events(of_org(&acme))
        .await;
    expect_code(refused, Code::PermissionDenied);
}

#[tokio::test]
async fn listings_page_newest_first_and_filter_by_action_and_time() {
    let server = TestServer::start().await;
    let orgs = server.orgs_with_keys(3).await;
    for (org_id, admin) in &orgs {
        server.regenerate(org_id, admin).await;
    }
    let mut audit = server.audit(&server.operator_token).await;
    let whole = list_all(&mut audit, ListAuditEventsRequest::default()).await;
    let paged = list_all(
        &mut audit,
        ListAuditEventsRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(paged, whole);

    let regenerations = list_all(
        &mut audit,
        ListAuditEventsRequest {
            actions: vec![AuditAction::KeyRegenerated as i32],
            page_size: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(regenerations.len(), 3);
    assert!(regenerations
        .windows(2)
        .all(|w| w[0].sequence > w[1].sequence));

    let (org_id, _) = &orgs[1];
    let one_org = list_all(
        &mut audit,
        ListAuditEventsRequest {
            org_id: org_id.clone(),
            actions: vec![
                AuditAction::KeyGenerated as i32,
                AuditAction::KeyRegenerated as i32,
            ],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(one_org.len(), 2, "{one_org:#?}");

    let later = SystemTime::now() + Duration::from_secs(3600);
    let none = list_all(
        &mut audit,
        ListAuditEventsRequest {
            start_time: Some(later.into()),
            ..Default::default()
        },
    )
    .await;
    assert!(none.is_empty());
    let all_before = list_all(
        &mut audit,
        ListAuditEventsRequest {
            end_time: Some(later.into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(all_before, whole);

    // A token from another org's listing, a forged one and an unknown action are refused.
    let first_page = audit
        .list_audit_events(ListAuditEventsRequest {
            org_id: org_id.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first_page.next_page_token.is_empty());
    for bad in [
        ListAuditEventsRequest {
            page_token: first_page.next_page_token,
            ..Default::default()
        },
        ListAuditEventsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        },
        ListAuditEventsRequest {
            actions: vec![99],
            ..Default::default()
        },
        ListAuditEventsRequest {
            page_size: -1,
            ..Default::default()
        },
    ] {
        expect_code(audit.list_audit_events(bad).await, Code::InvalidArgument);
    }
}

#[tokio::test]
async fn retention_prunes_the_oldest_audit_entries_past_both_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |d| {
        let mut config = test_config(d);
        config.audit_retention_count = 3;
        config.audit_retention_age = Duration::ZERO;
        config.prune_interval = Duration::from_millis(50);
        config
    })
    .await;
    server.orgs_with_keys(3).await;
    let mut audit = server.audit(&server.operator_token).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = list_all(&mut audit, ListAuditEventsRequest::default()).await;
        let sequences: Vec<u64> = left.iter().map(|e| e.sequence).collect();
        if sequences == [10, 9, 8] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not pruned to the newest 3: {sequences:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An org's listing loses its pruned entries too.
    let (org_id, _) = server.org_with_admin("Late").await;
    let late = list_all(&mut audit, of_org(&org_id)).await;
    assert_eq!(late.len(), 2);
}

#[tokio::test]
async fn usage_is_counted_per_consumer_and_a_restart_keeps_it_and_the_trail() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, _) = server.key(&org_id, &admin).await;
    let desk = server.account("desk", Role::Consumer).await;
    let recruit = server.account("recruit", Role::Consumer).await;
    let validate = || ValidateKeyRequest {
        email: admin.clone(),
        key: key.clone(),
    };
    let mut as_desk = server.keys(&desk).await;
    for _ in 0..3 {
        as_desk.validate_key(validate()).await.unwrap();
    }
    let started = SystemTime::now();
    server
        .keys(&recruit)
        .await
        .validate_key(validate())
        .await
        .unwrap();
    // A failed validation is not usage.
    let wrong = ValidateKeyRequest {
        email: "nobody@acme.example.com".into(),
        key: key.clone(),
    };
    expect_code(as_desk.validate_key(wrong).await, Code::Unauthenticated);

    let usage = |info: KeyInfo| -> Vec<(String, u64)> {
        info.usage
            .into_iter()
            .map(|u| (u.consumer, u.validations))
            .collect()
    };
    let info = server.key_info(&org_id).await;
    let recruit_usage = &info.usage[0];
    let last: SystemTime = recruit_usage
        .last_validated_time
        .unwrap()
        .try_into()
        .unwrap();
    assert!(last >= started - Duration::from_secs(1));
    assert_eq!(
        usage(info),
        [("recruit".into(), 1), ("desk".into(), 3)],
        "most recent first"
    );
    let trail = list_all(
        &mut server.audit(&server.operator_token).await,
        ListAuditEventsRequest::default(),
    )
    .await;

    let server = server.restart().await;
    let info = server.key_info(&org_id).await;
    assert_eq!(usage(info), [("recruit".into(), 1), ("desk".into(), 3)]);
    server
        .keys(&desk)
        .await
        .validate_key(validate())
        .await
        .unwrap();
    let info = server.key_info(&org_id).await;
    assert_eq!(usage(info), [("desk".into(), 4), ("recruit".into(), 1)]);
    let after = list_all(
        &mut server.audit(&server.operator_token).await,
        ListAuditEventsRequest::default(),
    )
    .await;
    assert_eq!(after, trail);
}

#[tokio::test]
async fn backup_restore_and_operator_token_rotation_are_in_the_trail() {
    let server = TestServer::start().await;
    let (org_id, _) = server.org_with_admin("Acme").await;
    let trail = list_all(
        &mut server.audit(&server.operator_token).await,
        ListAuditEventsRequest::default(),
    )
    .await;
    let dir = server.stop().await;
    let backup = dir.path().join("zsc.backup");
    let restored = tempfile::tempdir().unwrap();
    let restored_data = restored.path().join("data");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let steps: [Vec<String>; 3] = [
        vec![
            "backup".into(),
            "--data-dir".into(),
            path(dir.path()),
            "--out".into(),
            path(&backup),
        ],
        vec![
            "restore".into(),
            "--in".into(),
            path(&backup),
            "--data-dir".into(),
            path(&restored_data),
        ],
        vec![
            "operator-token".into(),
            "--data-dir".into(),
            path(&restored_data),
        ],
    ];
    for step in steps {
        let args: Vec<&str> = step.iter().map(String::as_str).collect();
        let output = run_zsc(&args).await;
        assert!(output.status.success(), "{step:?}: {output:?}");
    }
    let store = zsc::store::Store::open(&restored_data, &Default::default())
        .unwrap()
        .store;
    let page = store
        .list_audit(&Default::default(), None, 100)
        .await
        .unwrap()
        .items;
    let n = trail.len();
    assert_eq!(page.len(), n + 2, "{page:#?}");
    let rotated = &page[0];
    assert_eq!(
        rotated.action,
        zsc::domain::AuditAction::OperatorTokenRotated
    );
    assert_eq!(rotated.caller.as_str(), "zsc-cli");
    let restore = &page[1];
    assert_eq!(restore.action, zsc::domain::AuditAction::StoreRestored);
    assert_eq!(restore.sequence, n as u64 + 1);
    // What came before is the backup's trail, unchanged.
    for (old, new) in trail.iter().zip(&page[2..]) {
        assert_eq!(old.sequence, new.sequence);
        assert_eq!(old.target, new.target);
        assert_eq!(
            new.org_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            old.org_id
        );
    }
    assert!(page
        .iter()
        .any(|e| e.org_id.as_ref().map(|o| o.as_str()) == Some(org_id.as_str())));
}
