//! Rows 3 and 6: revocation fan-out to many subscribers, and ValidateKey beside it.

use super::*;

// Rows 3 and 6: revocation fan-out, and ValidateKey beside it

/// Opens `n` subscribers spread over `connections` (each its own set of connections), and
/// returns once every one has its first checkpoint. Each reports (sequence, arrival).
pub(crate) async fn subscribe(
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
pub(crate) async fn revoke_and_wait(
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

pub(crate) async fn rows3and6(
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
    let cpu_one = server.cpu();
    let (mut base, _, _) = revoke_and_wait(&mut keys, &org, revocations / 2, 1, &mut arrived).await;
    let cpu_one = cpu_one.zip(server.cpu()).map(|(a, b)| b - a);
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
    let cpu_many = server.cpu();
    let (many, many_calls, early) =
        revoke_and_wait(&mut keys, &org, revocations, n, &mut arrived).await;
    let cpu_many = cpu_many.zip(server.cpu()).map(|(a, b)| b - a);

    if options.row(6) {
        row6(options, fx, server, validate_peak, n, &mut arrived, rows).await;
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
    if let (Some(one), Some(many)) = (cpu_one, cpu_many) {
        // What the revocations cost with 1 subscriber (the write itself) is taken out, and
        // the rest shared among the other subscribers' deliveries.
        let per_revocation_one = one.as_secs_f64() / (revocations / 2).max(1) as f64;
        let per_revocation_many = many.as_secs_f64() / revocations.max(1) as f64;
        let per_delivery =
            (per_revocation_many - per_revocation_one).max(0.0) / (n - 1).max(1) as f64;
        rows.push(Row {
            row: "3",
            figure: format!(
                "server CPU per delivery ({n} subscribers: {} per revocation)",
                time(per_revocation_many * 1e9)
            ),
            median: time(per_delivery * 1e9),
            p99: "-".into(),
            baseline: "1 subscriber: per revocation".into(),
            baseline_median: time(per_revocation_one * 1e9),
            baseline_p99: "-".into(),
            ratio: "-".into(),
            target: "(diagnostic)".into(),
            result: "-".into(),
        });
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
pub(crate) async fn row6(
    options: &Options,
    fx: &Fixture,
    server: &ServerUnderTest,
    validate_peak: Option<f64>,
    subscribers: usize,
    arrived: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
    rows: &mut Vec<Row>,
) {
    let clients = keys_clients(&fx.url, &fx.consumer, options.connections).await;
    let validate = validate_call(clients, fx.email.clone(), fx.key.clone());
    // A fifth of ValidateKey's peak: the target names no rate, and the revocations' own work
    // (100 x every subscriber per second) needs room on a small shared machine.
    let at = validate_peak.map_or(1000.0, |p| 0.2 * p);
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
    // The share of the cores the server and this process (the client) use in each window.
    let cores = machine_cores() as f64;
    let share = |a: Option<Duration>, b: Option<Duration>, wall: Duration| {
        a.zip(b)
            .map(|(a, b)| (b - a).as_secs_f64() / wall.as_secs_f64() / cores * 100.0)
    };
    let measure = async {
        let (mut alone, mut busy) = (vec![], vec![]);
        let (mut cpu_alone, mut cpu_busy) = (vec![], vec![]);
        let mut revoked = 0;
        let mut overloaded = 0;
        for round in 0..options.rounds {
            for first in [round % 2 == 0, round % 2 != 0] {
                let (server0, client0, wall0) = (server.cpu(), own_cpu(), Instant::now());
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
                let wall = wall0.elapsed();
                let cpu = (
                    share(server0, server.cpu(), wall),
                    share(client0, own_cpu(), wall),
                );
                if first { &mut cpu_alone } else { &mut cpu_busy }.push(cpu);
                eprintln!(
                    "row 6: {} p99 {}",
                    if first { "alone" } else { "with revocations" },
                    time(*if first { &alone } else { &busy }.last().expect("pushed"))
                );
            }
        }
        let light = light_client_p99s(options, fx, server, &revoke, at).await;
        (alone, busy, revoked, overloaded, cpu_alone, cpu_busy, light)
    };
    let (alone, busy, revoked, overloaded, cpu_alone, cpu_busy, light) = tokio::select! {
        () = drain => unreachable!("the subscribers' sender lives in the caller"),
        measured = measure => measured,
    };
    // One line per client: its p99 with revocations over its p99 without.
    let p99_row = |figure: String, alone: &[f64], busy: &[f64], overloaded: usize| {
        let ratio = median(busy) / median(alone);
        Row {
            row: "6",
            figure,
            median: "-".into(),
            p99: time(median(busy)),
            baseline: "no revocations (same subscribers)".into(),
            baseline_median: "-".into(),
            baseline_p99: time(median(alone)),
            ratio: format!("{ratio:.2}x (p99)"),
            target: "p99 <= 1.5x".into(),
            result: open_loop_result(
                overloaded,
                2 * options.rounds,
                (subscribers == 1000).then_some(ratio <= 1.5),
                &format!("({subscribers} subscribers: not the target's count)"),
            ),
        }
    };
    let figure = format!(
        "ValidateKey p99 at {}, {subscribers} subscribers getting 100 revocations/s ({revoked} sent; {overloaded} of {} windows overloaded)",
        rate(at),
        2 * options.rounds
    );
    rows.push(p99_row(figure, &alone, &busy, overloaded));
    let light_figure = format!(
        "ValidateKey p99 at {}, h2load -c{} --rps (a C client in a process of its own), {subscribers} subscribers getting 100 revocations/s",
        rate(at),
        options.connections
    );
    match light {
        // h2load fails a window it could not send at its rate, so none is overloaded.
        Ok((alone, busy)) => rows.push(p99_row(light_figure, &alone, &busy, 0)),
        Err(why) => rows.push(Row::not_measured("6", &light_figure, "p99 <= 1.5x", &why)),
    }
    // What the row is up against: the cores the server and the client take in each mode.
    let shares = |windows: &[(Option<f64>, Option<f64>)]| {
        let server: Vec<f64> = windows.iter().filter_map(|w| w.0).collect();
        let client: Vec<f64> = windows.iter().filter_map(|w| w.1).collect();
        let part = |v: &[f64]| {
            if v.is_empty() {
                "?".to_owned()
            } else {
                format!("{:.0}%", median(v))
            }
        };
        format!("server {} + client {}", part(&server), part(&client))
    };
    rows.push(Row {
        row: "6",
        figure: format!("CPU during those windows, share of all {cores:.0} cores"),
        median: shares(&cpu_busy),
        p99: "-".into(),
        baseline: "no revocations".into(),
        baseline_median: shares(&cpu_alone),
        baseline_p99: "-".into(),
        ratio: "-".into(),
        target: "(diagnostic)".into(),
        result: "-".into(),
    });
}

/// Row 6's windows again with h2load as the ValidateKey client: alone, then with the revoker,
/// alternating; the p99 of each window (ns). The tonic client shares this process, and in the
/// pinned run its core, with the subscribers that receive every revocation.
async fn light_client_p99s(
    options: &Options,
    fx: &Fixture,
    server: &ServerUnderTest,
    revoke: &Call,
    at: f64,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    if !h2load_installed() {
        return Err(HOW.into());
    }
    let target = H2Target::new(fx, server);
    // The revoker runs as long as h2load's window, which is whole seconds.
    let window = Duration::from_secs(window_seconds(options));
    let (mut alone, mut busy) = (vec![], vec![]);
    for round in 0..options.rounds {
        for first in [round % 2 == 0, round % 2 != 0] {
            let p99 = if first {
                validate_p99_at(options, &target, at).await?
            } else {
                let (w, _) = tokio::join!(
                    validate_p99_at(options, &target, at),
                    open_loop(revoke, 100.0, window)
                );
                w?
            };
            eprintln!(
                "row 6 (h2load): {} p99 {}",
                if first { "alone" } else { "with revocations" },
                time(p99)
            );
            if first { &mut alone } else { &mut busy }.push(p99);
        }
    }
    Ok((alone, busy))
}

/// This process's CPU time so far (user + system), at the kernel's 10 ms tick.
fn own_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}
