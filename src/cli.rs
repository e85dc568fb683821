//! The command line: `zsc serve` and the operator commands. Every `serve` flag can also be set
//! from a ZSC_* environment variable. The defaults are the library's constants
//! (`server::DEFAULT_*`, `api::DEFAULT_LIMITS`), so `--help` shows exactly what `Config::new`
//! uses.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use humantime::Duration;

use crate::api::{Limits, DEFAULT_LIMITS};
use crate::domain::{Error, Result};
use crate::server::{
    Config, TlsFiles, DEFAULT_AUDIT_RETENTION_AGE, DEFAULT_AUDIT_RETENTION_COUNT,
    DEFAULT_EVENT_RETENTION_AGE, DEFAULT_EVENT_RETENTION_COUNT, DEFAULT_HEARTBEAT,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_STALL_TIMEOUT, DEFAULT_USAGE_SAVE_INTERVAL,
};
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
    /// Write a backup of a data dir to a file (server stopped), or with --url of a running
    /// server.
    Backup {
        #[arg(long, env = "ZSC_DATA_DIR", default_value = "./zsc-data")]
        data_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Back up a store on etcd instead (etcd://HOST:PORT[,...][/PREFIX]); replicas may keep running.
        #[arg(long, env = "ZSC_STORE", conflicts_with = "url")]
        store: Option<String>,
        /// Back up the running server at this URL (http://host:port, or https:// with
        /// --tls-ca), sled or etcd, as an operator: the token is read from --token-file, or
        /// else from the ZSC_TOKEN environment variable (never from the command line).
        #[arg(long)]
        url: Option<String>,
        /// A file holding the operator token, for --url.
        #[arg(long, env = "ZSC_TOKEN_FILE", requires = "url")]
        token_file: Option<PathBuf>,
        /// CA certificate (PEM) to trust for an https --url.
        #[arg(long, requires = "url")]
        tls_ca: Option<PathBuf>,
    },
    /// Restore a backup into a new data dir. The restored store gets a new store id.
    Restore {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long, env = "ZSC_DATA_DIR", default_value = "./zsc-data")]
        data_dir: PathBuf,
        /// Restore into an empty prefix on etcd instead (etcd://HOST:PORT[,...][/PREFIX]): a
        /// backup of a data dir restored so is the migration from one node to replicas.
        #[arg(long, env = "ZSC_STORE")]
        store: Option<String>,
    },
    /// Mint a new token for the `operator` account (server stopped): the recovery path when
    /// the last operator token is lost. Written to DATA_DIR/operator.token (mode 0600).
    OperatorToken {
        #[arg(long, env = "ZSC_DATA_DIR", default_value = "./zsc-data")]
        data_dir: PathBuf,
        /// Mint it for a store on etcd instead (etcd://HOST:PORT[,...][/PREFIX]), initialising
        /// the store if its prefix is empty; replicas may keep running. The token is written to
        /// DATA_DIR/operator.token.
        #[arg(long, env = "ZSC_STORE")]
        store: Option<String>,
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
    /// Address to listen on. Off loopback it needs TLS (--tls-cert) or --allow-plaintext.
    #[arg(long, env = "ZSC_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Serve plain text on a non-loopback --listen address: bearer tokens and keys then cross
    /// the network readable. Without it, zsc refuses to start that way.
    #[arg(long, env = "ZSC_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,

    /// Directory holding the database and, after the first start, operator.token (mode 0600).
    #[arg(long, env = "ZSC_DATA_DIR", default_value = "./zsc-data")]
    pub data_dir: PathBuf,

    /// Keep the store on etcd instead of sled in --data-dir: etcd://HOST:PORT[,HOST:PORT...][/PREFIX]
    /// (default prefix /zsc). Replicas given the same URL serve the same store.
    #[arg(long, env = "ZSC_STORE")]
    pub store: Option<String>,

    /// Log format; RUST_LOG sets the level filter (default info).
    #[arg(long, env = "ZSC_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Export a span per RPC over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317),
    /// continuing an incoming W3C traceparent. Off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Log a line for every successful read (ValidateKey, Get*, List*, Health/Check) too; by
    /// default they are logged at debug level only.
    #[arg(long, env = "ZSC_LOG_READS")]
    pub log_reads: bool,

    /// How often an idle revocation stream gets a checkpoint (e.g. 1s, 500ms).
    #[arg(long, env = "ZSC_HEARTBEAT_INTERVAL", default_value_t = DEFAULT_HEARTBEAT.into())]
    pub heartbeat_interval: Duration,

    /// Keep at least this many revocation events.
    #[arg(long, env = "ZSC_EVENT_RETENTION_COUNT", default_value_t = DEFAULT_EVENT_RETENTION_COUNT)]
    pub event_retention_count: u64,

    /// Keep revocation events at least this long (e.g. 7d, 12h).
    #[arg(long, env = "ZSC_EVENT_RETENTION_AGE", default_value_t = DEFAULT_EVENT_RETENTION_AGE.into())]
    pub event_retention_age: Duration,

    /// Keep at least this many audit entries.
    #[arg(long, env = "ZSC_AUDIT_RETENTION_COUNT", default_value_t = DEFAULT_AUDIT_RETENTION_COUNT)]
    pub audit_retention_count: u64,

    /// Keep audit entries at least this long (e.g. 365d).
    #[arg(long, env = "ZSC_AUDIT_RETENTION_AGE", default_value_t = DEFAULT_AUDIT_RETENTION_AGE.into())]
    pub audit_retention_age: Duration,

    /// How often key usage counted in memory is saved; a crash loses at most this long of counts.
    #[arg(long, env = "ZSC_USAGE_SAVE_INTERVAL", default_value_t = DEFAULT_USAGE_SAVE_INTERVAL.into())]
    pub usage_save_interval: Duration,

    /// sled's page cache, in bytes. The server's memory grows past it (sled keeps pages larger in
    /// memory than it counts them); see docs/performance.md, row 5.
    #[arg(long, env = "ZSC_CACHE_BYTES", default_value_t = crate::store::DEFAULT_CACHE_BYTES)]
    pub cache_bytes: u64,

    /// End a revocation stream whose subscriber reads nothing for this long (it resumes from its cursor).
    #[arg(long, env = "ZSC_SUBSCRIBER_STALL_TIMEOUT", default_value_t = DEFAULT_STALL_TIMEOUT.into())]
    pub subscriber_stall_timeout: Duration,

    /// Revocation streams open at once, in all (RESOURCE_EXHAUSTED past it).
    #[arg(long, env = "ZSC_MAX_SUBSCRIBERS", default_value_t = crate::api::DEFAULT_MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,

    /// Revocation streams open at once per service account (RESOURCE_EXHAUSTED past it).
    #[arg(long, env = "ZSC_MAX_SUBSCRIBERS_PER_ACCOUNT", default_value_t = crate::api::DEFAULT_MAX_SUBSCRIBERS_PER_ACCOUNT)]
    pub max_subscribers_per_account: usize,

    /// Calls each consumer account may make, per replica (N/s, N/m or N/h, bursts of N); off
    /// unless set. Past it: RESOURCE_EXHAUSTED with a RetryInfo.
    #[arg(long, env = "ZSC_RATE_LIMIT")]
    pub rate_limit: Option<crate::api::Rate>,

    /// One account's own limit, any role (ACCOUNT=RATE, e.g. desk=5000/s); repeat, or separate
    /// with commas.
    #[arg(long, env = "ZSC_RATE_LIMIT_ACCOUNT", value_delimiter = ',')]
    pub rate_limit_account: Vec<crate::api::AccountRate>,

    /// Failed authentications (UNAUTHENTICATED calls) per client IP address, per replica; past
    /// it such calls are RESOURCE_EXHAUSTED. A valid token is never refused by it. Off unless set.
    #[arg(long, env = "ZSC_AUTH_FAILURE_LIMIT")]
    pub auth_failure_limit: Option<crate::api::Rate>,

    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "ZSC_SHUTDOWN_GRACE", default_value_t = DEFAULT_SHUTDOWN_GRACE.into())]
    pub shutdown_grace: Duration,

    /// The largest request message, in bytes; a larger one is answered RESOURCE_EXHAUSTED.
    #[arg(long, env = "ZSC_MAX_MESSAGE_SIZE", default_value_t = DEFAULT_LIMITS.max_message_bytes as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_message_size: u64,

    /// Streams one HTTP/2 connection may have open at once; a client's streams beyond it are refused.
    #[arg(long, env = "ZSC_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_LIMITS.max_concurrent_streams,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// Open connections per listener; a connection beyond it is closed as soon as it is accepted.
    #[arg(long, env = "ZSC_MAX_CONNECTIONS", default_value_t = DEFAULT_LIMITS.max_connections as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Close a connection (GOAWAY) whose client makes the server reset this many streams for errors.
    #[arg(long, env = "ZSC_MAX_LOCAL_ERROR_RESETS", default_value_t = DEFAULT_LIMITS.max_local_error_resets as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_local_error_resets: u64,

    /// A call that has not started its response within this is answered DEADLINE_EXCEEDED
    /// (unary calls; a stream, once started, is not limited).
    #[arg(long, env = "ZSC_REQUEST_TIMEOUT", default_value_t = DEFAULT_LIMITS.request_timeout.into())]
    pub request_timeout: Duration,

    /// A request body that sends nothing for this long is ended DEADLINE_EXCEEDED.
    #[arg(long, env = "ZSC_BODY_READ_TIMEOUT", default_value_t = DEFAULT_LIMITS.body_read_timeout.into())]
    pub body_read_timeout: Duration,

    /// A new connection that has not sent its TLS handshake or HTTP/2 preface within this is closed.
    #[arg(long, env = "ZSC_HANDSHAKE_TIMEOUT", default_value_t = DEFAULT_LIMITS.handshake_timeout.into())]
    pub handshake_timeout: Duration,

    /// HTTP/2 PING interval on a connection...
    #[arg(long, env = "ZSC_KEEPALIVE_INTERVAL", default_value_t = DEFAULT_LIMITS.keepalive_interval.into())]
    pub keepalive_interval: Duration,

    /// ...and how long a PING may go unanswered before the connection is closed.
    #[arg(long, env = "ZSC_KEEPALIVE_TIMEOUT", default_value_t = DEFAULT_LIMITS.keepalive_timeout.into())]
    pub keepalive_timeout: Duration,

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
    /// The server's config; refuses plain text on a non-loopback address unless allowed.
    pub fn config(&self) -> Result<Config> {
        let tls = self.tls_cert.is_some() && self.tls_key.is_some();
        if !tls && !self.allow_plaintext && !self.listen.ip().is_loopback() {
            return Err(Error::FailedPrecondition(format!(
                "refusing to serve plain text on {}, a non-loopback address: bearer tokens and keys \
                 would cross the network readable. Give --tls-cert and --tls-key, or listen on \
                 loopback, or pass --allow-plaintext (ZSC_ALLOW_PLAINTEXT=true) if something else \
                 encrypts the traffic",
                self.listen
            )));
        }
        let mut config = Config::new(&self.data_dir);
        config.store_url = self.store.clone();
        config.watch.heartbeat = self.heartbeat_interval.into();
        config.watch.stall_timeout = self.subscriber_stall_timeout.into();
        config.watch.max_subscribers = self.max_subscribers;
        config.watch.max_subscribers_per_account = self.max_subscribers_per_account;
        config.event_retention_count = self.event_retention_count;
        config.event_retention_age = self.event_retention_age.into();
        config.audit_retention_count = self.audit_retention_count;
        config.audit_retention_age = self.audit_retention_age.into();
        config.usage_save_interval = self.usage_save_interval.into();
        config.store.cache_bytes = self.cache_bytes;
        config.shutdown_grace = self.shutdown_grace.into();
        config.log_reads = self.log_reads;
        config.rate_limits = crate::api::RateLimits {
            consumer: self.rate_limit,
            accounts: self.rate_limit_account.clone(),
            auth_failures: self.auth_failure_limit,
        };
        config.limits = Limits {
            max_message_bytes: count(self.max_message_size),
            max_concurrent_streams: self.max_concurrent_streams,
            max_connections: count(self.max_connections),
            max_local_error_resets: count(self.max_local_error_resets),
            request_timeout: self.request_timeout.into(),
            body_read_timeout: self.body_read_timeout.into(),
            handshake_timeout: self.handshake_timeout.into(),
            keepalive_interval: self.keepalive_interval.into(),
            keepalive_timeout: self.keepalive_timeout.into(),
        };
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
        Ok(config)
    }
}

/// A count from the command line, saturated to what this machine can address.
fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["zsc", "serve"].iter().chain(args)).expect("parses");
        match cli.command {
            Command::Serve(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_flag_defaults_are_the_library_defaults() {
        let config = serve(&["--data-dir", "d"]).config().unwrap();
        // Debug shows every field, so a default that drifts from Config::new shows up here.
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::new("d")));
    }

    #[test]
    fn cache_bytes_sets_the_store_cache() {
        let config = serve(&["--cache-bytes", "16777216"]).config().unwrap();
        assert_eq!(config.store.cache_bytes, 16 << 20);
    }

    #[test]
    fn plain_text_off_loopback_needs_tls_or_an_explicit_allow() {
        for listen in ["0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051"] {
            let error = serve(&["--listen", listen]).config().unwrap_err();
            assert!(error.to_string().contains("--allow-plaintext"), "{error}");
            serve(&["--listen", listen, "--allow-plaintext"])
                .config()
                .unwrap();
            serve(&["--listen", listen, "--tls-cert", "c", "--tls-key", "k"])
                .config()
                .unwrap();
        }
        for listen in ["127.0.0.1:0", "127.0.0.2:50051", "[::1]:50051"] {
            serve(&["--listen", listen]).config().unwrap();
        }
    }
}
