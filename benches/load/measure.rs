//! Closed and open loops, and the statistics of their windows.

use super::*;

// Measuring

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid bounds")
}

pub(crate) fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

pub(crate) fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

/// What one window measured.
pub(crate) struct Window {
    pub(crate) rate: f64,
    pub(crate) errors: u64,
    pub(crate) latency: Histogram<u64>,
    /// Server CPU per completed call, when the server's CPU can be read.
    pub(crate) cpu_per_call: Option<Duration>,
    /// Open loop: the calls took over 10% longer than the window to complete, i.e. the
    /// machine could not keep up with the rate (latency then measures a growing queue).
    pub(crate) overloaded: bool,
}

/// Closed loop: `workers` callers, each starting its next call when the last one answers,
/// for `window`. Worker `w` calls `call(w)`.
pub(crate) async fn closed_loop(
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
pub(crate) async fn open_loop(call: &Call, rate: f64, window: Duration) -> Window {
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

pub(crate) fn health_call(clients: Vec<Health>) -> Call {
    Arc::new(move |i| {
        let mut client = clients[i % clients.len()].clone();
        async move { client.check(HealthCheckRequest::default()).await.is_ok() }.boxed()
    })
}

pub(crate) fn validate_call(clients: Vec<Keys>, email: String, key: String) -> Call {
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
pub(crate) fn regenerate_call(clients: Vec<Keys>, orgs: Vec<(String, String)>) -> Call {
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
