//! Row 1: ValidateKey vs grpc.health.v1.Health/Check on the same server and connections.

use super::*;

// Row 1: ValidateKey vs Health/Check

/// What later rows take from row 1, as numbers.
#[derive(Clone)]
pub(crate) struct Row1 {
    /// ValidateKey's closed-loop peak (calls/s).
    pub(crate) peak: f64,
    /// The open-loop windows below the target's fraction: (fraction of the baseline's peak,
    /// its rate, ValidateKey's p99 in ns). Read by row 7 (feature `etcd`).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) open: Vec<(f64, f64, f64)>,
    /// h2load's rate at half ValidateKey's h2load peak, and the p99 (ns) it saw there.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) light_half: Option<(f64, f64)>,
}

pub(crate) async fn row1(
    options: &Options,
    fx: &Fixture,
    server: &ServerUnderTest,
    rows: &mut Vec<Row>,
) -> Row1 {
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

    // The target's rate, and half and a fifth of the peak as well: on a small shared machine
    // the open loop's own cost can push 80%, and even 50%, past what client and server
    // together sustain (counted below as overloaded windows, which get no verdict).
    let mut fractions = vec![options.load_fraction];
    fractions.extend(
        [0.5, 0.2]
            .into_iter()
            .filter(|f| *f < options.load_fraction),
    );
    let mut open = Vec::new();
    for fraction in fractions {
        let at = fraction * h;
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
                    "row 1: open loop at {} {} p50 {} p99 {}{}",
                    rate(at),
                    if first { "Health/Check" } else { "ValidateKey" },
                    time(p50),
                    time(p99),
                    if w.overloaded { " (overloaded)" } else { "" }
                );
                let (p50s, p99s) = if first {
                    (&mut h50, &mut h99)
                } else {
                    (&mut v50, &mut v99)
                };
                p50s.push(p50);
                p99s.push(p99);
            }
        }
        let ratio = median(&v99) / median(&h99);
        if fraction < options.load_fraction {
            open.push((fraction, at, median(&v99)));
        }
        let windows = 2 * options.rounds;
        rows.push(Row {
            row: "1",
            figure: format!(
                "ValidateKey latency at {} = {:.0}% of the baseline's peak (open loop; {overloaded} of {windows} windows overloaded)",
                rate(at),
                fraction * 100.0,
            ),
            median: time(median(&v50)),
            p99: time(median(&v99)),
            baseline: "Health/Check, same rate".into(),
            baseline_median: time(median(&h50)),
            baseline_p99: time(median(&h99)),
            ratio: format!("{ratio:.2}x (p99)"),
            target: "p99 <= 1.3x at 80%".into(),
            result: open_loop_result(
                overloaded,
                windows,
                (fraction == 0.8).then_some(ratio <= 1.3),
                "(not at 80%)",
            ),
        });
    }
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
    Row1 {
        peak: v,
        open,
        light_half: None,
    }
}
