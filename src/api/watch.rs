//! WatchRevocations: history from a cursor, then live events, with checkpoints.
//!
//! Each stream has a producer task that reads the durable log in sled and pushes into a small
//! bounded channel that tonic drains. The only shared in-memory signal is the store's
//! durable-head `watch` channel, which is a wake-up (it cannot lag or drop anything): events
//! always come from the log. So a slow subscriber costs writers and other subscribers nothing,
//! and one that stops reading for `stall_timeout` is ended with RESOURCE_EXHAUSTED; it resumes
//! from its cursor without losing anything. The subscriber's account is checked again whenever
//! the stream wakes and at every heartbeat: the stream of an account deleted meanwhile is sent
//! nothing more and ends UNAUTHENTICATED.
//!
//! Architecture invariant: a stream never skips a sequence. If the next event it needs is gone
//! (pruned, or a different store), it ends with OUT_OF_RANGE instead.

use std::{
    collections::HashSet,
    pin::Pin,
    time::{Duration, SystemTime},
};

use futures_util::{stream, Stream, StreamExt};
use tokio::{
    sync::{mpsc, oneshot},
    time::{sleep_until, Instant},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::auth::Standing;
use super::subscribers::{Holding, Slot};
use crate::domain::{Error, OrgId, Result, RevocationEvent};
use crate::proto::{self as pb, watch_revocations_response::Event};
use crate::shutdown::Shutdown;
use crate::store::EventLog;

/// Events read from sled per batch.
const BATCH: usize = 512;
/// Messages buffered between a producer and tonic. Small: what a stalled subscriber holds is
/// this, plus one encoded chunk in hyper and hyper's HTTP/2 send buffer (README, "Subscriber
/// caps"); a reader that keeps up never fills it.
const CHANNEL: usize = 16;
/// How long the goodbye checkpoint may wait for a subscriber at shutdown.
const GOODBYE: Duration = Duration::from_millis(200);

#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Every stream gets a checkpoint at least this often (idle or not), and the subscriber's
    /// account is checked again.
    pub heartbeat: Duration,
    /// A subscriber that reads nothing for this long is ended with RESOURCE_EXHAUSTED.
    pub stall_timeout: Duration,
    /// Revocation streams open at once, in all and per service account (RESOURCE_EXHAUSTED past
    /// either).
    pub max_subscribers: usize,
    pub max_subscribers_per_account: usize,
}

pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchRevocationsResponse, Status>> + Send>>;

/// A parsed WatchRevocationsRequest.
pub struct WatchRequest {
    after: Option<u64>,
    store_id: Option<String>,
    orgs: HashSet<OrgId>,
}

pub fn parse_request(req: pb::WatchRevocationsRequest) -> Result<WatchRequest> {
    let orgs = req
        .org_ids
        .iter()
        .map(|id| OrgId::parse("org_ids", id))
        .collect::<Result<HashSet<_>>>()?;
    let store_id = Some(req.store_id).filter(|s| !s.is_empty());
    if let (Some(after @ 1..), None) = (req.after_sequence, &store_id) {
        return Err(Error::invalid(format!(
            "after_sequence {after} needs store_id (from the checkpoint it came from): a cursor is \
             meaningful only in its own store, and without store_id a cursor from a replaced store \
             (restore, new data dir) would silently skip that store's events; send store_id, or \
             leave after_sequence unset to start at the head (0 reads the whole log)"
        )));
    }
    Ok(WatchRequest {
        after: req.after_sequence,
        store_id,
        orgs,
    })
}

/// Checks the cursor against the log and starts the stream. A cursor the log cannot serve
/// is refused with OUT_OF_RANGE and a message saying what to do.
pub fn subscribe(
    log: EventLog,
    request: WatchRequest,
    config: WatchConfig,
    shutdown: Shutdown,
    standing: Standing,
    slot: Slot,
) -> Result<WatchStream> {
    log.check_live()?;
    if let Some(theirs) = &request.store_id {
        if theirs != log.store_id() {
            return Err(Error::OutOfRange(format!(
                "store_id {theirs} is not this server's store ({}): its log was replaced (new data dir or \
                 restore); flush your cache and subscribe from the head (after_sequence unset)",
                log.store_id()
            )));
        }
    }
    let head = log.durable_head();
    let cursor = match request.after {
        None => head,
        Some(after) if after > head => {
            return Err(Error::OutOfRange(format!(
                "after_sequence {after} is beyond the head {head}: this log is not the one your cursor \
                 came from; flush your cache and subscribe from the head (after_sequence unset)"
            )))
        }
        Some(after) => {
            check_retained(&log, after, head)?;
            after
        }
    };
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (end_tx, end_rx) = oneshot::channel();
    let producer = Producer {
        log,
        cursor,
        orgs: request.orgs,
        tx,
        config,
        last_checkpoint: Instant::now(),
        standing,
    };
    shutdown.spawn(producer.run(request.after.is_none(), shutdown.clone(), end_tx));
    // The producer's messages, then the status it ended with (if it ended with one).
    let end = stream::once(end_rx).filter_map(|end| async move { end.ok().map(Err) });
    // The slot lives as long as the body tonic holds, which is what holds the buffers.
    let stream = ReceiverStream::new(rx).chain(end);
    Ok(Box::pin(Holding::new(Box::pin(stream), slot)))
}

/// The events after `after` must still be in the log.
fn check_retained(log: &EventLog, after: u64, head: u64) -> Result<()> {
    if after == head {
        return Ok(());
    }
    match log.first_retained()? {
        Some(first) if first <= after + 1 => Ok(()),
        first => Err(pruned(after, first)),
    }
}

fn pruned(after: u64, first: Option<u64>) -> Error {
    let retained = match first {
        Some(first) => format!(
            "oldest retained: {first}; to read what is retained, subscribe with after_sequence = {}",
            first - 1
        ),
        None => "no events are retained".to_owned(),
    };
    Error::OutOfRange(format!(
        "events after sequence {after} are no longer retained ({retained}); a cache must be flushed and \
         subscribe from the head (after_sequence unset)"
    ))
}

/// Why a producer stopped.
enum End {
    /// The subscriber went away: nothing to tell anyone.
    Gone,
    /// End the stream with this status.
    Status(Status),
}

impl From<Status> for End {
    fn from(status: Status) -> Self {
        End::Status(status)
    }
}

impl From<Error> for End {
    fn from(error: Error) -> Self {
        End::Status(error.into())
    }
}

struct Producer {
    log: EventLog,
    /// Every event with a sequence at or below this has been sent (or filtered out).
    cursor: u64,
    orgs: HashSet<OrgId>,
    tx: mpsc::Sender<Result<pb::WatchRevocationsResponse, Status>>,
    config: WatchConfig,
    /// When the last checkpoint was sent: the next is due a heartbeat later, events or not.
    last_checkpoint: Instant,
    /// The subscriber's account, checked again at every wake-up and heartbeat: a deleted
    /// account's stream ends within one heartbeat and is sent nothing more.
    standing: Standing,
}

impl Producer {
    async fn run(mut self, from_head: bool, shutdown: Shutdown, end: oneshot::Sender<Status>) {
        if let Err(End::Status(status)) = self.serve(from_head, &shutdown).await {
            let _ = end.send(status);
        }
    }

    async fn serve(&mut self, from_head: bool, shutdown: &Shutdown) -> Result<(), End> {
        // Subscribed before reading the head, so no change after the cursor was chosen is missed.
        let mut head = self.log.watch_head();
        if from_head {
            // Sent at once: a client's streaming call returns only when the first message arrives.
            self.checkpoint().await?;
        }
        let target = *head.borrow_and_update();
        let unsent = self.catch_up(target).await?;
        if !from_head || unsent {
            self.checkpoint().await?;
        }
        // Notices a subscriber that went away at once, not at the next send.
        let gone = self.tx.clone();
        loop {
            tokio::select! {
                biased;
                () = shutdown.begun() => return Err(self.goodbye().await),
                () = gone.closed() => return Err(End::Gone),
                // Before a wake-up: a stream busy with events still gets its checkpoints.
                () = sleep_until(self.last_checkpoint + self.config.heartbeat) => {
                    self.standing.check()?;
                    // Read the clock, then the head, then send up to it: the checkpoint then
                    // says "everything acknowledged by server_time has been sent".
                    let server_time = SystemTime::now();
                    let target = *head.borrow_and_update();
                    self.catch_up(target).await?;
                    self.send(self.checkpoint_event(server_time, target)).await?;
                }
                changed = head.changed() => {
                    if changed.is_err() {
                        // The store faulted: its durable head will not move again.
                        return Err(End::Status(Status::unavailable(format!(
                            "the server's storage failed; resubscribe (on another replica, or once it \
                             restarts) with after_sequence = {}",
                            self.cursor
                        ))));
                    }
                    self.standing.check()?;
                    let target = *head.borrow_and_update();
                    if self.catch_up(target).await? {
                        // The last event was filtered out: tell the subscriber how far it is.
                        self.checkpoint().await?;
                    }
                }
            }
        }
    }

    /// Sends every event up to `target`. Returns whether the cursor moved past what was sent.
    async fn catch_up(&mut self, target: u64) -> Result<bool, End> {
        let mut unsent = false;
        while self.cursor < target {
            let batch = self.log.read(self.cursor, target, BATCH)?;
            if batch.is_empty() {
                return Err(pruned(self.cursor, self.log.first_retained()?).into());
            }
            for event in batch {
                if event.sequence != self.cursor + 1 {
                    return Err(pruned(self.cursor, Some(event.sequence)).into());
                }
                self.cursor = event.sequence;
                unsent = !self.wanted(&event);
                if !unsent {
                    self.send(Event::Revocation(event.into())).await?;
                }
            }
        }
        Ok(unsent)
    }

    fn wanted(&self, event: &RevocationEvent) -> bool {
        self.orgs.is_empty() || self.orgs.contains(&event.org_id)
    }

    /// "Everything up to the cursor has been sent; at `server_time` the durable head was
    /// `durable_head`." The head must be read after the clock.
    fn checkpoint_event(&self, server_time: SystemTime, durable_head: u64) -> Event {
        Event::Checkpoint(pb::Checkpoint {
            sequence: self.cursor,
            store_id: self.log.store_id().to_owned(),
            server_time: Some(server_time.into()),
            durable_head,
        })
    }

    /// A checkpoint of where the stream is now (the head may be ahead of it).
    fn checkpoint_now(&self) -> Event {
        let server_time = SystemTime::now();
        self.checkpoint_event(server_time, self.log.durable_head())
    }

    async fn checkpoint(&mut self) -> Result<(), End> {
        self.send(self.checkpoint_now()).await
    }

    async fn send(&mut self, event: Event) -> Result<(), End> {
        let is_checkpoint = matches!(event, Event::Checkpoint(_));
        let message = Ok(pb::WatchRevocationsResponse { event: Some(event) });
        match self.tx.send_timeout(message, self.config.stall_timeout).await {
            Ok(()) => {
                if is_checkpoint {
                    self.last_checkpoint = Instant::now();
                }
                Ok(())
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(End::Gone),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(End::Status(Status::resource_exhausted(format!(
                "subscriber read nothing for {:?}; resubscribe with after_sequence set to the last sequence \
                 you applied",
                self.config.stall_timeout
            )))),
        }
    }

    /// At shutdown: a last checkpoint if the subscriber takes it promptly, then UNAVAILABLE.
    async fn goodbye(&mut self) -> End {
        let message = Ok(pb::WatchRevocationsResponse {
            event: Some(self.checkpoint_now()),
        });
        let _ = self.tx.send_timeout(message, GOODBYE).await;
        End::Status(Status::unavailable(format!(
            "server is shutting down; resubscribe with after_sequence = {}",
            self.cursor
        )))
    }
}
