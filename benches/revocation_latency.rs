//! Revocation-to-subscriber latency: from the moment a RegenerateKey request is sent to the
//! moment each subscriber's stream delivers its revocation event. This includes the revoking
//! RPC's durable flush (no subscriber hears of an event before it is on disk).
//!
//! Runs against the real server on 127.0.0.1:0, each subscriber on its own HTTP/2 connection
//! (one tonic Channel is one connection). The baseline is the same measurement with one
//! subscriber, in the same run.
//!
//! `cargo bench --bench revocation_latency` (ZSC_BENCH_SUBSCRIBERS, ZSC_BENCH_REVOCATIONS).

use std::time::{Duration, Instant};

use tokio::{net::TcpListener, sync::mpsc};
use tonic::transport::Endpoint;
use zsc::client::Bearer;
use zsc::proto::{
    access_service_client::AccessServiceClient, key_service_client::KeyServiceClient,
    user_service_client::UserServiceClient, watch_revocations_response::Event, *,
};
use zsc::server::{Config, Server};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Measured {
    latencies: Vec<Duration>,
    rpc: Vec<Duration>,
}

async fn measure(subscribers: usize, revocations: usize) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::open(Config::new(dir.path())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    let operator = std::fs::read_to_string(dir.path().join("operator.token")).unwrap();
    let channel = Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = Bearer::new(&operator).unwrap();
    let mut users = UserServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut keys = KeyServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut access = AccessServiceClient::with_interceptor(channel, bearer);

    let org = users
        .create_org(CreateOrgRequest {
            name: "Bench".into(),
            edition: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let admin = "admin@bench.example".to_owned();
    let user = CreateUserRequest {
        org_id: org.org_id.clone(),
        email: admin.clone(),
        display_name: "Admin".into(),
        profile: Profile::Administrator as i32,
    };
    users.create_user(user).await.unwrap();
    let generate = GenerateKeyRequest {
        org_id: org.org_id.clone(),
        actor_email: admin.clone(),
    };
    keys.generate_key(generate).await.unwrap();
    let account = CreateServiceAccountRequest {
        name: "desk".into(),
        role: Role::Consumer as i32,
    };
    let consumer = access
        .create_service_account(account)
        .await
        .unwrap()
        .into_inner()
        .token;

    // Subscribers report (sequence, arrival) to one collector.
    let (arrivals, mut arrived) = mpsc::unbounded_channel::<(u64, Instant)>();
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<()>();
    for _ in 0..subscribers {
        let channel = Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client =
            KeyServiceClient::with_interceptor(channel, Bearer::new(&consumer).unwrap());
        let arrivals = arrivals.clone();
        let ready_tx = ready_tx.clone();
        tokio::spawn(async move {
            let request = WatchRevocationsRequest::default();
            let mut stream = client
                .watch_revocations(request)
                .await
                .unwrap()
                .into_inner();
            while let Ok(Some(message)) = stream.message().await {
                match message.event {
                    Some(Event::Checkpoint(c)) if c.sequence == 0 => {
                        let _ = ready_tx.send(());
                    }
                    Some(Event::Revocation(r)) => {
                        let _ = arrivals.send((r.sequence, Instant::now()));
                    }
                    _ => {}
                }
            }
        });
    }
    for _ in 0..subscribers {
        ready.recv().await.unwrap();
    }

    let mut latencies = Vec::with_capacity(subscribers * revocations);
    let mut rpc = Vec::with_capacity(revocations);
    for sequence in 1..=revocations as u64 {
        let sent = Instant::now();
        let regenerate = RegenerateKeyRequest {
            org_id: org.org_id.clone(),
            actor_email: admin.clone(),
        };
        keys.regenerate_key(regenerate).await.unwrap();
        rpc.push(sent.elapsed());
        for _ in 0..subscribers {
            let (seq, at) = tokio::time::timeout(Duration::from_secs(30), arrived.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                seq, sequence,
                "events arrive in order, one revocation at a time"
            );
            latencies.push(at - sent);
        }
    }
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    Measured { latencies, rpc }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1]
}

#[tokio::main]
async fn main() {
    let subscribers = env("ZSC_BENCH_SUBSCRIBERS", 1000);
    let revocations = env("ZSC_BENCH_REVOCATIONS", 100);
    let mut one = measure(1, revocations).await;
    let mut many = measure(subscribers, revocations).await;
    let (p50_1, p99_1) = (
        percentile(&mut one.latencies, 0.50),
        percentile(&mut one.latencies, 0.99),
    );
    let (p50_n, p99_n) = (
        percentile(&mut many.latencies, 0.50),
        percentile(&mut many.latencies, 0.99),
    );
    println!("revocation -> subscriber latency, {revocations} revocations (request sent -> event received)");
    println!("  1 subscriber       p50 {p50_1:>10.2?}  p99 {p99_1:>10.2?}   (baseline)");
    println!(
        "  {subscribers} subscribers  p50 {p50_n:>10.2?}  p99 {p99_n:>10.2?}   {:.2}x / {:.2}x the baseline",
        p50_n.as_secs_f64() / p50_1.as_secs_f64(),
        p99_n.as_secs_f64() / p99_1.as_secs_f64()
    );
    println!(
        "  RegenerateKey RPC (includes the flush): p50 {:.2?} with 1 subscriber, {:.2?} with {subscribers}",
        percentile(&mut one.rpc, 0.5),
        percentile(&mut many.rpc, 0.5)
    );
}
