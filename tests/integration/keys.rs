//! KeyService: the ZSC rules.

use tonic::Code;
use zsc::proto::*;

use crate::common::*;

const INVALID: &str = "invalid email or key";

#[tokio::test]
async fn generated_key_validates_for_its_owner() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let mut keys = server.op_keys().await;
    let generated = keys
        .generate_key(GenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: admin.to_uppercase(),
        })
        .await
        .unwrap()
        .into_inner();
    let info = generated.info.unwrap();
    assert!(generated.key.starts_with("zsc_"));
    assert!(generated.key.starts_with(&info.key_prefix) && info.key_prefix.len() < 12);
    assert!(info.key_id.starts_with("zk_"));
    assert_eq!(info.owner_email, admin);
    assert_eq!(info.org_id, org_id);

    // GetKeyInfo never shows the secret.
    let got = keys
        .get_key_info(GetKeyInfoRequest {
            org_id: org_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, info);

    // Emails compare case-insensitively.
    let valid = server
        .validate(&admin.to_uppercase(), &generated.key)
        .await
        .unwrap();
    assert_eq!(valid.org.unwrap().org_id, org_id);
    assert_eq!(valid.key_id, info.key_id);
    assert_eq!(valid.owner_email, admin);

    // One active key per org.
    let again = keys
        .generate_key(GenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: admin.clone(),
        })
        .await;
    expect_code(again, Code::AlreadyExists);
    assert!(
        server.validate(&admin, &generated.key).await.is_ok(),
        "the refused call changed nothing"
    );
}

#[tokio::test]
async fn only_active_administrators_of_the_org_may_generate() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (_, foreign_admin) = server.org_with_admin("Globex").await;
    server
        .user(&org_id, "standard@acme.example.com", Profile::Standard)
        .await;
    server
        .user(&org_id, "former@acme.example.com", Profile::Administrator)
        .await;
    server.deactivate("former@acme.example.com").await;
    let mut keys = server.op_keys().await;
    for actor in [
        "standard@acme.example.com",
        "former@acme.example.com",
        &foreign_admin,
        "nobody@acme.example.com",
    ] {
        let result = keys
            .generate_key(GenerateKeyRequest {
                org_id: org_id.clone(),
                actor_email: actor.into(),
            })
            .await;
        expect_code(result, Code::PermissionDenied);
    }
    expect_code(
        keys.get_key_info(GetKeyInfoRequest {
            org_id: org_id.clone(),
        })
        .await,
        Code::NotFound,
    );

    let unknown_org = keys
        .generate_key(GenerateKeyRequest {
            org_id: "org_0000000000000000".into(),
            actor_email: admin.clone(),
        })
        .await;
    expect_code(unknown_org, Code::NotFound);
    for (org, actor) in [
        ("", admin.as_str()),
        (org_id.as_str(), ""),
        (org_id.as_str(), "not-an-email"),
    ] {
        let result = keys
            .generate_key(GenerateKeyRequest {
                org_id: org.into(),
                actor_email: actor.into(),
            })
            .await;
        expect_code(result, Code::InvalidArgument);
    }
    // And the same rule holds for regeneration.
    server.key(&org_id, &admin).await;
    let result = keys
        .regenerate_key(RegenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: "standard@acme.example.com".into(),
        })
        .await;
    expect_code(result, Code::PermissionDenied);
}

#[tokio::test]
async fn regenerating_kills_the_old_key_at_once() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let mut keys = server.op_keys().await;
    let none = keys
        .regenerate_key(RegenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: admin.clone(),
        })
        .await;
    expect_code(none, Code::NotFound);

    let (old_key, old_id) = server.key(&org_id, &admin).await;
    // Another administrator regenerates: the new key is theirs.
    server
        .user(&org_id, "second@acme.example.com", Profile::Administrator)
        .await;
    let new = keys
        .regenerate_key(RegenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: "second@acme.example.com".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(new.key, old_key);
    assert_eq!(
        new.info.as_ref().unwrap().owner_email,
        "second@acme.example.com"
    );

    let message = expect_code(
        server.validate(&admin, &old_key).await,
        Code::Unauthenticated,
    );
    assert_eq!(message, INVALID);
    assert!(server
        .validate("second@acme.example.com", &new.key)
        .await
        .is_ok());

    let log = read_log(&server).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].sequence, 1);
    assert_eq!(log[0].key_id, old_id);
    assert_eq!(log[0].reason, RevocationReason::Regenerated as i32);
    assert_eq!(log[0].owner_email, admin);
}

#[tokio::test]
async fn deactivating_the_owner_kills_the_key_and_reactivating_does_not_revive_it() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, key_id) = server.key(&org_id, &admin).await;
    server.deactivate(&admin).await;
    assert_eq!(
        expect_code(server.validate(&admin, &key).await, Code::Unauthenticated),
        INVALID
    );

    server.reactivate(&admin).await;
    assert_eq!(
        expect_code(server.validate(&admin, &key).await, Code::Unauthenticated),
        INVALID
    );
    let mut keys = server.op_keys().await;
    expect_code(
        keys.get_key_info(GetKeyInfoRequest {
            org_id: org_id.clone(),
        })
        .await,
        Code::NotFound,
    );

    let log = read_log(&server).await;
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].key_id.as_str(), log[0].reason),
        (key_id.as_str(), RevocationReason::OwnerDeactivated as i32)
    );

    // The reactivated admin can generate a fresh key (GenerateKey, since none is active).
    let (fresh, _) = server.key(&org_id, &admin).await;
    assert!(server.validate(&admin, &fresh).await.is_ok());
}

#[tokio::test]
async fn demoting_the_owner_kills_the_key_and_promoting_does_not_revive_it() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, key_id) = server.key(&org_id, &admin).await;
    let mut users = server.op_users().await;
    let demote = UpdateUserProfileRequest {
        email: admin.clone(),
        profile: Profile::Standard as i32,
    };
    users.update_user_profile(demote).await.unwrap();
    assert_eq!(
        expect_code(server.validate(&admin, &key).await, Code::Unauthenticated),
        INVALID
    );
    let promote = UpdateUserProfileRequest {
        email: admin.clone(),
        profile: Profile::Administrator as i32,
    };
    users.update_user_profile(promote).await.unwrap();
    assert_eq!(
        expect_code(server.validate(&admin, &key).await, Code::Unauthenticated),
        INVALID
    );

    let log = read_log(&server).await;
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].key_id.as_str(), log[0].reason),
        (key_id.as_str(), RevocationReason::OwnerDemoted as i32)
    );
}

#[tokio::test]
async fn changes_to_other_users_leave_the_key_alone() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server
        .user(&org_id, "other@acme.example.com", Profile::Administrator)
        .await;
    let (key, _) = server.key(&org_id, &admin).await;
    let mut users = server.op_users().await;
    server.deactivate("other@acme.example.com").await;
    let demote = UpdateUserProfileRequest {
        email: "other@acme.example.com".into(),
        profile: Profile::Standard as i32,
    };
    users.update_user_profile(demote).await.unwrap();
    // Re-setting the owner's own profile to what it is changes nothing either.
    let same = UpdateUserProfileRequest {
        email: admin.clone(),
        profile: Profile::Administrator as i32,
    };
    users.update_user_profile(same).await.unwrap();
    assert!(server.validate(&admin, &key).await.is_ok());
    assert!(read_log(&server).await.is_empty());
}

#[tokio::test]
async fn operators_revoke_keys_for_incident_response() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, key_id) = server.key(&org_id, &admin).await;
    let mut keys = server.op_keys().await;
    let event = server.revoke(&org_id).await;
    assert_eq!(event.sequence, 1);
    assert_eq!(event.key_id, key_id);
    assert_eq!(event.org_id, org_id);
    assert_eq!(event.reason, RevocationReason::Revoked as i32);
    assert!(event.revoke_time.is_some());
    assert_eq!(
        expect_code(server.validate(&admin, &key).await, Code::Unauthenticated),
        INVALID
    );
    expect_code(
        keys.revoke_key(RevokeKeyRequest {
            org_id: org_id.clone(),
        })
        .await,
        Code::NotFound,
    );
    let unknown = keys
        .revoke_key(RevokeKeyRequest {
            org_id: "org_0000000000000000".into(),
        })
        .await;
    expect_code(unknown, Code::NotFound);
    expect_code(
        keys.revoke_key(RevokeKeyRequest {
            org_id: "bad".into(),
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(read_log(&server).await, vec![event]);
}

#[tokio::test]
async fn every_failed_validation_looks_the_same() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server
        .user(&org_id, "second@acme.example.com", Profile::Administrator)
        .await;
    let (_, other_admin) = server.org_with_admin("Globex").await;
    let (key, _) = server.key(&org_id, &admin).await;
    let (other_key, _) = server
        .key(
            &server.org_with_admin("Initech").await.0,
            "admin@initech.example.com",
        )
        .await;

    // A well-formed key that was never issued: same format, valid checksum.
    let never_issued = zsc::domain::ZscKey::generate();
    let cases = [
        ("second@acme.example.com", key.as_str()), // another admin of the same org
        (other_admin.as_str(), key.as_str()),      // an admin of another org
        ("nobody@example.com", key.as_str()),      // an unknown email
        (admin.as_str(), other_key.as_str()),      // another org's key
        (admin.as_str(), never_issued.expose()),   // a key never issued
    ];
    for (email, key) in cases {
        let message = expect_code(server.validate(email, key).await, Code::Unauthenticated);
        assert_eq!(message, INVALID, "for {email}");
    }

    // Malformed keys are rejected before any lookup.
    let mut typo = key.clone().into_bytes();
    typo[8] = if typo[8] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    let token = server.account("desk", Role::Consumer).await;
    for bad in [
        "",
        "zsc_short",
        typo.as_str(),
        &key[..key.len() - 1],
        &key.replacen("zsc_", "zsk_", 1),
        token.as_str(),
    ] {
        expect_code(server.validate(&admin, bad).await, Code::InvalidArgument);
    }
    expect_code(server.validate("", &key).await, Code::InvalidArgument);
    assert!(server.validate(&admin, &key).await.is_ok());
}
