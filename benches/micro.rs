//! Micro-benchmarks of the hot paths' CPU work (criterion).
//!
//! - `verifier/hit`: `Verifier::verify` answered from its cache, the whole public call (the
//!   keyed blake3 of the key, the lock-free lookup, the email compare, the clock read for
//!   freshness, the answer's copy; a hit parses nothing). The Verifier's state machine is
//!   private, so the cache is filled the real way: a server in this process, a Verifier
//!   subscribed to it, one verify that misses and is admitted. The hit path never awaits, so
//!   each call is polled once (`now_or_never`), with no runtime overhead in the figure.
//! - `verifier/hit, 2 threads`: the same call from two threads at once; the time is per call
//!   on each thread (compare with `verifier/hit`: equal means no contention).
//! - `secret/parse + hash`: `ZscKey::parse` (prefix, alphabet, CRC32 checksum) then the stored
//!   hash (blake3 `derive_key`), what the server does for every ValidateKey.
//! - `decode/...`: the store's own records are private (`store/records.rs`), so this measures
//!   the public messages on the same paths: a ValidateKeyRequest decoded and parsed into domain
//!   types (the server's edge), a revocation event decoded (each subscriber, per event) and
//!   encoded (the server, per subscriber per event today).
//! - `rate/admit ...`: what `--rate-limit` adds to every call of a consumer (`api/rate.rs`): the
//!   account's GCRA cell in governor's keyed limiter (a DashMap lookup and a compare-and-swap),
//!   among 1,000 accounts, with a limit no call reaches; and with limits off.
//!
//! `cargo bench --bench micro` (`-- --quick` for a short run).

use std::{
    hint::black_box,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use prost::Message;
use tokio::net::TcpListener;
use tonic::transport::Endpoint;
use zsc::client::Bearer;
use zsc::domain::{Email, ZscKey};
use zsc::proto::{watch_revocations_response::Event, *};
use zsc::server::{Config, Server};
use zsc::testkit;
use zsc::verifier::{Verifier, VerifierConfig};

/// A server in this process, an org with a key, and a Verifier whose cache holds that key.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    verifier: Verifier,
    email: String,
    key: String,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (verifier, email, key) = runtime.block_on(async {
        let mut config = Config::new(dir.path());
        config.store.cache_bytes = 16 * 1024 * 1024;
        let server = Server::open(config).expect("server opens");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        // Runs until the runtime is dropped.
        tokio::spawn(server.run(listener, std::future::pending()));
        let operator = Bearer::new(&testkit::operator_token(dir.path())).expect("token");
        let channel = Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let (_, email, key) =
            testkit::org_with_key(channel.clone(), operator.clone(), "Micro").await;
        let consumer = testkit::service_account(channel, operator, "micro", Role::Consumer).await;
        let mut config = VerifierConfig::new(url, consumer);
        // Heartbeats come every second; a generous staleness keeps a busy machine from
        // turning a hit into a miss mid-benchmark (each call checks it is a hit anyway).
        config.max_staleness = Duration::from_secs(30);
        let verifier = Verifier::start(config).expect("verifier");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !verifier.stats().fresh {
            assert!(Instant::now() < deadline, "the Verifier's stream caught up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first = verifier.verify(&email, &key).await.expect("valid key");
        assert!(!first.cached, "the first verify asks the server");
        (verifier, email, key)
    });
    Fixture {
        runtime,
        verifier,
        email,
        key,
        _dir: dir,
    }
}

/// One cache hit, polled once: the hit path never awaits.
fn hit(verifier: &Verifier, email: &str, key: &str) {
    let verified = verifier
        .verify(black_box(email), black_box(key))
        .now_or_never()
        .expect("a cache hit completes without awaiting")
        .expect("valid key");
    assert!(verified.cached, "answered from the cache");
    black_box(verified);
}

fn verifier(c: &mut Criterion) {
    let fixture = Arc::new(fixture());
    let mut group = c.benchmark_group("verifier");
    group.bench_function("hit", |b| {
        b.iter(|| hit(&fixture.verifier, &fixture.email, &fixture.key))
    });
    group.bench_function("hit, 2 threads", |b| {
        b.iter_custom(|iters| {
            let barrier = Arc::new(Barrier::new(2));
            let run = |fixture: Arc<Fixture>, barrier: Arc<Barrier>| {
                move || {
                    barrier.wait();
                    let started = Instant::now();
                    for _ in 0..iters {
                        hit(&fixture.verifier, &fixture.email, &fixture.key);
                    }
                    started.elapsed()
                }
            };
            let other = std::thread::spawn(run(fixture.clone(), barrier.clone()));
            let mine = run(fixture.clone(), barrier)();
            let theirs = other.join().expect("thread");
            // Per call on each thread: the slower thread's time over its own calls.
            mine.max(theirs)
        })
    });
    group.finish();
    let stats = fixture.verifier.stats();
    assert_eq!(stats.misses, 1, "every measured call was a hit: {stats:?}");
    match Arc::try_unwrap(fixture) {
        Ok(fixture) => {
            let Fixture {
                runtime, verifier, ..
            } = fixture;
            drop(verifier);
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        Err(_) => unreachable!("every thread has been joined"),
    }
}

fn secret(c: &mut Criterion) {
    let key = ZscKey::generate();
    let text = key.expose().to_owned();
    c.bench_function("secret/parse + hash", |b| {
        b.iter(|| {
            let key = ZscKey::parse(black_box(&text)).expect("valid");
            black_box(key.hash())
        })
    });
}

fn decode(c: &mut Criterion) {
    let key = ZscKey::generate();
    let request = ValidateKeyRequest {
        email: "Admin@Example.COM".into(),
        key: key.expose().to_owned(),
    }
    .encode_to_vec();
    c.bench_function("decode/ValidateKeyRequest + parse", |b| {
        b.iter(|| {
            let request = ValidateKeyRequest::decode(black_box(&request[..])).expect("decodes");
            let email = Email::parse("email", &request.email).expect("valid");
            let key = ZscKey::parse(&request.key).expect("valid");
            black_box((email, key.hash()))
        })
    });
    let event = WatchRevocationsResponse {
        event: Some(Event::Revocation(RevocationEvent {
            sequence: 123_456,
            key_id: "zk_9f8e7d6c5b4a39281706".into(),
            org_id: "org_1a2b3c4d5e6f70819203".into(),
            owner_email: "admin@example.com".into(),
            reason: RevocationReason::Regenerated as i32,
            revoke_time: Some(prost_types::Timestamp {
                seconds: 1_795_000_000,
                nanos: 123_456_789,
            }),
        })),
    };
    let bytes = event.encode_to_vec();
    c.bench_function("decode/revocation event", |b| {
        b.iter(|| black_box(WatchRevocationsResponse::decode(black_box(&bytes[..])).expect("ok")))
    });
    c.bench_function("encode/revocation event", |b| {
        b.iter(|| black_box(black_box(&event).encode_to_vec()))
    });
}

fn rate(c: &mut Criterion) {
    use zsc::api::{RateLimits, Rates};
    use zsc::domain::{AccountName, Caller, Role, SecretHash};
    let callers: Vec<Caller> = (0..1000)
        .map(|i| Caller {
            name: AccountName::parse(&format!("consumer-{i}")).expect("valid"),
            role: Role::Consumer,
            token: SecretHash([0; 32]),
        })
        .collect();
    let on = Rates::new(
        &RateLimits {
            consumer: Some("4000000000/s".parse().expect("a rate")),
            ..RateLimits::default()
        },
        zsc::metrics::Metrics::default(),
    );
    let off = Rates::new(&RateLimits::default(), zsc::metrics::Metrics::default());
    for (name, rates) in [
        ("rate/admit, 1,000 consumers", on),
        ("rate/admit, limits off", off),
    ] {
        let mut next = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % callers.len();
                rates
                    .admit(black_box(&callers[next]))
                    .expect("under the limit")
            })
        });
    }
}

/// Short runs by default (the machine is shared); `--quick` shorter still.
fn config() -> Criterion {
    let quick = std::env::args().any(|a| a == "--quick");
    let (warm_up, measure) = if quick {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(3))
    };
    Criterion::default()
        .warm_up_time(warm_up)
        .measurement_time(measure)
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = verifier, secret, decode, rate
}
criterion_main!(benches);
