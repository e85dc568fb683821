//! What the binary writes to stderr: refusals at a bounded rate, successful reads only when
//! asked for, and no colour escapes when stderr is not a terminal.

use std::time::Duration;

use tonic::{transport::Channel, Code};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use zsc::proto::{
    access_service_client::AccessServiceClient, key_service_client::KeyServiceClient,
    CreateServiceAccountRequest, Role, ValidateKeyRequest,
};
use zsc::telemetry::Throttle;

use crate::common::*;
use crate::process::{sigterm, spawn_zsc};

const REFUSED: usize = 400;
const READS: usize = 50;

/// Runs the binary, makes REFUSED calls without a token and READS health checks, stops it;
/// returns its log and how long the refused calls took.
async fn refusals_and_reads(extra: &[&str]) -> (String, Duration) {
    let mut args = vec!["--log-format", "json"];
    args.extend_from_slice(extra);
    let Logged {
        work: _work,
        mut child,
        log_path,
        channel,
    } = serve_logged(&args).await;

    let started = tokio::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..REFUSED {
        let mut keys = KeyServiceClient::new(channel.clone());
        calls.spawn(async move {
            let request = ValidateKeyRequest {
                email: "ada@acme.example".into(),
                key: "zsc_nope".into(),
            };
            expect_code(keys.validate_key(request).await, Code::Unauthenticated);
        });
    }
    while let Some(call) = calls.join_next().await {
        call.unwrap();
    }
    let elapsed = started.elapsed();
    let mut health = HealthClient::new(channel);
    for _ in 0..READS {
        health.check(HealthCheckRequest::default()).await.unwrap();
    }
    assert!(sigterm(&mut child).await.success());
    (std::fs::read_to_string(&log_path).unwrap(), elapsed)
}

/// The binary serving with its log in a file, and a connection to it.
struct Logged {
    work: tempfile::TempDir,
    child: tokio::process::Child,
    log_path: std::path::PathBuf,
    channel: Channel,
}

async fn serve_logged(extra: &[&str]) -> Logged {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (child, log_path, addr) = spawn_zsc(work.path(), &args, "info").await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Logged {
        work,
        child,
        log_path,
        channel,
    }
}

/// The sum of `"suppressed":N` over the log's lines.
fn suppressed(log: &str) -> usize {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("\"suppressed\":")? + "\"suppressed\":".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        })
        .sum()
}

#[tokio::test]
async fn a_flood_of_refused_calls_writes_a_bounded_number_of_lines_and_reads_write_none() {
    let (log, elapsed) = refusals_and_reads(&[]).await;
    let refused_lines = log.lines().filter(|l| l.contains("rpc refused")).count();
    // Every refusal is either a line or counted in a "not logged" summary...
    assert_eq!(refused_lines + suppressed(&log), REFUSED, "{log}");
    // ...and the lines are within the budget for the time the flood took (each second that
    // the flood touched may have its budget).
    let seconds = elapsed.as_secs() as usize + 2;
    let budget = Throttle::PER_SECOND as usize * seconds;
    assert!(
        refused_lines <= budget,
        "{refused_lines} refusal lines in {elapsed:?}"
    );
    let summaries = log
        .lines()
        .filter(|l| l.contains("\"suppressed\":"))
        .count();
    assert!(summaries <= seconds + 1, "{summaries} summaries");
    // Successful reads write nothing at the default level.
    assert!(
        !log.contains("grpc.health.v1.Health/Check"),
        "a successful read was logged:\n{log}"
    );
    assert!(log.lines().count() < budget + summaries + 20, "{log}");
}

#[tokio::test]
async fn log_reads_writes_a_line_per_successful_read() {
    let (log, _) = refusals_and_reads(&["--log-reads"]).await;
    let reads = log
        .lines()
        .filter(|l| l.contains("grpc.health.v1.Health/Check") && l.contains("\"code\":\"OK\""))
        .count();
    assert_eq!(reads, READS);
}

#[tokio::test]
async fn text_logs_to_a_pipe_carry_no_colour_escapes() {
    // A port already taken: zsc opens its store (logging as it does), then fails to listen.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_zsc"))
        .args([
            "serve",
            "--listen",
            &taken.local_addr().unwrap().to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("store open"), "{stderr}");
    assert!(
        !output.stderr.contains(&0x1b),
        "an ANSI escape in piped logs:\n{stderr}"
    );
}

/// A read's caller goes on its span only when its line is written (`api/caller_field.rs`): a
/// refused ValidateKey's line still names the account that made it.
#[tokio::test]
async fn a_refused_read_names_its_caller() {
    let Logged {
        work,
        mut child,
        log_path,
        channel,
    } = serve_logged(&[]).await;
    let operator = std::fs::read_to_string(work.path().join("data/operator.token")).unwrap();
    let bearer = |token: &str| zsc::client::Bearer::new(token.trim()).unwrap();
    let created = AccessServiceClient::with_interceptor(channel.clone(), bearer(&operator))
        .create_service_account(CreateServiceAccountRequest {
            name: "desk-logged".into(),
            role: Role::Consumer as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let mut keys = KeyServiceClient::with_interceptor(channel, bearer(&created.token));
    let unknown = ValidateKeyRequest {
        email: "ada@acme.example".into(),
        key: zsc::domain::ZscKey::generate().expose().to_owned(),
    };
    expect_code(keys.validate_key(unknown).await, Code::Unauthenticated);
    assert!(sigterm(&mut child).await.success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    let refused = log
        .lines()
        .find(|l| l.contains("rpc refused") && l.contains("ValidateKey"))
        .unwrap_or_else(|| panic!("no refusal line:\n{log}"));
    assert!(refused.contains("desk-logged"), "{refused}");
}
