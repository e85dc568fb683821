//! Row 2: the Verifier's cache hit vs a remote ValidateKey, and from two threads at once.

use super::*;

// Row 2: the Verifier's cache hit

/// `batches` batches of 1,000 cache hits; the time per call of each batch, in ns.
pub(crate) fn hit_batches(
    verifier: &Verifier,
    email: &str,
    key: &str,
    batches: usize,
) -> (Vec<f64>, u64) {
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

pub(crate) async fn row2(options: &Options, fx: &Fixture, rows: &mut Vec<Row>) {
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
