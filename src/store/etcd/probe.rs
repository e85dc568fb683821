//! The health probe: the store is unavailable (its head carries [`Fault::Unconfirmed`]) while
//! this replica cannot confirm its head.

use std::{sync::Arc, time::Duration};

use super::barrier::Confirmer;
use crate::store::head::{Announcer, Fault};

/// How often the health probe asks the cluster.
const PROBE_INTERVAL: Duration = Duration::from_millis(1000);

/// Marks the store unavailable while this replica cannot confirm its head (`barrier.rs`: the
/// cluster does not answer a linearizable read, or this replica's watch does not apply what
/// it read within the bound: a member cut off from its peers, a watch that stopped), and
/// available again once it can. Each probe also refreshes the confirmed head of an idle
/// replica. A failed probe (at most the barrier's 3 s) and the pause after it stay inside the
/// 5 s a replica has to go NOT_SERVING.
pub(super) async fn probe_forever(confirmer: Arc<Confirmer>, head: Arc<Announcer>) {
    loop {
        let probe = confirmer.confirm().await;
        let fault = probe
            .err()
            .map(|error| Fault::Unconfirmed(error.to_string()));
        let cause = fault.as_ref().map(|fault| fault.cause().to_owned());
        if head.set_fault(fault) {
            match cause {
                Some(cause) => tracing::error!(%cause, "etcd unreachable: not serving"),
                None => tracing::info!("etcd reachable again: serving"),
            }
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}
