//! The real `zsc` binary as a child process: for what only a process shows (exit codes, signals,
//! SIGKILL, strace, logs).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};
use tonic::transport::Channel;
use zsc::client::Bearer;
use zsc::proto::{
    key_service_client::KeyServiceClient, user_service_client::UserServiceClient, CreateOrgRequest,
    CreateUserRequest, Edition, GenerateKeyRequest, Profile,
};

use crate::common::Authed;

/// Runs the real binary with `args`, logging to `dir/zsc.log`; returns (child, log path, grpc
/// addr) once it logs that it serves.
pub async fn spawn_zsc(dir: &Path, args: &[&str], rust_log: &str) -> (Child, PathBuf, String) {
    spawn_zsc_under(&[], dir, args, rust_log).await
}

/// The real binary serving on 127.0.0.1:0 with its data dir `dir` and `extra` flags (a replica:
/// `--store URL`); as [`spawn_zsc`] returns.
pub async fn spawn_server(dir: &Path, extra: &[&str]) -> (Child, PathBuf, String) {
    let data_dir = dir.to_str().unwrap();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir];
    args.extend_from_slice(extra);
    spawn_zsc(dir, &args, "info").await
}

/// [`spawn_zsc`] run under `wrapper` (e.g. `["strace", "-f", ...]`), which must exec it.
pub async fn spawn_zsc_under(
    wrapper: &[&str],
    dir: &Path,
    args: &[&str],
    rust_log: &str,
) -> (Child, PathBuf, String) {
    let log_path = dir.join("zsc.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let bin = env!("CARGO_BIN_EXE_zsc");
    let mut argv: Vec<&str> = wrapper.to_vec();
    argv.push(bin);
    argv.extend_from_slice(args);
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = wait_for_log(&log_path, "zsc serving", Duration::from_secs(30))
        .await
        .and_then(|line| {
            let start = line.find("127.0.0.1:")?;
            Some(
                line[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect::<String>(),
            )
        });
    match addr {
        Some(addr) => (child, log_path, addr),
        None => panic!(
            "zsc did not start:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        ),
    }
}

/// The first line of the log at `path` containing `needle`, waiting up to `timeout` for it.
pub async fn wait_for_log(path: &Path, needle: &str, timeout: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return Some(line.to_owned());
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends SIGTERM and waits for the exit.
pub async fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap()
}

/// Generated clients for a server at `addr`, calling as the holder of `token`.
pub struct Clients {
    pub users: UserServiceClient<Authed>,
    pub keys: KeyServiceClient<Authed>,
}

impl Clients {
    /// Creates an org with an administrator and a key; returns (org_id, admin, key).
    pub async fn org_with_key(&mut self, name: &str) -> (String, String, String) {
        let org_id = self
            .users
            .create_org(CreateOrgRequest {
                name: name.into(),
                edition: Edition::Enterprise as i32,
            })
            .await
            .unwrap()
            .into_inner()
            .org_id;
        let admin = format!(
            "admin@{}.example.com",
            name.to_lowercase().replace(' ', "-")
        );
        self.users
            .create_user(CreateUserRequest {
                org_id: org_id.clone(),
                email: admin.clone(),
                display_name: "Admin".into(),
                profile: Profile::Administrator as i32,
            })
            .await
            .unwrap();
        let generate = GenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: admin.clone(),
        };
        let key = self
            .keys
            .generate_key(generate)
            .await
            .unwrap()
            .into_inner()
            .key;
        (org_id, admin, key)
    }

    pub async fn connect(addr: &str, token: &str) -> Self {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        let bearer = Bearer::new(token).unwrap();
        Clients {
            users: UserServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            keys: KeyServiceClient::with_interceptor(channel, bearer),
        }
    }
}

/// The operator token a first start wrote into `data_dir`.
pub use zsc::testkit::operator_token;

/// Runs the zsc binary with `args` to completion.
pub async fn run_zsc(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_zsc"))
        .args(args)
        .output()
        .await
        .expect("run zsc")
}
