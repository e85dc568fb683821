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
    for sled in on_sled.map(|r| r.open).unwrap_or_default() {
        p99_less_a_bare_read(options, &cluster, &server, &url, &token, sled, rows).await;
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

/// Issue 15's row 7.1 p99: ValidateKey's p99 on the etcd replica at the rate of one of row 1's
/// open-loop windows on sled, less the p99 of a bare linearizable etcd read (a Get of the
/// audit head, the key the replica's read barrier reads), over sled's p99 there. The bare
/// reads go one at a time: what one round to etcd costs. At the same rate they would each be
/// a ReadIndex round of their own (the first run overloaded etcd at 16,973/s), where the
/// replica shares one among every waiting call. The target is at half the peak; a fifth of it
/// is a rate a 2-core machine's open loop can still send. Windows alternate between the two.
#[cfg(feature = "etcd")]
async fn p99_less_a_bare_read(
    options: &Options,
    cluster: &zsc::testing::EtcdCluster,
    server: &ServerUnderTest,
    url: &str,
    token: &str,
    (fraction, at, sled_p99): (f64, f64, f64),
    rows: &mut Vec<Row>,
) {
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
        rows.push(Row::not_measured(
            "7",
            "ValidateKey p99 on etcd less a bare etcd read's",
            "<= 2x",
            &format!("{audit_head} not found in etcd, so the bare read would not be the barrier's"),
        ));
        return;
    }
    let bare: Call = Arc::new(move |_| {
        let (mut kv, key) = (etcd.kv_client(), audit_head.clone());
        async move { kv.get(key, None).await.is_ok() }.boxed()
    });
    let fx = fixture(url, token).await;
    let clients = keys_clients(&fx.url, &fx.consumer, options.connections).await;
    let validate = validate_call(clients, fx.email.clone(), fx.key.clone());
    let (mut on_etcd, mut reads, mut overloaded) = (vec![], vec![], 0);
    for round in 0..options.rounds {
        for first in [round % 2 == 0, round % 2 != 0] {
            let (w, p99s) = if first {
                (open_loop(&validate, at, options.window).await, &mut on_etcd)
            } else {
                (
                    closed_loop(&bare, 1, options.window, server).await,
                    &mut reads,
                )
            };
            overloaded += usize::from(w.overloaded);
            let p99 = w.latency.value_at_quantile(0.99) as f64;
            eprintln!(
                "row 7: {} p99 {}{}",
                if first {
                    format!("ValidateKey, open loop at {}", rate(at))
                } else {
                    "bare etcd Get, one at a time".into()
                },
                time(p99),
                if w.overloaded { " (overloaded)" } else { "" }
            );
            p99s.push(p99);
        }
    }
    let (on_etcd, read) = (median(&on_etcd), median(&reads));
    let less = (on_etcd - read).max(0.0);
    let ratio = less / sled_p99;
    let windows = options.rounds;
    rows.push(Row {
        row: "7",
        figure: format!(
            "ValidateKey p99 on one etcd replica at {} (row 1's {:.0}% rate on sled; {overloaded} of {windows} windows overloaded), less a bare linearizable etcd Get's p99, one at a time ({})",
            rate(at),
            fraction * 100.0,
            time(read)
        ),
        median: "-".into(),
        p99: format!("{} - {} = {}", time(on_etcd), time(read), time(less)),
        baseline: "ValidateKey p99 on sled, row 1 at that rate".into(),
        baseline_median: "-".into(),
        baseline_p99: time(sled_p99),
        ratio: format!("{ratio:.2}x (p99)"),
        target: "<= 2x".into(),
        result: open_loop_result(
            overloaded,
            windows,
            (fraction == 0.5).then_some(ratio <= 2.0),
            "(not at 50%)",
        ),
    });
}
