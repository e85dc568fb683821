//! The one way to start zsc: [`Server::open`] then [`Server::run`]. `main` and every test
//! go through here, so tests exercise exactly what production runs.

mod confirmations;
mod fault;
mod routes;
mod tasks;

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::accept::Accept;
use crate::api::{Limits, WatchConfig};
use crate::domain::{Error, Result};
use crate::metrics::Metrics;
use crate::shutdown::{ConnectionLimits, Shutdown};
use crate::store::{Store, StoreOptions, OPERATOR_TOKEN_FILE};
use crate::telemetry::Throttle;
use crate::tls::ServerTls;
pub use crate::tls::TlsFiles;

/// How long to wait for connections to close once they are told to, after the grace period.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

// The defaults of `zsc serve`, written once: its flags show these, and `Config::new` uses them.
// The limits' defaults are `api::DEFAULT_LIMITS`.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_EVENT_RETENTION_COUNT: u64 = 1_000_000;
pub const DEFAULT_EVENT_RETENTION_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_AUDIT_RETENTION_COUNT: u64 = 1_000_000;
pub const DEFAULT_AUDIT_RETENTION_AGE: Duration = Duration::from_secs(365 * 24 * 3600);
pub const DEFAULT_USAGE_SAVE_INTERVAL: Duration = Duration::from_secs(60);

/// Everything `zsc serve` can be told.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Where the store lives when it is not sled in `data_dir`: `etcd://HOST:PORT[,...][/PREFIX]`
    /// (needs a build with the `etcd` feature). The data dir then only receives the
    /// operator token, on the replica that initialised the store.
    pub store_url: Option<String>,
    pub store: StoreOptions,
    pub watch: WatchConfig,
    /// Keep at least this many revocation events...
    pub event_retention_count: u64,
    /// ...and at least the events of this long ago; older ones beyond both bounds are pruned.
    pub event_retention_age: Duration,
    /// Keep at least this many audit entries...
    pub audit_retention_count: u64,
    /// ...and at least the entries of this long ago; older ones beyond both bounds are pruned.
    pub audit_retention_age: Duration,
    /// How often the pruner runs.
    pub prune_interval: Duration,
    /// How often key usage counted in memory is saved (and at shutdown): a crash loses at
    /// most this long of counts.
    pub usage_save_interval: Duration,
    /// How long shutdown waits for in-flight RPCs before giving up on them.
    pub shutdown_grace: Duration,
    /// Where to serve Prometheus metrics (`/metrics`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// A plaintext listener serving only gRPC health, for probes that cannot speak TLS.
    pub health_listen: Option<SocketAddr>,
    /// Serve TLS (and, with a client CA, require client certificates).
    pub tls: Option<TlsFiles>,
    /// What one client may take: connections, streams, message size, timeouts.
    pub limits: Limits,
    /// Log a line for every successful read call too (by default only mutations, failures
    /// and slow calls get one; reads are logged at debug level).
    pub log_reads: bool,
    /// Per-caller rate limits (`api/rate.rs`); off by default.
    pub rate_limits: crate::api::RateLimits,
}

impl Config {
    /// Production defaults for a data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            store_url: None,
            store: StoreOptions::default(),
            watch: WatchConfig {
                heartbeat: DEFAULT_HEARTBEAT,
                stall_timeout: DEFAULT_STALL_TIMEOUT,
                max_subscribers: crate::api::DEFAULT_MAX_SUBSCRIBERS,
                max_subscribers_per_account: crate::api::DEFAULT_MAX_SUBSCRIBERS_PER_ACCOUNT,
            },
            event_retention_count: DEFAULT_EVENT_RETENTION_COUNT,
            event_retention_age: DEFAULT_EVENT_RETENTION_AGE,
            audit_retention_count: DEFAULT_AUDIT_RETENTION_COUNT,
            audit_retention_age: DEFAULT_AUDIT_RETENTION_AGE,
            prune_interval: Duration::from_secs(60),
            usage_save_interval: DEFAULT_USAGE_SAVE_INTERVAL,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            metrics_listen: None,
            health_listen: None,
            tls: None,
            limits: Limits::default(),
            log_reads: false,
            rate_limits: Default::default(),
        }
    }
}

pub struct Server {
    config: Config,
    store: Store,
    tls: Option<ServerTls>,
    metrics_listener: Option<std::net::TcpListener>,
    health_listener: Option<std::net::TcpListener>,
}

/// Binds an optional side listener at open time, so that its address is known (and a port
/// clash fails) before serving starts.
fn bind(addr: Option<SocketAddr>, what: &str) -> Result<Option<std::net::TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        Error::FailedPrecondition(format!("cannot listen on {addr} for {what}: {e}"))
    })?;
    listener.set_nonblocking(true).map_err(Error::internal)?;
    Ok(Some(listener))
}

fn into_tokio(listener: Option<std::net::TcpListener>) -> Result<Option<TcpListener>> {
    listener
        .map(TcpListener::from_std)
        .transpose()
        .map_err(Error::internal)
}

impl Server {
    /// Opens the store: sled in the data dir, or (with `store_url`) a store on etcd.
    pub async fn connect(config: Config) -> Result<Server> {
        let Some(url) = config.store_url.clone() else {
            return Server::open(config);
        };
        // Local mistakes (unreadable TLS files, a taken port) are reported before the cluster
        // is contacted.
        let local = Local::prepare(&config)?;
        let started = std::time::Instant::now();
        let opened = open_remote(&url, &config.data_dir).await?;
        Ok(local.serve_store(config, opened, started.elapsed()))
    }

    /// Opens the data dir (creating it and the operator token on first start). Fails at once
    /// if another process has it open.
    pub fn open(config: Config) -> Result<Server> {
        if config.store_url.is_some() {
            return Err(Error::FailedPrecondition(
                "a store URL needs Server::connect".into(),
            ));
        }
        let local = Local::prepare(&config)?;
        let started = std::time::Instant::now();
        let opened = Store::open(&config.data_dir, &config.store)?;
        Ok(local.serve_store(config, opened, started.elapsed()))
    }
}

/// What a server needs from this machine besides its store: checked before the store is
/// opened, so that a bad flag changes nothing.
struct Local {
    tls: Option<ServerTls>,
    metrics_listener: Option<std::net::TcpListener>,
    health_listener: Option<std::net::TcpListener>,
}

impl Local {
    fn prepare(config: &Config) -> Result<Local> {
        let tls = config
            .tls
            .clone()
            .map(|files| ServerTls::load(files, config.limits.handshake_timeout))
            .transpose()?;
        Ok(Local {
            tls,
            metrics_listener: bind(config.metrics_listen, "metrics")?,
            health_listener: bind(config.health_listen, "health")?,
        })
    }

    /// `took`: how long opening the store took (on sled, its recovery and the validation
    /// view's build, each logged at debug level).
    fn serve_store(
        self,
        config: Config,
        opened: crate::store::Opened,
        took: std::time::Duration,
    ) -> Server {
        let Local {
            tls,
            metrics_listener,
            health_listener,
        } = self;
        if opened.created {
            tracing::info!(
                path = %config.data_dir.join(OPERATOR_TOKEN_FILE).display(),
                "new data dir: the operator token was written to this file (mode 0600)"
            );
        }
        let (store_id, took_ms) = (opened.store.store_id(), took.as_millis() as u64);
        match &config.store_url {
            Some(url) => tracing::info!(store = %url, store_id, took_ms, "store open"),
            None => {
                tracing::info!(data_dir = %config.data_dir.display(), store_id, took_ms, "store open")
            }
        }
        Server {
            config,
            store: opened.store,
            tls,
            metrics_listener,
            health_listener,
        }
    }
}

impl Server {
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where metrics are served, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Where the plaintext health endpoint is, when `health_listen` is set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then: health goes NOT_SERVING, streams get a last
    /// checkpoint and end UNAVAILABLE, in-flight RPCs get `shutdown_grace` to finish, and the
    /// database is flushed.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<()> {
        let Server {
            config,
            store,
            tls,
            metrics_listener,
            health_listener,
        } = self;
        let stopping = Shutdown::default();
        let metrics = Metrics::new(tls.is_some());
        // One budget for every line a client can cause at will.
        let refusals = Throttle::default();
        let accept = accept_path(&config.limits, &stopping, &refusals);
        let (health, health_service) = routes::health(config.limits.max_message_bytes).await;
        let shared = routes::Shared {
            store: &store,
            metrics: &metrics,
            refusals: &refusals,
            stopping: &stopping,
        };
        let side_listeners = [metrics_listener, health_listener];
        let side_tasks = side_tasks(
            &config,
            shared,
            &accept,
            tls.as_ref(),
            &health,
            health_service.clone(),
            side_listeners,
        )?;
        let router = routes::router(&config, shared, health_service)?;
        let (signal, storage_failure) = stop_signal(shutdown, &config, &store, health, &stopping);
        let local = listener.local_addr().map_err(Error::internal)?;
        tracing::info!(listen = %local, "zsc serving");
        let incoming = Accept { tls, ..accept }.incoming(listener);
        let serve = router.serve_with_incoming_shutdown(incoming, signal);
        let outcome = within_grace(serve, &stopping, config.shutdown_grace).await;
        drain(&store, &stopping, side_tasks, &refusals, storage_failure).await?;
        outcome
    }
}

/// The one accept path every listener's connections pass, with the connection limits.
fn accept_path(limits: &Limits, stopping: &Shutdown, refusals: &Throttle) -> Accept {
    let connection_limits = ConnectionLimits {
        max_connections: limits.max_connections,
        handshake_timeout: limits.handshake_timeout,
    };
    Accept {
        shutdown: stopping.clone(),
        limits: Some(connection_limits),
        refusals: refusals.clone(),
        tls: None,
    }
}

/// Everything that runs beside the gRPC listener until shutdown: the periodic jobs, the
/// metrics and health listeners (`[metrics, health]`), the TLS reload, and on a replica the
/// health status following whether its cluster can be reached.
fn side_tasks(
    config: &Config,
    shared: routes::Shared<'_>,
    accept: &Accept,
    tls: Option<&ServerTls>,
    health: &HealthReporter,
    health_service: routes::HealthService,
    [metrics_listener, health_listener]: [Option<std::net::TcpListener>; 2],
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let routes::Shared {
        store,
        metrics,
        refusals,
        stopping,
    } = shared;
    let mut tasks = tasks::periodic(config, store, refusals, stopping);
    tasks.push(confirmations::start(store, metrics, stopping));
    let listener = into_tokio(metrics_listener)?;
    tasks.extend(tasks::metrics_listener(
        listener,
        accept,
        store,
        &config.data_dir,
        metrics,
        stopping,
    )?);
    let listener = into_tokio(health_listener)?;
    tasks.extend(tasks::health_listener(
        listener,
        config,
        health_service,
        accept,
        stopping,
    )?);
    if let Some(tls) = tls {
        let reload = tls
            .clone()
            .reload_forever(metrics.clone(), stopping.clone());
        tasks.push(tokio::spawn(reload));
    }
    if store.is_replica() {
        tasks.push(tokio::spawn(fault::serve_while_reachable(
            store.clone(),
            health.clone(),
            routes::HEALTH_NAMES.to_vec(),
            stopping.clone(),
        )));
    }
    Ok(tasks)
}

/// Completes when the server should stop (told to, or its storage failed and must be
/// reopened: then the cause is sent on the returned receiver), after health has gone
/// NOT_SERVING and the shutdown has begun.
fn stop_signal(
    shutdown: impl Future<Output = ()> + Send,
    config: &Config,
    store: &Store,
    health: HealthReporter,
    stopping: &Shutdown,
) -> (impl Future<Output = ()> + Send, oneshot::Receiver<String>) {
    let (failed, storage_failure) = oneshot::channel();
    let names = routes::HEALTH_NAMES.to_vec();
    let storage_failed = fault::restart_needed(
        store.clone(),
        health.clone(),
        names,
        config.data_dir.clone(),
    );
    let stopping = stopping.clone();
    let signal = async move {
        tokio::select! {
            () = shutdown => {},
            cause = storage_failed => {
                tracing::error!("the data dir takes writes again; stopping so that zsc restarts on a clean open");
                let _ = failed.send(cause);
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
        routes::set_health(&health, ServingStatus::NotServing).await;
        stopping.begin();
    };
    (signal, storage_failure)
}

/// Serves until `serve` ends, or until `grace` after the shutdown began.
async fn within_grace(
    serve: impl Future<Output = std::result::Result<(), tonic::transport::Error>>,
    stopping: &Shutdown,
    grace: Duration,
) -> Result<()> {
    let grace_expired = async {
        stopping.begun().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = serve => served.map_err(Error::internal),
        () = grace_expired => {
            tracing::warn!(grace = ?grace, "in-flight requests did not finish in time; stopping anyway");
            Ok(())
        }
    }
}

/// The end: every connection and side task closed, then the last save and flush (unless the
/// storage failed, which is the error returned).
async fn drain(
    store: &Store,
    stopping: &Shutdown,
    side_tasks: Vec<tokio::task::JoinHandle<()>>,
    refusals: &Throttle,
    mut storage_failure: oneshot::Receiver<String>,
) -> Result<()> {
    stopping.begin();
    // Whatever the grace period left open (long-lived streams, idle keep-alives) ends now.
    stopping.close_all(CLOSE_WAIT).await;
    for task in side_tasks {
        let _ = task.await;
    }
    refusals.report();
    if let Ok(cause) = storage_failure.try_recv() {
        return Err(Error::FailedPrecondition(format!(
            "storage failed ({cause}) and cannot take writes until zsc is restarted: \
             restart it (acknowledged changes are on disk)"
        )));
    }
    store.save_usage().await?;
    store.flush_confirmations().await?;
    store.sync().await?;
    tracing::info!("stopped; database flushed");
    Ok(())
}

/// Opens a store given by URL (`etcd://...`).
#[cfg(feature = "etcd")]
pub async fn open_remote(url: &str, data_dir: &Path) -> Result<crate::store::Opened> {
    let url: crate::store::EtcdUrl = url.parse().map_err(Error::invalid)?;
    Store::open_etcd(&url, data_dir).await
}

/// Opens a store given by URL: this build has no etcd support.
#[cfg(not(feature = "etcd"))]
pub async fn open_remote(url: &str, _: &Path) -> Result<crate::store::Opened> {
    Err(Error::FailedPrecondition(format!(
        "--store {url}: this zsc was built without etcd support (cargo feature `etcd`)"
    )))
}
