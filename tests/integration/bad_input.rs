//! Bad input, RPC by RPC: what each zsc.v1 RPC answers to an empty request, over-long fields,
//! unknown enum numbers, bad page tokens and bytes that are not its message at all (sent with a
//! raw client that puts any bytes in the gRPC frame), that none of it changes anything, and
//! that the server goes on serving.

use bytes::{Buf, BufMut};
use prost::Message;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    Code, Status,
};
use zsc::proto::*;

use crate::common::*;
use crate::operations::{sample, scrape};

/// A codec that sends the given bytes as the message and reads the answer as bytes: what a
/// client with a broken or hostile encoder puts on the wire, framed as gRPC.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut bytes = vec![0; buf.remaining()];
        buf.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}

/// Sends `body` as the request of `method` ("UserService/CreateOrg") with the operator's token;
/// the status it ends with (OK for a stream that opens).
async fn call(server: &TestServer, method: &str, body: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let path: http::uri::PathAndQuery = format!("/zsc.v1.{method}").parse().unwrap();
    let mut request = tonic::Request::new(body);
    let bearer = format!("Bearer {}", server.operator_token);
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let result = if method.ends_with("WatchRevocations") || method.ends_with("/Backup") {
        grpc.server_streaming(request, path, Raw).await.map(|_| ())
    } else {
        grpc.unary(request, path, Raw).await.map(|_| ())
    };
    result.err().unwrap_or_else(|| Status::ok(""))
}

/// A table row: an RPC, what is wrong with the request, its bytes, and the status it gets.
struct Case {
    method: String,
    what: &'static str,
    body: Vec<u8>,
    expected: Code,
}

fn case(method: &str, what: &'static str, message: impl Message, expected: Code) -> Case {
    Case {
        method: method.to_owned(),
        what,
        body: message.encode_to_vec(),
        expected,
    }
}

const ORG_ID: &str = "org_0123456789abcdef";
const INVALID: Code = Code::InvalidArgument;

/// Over-long values of each kind of field.
fn long_id() -> String {
    format!("org_{}", "a".repeat(300))
}
fn long_email() -> String {
    format!("{}@acme.example", "a".repeat(250))
}
fn long_name() -> String {
    "n".repeat(201)
}

/// The messages each RPC is sent: empty, over-long, unknown enum numbers, bad page tokens.
#[rustfmt::skip]
fn message_cases() -> Vec<Case> {
    let email = || "ada@acme.example".to_owned();
    // Tokens each listing could return, given to the other.
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    let orgs_token = URL_SAFE_NO_PAD.encode(format!("orgs\n{ORG_ID}"));
    let users_token = URL_SAFE_NO_PAD.encode(format!("users:{ORG_ID}\nada@acme.example"));
    vec![
        // UserService
        case("UserService/CreateOrg", "empty", CreateOrgRequest::default(), INVALID),
        case("UserService/CreateOrg", "over-long name", CreateOrgRequest { name: long_name(), edition: 1 }, INVALID),
        case("UserService/CreateOrg", "unknown edition", CreateOrgRequest { name: "Acme".into(), edition: 99 }, INVALID),
        case("UserService/CreateOrg", "negative edition", CreateOrgRequest { name: "Acme".into(), edition: -1 }, INVALID),
        case("UserService/CreateOrg", "invisible character in name", CreateOrgRequest { name: "Acme\u{200B}".into(), edition: 1 }, INVALID),
        case("UserService/GetOrg", "empty", GetOrgRequest::default(), INVALID),
        case("UserService/GetOrg", "over-long org_id", GetOrgRequest { org_id: long_id() }, INVALID),
        case("UserService/ListOrgs", "empty", ListOrgsRequest::default(), Code::Ok),
        case("UserService/ListOrgs", "negative page_size", ListOrgsRequest { page_size: -1, page_token: String::new() }, INVALID),
        case("UserService/ListOrgs", "page_token not base64", ListOrgsRequest { page_size: 0, page_token: "!!".into() }, INVALID),
        case("UserService/ListOrgs", "page_token of another listing", ListOrgsRequest { page_size: 0, page_token: users_token }, INVALID),
        case("UserService/ListOrgs", "over-long page_token", ListOrgsRequest { page_size: 0, page_token: "A".repeat(60_000) }, INVALID),
        case("UserService/CreateUser", "empty", CreateUserRequest::default(), INVALID),
        case("UserService/CreateUser", "over-long email", CreateUserRequest { org_id: ORG_ID.into(), email: long_email(), display_name: "Ada".into(), profile: 1 }, INVALID),
        case("UserService/CreateUser", "over-long display_name", CreateUserRequest { org_id: ORG_ID.into(), email: email(), display_name: long_name(), profile: 1 }, INVALID),
        case("UserService/CreateUser", "unknown profile", CreateUserRequest { org_id: ORG_ID.into(), email: email(), display_name: "Ada".into(), profile: 99 }, INVALID),
        case("UserService/CreateUser", "invisible character in email", CreateUserRequest { org_id: ORG_ID.into(), email: "ada\u{200B}@acme.example".into(), display_name: "Ada".into(), profile: 1 }, INVALID),
        case("UserService/GetUser", "empty", GetUserRequest::default(), INVALID),
        case("UserService/GetUser", "over-long email", GetUserRequest { email: long_email() }, INVALID),
        case("UserService/ListUsers", "empty", ListUsersRequest::default(), INVALID),
        case("UserService/ListUsers", "over-long org_id", ListUsersRequest { org_id: long_id(), ..Default::default() }, INVALID),
        case("UserService/ListUsers", "page_token of another listing", ListUsersRequest { org_id: ORG_ID.into(), page_size: 0, page_token: orgs_token.clone() }, INVALID),
        case("UserService/ListUsers", "page_token not base64", ListUsersRequest { org_id: ORG_ID.into(), page_size: 0, page_token: "%%".into() }, INVALID),
        case("UserService/UpdateUserProfile", "empty", UpdateUserProfileRequest::default(), INVALID),
        case("UserService/UpdateUserProfile", "over-long email", UpdateUserProfileRequest { email: long_email(), profile: 1 }, INVALID),
        case("UserService/UpdateUserProfile", "unknown profile", UpdateUserProfileRequest { email: email(), profile: 99 }, INVALID),
        case("UserService/DeactivateUser", "empty", DeactivateUserRequest::default(), INVALID),
        case("UserService/DeactivateUser", "over-long email", DeactivateUserRequest { email: long_email() }, INVALID),
        case("UserService/ReactivateUser", "empty", ReactivateUserRequest::default(), INVALID),
        case("UserService/ReactivateUser", "over-long email", ReactivateUserRequest { email: long_email() }, INVALID),
        // KeyService
        case("KeyService/GenerateKey", "empty", GenerateKeyRequest::default(), INVALID),
        case("KeyService/GenerateKey", "over-long actor_email", GenerateKeyRequest { org_id: ORG_ID.into(), actor_email: long_email() }, INVALID),
        case("KeyService/RegenerateKey", "empty", RegenerateKeyRequest::default(), INVALID),
        case("KeyService/RegenerateKey", "over-long org_id", RegenerateKeyRequest { org_id: long_id(), actor_email: email() }, INVALID),
        case("KeyService/RevokeKey", "empty", RevokeKeyRequest::default(), INVALID),
        case("KeyService/RevokeKey", "over-long org_id", RevokeKeyRequest { org_id: long_id() }, INVALID),
        case("KeyService/GetKeyInfo", "empty", GetKeyInfoRequest::default(), INVALID),
        case("KeyService/GetKeyInfo", "over-long org_id", GetKeyInfoRequest { org_id: long_id() }, INVALID),
        case("KeyService/ValidateKey", "empty", ValidateKeyRequest::default(), INVALID),
        case("KeyService/ValidateKey", "over-long key", ValidateKeyRequest { email: email(), key: format!("zsc_{}", "a".repeat(300)) }, INVALID),
        case("KeyService/ValidateKey", "over-long email", ValidateKeyRequest { email: long_email(), key: "zsc_x".into() }, INVALID),
        case("KeyService/WatchRevocations", "empty", WatchRevocationsRequest::default(), Code::Ok),
        case("KeyService/WatchRevocations", "over-long org_id", WatchRevocationsRequest { org_ids: vec![long_id()], ..Default::default() }, INVALID),
        // AccessService
        case("AccessService/CreateServiceAccount", "empty", CreateServiceAccountRequest::default(), INVALID),
        case("AccessService/CreateServiceAccount", "over-long name", CreateServiceAccountRequest { name: long_name(), role: 3 }, INVALID),
        case("AccessService/CreateServiceAccount", "unknown role", CreateServiceAccountRequest { name: "desk".into(), role: 99 }, INVALID),
        case("AccessService/ListServiceAccounts", "empty", ListServiceAccountsRequest::default(), Code::Ok),
        case("AccessService/DeleteServiceAccount", "empty", DeleteServiceAccountRequest::default(), INVALID),
        case("AccessService/DeleteServiceAccount", "over-long name", DeleteServiceAccountRequest { name: long_name() }, INVALID),
        // AuditService
        case("AuditService/ListAuditEvents", "empty", ListAuditEventsRequest::default(), Code::Ok),
        case("OperationsService/Backup", "empty", BackupRequest::default(), Code::Ok),
        case("AuditService/ListAuditEvents", "over-long org_id", ListAuditEventsRequest { org_id: long_id(), ..Default::default() }, INVALID),
        case("AuditService/ListAuditEvents", "negative page_size", ListAuditEventsRequest { page_size: -1, ..Default::default() }, INVALID),
        case("AuditService/ListAuditEvents", "page_token not base64", ListAuditEventsRequest { page_token: "!!".into(), ..Default::default() }, INVALID),
        case("AuditService/ListAuditEvents", "page_token of another listing", ListAuditEventsRequest { page_token: orgs_token.clone(), ..Default::default() }, INVALID),
        case("AuditService/ListAuditEvents", "unknown action", ListAuditEventsRequest { actions: vec![99], ..Default::default() }, INVALID),
        // ConfirmationService
        case("ConfirmationService/ReportApplied", "empty", ReportAppliedRequest::default(), INVALID),
        case("ConfirmationService/ReportApplied", "foreign store_id", ReportAppliedRequest { applied_sequence: 0, store_id: "store_other".into() }, Code::FailedPrecondition),
        case("ConfirmationService/ReportApplied", "over-long store_id", ReportAppliedRequest { applied_sequence: 0, store_id: "s".repeat(300) }, Code::FailedPrecondition),
        case("ConfirmationService/GetRevocationConfirmations", "empty", GetRevocationConfirmationsRequest::default(), INVALID),
        case("ConfirmationService/GetRevocationConfirmations", "both selectors", GetRevocationConfirmationsRequest { sequence: 1, key_id: "zk_0123456789abcdef".into() }, INVALID),
        case("ConfirmationService/GetRevocationConfirmations", "malformed key_id", GetRevocationConfirmationsRequest { sequence: 0, key_id: "org_0123456789abcdef".into() }, INVALID),
        case("ConfirmationService/GetRevocationConfirmations", "over-long key_id", GetRevocationConfirmationsRequest { sequence: 0, key_id: format!("zk_{}", "a".repeat(300)) }, INVALID),
        case("ConfirmationService/GetRevocationConfirmations", "unknown sequence", GetRevocationConfirmationsRequest { sequence: 1_000_000, key_id: String::new() }, Code::NotFound),
        case("ConfirmationService/GetRevocationConfirmations", "unknown key_id", GetRevocationConfirmationsRequest { sequence: 0, key_id: "zk_0123456789abcdef".into() }, Code::NotFound),
        case("AuditService/ListAuditEvents", "start_time out of range", ListAuditEventsRequest { start_time: Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }), ..Default::default() }, INVALID),
    ]
}

/// Every zsc.v1 RPC, from the served descriptor set ("UserService/CreateOrg").
fn every_rpc() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "zsc.v1") {
        for service in &file.service {
            for method in &service.method {
                methods.push(format!("{}/{}", service.name(), method.name()));
            }
        }
    }
    methods
}

/// Bytes that are no request message at all, the same for every RPC.
#[rustfmt::skip]
fn wrong_bytes(method: &str) -> Vec<(&'static str, Vec<u8>, Code)> {
    // ListServiceAccountsRequest and BackupRequest have no fields: a well-formed field 1 of
    // any type is an unknown field, which proto3 skips.
    let no_fields = matches!(
        method,
        "AccessService/ListServiceAccounts" | "OperationsService/Backup"
    );
    let skipped_or = |code| if no_fields { Code::Ok } else { code };
    vec![
        ("ff ff ff", vec![0xff, 0xff, 0xff], INVALID),
        // Field 1, length-delimited, not UTF-8: a bad string, or the wrong wire type.
        ("field 1 = bytes c3 28 (not UTF-8)", vec![0x0a, 0x02, 0xc3, 0x28], skipped_or(INVALID)),
        // Field 1 as a fixed32: the wrong wire type for every first field in zsc.v1.
        ("field 1 as fixed32", vec![0x0d, 1, 2, 3, 4], skipped_or(INVALID)),
        ("field 1 length past the end", vec![0x0a, 0x05, b'a'], INVALID),
        ("varint of 11 bytes", [vec![0x08], vec![0xff; 10], vec![0x01]].concat(), INVALID),
        ("field number 0", vec![0x00, 0x01], INVALID),
        // Another message's bytes decode as whatever fields happen to match (proto3 skips the
        // rest): a Checkpoint's field 1 is a varint, which only ListOrgs and WatchRevocations
        // take; its store_id then lands in their field 2.
        ("another message's bytes (a Checkpoint)", Checkpoint { sequence: 7, store_id: "zz".into(), ..Default::default() }.encode_to_vec(), match method {
            // page_token "zz": not a token this listing returned.
            "UserService/ListOrgs" => INVALID,
            // store_id "zz": not this server's store.
            "KeyService/WatchRevocations" => Code::OutOfRange,
            // store_id "zz": not this server's store.
            "ConfirmationService/ReportApplied" => Code::FailedPrecondition,
            _ => skipped_or(INVALID),
        }),
        ("70 KiB", vec![0x0a; 70 * 1024], Code::ResourceExhausted),
    ]
}

/// What an observer sees of the state: orgs, accounts and the revocation log.
async fn state(server: &TestServer) -> String {
    format!(
        "{:?}\n{:?}\n{:?}",
        server.orgs().await,
        server.accounts().await,
        read_log(server).await
    )
}

#[rustfmt::skip]
#[tokio::test]
async fn every_rpc_answers_bad_input_with_its_exact_status_and_changes_nothing() {
    let server = TestServer::start_with_metrics().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;
    let before = state(&server).await;

    let mut cases = message_cases();
    let rpcs = every_rpc();
    assert_eq!(rpcs.len(), 22, "{rpcs:?}");
    for rpc in &rpcs {
        assert!(cases.iter().any(|c| &c.method == rpc), "no message rows for {rpc}");
    }
    for rpc in &rpcs {
        for (what, body, expected) in wrong_bytes(rpc) {
            cases.push(Case { method: rpc.clone(), what, body, expected });
        }
    }

    let mut failures = Vec::new();
    for case in &cases {
        let status = call(&server, &case.method, case.body.clone()).await;
        if status.code() != case.expected {
            failures.push(format!(
                "{} / {}: expected {:?}, got {:?} ({})",
                case.method, case.what, case.expected, status.code(), status.message()
            ));
        }
    }
    // Bodies whose gRPC framing is broken, sent with a raw HTTP/2 client.
    let mut rows = cases.len();
    for rpc in &rpcs {
        for (what, body) in [
            ("no message", vec![]),
            ("a message cut short", vec![0, 0, 0, 0, 5, 0x0a]),
            ("a whole message and half another", vec![0, 0, 0, 0, 0, 0, 0]),
        ] {
            rows += 1;
            let (code, message) = post_raw(&server, rpc, body).await;
            if code != INVALID {
                failures.push(format!("{rpc} / {what}: expected InvalidArgument, got {code:?} ({message})"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {rows} rows:\n{}", failures.len(), failures.join("\n"));
    println!("{rows} bad requests, each with its expected status");

    // Nothing changed, and the server serves: health, and a valid call.
    assert_eq!(state(&server).await, before);
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    server.org_with_admin("Still Serving").await;

    // Undecodable requests are counted as the caller's bad input, never as internal errors.
    let text = scrape(server.metrics_addr.unwrap(), "/metrics").await;
    assert!(!text.contains("code=\"INTERNAL\""), "{text}");
    assert!(
        sample(&text, "zsc_rpc_requests_total{method=\"/zsc.v1.AccessService/ListServiceAccounts\",code=\"INVALID_ARGUMENT\"}") >= 3.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_request_that_is_not_protobuf_is_invalid_argument_naming_the_message() {
    let server = TestServer::start().await;
    let status = call(&server, "UserService/CreateOrg", vec![0xff, 0xff, 0xff]).await;
    assert_eq!(status.code(), INVALID, "{}", status.message());
    assert!(
        status
            .message()
            .starts_with("request is not a valid zsc.v1.CreateOrgRequest: "),
        "{}",
        status.message()
    );
    // A string field that is not UTF-8.
    let status = call(&server, "UserService/GetOrg", vec![0x0a, 0x02, 0xc3, 0x28]).await;
    assert_eq!(status.code(), INVALID, "{}", status.message());
    assert!(server.orgs().await.orgs.is_empty());
}

#[tokio::test]
async fn names_that_only_look_alike_are_refused_or_collide() {
    let server = TestServer::start().await;
    let mut users = server.op_users().await;
    let create = |name: &str| CreateOrgRequest {
        name: name.into(),
        edition: Edition::Enterprise as i32,
    };
    let acme = users.create_org(create("Acme")).await.unwrap().into_inner();
    let message = expect_code(users.create_org(create("Acme\u{200B}")).await, INVALID);
    assert!(message.contains("U+200B"), "{message}");
    expect_code(users.create_org(create("Ac\u{202E}me")).await, INVALID);

    // NFC and NFD spellings of one name are one org; the stored name is NFC.
    let cafe = users
        .create_org(create("Caf\u{00E9}"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cafe.name, "Caf\u{00E9}");
    expect_code(
        users.create_org(create("Cafe\u{0301}")).await,
        Code::AlreadyExists,
    );
    expect_code(
        users.create_org(create("CAFE\u{0301}")).await,
        Code::AlreadyExists,
    );

    // An administrator who differs from another by an invisible character cannot exist.
    server
        .user(&acme.org_id, "ada@acme.example", Profile::Administrator)
        .await;
    let twin = CreateUserRequest {
        org_id: acme.org_id.clone(),
        email: "ada\u{200B}@acme.example".into(),
        display_name: "Ada".into(),
        profile: Profile::Administrator as i32,
    };
    expect_code(users.create_user(twin).await, INVALID);
    // An IDNA domain is kept in its A-label form, whichever form it was given in.
    let idn = server
        .user(&acme.org_id, "Zoe@B\u{00FC}cher.example", Profile::Standard)
        .await;
    assert_eq!(idn.email, "zoe@xn--bcher-kva.example");
    let same = CreateUserRequest {
        org_id: acme.org_id.clone(),
        email: "zoe@xn--bcher-kva.example".into(),
        display_name: "Zoe".into(),
        profile: Profile::Standard as i32,
    };
    expect_code(users.create_user(same).await, Code::AlreadyExists);
    assert_eq!(server.orgs().await.orgs.len(), 2);
}

/// Posts `body` to `method` as it is, gRPC framing included (or not): a raw HTTP/2 client.
/// Returns the grpc-status and grpc-message.
async fn post_raw(server: &TestServer, method: &str, body: Vec<u8>) -> (Code, String) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("{}/zsc.v1.{method}", server.url()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", server.operator_token))
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
        .unwrap();
    let response = server.channel().await.oneshot(request).await.unwrap();
    let mut fields = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    fields.extend(collected.trailers().cloned().unwrap_or_default());
    let status = Status::from_header_map(&fields).expect("a grpc-status");
    (status.code(), status.message().to_owned())
}

#[tokio::test]
async fn a_body_without_a_whole_message_is_invalid_argument() {
    let server = TestServer::start().await;
    for method in ["UserService/GetOrg", "KeyService/WatchRevocations"] {
        for (what, body) in [
            ("no message", vec![]),
            ("half a frame header", vec![0, 0, 0]),
            ("a message cut short", vec![0, 0, 0, 0, 5, 0x0a]),
            (
                "a whole message and half another",
                vec![0, 0, 0, 0, 0, 0, 0],
            ),
        ] {
            let (code, message) = post_raw(&server, method, body).await;
            assert_eq!(code, INVALID, "{method} / {what}: {message}");
            assert!(message.starts_with("request body "), "{message}");
        }
    }
    // The gRPC spec says a compressed flag without a grpc-encoding MUST be INTERNAL.
    let (code, _) = post_raw(&server, "UserService/GetOrg", vec![1, 0, 0, 0, 0]).await;
    assert_eq!(code, Code::Internal);
    // A whole empty message is an empty request: GetOrg needs its org_id.
    let (code, message) = post_raw(&server, "UserService/GetOrg", vec![0, 0, 0, 0, 0]).await;
    assert_eq!((code, message.as_str()), (INVALID, "org_id is required"));
}
