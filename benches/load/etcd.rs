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
    let cluster = tokio::task::spawn_blocking(|| zsc::testing::EtcdCluster::start(3))
        .await
        .expect("etcd cluster starts");
    let store = cluster.url("/load");
    let (server, url, token) = ServerUnderTest::start(options, Some(&store)).await;
    eprintln!("row 7: server on {store} at {url}; setting up");
    let on_etcd = Options {
        rows: vec![1, 3, 4],
        ..options.clone()
    };
    let mut measured = Vec::new();
    measure(&on_etcd, &server, &url, &token, &mut measured).await;
    let mut described = vec![format!(
        "row 7: {}, --store {store} (3 etcd members on loopback, same machine)",
        server.describe()
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
