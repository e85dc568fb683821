//! A stand-in consuming service ("Desk", "Recruit", ...) built on the Verifier: it verifies
//! the admin email + ZSC key from its configuration every interval, and prints each key it
//! drops from its cache and why.
//!
//! The token and the key come from the environment (ZSC_TOKEN, ZSC_KEY) or from files
//! (--token-file, --key-file), never from the command line, which every local user can read
//! in /proc/PID/cmdline.
//!
//! ```text
//! ZSC_TOKEN="$DESK_TOKEN" ZSC_KEY="$KEY" cargo run --example subscriber -- \
//!     --service desk --url http://127.0.0.1:50051 --email ada@acme.example
//! ```

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use clap::Parser;
use zsc::verifier::{Revocation, Verifier, VerifierConfig, VerifyError};

#[derive(Parser)]
#[command(about = "A consuming service that verifies a ZSC key and follows revocations")]
struct Args {
    /// Which service this stands in for (used in the output).
    #[arg(long, default_value = "desk")]
    service: String,
    /// The zsc server; for replicas on etcd several, comma-separated: the first is followed and
    /// the others take over in turn, resuming from the cursor.
    #[arg(long, env = "ZSC_URL", default_value = "http://127.0.0.1:50051")]
    url: String,
    /// CA certificate (PEM) to trust when the URL is https://.
    #[arg(long, env = "ZSC_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// A file holding the consumer service-account token (default: the ZSC_TOKEN variable).
    #[arg(long, env = "ZSC_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The administrator's email the key was configured with.
    #[arg(long, env = "ZSC_EMAIL")]
    email: String,
    /// A file holding the ZSC key this service was configured with (default: the ZSC_KEY variable).
    #[arg(long, env = "ZSC_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// How often to verify.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this many verifications (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

/// A secret from `file` (its first line) if given, else from the environment variable `var`.
fn secret(
    file: Option<&Path>,
    var: &str,
    flag: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    match file {
        Some(path) => Ok(std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()),
        None => std::env::var(var).map_err(|_| format!("set {var}, or pass {flag}").into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let token = secret(args.token_file.as_deref(), "ZSC_TOKEN", "--token-file")?;
    let key = secret(args.key_file.as_deref(), "ZSC_KEY", "--key-file")?;
    let service = args.service.clone();
    // Several replicas, comma-separated: the first is followed, the others take over in turn.
    let mut urls = args.url.split(',').map(str::trim).filter(|u| !u.is_empty());
    let first = urls.next().ok_or("--url names no server")?;
    let mut config = VerifierConfig::new(first, &token);
    config.fallback_urls = urls.map(str::to_owned).collect();
    config.tls_ca = args.tls_ca.as_deref().map(std::fs::read).transpose()?;
    config.on_revocation = Some(Arc::new(move |r: &Revocation| {
        println!(
            "{service}: dropped key {} of org {} (owner {}): {} at sequence {}{}",
            r.key_id,
            r.org_id,
            r.owner_email,
            r.reason.as_str_name(),
            r.sequence,
            if r.was_cached {
                ", evicted from the cache"
            } else {
                ""
            }
        );
    }));
    let verifier = Verifier::start(config)?;
    // Only the first characters of the key are ever shown.
    let shown: String = key.chars().take(8).collect();
    let mut done = 0;
    loop {
        let outcome = match verifier.verify(&args.email, &key).await {
            Ok(ok) => format!(
                "valid for org {} ({}){}",
                ok.org_name,
                ok.org_id,
                if ok.cached { ", from cache" } else { "" }
            ),
            Err(VerifyError::Rejected) => "REJECTED: invalid email or key".to_owned(),
            Err(error) => format!("cannot verify: {error}"),
        };
        let stats = verifier.stats();
        println!(
            "{}: {} + {shown}...: {outcome} [{}, stream {}]",
            args.service,
            args.email,
            match stats.applied_sequence {
                Some(sequence) => format!("applied up to sequence {sequence}"),
                None => "nothing applied yet".to_owned(),
            },
            if stats.connected { "up" } else { "down" }
        );
        done += 1;
        if args.count != 0 && done >= args.count {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(args.interval) => {}
        }
    }
}
