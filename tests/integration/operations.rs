//! Operating zsc: metrics, logs, backup and restore, operator-token recovery, the binary.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use zsc::proto::*;

use crate::common::*;
use crate::process::{run_zsc, sigterm, spawn_zsc};

pub async fn scrape(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: zsc\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// The value of the exposition line that starts with `series` (name and labels).
pub fn sample(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    line[series.len()..].trim().parse().unwrap()
}

#[tokio::test]
async fn metrics_are_served_for_prometheus() {
    let server = TestServer::start_with_metrics().await;
    let addr = server.metrics_addr.expect("metrics listener");
    let (org_id, admin, _) = server.validated_and_refused().await;
    expect_code(
        server.validate(&admin, "zsc_bad").await,
        Code::InvalidArgument,
    );
    server.regenerate(&org_id, &admin).await;
    let mut stream = server.watch(watch_from(None)).await.unwrap();
    next(&mut stream).await.unwrap();

    let response = scrape(addr, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let validate = "/zsc.v1.KeyService/ValidateKey";
    assert_eq!(
        sample(
            &response,
            &format!("zsc_rpc_requests_total{{method=\"{validate}\",code=\"OK\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &response,
            &format!("zsc_rpc_requests_total{{method=\"{validate}\",code=\"UNAUTHENTICATED\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &response,
            &format!("zsc_rpc_requests_total{{method=\"{validate}\",code=\"INVALID_ARGUMENT\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &response,
            &format!("zsc_rpc_duration_seconds_count{{method=\"{validate}\",code=\"OK\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(&response, "zsc_key_validations_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        sample(&response, "zsc_key_validations_total{result=\"failed\"}"),
        1.0
    );
    assert_eq!(
        sample(&response, "zsc_key_validations_total{result=\"malformed\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &response,
            "zsc_revocations_total{reason=\"REVOCATION_REASON_REGENERATED\"}"
        ),
        1.0
    );
    assert_eq!(sample(&response, "zsc_revocation_subscribers"), 1.0);
    assert_eq!(sample(&response, "zsc_revocation_head_sequence"), 1.0);
    assert!(sample(&response, "zsc_database_size_bytes") > 0.0);

    // Invented method paths are counted under one label, not one each.
    let mut made_up = tonic::client::Grpc::new(server.channel().await);
    made_up.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/zsc.v1.KeyService/NoSuchMethod");
    let codec = tonic_prost::ProstCodec::<ListOrgsRequest, ListOrgsResponse>::default();
    let mut request = tonic::Request::new(ListOrgsRequest::default());
    let bearer = format!("Bearer {}", server.operator_token);
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let status = made_up.unary(request, path, codec).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "no row in the matrix: refused for every role"
    );
    let text = scrape(addr, "/metrics").await;
    assert!(!text.contains("NoSuchMethod"), "{text}");
    assert_eq!(
        sample(
            &text,
            "zsc_rpc_requests_total{method=\"unknown\",code=\"PERMISSION_DENIED\"}"
        ),
        1.0
    );

    // A closed stream stops being counted.
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sample(
        &scrape(addr, "/metrics").await,
        "zsc_revocation_subscribers",
    ) != 0.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed stream is still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(scrape(addr, "/other").await.starts_with("HTTP/1.1 404"));
}

#[tokio::test]
async fn trace_logs_never_contain_a_key_or_token_and_sigterm_exits_cleanly() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let data_arg = data.to_str().unwrap();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_arg,
        "--log-format",
        "json",
    ];
    let (mut child, log_path, addr) = spawn_zsc(work.path(), &args, "trace").await;
    let operator = zsc::testkit::operator_token(&data);

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = zsc::client::Bearer::new(&operator).unwrap();
    let mut users =
        user_service_client::UserServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut keys =
        key_service_client::KeyServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut access = access_service_client::AccessServiceClient::with_interceptor(channel, bearer);
    let org = users
        .create_org(CreateOrgRequest {
            name: "Acme".into(),
            edition: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let user = CreateUserRequest {
        org_id: org.org_id.clone(),
        email: "ada@acme.example".into(),
        display_name: "Ada".into(),
        profile: Profile::Administrator as i32,
    };
    users.create_user(user).await.unwrap();
    let generate = GenerateKeyRequest {
        org_id: org.org_id.clone(),
        actor_email: "ada@acme.example".into(),
    };
    let key = keys
        .generate_key(generate.clone())
        .await
        .unwrap()
        .into_inner()
        .key;
    keys.validate_key(ValidateKeyRequest {
        email: "ada@acme.example".into(),
        key: key.clone(),
    })
    .await
    .unwrap();
    let new_key = keys
        .regenerate_key(RegenerateKeyRequest {
            org_id: org.org_id,
            actor_email: generate.actor_email,
        })
        .await
        .unwrap()
        .into_inner()
        .key;
    let _ = keys
        .validate_key(ValidateKeyRequest {
            email: "ada@acme.example".into(),
            key: key.clone(),
        })
        .await;
    let account = CreateServiceAccountRequest {
        name: "desk".into(),
        role: Role::Consumer as i32,
    };
    let token = access
        .create_service_account(account)
        .await
        .unwrap()
        .into_inner()
        .token;

    let status = sigterm(&mut child).await;
    assert!(status.success(), "SIGTERM ends zsc with exit 0: {status:?}");

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.lines().count() > 50, "trace logging was on");
    for secret in [&key, &new_key, &token, &operator] {
        // Whole, or the random part alone.
        assert!(!log.contains(secret.as_str()), "a secret is in the log");
        assert!(!log.contains(&secret[8..]), "a secret's body is in the log");
    }
    // One JSON line per RPC, with method, caller, status and latency.
    let rpc_line = log
        .lines()
        .find(|l| l.contains("/zsc.v1.KeyService/GenerateKey") && l.contains("\"latency_ms\""))
        .expect("an rpc log line for GenerateKey");
    for field in [
        "\"code\":\"OK\"",
        "\"caller\":\"operator\"",
        "\"method\":\"/zsc.v1.KeyService/GenerateKey\"",
    ] {
        assert!(rpc_line.contains(field), "{field} missing from {rpc_line}");
    }
    assert!(
        log.contains("stopped; database flushed"),
        "graceful shutdown was logged"
    );
}

#[tokio::test]
async fn a_backup_round_trip_keeps_everything_under_a_new_store_id() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server
        .user(&org_id, "grace@acme.example.com", Profile::Standard)
        .await;
    let (_, globex_admin) = server.org_with_admin("Globex").await;
    let desk = server.account("desk", Role::Consumer).await;
    server.key(&org_id, &admin).await;
    let key = server.regenerate(&org_id, &admin).await;
    server
        .op_users()
        .await
        .deactivate_user(DeactivateUserRequest {
            email: globex_admin.clone(),
        })
        .await
        .unwrap();
    let mut stream = server.watch(watch_from(None)).await.unwrap();
    let before = match next(&mut stream).await.unwrap() {
        watch_revocations_response::Event::Checkpoint(c) => c,
        other => panic!("{other:?}"),
    };
    drop(stream);
    let orgs_before = server.orgs().await;
    let users_before = server.users_of(&org_id).await;
    let accounts_before = server.accounts().await;
    let log_before = read_log(&server).await;
    let operator = server.operator_token.clone();
    let dir = server.stop().await;

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("zsc.backup");
    let backup = zsc::store::backup(dir.path(), &file).unwrap();
    assert!(backup.entries > 10);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let restored_dir = tempfile::tempdir().unwrap();
    let restored = zsc::store::restore(&file, restored_dir.path()).unwrap();
    assert_eq!((restored.entries, restored.head), (backup.entries, 1));
    assert_ne!(
        restored.store_id, before.store_id,
        "a restore is a new store"
    );
    assert!(
        !restored_dir.path().join("db.restoring").exists(),
        "built aside, then moved into place"
    );
    // A restore never overwrites a database.
    assert!(zsc::store::restore(&file, restored_dir.path()).is_err());

    // The restored dir has no operator.token file; the old tokens (hashes) came along.
    std::fs::write(restored_dir.path().join("operator.token"), &operator).unwrap();
    let server = TestServer::start_with(restored_dir, test_config).await;
    assert_eq!(server.orgs().await, orgs_before);
    let users_after = server.users_of(&org_id).await;
    assert_eq!(users_after, users_before);
    assert_eq!(server.accounts().await, accounts_before);
    assert_eq!(
        read_log(&server).await,
        log_before,
        "the event log with its sequences"
    );
    let valid = server
        .keys(&desk)
        .await
        .validate_key(ValidateKeyRequest {
            email: admin.clone(),
            key,
        })
        .await;
    assert!(
        valid.is_ok(),
        "key hashes and the desk token survive: {valid:?}"
    );
    // A subscriber of the old store cannot resume here.
    let resume = WatchRevocationsRequest {
        after_sequence: Some(before.sequence),
        store_id: before.store_id,
        org_ids: vec![],
    };
    assert_eq!(
        server.watch(resume).await.unwrap_err().code(),
        Code::OutOfRange
    );
    // Sequences continue from the restored head.
    server.regenerate(&org_id, &admin).await;
    assert_eq!(read_log(&server).await.last().unwrap().sequence, 2);

    // A damaged backup is refused, and so is a missing data dir.
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    assert!(zsc::store::restore(&file, tempfile::tempdir().unwrap().path()).is_err());
    assert!(zsc::store::backup(&work.path().join("nothing"), &file).is_err());
}

/// "backed up N entries, X MiB in T s (R entries/s, M MiB/s) ...": N, and whether the rates
/// are there.
fn closing_count(stdout: &str, verb: &str) -> u64 {
    // On a terminal the line may follow the progress line's escape codes.
    let line = stdout
        .split(['\r', '\n'])
        .find_map(|l| l.find(verb).map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no {verb:?} in {stdout:?}"));
    assert!(
        line.contains(" entries/s, ") && line.contains(" MiB/s)") && line.contains(" MiB in "),
        "the closing line reports the rate: {line}"
    );
    line[verb.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {line}"))
}

/// Runs `zsc ARGS` on a terminal of its own (util-linux's `script` gives it a pty); returns
/// what the terminal showed.
async fn on_a_terminal(args: &[&str]) -> String {
    let command = std::iter::once(env!("CARGO_BIN_EXE_zsc"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let output = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .await
        .expect("script (util-linux) runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn backup_and_restore_report_their_count_and_rate_and_show_progress_only_on_a_terminal() {
    let server = TestServer::start().await;
    server.org_with_admin("Acme").await;
    let dir = server.stop().await;
    let data = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    let reference = zsc::store::backup(dir.path(), std::path::Path::new(&path("reference")))
        .unwrap()
        .entries;

    // Not on a terminal: the closing line on stdout, nothing on stderr.
    let file = path("zsc.backup");
    let output = run_zsc(&["backup", "--data-dir", data, "--out", &file]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(closing_count(&stdout, "backed up "), reference);
    assert!(output.stderr.is_empty(), "{output:?}");
    let restored = path("restored");
    let output = run_zsc(&["restore", "--in", &file, "--data-dir", &restored]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(closing_count(&stdout, "restored "), reference);
    assert!(output.stderr.is_empty(), "{output:?}");

    // On a terminal: the progress line is drawn (then cleared), and the same closing line.
    let shown = on_a_terminal(&["backup", "--data-dir", data, "--out", &path("tty.backup")]).await;
    assert!(shown.contains("backing up: "), "{shown:?}");
    assert_eq!(closing_count(&shown, "backed up "), reference);
    let into = path("tty-restored");
    let shown = on_a_terminal(&["restore", "--in", &file, "--data-dir", &into]).await;
    assert!(shown.contains("restoring: "), "{shown:?}");
    assert!(
        shown.contains(&format!("({reference} entries)")),
        "{shown:?}"
    );
}

#[tokio::test]
async fn operator_token_recovers_a_lost_token_from_the_command_line() {
    let server = TestServer::start().await;
    let old = server.operator_token.clone();
    let dir = server.stop().await;
    std::fs::remove_file(dir.path().join("operator.token")).unwrap();

    let output = run_zsc(&["operator-token", "--data-dir", dir.path().to_str().unwrap()]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("operator.token"), "it says where: {said}");
    let new = std::fs::read_to_string(dir.path().join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(!said.contains(&new), "the token itself is not printed");
    assert_ne!(new, old);

    let server = TestServer::start_with(dir, test_config).await;
    assert_eq!(server.operator_token, new);
    server.orgs().await;
    let stale = server
        .users(&old)
        .await
        .list_orgs(ListOrgsRequest::default())
        .await;
    expect_code(stale, Code::Unauthenticated);

    // While the server runs, the data dir is locked: the command fails at once.
    let output = run_zsc(&[
        "operator-token",
        "--data-dir",
        server.dir.path().to_str().unwrap(),
    ])
    .await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("in use"));
}

#[tokio::test]
async fn the_health_check_command_reports_serving() {
    let server = TestServer::start().await;
    let output = run_zsc(&["health-check", "--url", &server.url()]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "SERVING");
    let unknown = run_zsc(&["health-check", "--url", &server.url(), "--service", "nope"]).await;
    assert!(!unknown.status.success());
}
