//! A failing fsync (EIO), injected with libfiu (Debian `fiu-utils`): the real binary runs under
//! `fiu-run -x`, and `fiu-ctrl` makes fdatasync and fsync fail while it serves.

use std::{path::Path, time::Duration};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use zsc::proto::*;

use crate::common::*;
use crate::process::{operator_token, sigterm, spawn_zsc, spawn_zsc_under, Clients};
use crate::storage::{assert_acknowledged_kept, health_of, serve_args, strs, validate_request};

/// Makes the sync calls of process `pid` fail with EIO (`enable`), or work again (`disable`).
fn syncs(pid: u32, command: &str) {
    for call in ["fdatasync", "fsync"] {
        let point = match command {
            "enable" => format!("enable name=posix/io/sync/{call},failinfo=5"),
            _ => format!("{command} name=posix/io/sync/{call}"),
        };
        let done = std::process::Command::new("fiu-ctrl")
            .args(["-c", &point, &pid.to_string()])
            .status()
            .expect("fiu-ctrl runs (apt install fiu-utils)");
        assert!(done.success(), "fiu-ctrl -c {point:?} {pid}");
    }
}

async fn regenerate(op: &mut Clients, org_id: &str, admin: &str) -> Result<String, tonic::Status> {
    let request = RegenerateKeyRequest {
        org_id: org_id.into(),
        actor_email: admin.into(),
    };
    Ok(op.keys.regenerate_key(request).await?.into_inner().key)
}

/// Polls until the server at `addr` reports `NOT_SERVING` (up to 10 s).
async fn until_not_serving(addr: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health_of(addr).await != ServingStatus::NotServing {
        assert!(tokio::time::Instant::now() < deadline, "still SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn restart(data: &Path, logs: &Path) -> (tokio::process::Child, Clients) {
    let again = logs.join("again");
    std::fs::create_dir(&again).unwrap();
    let (child, _log, addr) = spawn_zsc(&again, &strs(&serve_args(data)), "info").await;
    (child, Clients::connect(&addr, &operator_token(data)).await)
}

#[tokio::test]
async fn a_failing_fsync_refuses_every_change_keeps_validating_and_the_restart_keeps_every_acknowledged_change(
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let logs = tempfile::tempdir().unwrap();
    let args = serve_args(&data);
    let (mut child, _log, addr) =
        spawn_zsc_under(&["fiu-run", "-x"], logs.path(), &strs(&args), "info").await;
    let pid = child.id().unwrap();
    let mut op = Clients::connect(&addr, &operator_token(&data)).await;
    let (org_id, admin, first_key) = op.org_with_key("Acme").await;
    let (_, other_admin, other_key) = op.org_with_key("Globex").await;
    let mut acknowledged = vec![first_key];
    for _ in 0..3 {
        acknowledged.push(regenerate(&mut op, &org_id, &admin).await.unwrap());
    }

    syncs(pid, "enable");
    // Every change from now on is refused (none is acknowledged without its fsync).
    let refused = regenerate(&mut op, &org_id, &admin).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let create = CreateOrgRequest {
        name: "Initech".into(),
        edition: Edition::Enterprise as i32,
    };
    expect_code(op.users.create_org(create).await, Code::Unavailable);
    expect_code(
        regenerate(&mut op, &org_id, &admin).await,
        Code::Unavailable,
    );
    until_not_serving(&addr).await;
    op.keys
        .validate_key(validate_request(&other_admin, &other_key))
        .await
        .expect("validation works while fsync fails");

    // Syncs work again: sled cannot write again in this process, so zsc exits for a restart.
    syncs(pid, "disable");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("zsc exits once syncs work again")
        .unwrap();
    assert!(!status.success(), "exit status {status}");
    let (mut child, mut op) = restart(&data, logs.path()).await;
    assert_acknowledged_kept(&mut op, &admin, &acknowledged).await;
    regenerate(&mut op, &org_id, &admin)
        .await
        .expect("writes work again");
    assert!(sigterm(&mut child).await.success());
}
