//! The read barrier that makes a replica's answers from memory linearizable, after
//! Kubernetes' consistent reads from its watch cache (KEP-2340).
//!
//! A call that must reflect every change acknowledged before it started learns the revision
//! to wait for from one linearizable read of the audit head's `mod_revision` (every change that
//! can affect a validation or a caller is audited, so writes that key), then waits until this
//! replica's watch has applied that revision, then reads its memory. The read is shared: every
//! call waiting joins the next read to be sent, never one already in flight (a read sent
//! before a call arrived could miss a change acknowledged just before it). Up to [`SENDERS`]
//! reads are in flight at once, so that a call that just missed one waits for the next to be
//! sent by the other sender, not for the one in flight to come back first; etcd serves each
//! with one ReadIndex round and no log entry.
//!
//! The same read also fetches the revocation log's head, and a call waits until this replica
//! has announced it too: the `sequence` an answer carries (the head read after the barrier)
//! is then at or above every revocation acknowledged before the call by construction, not
//! only because the watch moves the head before it counts the revision applied.
//!
//! Progress notifications are not used: Debian's etcd 3.4.23 predates the fix of etcd#15220
//! (a progress notification could arrive before the event of the same revision).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_client::{KvClient, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

use super::errors::{never_sent, unavailable};
use super::url::table_key;
use crate::domain::{Error, Result};
use crate::store::head::{Announcer, Confirmed, Head};
use crate::store::kv::read_u64;
use crate::store::tables::{Table, AUDIT_HEAD, META_HEAD};

/// How long a call may wait for the shared read and for the watch to apply its revision.
pub(in crate::store) const BARRIER_BOUND: Duration = Duration::from_secs(3);

/// What one shared read found: what this replica must have applied before it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Target {
    /// The audit head's `mod_revision`: every change acknowledged before the read is at or
    /// below it.
    revision: i64,
    /// The revocation log's head: every revocation acknowledged before the read is at or
    /// below it.
    head: u64,
}

/// How a round ended, for every call that joined it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// This replica has applied every change acknowledged before the round's read was sent.
    CaughtUp,
    /// The read failed, or the watch did not apply its revision within the bound.
    Unavailable,
    /// The watch of this replica stopped.
    Stopped,
}

/// One shared read and the wait for the watch to apply it, for every call that joined before
/// it was sent. Its deadline is the bound from its first call's arrival, so that no call in
/// it waits longer than its own bound (the round, not each call, holds the timer).
struct Round {
    deadline: Instant,
    outcome: watch::Sender<Option<Outcome>>,
}

pub(super) struct Barrier {
    kv: KvClient,
    /// The audit head's etcd key.
    audit_head: Vec<u8>,
    /// The revocation log head's etcd key.
    log_head: Vec<u8>,
    /// The highest revision this replica's watch has applied (to the view, the mirror and
    /// the durable head).
    applied: watch::Receiver<i64>,
    /// The log head this replica announces (what an answer's `sequence` is read from).
    head: watch::Receiver<Head>,
    rounds: Mutex<Rounds>,
}

/// How many rounds may be in flight at once. Measured (h2load, 128 calls in flight, the
/// server on a core of its own, its 3 etcd members on the other): one sender 45,300/s, two
/// 49,500-50,600/s, four 44,700-47,000/s (etcd saturated its core). With the members on
/// the server's own core, two cost 13% against one (29,000 against 33,500/s): each read costs
/// etcd ~0.5 ms of CPU there.
const SENDERS: usize = 2;

#[derive(Default)]
struct Rounds {
    /// The read the next sender will send; calls arriving now join it.
    next: Option<Round>,
    /// How many tasks are sending reads (at most [`SENDERS`]).
    sending: usize,
}

impl Barrier {
    pub fn new(
        kv: KvClient,
        root: &[u8],
        applied: watch::Receiver<i64>,
        head: watch::Receiver<Head>,
    ) -> Arc<Barrier> {
        Arc::new(Barrier {
            kv,
            audit_head: table_key(root, Table::Audit, AUDIT_HEAD),
            log_head: table_key(root, Table::Meta, META_HEAD),
            applied,
            head,
            rounds: Mutex::new(Rounds::default()),
        })
    }

    /// Returns once this replica has applied every change acknowledged before the call and
    /// announced the log head they reached, or UNAVAILABLE after [`BARRIER_BOUND`].
    pub async fn pass(self: &Arc<Self>) -> Result<()> {
        let mut round = self.join();
        let outcome = round
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::internal("a barrier round ended unanswered"))?
            .expect("waited for an outcome");
        match outcome {
            Outcome::CaughtUp => Ok(()),
            Outcome::Unavailable => Err(unavailable()),
            Outcome::Stopped => Err(Error::internal("the watch of this replica stopped")),
        }
    }

    /// Joins the read not sent yet (making one if need be), and starts a sender if fewer than
    /// [`SENDERS`] run.
    fn join(self: &Arc<Self>) -> watch::Receiver<Option<Outcome>> {
        let mut rounds = self.rounds.lock().expect("barrier lock is never poisoned");
        let round = rounds
            .next
            .get_or_insert_with(|| Round {
                deadline: Instant::now() + BARRIER_BOUND,
                outcome: watch::Sender::new(None),
            })
            .outcome
            .subscribe();
        if rounds.sending < SENDERS {
            rounds.sending += 1;
            tokio::spawn(self.clone().send_rounds());
        }
        round
    }

    /// Runs one round after another until no call waits for another. A round's calls could
    /// not be answered before the previous round's revision is applied anyway (theirs is at
    /// or above it), so this sender's waiting for it before it sends its next read costs them
    /// nothing; the other sender may send meanwhile.
    async fn send_rounds(self: Arc<Self>) {
        loop {
            let round = {
                let mut rounds = self.rounds.lock().expect("barrier lock is never poisoned");
                match rounds.next.take() {
                    Some(round) => round,
                    None => {
                        rounds.sending -= 1;
                        return;
                    }
                }
            };
            let outcome = match timeout_at(round.deadline, self.catch_up()).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::warn!("this replica did not catch up with etcd within the bound");
                    Outcome::Unavailable
                }
            };
            round.outcome.send_replace(Some(outcome));
        }
    }

    /// Sends the read, then waits until this replica's watch has applied its revision and
    /// its log head.
    async fn catch_up(&self) -> Outcome {
        let target = match self.read().await {
            Ok(target) => target,
            Err(error) => {
                tracing::warn!(%error, "the barrier's linearizable read failed");
                return Outcome::Unavailable;
            }
        };
        let (mut applied, mut head) = (self.applied.clone(), self.head.clone());
        if applied
            .wait_for(|applied| *applied >= target.revision)
            .await
            .is_err()
        {
            return Outcome::Stopped;
        }
        let announced = head.borrow().applied;
        if announced < target.head {
            // The watch counts a revision applied only after it has moved the head: this
            // should not happen, and waiting keeps the answer true if it does.
            tracing::warn!(
                announced,
                read = target.head,
                revision = target.revision,
                "the announced log head lags the revision applied: waiting for it"
            );
        }
        let announced = head.wait_for(|head| head.applied >= target.head).await;
        match announced {
            Ok(_) => Outcome::CaughtUp,
            Err(_) => Outcome::Stopped,
        }
    }

    /// The audit head's `mod_revision` (0 if it has none yet) and the log head, read
    /// linearizably in one read-only Txn (one ReadIndex round, as a single get). A dead
    /// member the client still thinks ready fails at once without sending: ask again (another
    /// member).
    async fn read(&self) -> std::result::Result<Target, etcd_client::Error> {
        let gets = vec![
            TxnOp::get(self.audit_head.clone(), None),
            TxnOp::get(self.log_head.clone(), None),
        ];
        let mut attempts = 0;
        loop {
            let txn = Txn::new().and_then(gets.clone());
            match self.kv.clone().txn(txn).await {
                Ok(response) => return Ok(target(response.op_responses())),
                Err(error) if never_sent(&error) && attempts < 4 => attempts += 1,
                Err(error) => return Err(error),
            }
        }
    }
}

/// The target in the answers to the barrier's two gets (audit head, then log head).
fn target(responses: Vec<TxnOpResponse>) -> Target {
    let found = |response: Option<&TxnOpResponse>| match response {
        Some(TxnOpResponse::Get(get)) => get.kvs().first().cloned(),
        _ => None,
    };
    let audit = found(responses.first());
    let log = found(responses.get(1));
    Target {
        revision: audit.map_or(0, |kv| kv.mod_revision()),
        head: read_u64(log.as_ref().map(|kv| kv.value())),
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
