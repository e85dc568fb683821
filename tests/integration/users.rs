//! UserService: orgs and users, bad input, pagination.

use tonic::Code;
use zsc::proto::*;

use crate::common::*;

#[tokio::test]
async fn orgs_are_created_read_and_listed() {
    let server = TestServer::start().await;
    let mut users = server.op_users().await;
    let org = users
        .create_org(CreateOrgRequest {
            name: "Acme Corp".into(),
            edition: Edition::Professional as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(org.org_id.starts_with("org_"));
    assert_eq!(org.edition, Edition::Professional as i32);
    assert!(org.create_time.is_some());
    let got = users
        .get_org(GetOrgRequest {
            org_id: org.org_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, org);

    // Names are unique whatever their case.
    let dup = users
        .create_org(CreateOrgRequest {
            name: "ACME CORP".into(),
            edition: Edition::Free as i32,
        })
        .await;
    expect_code(dup, Code::AlreadyExists);

    let missing = users
        .get_org(GetOrgRequest {
            org_id: "org_0000000000000000".into(),
        })
        .await;
    expect_code(missing, Code::NotFound);
}

#[tokio::test]
async fn org_input_is_checked_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut users = server.op_users().await;
    let cases = [
        ("", Edition::Free as i32),
        (&*"n".repeat(201), Edition::Free as i32),
        (" padded", Edition::Free as i32),
        ("No edition", 0),
        ("Unknown edition", 99),
    ];
    for (name, edition) in cases {
        let result = users
            .create_org(CreateOrgRequest {
                name: name.into(),
                edition,
            })
            .await;
        expect_code(result, Code::InvalidArgument);
    }
    // A 200-character name is fine.
    users
        .create_org(CreateOrgRequest {
            name: "n".repeat(200),
            edition: Edition::Free as i32,
        })
        .await
        .unwrap();
    let list = users
        .list_orgs(ListOrgsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.orgs.len(), 1, "only the valid org exists");
    expect_code(
        users
            .get_org(GetOrgRequest {
                org_id: "nope".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        users
            .get_org(GetOrgRequest {
                org_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn org_listing_pages_and_clamps() {
    let server = TestServer::start().await;
    // 1001 orgs, created concurrently (which also exercises shared flushes).
    let mut tasks = Vec::new();
    for chunk in 0..8 {
        let mut users = server.op_users().await;
        tasks.push(tokio::spawn(async move {
            for i in (chunk..1001).step_by(8) {
                users
                    .create_org(CreateOrgRequest {
                        name: format!("Org {i:04}"),
                        edition: Edition::Free as i32,
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut users = server.op_users().await;

    // page_size 0 means 100.
    let first = users
        .list_orgs(ListOrgsRequest {
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.orgs.len(), 100);
    assert!(!first.next_page_token.is_empty());

    // Above 1000 is clamped to 1000.
    let big = users
        .list_orgs(ListOrgsRequest {
            page_size: 5000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(big.orgs.len(), 1000);
    let rest = users
        .list_orgs(ListOrgsRequest {
            page_size: 5000,
            page_token: big.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.orgs.len(), 1);
    assert!(rest.next_page_token.is_empty(), "last page has no token");

    // Walking pages of 7 visits every org once, in order.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = users
            .list_orgs(ListOrgsRequest {
                page_size: 7,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.orgs.into_iter().map(|o| o.org_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 1001);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "sorted and unique");

    expect_code(
        users
            .list_orgs(ListOrgsRequest {
                page_size: 5,
                page_token: "garbage".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        users
            .list_orgs(ListOrgsRequest {
                page_size: -1,
                page_token: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn users_are_created_normalised_and_listed() {
    let server = TestServer::start().await;
    let (org_id, _) = server.org_with_admin("Acme").await;
    let (other_org, _) = server.org_with_admin("Globex").await;
    let mut users = server.op_users().await;
    let created = users
        .create_user(CreateUserRequest {
            org_id: org_id.clone(),
            email: "Grace.Hopper@Acme.Example.COM".into(),
            display_name: "Grace Hopper".into(),
            profile: Profile::Standard as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.email, "grace.hopper@acme.example.com");
    assert_eq!(created.status, UserStatus::Active as i32);
    assert_eq!(created.profile, Profile::Standard as i32);

    // Lookups are case-insensitive.
    let got = users
        .get_user(GetUserRequest {
            email: "GRACE.HOPPER@acme.example.com".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);

    // Emails are unique across the service, whatever their case.
    let dup = users
        .create_user(CreateUserRequest {
            org_id: other_org.clone(),
            email: "grace.hopper@ACME.example.com".into(),
            display_name: "Impostor".into(),
            profile: Profile::Administrator as i32,
        })
        .await;
    expect_code(dup, Code::AlreadyExists);

    for i in 0..5 {
        server
            .user(
                &org_id,
                &format!("user{i}@acme.example.com"),
                Profile::Standard,
            )
            .await;
    }
    // 1 admin + grace + 5, listed in pages of 3, only this org's.
    let mut emails = Vec::new();
    let mut token = String::new();
    loop {
        let page = users
            .list_users(ListUsersRequest {
                org_id: org_id.clone(),
                page_size: 3,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.users.len() <= 3);
        assert!(page.users.iter().all(|u| u.org_id == org_id));
        emails.extend(page.users.into_iter().map(|u| u.email));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(emails.len(), 7);
    assert!(emails.windows(2).all(|w| w[0] < w[1]));

    // A token from one org's listing is not valid for another's.
    let first = users
        .list_users(ListUsersRequest {
            org_id: org_id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let foreign = users
        .list_users(ListUsersRequest {
            org_id: other_org,
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await;
    expect_code(foreign, Code::InvalidArgument);
    let unknown = users
        .list_users(ListUsersRequest {
            org_id: "org_0000000000000000".into(),
            page_size: 1,
            page_token: String::new(),
        })
        .await;
    expect_code(unknown, Code::NotFound);
}

#[tokio::test]
async fn user_input_is_checked_and_changes_nothing() {
    let server = TestServer::start().await;
    let (org_id, _) = server.org_with_admin("Acme").await;
    let mut users = server.op_users().await;
    let long_email = format!("{}@example.com", "a".repeat(243));
    assert_eq!(long_email.len(), 255);
    let bad = [
        ("", "Name", Profile::Standard as i32),
        ("not-an-email", "Name", Profile::Standard as i32),
        ("a@b", "Name", Profile::Standard as i32),
        ("two@@example.com", "Name", Profile::Standard as i32),
        (long_email.as_str(), "Name", Profile::Standard as i32),
        ("ok@example.com", "", Profile::Standard as i32),
        (
            "ok@example.com",
            &*"d".repeat(201),
            Profile::Standard as i32,
        ),
        ("ok@example.com", "Name", 0),
        ("ok@example.com", "Name", 7),
    ];
    for (email, display_name, profile) in bad {
        let result = users
            .create_user(CreateUserRequest {
                org_id: org_id.clone(),
                email: email.into(),
                display_name: display_name.into(),
                profile,
            })
            .await;
        expect_code(result, Code::InvalidArgument);
    }
    let unknown_org = users
        .create_user(CreateUserRequest {
            org_id: "org_0000000000000000".into(),
            email: "ok@example.com".into(),
            display_name: "Name".into(),
            profile: Profile::Standard as i32,
        })
        .await;
    expect_code(unknown_org, Code::NotFound);
    expect_code(
        users
            .get_user(GetUserRequest {
                email: "ok@example.com".into(),
            })
            .await,
        Code::NotFound,
    );
    let list = users
        .list_users(ListUsersRequest {
            org_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.users.len(), 1, "only the admin exists");

    let ghost = "ghost@example.com".to_owned();
    expect_code(
        users
            .deactivate_user(DeactivateUserRequest {
                email: ghost.clone(),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        users
            .reactivate_user(ReactivateUserRequest {
                email: ghost.clone(),
            })
            .await,
        Code::NotFound,
    );
    let update = users
        .update_user_profile(UpdateUserProfileRequest {
            email: ghost.clone(),
            profile: Profile::Standard as i32,
        })
        .await;
    expect_code(update, Code::NotFound);
    let unspecified = users
        .update_user_profile(UpdateUserProfileRequest {
            email: "admin@acme.example.com".into(),
            profile: 0,
        })
        .await;
    expect_code(unspecified, Code::InvalidArgument);
    expect_code(
        users
            .get_user(GetUserRequest {
                email: "nope".into(),
            })
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn deactivate_and_reactivate_change_status() {
    let server = TestServer::start().await;
    let (_, admin) = server.org_with_admin("Acme").await;
    let mut users = server.op_users().await;
    let before = users
        .get_user(GetUserRequest {
            email: admin.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let off = users
        .deactivate_user(DeactivateUserRequest {
            email: admin.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(off.status, UserStatus::Deactivated as i32);
    let stamp = |t: &Option<prost_types::Timestamp>| t.map(|t| (t.seconds, t.nanos));
    assert!(stamp(&off.update_time) > stamp(&before.update_time));
    // Idempotent: deactivating again is OK and changes nothing.
    let again = users
        .deactivate_user(DeactivateUserRequest {
            email: admin.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, off);
    let on = users
        .reactivate_user(ReactivateUserRequest {
            email: admin.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(on.status, UserStatus::Active as i32);
    let demoted = users
        .update_user_profile(UpdateUserProfileRequest {
            email: admin.clone(),
            profile: Profile::Standard as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(demoted.profile, Profile::Standard as i32);
    let got = users
        .get_user(GetUserRequest { email: admin })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, demoted);
}
