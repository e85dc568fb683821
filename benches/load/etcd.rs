//! Row 7: rows 1, 3 and 4 again, on a server whose store is a 3-member etcd cluster on
//! loopback (`zsc::testing::EtcdCluster`), printed beside the sled rows. Needs the etcd backend
//! (cargo feature `etcd`, and the `etcd` binary); without it the row says how to run it.

use super::*;

/// How to run row 7 when this build cannot.
#[cfg_attr(feature = "etcd", allow(dead_code))]
const HOW: &str = "`cargo bench --features etcd --bench load -- --rows 1,3,4,7`";

#[cfg(not(feature = "etcd"))]
pub(crate) async fn row7(_: &Options, rows: &mut Vec<Row>) -> Vec<String> {
    rows.push(Row::not_measured(
        "7",
        "rows 1, 3, 4 on etcd (3-member loopback cluster)",
        "beside sled",
        &format!("built without the etcd backend: {HOW}"),
    ));
    Vec::new()
}

/// Returns the lines that describe the server and the cluster, for the table's header.
#[cfg(feature = "etcd")]
pub(crate) async fn row7(options: &Options, rows: &mut Vec<Row>) -> Vec<String> {
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
    // Pinned: the members and the server inherit the server's core from this process.
    let pinned = options.pin && set_affinity(std::process::id(), SERVER_CORE).is_ok();
    let cluster = tokio::task::spawn_blocking(|| zsc::testing::EtcdCluster::start(3))
        .await
        .expect("etcd cluster starts");
    let store = cluster.url("/load");
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
    if pinned {
        let _ = set_affinity(std::process::id(), &all_cores());
    }
    let mut described = vec![format!(
        "row 7: {}, --store {store} (3 etcd members on loopback, same machine{})",
        server.describe(),
        if pinned {
            format!(
                "; pinned: the server and the 3 etcd members on core {SERVER_CORE}, the load on core {LOAD_CORE}"
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
