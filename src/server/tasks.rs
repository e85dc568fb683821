//! The side tasks `Server::run` starts beside the gRPC listener, each ended by the shutdown:
//! the periodic jobs (pruning, saving key usage, reporting refused lines), and the metrics and
//! plaintext-health listeners.

use std::{future::Future, time::Duration};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::routes::grpc_server;
use super::Config;
use crate::accept::Accept;
use crate::api::RequestLimitLayer;
use crate::domain::{Error, Result};
use crate::metrics::{self, Metrics};
use crate::shutdown::Shutdown;
use crate::store::{EventLog, Store};
use crate::telemetry::Throttle;

/// Runs `job` every `interval` until shutdown begins (the first run is one interval in).
pub async fn every<F, Fut>(interval: Duration, stopping: Shutdown, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            () = stopping.begun() => return,
            () = tokio::time::sleep(interval) => job().await,
        }
    }
}

/// What the pruner keeps: at least `count` entries and at least those of the last `age`, per
/// kind; older ones beyond both bounds are deleted.
#[derive(Clone, Copy, Debug)]
pub struct PruneSettings {
    pub interval: Duration,
    pub event_count: u64,
    pub event_age: Duration,
    pub audit_count: u64,
    pub audit_age: Duration,
}

impl PruneSettings {
    pub fn of(config: &Config) -> PruneSettings {
        PruneSettings {
            interval: config.prune_interval,
            event_count: config.event_retention_count,
            event_age: config.event_retention_age,
            audit_count: config.audit_retention_count,
            audit_age: config.audit_retention_age,
        }
    }
}

/// The periodic jobs: pruning, saving key usage, and saying how many refusal lines the
/// throttle left out.
pub(super) fn periodic(
    config: &Config,
    store: &Store,
    refusals: &Throttle,
    stopping: &Shutdown,
) -> Vec<JoinHandle<()>> {
    let pruner = {
        let (store, settings) = (store.clone(), PruneSettings::of(config));
        every(settings.interval, stopping.clone(), move || {
            prune_once(store.clone(), settings)
        })
    };
    let usage = {
        let store = store.clone();
        every(config.usage_save_interval, stopping.clone(), move || {
            save_usage(store.clone())
        })
    };
    let refusals = refusals.clone();
    let report = every(Throttle::REPORT_EVERY, stopping.clone(), move || {
        let refusals = refusals.clone();
        async move { refusals.report() }
    });
    vec![
        tokio::spawn(pruner),
        tokio::spawn(usage),
        tokio::spawn(report),
    ]
}

/// Deletes revocation events and audit entries past their retention bounds, if it is this
/// replica's turn.
async fn prune_once(store: Store, settings: PruneSettings) {
    // Replicas of one store on etcd take turns: one prunes, for two intervals at a time.
    match store.take_turn("prune", settings.interval * 2).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(error) => {
            tracing::warn!(%error, "could not learn whose turn it is to prune");
            return;
        }
    }
    let now = std::time::SystemTime::now();
    let log = EventLog::new(store.clone());
    match log
        .prune(settings.event_count, now - settings.event_age)
        .await
    {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "pruned revocation events past retention"),
        Err(error) => tracing::error!(%error, "pruning the revocation log failed"),
    }
    if let Ok(Some(first)) = log.first_retained() {
        if let Err(error) = store.prune_confirmations(first).await {
            tracing::error!(%error, "pruning revocation confirmations failed");
        }
    }
    match store
        .prune_audit(settings.audit_count, now - settings.audit_age)
        .await
    {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "pruned audit entries past retention"),
        Err(error) => tracing::error!(%error, "pruning the audit trail failed"),
    }
}

/// Saves the key usage counted in memory (shutdown saves last).
async fn save_usage(store: Store) {
    if let Err(error) = store.save_usage().await {
        tracing::error!(%error, "saving key usage failed");
    }
}

/// Serves `/metrics` on `listener`, if one was asked for.
pub(super) fn metrics_listener(
    listener: Option<TcpListener>,
    accept: &Accept,
    store: &Store,
    data_dir: &std::path::Path,
    metrics: &Metrics,
    stopping: &Shutdown,
) -> Result<Option<JoinHandle<()>>> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let scrape = metrics::scrape_hook(store.clone(), data_dir.to_owned(), stopping.clone());
    tracing::info!(listen = %listener.local_addr().map_err(Error::internal)?, "metrics served at /metrics");
    let only_tracked = Accept {
        limits: None,
        ..accept.clone()
    };
    Ok(Some(tokio::spawn(metrics::serve(
        only_tracked.incoming(listener),
        metrics.clone(),
        scrape,
        stopping.clone(),
    ))))
}

/// Serves gRPC health alone, in plaintext, on `listener`, if one was asked for.
pub(super) fn health_listener(
    listener: Option<TcpListener>,
    config: &Config,
    health_service: super::routes::HealthService,
    accept: &Accept,
    stopping: &Shutdown,
) -> Result<Option<JoinHandle<()>>> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let limits = &config.limits;
    tracing::info!(listen = %listener.local_addr().map_err(Error::internal)?, "plaintext gRPC health served");
    let health_only = grpc_server(limits)
        .layer(RequestLimitLayer::new(limits))
        .add_service(health_service)
        .serve_with_incoming_shutdown(accept.clone().incoming(listener), {
            let stopping = stopping.clone();
            async move { stopping.begun().await }
        });
    Ok(Some(tokio::spawn(async move {
        if let Err(error) = health_only.await {
            tracing::error!(%error, "health listener failed");
        }
    })))
}
