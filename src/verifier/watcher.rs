//! The Verifier's background task: follow WatchRevocations, apply each message, reconnect.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, SystemTime},
};

use tokio::time::Instant;

use tonic::{Code, Status, Streaming};

use super::shared::Shared;
use super::state::{self, Grant};
use super::VerifierConfig;
use crate::domain::shown;
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

pub(super) async fn run(shared: Arc<Shared>, config: VerifierConfig) {
    let mut failures = 0u32;
    loop {
        // The replica in use; after a failure the next one, from the same cursor.
        let (replica, mut client) = shared.replicas.current();
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
        shared.state().disconnected();
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
        shared.replicas.fail_over(replica);
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
    // Whether a checkpoint that left the cache unused was already logged on this stream.
    let mut reported = false;
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
                let seen = state::Checkpoint {
                    sequence: checkpoint.sequence,
                    store_id: &checkpoint.store_id,
                    durable_head: checkpoint.durable_head,
                    server_time: checkpoint
                        .server_time
                        .and_then(|t| SystemTime::try_from(t).ok()),
                };
                let grant = shared
                    .state()
                    .checkpoint(seen, Instant::now(), SystemTime::now());
                report(grant, &mut reported);
            }
            None => {}
        }
        shared.publish_applied();
    }
}

/// Logs, once per stream, why its checkpoints leave the cache unused: an operator should
/// hear about a clock or a path that makes every verify go to the server.
fn report(grant: Grant, reported: &mut bool) {
    let why = match grant {
        Grant::Until(_) | Grant::Behind => return,
        Grant::NoServerTime => "the server sends no server_time (an older zsc)".to_owned(),
        Grant::TooOld(age) => {
            format!(
                "checkpoints arrive up to {} old (slow or buffering path)",
                shown::duration(age)
            )
        }
        Grant::ClockAhead(by) => {
            format!(
                "the server's clock is {} ahead of ours, beyond max_clock_skew",
                shown::duration(by)
            )
        }
    };
    if !std::mem::replace(reported, true) {
        tracing::warn!(reason = %why, "the revocation stream cannot vouch for the cache; verifying with the server");
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
