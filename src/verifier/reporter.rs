//! Reports the revocation-log sequence this Verifier has applied (ConfirmationService's
//! ReportApplied), so that the console can see who has dropped a revoked key.
//!
//! The rule: when the applied sequence moves, report at once if no report was sent in the
//! last second, else at the end of that second (with the latest sequence then). The watcher
//! only publishes the sequence on a `watch` channel, so reporting never blocks or slows
//! verification or the stream. A failed report is logged at most every [`WARN_EVERY`] and
//! retried a second later (or by the next move); a refusal no retry can change (a role that
//! may not report, a server without the call) waits for the next move.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;

use super::shared::{Applied, Shared};
use crate::proto::ReportAppliedRequest;

/// At most one report per this interval.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// A report that takes longer is abandoned (and retried).
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Failed reports are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Runs until the Verifier is dropped (its sender goes, or `shared` cannot be upgraded).
pub(super) async fn run(shared: Weak<Shared>, mut applied: watch::Receiver<Applied>) {
    let mut last_attempt: Option<Instant> = None;
    let mut sent: Applied = None;
    let mut warned: Option<Instant> = None;
    while applied.changed().await.is_ok() {
        if let Some(last) = last_attempt {
            tokio::time::sleep_until(last + REPORT_EVERY).await;
        }
        let latest = applied.borrow_and_update().clone();
        let Some((sequence, store_id)) = latest.clone().filter(|_| latest != sent) else {
            continue;
        };
        let Some(mut client) = shared.upgrade().map(|s| s.replicas.reporter()) else {
            return;
        };
        last_attempt = Some(Instant::now());
        let request = ReportAppliedRequest {
            applied_sequence: sequence,
            store_id,
        };
        let status =
            match tokio::time::timeout(REPORT_TIMEOUT, client.report_applied(request)).await {
                Ok(Ok(_)) => {
                    sent = latest;
                    continue;
                }
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded("report timed out"),
            };
        if warned.is_none_or(|w| w.elapsed() >= WARN_EVERY) {
            warned = Some(Instant::now());
            tracing::warn!(code = ?status.code(), message = status.message(), sequence,
                "reporting the applied revocation sequence failed (logged at most once a minute)");
        }
        let hopeless = matches!(
            status.code(),
            Code::PermissionDenied | Code::Unimplemented | Code::Unauthenticated
        );
        if !hopeless {
            applied.mark_changed();
        }
    }
}
