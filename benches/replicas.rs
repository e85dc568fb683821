//! One replica on etcd against sled, side by side in one run: ValidateKey throughput and
//! latency, the RegenerateKey rate (one caller, then 16 at once), and revocation latency from
//! a RegenerateKey on one server to a subscriber of another (sled: the same server).
//!
//! Starts a real 3-member etcd cluster on loopback (zsc::testing), a sled server, and two
//! replicas on the cluster, all on 127.0.0.1:0.
//!
//! `cargo bench --features etcd --bench replicas` (ZSC_BENCH_SECONDS, default 5).

use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::{service::interceptor::InterceptedService, transport::Channel, transport::Endpoint};
use zsc::client::Bearer;
use zsc::proto::{key_service_client::KeyServiceClient, watch_revocations_response::Event, *};
use zsc::server::{Config, Server};

type Keys = KeyServiceClient<InterceptedService<Channel, Bearer>>;

struct Running {
    url: String,
    token: String,
    _dir: tempfile::TempDir,
}

async fn start(store_url: Option<&str>, token: Option<&str>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.store_url = store_url.map(str::to_owned);
    let server = Server::connect(config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.run(listener, std::future::pending()));
    let token = match token {
        Some(token) => token.to_owned(),
        None => zsc::testkit::operator_token(dir.path()),
    };
    Running {
        url,
        token,
        _dir: dir,
    }
}

async fn keys(server: &Running) -> Keys {
    let channel = Endpoint::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    KeyServiceClient::with_interceptor(channel, Bearer::new(&server.token).unwrap())
}

/// An org, its admin and its key; returns (org_id, email, key).
async fn org(server: &Running, name: String) -> (String, String, String) {
    let channel = Endpoint::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let operator = Bearer::new(&server.token).unwrap();
    zsc::testkit::org_with_key(channel, operator, &name).await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// ValidateKey from 8 connections x 8 callers for `seconds`: (calls/s, p50, p99).
async fn validate_load(
    server: &Running,
    email: &str,
    key: &str,
    seconds: u64,
) -> (f64, Duration, Duration) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = keys(server).await;
        for _ in 0..8 {
            let mut client = client.clone();
            let request = ValidateKeyRequest {
                email: email.into(),
                key: key.into(),
            };
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    client.validate_key(request.clone()).await.unwrap();
                    latencies.push(started.elapsed());
                }
                latencies
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    (
        all.len() as f64 / seconds as f64,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

/// RegenerateKey on `orgs` (one caller per org) for `seconds`: regenerations per second.
async fn regenerate_load(server: &Running, orgs: &[(String, String, String)], seconds: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (org_id, email, _) in orgs {
        let mut client = keys(server).await;
        let request = RegenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: email.clone(),
        };
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                client.regenerate_key(request.clone()).await.unwrap();
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / seconds as f64
}

/// From sending RegenerateKey on `on` to its event arriving at a subscriber of `watched`.
async fn revocation_latency(
    on: &Running,
    watched: &Running,
    org: &(String, String, String),
) -> (Duration, Duration) {
    let mut subscriber = keys(watched).await;
    let mut stream = subscriber
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut regenerate = keys(on).await;
    let mut latencies = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        regenerate
            .regenerate_key(RegenerateKeyRequest {
                org_id: org.0.clone(),
                actor_email: org.1.clone(),
            })
            .await
            .unwrap();
        loop {
            let message = stream.message().await.unwrap().unwrap();
            if let Some(Event::Revocation(_)) = message.event {
                break;
            }
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

#[tokio::main]
async fn main() {
    let seconds = std::env::var("ZSC_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let cluster = zsc::testing::EtcdCluster::start(3);
    let sled = start(None, None).await;
    let a = start(Some(&cluster.url("/bench")), None).await;
    let b = start(Some(&cluster.url("/bench")), Some(&a.token)).await;

    println!(
        "backend  validate/s  p50 ms    p99 ms    regen/s(1)  regen/s(16)  revocation p50 ms  p99 ms"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (name, server, other) in [("sled", &sled, &sled), ("etcd", &a, &b)] {
        let orgs: Vec<_> =
            futures_util::future::join_all((0..16).map(|i| org(server, format!("Org{i}")))).await;
        let (rate, p50, p99) = validate_load(server, &orgs[0].1, &orgs[0].2, seconds).await;
        let regen_one = regenerate_load(server, &orgs[1..2], seconds).await;
        let regen_many = regenerate_load(server, &orgs[..16], seconds).await;
        let (rev50, rev99) = revocation_latency(server, other, &orgs[2]).await;
        println!(
            "{name:<8} {rate:>10.0}  {:<9.3} {:<9.3} {regen_one:>10.0}  {regen_many:>11.0}  {:<17.3}  {:.3}",
            ms(p50),
            ms(p99),
            ms(rev50),
            ms(rev99)
        );
    }
}
