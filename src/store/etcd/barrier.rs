//! The read barrier that makes a replica's answers from memory linearizable, after
//! Kubernetes' consistent reads from its watch cache (KEP-2340).
//!
//! A call that must reflect every change acknowledged before it started learns the revision
//! to wait for from one linearizable read of the audit head's `mod_revision` (every change that
//! can affect a validation or a caller is audited, so writes that key), then waits until this
//! replica's watch has applied that revision, then reads its memory. The read is shared: every
//! call waiting joins the next read to be sent, never one already in flight (a read sent
//! before a call arrived could miss a change acknowledged just before it). One read is in
//! flight at a time; etcd serves each with one ReadIndex round and no log entry.
//!
//! Progress notifications are not used: Debian's etcd 3.4.23 predates the fix of etcd#15220
//! (a progress notification could arrive before the event of the same revision).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_client::KvClient;
use tokio::sync::watch;

use super::errors::{never_sent, unavailable};
use super::url::table_key;
use crate::domain::{Error, Result};
use crate::store::head::{Announcer, Confirmed};
use crate::store::tables::{Table, AUDIT_HEAD};

/// How long a call may wait for the shared read and for the watch to apply its revision.
pub(in crate::store) const BARRIER_BOUND: Duration = Duration::from_secs(3);

/// The outcome of one shared read: the revision to wait for, or why there is none.
type Round = watch::Sender<Option<std::result::Result<i64, String>>>;

pub(super) struct Barrier {
    kv: KvClient,
    /// The audit head's etcd key.
    key: Vec<u8>,
    /// The highest revision this replica's watch has applied (to the view, the mirror and
    /// the durable head).
    applied: watch::Receiver<i64>,
    rounds: Mutex<Rounds>,
}

#[derive(Default)]
struct Rounds {
    /// The read the next sender will send; calls arriving now join it.
    next: Option<Arc<Round>>,
    /// Whether a task is sending reads.
    sending: bool,
}

impl Barrier {
    pub fn new(kv: KvClient, root: &[u8], applied: watch::Receiver<i64>) -> Arc<Barrier> {
        let (table, key) = (Table::Audit, AUDIT_HEAD);
        Arc::new(Barrier {
            kv,
            key: table_key(root, table, key),
            applied,
            rounds: Mutex::new(Rounds::default()),
        })
    }

    /// Returns once this replica has applied every change acknowledged before the call, or
    /// UNAVAILABLE after [`BARRIER_BOUND`].
    pub async fn pass(self: &Arc<Self>) -> Result<i64> {
        let mut round = self.join();
        let mut applied = self.applied.clone();
        let wait = async {
            let outcome = round
                .wait_for(Option::is_some)
                .await
                .map_err(|_| Error::internal("a barrier round ended unanswered"))?
                .clone()
                .expect("waited for an outcome");
            let revision = outcome.map_err(|cause| {
                tracing::warn!(%cause, "the barrier's linearizable read failed");
                unavailable()
            })?;
            applied
                .wait_for(|applied| *applied >= revision)
                .await
                .map_err(|_| Error::internal("the watch of this replica stopped"))?;
            Ok(revision)
        };
        match tokio::time::timeout(BARRIER_BOUND, wait).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!("this replica did not catch up with etcd within the bound");
                Err(unavailable())
            }
        }
    }

    /// Joins the read not sent yet (making one if need be), and starts a sender if none runs.
    fn join(self: &Arc<Self>) -> watch::Receiver<Option<std::result::Result<i64, String>>> {
        let mut rounds = self.rounds.lock().expect("barrier lock is never poisoned");
        let round = rounds
            .next
            .get_or_insert_with(|| Arc::new(watch::Sender::new(None)))
            .subscribe();
        if !rounds.sending {
            rounds.sending = true;
            tokio::spawn(self.clone().send_rounds());
        }
        round
    }

    /// Sends one read per round until no call waits for another.
    async fn send_rounds(self: Arc<Self>) {
        loop {
            let round = {
                let mut rounds = self.rounds.lock().expect("barrier lock is never poisoned");
                match rounds.next.take() {
                    Some(round) => round,
                    None => {
                        rounds.sending = false;
                        return;
                    }
                }
            };
            let outcome = self.read().await;
            round.send_replace(Some(outcome));
        }
    }

    /// The audit head's `mod_revision`, read linearizably (0 if it has none yet).
    async fn read(&self) -> std::result::Result<i64, String> {
        let read = async {
            // A dead member the client still thinks ready fails at once without sending:
            // ask again (another member).
            let mut attempts = 0;
            loop {
                match self.kv.clone().get(self.key.clone(), None).await {
                    Ok(response) => {
                        return Ok(response.kvs().first().map_or(0, |kv| kv.mod_revision()))
                    }
                    Err(error) if never_sent(&error) && attempts < 4 => attempts += 1,
                    Err(error) => return Err(error.to_string()),
                }
            }
        };
        match tokio::time::timeout(BARRIER_BOUND, read).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "no answer within {}",
                crate::domain::shown::duration(BARRIER_BOUND)
            )),
        }
    }
}

/// Confirms this replica's head (`store/head.rs`): the clock, the barrier, then the head. The
/// latest confirmation is kept for checkpoints that cannot wait (a new stream's first).
pub(super) struct Confirmer {
    pub barrier: Arc<Barrier>,
    pub head: Arc<Announcer>,
    pub latest: watch::Sender<Confirmed>,
}

impl Confirmer {
    pub async fn confirm(&self) -> Result<Confirmed> {
        let at = std::time::SystemTime::now();
        self.barrier.pass().await?;
        let confirmed = Confirmed {
            at,
            head: self.head.applied(),
        };
        self.latest.send_if_modified(|latest| {
            let later = latest.later(confirmed);
            let moved = later != *latest;
            *latest = later;
            moved
        });
        Ok(confirmed)
    }
}
