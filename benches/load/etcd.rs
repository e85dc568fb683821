//! Row 7: rows 1, 3 and 4 again, on a server whose store is a 3-member etcd cluster on
//! loopback (`zsc::testing::EtcdCluster`), printed beside the sled rows. Needs the etcd backend
//! (cargo feature `etcd`, and the `etcd` binary); without it the row says how to run it.

use super::*;

/// The etcd prefix row 7's store lives under.
#[cfg(feature = "etcd")]
const ROOT: &str = "/load";

/// How to run row 7 when this build cannot.
#[cfg_attr(feature = "etcd", allow(dead_code))]
const HOW: &str = "`cargo bench --features etcd --bench load -- --rows 1,3,4,7`";

#[cfg(not(feature = "etcd"))]
pub(crate) async fn row7(_: &Options, _: Option<Row1>, rows: &mut Vec<Row>) -> Vec<String> {
    rows.push(Row::not_measured(
        "7",
        "rows 1, 3, 4 on etcd (3-member loopback cluster)",
        "beside sled",
        &format!("built without the etcd backend: {HOW}"),
    ));
    Vec::new()
}

/// Returns the lines that describe the server and the cluster, for the table's header.
/// `on_sled`: row 1's figures on the sled server (pinned when this row is), for row 7.1's p99.
#[cfg(feature = "etcd")]
pub(crate) async fn row7(
    options: &Options,
    on_sled: Option<Row1>,
    rows: &mut Vec<Row>,
) -> Vec<String> {
    if options.target.is_some() {
        rows.push(Row::not_measured(
            "7",
            "rows 1, 3, 4 on etcd (3-member loopback cluster)",
            "beside sled",
            "starts a cluster and a server of its own: run without --target",
        ));
        return Vec::new();
    }
    eprintln!("row 7: starting a 3-member etcd cluster");
    // Pinned: the members inherit the load's core from this process, the server the server's:
    // the server's core holds the server alone, as on sled; the store runs elsewhere, as it
    // would in a deployment (a last line measures the members on the server's core).
    let pinned = options.pin && set_affinity(std::process::id(), LOAD_CORE).is_ok();
    let cluster = tokio::task::spawn_blocking(|| zsc::testing::EtcdCluster::start(3))
        .await
        .expect("etcd cluster starts");
    let store = cluster.url(ROOT);
    if pinned {
        let _ = set_affinity(std::process::id(), SERVER_CORE);
    }
    let (server, url, token) = ServerUnderTest::start(options, Some(&store)).await;
    if pinned {
        let _ = set_affinity(std::process::id(), LOAD_CORE);
    }
    eprintln!("row 7: server on {store} at {url}; setting up");
    let on_etcd = Options {
        rows: vec![1, 3, 4],
        ..options.clone()
    };
    let mut measured = Vec::new();
    measure(&on_etcd, &server, &url, &token, &mut measured).await;
    if let Some(on_sled) = on_sled {
        p99_less_a_bare_read(options, &cluster, &server, &url, &token, on_sled, rows).await;
    }
    if pinned && options.row(1) {
        peak_with_members_on_the_server_core(options, &cluster, &server, &url, &token, rows).await;
    }
    if pinned {
        let _ = set_affinity(std::process::id(), &all_cores());
    }
    let mut described = vec![format!(
        "row 7: {}, --store {store} (3 etcd members on loopback, same machine{})",
        server.describe(),
        if pinned {
            format!(
                "; pinned: the server on core {SERVER_CORE}, the 3 etcd members and the load on core {LOAD_CORE}"
            )
        } else {
            String::new()
        }
    )];
    if let Some(lines) = server.log_lines() {
        described.push(format!("row 7: server log lines: {lines}"));
    }
    server.stop().await;
    drop(cluster);
    for mut row in measured {
        row.figure = format!("on etcd, row {}: {}", row.row, row.figure);
        row.row = "7";
        rows.push(row);
    }
    described
}

/// The figure of row 7's line with the etcd members on the server's core.
const MEMBERS_ON_SERVER_CORE: &str =
    "ValidateKey peak on one etcd replica, its 3 etcd members moved onto the server's core";

/// Row 7.1's peak again with the etcd members moved onto the server's core (where the bench
/// used to start them): what sharing its core with the store costs the replica.
#[cfg(feature = "etcd")]
async fn peak_with_members_on_the_server_core(
    options: &Options,
    cluster: &zsc::testing::EtcdCluster,
    server: &ServerUnderTest,
    url: &str,
    token: &str,
    rows: &mut Vec<Row>,
) {
    if !h2load_installed() {
        return;
    }
    let moved = (0..3)
        .filter_map(|i| cluster.pid(i))
        .all(|pid| set_affinity(pid, SERVER_CORE).is_ok());
    if !moved {
        rows.push(Row::not_measured(
            "7",
            MEMBERS_ON_SERVER_CORE,
            "(diagnostic)",
            "taskset failed",
        ));
        return;
    }
    eprintln!("row 7: the etcd members moved onto core {SERVER_CORE}");
    let fx = fixture(url, token).await;
    let peak = validate_peak(options, &fx, server).await;
    rows.push(Row {
        row: "7",
        figure: format!("{MEMBERS_ON_SERVER_CORE} (h2load, pinned)"),
        median: rate(peak),
        p99: "-".into(),
        baseline: "-".into(),
        baseline_median: "-".into(),
        baseline_p99: "-".into(),
        ratio: "-".into(),
        target: "(diagnostic)".into(),
        result: "-".into(),
    });
}

/// A rate as `rate()` prints it, back to a number.
fn parse_rate(text: &str) -> Option<f64> {
    text.trim_end_matches("/s").replace(',', "").parse().ok()
}

/// Issue 15's row 7.1: ValidateKey's h2load peak on the etcd replica over sled's, the sled
/// figure from the same kind of run (pinned when row 7 was).
pub(crate) fn etcd_vs_sled(options: &Options, rows: &mut Vec<Row>) {
    let sled_figure = if options.pin {
        "pinned: ValidateKey peak, h2load"
    } else {
        "ValidateKey peak, h2load"
    };
    let find = |row: &str, prefix: &str| {
        rows.iter()
            .find(|r| r.row == row && r.figure.starts_with(prefix))
            .and_then(|r| parse_rate(&r.median))
    };
    let sled = find("1", sled_figure);
    let etcd = find("7", "on etcd, row 1: ValidateKey peak, h2load");
    let shared = rows
        .iter_mut()
        .find(|r| r.row == "7" && r.figure.starts_with(MEMBERS_ON_SERVER_CORE));
    if let (Some(sled), Some(row)) = (sled, shared) {
        if let Some(peak) = parse_rate(&row.median) {
            row.baseline = "on sled, same run".into();
            row.baseline_median = rate(sled);
            row.ratio = format!("{:.2}x", peak / sled);
        }
    }
    if let (Some(sled), Some(etcd)) = (sled, etcd) {
        let ratio = etcd / sled;
        rows.push(Row {
            row: "7",
            figure: format!(
                "ValidateKey peak on one etcd replica (h2load{})",
                if options.pin { ", pinned" } else { "" }
            ),
            median: rate(etcd),
            p99: "-".into(),
            baseline: "on sled, same run".into(),
            baseline_median: rate(sled),
            baseline_p99: "-".into(),
            ratio: format!("{ratio:.2}x"),
            target: ">= 0.8x".into(),
            result: verdict(ratio >= 0.8),
        });
    }
}

/// A bare linearizable etcd read, one call: a Get of the audit head, the key the replica's
/// read barrier reads.
#[cfg(feature = "etcd")]
async fn bare_read(cluster: &zsc::testing::EtcdCluster) -> Result<Call, String> {
    let endpoints: Vec<String> = cluster.endpoints().split(',').map(str::to_owned).collect();
    let etcd = etcd_client::Client::connect(endpoints, None)
        .await
        .expect("the bench reaches etcd");
    // The store's root is the URL's path and `/`; the audit head is `audit/h` under it.
    let audit_head = format!("{ROOT}/audit/h");
    let found = etcd
        .kv_client()
        .get(audit_head.as_str(), None)
        .await
        .map(|r| r.count());
    if !matches!(found, Ok(1)) {
        return Err(format!(
            "{audit_head} not found in etcd, so the bare read would not be the barrier's"
        ));
    }
    Ok(Arc::new(move |_| {
        let (mut kv, key) = (etcd.kv_client(), audit_head.clone());
        async move { kv.get(key, None).await.is_ok() }.boxed()
    }))
}

/// Issue 15's row 7.1 p99: ValidateKey's p99 on the etcd replica at the rate of one of sled's
/// open-loop windows, less the p99 of a bare linearizable etcd read ([`bare_read`]), over
/// sled's p99 there. The bare reads go one at a time: what one round to etcd costs. At the
/// same rate they would each be a ReadIndex round of their own (the first run overloaded etcd
/// at 16,973/s), where the replica shares one among every waiting call. Windows alternate
/// between the two.
///
/// Measured twice: with the tonic client at the rates of row 1's open-loop windows on sled
/// (the target is at half the peak; a fifth of it is a rate this process's open loop can
/// still send on a 2-core machine), and with h2load at half of sled's h2load peak (row 1's
/// `light_half`), which a C client can send.
#[cfg(feature = "etcd")]
async fn p99_less_a_bare_read(
    options: &Options,
    cluster: &zsc::testing::EtcdCluster,
    server: &ServerUnderTest,
    url: &str,
    token: &str,
    on_sled: Row1,
    rows: &mut Vec<Row>,
) {
    let bare = match bare_read(cluster).await {
        Ok(bare) => bare,
        Err(why) => {
            let figure = "ValidateKey p99 on etcd less a bare etcd read's";
            rows.push(Row::not_measured("7", figure, "<= 2x", &why));
            return;
        }
    };
    let fx = fixture(url, token).await;
    let clients = keys_clients(&fx.url, &fx.consumer, options.connections).await;
    let validate = validate_call(clients, fx.email.clone(), fx.key.clone());
    for (fraction, at, sled_p99) in on_sled.open {
        let tonic = async || {
            let w = open_loop(&validate, at, options.window).await;
            Ok((w.latency.value_at_quantile(0.99) as f64, w.overloaded))
        };
        let measured = alternate_with_bare_reads(options, server, &bare, tonic).await;
        let client = format!(
            "row 1's {:.0}% rate on sled, tonic client, open loop",
            fraction * 100.0
        );
        rows.push(less_a_bare_read_row(
            (&client, at, sled_p99),
            measured,
            (fraction == 0.5, "(not at 50%)"),
            options.rounds,
        ));
    }
    if let Some((at, sled_p99)) = on_sled.light_half {
        let target = H2Target::new(&fx, server);
        let light = async || {
            let p99 = validate_p99_at(options, &target, at).await?;
            Ok((p99, false))
        };
        let measured = alternate_with_bare_reads(options, server, &bare, light).await;
        let client = format!(
            "half of sled's h2load peak, h2load -c{} --rps",
            options.connections
        );
        rows.push(less_a_bare_read_row(
            (&client, at, sled_p99),
            measured,
            (true, ""),
            options.rounds,
        ));
    }
}

/// ValidateKey's and the bare read's p99 windows, alternating: `validate` measures one
/// window (its p99 in ns and whether it was overloaded). Returns each one's median p99 and
/// how many of ValidateKey's windows were overloaded.
#[cfg(feature = "etcd")]
async fn alternate_with_bare_reads(
    options: &Options,
    server: &ServerUnderTest,
    bare: &Call,
    validate: impl AsyncFn() -> Result<(f64, bool), String>,
) -> Result<(f64, f64, usize), String> {
    let (mut on_etcd, mut reads, mut overloaded) = (vec![], vec![], 0);
    for round in 0..options.rounds {
        for first in [round % 2 == 0, round % 2 != 0] {
            let (p99, over, what) = if first {
                let (p99, over) = validate().await?;
                on_etcd.push(p99);
                (p99, over, "ValidateKey")
            } else {
                let w = closed_loop(bare, 1, options.window, server).await;
                let p99 = w.latency.value_at_quantile(0.99) as f64;
                reads.push(p99);
                (p99, w.overloaded, "bare etcd Get, one at a time")
            };
            overloaded += usize::from(over);
            eprintln!(
                "row 7: {what} p99 {}{}",
                time(p99),
                if over { " (overloaded)" } else { "" }
            );
        }
    }
    Ok((median(&on_etcd), median(&reads), overloaded))
}

/// Row 7.1's p99 line: `(client, rate, sled's p99)`, what [`alternate_with_bare_reads`]
/// measured (or why it could not), and whether the line is judged (else the note its result
/// carries).
#[cfg(feature = "etcd")]
fn less_a_bare_read_row(
    (client, at, sled_p99): (&str, f64, f64),
    measured: Result<(f64, f64, usize), String>,
    (judged, not_judged): (bool, &str),
    windows: usize,
) -> Row {
    let (on_etcd, read, overloaded) = match measured {
        Ok(measured) => measured,
        Err(why) => {
            let figure = format!(
                "ValidateKey p99 on one etcd replica at {} ({client})",
                rate(at)
            );
            return Row::not_measured("7", &figure, "<= 2x", &why);
        }
    };
    let less = (on_etcd - read).max(0.0);
    let ratio = less / sled_p99;
    Row {
        row: "7",
        figure: format!(
            "ValidateKey p99 on one etcd replica at {} ({client}; {overloaded} of {windows} windows overloaded), less a bare linearizable etcd Get's p99, one at a time ({})",
            rate(at),
            time(read)
        ),
        median: "-".into(),
        p99: format!("{} - {} = {}", time(on_etcd), time(read), time(less)),
        baseline: "ValidateKey p99 on sled, same rate and client".into(),
        baseline_median: "-".into(),
        baseline_p99: time(sled_p99),
        ratio: format!("{ratio:.2}x (p99)"),
        target: "<= 2x".into(),
        result: open_loop_result(
            overloaded,
            windows,
            judged.then_some(ratio <= 2.0),
            not_judged,
        ),
    }
}
