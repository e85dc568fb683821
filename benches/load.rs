//! The end-to-end load generator of issue 9: one table of the hot paths' figures, each measured
//! beside its baseline in the same run (alternating windows, median of several), because on a
//! shared machine an absolute time alone proves nothing. Nothing here asserts a time.
//!
//! The server is, by default, the real binary (`zsc serve`, built by cargo for this bench) as
//! a child process on 127.0.0.1, at the default log level, so that its RSS and CPU are its own;
//! `--in-process` runs it inside this process instead (no log subscriber; RSS and CPU then
//! include the client), and `--target HOST:PORT --token-file FILE [--server-pid PID]` measures
//! a server that is already running (an operator token: the bench creates its own orgs).
//!
//! Rows:
//! 1. ValidateKey vs grpc.health.v1.Health/Check on the same connections: closed-loop peak
//!    throughput, then open-loop latency at 80% of Health/Check's peak (HDR histogram, latency
//!    from each request's intended send time: no coordinated omission), and the server's CPU
//!    per call.
//! 2. The Verifier's cache hit (batches of 1,000 calls, per call) vs a remote ValidateKey (one
//!    at a time); and the hit from 2 threads at once vs 1.
//! 3. Revocation fan-out: from RegenerateKey's OK to receipt by every subscriber (spread over
//!    100 connections) vs 1 subscriber before and after; server RSS per idle subscriber, and
//!    the server CPU their heartbeats take.
//! 4. Durable writes: RegenerateKey from 64 callers on 64 orgs vs 1 caller.
//! 6. Interference: ValidateKey p99 (open loop) while the subscribers of row 3 receive 100
//!    revocations/s vs alone.
//!
//! Rows 5 and 7 are printed as not measured, with the reason.
//!
//! `cargo bench --bench load [-- --quick] [--subscribers 10000] [--connections N]
//! [--in-flight N] [--rounds N] [--window-ms MS] [--load-fraction 0.8] [--rows 1,2,3,4,6]
//! [--in-process | --target HOST:PORT --token-file F [--server-pid PID]]`

use std::{
    fmt::Write as _,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use hdrhistogram::Histogram;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::sync::CancellationToken;
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use zsc::client::Bearer;
use zsc::proto::{
    access_service_client::AccessServiceClient, key_service_client::KeyServiceClient,
    user_service_client::UserServiceClient, watch_revocations_response::Event, *,
};
use zsc::verifier::{Verifier, VerifierConfig};

type Authed = InterceptedService<Channel, Bearer>;
type Keys = KeyServiceClient<Authed>;
type Health = HealthClient<Authed>;
type Call = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
    quick: bool,
    target: Option<String>,
    token_file: Option<PathBuf>,
    server_pid: Option<u32>,
    in_process: bool,
    subscribers: usize,
    subscriber_connections: usize,
    connections: usize,
    in_flight: usize,
    rounds: usize,
    window: Duration,
    /// Row 1's open-loop rate, as a fraction of Health/Check's peak (the target says 0.8).
    load_fraction: f64,
    rows: Vec<u32>,
}

impl Options {
    fn parse() -> Options {
        let mut args = std::env::args().skip(1);
        let mut o = Options {
            quick: false,
            target: None,
            token_file: None,
            server_pid: None,
            in_process: false,
            subscribers: 1000,
            subscriber_connections: 100,
            connections: 4,
            in_flight: 32,
            rounds: 5,
            window: Duration::from_secs(2),
            load_fraction: 0.8,
            rows: vec![1, 2, 3, 4, 6],
        };
        let mut subscribers = None;
        let mut rounds = None;
        let mut window = None;
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .unwrap_or_else(|| panic!("{name} needs a value"))
            };
            match arg.as_str() {
                "--quick" => o.quick = true,
                "--target" => o.target = Some(value("--target")),
                "--token-file" => o.token_file = Some(value("--token-file").into()),
                "--server-pid" => o.server_pid = Some(number(&value("--server-pid")) as u32),
                "--in-process" => o.in_process = true,
                "--subscribers" => subscribers = Some(number(&value("--subscribers"))),
                "--connections" => o.connections = number(&value("--connections")).max(1),
                "--in-flight" => o.in_flight = number(&value("--in-flight")).max(1),
                "--rounds" => rounds = Some(number(&value("--rounds")).max(1)),
                "--window-ms" => {
                    window = Some(Duration::from_millis(number(&value("--window-ms")) as u64))
                }
                "--load-fraction" => {
                    o.load_fraction = value("--load-fraction")
                        .parse()
                        .expect("--load-fraction is a number such as 0.8")
                }
                "--rows" => {
                    o.rows = value("--rows")
                        .split(',')
                        .map(|r| number(r.trim()) as u32)
                        .collect()
                }
                // `cargo bench` passes --bench; a criterion filter or flag is not ours.
                _ => {}
            }
        }
        if o.quick {
            o.rounds = 3;
            o.window = Duration::from_millis(500);
            o.subscribers = 100;
        }
        o.subscribers = subscribers.unwrap_or(o.subscribers).max(1);
        o.rounds = rounds.unwrap_or(o.rounds);
        o.window = window.unwrap_or(o.window);
        o
    }

    fn row(&self, row: u32) -> bool {
        self.rows.contains(&row)
    }
}

fn number(text: &str) -> usize {
    text.replace(['_', ','], "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text}"))
}

// ---------------------------------------------------------------------------------------------
// The server under test

enum ServerUnderTest {
    Child {
        child: Child,
        log: PathBuf,
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
    async fn start(options: &Options) -> (ServerUnderTest, String, String) {
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
            let server = zsc::server::Server::open(config).expect("server opens");
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
        // A free port, handed to the child (a race with another process is possible, and
        // would show as the child failing to start).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = dir.path().join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_zsc"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data)
            // The default log level, whatever this shell has.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start zsc serve");
        let token = read_token(&data).await;
        let url = format!("http://127.0.0.1:{port}");
        let server = ServerUnderTest::Child {
            child,
            log,
            _dir: dir,
        };
        (server, url, token)
    }

    fn pid(&self) -> Option<u32> {
        match self {
            ServerUnderTest::Child { child, .. } => Some(child.id()),
            ServerUnderTest::InProcess { .. } => Some(std::process::id()),
            ServerUnderTest::External { pid } => *pid,
        }
    }

    fn describe(&self) -> String {
        match self {
            ServerUnderTest::Child { child, .. } => format!(
                "`zsc serve` as a child process (pid {}), default log level (RUST_LOG unset)",
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
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// CPU time used so far (user + system, all threads), at the kernel's 10 ms tick.
    fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // USER_HZ is 100 on every Linux this runs on.
        Some(Duration::from_millis(ticks * 10))
    }

    fn log_lines(&self) -> Option<usize> {
        match self {
            ServerUnderTest::Child { log, .. } => {
                Some(std::fs::read_to_string(log).ok()?.lines().count())
            }
            _ => None,
        }
    }

    async fn stop(self) {
        match self {
            ServerUnderTest::Child { mut child, .. } => {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(15);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = child.kill();
                let _ = child.wait();
            }
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

async fn read_token(data: &Path) -> String {
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

/// One new HTTP/2 connection (a tonic Channel is one), retried while the server starts.
async fn connect(url: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let endpoint = zsc::client::endpoint(url, None).expect("valid url");
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot connect to {url}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The data the rows use

struct Fixture {
    url: String,
    operator: Bearer,
    consumer: Bearer,
    consumer_token: String,
    email: String,
    key: String,
    /// 64 orgs, each with an administrator and a key: (org_id, admin email).
    orgs: Vec<(String, String)>,
}

async fn org_with_key(
    channel: Channel,
    operator: Bearer,
    name: String,
) -> (String, String, String) {
    let mut users = UserServiceClient::with_interceptor(channel.clone(), operator.clone());
    let mut keys = KeyServiceClient::with_interceptor(channel, operator);
    let org = users
        .create_org(CreateOrgRequest {
            name: name.clone(),
            edition: Edition::Enterprise as i32,
        })
        .await
        .expect("create org")
        .into_inner();
    let email = format!(
        "admin@{}.example.com",
        name.to_lowercase().replace(' ', "-")
    );
    users
        .create_user(CreateUserRequest {
            org_id: org.org_id.clone(),
            email: email.clone(),
            display_name: "Admin".into(),
            profile: Profile::Administrator as i32,
        })
        .await
        .expect("create user");
    let key = keys
        .generate_key(GenerateKeyRequest {
            org_id: org.org_id.clone(),
            actor_email: email.clone(),
        })
        .await
        .expect("generate key")
        .into_inner()
        .key;
    (org.org_id, email, key)
}

async fn fixture(url: &str, operator_token: &str) -> Fixture {
    let operator = Bearer::new(operator_token).expect("operator token");
    let channel = connect(url).await;
    // Wait until the server says SERVING.
    let mut health = HealthClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while health
        .check(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status)
        .ok()
        != Some(1)
    {
        assert!(Instant::now() < deadline, "the server is SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = std::process::id();
    let (_, email, key) =
        org_with_key(channel.clone(), operator.clone(), format!("Bench {run}")).await;
    let consumer_token = AccessServiceClient::with_interceptor(channel.clone(), operator.clone())
        .create_service_account(CreateServiceAccountRequest {
            name: format!("bench-{run}"),
            role: Role::Consumer as i32,
        })
        .await
        .expect("create account")
        .into_inner()
        .token;
    // The 64 orgs of rows 4 and 6, created at once (their writes share flushes).
    let made: Vec<_> = (0..64)
        .map(|i| {
            tokio::spawn(org_with_key(
                channel.clone(),
                operator.clone(),
                format!("Bench {run} writer {i}"),
            ))
        })
        .collect();
    let mut orgs = Vec::new();
    for task in made {
        let (org, admin, _) = task.await.expect("setup task");
        orgs.push((org, admin));
    }
    Fixture {
        url: url.to_owned(),
        operator,
        consumer: Bearer::new(&consumer_token).expect("consumer token"),
        consumer_token,
        email,
        key,
        orgs,
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid bounds")
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

/// What one window measured.
struct Window {
    rate: f64,
    errors: u64,
    latency: Histogram<u64>,
    /// Server CPU per completed call, when the server's CPU can be read.
    cpu_per_call: Option<Duration>,
    /// Open loop: the calls took over 10% longer than the window to complete, i.e. the
    /// machine could not keep up with the rate (latency then measures a growing queue).
    overloaded: bool,
}

/// Closed loop: `workers` callers, each starting its next call when the last one answers,
/// for `window`. Worker `w` calls `call(w)`.
async fn closed_loop(
    call: &Call,
    workers: usize,
    window: Duration,
    server: &ServerUnderTest,
) -> Window {
    let cpu0 = server.cpu();
    let started = Instant::now();
    let end = started + window;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut done, mut errors) = (0u64, 0u64);
                while Instant::now() < end {
                    let sent = Instant::now();
                    let ok = call(w).await;
                    let at = Instant::now();
                    if at > end {
                        break;
                    }
                    latency.saturating_record(nanos(at - sent));
                    done += 1;
                    errors += u64::from(!ok);
                }
                (latency, done, errors)
            })
        })
        .collect();
    let mut latency = histogram();
    let (mut done, mut errors) = (0, 0);
    for task in tasks {
        let (h, d, e) = task.await.expect("worker");
        latency.add(h).expect("same bounds");
        done += d;
        errors += e;
    }
    let cpu_per_call = match (cpu0, server.cpu()) {
        (Some(a), Some(b)) if done > 0 => Some((b - a) / done as u32),
        _ => None,
    };
    Window {
        rate: done as f64 / window.as_secs_f64(),
        errors,
        latency,
        cpu_per_call,
        overloaded: false,
    }
}

/// Open loop: calls at `rate` per second for `window`, each sent at its intended time by a
/// dispatcher thread (with 1 ns timer slack a thread wakes within microseconds; tokio's timer
/// has 1 ms ticks) whatever earlier
/// calls are doing; latency counts from the intended time, so a stall is charged to every
/// call it delayed (no coordinated omission).
async fn open_loop(call: &Call, rate: f64, window: Duration) -> Window {
    let runtime = tokio::runtime::Handle::current();
    let calls = (rate * window.as_secs_f64()).round().max(1.0) as usize;
    let latency = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(5);
    let dispatch = {
        let (call, latency, errors) = (call.clone(), latency.clone(), errors.clone());
        tokio::task::spawn_blocking(move || {
            // A sleeping thread wakes up to 50 us late by default (timer slack): ask for 1 ns.
            // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
            let mut spawned = Vec::with_capacity(calls);
            let mut lag = histogram();
            for i in 0..calls {
                let intended = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                }
                lag.saturating_record(nanos(Instant::now().saturating_duration_since(intended)));
                let (call, latency, errors) = (call.clone(), latency.clone(), errors.clone());
                spawned.push(runtime.spawn(async move {
                    let ok = call(i).await;
                    let took = Instant::now().saturating_duration_since(intended);
                    latency
                        .lock()
                        .expect("never poisoned")
                        .saturating_record(nanos(took));
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            if std::env::var_os("ZSC_BENCH_DEBUG").is_some() {
                eprintln!(
                    "open loop: dispatch lag p50 {} p99 {} max {}",
                    time(lag.value_at_quantile(0.5) as f64),
                    time(lag.value_at_quantile(0.99) as f64),
                    time(lag.max() as f64)
                );
            }
            spawned
        })
    };
    for task in dispatch.await.expect("dispatcher") {
        task.await.expect("call task");
    }
    let took = start.elapsed();
    let latency = std::mem::replace(&mut *latency.lock().expect("never poisoned"), histogram());
    Window {
        rate,
        errors: errors.load(Ordering::Relaxed),
        latency,
        cpu_per_call: None,
        overloaded: took.as_secs_f64() > 1.1 * window.as_secs_f64(),
    }
}

fn health_call(clients: Vec<Health>) -> Call {
    Arc::new(move |i| {
        let mut client = clients[i % clients.len()].clone();
        async move { client.check(HealthCheckRequest::default()).await.is_ok() }.boxed()
    })
}

fn validate_call(clients: Vec<Keys>, email: String, key: String) -> Call {
    Arc::new(move |i| {
        let mut client = clients[i % clients.len()].clone();
        let request = ValidateKeyRequest {
            email: email.clone(),
            key: key.clone(),
        };
        async move { client.validate_key(request).await.is_ok() }.boxed()
    })
}

/// Call `i` regenerates org `i % orgs` through client `i % clients`.
fn regenerate_call(clients: Vec<Keys>, orgs: Vec<(String, String)>) -> Call {
    Arc::new(move |i| {
        let mut client = clients[i % clients.len()].clone();
        let (org_id, admin) = orgs[i % orgs.len()].clone();
        let request = RegenerateKeyRequest {
            org_id,
            actor_email: admin,
        };
        async move { client.regenerate_key(request).await.is_ok() }.boxed()
    })
}

// ---------------------------------------------------------------------------------------------
// The table

struct Row {
    row: &'static str,
    figure: String,
    median: String,
    p99: String,
    baseline: String,
    baseline_median: String,
    baseline_p99: String,
    ratio: String,
    target: String,
    result: String,
}

impl Row {
    fn not_measured(row: &'static str, figure: &str, target: &str, why: &str) -> Row {
        Row {
            row,
            figure: figure.into(),
            median: "not measured".into(),
            p99: "-".into(),
            baseline: why.into(),
            baseline_median: "-".into(),
            baseline_p99: "-".into(),
            ratio: "-".into(),
            target: target.into(),
            result: "-".into(),
        }
    }
}

fn verdict(pass: bool) -> String {
    if pass { "pass" } else { "MISS" }.into()
}

fn time(ns: f64) -> String {
    if ns.is_nan() {
        "-".into()
    } else if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn rate(per_second: f64) -> String {
    let whole = per_second.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out}/s")
}

fn print_table(rows: &[Row]) {
    let header = [
        "row", "figure", "median", "p99", "baseline", "median", "p99", "ratio", "target", "result",
    ];
    let cells: Vec<[&str; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.row,
                &r.figure,
                &r.median,
                &r.p99,
                &r.baseline,
                &r.baseline_median,
                &r.baseline_p99,
                &r.ratio,
                &r.target,
                &r.result,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str; 10]| {
        let mut out = String::from("|");
        for (cell, w) in cells.iter().zip(widths) {
            let _ = write!(out, " {cell:<w$} |");
        }
        out
    };
    println!("{}", line(&header));
    let mut rule = String::from("|");
    for w in widths {
        let _ = write!(rule, "{}|", "-".repeat(w + 2));
    }
    println!("{rule}");
    for row in &cells {
        println!("{}", line(row));
    }
}

// ---------------------------------------------------------------------------------------------
// Row 1: ValidateKey vs Health/Check

async fn row1(
    options: &Options,
    fx: &Fixture,
    server: &ServerUnderTest,
    rows: &mut Vec<Row>,
) -> f64 {
    let mut health = Vec::new();
    let mut validate = Vec::new();
    for _ in 0..options.connections {
        let channel = connect(&fx.url).await;
        health.push(HealthClient::with_interceptor(
            channel.clone(),
            fx.consumer.clone(),
        ));
        validate.push(KeyServiceClient::with_interceptor(
            channel,
            fx.consumer.clone(),
        ));
    }
    let health = health_call(health);
    let validate = validate_call(validate, fx.email.clone(), fx.key.clone());
    let workers = options.connections * options.in_flight;
    eprintln!("row 1: warm-up");
    let warm = options.window / 2;
    closed_loop(&health, workers, warm, server).await;
    closed_loop(&validate, workers, warm, server).await;

    let (mut h_peak, mut v_peak, mut h_cpu, mut v_cpu) = (vec![], vec![], vec![], vec![]);
    let mut errors = 0;
    for round in 0..options.rounds {
        // Alternate which goes first, so that a drift in the machine is shared.
        for first in [round % 2 == 0, round % 2 != 0] {
            let (call, peaks, cpu) = if first {
                (&health, &mut h_peak, &mut h_cpu)
            } else {
                (&validate, &mut v_peak, &mut v_cpu)
            };
            let w = closed_loop(call, workers, options.window, server).await;
            eprintln!(
                "row 1: closed loop {} {}",
                if first { "Health/Check" } else { "ValidateKey" },
                rate(w.rate)
            );
            peaks.push(w.rate);
            errors += w.errors;
            if let Some(c) = w.cpu_per_call {
                cpu.push(c.as_nanos() as f64);
            }
        }
    }
    let (h, v) = (median(&h_peak), median(&v_peak));
    let ratio = v / h;
    rows.push(Row {
        row: "1",
        figure: format!(
            "ValidateKey peak, {} conns x {} in flight",
            options.connections, options.in_flight
        ),
        median: rate(v),
        p99: "-".into(),
        baseline: "Health/Check peak".into(),
        baseline_median: rate(h),
        baseline_p99: "-".into(),
        ratio: format!("{ratio:.2}x"),
        target: ">= 0.95x".into(),
        result: verdict(ratio >= 0.95),
    });

    let at = options.load_fraction * h;
    let (mut h50, mut h99, mut v50, mut v99) = (vec![], vec![], vec![], vec![]);
    let mut overloaded = 0;
    for round in 0..options.rounds {
        for first in [round % 2 == 0, round % 2 != 0] {
            let call = if first { &health } else { &validate };
            let w = open_loop(call, at, options.window).await;
            errors += w.errors;
            overloaded += usize::from(w.overloaded);
            let (p50, p99) = (
                w.latency.value_at_quantile(0.5) as f64,
                w.latency.value_at_quantile(0.99) as f64,
            );
            eprintln!(
                "row 1: open loop at {} {} p50 {} p99 {}",
                rate(at),
                if first { "Health/Check" } else { "ValidateKey" },
                time(p50),
                time(p99)
            );
            if first {
                h50.push(p50);
                h99.push(p99);
            } else {
                v50.push(p50);
                v99.push(p99);
            }
        }
    }
    let ratio = median(&v99) / median(&h99);
    rows.push(Row {
        row: "1",
        figure: format!(
            "ValidateKey latency at {} = {:.0}% of the baseline's peak (open loop; {overloaded} of {} windows overloaded)",
            rate(at),
            options.load_fraction * 100.0,
            2 * options.rounds
        ),
        median: time(median(&v50)),
        p99: time(median(&v99)),
        baseline: "Health/Check, same rate".into(),
        baseline_median: time(median(&h50)),
        baseline_p99: time(median(&h99)),
        ratio: format!("{ratio:.2}x (p99)"),
        target: "p99 <= 1.3x at 80%".into(),
        result: if options.load_fraction == 0.8 {
            verdict(ratio <= 1.3)
        } else {
            "(not at 80%)".into()
        },
    });
    if !v_cpu.is_empty() && !h_cpu.is_empty() {
        let ratio = median(&v_cpu) / median(&h_cpu);
        rows.push(Row {
            row: "1",
            figure: "server CPU per ValidateKey (closed loop)".into(),
            median: time(median(&v_cpu)),
            p99: "-".into(),
            baseline: "per Health/Check".into(),
            baseline_median: time(median(&h_cpu)),
            baseline_p99: "-".into(),
            ratio: format!("{ratio:.2}x"),
            target: "(diagnostic)".into(),
            result: "-".into(),
        });
    }
    if errors > 0 {
        eprintln!("row 1: {errors} calls failed");
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Row 2: the Verifier's cache hit

/// `batches` batches of 1,000 cache hits; the time per call of each batch, in ns.
fn hit_batches(verifier: &Verifier, email: &str, key: &str, batches: usize) -> (Vec<f64>, u64) {
    const BATCH: u32 = 1000;
    let mut per_call = Vec::with_capacity(batches);
    let mut misses = 0;
    for _ in 0..batches {
        let started = Instant::now();
        for _ in 0..BATCH {
            match verifier.verify(email, key).now_or_never() {
                Some(Ok(v)) if v.cached => {
                    std::hint::black_box(v);
                }
                _ => misses += 1,
            }
        }
        per_call.push(started.elapsed().as_nanos() as f64 / f64::from(BATCH));
    }
    (per_call, misses)
}

async fn row2(options: &Options, fx: &Fixture, rows: &mut Vec<Row>) {
    let verifier = Arc::new(
        Verifier::start(VerifierConfig::new(
            fx.url.clone(),
            fx.consumer_token.clone(),
        ))
        .expect("verifier"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !verifier.stats().fresh {
        assert!(Instant::now() < deadline, "the Verifier's stream caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    verifier
        .verify(&fx.email, &fx.key)
        .await
        .expect("valid key");
    let mut remote_client =
        KeyServiceClient::with_interceptor(connect(&fx.url).await, fx.consumer.clone());
    let batches = if options.quick { 50 } else { 200 };
    let remote_calls = if options.quick { 100 } else { 500 };
    let (mut one, mut two, mut remote) = (vec![], vec![], histogram());
    let mut misses = 0;
    for _ in 0..options.rounds {
        let (v, email, key) = (verifier.clone(), fx.email.clone(), fx.key.clone());
        let (batch, m) =
            tokio::task::spawn_blocking(move || hit_batches(&v, &email, &key, batches))
                .await
                .expect("hits");
        one.extend(batch);
        misses += m;
        // Two threads released together by a barrier, hitting the same Verifier.
        let (v, email, key) = (verifier.clone(), fx.email.clone(), fx.key.clone());
        let pair = tokio::task::spawn_blocking(move || {
            let barrier = std::sync::Barrier::new(2);
            std::thread::scope(|scope| {
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            hit_batches(&v, &email, &key, batches)
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().expect("thread"))
                    .collect::<Vec<_>>()
            })
        });
        for (batch, m) in pair.await.expect("hits") {
            two.extend(batch);
            misses += m;
        }
        for _ in 0..remote_calls {
            let sent = Instant::now();
            remote_client
                .validate_key(ValidateKeyRequest {
                    email: fx.email.clone(),
                    key: fx.key.clone(),
                })
                .await
                .expect("valid key");
            remote.saturating_record(nanos(sent.elapsed()));
        }
    }
    if misses > 0 {
        eprintln!("row 2: {misses} verify calls were not cache hits (stream not fresh?)");
    }
    let hit = median(&one);
    let remote50 = remote.value_at_quantile(0.5) as f64;
    let faster = remote50 / hit;
    rows.push(Row {
        row: "2",
        figure: "Verifier cache hit (per call, batches of 1,000)".into(),
        median: time(hit),
        p99: time(quantile(&one, 0.99)),
        baseline: "remote ValidateKey, 1 at a time".into(),
        baseline_median: time(remote50),
        baseline_p99: time(remote.value_at_quantile(0.99) as f64),
        ratio: format!("{faster:.0}x faster"),
        target: "<= 150 ns, >= 100x".into(),
        result: verdict(hit <= 150.0 && faster >= 100.0),
    });
    let both = median(&two);
    let ratio = both / hit;
    rows.push(Row {
        row: "2",
        figure: "Verifier cache hit, 2 threads at once (per call)".into(),
        median: time(both),
        p99: time(quantile(&two, 0.99)),
        baseline: "1 thread".into(),
        baseline_median: time(hit),
        baseline_p99: time(quantile(&one, 0.99)),
        ratio: format!("{ratio:.2}x"),
        target: "no contention (<= 1.2x)".into(),
        result: verdict(ratio <= 1.2),
    });
}

// ---------------------------------------------------------------------------------------------
// Row 4: durable writes

async fn row4(options: &Options, fx: &Fixture, rows: &mut Vec<Row>, server: &ServerUnderTest) {
    let mut clients = Vec::new();
    for _ in 0..fx.orgs.len() {
        clients.push(KeyServiceClient::with_interceptor(
            connect(&fx.url).await,
            fx.operator.clone(),
        ));
    }
    let single = regenerate_call(vec![clients[0].clone()], vec![fx.orgs[0].clone()]);
    let many = regenerate_call(clients, fx.orgs.clone());
    let callers = fx.orgs.len();
    closed_loop(&single, 1, options.window / 2, server).await;
    let (mut one, mut all) = (vec![], vec![]);
    let (mut one_h, mut all_h) = (histogram(), histogram());
    for round in 0..options.rounds {
        for first in [round % 2 == 0, round % 2 != 0] {
            let w = if first {
                closed_loop(&single, 1, options.window, server).await
            } else {
                closed_loop(&many, callers, options.window, server).await
            };
            eprintln!(
                "row 4: {} caller(s) {}",
                if first { 1 } else { callers },
                rate(w.rate)
            );
            if w.errors > 0 {
                eprintln!("row 4: {} calls failed", w.errors);
            }
            let (rates, h) = if first {
                (&mut one, &mut one_h)
            } else {
                (&mut all, &mut all_h)
            };
            rates.push(w.rate);
            h.add(w.latency).expect("same bounds");
        }
    }
    let ratio = median(&all) / median(&one);
    rows.push(Row {
        row: "4",
        figure: format!(
            "RegenerateKey, {callers} callers on {callers} orgs (rate; p99 = call latency)"
        ),
        median: rate(median(&all)),
        p99: time(all_h.value_at_quantile(0.99) as f64),
        baseline: "1 caller".into(),
        baseline_median: rate(median(&one)),
        baseline_p99: time(one_h.value_at_quantile(0.99) as f64),
        ratio: format!("{ratio:.1}x"),
        target: ">= 5x".into(),
        result: verdict(ratio >= 5.0),
    });
}

// ---------------------------------------------------------------------------------------------
// Rows 3 and 6: revocation fan-out, and ValidateKey beside it

/// Opens `n` subscribers spread over `connections` (each its own set of connections), and
/// returns once every one has its first checkpoint. Each reports (sequence, arrival).
async fn subscribe(
    fx: &Fixture,
    n: usize,
    connections: usize,
    arrivals: &mpsc::UnboundedSender<(u64, Instant)>,
    stop: &CancellationToken,
) {
    let mut channels = Vec::new();
    for _ in 0..connections.min(n) {
        channels.push(connect(&fx.url).await);
    }
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<()>();
    for i in 0..n {
        let mut client = KeyServiceClient::with_interceptor(
            channels[i % channels.len()].clone(),
            fx.consumer.clone(),
        );
        let (arrivals, ready_tx, stop) = (arrivals.clone(), ready_tx.clone(), stop.clone());
        tokio::spawn(async move {
            let mut first = true;
            let mut stream = client
                .watch_revocations(WatchRevocationsRequest::default())
                .await
                .expect("subscribe")
                .into_inner();
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return,
                    message = stream.message() => message,
                };
                match message {
                    Ok(Some(m)) => match m.event {
                        Some(Event::Checkpoint(_)) if first => {
                            first = false;
                            let _ = ready_tx.send(());
                        }
                        Some(Event::Revocation(r)) => {
                            let _ = arrivals.send((r.sequence, Instant::now()));
                        }
                        _ => {}
                    },
                    Ok(None) | Err(_) => return,
                }
            }
        });
    }
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < n {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, ready.recv())
            .await
            .expect("every subscriber got its first checkpoint within 120 s")
            .expect("senders alive");
        seen += 1;
    }
}

/// `count` revocations one after another; for each, every one of `subscribers` must report it.
/// Returns (OK -> receipt latencies, RegenerateKey call latencies, receipts before the OK).
/// A receipt before the caller has its OK counts as 0: the server wakes the streams and
/// answers the call at the same moment, once the revocation is durable.
async fn revoke_and_wait(
    keys: &mut Keys,
    org: &(String, String),
    count: usize,
    subscribers: usize,
    arrived: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
) -> (Histogram<u64>, Histogram<u64>, u64) {
    let (mut fanout, mut call) = (histogram(), histogram());
    let mut early = 0u64;
    while arrived.try_recv().is_ok() {}
    let mut late = 0;
    for _ in 0..count {
        let sent = Instant::now();
        keys.regenerate_key(RegenerateKeyRequest {
            org_id: org.0.clone(),
            actor_email: org.1.clone(),
        })
        .await
        .expect("regenerate");
        let ok = Instant::now();
        call.saturating_record(nanos(ok - sent));
        let mut sequence = None;
        for _ in 0..subscribers {
            match tokio::time::timeout(Duration::from_secs(30), arrived.recv()).await {
                Ok(Some((seq, at))) => {
                    assert!(
                        sequence.is_none_or(|s| s == seq),
                        "one revocation at a time"
                    );
                    sequence = Some(seq);
                    early += u64::from(at < ok);
                    fanout.saturating_record(nanos(at.saturating_duration_since(ok)));
                }
                _ => {
                    late += 1;
                    break;
                }
            }
        }
    }
    if late > 0 {
        eprintln!("row 3: {late} revocations did not reach every subscriber within 30 s");
    }
    (fanout, call, early)
}

async fn rows3and6(
    options: &Options,
    fx: &Fixture,
    server: &ServerUnderTest,
    validate_peak: Option<f64>,
    rows: &mut Vec<Row>,
) {
    let n = options.subscribers;
    let revocations = if options.quick { 20 } else { 100 };
    let (arrivals, mut arrived) = mpsc::unbounded_channel();
    let mut keys = KeyServiceClient::with_interceptor(connect(&fx.url).await, fx.operator.clone());
    let org = fx.orgs[0].clone();
    let idle = if options.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };

    // Baseline: one subscriber on its own connection.
    let baseline_stop = CancellationToken::new();
    subscribe(fx, 1, 1, &arrivals, &baseline_stop).await;
    eprintln!("row 3: 1 subscriber");
    let (mut base, _, _) = revoke_and_wait(&mut keys, &org, revocations / 2, 1, &mut arrived).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (rss0, cpu0) = (server.rss_kib(), server.cpu());
    tokio::time::sleep(idle).await;
    let idle_cpu_one = cpu0.zip(server.cpu()).map(|(a, b)| b - a);

    // The many, over their own connections.
    let many_stop = CancellationToken::new();
    let connections = options.subscriber_connections;
    eprintln!(
        "row 3: opening {} more subscribers over {connections} connections",
        n - 1
    );
    subscribe(fx, n - 1, connections, &arrivals, &many_stop).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (rss1, cpu1) = (server.rss_kib(), server.cpu());
    tokio::time::sleep(idle).await;
    let idle_cpu_many = cpu1.zip(server.cpu()).map(|(a, b)| b - a);
    eprintln!("row 3: {n} subscribers");
    let (many, many_calls, early) =
        revoke_and_wait(&mut keys, &org, revocations, n, &mut arrived).await;

    if options.row(6) {
        row6(options, fx, validate_peak, n, &mut arrived, rows).await;
    }

    many_stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("row 3: 1 subscriber again");
    let (after, base_calls, _) =
        revoke_and_wait(&mut keys, &org, revocations / 2, 1, &mut arrived).await;
    base.add(after).expect("same bounds");
    baseline_stop.cancel();

    let p = |h: &Histogram<u64>, q| h.value_at_quantile(q) as f64;
    let ratio = p(&many, 0.99) / p(&base, 0.99);
    rows.push(Row {
        row: "3",
        figure: format!(
            "revocation OK -> receipt, {n} subscribers / {connections} conns, {revocations} revocations ({:.0}% before the OK: 0)",
            early as f64 * 100.0 / many.len().max(1) as f64
        ),
        median: time(p(&many, 0.5)),
        p99: time(p(&many, 0.99)),
        baseline: "1 subscriber (before and after)".into(),
        baseline_median: time(p(&base, 0.5)),
        baseline_p99: time(p(&base, 0.99)),
        // With one subscriber the receipt often beats the OK (p99 0): no ratio then.
        ratio: if ratio.is_finite() {
            format!("{ratio:.1}x (p99)")
        } else {
            "-".into()
        },
        target: if n >= 10_000 { "p99 <= 50 ms" } else { "p99 <= 5 ms" }.into(),
        result: if n == 1000 || n == 10_000 {
            verdict(p(&many, 0.99) <= if n >= 10_000 { 50e6 } else { 5e6 })
        } else {
            format!("({n} subscribers: not the target's count)")
        },
    });
    rows.push(Row {
        row: "3",
        figure: format!("RegenerateKey call with {n} subscribers"),
        median: time(p(&many_calls, 0.5)),
        p99: time(p(&many_calls, 0.99)),
        baseline: "with 1 subscriber".into(),
        baseline_median: time(p(&base_calls, 0.5)),
        baseline_p99: time(p(&base_calls, 0.99)),
        ratio: format!("{:.2}x (p50)", p(&many_calls, 0.5) / p(&base_calls, 0.5)),
        target: "(diagnostic)".into(),
        result: "-".into(),
    });
    match (rss0, rss1) {
        (Some(a), Some(b)) => {
            let per = (b.saturating_sub(a)) as f64 * 1024.0 / (n - 1).max(1) as f64;
            rows.push(Row {
                row: "3",
                figure: format!("server RSS per idle subscriber ({} -> {} KiB)", a, b),
                median: format!("{:.1} KiB", per / 1024.0),
                p99: "-".into(),
                baseline: "-".into(),
                baseline_median: "-".into(),
                baseline_p99: "-".into(),
                ratio: "-".into(),
                target: "<= 10 KiB".into(),
                result: verdict(per <= 10.0 * 1024.0),
            });
        }
        _ => rows.push(Row::not_measured(
            "3",
            "server RSS per idle subscriber",
            "<= 10 KiB",
            "server's /proc not readable",
        )),
    }
    if let (Some(one), Some(many)) = (idle_cpu_one, idle_cpu_many) {
        let share = |d: Duration| d.as_secs_f64() / idle.as_secs_f64() * 100.0;
        rows.push(Row {
            row: "3",
            figure: format!("idle server CPU (heartbeats), {n} subscribers"),
            median: format!("{:.1}% of a core", share(many)),
            p99: "-".into(),
            baseline: "1 subscriber".into(),
            baseline_median: format!("{:.1}% of a core", share(one)),
            baseline_p99: "-".into(),
            ratio: "-".into(),
            target: "(diagnostic)".into(),
            result: "-".into(),
        });
    }
}

/// ValidateKey p99 (open loop) while the open subscribers receive 100 revocations/s, vs alone.
async fn row6(
    options: &Options,
    fx: &Fixture,
    validate_peak: Option<f64>,
    subscribers: usize,
    arrived: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
    rows: &mut Vec<Row>,
) {
    let mut clients = Vec::new();
    for _ in 0..options.connections {
        clients.push(KeyServiceClient::with_interceptor(
            connect(&fx.url).await,
            fx.consumer.clone(),
        ));
    }
    let validate = validate_call(clients, fx.email.clone(), fx.key.clone());
    // Half of ValidateKey's peak: room for the revocations' work on a shared machine.
    let at = validate_peak.map_or(1000.0, |p| 0.5 * p);
    let mut writers = Vec::new();
    for _ in 0..8 {
        writers.push(KeyServiceClient::with_interceptor(
            connect(&fx.url).await,
            fx.operator.clone(),
        ));
    }
    // Org 0 is row 3's; the revoker uses the others.
    let revoke = regenerate_call(writers, fx.orgs[1..].to_vec());
    let drain = async { while arrived.recv().await.is_some() {} };
    let measure = async {
        let (mut alone, mut busy) = (vec![], vec![]);
        let mut revoked = 0;
        let mut overloaded = 0;
        for round in 0..options.rounds {
            for first in [round % 2 == 0, round % 2 != 0] {
                if first {
                    let w = open_loop(&validate, at, options.window).await;
                    overloaded += usize::from(w.overloaded);
                    alone.push(w.latency.value_at_quantile(0.99) as f64);
                } else {
                    let revoker = open_loop(&revoke, 100.0, options.window);
                    let (w, r) = tokio::join!(open_loop(&validate, at, options.window), revoker);
                    revoked += r.latency.len();
                    overloaded += usize::from(w.overloaded);
                    busy.push(w.latency.value_at_quantile(0.99) as f64);
                }
                eprintln!(
                    "row 6: {} p99 {}",
                    if first { "alone" } else { "with revocations" },
                    time(*if first { &alone } else { &busy }.last().expect("pushed"))
                );
            }
        }
        (alone, busy, revoked, overloaded)
    };
    let (alone, busy, revoked, overloaded) = tokio::select! {
        () = drain => unreachable!("the subscribers' sender lives in the caller"),
        measured = measure => measured,
    };
    let ratio = median(&busy) / median(&alone);
    rows.push(Row {
        row: "6",
        figure: format!(
            "ValidateKey p99 at {}, {subscribers} subscribers getting 100 revocations/s ({revoked} sent; {overloaded} of {} windows overloaded)",
            rate(at),
            2 * options.rounds
        ),
        median: "-".into(),
        p99: time(median(&busy)),
        baseline: "no revocations (same subscribers)".into(),
        baseline_median: "-".into(),
        baseline_p99: time(median(&alone)),
        ratio: format!("{ratio:.2}x (p99)"),
        target: "p99 <= 1.5x".into(),
        result: if subscribers == 1000 { verdict(ratio <= 1.5) } else { format!("({subscribers} subscribers: not the target's count)") },
    });
}

// ---------------------------------------------------------------------------------------------

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(options));
}

async fn run(options: Options) {
    let started = Instant::now();
    let (server, url, token) = ServerUnderTest::start(&options).await;
    eprintln!("load: server at {url}; setting up");
    let fx = fixture(&url, &token).await;
    let mut rows = Vec::new();
    let mut validate_peak = None;
    if options.row(1) {
        validate_peak = Some(row1(&options, &fx, &server, &mut rows).await);
    }
    if options.row(2) {
        row2(&options, &fx, &mut rows).await;
    }
    if options.row(4) {
        row4(&options, &fx, &mut rows, &server).await;
    }
    if options.row(3) || options.row(6) {
        rows3and6(&options, &fx, &server, validate_peak, &mut rows).await;
    }
    rows.push(Row::not_measured(
        "5",
        "ValidateKey with 1,000,000 keys; RSS; restart; backup",
        ">= 0.9x; <= 512 MiB; <= 3 s",
        "a 1M-key store: no bulk loader, 3M durable API calls",
    ));
    rows.push(Row::not_measured(
        "7",
        "rows 1, 3, 4 on etcd",
        "beside sled",
        "no etcd backend on main",
    ));
    rows.sort_by_key(|r| r.row);
    let log_lines = server.log_lines();
    let describe = server.describe();
    server.stop().await;

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "zsc load: {} run, {} rounds of {:?} windows (alternating with the baseline; figures are medians of windows), {:.0} s in all",
        if options.quick { "quick" } else { "full" },
        options.rounds,
        options.window,
        started.elapsed().as_secs_f64()
    );
    println!(
        "machine: {cores} cores ({}), shared by client and server (and anything else running)",
        cpu_model()
    );
    println!("server: {describe}");
    println!(
        "client: tonic; rows 1 and 6: {} HTTP/2 connections x {} in flight (closed loop); open loop sends at fixed rate from a dispatcher thread, latency from intended send time",
        options.connections, options.in_flight
    );
    if let Some(lines) = log_lines {
        println!("server log lines written during the run: {lines}");
    }
    println!();
    print_table(&rows);
}
