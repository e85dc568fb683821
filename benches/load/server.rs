//! The server under test: a child `zsc serve`, one in this process, or one already running;
//! its RSS and CPU from /proc.

use super::*;

/// Subscriber caps high enough for the largest fan-out row (plus its timestamping streams).
const SUBSCRIBER_CAP: usize = 20_000;

// The server under test

pub(crate) enum ServerUnderTest {
    Child {
        child: Child,
        log: PathBuf,
        /// Its `--metrics-listen` address.
        metrics: String,
        _dir: tempfile::TempDir,
    },
    InProcess {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<zsc::domain::Result<()>>,
        _dir: tempfile::TempDir,
    },
    External {
        pid: Option<u32>,
    },
}

impl ServerUnderTest {
    /// Starts (or finds) the server; returns it, its URL and an operator token.
    /// `store`: an etcd store URL (`--store`); None: sled in a temp data dir.
    pub(crate) async fn start(
        options: &Options,
        store: Option<&str>,
    ) -> (ServerUnderTest, String, String) {
        Self::start_with(options, store, &[]).await
    }

    /// As `start`, a child server with `flags` added (ignored for the other kinds).
    pub(crate) async fn start_with(
        options: &Options,
        store: Option<&str>,
        flags: &[&str],
    ) -> (ServerUnderTest, String, String) {
        Self::start_binary(options, store, flags, Path::new(env!("CARGO_BIN_EXE_zsc"))).await
    }

    /// [`ServerUnderTest::start_with`], running `binary` as the child (row 8's build without OTLP).
    pub(crate) async fn start_binary(
        options: &Options,
        store: Option<&str>,
        flags: &[&str],
        binary: &Path,
    ) -> (ServerUnderTest, String, String) {
        if let Some(target) = &options.target {
            let file = options
                .token_file
                .as_ref()
                .expect("--target needs --token-file (an operator token)");
            let token = std::fs::read_to_string(file).expect("read --token-file");
            let url = if target.contains("://") {
                target.clone()
            } else {
                format!("http://{target}")
            };
            let server = ServerUnderTest::External {
                pid: options.server_pid,
            };
            return (server, url, token.trim().to_owned());
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        if options.in_process {
            let mut config = zsc::server::Config::new(&data);
            config.store.cache_bytes = 64 * 1024 * 1024;
            // The fan-out rows subscribe up to 10,000 streams from one consumer account.
            config.watch.max_subscribers = SUBSCRIBER_CAP;
            config.watch.max_subscribers_per_account = SUBSCRIBER_CAP;
            config.store_url = store.map(str::to_owned);
            let server = zsc::server::Server::connect(config)
                .await
                .expect("server opens");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(server.run(listener, async move {
                let _ = stopped.await;
            }));
            let token = read_token(&data).await;
            let server = ServerUnderTest::InProcess {
                stop: Some(stop),
                task,
                _dir: dir,
            };
            return (server, url, token);
        }
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut extra: Vec<&str> = store.iter().flat_map(|url| ["--store", url]).collect();
        extra.extend(["--metrics-listen", &metrics]);
        extra.extend(flags);
        let (child, url, log) = spawn_binary(binary, dir.path(), &extra);
        let token = read_token(&data).await;
        let server = ServerUnderTest::Child {
            child,
            log,
            metrics,
            _dir: dir,
        };
        (server, url, token)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            ServerUnderTest::Child { child, .. } => Some(child.id()),
            ServerUnderTest::InProcess { .. } => Some(std::process::id()),
            ServerUnderTest::External { pid } => *pid,
        }
    }

    /// Where its Prometheus metrics are served (children only).
    pub(crate) fn metrics_addr(&self) -> Option<String> {
        match self {
            ServerUnderTest::Child { metrics, .. } => Some(metrics.clone()),
            _ => None,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            ServerUnderTest::Child { child, metrics, .. } => format!(
                "`zsc serve` as a child process (pid {}), default log level (RUST_LOG unset), --metrics-listen {metrics}",
                child.id()
            ),
            ServerUnderTest::InProcess { .. } => {
                "in this process (no log subscriber; RSS and CPU include the client)".into()
            }
            ServerUnderTest::External { pid: Some(pid) } => format!("external, pid {pid}"),
            ServerUnderTest::External { pid: None } => {
                "external (no --server-pid: RSS and CPU not measured)".into()
            }
        }
    }

    /// Resident memory, KiB.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// CPU time used so far (user + system, all threads), at the kernel's 10 ms tick.
    pub(crate) fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // USER_HZ is 100 on every Linux this runs on.
        Some(Duration::from_millis(ticks * 10))
    }

    pub(crate) fn log_lines(&self) -> Option<usize> {
        match self {
            ServerUnderTest::Child { log, .. } => {
                Some(std::fs::read_to_string(log).ok()?.lines().count())
            }
            _ => None,
        }
    }

    pub(crate) async fn stop(self) {
        match self {
            ServerUnderTest::Child { mut child, .. } => stop_child(&mut child).await,
            ServerUnderTest::InProcess { mut stop, task, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
            }
            ServerUnderTest::External { .. } => {}
        }
    }
}

/// SIGTERM, then SIGKILL if it has not exited within 15 s.
pub(crate) async fn stop_child(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts `zsc serve` on `dir/data` (logging to `dir/server.log`, appended: a restart adds to
/// it), with `extra` flags; returns the child, its URL and its log.
pub(crate) fn spawn_child(dir: &Path, extra: &[&str]) -> (Child, String, PathBuf) {
    spawn_binary(Path::new(env!("CARGO_BIN_EXE_zsc")), dir, extra)
}

/// [`spawn_child`] with another build of `zsc` than the bench's own.
fn spawn_binary(binary: &Path, dir: &Path, extra: &[&str]) -> (Child, String, PathBuf) {
    // A free port, handed to the child (a race with another process is possible, and would
    // show as the child failing to start).
    let port = free_port();
    let log = dir.join("server.log");
    let log_file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    let child = Command::new(binary)
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        // The fan-out rows subscribe up to 10,000 streams from one consumer account.
        .args(["--max-subscribers", &SUBSCRIBER_CAP.to_string()])
        .args(["--max-subscribers-per-account", &SUBSCRIBER_CAP.to_string()])
        .args(extra)
        // The default log level, whatever this shell has.
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start zsc serve");
    (child, format!("http://127.0.0.1:{port}"), log)
}

/// A loopback port nothing listens on just now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until the server at `url` answers Health/Check with SERVING.
pub(crate) async fn wait_serving(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut health = HealthClient::new(connect(url).await);
    while health
        .check(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status)
        .ok()
        != Some(1)
    {
        assert!(Instant::now() < deadline, "the server at {url} is SERVING");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) async fn read_token(data: &Path) -> String {
    let file = data.join("operator.token");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(token) = std::fs::read_to_string(&file) {
            if !token.trim().is_empty() {
                return token.trim().to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server wrote {}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` KeyService clients, each on a connection of its own, calling as `bearer`.
pub(crate) async fn keys_clients(url: &str, bearer: &Bearer, n: usize) -> Vec<Keys> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(KeyServiceClient::with_interceptor(
            connect(url).await,
            bearer.clone(),
        ));
    }
    clients
}

/// One new HTTP/2 connection (a tonic Channel is one), retried while the server starts.
pub(crate) async fn connect(url: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let endpoint = zsc::client::endpoint(url, None).expect("valid url");
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot connect to {url}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}
