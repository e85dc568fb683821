//! What the disk sees: an answer only after an fsync, private modes, a disk that fills up.
//! These run the real binary (strace, a small tmpfs, exit codes).

use std::{
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::Path,
    time::Duration,
};

use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use zsc::proto::*;

use crate::common::*;
use crate::process::{operator_token, sigterm, spawn_zsc, spawn_zsc_under, wait_for_log, Clients};

pub fn serve_args(data: &Path) -> Vec<String> {
    vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.to_str().unwrap().into(),
    ]
}

pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// One syscall in an `strace -f -yy` log: where it started and where it completed.
#[derive(Debug)]
struct Call {
    name: String,
    /// The start line, with the fd's path (`-yy`) and the data written.
    text: String,
    start: usize,
    end: usize,
    ok: bool,
}

/// Parses `strace -f` output, pairing `<unfinished ...>` lines with their `resumed` lines.
fn syscalls(trace: &str) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    let mut open: std::collections::HashMap<String, usize> = Default::default();
    for (line_no, line) in trace.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            if let Some(index) = open.remove(pid) {
                calls[index].end = line_no;
                calls[index].ok = !resumed.contains("= -1");
            }
            continue;
        }
        let Some(paren) = rest.find('(') else {
            continue;
        };
        let name = rest[..paren].to_owned();
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let unfinished = rest.ends_with("<unfinished ...>");
        if unfinished {
            open.insert(pid.to_owned(), calls.len());
        }
        calls.push(Call {
            name,
            text: rest.to_owned(),
            start: line_no,
            end: line_no,
            ok: unfinished || !rest.contains("= -1"),
        });
    }
    calls
}

#[tokio::test]
async fn a_mutation_is_answered_only_after_an_fsync_of_the_database_that_follows_its_writes() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let trace_path = work.path().join("strace.log");
    let wrapper = [
        "strace",
        "-f",
        "-yy",
        "-s",
        "100000",
        "-e",
        "trace=pwrite64,pwritev,pwritev2,write,writev,sendto,sendmsg,fsync,fdatasync",
        "-o",
        trace_path.to_str().unwrap(),
    ];
    let args = serve_args(&data);
    let (mut child, _log, addr) =
        spawn_zsc_under(&wrapper, work.path(), &strs(&args), "info").await;
    let mut clients = Clients::connect(&addr, &operator_token(&data)).await;
    let names: Vec<String> = (0..3).map(|i| format!("fsync-probe-{i}-org")).collect();
    for name in &names {
        clients
            .users
            .create_org(CreateOrgRequest {
                name: name.clone(),
                edition: Edition::Enterprise as i32,
            })
            .await
            .expect("create org");
    }
    // GenerateKey and RegenerateKey run in batches on the store's writer thread
    // (`store/sled/writer.rs`): their answers wait for an fsync too.
    let (org_id, admin, _) = clients.org_with_key("fsync-probe-keys-org").await;
    let mut probes = names.clone();
    for _ in 0..2 {
        let request = RegenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: admin.clone(),
        };
        let regenerated = clients
            .keys
            .regenerate_key(request)
            .await
            .expect("regenerate");
        probes.push(regenerated.into_inner().info.expect("key info").key_id);
    }
    // strace's child is zsc: stop it, and strace ends with it having written everything.
    drop(clients);
    let strace_pid = child.id().unwrap().to_string();
    let signalled = tokio::process::Command::new("pkill")
        .args(["-TERM", "-P", &strace_pid])
        .status()
        .await
        .unwrap();
    assert!(signalled.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("zsc and strace exit")
        .unwrap();
    assert!(status.success(), "{status}");

    let trace = std::fs::read_to_string(&trace_path).unwrap();
    let calls = syscalls(&trace);
    let on_db = |call: &Call| call.text.contains("/db/db>");
    for name in &probes {
        let written = calls
            .iter()
            .find(|c| c.name.starts_with("pwrite") && on_db(c) && c.text.contains(name.as_str()))
            .unwrap_or_else(|| panic!("no write of {name} to the database in the trace"));
        let answered = calls
            .iter()
            .find(|c| {
                matches!(c.name.as_str(), "write" | "writev" | "sendto" | "sendmsg")
                    && c.text.contains("<TCP")
                    && c.text.contains(name.as_str())
            })
            .unwrap_or_else(|| panic!("no answer naming {name} on a socket in the trace"));
        let synced = calls.iter().any(|c| {
            matches!(c.name.as_str(), "fsync" | "fdatasync")
                && on_db(c)
                && c.ok
                && c.start > written.end
                && c.end < answered.start
        });
        assert!(
            synced,
            "{name}: the answer (trace line {}) left before any fsync of the database that started \
             after its write (line {})",
            answered.start + 1,
            written.end + 1
        );
    }
}

/// Every directory under `dir` is 0700 and every file 0600.
fn assert_private(dir: &Path) {
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_private(&path);
        } else {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
        }
    }
}

#[tokio::test]
async fn the_data_dir_is_0700_and_its_files_0600_even_when_it_existed_wider() {
    let fresh = TestServer::start().await;
    fresh.org_with_admin("Acme").await;
    assert_private(fresh.dir.path());

    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&data)
        .unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tempfile::TempDir::new_in(&data).unwrap();
    // A data dir that an older zsc left 0755 with 0644 files is tightened when opened.
    let server = TestServer::start_with(dir, test_config).await;
    let dir = server.stop().await;
    for entry in walk(dir.path()) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let server = TestServer::start_with(dir, test_config).await;
    assert_private(server.dir.path());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![dir.to_owned()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}

/// A small tmpfs mounted for the test, unmounted when dropped. Needs root (CI runs as root).
pub(crate) struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub(crate) fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root (CI runs as root)"
        );
        SmallDisk { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with `filler` until a write fails with ENOSPC.
    pub(crate) fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xa5u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

pub async fn health_of(addr: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    response.into_inner().status()
}

#[tokio::test]
async fn a_full_disk_refuses_changes_unavailable_keeps_validating_and_the_restart_keeps_every_acknowledged_change(
) {
    let disk = SmallDisk::mount("24m");
    let data = disk.path().join("data");
    let logs = tempfile::tempdir().unwrap();
    let args = serve_args(&data);
    let (mut child, log, addr) = spawn_zsc(logs.path(), &strs(&args), "info").await;
    let mut op = Clients::connect(&addr, &operator_token(&data)).await;
    let (org_id, admin, first_key) = op.org_with_key("Acme").await;
    let (_, other_admin, other_key) = op.org_with_key("Globex").await;

    // A subscriber following the log from before the disk fills.
    let mut stream = op
        .keys
        .watch_revocations(watch_from(None))
        .await
        .unwrap()
        .into_inner();

    let filler = disk.fill();
    // Regenerate until the full disk refuses: each OK is acknowledged and must survive.
    let mut acknowledged = vec![first_key];
    let mut refused = None;
    for _ in 0..200 {
        let regen = RegenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: admin.clone(),
        };
        match op.keys.regenerate_key(regen).await {
            Ok(response) => acknowledged.push(response.into_inner().key),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("a full disk refused a change");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // Every later change is refused the same way.
    let create = CreateOrgRequest {
        name: "Initech".into(),
        edition: Edition::Enterprise as i32,
    };
    expect_code(op.users.create_org(create).await, Code::Unavailable);
    // Reads and validation keep working.
    op.keys
        .validate_key(validate_request(&other_admin, &other_key))
        .await
        .expect("validation works on a full disk");
    let orgs = op.users.list_orgs(ListOrgsRequest::default()).await;
    let names: Vec<String> = orgs
        .unwrap()
        .into_inner()
        .orgs
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(health_of(&addr).await, ServingStatus::NotServing);
    // The durable head stands still, so a stream would claim a freshness the store cannot
    // give: the open one ends UNAVAILABLE (its Verifier fails closed) and new ones are refused.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the open stream ends");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    let watch = op.keys.watch_revocations(watch_from(None)).await;
    expect_code(watch.map(|_| ()), Code::Unavailable);

    // Space comes back: sled cannot write again in this process, so zsc exits non-zero for
    // its supervisor, saying why.
    std::fs::remove_file(filler).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("zsc exits once the disk has room again")
        .unwrap();
    assert!(!status.success(), "exit status {status}");
    let said = wait_for_log(
        &log,
        "cannot take writes until zsc is restarted",
        Duration::ZERO,
    )
    .await;
    assert!(said.is_some(), "{}", std::fs::read_to_string(&log).unwrap());

    // After the restart every acknowledged change is there: each acknowledged regeneration
    // revoked the key before it. (The refused regeneration's outcome is unknown, as with any
    // UNAVAILABLE: the last acknowledged key is valid unless that regeneration landed.)
    let restarted = logs.path().join("again");
    std::fs::create_dir(&restarted).unwrap();
    let (mut child, _log, addr) = spawn_zsc(&restarted, &strs(&args), "info").await;
    let mut op = Clients::connect(&addr, &operator_token(&data)).await;
    assert_acknowledged_kept(&mut op, &admin, &acknowledged).await;
    op.keys
        .validate_key(validate_request(&other_admin, &other_key))
        .await
        .expect("the untouched org's key is valid after the restart");
    let regen = RegenerateKeyRequest {
        org_id,
        actor_email: admin.clone(),
    };
    op.keys
        .regenerate_key(regen)
        .await
        .expect("writes work again");
    assert!(sigterm(&mut child).await.success());
}

/// After a restart, every acknowledged regeneration of the one org whose keys were
/// `acknowledged` (in order) is there: each revoked the key before it. The refused one's outcome
/// is unknown, as with any UNAVAILABLE: the last acknowledged key is valid unless it landed.
pub async fn assert_acknowledged_kept(op: &mut Clients, admin: &str, acknowledged: &[String]) {
    let (last, revoked) = acknowledged.split_last().unwrap();
    for key in revoked {
        let old = op.keys.validate_key(validate_request(admin, key)).await;
        expect_code(old, Code::Unauthenticated);
    }
    let last = op.keys.validate_key(validate_request(admin, last)).await;
    let log_head = whole_log(&mut op.keys).await.0;
    match last {
        Ok(_) => assert_eq!(log_head.len(), revoked.len()),
        Err(status) => {
            assert_eq!(status.code(), Code::Unauthenticated);
            assert_eq!(log_head.len(), revoked.len() + 1);
        }
    }
    for (i, event) in log_head.iter().enumerate() {
        assert_eq!(event.sequence, i as u64 + 1, "the log is gapless");
    }
}

pub fn validate_request(email: &str, key: &str) -> ValidateKeyRequest {
    ValidateKeyRequest {
        email: email.into(),
        key: key.into(),
    }
}
