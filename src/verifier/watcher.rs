//! The Verifier's background task: follow WatchRevocations, apply each message, reconnect.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tonic::{Code, Status, Streaming};

use super::{Client, Shared, VerifierConfig};
use crate::proto::{
    watch_revocations_response::Event, RevocationReason, WatchRevocationsRequest,
    WatchRevocationsResponse,
};

/// A revocation the Verifier applied.
#[derive(Clone, Debug)]
pub struct Revocation {
    pub sequence: u64,
    pub key_id: String,
    pub org_id: String,
    pub owner_email: String,
    pub reason: RevocationReason,
    /// Whether the key was in this Verifier's cache (and so was dropped from it).
    pub was_cached: bool,
}

pub(super) async fn run(shared: Arc<Shared>, mut client: Client, config: VerifierConfig) {
    let mut failures = 0u32;
    loop {
        let (after_sequence, store_id) = {
            let state = shared.state();
            (state.applied, state.store_id.clone().unwrap_or_default())
        };
        let request = WatchRevocationsRequest {
            after_sequence,
            store_id,
            org_ids: Vec::new(),
        };
        let outcome = match client.watch_revocations(request).await {
            Ok(response) => {
                shared.connected.store(true, Ordering::Relaxed);
                follow(&shared, response.into_inner(), &config, &mut failures).await
            }
            Err(status) => Err(status),
        };
        shared.connected.store(false, Ordering::Relaxed);
        shared.caught_up.store(false, Ordering::Release);
        match outcome {
            Err(status) if status.code() == Code::OutOfRange => {
                // Our cursor means nothing to this server's log: start over from its head.
                tracing::warn!(
                    reason = status.message(),
                    "revocation cursor out of range; flushing the cache"
                );
                shared.state().flush();
                shared.flushes.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "revocation stream lost")
            }
            Ok(()) => tracing::debug!("revocation stream ended"),
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(backoff(&config, failures)).await;
    }
}

/// Applies messages until the stream ends or goes quiet for longer than heartbeats allow.
async fn follow(
    shared: &Shared,
    mut stream: Streaming<WatchRevocationsResponse>,
    config: &VerifierConfig,
    failures: &mut u32,
) -> Result<(), Status> {
    let quiet_limit = (config.max_staleness * 2).max(Duration::from_secs(2));
    loop {
        let message = tokio::time::timeout(quiet_limit, stream.message())
            .await
            .map_err(|_| Status::deadline_exceeded("revocation stream went quiet"))??;
        let Some(message) = message else {
            return Ok(());
        };
        *failures = 0;
        match message.event {
            Some(Event::Revocation(event)) => {
                let evicted = shared.state().revoke(event.sequence, &event.key_id);
                shared.heard();
                if let Some(hook) = &config.on_revocation {
                    hook(&Revocation {
                        sequence: event.sequence,
                        reason: event.reason(),
                        key_id: event.key_id,
                        org_id: event.org_id,
                        owner_email: event.owner_email,
                        was_cached: evicted.is_some(),
                    });
                }
            }
            Some(Event::Checkpoint(checkpoint)) => {
                shared
                    .state()
                    .checkpoint(checkpoint.sequence, &checkpoint.store_id);
                shared.caught_up.store(true, Ordering::Release);
                shared.heard();
            }
            None => {}
        }
    }
}

/// Full jitter: a random delay up to min(cap, min * 2^failures).
fn backoff(config: &VerifierConfig, failures: u32) -> Duration {
    let ceiling = config
        .backoff_min
        .saturating_mul(1 << failures.min(16))
        .min(config.backoff_max);
    Duration::from_micros(rand::random_range(0..=ceiling.as_micros() as u64))
}
