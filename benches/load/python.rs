//! Row 2's last lines: ValidateKey p99 from a Python grpcio client one call at a time
//! (`python_validate.py`, sending the request's bytes as is), beside the tonic client one call
//! at a time on its own connection, alternating; and, in the same rounds, h2load one call at a
//! time (`-c1 -m1`, a C client), whose tail is the server's and the machine's alone: when
//! Python's p99 is high and h2load's is not, the time is on the client's side.

use prost::Message as _;

use super::*;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/load/python_validate.py"
);

/// p50 and p99 (ns) of one Python run of `calls` calls, or why there is none.
async fn python_run(fx: &Fixture, request: &Path, calls: usize) -> Result<(f64, f64), String> {
    let target = fx.url.trim_start_matches("http://").to_owned();
    let mut command = Command::new("python3");
    command
        .arg(SCRIPT)
        .arg(target)
        .arg(&fx.consumer_token)
        .arg(request)
        .arg(calls.to_string());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("python task")
        .map_err(|e| format!("python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<f64> = text
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    match fields[..] {
        [p50, p99, _, failed] if out.status.success() && failed == 0.0 => Ok((p50, p99)),
        _ => Err(format!(
            "python3 -c 'import grpc' failing? (apt-get install python3-grpcio): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
    }
}

pub(crate) async fn python_row(
    options: &Options,
    fx: &Fixture,
    server: &ServerUnderTest,
    rows: &mut Vec<Row>,
) {
    let figure = "ValidateKey from Python grpcio, 1 call at a time";
    let dir = tempfile::tempdir().expect("temp dir");
    let request = dir.path().join("validate.pb");
    let message = ValidateKeyRequest {
        email: fx.email.clone(),
        key: fx.key.clone(),
    };
    std::fs::write(&request, message.encode_to_vec()).expect("write request");
    let calls = if options.quick { 200 } else { 2000 };
    let mut tonic = KeyServiceClient::with_interceptor(connect(&fx.url).await, fx.consumer.clone());
    let (mut py50, mut py99, mut rs50, mut rs99) = (vec![], vec![], vec![], vec![]);
    let h2 = h2load_installed().then(|| H2Target::new(fx, server));
    let mut c_client: Result<(Vec<f64>, Vec<f64>), String> = Ok((vec![], vec![]));
    for _ in 0..options.rounds.min(3) {
        match python_run(fx, &request, calls).await {
            Ok((p50, p99)) => {
                py50.push(p50);
                py99.push(p99);
            }
            Err(why) => {
                rows.push(Row::not_measured("2", figure, "p99 <= 2 ms", &why));
                return;
            }
        }
        let mut latency = histogram();
        for _ in 0..calls {
            let started = Instant::now();
            tonic
                .validate_key(message.clone())
                .await
                .expect("ValidateKey");
            latency.saturating_record(nanos(started.elapsed()));
        }
        rs50.push(latency.value_at_quantile(0.5) as f64);
        rs99.push(latency.value_at_quantile(0.99) as f64);
        if let (Some(target), Ok((c50, c99))) = (&h2, &mut c_client) {
            match one_at_a_time(target, 200, calls).await {
                Ok((p50, p99)) => {
                    c50.push(p50);
                    c99.push(p99);
                }
                Err(why) => c_client = Err(why),
            }
        }
        eprintln!(
            "row 2: 1 at a time: python p99 {}, tonic p99 {}",
            time(*py99.last().expect("pushed")),
            time(*rs99.last().expect("pushed"))
        );
    }
    let p99 = median(&py99);
    rows.push(Row {
        row: "2",
        figure: format!("{figure} ({calls} calls a run, median of runs)"),
        median: time(median(&py50)),
        p99: time(p99),
        baseline: "tonic, 1 call at a time".into(),
        baseline_median: time(median(&rs50)),
        baseline_p99: time(median(&rs99)),
        ratio: format!("{:.2}x (p99)", p99 / median(&rs99)),
        target: "p99 <= 2 ms".into(),
        result: verdict(p99 <= 2e6),
    });
    rows.push(c_client_row(h2.is_some(), c_client, calls, p99));
}

/// The h2load line: the same calls from a C client, beside Python's p99.
fn c_client_row(
    installed: bool,
    measured: Result<(Vec<f64>, Vec<f64>), String>,
    calls: usize,
    python_p99: f64,
) -> Row {
    let figure = "ValidateKey from h2load -c1 -m1 (a C client), 1 call at a time";
    let target = "(diagnostic: the server's tail)";
    match measured {
        _ if !installed => Row::not_measured("2", figure, target, "apt-get install nghttp2-client"),
        Err(why) => Row::not_measured("2", figure, target, &why),
        Ok((c50, c99)) => Row {
            row: "2",
            figure: format!("{figure} ({calls} calls a run, median of runs)"),
            median: time(median(&c50)),
            p99: time(median(&c99)),
            baseline: "Python, same rounds".into(),
            baseline_median: "-".into(),
            baseline_p99: time(python_p99),
            ratio: format!("{:.2}x (p99)", median(&c99) / python_p99),
            target: target.into(),
            result: "-".into(),
        },
    }
}
