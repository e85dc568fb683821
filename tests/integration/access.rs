//! AccessService and the authorization matrix.

use tonic::Code;
use zsc::proto::*;

use crate::common::*;

/// Calls `rpc` with a request that passes authorization but changes nothing (an unknown or
/// invalid target), and returns the resulting code (Ok if it succeeded).
async fn call(server: &TestServer, token: &str, rpc: &str) -> Code {
    fn outcome<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
        result.map_or_else(|s| s.code(), |_| Code::Ok)
    }
    let ghost_org = || "org_0000000000000000".to_owned();
    let ghost = || "ghost@example.com".to_owned();
    let mut users = server.users(token).await;
    let mut keys = server.keys(token).await;
    let mut access = server.access(token).await;
    match rpc {
        "CreateOrg" => outcome(users.create_org(CreateOrgRequest::default()).await),
        "GetOrg" => outcome(
            users
                .get_org(GetOrgRequest {
                    org_id: ghost_org(),
                })
                .await,
        ),
        "ListOrgs" => outcome(users.list_orgs(ListOrgsRequest::default()).await),
        "CreateUser" => outcome(users.create_user(CreateUserRequest::default()).await),
        "GetUser" => outcome(users.get_user(GetUserRequest { email: ghost() }).await),
        "ListUsers" => outcome(
            users
                .list_users(ListUsersRequest {
                    org_id: ghost_org(),
                    ..Default::default()
                })
                .await,
        ),
        "UpdateUserProfile" => outcome(
            users
                .update_user_profile(UpdateUserProfileRequest {
                    email: ghost(),
                    profile: Profile::Standard as i32,
                })
                .await,
        ),
        "DeactivateUser" => outcome(
            users
                .deactivate_user(DeactivateUserRequest { email: ghost() })
                .await,
        ),
        "ReactivateUser" => outcome(
            users
                .reactivate_user(ReactivateUserRequest { email: ghost() })
                .await,
        ),
        "GenerateKey" => outcome(
            keys.generate_key(GenerateKeyRequest {
                org_id: ghost_org(),
                actor_email: ghost(),
            })
            .await,
        ),
        "RegenerateKey" => outcome(
            keys.regenerate_key(RegenerateKeyRequest {
                org_id: ghost_org(),
                actor_email: ghost(),
            })
            .await,
        ),
        "RevokeKey" => outcome(
            keys.revoke_key(RevokeKeyRequest {
                org_id: ghost_org(),
            })
            .await,
        ),
        "GetKeyInfo" => outcome(
            keys.get_key_info(GetKeyInfoRequest {
                org_id: ghost_org(),
            })
            .await,
        ),
        "ValidateKey" => outcome(
            keys.validate_key(ValidateKeyRequest {
                email: ghost(),
                key: String::new(),
            })
            .await,
        ),
        "WatchRevocations" => outcome(
            keys.watch_revocations(WatchRevocationsRequest::default())
                .await,
        ),
        "CreateServiceAccount" => outcome(
            access
                .create_service_account(CreateServiceAccountRequest::default())
                .await,
        ),
        "ListServiceAccounts" => outcome(
            access
                .list_service_accounts(ListServiceAccountsRequest {})
                .await,
        ),
        "DeleteServiceAccount" => outcome(
            access
                .delete_service_account(DeleteServiceAccountRequest {
                    name: "ghost".into(),
                })
                .await,
        ),
        other => panic!("no call for {other}"),
    }
}

/// (RPC, operator, console, consumer): the README's matrix.
const MATRIX: &[(&str, bool, bool, bool)] = &[
    ("CreateOrg", true, false, false),
    ("ListOrgs", true, false, false),
    ("RevokeKey", true, false, false),
    ("CreateServiceAccount", true, false, false),
    ("ListServiceAccounts", true, false, false),
    ("DeleteServiceAccount", true, false, false),
    ("GetOrg", true, true, false),
    ("CreateUser", true, true, false),
    ("GetUser", true, true, false),
    ("ListUsers", true, true, false),
    ("UpdateUserProfile", true, true, false),
    ("DeactivateUser", true, true, false),
    ("ReactivateUser", true, true, false),
    ("GenerateKey", true, true, false),
    ("RegenerateKey", true, true, false),
    ("GetKeyInfo", true, true, true),
    ("ValidateKey", true, true, true),
    ("WatchRevocations", true, false, true),
];

#[tokio::test]
async fn every_role_gets_exactly_its_row_of_the_matrix() {
    let server = TestServer::start().await;
    let console = server.account("crm-console", Role::Console).await;
    let consumer = server.account("desk", Role::Consumer).await;
    let roles = [
        ("operator", server.operator_token.clone()),
        ("console", console),
        ("consumer", consumer),
    ];
    for &(rpc, operator, console, consumer) in MATRIX {
        for ((role, token), allowed) in roles.iter().zip([operator, console, consumer]) {
            let code = call(&server, token, rpc).await;
            if allowed {
                assert!(
                    !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                    "{role} should reach {rpc}, got {code:?}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{role} must not call {rpc}");
            }
        }
    }
    // Nothing the refused calls tried happened.
    let orgs = server.orgs().await;
    assert!(orgs.orgs.is_empty());
}

#[tokio::test]
async fn missing_malformed_or_unknown_tokens_are_unauthenticated() {
    let server = TestServer::start().await;
    let never_issued = zsc::domain::AccountToken::generate();
    // The real token with its last character changed (to one it does not already have).
    let (body, last) = server
        .operator_token
        .split_at(server.operator_token.len() - 1);
    let fake = format!("{body}{}", if last == "x" { "y" } else { "x" });
    for token in ["", "not-a-token", fake.as_str(), never_issued.expose()] {
        for rpc in [
            "ListOrgs",
            "ValidateKey",
            "WatchRevocations",
            "ListServiceAccounts",
        ] {
            assert_eq!(
                call(&server, token, rpc).await,
                Code::Unauthenticated,
                "{rpc} with {token:?}"
            );
        }
    }
    // No metadata at all.
    let mut client =
        zsc::proto::user_service_client::UserServiceClient::new(server.channel().await);
    let message = expect_code(
        client.list_orgs(ListOrgsRequest::default()).await,
        Code::Unauthenticated,
    );
    assert!(message.contains("authorization"), "{message}");
    // A scheme other than Bearer.
    let mut basic = zsc::proto::user_service_client::UserServiceClient::with_interceptor(
        server.channel().await,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", "Basic b3BlcmF0b3I6eA==".parse().unwrap());
            Ok(request)
        },
    );
    expect_code(
        basic.list_orgs(ListOrgsRequest::default()).await,
        Code::Unauthenticated,
    );
    // The scheme is case-insensitive.
    let token = server.operator_token.clone();
    let mut lower = zsc::proto::user_service_client::UserServiceClient::with_interceptor(
        server.channel().await,
        move |mut request: tonic::Request<()>| {
            let value = format!("bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", value);
            Ok(request)
        },
    );
    lower.list_orgs(ListOrgsRequest::default()).await.unwrap();
}

#[tokio::test]
async fn health_and_reflection_need_no_token() {
    let server = TestServer::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for service in [
        "",
        "zsc.v1.UserService",
        "zsc.v1.KeyService",
        "zsc.v1.AccessService",
    ] {
        let response = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }
    let unknown = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "nope".into(),
        })
        .await;
    expect_code(unknown, Code::NotFound);

    // grpc.reflection.v1 (grpcurl 1.8 uses v1alpha; the grpcurl tests cover that one).
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in LISTED_SERVICES {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn service_accounts_are_created_listed_and_deleted() {
    let server = TestServer::start().await;
    let mut access = server.op_access().await;
    let created = access
        .create_service_account(CreateServiceAccountRequest {
            name: "recruit".into(),
            role: Role::Consumer as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let account = created.account.unwrap();
    assert_eq!(
        (account.name.as_str(), account.role),
        ("recruit", Role::Consumer as i32)
    );
    assert!(created.token.starts_with("zsct_"));
    assert!(account.create_time.is_some());

    let dup = access
        .create_service_account(CreateServiceAccountRequest {
            name: "recruit".into(),
            role: Role::Console as i32,
        })
        .await;
    expect_code(dup, Code::AlreadyExists);
    for (name, role) in [
        ("", Role::Consumer as i32),
        ("has space", Role::Consumer as i32),
        ("ok", 0),
        ("ok", 9),
    ] {
        let bad = access
            .create_service_account(CreateServiceAccountRequest {
                name: name.into(),
                role,
            })
            .await;
        expect_code(bad, Code::InvalidArgument);
    }
    let long = access
        .create_service_account(CreateServiceAccountRequest {
            name: "a".repeat(201),
            role: Role::Consumer as i32,
        })
        .await;
    expect_code(long, Code::InvalidArgument);

    let list = access
        .list_service_accounts(ListServiceAccountsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list
        .accounts
        .iter()
        .map(|a| (a.name.as_str(), a.role))
        .collect();
    assert_eq!(
        names,
        [
            ("operator", Role::Operator as i32),
            ("recruit", Role::Consumer as i32)
        ]
    );

    // The token works, and stops working the moment the account is deleted.
    assert_eq!(
        call(&server, &created.token, "GetKeyInfo").await,
        Code::NotFound
    );
    access
        .delete_service_account(DeleteServiceAccountRequest {
            name: "recruit".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        call(&server, &created.token, "GetKeyInfo").await,
        Code::Unauthenticated
    );
    let again = access
        .delete_service_account(DeleteServiceAccountRequest {
            name: "recruit".into(),
        })
        .await;
    expect_code(again, Code::NotFound);
}

#[tokio::test]
async fn the_last_operator_cannot_be_deleted() {
    let server = TestServer::start().await;
    let mut access = server.op_access().await;
    let last = access
        .delete_service_account(DeleteServiceAccountRequest {
            name: "operator".into(),
        })
        .await;
    let message = expect_code(last, Code::FailedPrecondition);
    assert!(message.contains("last operator"), "{message}");
    assert_eq!(
        call(&server, &server.operator_token, "ListOrgs").await,
        Code::Ok,
        "still works"
    );

    // With a second operator, the first can go; then the second is the last.
    let second = server.account("oncall", Role::Operator).await;
    access
        .delete_service_account(DeleteServiceAccountRequest {
            name: "operator".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        call(&server, &server.operator_token, "ListOrgs").await,
        Code::Unauthenticated
    );
    let mut access = server.access(&second).await;
    let last = access
        .delete_service_account(DeleteServiceAccountRequest {
            name: "oncall".into(),
        })
        .await;
    expect_code(last, Code::FailedPrecondition);
}
