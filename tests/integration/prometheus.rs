//! deploy/monitoring against the real thing: promtool checks and unit-tests the rules, and a real
//! Prometheus (Debian's) scrapes a real zsc every second, loads the real rules file, and through
//! its HTTP API: the target is up, every metric the rules and the dashboard name exists, every
//! expression evaluates, and ZscStoreRefusingWrites fires when the data dir's disk fills up.
//!
//! The alert fires through its real `for: 15s` (no rewritten copy): the test waits for it.
//! Needs root (a tmpfs), `prometheus`, `promtool` and `curl` (tests/run.sh installs them).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tonic::Code;
use zsc::proto::*;

use crate::common::*;
use crate::storage::SmallDisk;

/// Metrics that rules and the dashboard use but this branch does not export yet, or exports only
/// in a setup this test does not run: each is added by other work (TLS rotation, rate limits,
/// etcd NOSPACE, stalled subscribers). Their expressions must still
/// evaluate. The certificate's expiry stays here for good: with TLS off the series is absent.
const NOT_EXPORTED_HERE: [&str; 5] = [
    "zsc_tls_certificate_expiry_timestamp_seconds",
    "zsc_tls_reloads_total",
    "zsc_rate_limited_total",
    "zsc_store_writes_refused_total",
    "zsc_revocation_subscribers_ended_total",
];

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    let dir = monitoring_dir();
    for args in [
        &["check", "rules", "zsc-rules.yaml"][..],
        &["test", "rules", "zsc-rules.test.yaml"][..],
    ] {
        let output = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool (Debian package prometheus)");
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Every PromQL expression in the rules file: (what it is, the expression).
fn rule_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring_dir().join("zsc-rules.yaml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let mut out = Vec::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("a rule is an alert or a recording");
            out.push((name.to_owned(), rule["expr"].as_str().unwrap().to_owned()));
        }
    }
    out
}

/// Every expression in the dashboard (panel targets, variable queries, annotations), with
/// Grafana's variables replaced as Grafana would for "All" over a 1-minute rate window.
fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring_dir().join("zsc-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            out.push((title.to_owned(), grafana(target["expr"].as_str().unwrap())));
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        out.push((
            "annotation".into(),
            grafana(annotation["expr"].as_str().unwrap()),
        ));
    }
    out
}

fn grafana(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$job", ".*")
        .replace("$instance", ".*")
}

/// The zsc metric names an expression reads (recorded series, `zsc:...`, are not metrics).
fn metric_names(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("zsc_"))
}

/// Prometheus on a free loopback port, scraping `target` every second with the rules loaded.
struct Prometheus {
    /// Killed when dropped.
    _process: tokio::process::Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = monitoring_dir().join("zsc-rules.yaml");
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [ {rules:?} ]\n\
             scrape_configs:\n  - job_name: zsc\n    static_configs: [ {{ targets: [ \"{target}\" ] }} ]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        // A port the kernel just handed out; Prometheus binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let process = tokio::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("run prometheus (Debian package prometheus)");
        let prometheus = Prometheus {
            _process: process,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        prometheus
            .until("Prometheus is ready", || async {
                curl(&[&format!("{}/-/ready", prometheus.url)])
                    .await
                    .is_some()
            })
            .await;
        prometheus
    }

    /// `GET /api/v1/<path>` with form `params`; the `data` of a successful answer, or the error.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = format!("{}/api/v1/{path}", self.url);
        let mut args = vec!["--get", url.as_str()];
        let encoded: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for param in &encoded {
            args.extend(["--data-urlencode", param.as_str()]);
        }
        // Without -f: a bad query's answer (HTTP 400) carries the error.
        let body = curl(&args).await.ok_or("no answer")?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        match answer["status"].as_str() {
            Some("success") => Ok(answer["data"].clone()),
            _ => Err(body),
        }
    }

    /// The result vector of an instant query.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", expr)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Polls `check` every 250 ms until it holds; panics after 45 s, saying what was awaited.
    async fn until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !check().await {
            if started.elapsed() > Duration::from_secs(45) {
                let log = std::fs::read_to_string(self.dir.path().join("prometheus.log"));
                panic!("waited 45 s for: {what}\n{}", log.unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// curl's stdout, None if curl failed (no connection; with -f, an HTTP error).
async fn curl(args: &[&str]) -> Option<String> {
    let output = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Calls that make every series the rules read appear: RPCs (ok and refused), validations
/// (ok and failed), a revocation, an open revocation stream (returned: keep it open), and the
/// org and its administrator.
async fn traffic(
    server: &TestServer,
) -> (tonic::Streaming<WatchRevocationsResponse>, String, String) {
    let (org_id, admin, _) = server.validated_and_refused().await;
    server.regenerate(&org_id, &admin).await;
    let mut stream = server.watch(watch_from(None)).await.unwrap();
    next(&mut stream).await.unwrap();
    (stream, org_id, admin)
}

#[tokio::test]
async fn a_real_prometheus_scrapes_zsc_evaluates_every_rule_and_fires_on_a_full_disk() {
    let disk = SmallDisk::mount("24m");
    let dir = tempfile::tempdir_in(disk.path()).unwrap();
    let server = TestServer::start_with(dir, |d| {
        let mut config = test_config(d);
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        config
    })
    .await;
    let traffic = traffic(&server).await;
    let prometheus = Prometheus::start(server.metrics_addr.unwrap()).await;

    // Up, and scraped since the traffic above.
    prometheus
        .until("the zsc target is up with the traffic scraped", || async {
            let up = prometheus.query(r#"up{job="zsc"} == 1"#).await;
            let validated = prometheus.query("zsc_key_validations_total").await;
            matches!((up, validated), (Ok(u), Ok(v)) if !u.is_empty() && v.len() == 2)
        })
        .await;

    let expressions: Vec<(String, String)> = rule_expressions()
        .into_iter()
        .chain(dashboard_expressions())
        .collect();
    let names = prometheus.api("label/__name__/values", &[]).await.unwrap();
    let exported: BTreeSet<&str> = names
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut missing = BTreeSet::new();
    for (what, expr) in &expressions {
        for name in metric_names(expr) {
            if !exported.contains(name) && !NOT_EXPORTED_HERE.contains(&name) {
                missing.insert(format!("{name} (in {what})"));
            }
        }
        if let Err(error) = prometheus.query(expr).await {
            panic!("{what}: `{expr}` does not evaluate: {error}");
        }
    }
    assert!(missing.is_empty(), "not exported by zsc: {missing:?}");

    // Prometheus itself evaluates every rule without error.
    let groups = prometheus.api("rules", &[]).await.unwrap();
    let mut evaluated = 0;
    for group in groups["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_ne!(rule["health"], "err", "{rule}");
            evaluated += 1;
        }
    }
    assert_eq!(evaluated, rule_expressions().len());

    // Healthy: nothing refuses writes and the alert is silent.
    let refusing = prometheus.query("zsc_store_refusing_writes == 0").await;
    assert_eq!(refusing.unwrap().len(), 1);
    let alerts = r#"ALERTS{alertname="ZscStoreRefusingWrites", alertstate="firing"}"#;
    assert!(prometheus.query(alerts).await.unwrap().is_empty());

    // The disk fills: the first refused change faults the store.
    let _filler = disk.fill();
    let (_stream, org_id, admin) = traffic;
    let mut keys = server.op_keys().await;
    let mut refused = None;
    for _ in 0..200 {
        let regen = RegenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: admin.clone(),
        };
        if let Err(status) = keys.regenerate_key(regen).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("a full disk refused a change");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    prometheus
        .until("ZscStoreRefusingWrites fires", || async {
            matches!(prometheus.query(alerts).await, Ok(firing) if firing.len() == 1)
        })
        .await;
    let serving = prometheus.query("zsc_serving == 0").await.unwrap();
    assert_eq!(
        serving.len(),
        1,
        "zsc_serving follows health to NOT_SERVING"
    );
}
