//! The Rust Verifier behind the conformance kit's line protocol (docs/verifier.md, "The
//! conformance kit and its line protocol"): the kit (tests/integration/conformance/) runs this
//! as a child and plays its scenarios against it, exactly as it does a Java or Go Verifier.
//!
//! Configuration from the environment: ZSC_URLS (comma-separated; the first is followed, the
//! rest are fallbacks), ZSC_TOKEN, ZSC_TLS_CA (optional PEM path), ZSC_MAX_STALENESS_MS (2000),
//! ZSC_MAX_CLOCK_SKEW_MS (250), ZSC_CACHE_CAPACITY (10000). stdin: `verify EMAIL KEY`, `stats`,
//! `quit`; stdout: one answer line per request, flushed. Logs go to stderr, never a secret.
//!
//! ```text
//! ZSC_URLS=http://127.0.0.1:50051 ZSC_TOKEN="$DESK_TOKEN" cargo run --example verifier_line
//! ```

use std::{
    io::{BufRead, Write},
    num::NonZeroUsize,
    time::Duration,
};

use tonic::Code;
use zsc::verifier::{Verifier, VerifierConfig, VerifierStats, VerifyError};

/// How long one `verify` may wait for the server before it answers UNAVAILABLE: the Verifier
/// sets no deadline of its own, and a paused server or a path that holds bytes back would
/// otherwise hold the answer until HTTP/2 keepalive gives up (about 10 s).
const VERIFY_DEADLINE: Duration = Duration::from_secs(2);

fn env_ms(name: &str, default: u64) -> Result<Duration, String> {
    env_number(name, default).map(Duration::from_millis)
}

fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{name} is not a number")),
        Err(_) => Ok(default),
    }
}

fn config() -> Result<VerifierConfig, String> {
    let urls = std::env::var("ZSC_URLS").map_err(|_| "set ZSC_URLS".to_owned())?;
    let token = std::env::var("ZSC_TOKEN").map_err(|_| "set ZSC_TOKEN".to_owned())?;
    let mut urls = urls.split(',').map(str::trim).filter(|u| !u.is_empty());
    let first = urls.next().ok_or("ZSC_URLS names no server")?;
    let mut config = VerifierConfig::new(first, token);
    config.fallback_urls = urls.map(str::to_owned).collect();
    if let Ok(path) = std::env::var("ZSC_TLS_CA") {
        config.tls_ca =
            Some(std::fs::read(&path).map_err(|e| format!("cannot read ZSC_TLS_CA {path}: {e}"))?);
    }
    config.max_staleness = env_ms("ZSC_MAX_STALENESS_MS", 2000)?;
    config.max_clock_skew = env_ms("ZSC_MAX_CLOCK_SKEW_MS", 250)?;
    let capacity = env_number("ZSC_CACHE_CAPACITY", 10_000)? as usize;
    config.cache_capacity =
        NonZeroUsize::new(capacity).ok_or("ZSC_CACHE_CAPACITY must be above 0")?;
    Ok(config)
}

/// The protocol's answer to one `verify`.
async fn verify(verifier: &Verifier, email: &str, key: &str) -> String {
    let outcome = tokio::time::timeout(VERIFY_DEADLINE, verifier.verify(email, key)).await;
    match outcome {
        Ok(Ok(verified)) => format!("ACCEPT {} {}", verified.org_id, verified.key_id),
        Ok(Err(VerifyError::Rejected | VerifyError::Malformed(_))) => "REJECT".to_owned(),
        // The codes by which the server says "not valid", should one reach here: reject. Every
        // other code (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ...) fails closed.
        Ok(Err(VerifyError::Unavailable(status))) => match status.code() {
            Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::FailedPrecondition => "REJECT".to_owned(),
            code => {
                eprintln!("verify: fail closed on {code}: {}", status.message());
                "UNAVAILABLE".to_owned()
            }
        },
        Err(_) => {
            eprintln!(
                "verify: no answer within {}; fail closed",
                zsc::domain::shown::duration(VERIFY_DEADLINE)
            );
            "UNAVAILABLE".to_owned()
        }
    }
}

/// `VerifierStats` as the protocol's one line of JSON (no JSON crate: the values are numbers,
/// booleans and a store id, which is hex).
fn stats_json(stats: &VerifierStats) -> String {
    let applied = stats
        .applied_sequence
        .map_or("null".to_owned(), |s| s.to_string());
    let store_id = stats.store_id.as_ref().map_or("null".to_owned(), |id| {
        format!("\"{}\"", id.replace('\\', "\\\\").replace('"', "\\\""))
    });
    format!(
        "{{\"hits\":{},\"misses\":{},\"cached_keys\":{},\"applied_sequence\":{applied},\"store_id\":{store_id},\"connected\":{},\"fresh\":{},\"flushes\":{}}}",
        stats.hits, stats.misses, stats.cached_keys, stats.connected, stats.fresh, stats.flushes
    )
}

/// stdin's lines, read on a thread of their own (tokio's stdin needs a feature the crate does
/// not enable, and a blocking read must not hold a runtime thread).
fn requests() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (send, receive) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if send.blocking_send(line).is_err() {
                return;
            }
        }
    });
    receive
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let verifier = Verifier::start(config()?)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "READY")?;
    stdout.flush()?;
    let mut requests = requests();
    while let Some(line) = requests.recv().await {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["verify", email, key] => verify(&verifier, email, key).await,
            ["stats"] => stats_json(&verifier.stats()),
            ["quit"] => break,
            [] => "ERROR empty request".to_owned(),
            [command, ..] => format!("ERROR unknown request `{command}` or wrong arguments"),
        };
        writeln!(stdout, "{answer}")?;
        stdout.flush()?;
    }
    drop(verifier);
    Ok(())
}
