//! The health probe: the store is unavailable while the cluster does not answer.

use std::{sync::Arc, time::Duration};

use etcd_client::KvClient;
use tokio::sync::watch;

use super::errors::never_sent;
use super::head::Head;
use super::url::{table_key, REQUEST_TIMEOUT};
use crate::store::tables::{Table, META_INITIALISED};

/// How often the health probe asks the cluster.
const PROBE_INTERVAL: Duration = Duration::from_millis(1000);

/// Marks the store unavailable while the cluster does not answer a linearizable read, and
/// available again once it does. Two failed probes (or one after a slow one) stay well
/// inside the 5 s a replica has to go NOT_SERVING.
pub(super) async fn probe_forever(
    kv: KvClient,
    root: Vec<u8>,
    fault: Arc<watch::Sender<Option<String>>>,
    head: Arc<Head>,
) {
    let key = table_key(&root, Table::Meta, META_INITIALISED);
    loop {
        let probe = tokio::time::timeout(REQUEST_TIMEOUT, async {
            // A dead member the client still thinks ready fails at once without sending:
            // that says nothing about the cluster, so ask again (another member).
            let mut last = None;
            for _ in 0..4 {
                match kv.clone().get(key.clone(), None).await {
                    Ok(_) => return Ok(()),
                    Err(error) if never_sent(&error) => last = Some(error),
                    Err(error) => return Err(error),
                }
            }
            Err(last.expect("at least one attempt"))
        })
        .await;
        let failure = match probe {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        fault.send_if_modified(|current| {
            let changed = current.is_some() != failure.is_some();
            if changed {
                match &failure {
                    Some(cause) => {
                        tracing::error!(%cause, "etcd unreachable: not serving");
                        head.stop();
                    }
                    None => {
                        tracing::info!("etcd reachable again: serving");
                        head.restart();
                    }
                }
                *current = failure.clone();
            }
            changed
        });
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}
