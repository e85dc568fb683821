//! The operations block of docs/operations.md (backup, restore, a lost operator token), run
//! verbatim with the real binary against a stopped data dir.

use crate::common::*;

fn block(marker: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
            .unwrap();
    let start = readme
        .find(&format!("<!-- {marker}:start -->"))
        .expect("start marker");
    let end = readme
        .find(&format!("<!-- {marker}:end -->"))
        .expect("end marker");
    let body = readme[start..end]
        .split_once("```bash\n")
        .expect("bash block")
        .1;
    body.rsplit_once("```").expect("closing fence").0.to_owned()
}

#[tokio::test]
async fn the_readme_backup_restore_and_token_recovery_run_verbatim() {
    let server = TestServer::start().await;
    server.org_with_admin("Acme").await;
    let dir = server.stop().await;
    let work = tempfile::tempdir().unwrap();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_zsc"))
        .parent()
        .unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block("operations")])
        .current_dir(work.path())
        .env("PATH", path)
        .env("ZSC_DATA_DIR", dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("new store id"), "{stdout}");
    assert!(stdout.contains("operator.token"), "{stdout}");

    // The restored dir serves the backed-up org to the recovered operator token.
    let restored = work.path().join("zsc-restored");
    let restored_dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&restored).unwrap() {
        let entry = entry.unwrap();
        copy_tree(&entry.path(), &restored_dir.path().join(entry.file_name()));
    }
    let server = TestServer::start_with(restored_dir, test_config).await;
    let orgs = server.orgs().await;
    assert_eq!(orgs.orgs.len(), 1);
    assert_eq!(orgs.orgs[0].name, "Acme");
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}
