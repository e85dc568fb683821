//! The conformance kit: one set of scenarios every Verifier must pass, whatever its language.
//! A Verifier under test is a child process speaking the line protocol of docs/verifier.md
//! ("The conformance kit and its line protocol"); the kit starts a real zsc, an org with an
//! administrator and a key, and a consumer account, and plays each scenario against every
//! Verifier in [`verifiers`]: the Rust one (examples/verifier_line.rs) always, the Java one
//! (clients/java/build/run-verifier) when it is built (required with ZSC_KIT_REQUIRE_JAVA=1),
//! or only the command in ZSC_KIT_VERIFIER when that is set.
//!
//! What a scenario asserts is the Verifier's guarantee, not a speed: no ACCEPT for a request
//! sent `max_staleness` or more after a revocation was acknowledged (or after the path to the
//! server failed), and the right answer in the end. The time from a revocation's
//! acknowledgement to the first rejection is measured and printed, never asserted.

mod confirmations;
mod faults;
mod line;
mod proxy;
mod revocations;

use std::{path::PathBuf, time::Duration};

use tempfile::TempDir;
use tokio::{task::JoinHandle, time::Instant};
use zsc::proto::{RegenerateKeyRequest, Role};
use zsc::server::Config;

use crate::common::{test_config, TestServer};
use line::{Answer, LineVerifier, Settings, VerifierCommand};

/// Small, so the kit is quick: the bound every scenario checks.
const MAX_STALENESS: Duration = Duration::from_millis(500);
/// The Verifier and the server read the same clock here.
const MAX_CLOCK_SKEW: Duration = Duration::from_millis(50);
/// Well below `MAX_STALENESS - MAX_CLOCK_SKEW`, so the cache is used between heartbeats.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// How long an outcome that must come (a rejection, a recovery) may take before the kit fails.
const EVENTUALLY: Duration = Duration::from_secs(15);

/// The Verifiers to run every scenario on.
fn verifiers() -> Vec<VerifierCommand> {
    let command = std::env::var("ZSC_KIT_VERIFIER").unwrap_or_default();
    let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    if !argv.is_empty() {
        return vec![VerifierCommand {
            name: argv[0].clone(),
            argv,
        }];
    }
    let mut list = vec![rust_verifier()];
    let java = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/java/build/run-verifier");
    if java.exists() {
        list.push(VerifierCommand {
            name: "java".into(),
            argv: vec![java.display().to_string()],
        });
    } else if std::env::var("ZSC_KIT_REQUIRE_JAVA").as_deref() == Ok("1") {
        panic!(
            "ZSC_KIT_REQUIRE_JAVA=1 but {} is missing: build clients/java first",
            java.display()
        );
    } else {
        eprintln!(
            "kit: {} not built; running the Rust Verifier only",
            java.display()
        );
    }
    list
}

/// examples/verifier_line, which `cargo test` builds (after `cargo test --test integration`
/// alone, run `cargo build --example verifier_line` first).
fn rust_verifier() -> VerifierCommand {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_zsc"))
        .parent()
        .unwrap()
        .join("examples/verifier_line");
    assert!(
        path.exists(),
        "{} is missing: `cargo build --example verifier_line`",
        path.display()
    );
    VerifierCommand {
        name: "rust".into(),
        argv: vec![path.display().to_string()],
    }
}

/// The test config with the kit's short heartbeat.
fn kit_config(dir: &std::path::Path) -> Config {
    let mut config = test_config(dir);
    config.watch.heartbeat = HEARTBEAT;
    config
}

/// A server with an org, its administrator and key, and a consumer account ("desk").
struct Kit {
    server: TestServer,
    org_id: String,
    admin: String,
    key: String,
    token: String,
}

impl Kit {
    async fn start() -> Kit {
        let server = TestServer::start_with(tempfile::tempdir().unwrap(), kit_config).await;
        Kit::on(server).await
    }

    async fn on(server: TestServer) -> Kit {
        let (org_id, admin) = server.org_with_admin("Acme").await;
        let (key, _) = server.key(&org_id, &admin).await;
        let token = server.account("desk", Role::Consumer).await;
        Kit {
            server,
            org_id,
            admin,
            key,
            token,
        }
    }

    /// A Verifier following this server, with the kit's bound.
    async fn verifier(&self, command: &VerifierCommand) -> LineVerifier {
        self.verifier_of(command, vec![self.server.url()], MAX_STALENESS)
            .await
    }

    /// A Verifier following `urls` (the first, then the others in turn).
    async fn verifier_of(
        &self,
        command: &VerifierCommand,
        urls: Vec<String>,
        max_staleness: Duration,
    ) -> LineVerifier {
        let settings = Settings {
            urls,
            token: self.token.clone(),
            max_staleness,
            max_clock_skew: MAX_CLOCK_SKEW,
        };
        LineVerifier::start(command, &settings).await
    }

    /// Stops the server (as SIGTERM would) and returns its data dir.
    async fn stop_server(&mut self) -> TempDir {
        self.server.shutdown().await;
        std::mem::replace(&mut self.server.dir, tempfile::tempdir().unwrap())
    }

    /// Starts a server on `dir` at the stopped one's address.
    async fn start_server(&mut self, dir: TempDir) {
        let addr = self.server.addr.to_string();
        self.server = TestServer::start_on(dir, &addr, kit_config).await;
    }

    /// Regenerates the org's key in a task: (the instant it was acknowledged, the new key).
    async fn regenerate(&self) -> JoinHandle<(Instant, String)> {
        let mut keys = self.server.op_keys().await;
        let request = RegenerateKeyRequest {
            org_id: self.org_id.clone(),
            actor_email: self.admin.clone(),
        };
        acknowledged(async move {
            let response = keys.regenerate_key(request).await.expect("regenerate");
            response.into_inner().key
        })
    }
}

/// Polls `verify` every few ms until `wanted`; fails after [`EVENTUALLY`].
async fn until(
    verifier: &mut LineVerifier,
    email: &str,
    key: &str,
    what: &str,
    wanted: impl Fn(&Answer) -> bool,
) -> Answer {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let answer = verifier.verify(email, key).await;
        if wanted(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {answer:?} after {EVENTUALLY:?} {}",
            verifier.context()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the Verifier vouches for its cache, then verifies `key` until a second ACCEPT
/// in a row comes from the cache (the hit count moves). Returns the accepted (org_id, key_id).
async fn cached(verifier: &mut LineVerifier, email: &str, key: &str) -> (String, String) {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let stats = verifier.stats().await;
        let first = verifier.verify(email, key).await;
        let second = verifier.verify(email, key).await;
        let hits = verifier.stats().await.hits;
        if let (true, Answer::Accept { org_id, key_id }) =
            (stats.fresh && hits > stats.hits, &second)
        {
            assert_eq!(first, second, "the cache answers as the server did");
            return (org_id.clone(), key_id.clone());
        }
        assert!(
            Instant::now() < deadline,
            "the key was never answered from the cache: {first:?}, {second:?}, {stats:?} {}",
            verifier.context()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `verify` for `how_long`; fails on any ACCEPT for a request sent at or after
/// `since + MAX_STALENESS`. Returns every answer seen.
async fn no_accept_past_the_bound(
    verifier: &mut LineVerifier,
    email: &str,
    key: &str,
    since: Instant,
    how_long: Duration,
) -> Vec<Answer> {
    let mut answers = Vec::new();
    while since.elapsed() < how_long {
        let sent = Instant::now();
        let answer = verifier.verify(email, key).await;
        assert!(
            !(answer.accepted() && sent >= since + MAX_STALENESS),
            "ACCEPT for a request sent {:?} after the event, past max_staleness {MAX_STALENESS:?} {}",
            sent - since,
            verifier.context()
        );
        answers.push(answer);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    answers
}

/// Polls `verify` every ms while `revocation` (a task returning when its RPC was acknowledged)
/// runs: no ACCEPT for a request sent `MAX_STALENESS` or more after the acknowledgement, a REJECT in
/// the end, and no ACCEPT after it. Returns ms from acknowledgement to first rejection
/// (negative when the rejection came first).
async fn rejection_after<T>(
    verifier: &mut LineVerifier,
    email: &str,
    key: &str,
    revocation: JoinHandle<(Instant, T)>,
) -> (f64, T) {
    rejection_within(verifier, email, key, revocation, MAX_STALENESS).await
}

/// [`rejection_after`] for a Verifier configured with `bound` as its max_staleness.
async fn rejection_within<T>(
    verifier: &mut LineVerifier,
    email: &str,
    key: &str,
    mut revocation: JoinHandle<(Instant, T)>,
    bound: Duration,
) -> (f64, T) {
    let mut acknowledged: Option<Instant> = None;
    let mut outcome = None;
    let mut rejected: Option<Instant> = None;
    let started = Instant::now();
    while acknowledged.is_none() || rejected.is_none() {
        if acknowledged.is_none() && revocation.is_finished() {
            let (at, value) = (&mut revocation).await.expect("the revocation RPC");
            (acknowledged, outcome) = (Some(at), Some(value));
        }
        let sent = Instant::now();
        let answer = verifier.verify(email, key).await;
        if let (true, Some(at)) = (answer.accepted(), acknowledged) {
            assert!(
                sent < at + bound && rejected.is_none(),
                "ACCEPT {:?} after the revocation was acknowledged (rejected before: {}) {}",
                sent - at,
                rejected.is_some(),
                verifier.context()
            );
        }
        if answer == Answer::Reject && rejected.is_none() {
            rejected = Some(Instant::now());
        }
        assert!(
            started.elapsed() < EVENTUALLY,
            "no rejection within {EVENTUALLY:?}: last {answer:?} {}",
            verifier.context()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (at, rejected) = (acknowledged.unwrap(), rejected.unwrap());
    // A few more: a rejected key stays rejected.
    for _ in 0..3 {
        let answer = verifier.verify(email, key).await;
        assert!(
            !answer.accepted(),
            "accepted again after a rejection {}",
            verifier.context()
        );
    }
    let ms = if rejected >= at {
        (rejected - at).as_secs_f64() * 1e3
    } else {
        -((at - rejected).as_secs_f64() * 1e3)
    };
    (ms, outcome.expect("set with acknowledged"))
}

/// Runs `rpc` in a task that returns the instant it was acknowledged, and its outcome.
fn acknowledged<F>(rpc: F) -> JoinHandle<(Instant, F::Output)>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(async move {
        let outcome = rpc.await;
        (Instant::now(), outcome)
    })
}
