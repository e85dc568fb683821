//! The command line: `zsc serve` and the operator commands. Every `serve` flag can also be set
//! from a ZSC_* environment variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::server::{Config, TlsFiles};
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "zsc",
    version,
    about = "The ZSC key service: service communication keys over gRPC."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API (UserService, KeyService, AccessService, health, reflection).
    Serve(Box<ServeArgs>),
    /// Write a backup of a data dir to a file (server stopped).
    Backup {
        #[arg(long, env = "ZSC_DATA_DIR", default_value = "./zsc-data")]
        data_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into a new data dir. The restored store gets a new store id.
    Restore {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long, env = "ZSC_DATA_DIR", default_value = "./zsc-data")]
        data_dir: PathBuf,
    },
    /// Mint a new token for the `operator` account (server stopped): the recovery path when
    /// the last operator token is lost. Written to DATA_DIR/operator.token (mode 0600).
    OperatorToken {
        #[arg(long, env = "ZSC_DATA_DIR", default_value = "./zsc-data")]
        data_dir: PathBuf,
    },
    /// Exit 0 if the server's gRPC health check says SERVING (for container health checks).
    HealthCheck {
        /// Server URL: http://host:port, or https://host:port with --tls-ca.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        url: String,
        /// Service to check ("" for the whole server).
        #[arg(long, default_value = "")]
        service: String,
        /// CA certificate (PEM) to trust for https URLs.
        #[arg(long)]
        tls_ca: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ZSC_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Directory holding the database and, after the first start, operator.token (mode 0600).
    #[arg(long, env = "ZSC_DATA_DIR", default_value = "./zsc-data")]
    pub data_dir: PathBuf,

    /// Log format; RUST_LOG sets the level filter (default info).
    #[arg(long, env = "ZSC_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// How often an idle revocation stream gets a checkpoint (e.g. 1s, 500ms).
    #[arg(long, env = "ZSC_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// Keep at least this many revocation events.
    #[arg(long, env = "ZSC_EVENT_RETENTION_COUNT", default_value_t = 1_000_000)]
    pub event_retention_count: u64,

    /// Keep revocation events at least this long (e.g. 7d, 12h).
    #[arg(long, env = "ZSC_EVENT_RETENTION_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub event_retention_age: Duration,

    /// End a revocation stream whose subscriber reads nothing for this long (it resumes from its cursor).
    #[arg(long, env = "ZSC_SUBSCRIBER_STALL_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub subscriber_stall_timeout: Duration,

    /// Revocation streams open at once, in all (RESOURCE_EXHAUSTED past it).
    #[arg(long, env = "ZSC_MAX_SUBSCRIBERS", default_value_t = crate::api::DEFAULT_MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,

    /// Revocation streams open at once per service account (RESOURCE_EXHAUSTED past it).
    #[arg(long, env = "ZSC_MAX_SUBSCRIBERS_PER_ACCOUNT", default_value_t = crate::api::DEFAULT_MAX_SUBSCRIBERS_PER_ACCOUNT)]
    pub max_subscribers_per_account: usize,

    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "ZSC_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Serve Prometheus metrics at http://ADDR/metrics (off unless set).
    #[arg(long, env = "ZSC_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Also serve gRPC health alone, in plaintext, here (for probes that cannot speak TLS).
    #[arg(long, env = "ZSC_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "ZSC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) for --tls-cert.
    #[arg(long, env = "ZSC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM): mutual TLS. Needs --tls-cert.
    #[arg(long, env = "ZSC_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServeArgs {
    pub fn config(&self) -> Config {
        let mut config = Config::new(&self.data_dir);
        config.watch.heartbeat = self.heartbeat_interval;
        config.watch.stall_timeout = self.subscriber_stall_timeout;
        config.watch.max_subscribers = self.max_subscribers;
        config.watch.max_subscribers_per_account = self.max_subscribers_per_account;
        config.event_retention_count = self.event_retention_count;
        config.event_retention_age = self.event_retention_age;
        config.shutdown_grace = self.shutdown_grace;
        config.metrics_listen = self.metrics_listen;
        config.health_listen = self.health_listen;
        config.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        };
        config
    }
}
