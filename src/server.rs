//! The one way to start zsc: [`Server::open`] then [`Server::run`]. `main` and every test
//! go through here, so tests exercise exactly what production runs.

use std::{future::Future, path::PathBuf, time::Duration};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tower::ServiceBuilder;

use crate::api::{AccessApi, AuthLayer, KeyApi, RequestLimitLayer, UserApi, WatchConfig};
use crate::domain::{Error, Result};
use crate::proto::{
    access_service_server::AccessServiceServer, key_service_server::KeyServiceServer,
    user_service_server::UserServiceServer, FILE_DESCRIPTOR_SET,
};
use crate::store::{EventLog, Store, StoreOptions, OPERATOR_TOKEN_FILE};

/// Everything `zsc serve` can be told.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub store: StoreOptions,
    pub watch: WatchConfig,
    /// Keep at least this many revocation events...
    pub event_retention_count: u64,
    /// ...and at least the events of this long ago; older ones beyond both bounds are pruned.
    pub event_retention_age: Duration,
    /// How often the pruner runs.
    pub prune_interval: Duration,
    /// How long shutdown waits for in-flight RPCs before giving up on them.
    pub shutdown_grace: Duration,
}

impl Config {
    /// Production defaults for a data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            store: StoreOptions::default(),
            watch: WatchConfig {
                heartbeat: Duration::from_secs(1),
                stall_timeout: Duration::from_secs(30),
            },
            event_retention_count: 1_000_000,
            event_retention_age: Duration::from_secs(7 * 24 * 3600),
            prune_interval: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

pub struct Server {
    config: Config,
    store: Store,
}

impl Server {
    /// Opens the data dir (creating it and the operator token on first start). Fails at once
    /// if another process has it open.
    pub fn open(config: Config) -> Result<Server> {
        let opened = Store::open(&config.data_dir, &config.store)?;
        if opened.created {
            tracing::info!(
                path = %config.data_dir.join(OPERATOR_TOKEN_FILE).display(),
                "new data dir: the operator token was written to this file (mode 0600)"
            );
        }
        tracing::info!(data_dir = %config.data_dir.display(), store_id = opened.store.store_id(), "store open");
        Ok(Server {
            config,
            store: opened.store,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` completes, then: health goes NOT_SERVING, streams get a last
    /// checkpoint and end UNAVAILABLE, in-flight RPCs get `shutdown_grace` to finish, and the
    /// database is flushed.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<()> {
        let Server { config, store } = self;
        let stopping = CancellationToken::new();

        let (health, health_service) = tonic_health::server::health_reporter();
        let names = [
            "",
            <UserServiceServer<UserApi> as NamedService>::NAME,
            <KeyServiceServer<KeyApi> as NamedService>::NAME,
            <AccessServiceServer<AccessApi> as NamedService>::NAME,
        ];
        for name in names {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(Error::internal)?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(Error::internal)?;

        let pruner = tokio::spawn(prune_forever(
            EventLog::new(store.clone()),
            config.clone(),
            stopping.clone(),
        ));

        let local = listener.local_addr().map_err(Error::internal)?;
        let layers = ServiceBuilder::new()
            .layer(RequestLimitLayer)
            .layer(AuthLayer::new(store.clone()));
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(layers)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(UserServiceServer::new(UserApi::new(store.clone())))
            .add_service(KeyServiceServer::new(KeyApi::new(
                store.clone(),
                config.watch.clone(),
                stopping.clone(),
            )))
            .add_service(AccessServiceServer::new(AccessApi::new(store.clone())));

        let signal = {
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: draining in-flight requests");
                for name in names {
                    health
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
                stopping.cancel();
            }
        };
        tracing::info!(listen = %local, "zsc serving");
        let serve = router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);
        tokio::pin!(serve);
        let grace_expired = async {
            stopping.cancelled().await;
            tokio::time::sleep(config.shutdown_grace).await;
        };
        let outcome = tokio::select! {
            served = &mut serve => served.map_err(Error::internal),
            () = grace_expired => {
                tracing::warn!(grace = ?config.shutdown_grace, "in-flight requests did not finish in time; stopping anyway");
                Ok(())
            }
        };
        stopping.cancel();
        let _ = pruner.await;
        store.sync().await?;
        tracing::info!("stopped; database flushed");
        outcome
    }
}

/// Deletes events past both retention bounds, every `prune_interval`, until shutdown.
async fn prune_forever(log: EventLog, config: Config, stopping: CancellationToken) {
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep(config.prune_interval) => {}
        }
        let keep_since = std::time::SystemTime::now() - config.event_retention_age;
        match log.prune(config.event_retention_count, keep_since).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "pruned revocation events past retention"),
            Err(error) => tracing::error!(%error, "pruning the revocation log failed"),
        }
    }
}
