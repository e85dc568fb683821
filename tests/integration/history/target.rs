//! The system a history is recorded against, and its faults: one sled server (the real
//! binary), or three replicas (the real binary) on a three-member etcd whose peer traffic
//! passes through proxies (`proxy.rs`). A server is restarted on the address it had, so the
//! clients' channels reconnect by themselves.

use std::{path::PathBuf, time::Duration};

use rand::{rngs::StdRng, Rng};
use tokio::process::Child;

use crate::process::{operator_token, spawn_zsc};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sled,
    #[cfg(feature = "etcd")]
    Etcd,
}

/// One zsc process: its data dir, its flags, and the address it serves on.
struct Replica {
    child: Option<Child>,
    data: PathBuf,
    store: Option<String>,
    addr: String,
    starts: usize,
}

pub struct System {
    work: tempfile::TempDir,
    replicas: Vec<Replica>,
    pub token: String,
    #[cfg(feature = "etcd")]
    etcd: Option<(
        zsc::testing::EtcdCluster,
        std::sync::Arc<super::proxy::Partition>,
    )>,
}

/// Whether the faults include cutting an etcd member off from its peers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cuts {
    Yes,
    No,
}

/// The fault kind that cuts a member off from its peers (`System::member_fault`).
const CUT: u32 = 4;

impl System {
    pub async fn start(backend: Backend) -> System {
        let work = tempfile::tempdir().unwrap();
        let mut system = System {
            work,
            replicas: Vec::new(),
            token: String::new(),
            #[cfg(feature = "etcd")]
            etcd: None,
        };
        let store = system.store(backend).await;
        let count = if store.is_some() { 3 } else { 1 };
        for i in 0..count {
            let data = system.work.path().join(format!("replica-{i}"));
            system.replicas.push(Replica {
                child: None,
                data,
                store: store.clone(),
                addr: "127.0.0.1:0".into(),
                starts: 0,
            });
            system.launch(i).await;
        }
        system.token = operator_token(&system.replicas[0].data);
        system
    }

    #[cfg(feature = "etcd")]
    async fn store(&mut self, backend: Backend) -> Option<String> {
        if backend == Backend::Sled {
            return None;
        }
        let partition = super::proxy::Partition::new(3);
        let (p, handle) = (partition.clone(), tokio::runtime::Handle::current());
        let cluster = tokio::task::spawn_blocking(move || {
            let _runtime = handle.enter();
            zsc::testing::EtcdCluster::start_behind(3, &[], |i, port| p.proxy(i, port))
        })
        .await
        .unwrap();
        let url = cluster.url("/history");
        self.etcd = Some((cluster, partition));
        Some(url)
    }

    #[cfg(not(feature = "etcd"))]
    async fn store(&mut self, _: Backend) -> Option<String> {
        None
    }

    /// Every line of every replica's log so far that contains `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let dirs = std::fs::read_dir(self.work.path()).unwrap();
        let logs = dirs.flatten().map(|d| d.path().join("zsc.log"));
        logs.filter_map(|log| std::fs::read_to_string(log).ok())
            .flat_map(|text| {
                let lines = text.lines().filter(|l| l.contains(needle));
                lines.map(str::to_owned).collect::<Vec<_>>()
            })
            .collect()
    }

    /// The addresses clients call, by replica.
    pub fn addrs(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.addr.clone()).collect()
    }

    async fn launch(&mut self, i: usize) {
        let replica = &mut self.replicas[i];
        let logs = self.work.path().join(format!("log-{i}-{}", replica.starts));
        std::fs::create_dir_all(&logs).unwrap();
        replica.starts += 1;
        let data = replica.data.to_str().unwrap();
        let mut args = vec!["serve", "--listen", &replica.addr, "--data-dir", data];
        args.extend(["--heartbeat-interval", "100ms"]);
        if let Some(store) = &replica.store {
            args.extend(["--store", store]);
        }
        let (child, _log, addr) = spawn_zsc(&logs, &args, "warn,zsc=info").await;
        replica.child = Some(child);
        replica.addr = addr;
    }

    /// Injects one fault chosen by `rng`, holds it for up to 2.5 s, and heals it (a killed
    /// process is started again). Returns what it did. Without `cuts`, a member is delayed
    /// where it would have been cut off from its peers.
    pub async fn fault(&mut self, rng: &mut StdRng, cuts: Cuts) -> String {
        let hold = Duration::from_millis(rng.random_range(300..2500));
        let kinds = if self.replicas.len() > 1 { 6 } else { 2 };
        let kind = match rng.random_range(0..kinds) {
            CUT if cuts == Cuts::No => CUT + 1,
            kind => kind,
        };
        let target = rng.random_range(0..self.replicas.len());
        let done = match kind {
            0 => self.kill_replica(target, hold).await,
            1 => pause(self.replica_pid(target), hold).await,
            _ => self.member_fault(kind, target, hold).await,
        };
        format!(
            "{done} of {} {target} for {hold:?}",
            ["replica", "member"][(kind > 1) as usize]
        )
    }

    fn replica_pid(&self, i: usize) -> u32 {
        self.replicas[i]
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("running")
    }

    async fn kill_replica(&mut self, i: usize, down: Duration) -> &'static str {
        let mut child = self.replicas[i].child.take().expect("running");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        tokio::time::sleep(down).await;
        self.launch(i).await;
        "SIGKILL"
    }

    #[cfg(feature = "etcd")]
    async fn member_fault(&mut self, kind: u32, m: usize, hold: Duration) -> &'static str {
        let (cluster, partition) = self.etcd.as_mut().expect("on etcd");
        let done = match kind {
            2 => {
                cluster.kill(m);
                tokio::time::sleep(hold).await;
                cluster.members_restart_async(m);
                "SIGKILL"
            }
            3 => pause(cluster.pid(m).expect("running"), hold).await,
            CUT => {
                partition.cut(m, true);
                let lost = lost_leader(cluster, m, hold).await;
                partition.cut(m, false);
                let (named, all) = partition.named();
                println!("peer connections: {named} of {all} named their sender");
                if lost {
                    "cut off from its peers (it lost its leader)"
                } else {
                    "cut off from its peers (it kept its leader)"
                }
            }
            _ => {
                partition.delay(m, Duration::from_millis(100));
                tokio::time::sleep(hold).await;
                partition.delay(m, Duration::ZERO);
                "100 ms delay on the peer traffic"
            }
        };
        tokio::task::block_in_place(|| cluster.wait_all_healthy());
        done
    }

    #[cfg(not(feature = "etcd"))]
    async fn member_fault(&mut self, _: u32, _: usize, _: Duration) -> &'static str {
        unreachable!("sled has no members")
    }
}

/// Whether member `m` reported itself unhealthy (no leader) at some point during `hold`: the
/// proof that the cut is a cut.
#[cfg(feature = "etcd")]
async fn lost_leader(cluster: &zsc::testing::EtcdCluster, m: usize, hold: Duration) -> bool {
    let until = tokio::time::Instant::now() + hold;
    let mut lost = false;
    while tokio::time::Instant::now() < until {
        lost |= !tokio::task::block_in_place(|| cluster.healthy(m));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lost
}

/// SIGSTOP, then SIGCONT after `hold`.
async fn pause(pid: u32, hold: Duration) -> &'static str {
    // SAFETY: kill(2) on a child of this test.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    tokio::time::sleep(hold).await;
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    "SIGSTOP"
}
