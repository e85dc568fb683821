//! What the server does when its storage fails (disk full, read-only, a failed flush or fsync).
//!
//! The store has already fenced itself (the fault its `store::Store::head` carries): it refuses
//! every change, and the revocation streams have ended. Reads and validation go on. Here the server reports
//! NOT_SERVING, and waits until the data dir takes writes again: sled 0.34 refuses every write
//! after an I/O error until it is reopened, so recovering means a restart, and the server stops
//! (exiting non-zero) for its supervisor to restart it on a clean open.

use std::{path::PathBuf, time::Duration};

use tonic_health::{server::HealthReporter, ServingStatus};

use crate::store::{Fault, Store};

/// How often a faulted server checks whether its data dir takes writes again.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// What "takes writes again" means: room for this much more than sled needs to open and write.
const PROBE_BYTES: usize = 4 * 1024 * 1024;

/// Completes, with the cause, once the store has faulted and the data dir takes writes again;
/// from the fault on, every name in `names` reports NOT_SERVING. Never completes otherwise.
pub(super) async fn restart_needed(
    store: Store,
    health: HealthReporter,
    names: Vec<&'static str>,
    data_dir: PathBuf,
) -> String {
    if store.is_replica() {
        // A replica's faults come and go with its cluster: `serve_while_reachable` follows them.
        return std::future::pending().await;
    }
    let mut head = store.head();
    let cause = head
        .wait_for(|head| head.fault.is_some())
        .await
        .map(|head| {
            head.fault
                .as_ref()
                .map(Fault::cause)
                .unwrap_or_default()
                .to_owned()
        });
    let Ok(cause) = cause else {
        // The store is gone: nothing to watch.
        return std::future::pending().await;
    };
    for name in names {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    while let Err(error) = probe(data_dir.clone()).await {
        tracing::debug!(%error, "data dir still refuses writes");
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    cause
}

/// Writes, syncs and removes a probe file in the data dir.
async fn probe(dir: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let path = dir.join("write-probe");
        let result = std::fs::File::create(&path).and_then(|mut file| {
            file.write_all(&vec![0; PROBE_BYTES])?;
            file.sync_all()
        });
        let _ = std::fs::remove_file(&path);
        result
    })
    .await
    .map_err(std::io::Error::other)?
}

/// For a replica on a shared store (etcd): NOT_SERVING while the cluster cannot be reached,
/// SERVING again once it can, until shutdown. Changes are refused meanwhile (UNAVAILABLE); the
/// replica needs no restart.
pub(super) async fn serve_while_reachable(
    store: Store,
    health: HealthReporter,
    names: Vec<&'static str>,
    stopping: crate::shutdown::Shutdown,
) {
    let mut head = store.head();
    let mut faulted = head.borrow_and_update().fault.is_some();
    loop {
        let status = match faulted {
            false => ServingStatus::Serving,
            true => ServingStatus::NotServing,
        };
        for name in &names {
            health.set_service_status(*name, status).await;
        }
        // The head moves with every revocation: only a fault coming or going changes the status.
        tokio::select! {
            () = stopping.begun() => return,
            changed = head.wait_for(|head| head.fault.is_some() != faulted) => match changed {
                Ok(head) => faulted = head.fault.is_some(),
                Err(_) => return,
            },
        }
    }
}
