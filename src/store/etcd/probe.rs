//! The health probe: the store is unavailable while this replica cannot confirm its head.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use super::barrier::Confirmer;
use super::head::Head;

/// How often the health probe asks the cluster.
const PROBE_INTERVAL: Duration = Duration::from_millis(1000);

/// Marks the store unavailable while this replica cannot confirm its head (`barrier.rs`: the
/// cluster does not answer a linearizable read, or this replica's watch does not apply what
/// it read within the bound: a member cut off from its peers, a watch that stopped), and
/// available again once it can. Each probe also refreshes the confirmed head of an idle
/// replica. A failed probe (at most the barrier's 3 s) and the pause after it stay inside the
/// 5 s a replica has to go NOT_SERVING.
pub(super) async fn probe_forever(
    confirmer: Arc<Confirmer>,
    fault: Arc<watch::Sender<Option<String>>>,
    head: Arc<Head>,
) {
    loop {
        let probe = confirmer.confirm().await;
        let failure = probe.err().map(|error| error.to_string());
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
