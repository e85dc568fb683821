//! Row 1 driven by h2load (Debian's `nghttp2-client`, a C client: `h2load -c4 -m32`) beside
//! the tonic client, and row 8: what rate limits and OTLP export cost row 1, each on a server
//! of its own beside a plain one. h2load counts HTTP 200 as success and a failed gRPC call is
//! HTTP 200 with grpc-status in its trailers, so each run first shows, with `nghttp`, that the
//! request file gets grpc-status 0, and afterwards that the server's
//! `zsc_key_validations_total{result="ok"}` rose by at least h2load's success count.

use std::io::{Read as _, Write as _};

use super::*;

const VALIDATE: &str = "/zsc.v1.KeyService/ValidateKey";
const HEALTH: &str = "/grpc.health.v1.Health/Check";
pub(crate) const HOW: &str = "h2load and nghttp not found: apt-get install nghttp2-client";

/// A server as h2load sees it: its URL, a consumer's token, and a key to validate.
pub(crate) struct H2Target {
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) validate: PathBuf,
    pub(crate) health: PathBuf,
    pub(crate) metrics: Option<String>,
    _dir: tempfile::TempDir,
}

/// A gRPC request body: the 5-byte prefix (not compressed, length) and the message.
fn grpc_body(message: &impl prost::Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    body.extend_from_slice(&bytes);
    body
}

impl H2Target {
    pub(crate) fn new(fx: &Fixture, server: &ServerUnderTest) -> H2Target {
        let dir = tempfile::tempdir().expect("temp dir");
        let validate = dir.path().join("validate.grpc");
        let request = ValidateKeyRequest {
            email: fx.email.clone(),
            key: fx.key.clone(),
        };
        std::fs::write(&validate, grpc_body(&request)).expect("write body");
        let health = dir.path().join("health.grpc");
        std::fs::write(&health, grpc_body(&HealthCheckRequest::default())).expect("write body");
        H2Target {
            url: fx.url.clone(),
            token: fx.consumer_token.clone(),
            validate,
            health,
            metrics: server.metrics_addr(),
            _dir: dir,
        }
    }

    fn headers(&self) -> Vec<String> {
        [
            "content-type: application/grpc".to_owned(),
            "te: trailers".to_owned(),
            format!("authorization: Bearer {}", self.token),
        ]
        .into_iter()
        .flat_map(|h| ["-H".to_owned(), h])
        .collect()
    }

    /// The grpc-status `nghttp` receives for one call with the same bytes and headers.
    fn grpc_status(&self, path: &str, body: &Path) -> Result<String, String> {
        let out = Command::new("nghttp")
            .arg("-v")
            .args(self.headers())
            .arg("-d")
            .arg(body)
            .arg(format!("{}{path}", self.url))
            .output()
            .map_err(|e| format!("nghttp: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter_map(|l| l.split_once("grpc-status: ").map(|(_, s)| s.trim()))
            .next_back()
            .map(str::to_owned)
            .ok_or_else(|| format!("nghttp got no grpc-status for {path}"))
    }

    /// `zsc_key_validations_total{result="ok"}` from the server's /metrics.
    fn validations_ok(&self) -> Option<u64> {
        let addr = self.metrics.as_ref()?;
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.lines()
            .find(|l| l.starts_with("zsc_key_validations_total{result=\"ok\"}"))?
            .split_whitespace()
            .last()?
            .parse::<f64>()
            .ok()
            .map(|v| v as u64)
    }

    /// Runs h2load with `args` against ValidateKey, after checking with nghttp that the request
    /// gets grpc-status 0; the durations of the calls its `--log-file` lists after the first
    /// `skip` (ns). Every call must have had HTTP status 200.
    async fn logged(&self, args: &[&str], skip: usize) -> Result<Histogram<u64>, String> {
        let status = self.grpc_status(VALIDATE, &self.validate)?;
        if status != "0" {
            return Err(format!("nghttp got grpc-status {status} for ValidateKey"));
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let log = dir.path().join("h2load.log");
        let mut command = Command::new("h2load");
        command
            .args(args)
            .arg(format!("--log-file={}", log.display()))
            .args(self.headers())
            .arg("-d")
            .arg(&self.validate)
            .arg(format!("{}{VALIDATE}", self.url));
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("h2load task")
            .map_err(|e| format!("h2load: {e}"))?;
        let text = std::fs::read_to_string(&log).map_err(|e| {
            let stderr = String::from_utf8_lossy(&out.stderr);
            format!("h2load's log: {e}: {}", stderr.trim())
        })?;
        // One line per request, in the order they ended: start (us), HTTP status, duration (us).
        let mut latency = histogram();
        for line in text.lines().skip(skip) {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields[..] {
                [_, "200", us] => latency.saturating_record(us.parse::<u64>().unwrap_or(0) * 1000),
                _ => return Err(format!("h2load: a call did not succeed: {line}")),
            }
        }
        Ok(latency)
    }
}

/// ValidateKey from h2load one call at a time (`-c1 -m1`): `warm_up` calls, then `calls` whose
/// durations h2load's `--log-file` gives; their p50 and p99 (ns). A C client making one syscall
/// round and one wake-up per call, so the tail it sees is the server's and the machine's, to
/// set beside a Python or Java client's in the same run.
pub(crate) async fn one_at_a_time(
    target: &H2Target,
    warm_up: usize,
    calls: usize,
) -> Result<(f64, f64), String> {
    let n = (warm_up + calls).to_string();
    let latency = target.logged(&["-c1", "-m1", "-n", &n], warm_up).await?;
    if (latency.len() as usize) < calls {
        return Err(format!("h2load logged {} calls of {calls}", latency.len()));
    }
    Ok((
        latency.value_at_quantile(0.5) as f64,
        latency.value_at_quantile(0.99) as f64,
    ))
}

/// ValidateKey from h2load at `rate` calls a second for one window ([`window_seconds`]):
/// `connections` clients, each
/// sending its share on a timer (`--rps`) with up to `in_flight` streams open, so a slow answer
/// does not hold the next call back. Returns the calls' p99 (ns) from h2load's `--log-file`.
/// Row 6 measures with it beside the tonic client, whose process also receives every
/// subscriber's revocations; row 7.1 where the tonic open loop cannot hold the rate.
pub(crate) async fn validate_p99_at(
    options: &Options,
    target: &H2Target,
    rate: f64,
) -> Result<f64, String> {
    let seconds = window_seconds(options);
    let clients = options.connections.max(1);
    let args = [
        format!("-c{clients}"),
        format!("-m{}", options.in_flight),
        format!("--rps={:.1}", rate / clients as f64),
        format!("-D{seconds}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let latency = target.logged(&args, 0).await?;
    let expected = (rate * seconds as f64 * 0.9) as u64;
    if latency.len() < expected {
        return Err(format!(
            "h2load made {} calls in {seconds} s, not ~{expected}: it could not keep the rate",
            latency.len()
        ));
    }
    Ok(latency.value_at_quantile(0.99) as f64)
}

pub(crate) fn h2load_installed() -> bool {
    ["h2load", "nghttp"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

/// One h2load window (closed loop, `-c` connections x `-m` streams, `-D` seconds).
#[derive(Default, Clone, Copy)]
pub(crate) struct H2Window {
    pub(crate) succeeded: u64,
    pub(crate) rate: f64,
    /// Server CPU (utime + stime over the window) per successful call, ns.
    pub(crate) cpu_per_call: Option<f64>,
}

fn number_before(text: &str, suffix: &str) -> Option<f64> {
    let end = text.find(suffix)?;
    let start = text[..end].rfind(' ').map_or(0, |i| i + 1);
    text[start..end].parse().ok()
}

pub(crate) async fn h2load_window(
    options: &Options,
    target: &H2Target,
    path: &str,
    server: &ServerUnderTest,
    seconds: u64,
) -> H2Window {
    let body = if path == VALIDATE {
        &target.validate
    } else {
        &target.health
    };
    let mut command = Command::new("h2load");
    command
        .arg(format!("-c{}", options.connections))
        .arg(format!("-m{}", options.in_flight))
        .args(["-D", &seconds.to_string()])
        .args(target.headers())
        .arg("-d")
        .arg(body)
        .arg(format!("{}{path}", target.url));
    let cpu0 = server.cpu();
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("h2load task")
        .expect("h2load runs");
    let cpu = cpu0
        .zip(server.cpu())
        .map(|(a, b)| (b - a).as_nanos() as f64);
    let text = String::from_utf8_lossy(&out.stdout);
    let requests = text.lines().find(|l| l.starts_with("requests:"));
    let finished = text.lines().find(|l| l.starts_with("finished in"));
    let (Some(requests), Some(finished)) = (requests, finished) else {
        eprintln!("h2load printed no summary: {text}");
        return H2Window::default();
    };
    let succeeded = number_before(requests, " succeeded").unwrap_or(0.0) as u64;
    let secs = finished
        .trim_start_matches("finished in ")
        .split_once("s,")
        .and_then(|(s, _)| s.parse::<f64>().ok())
        .unwrap_or(seconds as f64);
    H2Window {
        succeeded,
        rate: succeeded as f64 / secs.max(1e-3),
        cpu_per_call: cpu.filter(|_| succeeded > 0).map(|c| c / succeeded as f64),
    }
}

/// An h2load window: `--window` in whole seconds (`-D` takes no fraction), at least one.
pub(crate) fn window_seconds(options: &Options) -> u64 {
    options.window.as_secs().max(1)
}

/// Row 1 with h2load: ValidateKey vs Health/Check, peak and server CPU per call; then
/// ValidateKey's p99 at half its peak, returned as (rate, p99 in ns) for row 7.1's p99.
pub(crate) async fn row1_h2load(
    options: &Options,
    fx: &Fixture,
    server: &ServerUnderTest,
    rows: &mut Vec<Row>,
) -> Option<(f64, f64)> {
    let figure = format!(
        "ValidateKey peak, h2load -c{} -m{}",
        options.connections, options.in_flight
    );
    if !h2load_installed() {
        rows.push(Row::not_measured("1", &figure, ">= 0.95x", HOW));
        return None;
    }
    let target = H2Target::new(fx, server);
    let statuses = (
        target.grpc_status(VALIDATE, &target.validate),
        target.grpc_status(HEALTH, &target.health),
    );
    let checked = match &statuses {
        (Ok(v), Ok(h)) if v == "0" && h == "0" => "grpc-status 0 from nghttp for both".to_owned(),
        (v, h) => {
            let shown = |s: &Result<String, String>| match s {
                Ok(status) => format!("grpc-status {status}"),
                Err(why) => why.clone(),
            };
            format!(
                "NOT grpc-status 0 for both: ValidateKey {}, Health/Check {}",
                shown(v),
                shown(h)
            )
        }
    };
    let secs = window_seconds(options);
    eprintln!("row 1 (h2load): warm-up; {checked}");
    h2load_window(options, &target, HEALTH, server, 1).await;
    h2load_window(options, &target, VALIDATE, server, 1).await;
    let ok0 = target.validations_ok();
    let (mut h, mut v) = (vec![], vec![]);
    for round in 0..options.rounds {
        for health_first in [round % 2 == 0, round % 2 != 0] {
            let path = if health_first { HEALTH } else { VALIDATE };
            let w = h2load_window(options, &target, path, server, secs).await;
            eprintln!("row 1 (h2load): {path} {}", rate(w.rate));
            if health_first { &mut h } else { &mut v }.push(w);
        }
    }
    let succeeded: u64 = v.iter().map(|w| w.succeeded).sum();
    let counted = ok0
        .zip(target.validations_ok())
        .map(|(a, b)| b.saturating_sub(a));
    let proven = statuses.0.as_deref() == Ok("0") && counted.is_some_and(|c| c >= succeeded);
    let counted = counted.map_or("no /metrics".into(), |c| c.to_string());
    peak_and_cpu_rows(
        rows,
        "1",
        &format!("{figure} ({checked}; validations ok on /metrics +{counted}, h2load succeeded {succeeded})"),
        ("Health/Check peak, h2load", &h),
        &v,
        (">= 0.95x", &|ratio| ratio >= 0.95 && proven),
        ("<= 1.1x", &|ratio| ratio <= 1.1),
    );
    let at = 0.5 * median(&v.iter().map(|w| w.rate).collect::<Vec<_>>());
    let figure = format!(
        "ValidateKey p99 at {} (half its h2load peak), h2load -c{} --rps",
        rate(at),
        options.connections
    );
    match p99s_at(options, &target, at).await {
        Ok(p99s) => {
            let p99 = median(&p99s);
            rows.push(Row {
                row: "1",
                figure,
                median: "-".into(),
                p99: time(p99),
                baseline: "-".into(),
                baseline_median: "-".into(),
                baseline_p99: "-".into(),
                ratio: "-".into(),
                target: "(diagnostic; row 7.1's baseline)".into(),
                result: "-".into(),
            });
            Some((at, p99))
        }
        Err(why) => {
            rows.push(Row::not_measured("1", &figure, "(diagnostic)", &why));
            None
        }
    }
}

/// ValidateKey's p99 (ns) from h2load at `at` calls a second, in `--rounds` windows.
async fn p99s_at(options: &Options, target: &H2Target, at: f64) -> Result<Vec<f64>, String> {
    let mut p99s = Vec::new();
    for _ in 0..options.rounds {
        let p99 = validate_p99_at(options, target, at).await?;
        eprintln!("h2load: {VALIDATE} at {} p99 {}", rate(at), time(p99));
        p99s.push(p99);
    }
    Ok(p99s)
}

/// ValidateKey's h2load peak alone (the median of `--rounds` windows, after a 1 s warm-up),
/// for a line that compares one placement with another (row 7, built with `etcd`).
#[cfg(feature = "etcd")]
pub(crate) async fn validate_peak(
    options: &Options,
    fx: &Fixture,
    server: &ServerUnderTest,
) -> f64 {
    let target = H2Target::new(fx, server);
    h2load_window(options, &target, VALIDATE, server, 1).await;
    let mut rates = Vec::new();
    for _ in 0..options.rounds {
        let w = h2load_window(options, &target, VALIDATE, server, window_seconds(options)).await;
        eprintln!("h2load: {VALIDATE} {}", rate(w.rate));
        rates.push(w.rate);
    }
    median(&rates)
}

type Judge<'a> = &'a dyn Fn(f64) -> bool;

/// A peak line (median rate of `measured` over `baseline`) and a server-CPU-per-call line.
fn peak_and_cpu_rows(
    rows: &mut Vec<Row>,
    row: &'static str,
    figure: &str,
    baseline: (&str, &[H2Window]),
    measured: &[H2Window],
    peak_target: (&str, Judge<'_>),
    cpu_target: (&str, Judge<'_>),
) {
    let rates = |ws: &[H2Window]| median(&ws.iter().map(|w| w.rate).collect::<Vec<_>>());
    let cpus =
        |ws: &[H2Window]| median(&ws.iter().filter_map(|w| w.cpu_per_call).collect::<Vec<_>>());
    let ratio = rates(measured) / rates(baseline.1);
    rows.push(Row {
        row,
        figure: figure.to_owned(),
        median: rate(rates(measured)),
        p99: "-".into(),
        baseline: baseline.0.to_owned(),
        baseline_median: rate(rates(baseline.1)),
        baseline_p99: "-".into(),
        ratio: format!("{ratio:.3}x"),
        target: peak_target.0.into(),
        result: judged(peak_target, ratio),
    });
    let ratio = cpus(measured) / cpus(baseline.1);
    rows.push(Row {
        row,
        figure: format!(
            "server CPU per call, {}",
            figure.split(" (").next().unwrap_or(figure)
        ),
        median: time(cpus(measured)),
        p99: "-".into(),
        baseline: format!("{}: CPU per call", baseline.0),
        baseline_median: time(cpus(baseline.1)),
        baseline_p99: "-".into(),
        ratio: format!("{ratio:.3}x"),
        target: cpu_target.0.into(),
        result: judged(cpu_target, ratio),
    });
}

/// A line's verdict; a target in parentheses is a diagnostic, never judged.
fn judged((target, judge): (&str, Judge<'_>), ratio: f64) -> String {
    if target.starts_with('(') {
        "-".into()
    } else {
        verdict(judge(ratio))
    }
}

/// Row 8's server on a build of zsc without the `otlp` feature.
const WITHOUT_OTLP: &str = "a build without the otlp feature";

/// One of row 8's servers: what it is called, its flags, the build it runs, and the target its
/// peak is judged by (in parentheses: none).
struct Variant {
    name: &'static str,
    flags: Vec<String>,
    binary: PathBuf,
    target: &'static str,
}

/// What issue 16 (rate limits on) and issue 18 (traces off against not built in) allow row 1 to
/// lose: 2%.
const WITHIN_2_PERCENT: &str = ">= 0.98x";

/// Row 8's servers: the plain one (this build, flags absent), then a rate limit no call reaches,
/// OTLP export to a port where nothing listens, and (full mode) a build without the `otlp`
/// feature, flags absent: "traces off" against "traces not built in".
fn row8_variants(options: &Options, described: &mut Vec<String>) -> Vec<Variant> {
    let this = PathBuf::from(env!("CARGO_BIN_EXE_zsc"));
    let dead = free_port();
    let mut variants = vec![
        Variant {
            name: "flags absent",
            flags: Vec::new(),
            binary: this.clone(),
            target: "(the baseline)",
        },
        Variant {
            name: "--rate-limit 1000000000/s",
            flags: vec!["--rate-limit".into(), "1000000000/s".into()],
            binary: this.clone(),
            target: WITHIN_2_PERCENT,
        },
        Variant {
            name: "--otlp-endpoint to a dead port",
            flags: vec!["--otlp-endpoint".into(), format!("http://127.0.0.1:{dead}")],
            binary: this,
            // What traces cost when on: no issue bounds it.
            target: "(diagnostic: traces on)",
        },
    ];
    match build_without_otlp(options) {
        Ok(binary) => variants.push(Variant {
            name: WITHOUT_OTLP,
            flags: Vec::new(),
            binary,
            target: WITHIN_2_PERCENT,
        }),
        Err(why) => described.push(format!("row 8: no build without OTLP: {why}")),
    }
    variants
}

/// Builds `zsc` without its default `otlp` feature, in the bench's profile, into a target dir of
/// its own (`target/without-otlp`: the bench's own binary is never rebuilt under it). The first
/// build compiles every dependency again (minutes); later ones are no-ops. Not in `--quick`.
fn build_without_otlp(options: &Options) -> Result<PathBuf, String> {
    if options.quick {
        return Err("not built in --quick".into());
    }
    let this = Path::new(env!("CARGO_BIN_EXE_zsc"));
    let profile_dir = this.parent().ok_or("no profile dir")?;
    let target = profile_dir
        .parent()
        .ok_or("no target dir")?
        .join("without-otlp");
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "row 8: building zsc without the otlp feature into {}",
        target.display()
    );
    let status = Command::new(cargo)
        .args(["build", "--locked", "--no-default-features", "--bin", "zsc"])
        .args(["--profile", profile, "--target-dir"])
        .arg(&target)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --no-default-features: {status}"));
    }
    let name = profile_dir.file_name().ok_or("no profile name")?;
    Ok(target.join(name).join("zsc"))
}

/// Row 8: ValidateKey under h2load on servers with rate limits on and with OTLP export on,
/// each beside a plain server (flags absent), windows alternating among the three.
pub(crate) async fn row8(options: &Options, rows: &mut Vec<Row>) -> Vec<String> {
    if !h2load_installed() || options.target.is_some() || options.in_process {
        let why = if h2load_installed() {
            "starts servers of its own: run without --target / --in-process"
        } else {
            HOW
        };
        rows.push(Row::not_measured(
            "8",
            "row 1 with rate limits / OTLP on",
            "<= 2%",
            why,
        ));
        return Vec::new();
    }
    let mut servers = Vec::new();
    let mut described = Vec::new();
    for variant in row8_variants(options, &mut described) {
        let name = variant.name;
        let flags: Vec<&str> = variant.flags.iter().map(String::as_str).collect();
        let (server, url, token) =
            ServerUnderTest::start_binary(options, None, &flags, &variant.binary).await;
        let fx = fixture(&url, &token).await;
        let target = H2Target::new(&fx, &server);
        if options.pin {
            if let Some(pid) = server.pid() {
                let _ = set_affinity(pid, SERVER_CORE);
            }
        }
        described.push(format!("row 8: {name}: {}", server.describe()));
        servers.push((name, variant.target, server, target));
    }
    if options.pin {
        let _ = set_affinity(std::process::id(), LOAD_CORE);
        described.push(format!(
            "row 8 pinned: each server on core {SERVER_CORE}, h2load on core {LOAD_CORE}"
        ));
    }
    let secs = window_seconds(options);
    for (_, _, server, target) in &servers {
        h2load_window(options, target, VALIDATE, server, 1).await;
    }
    let mut windows = vec![Vec::new(); servers.len()];
    for round in 0..options.rounds {
        for i in 0..servers.len() {
            let i = (i + round) % servers.len();
            let (name, _, server, target) = &servers[i];
            let w = h2load_window(options, target, VALIDATE, server, secs).await;
            eprintln!("row 8: ValidateKey, {name}: {}", rate(w.rate));
            windows[i].push(w);
        }
    }
    if options.pin {
        let _ = set_affinity(std::process::id(), &all_cores());
    }
    for (i, (name, judged_by, _, _)) in servers.iter().enumerate().skip(1) {
        // Issue 18 judges "traces off" (this build, flags absent) against the build without
        // them; the other variants are judged against flags absent.
        let (figure, baseline, measured) = if *name == WITHOUT_OTLP {
            let figure = format!("ValidateKey peak (h2load), OTLP built in and off vs {name}");
            (figure, (*name, &windows[i][..]), &windows[0][..])
        } else {
            let figure = format!("ValidateKey peak (h2load), {name}");
            (
                figure,
                ("flags absent, same load", &windows[0][..]),
                &windows[i][..],
            )
        };
        peak_and_cpu_rows(
            rows,
            "8",
            &figure,
            baseline,
            measured,
            (judged_by, &|ratio| ratio >= 0.98),
            ("(diagnostic)", &|_| true),
        );
    }
    for (_, _, server, _) in servers {
        server.stop().await;
    }
    described
}
