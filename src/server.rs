//! The one way to start zsc: [`Server::open`] then [`Server::run`]. `main` and every test
//! go through here, so tests exercise exactly what production runs.

mod fault;

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::net::TcpListener;
use tonic::{
    server::NamedService,
    transport::{Certificate, Identity, ServerTlsConfig},
};
use tonic_health::ServingStatus;
use tower::ServiceBuilder;

use crate::api::{
    AccessApi, AuditApi, AuthLayer, KeyApi, KeyRoutes, Limits, ObserveLayer, RequestLimitLayer,
    Tail, UserApi, WatchConfig,
};
use crate::domain::{Error, Result};
use crate::metrics::{self, Metrics};
use crate::proto::{
    access_service_server::AccessServiceServer, audit_service_server::AuditServiceServer,
    key_service_server::KeyServiceServer, user_service_server::UserServiceServer,
    FILE_DESCRIPTOR_SET,
};
use crate::shutdown::{ConnectionLimits, Shutdown};
use crate::store::{EventLog, Store, StoreOptions, OPERATOR_TOKEN_FILE};
use crate::telemetry::Throttle;

/// Revocations the shared tail keeps in memory, encoded: a stream further behind reads the store.
const RECENT_EVENTS: usize = 4096;

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
}

/// PEM files for TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn load(&self) -> Result<ServerTlsConfig> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| {
                Error::FailedPrecondition(format!("cannot read {}: {e}", path.display()))
            })
        };
        let mut tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?));
        if let Some(ca) = &self.client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(tls)
    }
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
        }
    }
}

pub struct Server {
    config: Config,
    store: Store,
    tls: Option<ServerTlsConfig>,
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
        let opened = open_remote(&url, &config.data_dir).await?;
        Ok(local.serve_store(config, opened))
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
        let opened = Store::open(&config.data_dir, &config.store)?;
        Ok(local.serve_store(config, opened))
    }
}

/// What a server needs from this machine besides its store: checked before the store is
/// opened, so that a bad flag changes nothing.
struct Local {
    tls: Option<ServerTlsConfig>,
    metrics_listener: Option<std::net::TcpListener>,
    health_listener: Option<std::net::TcpListener>,
}

impl Local {
    fn prepare(config: &Config) -> Result<Local> {
        let tls = config
            .tls
            .as_ref()
            .map(TlsFiles::load)
            .transpose()?
            .map(|tls| tls.timeout(config.limits.handshake_timeout));
        Ok(Local {
            tls,
            metrics_listener: bind(config.metrics_listen, "metrics")?,
            health_listener: bind(config.health_listen, "health")?,
        })
    }

    fn serve_store(self, config: Config, opened: crate::store::Opened) -> Server {
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
        match &config.store_url {
            Some(url) => {
                tracing::info!(store = %url, store_id = opened.store.store_id(), "store open")
            }
            None => {
                tracing::info!(data_dir = %config.data_dir.display(), store_id = opened.store.store_id(), "store open")
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
        let metrics = Metrics::default();
        let limits = &config.limits;
        let connection_limits = ConnectionLimits {
            max_connections: limits.max_connections,
            handshake_timeout: limits.handshake_timeout,
        };
        // One budget for every line a client can cause at will.
        let refusals = Throttle::default();

        let (health, health_service) = tonic_health::server::health_reporter();
        let names = [
            "",
            <UserServiceServer<UserApi> as NamedService>::NAME,
            <KeyServiceServer<KeyApi> as NamedService>::NAME,
            <AccessServiceServer<AccessApi> as NamedService>::NAME,
            <AuditServiceServer<AuditApi> as NamedService>::NAME,
        ];
        for name in names {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        // Both reflection versions: grpcurl 1.8 and Python's grpcio speak only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let max_message = limits.max_message_bytes;
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(Error::internal)?
            .max_decoding_message_size(max_message);
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(Error::internal)?
            .max_decoding_message_size(max_message);
        let health_service = health_service.max_decoding_message_size(max_message);

        let pruner = tokio::spawn(prune_forever(
            store.clone(),
            config.clone(),
            stopping.clone(),
        ));

        let mut side_tasks = vec![
            pruner,
            tokio::spawn(save_usage_forever(
                store.clone(),
                config.usage_save_interval,
                stopping.clone(),
            )),
            tokio::spawn(report_refusals(refusals.clone(), stopping.clone())),
        ];
        if let Some(listener) = into_tokio(metrics_listener)? {
            let scrape =
                metrics::scrape_hook(store.clone(), config.data_dir.clone(), stopping.clone());
            tracing::info!(listen = %listener.local_addr().map_err(Error::internal)?, "metrics served at /metrics");
            side_tasks.push(tokio::spawn(metrics::serve(
                listener,
                metrics.clone(),
                scrape,
                stopping.clone(),
            )));
        }
        if let Some(listener) = into_tokio(health_listener)? {
            tracing::info!(listen = %listener.local_addr().map_err(Error::internal)?, "plaintext gRPC health served");
            let health_only = grpc_server(limits)
                .layer(RequestLimitLayer::new(limits))
                .add_service(health_service.clone())
                .serve_with_incoming_shutdown(
                    stopping.incoming(listener, connection_limits, refusals.clone()),
                    {
                        let stopping = stopping.clone();
                        async move { stopping.begun().await }
                    },
                );
            side_tasks.push(tokio::spawn(async move {
                if let Err(error) = health_only.await {
                    tracing::error!(%error, "health listener failed");
                }
            }));
        }

        let local = listener.local_addr().map_err(Error::internal)?;
        // Observe outermost, so that what the limits and auth refuse is logged and counted.
        let layers = ServiceBuilder::new()
            .layer(ObserveLayer::new(
                metrics.clone(),
                refusals.clone(),
                config.log_reads,
            ))
            .layer(RequestLimitLayer::new(limits))
            .layer(AuthLayer::new(store.clone()));
        let mut builder = grpc_server(limits);
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(Error::internal)?;
        }
        let tail = Tail::start(
            EventLog::new(store.clone()),
            RECENT_EVENTS,
            config.watch.heartbeat,
            &stopping,
        );
        let key_api = KeyApi::new(
            store.clone(),
            tail,
            config.watch.clone(),
            stopping.clone(),
            metrics.clone(),
        );
        let router = builder
            .layer(layers)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                UserServiceServer::new(UserApi::new(store.clone(), metrics.clone()))
                    .max_decoding_message_size(max_message),
            )
            .add_service(KeyRoutes::new(key_api, max_message))
            .add_service(
                AccessServiceServer::new(AccessApi::new(store.clone()))
                    .max_decoding_message_size(max_message),
            )
            .add_service(
                AuditServiceServer::new(AuditApi::new(store.clone()))
                    .max_decoding_message_size(max_message),
            );

        // Set when the server stops because its storage failed, not because it was told to.
        let storage_failure = Arc::new(std::sync::Mutex::new(None));
        let signal = {
            let stopping = stopping.clone();
            let storage_failed = fault::restart_needed(
                store.clone(),
                health.clone(),
                names.to_vec(),
                config.data_dir.clone(),
            );
            if store.is_replica() {
                side_tasks.push(tokio::spawn(fault::serve_while_reachable(
                    store.clone(),
                    health.clone(),
                    names.to_vec(),
                    stopping.clone(),
                )));
            }
            let storage_failure = storage_failure.clone();
            async move {
                tokio::select! {
                    () = shutdown => {},
                    cause = storage_failed => {
                        tracing::error!("the data dir takes writes again; stopping so that zsc restarts on a clean open");
                        *storage_failure.lock().expect("never poisoned") = Some(cause);
                    }
                }
                tracing::info!("shutting down: draining in-flight requests");
                for name in names {
                    health
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
                stopping.begin();
            }
        };
        tracing::info!(listen = %local, "zsc serving");
        let serve = router.serve_with_incoming_shutdown(
            stopping.incoming(listener, connection_limits, refusals.clone()),
            signal,
        );
        tokio::pin!(serve);
        let grace_expired = async {
            stopping.begun().await;
            tokio::time::sleep(config.shutdown_grace).await;
        };
        let outcome = tokio::select! {
            served = &mut serve => served.map_err(Error::internal),
            () = grace_expired => {
                tracing::warn!(grace = ?config.shutdown_grace, "in-flight requests did not finish in time; stopping anyway");
                Ok(())
            }
        };
        stopping.begin();
        // Whatever the grace period left open (long-lived streams, idle keep-alives) ends now.
        stopping.close_all(CLOSE_WAIT).await;
        for task in side_tasks {
            let _ = task.await;
        }
        refusals.report();
        if let Some(cause) = storage_failure.lock().expect("never poisoned").take() {
            return Err(Error::FailedPrecondition(format!(
                "storage failed ({cause}) and cannot take writes until zsc is restarted: \
                 restart it (acknowledged changes are on disk)"
            )));
        }
        store.save_usage().await?;
        store.sync().await?;
        tracing::info!("stopped; database flushed");
        outcome
    }
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

/// A tonic server with the HTTP/2 limits set: tonic leaves hyper's stream limit and h2's
/// reset-flood guard off unless told, and keepalive off.
fn grpc_server(limits: &Limits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_local_error_reset_streams(Some(limits.max_local_error_resets))
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
}

/// Says, every second until shutdown, how many refusal lines the throttle left out.
async fn report_refusals(refusals: Throttle, stopping: Shutdown) {
    loop {
        tokio::select! {
            () = stopping.begun() => return,
            () = tokio::time::sleep(Throttle::REPORT_EVERY) => refusals.report(),
        }
    }
}

/// Deletes revocation events and audit entries past their retention bounds, every
/// `prune_interval`, until shutdown.
async fn prune_forever(store: Store, config: Config, stopping: Shutdown) {
    let log = EventLog::new(store.clone());
    loop {
        tokio::select! {
            () = stopping.begun() => return,
            () = tokio::time::sleep(config.prune_interval) => {}
        }
        // Replicas of one store on etcd take turns: one prunes, for two intervals at a time.
        match store.take_turn("prune", config.prune_interval * 2).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, "could not learn whose turn it is to prune");
                continue;
            }
        }
        let now = std::time::SystemTime::now();
        let keep_since = now - config.event_retention_age;
        match log.prune(config.event_retention_count, keep_since).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "pruned revocation events past retention"),
            Err(error) => tracing::error!(%error, "pruning the revocation log failed"),
        }
        let keep_since = now - config.audit_retention_age;
        match store
            .prune_audit(config.audit_retention_count, keep_since)
            .await
        {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "pruned audit entries past retention"),
            Err(error) => tracing::error!(%error, "pruning the audit trail failed"),
        }
    }
}

/// Saves the key usage counted in memory every `interval` until shutdown (which saves last).
async fn save_usage_forever(store: Store, interval: Duration, stopping: Shutdown) {
    loop {
        tokio::select! {
            () = stopping.begun() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = store.save_usage().await {
            tracing::error!(%error, "saving key usage failed");
        }
    }
}
