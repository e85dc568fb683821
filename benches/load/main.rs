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
//! 5. Scale (`--rows 5`, `scale.rs`): ValidateKey, RSS, restart, backup and restore on a store
//!    of 1,000,000 keys beside one of 1,000, both built with the store's bulk loader.
//! 6. Interference: ValidateKey p99 (open loop) while the subscribers of row 3 receive 100
//!    revocations/s vs alone.
//! 7. Rows 1, 3 and 4 on etcd beside sled (`--features etcd`, `etcd.rs`): without the feature or
//!    an `etcd` binary, the row says so and how to run it.
//! 8. What rate limits (`--rate-limit` too high to refuse) and OTLP export (`--otlp-endpoint` to
//!    a dead port) cost row 1: ValidateKey under h2load on such servers beside a plain one; and
//!    (not in `--quick`) the plain one against a build without the `otlp` feature, which the
//!    row builds first into `target/without-otlp` (minutes the first time).
//!
//! Row 1 also runs with h2load as its client (`h2load.rs`), and row 2 with a Python grpcio
//! client and h2load one call at a time (`python.rs`). `--pin` (`pin.rs`) runs rows 1, 3 and 6
//! a second time with the server on core 0 and the load on core 1 (taskset), and row 8 pinned
//! so too; row 7's etcd members then share core 0 with the server.
//!
//! docs/performance.md says what each row means and shows the latest full run.
//!
//! `cargo bench --bench load [-- --quick] [--pin] [--subscribers 10000] [--connections N]
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
    watch_revocations_response::Event, *,
};
use zsc::verifier::{Verifier, VerifierConfig};

type Authed = InterceptedService<Channel, Bearer>;
type Keys = KeyServiceClient<Authed>;
type Health = HealthClient<Authed>;
type Call = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

mod etcd;
mod fanout;
mod fixture;
mod h2load;
mod measure;
mod options;
mod pin;
mod python;
mod scale;
mod server;
mod table;
mod validate;
mod verifier;
mod writes;

use etcd::*;
use fanout::*;
use fixture::*;
use h2load::*;
use measure::*;
use options::*;
use pin::*;
use python::*;
use scale::*;
use server::*;
use table::*;
use validate::*;
use verifier::*;
use writes::*;

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

/// Rows 1, 2, 3, 4 and 6 (those `options` selects) on one server; row 1's figures, if it ran.
async fn measure(
    options: &Options,
    server: &ServerUnderTest,
    url: &str,
    token: &str,
    rows: &mut Vec<Row>,
) -> Option<Row1> {
    let fx = fixture(url, token).await;
    let mut first = None;
    if options.row(1) {
        let mut row1 = row1(options, &fx, server, rows).await;
        row1.light_half = row1_h2load(options, &fx, server, rows).await;
        first = Some(row1);
    }
    if options.row(2) {
        row2(options, &fx, rows).await;
        python_row(options, &fx, server, rows).await;
    }
    if options.row(4) {
        row4(options, &fx, rows, server).await;
    }
    if options.row(3) || options.row(6) {
        rows3and6(options, &fx, server, first.as_ref().map(|r| r.peak), rows).await;
    }
    first
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
    let mut rows = Vec::new();
    let mut servers = vec![format!("load average at the start: {}", load_average())];
    let mut on_sled = None;
    if [1, 2, 3, 4, 6].iter().any(|&r| options.row(r)) {
        let (server, url, token) = ServerUnderTest::start(&options, None).await;
        eprintln!("load: server at {url}; setting up");
        on_sled = measure(&options, &server, &url, &token, &mut rows).await;
        servers.push(format!("server: {}", server.describe()));
        servers.push(format!(
            "load average after the unpinned rows: {}",
            load_average()
        ));
        if options.pin {
            let (described, pinned) =
                measure_pinned(&options, &server, &url, &token, &mut rows).await;
            servers.push(described);
            // Row 7 runs pinned too: compare it with the pinned sled figures.
            on_sled = pinned.or(on_sled);
        }
        if let Some(lines) = server.log_lines() {
            servers.push(format!("server log lines written during the run: {lines}"));
        }
        server.stop().await;
    }
    if options.row(5) {
        if options.target.is_some() || options.in_process {
            rows.push(Row::not_measured(
                "5",
                "ValidateKey with 1,000,000 keys; RSS; restart; backup",
                ">= 0.9x; <= 512 MiB; <= 3 s",
                "builds and restarts stores of its own: run without --target / --in-process",
            ));
        } else {
            row5(&options, &mut rows).await;
            servers.push(format!(
                "row 5: two `zsc serve` children at once on stores of {} and {} keys, default flags",
                options.scale_keys, options.scale_baseline
            ));
        }
    }
    if options.row(7) {
        servers.extend(row7(&options, on_sled, &mut rows).await);
    }
    if options.row(1) && options.row(7) {
        etcd_vs_sled(&options, &mut rows);
    }
    if options.row(8) {
        servers.extend(row8(&options, &mut rows).await);
    }
    servers.push(format!("load average at the end: {}", load_average()));
    rows.sort_by_key(|r| r.row);

    let cores = machine_cores();
    println!();
    println!(
        "zsc load: {} run, {} rounds of {} windows (alternating with the baseline; figures are medians of windows), {:.0} s in all",
        if options.quick { "quick" } else { "full" },
        options.rounds,
        zsc::domain::shown::duration(options.window),
        started.elapsed().as_secs_f64()
    );
    println!(
        "machine: {cores} cores ({}), shared by client and server (and anything else running)",
        cpu_model()
    );
    for line in servers {
        println!("{line}");
    }
    println!(
        "client: tonic; rows 1 and 6: {} HTTP/2 connections x {} in flight (closed loop); open loop sends at fixed rate from a dispatcher thread, latency from intended send time; rows 1 (h2load lines) and 8: h2load, same connections and streams",
        options.connections, options.in_flight
    );
    println!();
    print_table(&rows);
}
