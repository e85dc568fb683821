//! etcd out of space: a write etcd refuses with NOSPACE is a definite RESOURCE_EXHAUSTED, not
//! "outcome unknown", and the operator's recovery (docs/reliability.md) lets writes in again
//! without a restart.

use std::process::Command;

use tonic::Code;
use zsc::proto::*;

use crate::common::*;
use crate::operations::{sample, scrape};

/// etcd's quota for this test: small, so that a few large puts fill it.
const QUOTA: &str = "8388608";

/// `etcdctl` (API v3) against the cluster; its stdout. Fails the test if it fails.
fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .output()
        .expect("etcdctl runs (apt install etcd-client)");
    assert!(
        output.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Puts 512 KiB values outside zsc's prefix until etcd raises its NOSPACE alarm.
async fn fill(endpoints: &str) {
    let mut client = etcd_client::Client::connect(endpoints.split(',').collect::<Vec<_>>(), None)
        .await
        .unwrap();
    let value = vec![b'x'; 512 * 1024];
    for i in 0..1000 {
        match client.put(format!("filler/{i}"), value.clone(), None).await {
            Ok(_) => continue,
            Err(error) => {
                assert!(
                    error.to_string().contains("database space exceeded"),
                    "{error}"
                );
                return;
            }
        }
    }
    panic!("etcd never ran out of space");
}

#[tokio::test]
async fn a_write_etcd_refuses_for_space_is_resource_exhausted_and_not_applied() {
    let cluster = tokio::task::spawn_blocking(|| {
        zsc::testing::EtcdCluster::start_with(1, &["--quota-backend-bytes", QUOTA])
    })
    .await
    .unwrap();
    let endpoints = cluster.endpoints();
    let url = cluster.url("/zsc");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(dir, "127.0.0.1:0", |d| {
        let mut config = test_config(d);
        config.store_url = Some(url.clone());
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        config
    })
    .await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, _) = server.key(&org_id, &admin).await;

    fill(&endpoints).await;
    let request = RegenerateKeyRequest {
        org_id: org_id.clone(),
        actor_email: admin.clone(),
    };
    let refused = server.op_keys().await.regenerate_key(request.clone()).await;
    let message = expect_code(refused, Code::ResourceExhausted);
    assert!(message.starts_with("etcd is out of space: "), "{message}");
    assert!(message.contains("not applied"), "{message}");
    // Not applied: the key is still the current one, and nothing was revoked.
    server.validate(&admin, &key).await.expect("the old key");
    assert!(read_log(&server).await.is_empty());
    let text = scrape(server.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(
        sample(&text, "zsc_store_writes_refused_total{reason=\"nospace\"}"),
        1.0
    );

    // The operator's recovery, as docs/reliability.md gives it; no restart.
    etcdctl(&endpoints, &["del", "--prefix", "filler/"]);
    let status = etcdctl(&endpoints, &["endpoint", "status", "-w", "json"]);
    let at = status.find("\"revision\":").expect("a revision") + "\"revision\":".len();
    let revision: String = status[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    etcdctl(&endpoints, &["compact", &revision]);
    etcdctl(&endpoints, &["defrag"]);
    etcdctl(&endpoints, &["alarm", "disarm"]);
    assert_eq!(etcdctl(&endpoints, &["alarm", "list"]).trim(), "");
    server
        .op_keys()
        .await
        .regenerate_key(request)
        .await
        .expect("writes are taken again");
    expect_code(server.validate(&admin, &key).await, Code::Unauthenticated);
    drop(server);
    drop(cluster);
}
