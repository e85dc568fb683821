//! Test support (feature `etcd`): a real 3-member etcd cluster on loopback, for the store
//! conformance suite and the replica tests. Not part of the service.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// One etcd member: its process (None once killed) and its ports.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    child: Option<Child>,
    args: Vec<String>,
    /// Where its stdout and stderr go, for the message when it does not come up.
    log: PathBuf,
}

/// A running cluster; every member is SIGKILLed when it is dropped.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
}

/// A loopback port free now, chosen below the kernel's ephemeral range: a port the kernel
/// handed out for `:0` can be taken again, before etcd binds it, as the source port of any
/// outgoing connection a parallel test makes; one below the range is only ever taken by a bind.
fn free_port() -> u16 {
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > 20_000)
        .unwrap_or(32_768);
    for _ in 0..1_000 {
        let port = rand::random_range(15_000..below);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 15000 and {below}");
}

/// Each cluster's own token, so a member never joins a cluster of an earlier test.
fn cluster_token() -> String {
    static CLUSTERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("zsc-test-{}-{n}", std::process::id())
}

impl EtcdCluster {
    /// Starts `n` members (fast elections: 50 ms heartbeats, 500 ms election timeout) and
    /// waits until each reports healthy.
    pub fn start(n: usize) -> EtcdCluster {
        Self::start_with(n, &[])
    }

    /// As [`EtcdCluster::start`], each member with `extra` flags too (`--quota-backend-bytes`).
    pub fn start_with(n: usize, extra: &[&str]) -> EtcdCluster {
        Self::start_behind(n, extra, |_, peer_port| peer_port)
    }

    /// As [`EtcdCluster::start_with`], each member's peers reaching it at the port
    /// `advertise(i, peer_port)` returns (a proxy in front of its peer port, which can cut it
    /// off from its peers); called for every member before any starts.
    ///
    /// A member that exits before it is healthy (a port taken between choosing and binding
    /// it) fails the attempt; the whole cluster is started again on new ports, three times
    /// at most, and then the last member's log is the panic message.
    pub fn start_behind(
        n: usize,
        extra: &[&str],
        mut advertise: impl FnMut(usize, u16) -> u16,
    ) -> EtcdCluster {
        let mut failure = String::new();
        for _ in 0..3 {
            match Self::try_start(n, extra, &mut advertise) {
                Ok(cluster) => return cluster,
                Err(why) => failure = why,
            }
        }
        panic!("{failure}");
    }

    fn try_start(
        n: usize,
        extra: &[&str],
        advertise: &mut impl FnMut(usize, u16) -> u16,
    ) -> Result<EtcdCluster, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = cluster_token();
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("n{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
                args: Vec::new(),
                log: PathBuf::new(),
            })
            .collect();
        let advertised: Vec<u16> = (0..n).map(|i| advertise(i, members[i].peer_port)).collect();
        let initial = members
            .iter()
            .zip(&advertised)
            .map(|(m, port)| format!("{}=http://127.0.0.1:{port}", m.name))
            .collect::<Vec<_>>()
            .join(",");
        for (member, advertised) in members.iter_mut().zip(advertised) {
            let data: PathBuf = dir.path().join(&member.name);
            let client = format!("http://127.0.0.1:{}", member.client_port);
            let peer = format!("http://127.0.0.1:{}", member.peer_port);
            member.log = dir.path().join(format!("{}.log", member.name));
            member.args = vec![
                "--name".into(),
                member.name.clone(),
                "--data-dir".into(),
                data.display().to_string(),
                "--listen-client-urls".into(),
                client.clone(),
                "--advertise-client-urls".into(),
                client,
                "--listen-peer-urls".into(),
                peer.clone(),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{advertised}"),
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                token.clone(),
                "--heartbeat-interval".into(),
                "50".into(),
                "--election-timeout".into(),
                "500".into(),
            ];
            member
                .args
                .extend(extra.iter().map(|flag| flag.to_string()));
            member.spawn();
        }
        let mut cluster = EtcdCluster { members, _dir: dir };
        for i in 0..n {
            cluster.try_wait_healthy(i)?;
        }
        Ok(cluster)
    }

    /// `HOST:PORT,...` of every member.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The store URL for `prefix` on this cluster.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}{prefix}", self.endpoints())
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of member `i`, while it runs (for SIGSTOP and SIGCONT).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Starts a killed member again, on its data dir, and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.members[i].spawn();
        self.wait_healthy(i);
    }

    /// Starts a killed member again without waiting (a lone member cannot become healthy).
    pub fn members_restart_async(&mut self, i: usize) {
        if self.members[i].child.is_none() {
            self.members[i].spawn();
        }
    }

    /// Whether member `i` reports healthy now (a member cut off from its peers has no leader).
    pub fn healthy(&self, i: usize) -> bool {
        let body = http_get(self.members[i].client_port, "/health", None);
        body.is_some_and(|b| b.contains("\"health\":\"true\""))
    }

    /// Waits until every member reports healthy.
    pub fn wait_all_healthy(&mut self) {
        for i in 0..self.members.len() {
            self.wait_healthy(i);
        }
    }

    /// The index of the current leader, asked of the members still running.
    pub fn leader(&self) -> Option<usize> {
        for member in self.members.iter().filter(|m| m.child.is_some()) {
            let body = http_get(member.client_port, "/v3/maintenance/status", Some("{}"));
            let Some(body) = body else { continue };
            // {"header":{...,"member_id":"N",...},...,"leader":"M",...}
            let field = |name: &str| {
                let at = body.find(&format!("\"{name}\":\""))? + name.len() + 4;
                Some(body[at..].split('"').next()?.to_owned())
            };
            let (Some(me), Some(leader)) = (field("member_id"), field("leader")) else {
                continue;
            };
            if me == leader {
                return self.members.iter().position(|m| m.name == member.name);
            }
            // Ask the leader itself next round: find it by asking each member.
        }
        None
    }

    fn wait_healthy(&mut self, i: usize) {
        if let Err(why) = self.try_wait_healthy(i) {
            panic!("{why}");
        }
    }

    /// Waits up to 30 s for member `i` to report healthy; an error at once if it has exited.
    fn try_wait_healthy(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.healthy(i) {
                return Ok(());
            }
            let member = &mut self.members[i];
            if let Some(child) = member.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    member.child = None;
                    return Err(member.failure(&format!("exited ({status})")));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.members[i].failure("did not become healthy in 30 s"))
    }
}

impl Member {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the member's log file");
        let child = Command::new("etcd")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts (apt install etcd-server)");
        self.child = Some(child);
    }

    /// Why the member is not up, with the first and last lines of its log (a flag etcd
    /// refuses is on the first line, a bind it could not make near the end).
    fn failure(&self, what: &str) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = if lines.len() <= 12 {
            lines.join("\n")
        } else {
            [&lines[..2], &["..."], &lines[lines.len() - 10..]]
                .concat()
                .join("\n")
        };
        format!(
            "etcd member {} (client port {}, peer port {}) {what}; its log ends:\n{tail}",
            self.name, self.client_port, self.peer_port
        )
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A tiny HTTP/1.0 request to a member's client port; the body, if it answered 200.
fn http_get(port: u16, path: &str, post: Option<&str>) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = match post {
        Some(body) => format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        None => format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    };
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_owned())
        .or_else(|| head.contains(" 200 ").then(|| body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_that_exits_is_reported_with_its_log() {
        let failure = std::panic::catch_unwind(|| EtcdCluster::start_with(1, &["--no-such-flag"]))
            .err()
            .expect("a member with an unknown flag never becomes healthy");
        let message = failure
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(message.contains("exited"), "{message}");
        assert!(message.contains("no-such-flag"), "its log: {message}");
    }

    #[test]
    fn ports_are_chosen_below_the_ephemeral_range() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        for _ in 0..100 {
            let port = free_port();
            assert!((15_000..low.max(20_001)).contains(&port), "{port}");
        }
    }
}
