//! The command line: `zsc serve` and its flags, each also readable from a ZSC_* variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::server::Config;
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
    Serve(ServeArgs),
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

    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "ZSC_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl ServeArgs {
    pub fn config(&self) -> Config {
        let mut config = Config::new(&self.data_dir);
        config.watch.heartbeat = self.heartbeat_interval;
        config.watch.stall_timeout = self.subscriber_stall_timeout;
        config.event_retention_count = self.event_retention_count;
        config.event_retention_age = self.event_retention_age;
        config.shutdown_grace = self.shutdown_grace;
        config
    }
}
