//! Row 5: a store of 1,000,000 keys beside one of 1,000. Both are built by the store's bulk
//! loader (`Store::bulk_orgs_with_keys`: the rules and records of CreateOrg, CreateUser and
//! GenerateKey, many orgs to a transaction), then served by two `zsc serve` children at once:
//! ValidateKey peak on keys picked at random from the whole store (alternating windows), each
//! server's RSS after that load, the time from process start to SERVING on a restart, and
//! `zsc backup` / `zsc restore` of each store (duration, rate and the restore's peak memory), and
//! with `--features etcd` the same restore into a one-member etcd cluster.

use super::*;
use std::os::unix::fs::OpenOptionsExt;
use zsc::domain::{Caller, Email, Name};
use zsc::store::{BulkOrg, Store, StoreOptions};

/// Orgs per loader transaction (each: an org, a user, a key and their audit entries).
const LOAD_BATCH: usize = 1_000;

/// One store of `keys` keys and the server on it.
struct Scaled {
    keys: usize,
    /// Holds `data` (the data dir) and `credentials` (written once the store is complete).
    dir: PathBuf,
    /// Removes `dir` at the end, unless it is kept (`--scale-dir`).
    _temp: Option<tempfile::TempDir>,
    child: Option<Child>,
    url: String,
    /// Every key in the store, as (owner email, key).
    credentials: Arc<Vec<(String, String)>>,
    /// None: an existing store was reused.
    loaded_in: Option<Duration>,
    /// Flags for its server.
    flags: Vec<String>,
}

impl Scaled {
    /// A store with no server running on it yet.
    fn stopped(
        keys: usize,
        dir: PathBuf,
        temp: Option<tempfile::TempDir>,
        credentials: Vec<(String, String)>,
        loaded_in: Option<Duration>,
    ) -> Scaled {
        Scaled {
            keys,
            dir,
            _temp: temp,
            child: None,
            url: String::new(),
            credentials: Arc::new(credentials),
            loaded_in,
            flags: Vec::new(),
        }
    }
}

impl Scaled {
    /// Builds the store with the bulk loader (in this process, server not running yet), in a
    /// temp dir, or under `kept` (reusing the store found there, if complete).
    async fn build(keys: usize, kept: Option<&Path>) -> Scaled {
        let (dir, temp) = match kept {
            Some(root) => (root.join(format!("keys-{keys}")), None),
            None => {
                let temp = tempfile::tempdir().expect("temp dir");
                (temp.path().to_owned(), Some(temp))
            }
        };
        let credentials_file = dir.join("credentials");
        if let Ok(saved) = std::fs::read_to_string(&credentials_file) {
            let credentials: Vec<(String, String)> = saved
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(email, key)| (email.to_owned(), key.to_owned()))
                .collect();
            assert_eq!(credentials.len(), keys, "{}", credentials_file.display());
            eprintln!(
                "row 5: reusing the store of {keys} keys in {}",
                dir.display()
            );
            return Scaled::stopped(keys, dir, temp, credentials, None);
        }
        let _ = std::fs::remove_dir_all(dir.join("data"));
        let started = Instant::now();
        let store = Store::open(&dir.join("data"), &StoreOptions::default())
            .expect("store opens")
            .store;
        let by = Caller::cli();
        let mut credentials = Vec::with_capacity(keys);
        let mut last_report = Instant::now();
        for first in (0..keys).step_by(LOAD_BATCH) {
            let batch: Vec<_> = (first..keys.min(first + LOAD_BATCH))
                .map(|i| BulkOrg {
                    name: Name::parse("name", &format!("Scale {i}")).expect("valid name"),
                    admin: Email::parse("email", &format!("admin@scale-{i}.example"))
                        .expect("valid email"),
                })
                .collect();
            let emails: Vec<String> = batch.iter().map(|o| o.admin.to_string()).collect();
            let made = store
                .bulk_orgs_with_keys(&by, batch)
                .await
                .expect("bulk load");
            for (email, key) in emails.into_iter().zip(made) {
                credentials.push((email, key.expose().to_owned()));
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!(
                    "row 5: loaded {} of {} keys ({})",
                    credentials.len(),
                    keys,
                    rate(credentials.len() as f64 / started.elapsed().as_secs_f64())
                );
            }
        }
        drop(store);
        let loaded_in = started.elapsed();
        eprintln!(
            "row 5: {keys} keys loaded in {:.1} s ({} orgs with a key)",
            loaded_in.as_secs_f64(),
            rate(keys as f64 / loaded_in.as_secs_f64())
        );
        if kept.is_some() {
            let lines: String = credentials
                .iter()
                .map(|(e, k)| format!("{e} {k}\n"))
                .collect();
            // Keys: readable by their owner only.
            std::fs::File::options()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&credentials_file)
                .and_then(|mut file| std::io::Write::write_all(&mut file, lines.as_bytes()))
                .expect("write the credentials");
        }
        Scaled::stopped(keys, dir, temp, credentials, Some(loaded_in))
    }

    /// Starts the server; returns the time from spawning it to SERVING.
    async fn start(&mut self) -> Duration {
        let started = Instant::now();
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let (child, url, _) = spawn_child(&self.dir, &flags);
        self.child = Some(child);
        self.url = url;
        wait_serving(&self.url).await;
        started.elapsed()
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child).await;
        }
    }

    /// A view of the running server for the measuring loops (its pid for CPU and RSS).
    fn server(&self) -> ServerUnderTest {
        ServerUnderTest::External {
            pid: self.child.as_ref().map(Child::id),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// ValidateKey through `options.connections` connections as a new consumer account, each
    /// call with a key picked at random from the whole store.
    async fn validate_call(&self, options: &Options) -> Call {
        let operator = Bearer::new(&read_token(&self.data()).await).expect("operator token");
        let consumer = AccessServiceClient::with_interceptor(connect(&self.url).await, operator)
            .create_service_account(CreateServiceAccountRequest {
                name: format!("scale-{}", std::process::id()),
                role: Role::Consumer as i32,
            })
            .await
            .expect("create account")
            .into_inner()
            .token;
        let consumer = Bearer::new(&consumer).expect("consumer token");
        let clients = keys_clients(&self.url, &consumer, options.connections).await;
        let credentials = self.credentials.clone();
        Arc::new(move |i| {
            let mut client = clients[i % clients.len()].clone();
            let (email, key) = &credentials[rand::random_range(0..credentials.len())];
            let request = ValidateKeyRequest {
                email: email.clone(),
                key: key.clone(),
            };
            async move { client.validate_key(request).await.is_ok() }.boxed()
        })
    }
}

/// What `zsc backup` or `zsc restore` did: how long it took, and its last line.
struct Offline {
    took: Duration,
    entries: u64,
    bytes: u64,
    said: String,
}

impl Offline {
    /// "peak memory N MiB", which a restore's last line names (issue 16: bounded memory).
    fn peak(&self) -> Option<&str> {
        let at = self.said.find("peak memory ")?;
        let rest = &self.said[at..];
        Some(&rest[..rest.find(" MiB").map_or(rest.len(), |end| end + 4)])
    }
}

/// Runs `zsc ARGS` (stdout and stderr not a terminal) and times it.
fn offline(args: &[&std::ffi::OsStr], file: &Path) -> Offline {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_zsc"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run zsc");
    let took = started.elapsed();
    let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success(),
        "zsc {args:?} failed: {said} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // "backed up N entries ..." / "restored N entries ...".
    let entries = said
        .split_whitespace()
        .find_map(|w| w.replace(',', "").parse().ok())
        .unwrap_or(0);
    let bytes = std::fs::metadata(file).map_or(0, |m| m.len());
    Offline {
        took,
        entries,
        bytes,
        said,
    }
}

/// etcd's quota for a restore of up to 1,000,000 keys: the result is ~1.7 GB, near the 2 GiB
/// default (docs/backup.md); 8 GiB is etcd's suggested maximum.
#[cfg(feature = "etcd")]
const RESTORE_QUOTA: &str = "8589934592";

/// Restores `file` into a fresh one-member etcd cluster (`--features etcd` only).
#[cfg(feature = "etcd")]
fn restore_into_etcd(file: &Path) -> Option<Offline> {
    let cluster =
        zsc::testing::EtcdCluster::start_with(1, &["--quota-backend-bytes", RESTORE_QUOTA]);
    let store = cluster.url("/restored");
    let args: [&std::ffi::OsStr; 5] = [
        "restore".as_ref(),
        "--in".as_ref(),
        file.as_os_str(),
        "--store".as_ref(),
        store.as_ref(),
    ];
    Some(offline(&args, file))
}

#[cfg(not(feature = "etcd"))]
fn restore_into_etcd(_: &Path) -> Option<Offline> {
    None
}

/// Backs up the (stopped) store, restores the backup into a new data dir and (with the etcd
/// backend built in) into etcd.
fn backup_and_restore(scaled: &Scaled) -> (Offline, Offline, Option<Offline>) {
    let file = scaled.dir.join("store.backup");
    let restored = scaled.dir.join("restored");
    let backup = offline(
        &[
            "backup".as_ref(),
            "--data-dir".as_ref(),
            scaled.data().as_os_str(),
            "--out".as_ref(),
            file.as_os_str(),
        ],
        &file,
    );
    let restore = offline(
        &[
            "restore".as_ref(),
            "--in".as_ref(),
            file.as_os_str(),
            "--data-dir".as_ref(),
            restored.as_os_str(),
        ],
        &file,
    );
    let _ = std::fs::remove_dir_all(&restored);
    let on_etcd = restore_into_etcd(&file);
    let _ = std::fs::remove_file(&file);
    (backup, restore, on_etcd)
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

fn seconds(d: Duration) -> String {
    time(d.as_nanos() as f64)
}

fn count(n: usize) -> String {
    rate(n as f64).trim_end_matches("/s").to_owned()
}

pub(crate) async fn row5(options: &Options, rows: &mut Vec<Row>) {
    let (small_keys, big_keys) = (options.scale_baseline, options.scale_keys);
    eprintln!("row 5: building stores of {small_keys} and {big_keys} keys");
    let kept = options.scale_dir.as_deref();
    let mut small = Scaled::build(small_keys, kept).await;
    let mut big = Scaled::build(big_keys, kept).await;
    if let Some(bytes) = &options.scale_cache_bytes {
        for scaled in [&mut small, &mut big] {
            scaled.flags = vec!["--cache-bytes".into(), bytes.clone()];
        }
    }
    let (big_n, small_n) = (count(big.keys), count(small.keys));
    if let (Some(big_took), Some(small_took)) = (big.loaded_in, small.loaded_in) {
        rows.push(Row {
            row: "5",
            figure: format!(
                "bulk load of {big_n} orgs with a key (the store's rules, {LOAD_BATCH} per transaction)"
            ),
            median: seconds(big_took),
            p99: "-".into(),
            baseline: format!("{small_n} orgs"),
            baseline_median: seconds(small_took),
            baseline_p99: "-".into(),
            ratio: rate(big.keys as f64 / big_took.as_secs_f64()),
            target: "(diagnostic)".into(),
            result: "-".into(),
        });
    }

    // Both servers at once, their windows alternating.
    small.start().await;
    big.start().await;
    let kib = |server: &ServerUnderTest| server.rss_kib().map_or(f64::NAN, |k| k as f64);
    // Before any load: what opening the store costs (sled's recovery), apart from the cache.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (small_idle, big_idle) = (kib(&small.server()), kib(&big.server()));
    let small_call = small.validate_call(options).await;
    let big_call = big.validate_call(options).await;
    let (small_server, big_server) = (small.server(), big.server());
    let workers = options.connections * options.in_flight;
    eprintln!("row 5: warm-up");
    closed_loop(&small_call, workers, options.window / 2, &small_server).await;
    closed_loop(&big_call, workers, options.window / 2, &big_server).await;
    let (mut small_peaks, mut big_peaks, mut errors) = (vec![], vec![], 0);
    for round in 0..options.rounds {
        for big_first in [round % 2 == 0, round % 2 != 0] {
            let (call, server, peaks, what) = if big_first {
                (&big_call, &big_server, &mut big_peaks, &big_n)
            } else {
                (&small_call, &small_server, &mut small_peaks, &small_n)
            };
            let w = closed_loop(call, workers, options.window, server).await;
            eprintln!(
                "row 5: closed loop ValidateKey, {what} keys: {}",
                rate(w.rate)
            );
            peaks.push(w.rate);
            errors += w.errors;
        }
    }
    if errors > 0 {
        eprintln!("row 5: {errors} calls failed");
    }
    let (s, b) = (median(&small_peaks), median(&big_peaks));
    rows.push(Row {
        row: "5",
        figure: format!(
            "ValidateKey peak, {big_n} keys (random keys of the whole store; {} conns x {} in flight)",
            options.connections, options.in_flight
        ),
        median: rate(b),
        p99: "-".into(),
        baseline: format!("{small_n} keys, same load"),
        baseline_median: rate(s),
        baseline_p99: "-".into(),
        ratio: format!("{:.2}x", b / s),
        target: ">= 0.9x".into(),
        result: verdict(b / s >= 0.9),
    });
    rows.push(Row {
        row: "5",
        figure: format!("server RSS, {big_n} keys, just started (before any call)"),
        median: mib(big_idle * 1024.0),
        p99: "-".into(),
        baseline: format!("{small_n} keys"),
        baseline_median: mib(small_idle * 1024.0),
        baseline_p99: "-".into(),
        ratio: format!("{:.2}x", big_idle / small_idle),
        target: "(diagnostic)".into(),
        result: "-".into(),
    });
    let (small_rss, big_rss) = (kib(&small_server), kib(&big_server));
    rows.push(Row {
        row: "5",
        figure: format!("server RSS, {big_n} keys, after that load"),
        median: mib(big_rss * 1024.0),
        p99: "-".into(),
        baseline: format!("{small_n} keys"),
        baseline_median: mib(small_rss * 1024.0),
        baseline_p99: "-".into(),
        ratio: format!("{:.2}x", big_rss / small_rss),
        target: "<= 512 MiB".into(),
        result: verdict(big_rss <= 512.0 * 1024.0),
    });
    drop((small_call, big_call));

    // Restarts, one server at a time: process start to SERVING.
    let (mut small_starts, mut big_starts) = (vec![], vec![]);
    for _ in 0..options.rounds.min(3) {
        for (scaled, starts) in [(&mut small, &mut small_starts), (&mut big, &mut big_starts)] {
            scaled.stop().await;
            let took = scaled.start().await;
            eprintln!(
                "row 5: restart, {} keys: SERVING after {}",
                count(scaled.keys),
                seconds(took)
            );
            starts.push(took.as_nanos() as f64);
        }
    }
    let (s, b) = (median(&small_starts), median(&big_starts));
    rows.push(Row {
        row: "5",
        figure: format!("restart to SERVING, {big_n} keys (process start to Health/Check SERVING)"),
        median: time(b),
        p99: "-".into(),
        baseline: format!("{small_n} keys"),
        baseline_median: time(s),
        baseline_p99: "-".into(),
        ratio: format!("{:.2}x", b / s),
        target: "<= 3 s".into(),
        result: verdict(b <= 3e9),
    });
    small.stop().await;
    big.stop().await;

    // Offline backup and restore of each store.
    let (small_backup, small_restore, small_etcd) = backup_and_restore(&small);
    let (big_backup, big_restore, big_etcd) = backup_and_restore(&big);
    let mut offline = vec![
        ("zsc backup", &big_backup, &small_backup),
        ("zsc restore", &big_restore, &small_restore),
    ];
    if let (Some(big), Some(small)) = (&big_etcd, &small_etcd) {
        offline.push((
            "zsc restore into etcd (1 member, --quota-backend-bytes 8 GiB)",
            big,
            small,
        ));
    }
    for (what, big, small) in offline {
        let per_second = |o: &Offline| {
            let secs = o.took.as_secs_f64();
            let peak = o.peak().map(|p| format!("; {p}")).unwrap_or_default();
            format!(
                "{} entries/s, {}/s{peak}",
                count((o.entries as f64 / secs) as usize),
                mib(o.bytes as f64 / secs)
            )
        };
        eprintln!("row 5: {what}, {big_n} keys: {}", big.said);
        let reported = big.said.contains("entries/s");
        rows.push(Row {
            row: "5",
            figure: format!(
                "{what}, {big_n} keys: {} entries, {} ({})",
                count(big.entries as usize),
                mib(big.bytes as f64),
                per_second(big)
            ),
            median: seconds(big.took),
            p99: "-".into(),
            baseline: format!("{small_n} keys ({})", per_second(small)),
            baseline_median: seconds(small.took),
            baseline_p99: "-".into(),
            ratio: format!("{:.1}x", big.took.as_secs_f64() / small.took.as_secs_f64()),
            target: "progress; rate reported".into(),
            result: if reported { "reported" } else { "MISS" }.into(),
        });
    }
}
