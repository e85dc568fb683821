//! WatchRevocations: history from a cursor, then live events, with checkpoints.
//!
//! Each stream has a producer task that pushes encoded messages into a small bounded channel
//! that tonic drains. New events come from the server's one shared [`Tail`]: read from the store
//! once and encoded once for every stream; a stream reads the store itself only when it is
//! behind what the tail holds. Heartbeat checkpoints come from the tail's one ticker, encoded
//! once for every stream at the head. The tail's head `watch` channel is only a wake-up (it
//! cannot lag or drop anything). So a slow subscriber costs writers and other subscribers
//! nothing, and one that stops reading for `stall_timeout` is ended with RESOURCE_EXHAUSTED; it
//! resumes from its cursor without losing anything. The subscriber's account is checked again
//! whenever the stream wakes and at every heartbeat: the stream of an account deleted
//! meanwhile is sent nothing more and ends UNAUTHENTICATED.
//!
//! Architecture invariant: a stream never skips a sequence. If the next event it needs is gone
//! (pruned, or a different store), it ends with OUT_OF_RANGE instead.

use std::{
    collections::HashSet,
    pin::Pin,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::auth::Standing;
use super::subscribers::{Holding, Slot};
use super::tail::{checkpoint, encode, Tail, TailEvent, BATCH};
use crate::domain::{Error, OrgId, Result};
use crate::proto as pb;
use crate::shutdown::Shutdown;
use crate::store::EventLog;

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

/// Each item is one whole `WatchRevocationsResponse`, already encoded (see `watch_route.rs`).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

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
    tail: Tail,
    request: WatchRequest,
    config: WatchConfig,
    shutdown: Shutdown,
    standing: Standing,
    slot: Slot,
) -> Result<WatchStream> {
    let log = tail.log();
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
            check_retained(log, after, head)?;
            after
        }
    };
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (end_tx, end_rx) = oneshot::channel();
    let producer = Producer {
        tail,
        cursor,
        orgs: request.orgs,
        tx,
        config,
        standing,
    };
    shutdown.spawn(producer.run(request.after.is_none(), shutdown.clone(), end_tx));
    // The producer's messages, then the status it ended with (if it ended with one).
    let end = stream::once(end_rx).filter_map(|end| async move { end.ok().map(Err) });
    // The slot lives as long as the body tonic holds, which is what holds the buffers.
    let stream = ReceiverStream::new(rx).map(Ok).chain(end);
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
    tail: Tail,
    /// Every event with a sequence at or below this has been sent (or filtered out).
    cursor: u64,
    orgs: HashSet<OrgId>,
    tx: mpsc::Sender<Bytes>,
    config: WatchConfig,
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

    fn log(&self) -> &EventLog {
        self.tail.log()
    }

    async fn serve(&mut self, from_head: bool, shutdown: &Shutdown) -> Result<(), End> {
        // Subscribed before reading the head, so no change after the cursor was chosen is missed.
        let mut head = self.tail.head();
        let mut beat = self.tail.beat();
        beat.borrow_and_update();
        if from_head {
            // Sent at once: a client's streaming call returns only when the first message arrives.
            self.checkpoint().await?;
        }
        let target = self.log().durable_head();
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
                changed = beat.changed() => {
                    if changed.is_err() {
                        return Err(self.goodbye().await);
                    }
                    self.standing.check()?;
                    let beat = beat.borrow_and_update().clone();
                    self.catch_up(beat.sequence).await?;
                    if self.cursor == beat.sequence {
                        self.send(beat.encoded.clone()).await?;
                    } else {
                        self.checkpoint().await?;
                    }
                }
                changed = head.changed() => {
                    let target = match changed.map(|()| *head.borrow_and_update()) {
                        Ok(Some(target)) => target,
                        _ => return Err(storage_failed(self.cursor)),
                    };
                    self.standing.check()?;
                    if self.catch_up(target).await? {
                        // The last event was filtered out: tell the subscriber how far it is.
                        self.checkpoint().await?;
                    }
                }
            }
        }
    }

    /// Sends every event up to `target`: from the tail when it holds them, else from the
    /// store. Returns whether the cursor moved past what was sent.
    async fn catch_up(&mut self, target: u64) -> Result<bool, End> {
        let mut unsent = false;
        while self.cursor < target {
            let batch = match self.tail.after(self.cursor, BATCH) {
                Some(batch) if !batch.is_empty() => batch,
                // Older than the tail holds, or newer than it has read yet.
                _ => self.read_log(target)?,
            };
            for event in batch.into_iter().take_while(|e| e.sequence <= target) {
                if event.sequence != self.cursor + 1 {
                    return Err(pruned(self.cursor, Some(event.sequence)).into());
                }
                self.cursor = event.sequence;
                unsent = !self.wanted(&event);
                if !unsent {
                    self.send(event.encoded.clone()).await?;
                }
            }
        }
        Ok(unsent)
    }

    /// The next events after the cursor, read from the store and encoded for this stream.
    fn read_log(&self, target: u64) -> Result<Vec<std::sync::Arc<TailEvent>>, End> {
        let batch = self.log().read(self.cursor, target, BATCH)?;
        if batch.is_empty() {
            return Err(pruned(self.cursor, self.log().first_retained()?).into());
        }
        Ok(batch
            .into_iter()
            .map(|event| std::sync::Arc::new(TailEvent::new(event)))
            .collect())
    }

    fn wanted(&self, event: &TailEvent) -> bool {
        self.orgs.is_empty() || self.orgs.contains(&event.org_id)
    }

    /// "Everything up to the cursor has been sent; at `server_time` the durable head was
    /// `durable_head`" (the head read after the clock; the stream may be behind it).
    fn checkpoint_now(&self) -> Bytes {
        let server_time = SystemTime::now();
        let durable_head = self.log().durable_head();
        let store_id = self.log().store_id();
        encode(checkpoint(store_id, self.cursor, durable_head, server_time))
    }

    async fn checkpoint(&mut self) -> Result<(), End> {
        self.send(self.checkpoint_now()).await
    }

    async fn send(&mut self, message: Bytes) -> Result<(), End> {
        match self.tx.send_timeout(message, self.config.stall_timeout).await {
            Ok(()) => Ok(()),
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
        let _ = self.tx.send_timeout(self.checkpoint_now(), GOODBYE).await;
        End::Status(Status::unavailable(format!(
            "server is shutting down; resubscribe with after_sequence = {}",
            self.cursor
        )))
    }
}

/// The store faulted: its durable head will not move again.
fn storage_failed(cursor: u64) -> End {
    End::Status(Status::unavailable(format!(
        "the server's storage failed; resubscribe (on another replica, or once it restarts) with \
         after_sequence = {cursor}"
    )))
}
