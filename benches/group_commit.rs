//! Group commit: do concurrent mutations share flushes?
//!
//! Three runs in one process, on the same machine state, so the ratios mean something on a
//! noisy shared machine:
//! - `store, 1 writer`: the baseline, one durable CreateOrg at a time;
//! - `store, N writers`: N tasks at once through `Store` (shared flushes);
//! - `raw sled, 1 writer`: insert + `flush_async` on raw sled, what one durable write costs
//!   without any of our code.
//!
//! Why not raw sled with N concurrent `flush_async` callers? Because on sled 0.34.7 that
//! deadlocks: seen here with 8 and with 16 concurrent callers (every sled I/O thread parked in
//! `make_stable` waiting for log writes that no free thread is left to do). Serialising
//! flushes, as `store::durability` does, is therefore needed for liveness, not only speed.
//!
//! `cargo bench --bench group_commit` (ZSC_BENCH_OPS, ZSC_BENCH_WRITERS to change sizes;
//! `-- --quick` for a tenth of the operations). The end-to-end figure through the gRPC API is
//! row 4 of `benches/load/`.

use std::time::Instant;

use zsc::domain::{Caller, Edition, Name};
use zsc::store::{Store, StoreOptions};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn store_run(writers: usize, ops: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default())
        .unwrap()
        .store;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..ops / writers {
                    let name = Name::parse("name", &format!("org {w}-{i}")).unwrap();
                    store
                        .create_org(&Caller::cli(), name, Edition::Free)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

/// One writer on raw sled: insert then flush, `ops` times.
async fn sled_run(ops: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let started = Instant::now();
    for i in 0..ops {
        db.insert(i.to_be_bytes(), &[0u8; 64][..]).unwrap();
        db.flush_async().await.unwrap();
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let ops = env("ZSC_BENCH_OPS", if quick { 200 } else { 2000 });
    let writers = env("ZSC_BENCH_WRITERS", 32);
    println!("group_commit: durable writes/s ({ops} per concurrent run)");
    let baseline = store_run(1, ops / 4).await;
    println!("  store, 1 writer        {baseline:>9.0} writes/s   1.00x (baseline)");
    for n in [8, writers] {
        let grouped = store_run(n, ops).await;
        println!(
            "  store, {n:>2} writers      {grouped:>9.0} writes/s   {:.2}x",
            grouped / baseline
        );
    }
    let raw = sled_run(ops / 4).await;
    println!(
        "  raw sled, 1 writer     {raw:>9.0} writes/s   {:.2}x",
        raw / baseline
    );
}
