//! A client in another language: Python grpcio generates its client from proto/ and runs a
//! key's life against the live server (tests/python/client_check.py).

use crate::common::*;

#[tokio::test]
async fn a_python_client_generated_from_the_protos_works() {
    let server = TestServer::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_check.py");
    let output = tokio::process::Command::new("python3")
        .args([
            script,
            "--addr",
            &server.addr.to_string(),
            "--token",
            &server.operator_token,
        ])
        .output()
        .await
        .expect("python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed (bash tests/run.sh installs grpcio-tools)\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("revocation 1 zk_"), "{stdout}");
    assert!(stdout.contains("python client ok"), "{stdout}");
    let log = read_log(&server).await;
    assert_eq!(
        log.len(),
        1,
        "the Python client's regeneration is in the log"
    );
}
