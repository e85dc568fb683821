//! WatchRevocations: history from a cursor, then live events, with checkpoints.
//!
//! A stream is a [`Feed`]: the response body itself, polled by the task hyper runs for the
//! HTTP/2 stream, with no task or channel of its own. New events come from the server's one
//! shared [`Tail`]: read from the store once and encoded once for every stream; a stream reads
//! the store itself only when it is behind what the tail holds. Heartbeat checkpoints come from
//! the tail's one ticker, encoded once for every stream at the head. The tail's [`Signal`] is
//! only a wake-up (it cannot lag or drop anything). A feed prepares at most one batch of
//! messages at a time and only when polled, that is when hyper has room to send them: a slow
//! subscriber costs writers and other subscribers nothing. One that is woken but not polled
//! for `stall_timeout` (it stopped reading, and HTTP/2 flow control stopped hyper) is judged
//! stalled by a clock (`stall.rs`: its slot is freed, and its connection closed if hyper never
//! polls it again), and is ended with RESOURCE_EXHAUSTED when next polled; it resumes from its
//! cursor without losing anything. The
//! subscriber's account is checked again whenever the stream wakes (an atomic load, and two
//! store reads only after an account changed): the stream of an account deleted meanwhile is
//! sent nothing more and ends UNAUTHENTICATED, at the latest at the next heartbeat.
//!
//! Architecture invariant: a stream never skips a sequence. If the next event it needs is gone
//! (pruned, or a different store), it ends with OUT_OF_RANGE instead.

use std::{
    collections::{HashSet, VecDeque},
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::WatchStream as Signals;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tonic::Status;

use super::auth::Standing;
use super::stall::{Alarm, Watched};
use super::tail::{checkpoint, encode, Beat, Signal, Tail, TailEvent, BATCH};
use crate::domain::{shown, Error, OrgId, Result};
use crate::proto as pb;
use crate::shutdown::Shutdown;
use crate::store::{Confirmed, EventLog};

/// A feed whose prepared messages held more than this gives the memory back once they are
/// sent: an idle subscriber should not keep a catch-up's worth of room.
const QUEUE_KEPT: usize = 16;

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
    connection: Option<SocketAddr>,
    request: WatchRequest,
    config: WatchConfig,
    shutdown: Shutdown,
    standing: Standing,
    watched: Arc<Watched>,
) -> Result<WatchStream> {
    let log = tail.log();
    log.head().borrow().serving()?;
    if let Some(theirs) = &request.store_id {
        if theirs != log.store_id() {
            return Err(Error::OutOfRange(format!(
                "store_id {theirs} is not this server's store ({}): its log was replaced (new data dir or \
                 restore); flush your cache and subscribe from the head (after_sequence unset)",
                log.store_id()
            )));
        }
    }
    let head = log.head().borrow().applied;
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
    Ok(Box::pin(Feed::new(
        tail,
        connection,
        cursor,
        request.orgs,
        request.after.is_none(),
        config.stall_timeout,
        standing,
        watched,
        shutdown.hold(),
    )))
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

/// A checkpoint due once the cursor reaches `sequence`: a heartbeat's (sent as the tail encoded
/// it when the cursor is exactly there), or the one that follows a cursor's history.
struct Due {
    sequence: u64,
    beat: Option<Arc<Beat>>,
}

/// One revocation stream: the response body, polled by hyper's task for the HTTP/2 stream.
pub struct Feed {
    tail: Tail,
    /// Every event with a sequence at or below this has been prepared (or filtered out).
    cursor: u64,
    /// Events up to here are durable and the stream is to send them.
    target: u64,
    orgs: HashSet<OrgId>,
    /// Wakes the feed (through `alarm`) when the tail's head moves, a heartbeat is due, or
    /// shutdown begins.
    signal: Signals<Signal>,
    /// The heartbeat this stream has already been told of.
    last_beat: Arc<Beat>,
    /// Checkpoints due, in sequence order: at most the history's and one heartbeat's.
    due: VecDeque<Due>,
    /// The last event prepared was filtered out: a checkpoint tells the subscriber how far it is.
    filtered_last: bool,
    closing: bool,
    /// The store stopped (faulted): its head will not move again.
    stopped: bool,
    /// Messages prepared and not yet taken by hyper, in order; then how the stream ends.
    queue: VecDeque<Bytes>,
    end: Option<Status>,
    ended: bool,
    /// Polls that found nothing to send since the last message was handed out: the first is
    /// tonic's encoder asking for more before it hands hyper the frame, the second comes after
    /// hyper has queued the frame for its connection (see [`Tail::nudge`]).
    idle_polls: u8,
    stall_timeout: Duration,
    alarm: Arc<Alarm>,
    /// `alarm` as a waker, made once.
    alarm_waker: Waker,
    /// The subscriber's account, checked again at every wake-up (see [`Standing::recheck`]): a
    /// deleted account's stream is sent nothing more and ends.
    standing: Standing,
    /// The stream's place under the subscriber caps, under the stall sweeper's watch
    /// (`stall.rs`); given back when hyper drops the body, or when the stream stalls.
    watched: Arc<Watched>,
    /// Shutdown waits for the body to be dropped, since it holds the store.
    _held: TaskTrackerToken,
}

impl Feed {
    #[allow(clippy::too_many_arguments)]
    fn new(
        tail: Tail,
        connection: Option<SocketAddr>,
        cursor: u64,
        orgs: HashSet<OrgId>,
        from_head: bool,
        stall_timeout: Duration,
        standing: Standing,
        watched: Arc<Watched>,
        held: TaskTrackerToken,
    ) -> Feed {
        // Subscribed before reading the head, so no change after the cursor was chosen is missed.
        let signal = tail.signal(connection);
        let now = signal.borrow().clone();
        let alarm = watched.alarm().clone();
        let mut feed = Feed {
            target: cursor,
            cursor,
            orgs,
            signal: Signals::from_changes(signal),
            last_beat: now.beat,
            due: VecDeque::new(),
            filtered_last: false,
            closing: now.closing,
            // A faulted tail head while the store is live: the tail has not yet followed the
            // store back (an etcd outage), and the stream waits for its next head instead of ending.
            stopped: now.head.fault.is_some() && tail.log().head().borrow().fault.is_some(),
            queue: VecDeque::new(),
            end: None,
            ended: false,
            idle_polls: 0,
            stall_timeout,
            alarm_waker: Waker::from(alarm.clone()),
            alarm,
            standing,
            watched,
            _held: held,
            tail,
        };
        if from_head {
            // Sent at once: a client's streaming call returns only when the first message arrives.
            let first = feed.checkpoint_now();
            feed.queue.push_back(first);
        }
        feed.target = feed.log().head().borrow().applied.max(cursor);
        if !from_head {
            // The history, then a checkpoint at the head as it was at the start.
            feed.due.push_back(Due {
                sequence: feed.target,
                beat: None,
            });
        }
        feed
    }

    fn log(&self) -> &EventLog {
        self.tail.log()
    }

    /// Takes in what the tail announced. Prepares nothing: that waits until hyper polls.
    fn learn(&mut self, signal: Signal) {
        self.closing |= signal.closing;
        match signal.head.fault {
            None => self.target = self.target.max(signal.head.applied),
            Some(_) => self.stopped = true,
        }
        if !Arc::ptr_eq(&signal.beat, &self.last_beat) {
            let beat = signal.beat;
            // The ticker announces a beat once the tail holds everything up to it, possibly
            // before this shard has heard of that head.
            self.target = self.target.max(beat.sequence);
            self.last_beat = beat.clone();
            // A feed still behind an earlier heartbeat owes only the newest.
            if self.due.back().is_some_and(|d| d.beat.is_some()) {
                self.due.pop_back();
            }
            self.due.push_back(Due {
                sequence: beat.sequence,
                beat: Some(beat),
            });
        }
    }

    /// Prepares the next messages (at most one batch of events), or the end. Returns false when
    /// there is nothing to do until the signal wakes the feed.
    fn prepare(&mut self) -> bool {
        if self.closing {
            // A last checkpoint, if the subscriber takes it, then UNAVAILABLE.
            let goodbye = self.checkpoint_now();
            self.queue.push_back(goodbye);
            self.end = Some(Status::unavailable(format!(
                "server is shutting down; resubscribe with after_sequence = {}",
                self.cursor
            )));
            return true;
        }
        if self.stopped {
            self.end = Some(storage_failed(self.cursor));
            return true;
        }
        loop {
            let goal = self.due.front().map_or(self.target, |due| due.sequence);
            if self.cursor < goal {
                if let Err(end) = self.catch_up(goal) {
                    self.end = Some(end);
                    return true;
                }
                if !self.queue.is_empty() {
                    return true;
                }
                continue;
            }
            let checkpoint = match self.due.pop_front() {
                Some(Due {
                    beat: Some(beat), ..
                }) if beat.sequence == self.cursor => beat.encoded.clone(),
                Some(_) => self.checkpoint_now(),
                None if self.filtered_last => self.checkpoint_now(),
                None => return false,
            };
            self.filtered_last = false;
            self.queue.push_back(checkpoint);
            return true;
        }
    }

    /// Prepares the events after the cursor, up to `goal` and one batch: from the tail when it
    /// holds them, else from the store.
    fn catch_up(&mut self, goal: u64) -> Result<(), Status> {
        let batch = match self.tail.after(self.cursor, BATCH) {
            Some(batch) if !batch.is_empty() => batch,
            // Older than the tail holds, or newer than it has read yet.
            _ => self.read_log(goal)?,
        };
        for event in batch.into_iter().take_while(|e| e.sequence <= goal) {
            if event.sequence != self.cursor + 1 {
                return Err(pruned(self.cursor, Some(event.sequence)).into());
            }
            self.cursor = event.sequence;
            self.filtered_last = !self.wanted(&event);
            if !self.filtered_last {
                self.queue.push_back(event.encoded.clone());
            }
        }
        Ok(())
    }

    /// The next events after the cursor, read from the store and encoded for this stream.
    fn read_log(&self, target: u64) -> Result<Vec<Arc<TailEvent>>, Status> {
        let batch = self.log().read(self.cursor, target, BATCH)?;
        if batch.is_empty() {
            return Err(pruned(self.cursor, self.log().first_retained()?).into());
        }
        Ok(batch
            .into_iter()
            .map(|event| Arc::new(TailEvent::new(event)))
            .collect())
    }

    fn wanted(&self, event: &TailEvent) -> bool {
        self.orgs.is_empty() || self.orgs.contains(&event.org_id)
    }

    /// "Everything up to the cursor has been sent; at `server_time` the durable head was
    /// `durable_head`" (the head read after the clock; the stream may be behind it).
    /// Both come from the latest head this replica confirmed (`store/head.rs`), so a replica
    /// whose watch lags never stamps a current time on a head it has not confirmed.
    fn checkpoint_now(&self) -> Bytes {
        let Confirmed {
            at: server_time,
            head: durable_head,
        } = self.log().confirmed();
        let store_id = self.log().store_id();
        encode(checkpoint(store_id, self.cursor, durable_head, server_time))
    }

    /// Ends the stream at once: nothing prepared is sent.
    fn cut(&mut self, end: Status) {
        self.queue.clear();
        self.end = Some(end);
    }

    fn stalled(&self) -> Status {
        Status::resource_exhausted(format!(
            "subscriber read nothing for {}; resubscribe with after_sequence set to the last \
             sequence you applied",
            shown::duration(self.stall_timeout)
        ))
    }
}

impl Stream for Feed {
    type Item = Result<Bytes, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let unpolled = this.alarm.unpolled();
        if unpolled.is_some_and(|since| since > this.stall_timeout) {
            this.watched.mark_stalled();
        }
        if this.watched.is_stalled() && this.end.is_none() {
            let stalled = this.stalled();
            this.cut(stalled);
        }
        // Whatever the signal says is taken in now, and it is left waiting with the alarm as
        // its waker, so that a wake hyper does not act on is noticed.
        this.alarm.register(cx.waker());
        let alarm = this.alarm_waker.clone();
        let mut alarmed = Context::from_waker(&alarm);
        let mut woken = false;
        while let Poll::Ready(signal) = this.signal.poll_next_unpin(&mut alarmed) {
            woken = true;
            match signal {
                Some(signal) => this.learn(signal),
                // The tail is gone: the server is stopping.
                None => {
                    this.closing = true;
                    break;
                }
            }
        }
        if woken && this.end.is_none() {
            if let Err(status) = this.standing.recheck() {
                this.cut(status);
            }
        }
        loop {
            if let Some(message) = this.queue.pop_front() {
                if this.queue.is_empty() && this.queue.capacity() > QUEUE_KEPT {
                    this.queue = VecDeque::new();
                }
                this.idle_polls = 0;
                return Poll::Ready(Some(Ok(message)));
            }
            if let Some(end) = this.end.take() {
                this.ended = true;
                return Poll::Ready(Some(Err(end)));
            }
            if !this.prepare() {
                this.idle_polls = this.idle_polls.saturating_add(1);
                if this.idle_polls == 2 {
                    this.tail.nudge();
                }
                return Poll::Pending;
            }
        }
    }
}

/// The store faulted: its durable head will not move again.
fn storage_failed(cursor: u64) -> Status {
    Status::unavailable(format!(
        "the server's storage failed; resubscribe (on another replica, or once it restarts) with \
         after_sequence = {cursor}"
    ))
}
