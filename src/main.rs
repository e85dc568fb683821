//! `zsc`: parses the command line and calls the library. See `src/lib.rs` for the map.

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Parser;
use zsc::cli::{Cli, Command, ServeArgs};
use zsc::domain::{AccountToken, Error, Result};
use zsc::progress::{self, Progress};
use zsc::store::{self, BackupReport, Done, Store, StoreOptions, OPERATOR_TOKEN_FILE};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (log_format, otlp_endpoint) = match &cli.command {
        Command::Serve(args) => (args.log_format, args.otlp_endpoint.clone()),
        _ => (zsc::telemetry::LogFormat::Text, None),
    };
    let exporter = match zsc::telemetry::init(log_format, otlp_endpoint.as_deref()) {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("zsc: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Backup {
            out,
            url: Some(url),
            token_file,
            tls_ca,
            ..
        } => online_backup(&url, token_file.as_deref(), tls_ca.as_deref(), &out).await,
        Command::Backup {
            data_dir,
            out,
            store: Some(url),
            ..
        } => {
            let _ = data_dir;
            let started = Instant::now();
            let report = remote::backup(&url, &out).await;
            report.map(|report| backed_up(&report, started.elapsed(), &out))
        }
        Command::Backup {
            data_dir,
            out,
            store: None,
            ..
        } => {
            let progress = Progress::backup();
            let report =
                store::backup_reporting(&data_dir, &out, &mut |done| progress.update(done));
            let took = progress.finish();
            report.map(|report| backed_up(&report, took, &out))
        }
        Command::Restore {
            input,
            store: Some(url),
            ..
        } => {
            let started = Instant::now();
            let report = remote::restore(&input, &url).await;
            report.map(|report| restored(&report, started.elapsed(), &url))
        }
        Command::Restore {
            input,
            data_dir,
            store: None,
        } => {
            let size = std::fs::metadata(&input).map_or(0, |m| m.len());
            let progress = Progress::restore(size);
            let report =
                store::restore_reporting(&input, &data_dir, &mut |done| progress.update(done));
            let took = progress.finish();
            report.map(|report| restored(&report, took, &data_dir.display().to_string()))
        }
        Command::OperatorToken {
            data_dir,
            store: None,
        } => operator_token(&data_dir).await,
        Command::OperatorToken {
            data_dir,
            store: Some(url),
        } => remote::operator_token(&url, &data_dir).await,
        Command::HealthCheck {
            url,
            service,
            tls_ca,
        } => return health_check(&url, &service, tls_ca.as_deref()).await,
    };
    if let Some(exporter) = exporter {
        // Sends the spans still queued; blocking, so off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("zsc: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The closing line of `zsc backup`: what it wrote, and how fast.
fn backed_up(report: &BackupReport, took: Duration, out: &Path) {
    let done = Done {
        entries: report.entries,
        bytes: report.bytes,
    };
    println!(
        "backed up {} to {} (revocation log head {}, audit head {}, store {}; writers paused {:.1} ms)",
        progress::summary(done, took),
        out.display(),
        report.head,
        report.audit_head,
        report.store_id,
        report.paused.as_secs_f64() * 1e3
    );
}

/// `zsc backup --url`: a backup of a running server, as its operator.
async fn online_backup(
    url: &str,
    token_file: Option<&Path>,
    tls_ca: Option<&Path>,
    out: &Path,
) -> Result<()> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
    };
    let token = match (token_file, std::env::var("ZSC_TOKEN")) {
        (Some(path), _) => String::from_utf8_lossy(&read(path)?).trim().to_owned(),
        (None, Ok(token)) => token,
        (None, Err(_)) => {
            return Err(Error::invalid(
                "--url needs the operator token: give --token-file PATH (or ZSC_TOKEN_FILE), or set ZSC_TOKEN",
            ))
        }
    };
    let tls_ca = tls_ca.map(read).transpose()?;
    let from = zsc::backup_client::Source {
        url,
        token: &token,
        tls_ca: tls_ca.as_deref(),
    };
    let bar = std::cell::OnceCell::new();
    let started = Instant::now();
    let report = zsc::backup_client::backup(
        &from,
        out,
        |point| drop(bar.set(Progress::receive(point.bytes))),
        &mut |done| {
            bar.get()
                .into_iter()
                .for_each(|bar: &Progress| bar.update(done))
        },
    )
    .await;
    let took = bar.into_inner().map_or(started.elapsed(), Progress::finish);
    report.map(|report| backed_up(&report, took, out))
}

/// The closing line of `zsc restore`.
fn restored(report: &BackupReport, took: Duration, into: &str) {
    let done = Done {
        entries: report.entries,
        bytes: report.bytes,
    };
    let peak = progress::peak_memory().map_or(String::new(), |bytes| {
        format!(", peak memory {} MiB", bytes >> 20)
    });
    println!(
        "restored {} into {into} (revocation log head {}{peak}); new store id {}: subscribers must flush and resubscribe",
        progress::summary(done, took),
        report.head,
        report.store_id
    );
}

async fn serve(args: ServeArgs) -> Result<()> {
    let server = zsc::server::Server::connect(args.config()?).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::FailedPrecondition(format!("cannot listen on {}: {e}", args.listen)))?;
    server.run(listener, zsc::shutdown_signal()).await
}

async fn operator_token(data_dir: &Path) -> Result<()> {
    if !store::has_database(data_dir) {
        return Err(Error::not_found(format!(
            "no zsc database in {}",
            data_dir.display()
        )));
    }
    let store = Store::open(data_dir, &StoreOptions::default())?.store;
    // The file first: were it written after the account got the token, a failed write would
    // lose the only copy.
    let token = AccountToken::generate();
    let path = data_dir.join(OPERATOR_TOKEN_FILE);
    store::write_token_file(&path, &token)?;
    store.reset_operator_token(&token).await?;
    println!(
        "new operator token written to {} (mode 0600); the previous one no longer works",
        path.display()
    );
    Ok(())
}

/// `zsc health-check`: exit 0 when the server reports SERVING, as container health checks want.
async fn health_check(url: &str, service: &str, tls_ca: Option<&Path>) -> ExitCode {
    use tonic_health::pb::health_check_response::ServingStatus;
    match zsc::client::health(url, service, tls_ca).await {
        Ok(ServingStatus::Serving) => {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("{}", status.as_str_name());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("zsc health-check: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The offline commands on a store on etcd.
#[cfg(feature = "etcd")]
mod remote {
    use std::path::Path;

    use zsc::domain::{AccountToken, Error, Result};
    use zsc::store::{self, BackupReport, EtcdUrl, Store, OPERATOR_TOKEN_FILE};

    fn parse(url: &str) -> Result<EtcdUrl> {
        url.parse().map_err(Error::invalid)
    }

    pub async fn backup(url: &str, out: &Path) -> Result<BackupReport> {
        store::backup_etcd(&parse(url)?, out).await
    }

    pub async fn restore(input: &Path, url: &str) -> Result<BackupReport> {
        store::restore_etcd(input, &parse(url)?).await
    }

    pub async fn operator_token(url: &str, data_dir: &Path) -> Result<()> {
        let opened = Store::open_etcd(&parse(url)?, data_dir).await?;
        let token = AccountToken::generate();
        let path = data_dir.join(OPERATOR_TOKEN_FILE);
        store::write_token_file(&path, &token)?;
        opened.store.reset_operator_token(&token).await?;
        println!(
            "new operator token for {url} written to {} (mode 0600); the previous one no longer works",
            path.display()
        );
        Ok(())
    }
}

/// Without the etcd backend, a store URL is refused with a clear message.
#[cfg(not(feature = "etcd"))]
mod remote {
    use std::path::Path;

    use zsc::domain::{Error, Result};
    use zsc::store::BackupReport;

    fn unsupported<T>(url: &str) -> Result<T> {
        Err(Error::FailedPrecondition(format!(
            "--store {url}: this zsc was built without etcd support (cargo feature `etcd`)"
        )))
    }

    pub async fn backup(url: &str, _: &Path) -> Result<BackupReport> {
        unsupported(url)
    }

    pub async fn restore(_: &Path, url: &str) -> Result<BackupReport> {
        unsupported(url)
    }

    pub async fn operator_token(url: &str, _: &Path) -> Result<()> {
        unsupported(url)
    }
}
