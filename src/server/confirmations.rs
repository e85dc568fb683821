//! The confirmation tracker: once a second, writes the Verifiers' reports this replica
//! received (one flush per replica per second), then sets the confirmation metrics from the
//! store: how far behind each subscribed service is, and, for each revocation every subscribed
//! service has now applied, the time from the revocation to the last confirmation.

use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use super::tasks::every;
use crate::domain::Result;
use crate::metrics::{Behind, Metrics};
use crate::shutdown::Shutdown;
use crate::store::{lag_after, EventLog, ServiceState, Store};

/// How often reports are written and the metrics set.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Revocations looked at per tick at most.
const PER_TICK: usize = 256;

struct Tracker {
    store: Store,
    metrics: Metrics,
    /// The last revocation looked at for the histogram: it starts at the head when the server
    /// starts, so the histogram counts revocations made while this process runs.
    observed: u64,
    /// When a failure was last logged: at most one line per [`WARN_EVERY`].
    warned: Option<std::time::Instant>,
}

/// A failing flush or read is logged at most this often (each tick retries).
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Starts the tracker; it ends when shutdown begins (the server flushes once more after).
pub(super) fn start(store: &Store, metrics: &Metrics, stopping: &Shutdown) -> JoinHandle<()> {
    let tracker = std::sync::Arc::new(tokio::sync::Mutex::new(Tracker {
        store: store.clone(),
        metrics: metrics.clone(),
        observed: EventLog::new(store.clone()).head().borrow().applied,
        warned: None,
    }));
    tokio::spawn(every(FLUSH_EVERY, stopping.clone(), move || {
        let tracker = tracker.clone();
        async move { tracker.lock().await.tick().await }
    }))
}

impl Tracker {
    async fn tick(&mut self) {
        if let Err(error) = self.store.flush_confirmations().await {
            if self.may_warn() {
                tracing::warn!(%error, "writing revocation confirmations failed; retrying each second");
            }
        }
        if let Err(error) = self.measure().await {
            if self.may_warn() {
                tracing::warn!(%error, "reading revocation confirmations failed");
            }
        }
    }

    fn may_warn(&mut self) -> bool {
        let now = std::time::Instant::now();
        let may = self.warned.is_none_or(|last| now - last >= WARN_EVERY);
        if may {
            self.warned = Some(now);
        }
        may
    }

    async fn measure(&mut self) -> Result<()> {
        let services = self.store.subscribed_services().await?;
        let log = EventLog::new(self.store.clone());
        let head = log.head().borrow().applied;
        let mut behind = Vec::with_capacity(services.len());
        for state in &services {
            behind.push(self.behind(&log, state, head)?);
        }
        self.metrics.confirmation_fleet(services.len(), behind);
        let everyone = services.iter().map(|s| s.applied).min().unwrap_or(head);
        for event in log.read(self.observed, everyone.min(head), PER_TICK)? {
            let mut last = event.revoked;
            for state in &services {
                let first = self
                    .store
                    .first_confirmation(&state.service, event.sequence)
                    .await?;
                last = last.max(first.unwrap_or(last));
            }
            if !services.is_empty() {
                let lag = lag_after(&event, last);
                self.metrics.revocation_confirmed(lag.as_secs_f64());
            }
            self.observed = event.sequence;
        }
        Ok(())
    }

    fn behind(&self, log: &EventLog, state: &ServiceState, head: u64) -> Result<Behind> {
        let oldest = log.read(state.applied, head, 1)?;
        let seconds = oldest.first().map_or(0.0, |event| {
            SystemTime::now()
                .duration_since(event.revoked)
                .unwrap_or_default()
                .as_secs_f64()
        });
        Ok(Behind {
            service: state.service.to_string(),
            sequences: head.saturating_sub(state.applied),
            seconds,
        })
    }
}
