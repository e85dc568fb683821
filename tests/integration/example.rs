//! examples/subscriber.rs, run as its README section runs it. `cargo test` builds the examples;
//! after `cargo test --test integration` alone, run `cargo build --examples` first.

use std::path::PathBuf;

use zsc::proto::Role;

use crate::common::*;

pub fn subscriber() -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_zsc"))
        .parent()
        .unwrap()
        .join("examples/subscriber");
    assert!(
        path.exists(),
        "{} is missing: `cargo build --examples`",
        path.display()
    );
    path
}

#[tokio::test]
async fn the_subscriber_example_takes_its_secrets_from_the_environment_or_files_never_argv() {
    let server = TestServer::start().await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, _) = server.key(&org_id, &admin).await;
    let token = server.account("desk", Role::Consumer).await;
    let run = |envs: Vec<(&'static str, String)>, args: Vec<String>| {
        let mut command = tokio::process::Command::new(subscriber());
        command
            .args(["--url", &server.url(), "--email", &admin, "--count", "1"])
            .args(args)
            .env_remove("ZSC_TOKEN")
            .env_remove("ZSC_KEY")
            .envs(envs);
        async move { command.output().await.unwrap() }
    };

    let from_env = run(
        vec![("ZSC_TOKEN", token.clone()), ("ZSC_KEY", key.clone())],
        vec![],
    )
    .await;
    let stdout = String::from_utf8_lossy(&from_env.stdout);
    assert!(
        from_env.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&from_env.stderr)
    );
    assert!(
        stdout.contains(&format!("valid for org Acme ({org_id})")),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (token_file, key_file) = (dir.path().join("token"), dir.path().join("key"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let files = vec![
        "--token-file".to_owned(),
        token_file.display().to_string(),
        "--key-file".to_owned(),
        key_file.display().to_string(),
    ];
    let from_files = run(vec![], files).await;
    assert!(from_files.status.success());
    assert!(String::from_utf8_lossy(&from_files.stdout).contains("valid for org Acme"));

    // A secret on the command line is not accepted.
    let argv = run(
        vec![],
        vec!["--token".to_owned(), token.clone(), "--key".to_owned(), key],
    )
    .await;
    assert!(!argv.status.success());
    assert!(String::from_utf8_lossy(&argv.stderr).contains("unexpected argument '--token'"));
}
