//! What older versions wrote opens and restores unchanged: a data dir and a backup made by
//! zsc at 4268646, before key records carried their org (`tests/fixtures/README.md`). Their
//! keys answer as they did, before and after the first open writes the records back.

use std::path::{Path, PathBuf};

use tonic::Code;
use zsc::proto::{RegenerateKeyRequest, ValidateKeyRequest};

use crate::common::{expect_code, test_config, TestServer};
use crate::process::run_zsc;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/made-by-4268646")
        .join(name)
}

/// The fixture's keys: (what it should be, owner email, key).
fn credentials() -> Vec<(String, String, String)> {
    std::fs::read_to_string(fixture("credentials"))
        .unwrap()
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            (parts[0].into(), parts[1].into(), parts[2].into())
        })
        .collect()
}

/// The fixture's data dir, unpacked into a fresh temp dir.
fn unpacked_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixture("data.tar.gz"))
        .arg("-C")
        .arg(dir.path())
        .args(["--strip-components=1", "data"])
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// Every key answers as it did when it was made: the live ones validate with their org, the
/// regenerated one and the one whose owner was deactivated are refused.
async fn keys_answer_as_they_did(server: &TestServer) {
    for (what, email, key) in credentials() {
        let answer = server.validate(&email, &key).await;
        match what.as_str() {
            "live" => {
                let answer = answer.unwrap_or_else(|e| panic!("{email}: {e}"));
                let org = answer.org.unwrap();
                let domain = email.split('@').nth(1).unwrap();
                assert_eq!(format!("{}.example", org.name.to_lowercase()), domain);
                assert_eq!(answer.owner_email, email);
            }
            _ => {
                expect_code(answer, Code::Unauthenticated);
            }
        }
    }
}

/// Acme's key's usage, by consumer: (name, validations), Desk's first.
async fn acme_usage(server: &TestServer, org_id: &str) -> Vec<(String, u64)> {
    let mut usage: Vec<_> = server
        .key_info(org_id)
        .await
        .usage
        .into_iter()
        .map(|u| (u.consumer, u.validations))
        .collect();
    usage.sort_by_key(|(consumer, _)| consumer != "desk");
    usage
}

async fn keys_answer_as_they_did_across_a_restart(server: TestServer) {
    keys_answer_as_they_did(&server).await;
    let acme = server
        .validate("ada@acme.example", &credentials()[0].2)
        .await;
    let org_id = acme.unwrap().org.unwrap().org_id;
    // Desk's two validations, saved by 4268646 as a row per (key, account), are counted,
    // and kept when the operator's validations are saved beside them at the stop.
    let before = acme_usage(&server, &org_id).await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!((&before[0].0[..], before[0].1, before[1].1), ("desk", 2, 2));
    let server = server.restart().await;
    keys_answer_as_they_did(&server).await;
    let after = acme_usage(&server, &org_id).await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!((&after[0].0[..], after[0].1, after[1].1), ("desk", 2, 3));
    // And the store takes changes: Acme's key regenerated, the old one refused.
    let new_key = server
        .op_keys()
        .await
        .regenerate_key(RegenerateKeyRequest {
            org_id,
            actor_email: "ada@acme.example".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .key;
    expect_code(
        server
            .validate("ada@acme.example", &credentials()[0].2)
            .await,
        Code::Unauthenticated,
    );
    let mut keys = server.op_keys().await;
    let request = ValidateKeyRequest {
        email: "ada@acme.example".into(),
        key: new_key,
    };
    assert_eq!(
        keys.validate_key(request)
            .await
            .unwrap()
            .into_inner()
            .org
            .unwrap()
            .name,
        "Acme"
    );
}

#[tokio::test]
async fn a_data_dir_made_by_an_older_version_opens_with_its_keys_as_they_were() {
    let server = TestServer::start_with(unpacked_data_dir(), test_config).await;
    keys_answer_as_they_did_across_a_restart(server).await;
}

#[tokio::test]
async fn a_backup_made_by_an_older_version_restores_with_its_keys_as_they_were() {
    let restored = tempfile::tempdir().unwrap();
    let output = run_zsc(&[
        "restore",
        "--in",
        fixture("store.zscbackup").to_str().unwrap(),
        "--data-dir",
        restored.path().to_str().unwrap(),
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    let made = unpacked_data_dir();
    let token = made.path().join("operator.token");
    std::fs::copy(token, restored.path().join("operator.token")).unwrap();
    let server = TestServer::start_with(restored, test_config).await;
    keys_answer_as_they_did_across_a_restart(server).await;
}

/// The same backup restored into etcd: replicas join the records with their org at every
/// load and leave them as they are, and a key one replica regenerates is refused on another.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_backup_made_by_an_older_version_restores_into_etcd_with_its_keys_as_they_were() {
    let cluster = tokio::task::spawn_blocking(|| zsc::testing::EtcdCluster::start(1))
        .await
        .unwrap();
    let url = cluster.url("/upgraded");
    let file = fixture("store.zscbackup");
    let output = run_zsc(&["restore", "--in", file.to_str().unwrap(), "--store", &url]).await;
    assert!(output.status.success(), "{output:?}");
    let made = unpacked_data_dir();
    let token = std::fs::read_to_string(made.path().join("operator.token")).unwrap();
    let a = TestServer::start_replica(&url, Some(token.trim())).await;
    let b = TestServer::start_replica(&url, Some(token.trim())).await;
    keys_answer_as_they_did(&a).await;
    keys_answer_as_they_did(&b).await;
    let (_, email, key) = &credentials()[0];
    let org_id = a.validate(email, key).await.unwrap().org.unwrap().org_id;
    a.op_keys()
        .await
        .regenerate_key(RegenerateKeyRequest {
            org_id,
            actor_email: email.clone(),
        })
        .await
        .unwrap();
    expect_code(b.validate(email, key).await, Code::Unauthenticated);
}
