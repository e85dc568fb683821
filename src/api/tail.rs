//! The shared tail of the revocation log: ONE follower per server reads each new event from the
//! store once and encodes it once, and keeps the most recent ones in memory for every stream;
//! ONE ticker encodes the heartbeat checkpoint once per interval for every stream at the head.
//!
//! Streams learn of a new head, a new heartbeat or shutdown through one [`Signal`] (a `watch`:
//! it only wakes, and cannot lag or drop anything). Streams are spread over [`SHARDS`] such
//! signals, and the tail wakes them shard by shard, yielding to the runtime after every few
//! hundred streams: a revocation to 1,000 subscribers is then a few small bursts with the other
//! tasks (a ValidateKey that arrived meanwhile) run between them, not one burst that every
//! request queues behind.
//!
//! Streams read the store themselves only when they are behind what the tail holds (a resume
//! from an old cursor). The tail follows the store's durable [`Head`], so it never holds an
//! event that is not durable; when the store's head carries a fault, every stream ends.
//!
//! The follower is the one place that learns of new events: on sled it wakes on the group
//! commit's durable head; another backend feeds the same `EventLog` interface.

use std::{
    collections::VecDeque,
    hash::{Hash, Hasher},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, RwLock,
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use prost::Message;
use tokio::sync::{watch, Notify};

use crate::domain::{OrgId, Result, RevocationEvent};
use crate::proto::{self as pb, watch_revocations_response::Event};
use crate::shutdown::Shutdown;
use crate::store::{Confirmed, EventLog, Head};

/// Events read from the store per batch.
pub const BATCH: usize = 512;
/// The signals streams are spread over: the tail wakes the streams of one, then lets the
/// runtime run other tasks before the next.
pub const SHARDS: usize = 64;
/// How many streams the tail wakes before it lets other tasks run: each yield is a trip
/// through the scheduler (and a chance to lose the core on a busy machine), so not after
/// every small shard.
const WAKE_BETWEEN_YIELDS: usize = 256;

/// One revocation, encoded once as a whole `WatchRevocationsResponse`.
pub struct TailEvent {
    pub sequence: u64,
    pub org_id: OrgId,
    pub encoded: Bytes,
}

impl TailEvent {
    pub fn new(event: RevocationEvent) -> TailEvent {
        TailEvent {
            sequence: event.sequence,
            org_id: event.org_id.clone(),
            encoded: encode(Event::Revocation(event.into())),
        }
    }
}

/// What a stream is woken for: the tail's head moved, a heartbeat is due, or shutdown began.
#[derive(Clone)]
pub struct Signal {
    /// Every durable event up to `head.applied` is in the tail (or older than what it holds).
    /// With the store's fault once it has stopped: no event will come, and streams end.
    pub head: Head,
    /// The latest heartbeat; a new one (another `Arc`) is due to every stream.
    pub beat: Arc<Beat>,
    /// Shutdown has begun: streams send a last checkpoint and end.
    pub closing: bool,
}

/// A heartbeat: the checkpoint at the tail's head, encoded once for every stream there.
pub struct Beat {
    pub sequence: u64,
    pub encoded: Bytes,
}

pub fn encode(event: Event) -> Bytes {
    pb::WatchRevocationsResponse { event: Some(event) }
        .encode_to_vec()
        .into()
}

/// The one checkpoint message: "everything up to `sequence` has been sent; at `server_time`
/// the durable head was `durable_head`" (read after the clock). A heartbeat's has both at the
/// head.
pub fn checkpoint(
    store_id: &str,
    sequence: u64,
    durable_head: u64,
    server_time: SystemTime,
) -> Event {
    Event::Checkpoint(pb::Checkpoint {
        sequence,
        store_id: store_id.to_owned(),
        server_time: Some(server_time.into()),
        durable_head,
    })
}

#[derive(Clone)]
pub struct Tail {
    shared: Arc<Shared>,
}

struct Shared {
    log: EventLog,
    recent: RwLock<Recent>,
    /// Every event up to `applied` is in `recent` (or older than its first entry); with the
    /// store's fault once it has stopped: no event will come, and streams end. What the
    /// ticker waits on; streams hear of it through their shard's signal.
    head: watch::Sender<Head>,
    /// One signal per shard of streams, each carrying the same news.
    shards: Box<[watch::Sender<Signal>]>,
    /// The shard the next stream of an unknown connection joins (round robin).
    next_shard: AtomicUsize,
    /// Wakes the idle task (see [`Tail::nudge`]).
    nudge: Notify,
}

/// The newest events, in order, without gaps.
struct Recent {
    /// The sequence `events[0]` has, or would have when empty.
    first: u64,
    events: VecDeque<Arc<TailEvent>>,
    capacity: usize,
}

impl Recent {
    fn push(&mut self, event: TailEvent) {
        if self.events.len() == self.capacity {
            self.events.pop_front();
            self.first += 1;
        }
        self.events.push_back(Arc::new(event));
    }
}

impl Tail {
    /// Starts the follower and the ticker; both end at shutdown.
    pub fn start(log: EventLog, capacity: usize, heartbeat: Duration, shutdown: &Shutdown) -> Tail {
        let durable = log.head();
        let head = durable.borrow().applied;
        let confirmed = log.confirmed();
        let first = checkpoint(log.store_id(), head, confirmed.head, confirmed.at);
        let first_beat = Arc::new(Beat {
            sequence: head,
            encoded: encode(first),
        });
        let signal = Signal {
            head: Head::live(head),
            beat: first_beat,
            closing: false,
        };
        let tail = Tail {
            shared: Arc::new(Shared {
                recent: RwLock::new(Recent {
                    first: head + 1,
                    events: VecDeque::with_capacity(capacity),
                    capacity: capacity.max(1),
                }),
                head: watch::Sender::new(Head::live(head)),
                shards: (0..SHARDS)
                    .map(|_| watch::Sender::new(signal.clone()))
                    .collect(),
                next_shard: AtomicUsize::new(0),
                nudge: Notify::new(),
                log,
            }),
        };
        shutdown.spawn(tail.clone().follow(durable, shutdown.clone()));
        shutdown.spawn(tail.clone().tick(heartbeat, shutdown.clone()));
        shutdown.spawn(tail.clone().idle(shutdown.clone()));
        tail
    }

    /// Does nothing each time it is nudged (see [`Tail::nudge`]).
    async fn idle(self, shutdown: Shutdown) {
        let begun = shutdown.begun();
        tokio::pin!(begun);
        loop {
            tokio::select! {
                biased;
                () = &mut begun => return,
                () = self.shared.nudge.notified() => {}
            }
        }
    }

    pub fn log(&self) -> &EventLog {
        &self.shared.log
    }

    /// Wakes when the tail's head moves or the store stops.
    pub fn head(&self) -> watch::Receiver<Head> {
        self.shared.head.subscribe()
    }

    /// A new stream's signal, with its current value marked seen: the streams of one
    /// connection share a shard (so they are woken together, and its connection task can send
    /// their messages in one write); streams whose connection is unknown take turns.
    pub fn signal(&self, connection: Option<SocketAddr>) -> watch::Receiver<Signal> {
        let shard = match connection {
            Some(peer) => {
                let mut hasher = std::hash::DefaultHasher::new();
                peer.hash(&mut hasher);
                hasher.finish() as usize
            }
            None => self.shared.next_shard.fetch_add(1, Ordering::Relaxed),
        };
        self.shared.shards[shard % SHARDS].subscribe()
    }

    /// Wakes the tail's idle task. A stream calls it once hyper has taken its message: the
    /// task woken last on a runtime worker runs next, and this one (which does nothing) takes
    /// that place from the connection's task, which then runs after the other streams woken
    /// with this one and sends all their messages in one write instead of one write each.
    pub fn nudge(&self) {
        self.shared.nudge.notify_one();
    }

    /// Tells every shard's streams, one shard at a time: after waking about
    /// [`WAKE_BETWEEN_YIELDS`] streams the tail yields, so that tasks already waiting (a
    /// request that arrived meanwhile) run before the next shards' streams, not after all of
    /// them.
    async fn publish(&self, change: impl Fn(&mut Signal)) {
        let mut woken = 0;
        for shard in self.shared.shards.iter() {
            shard.send_modify(&change);
            woken += shard.receiver_count();
            if woken >= WAKE_BETWEEN_YIELDS {
                tokio::task::yield_now().await;
                woken = 0;
            }
        }
    }

    async fn publish_head(&self, head: Head) {
        self.shared.head.send_replace(head.clone());
        self.publish(|signal| signal.head = head.clone()).await;
    }

    /// Up to `limit` events after `after` (and up to the head) from memory; `None` when
    /// `after + 1` is older than what memory holds, so the caller must read the store.
    pub fn after(&self, after: u64, limit: usize) -> Option<Vec<Arc<TailEvent>>> {
        let recent = self
            .shared
            .recent
            .read()
            .expect("tail lock is never poisoned");
        let skip = usize::try_from((after + 1).checked_sub(recent.first)?).ok()?;
        Some(
            recent
                .events
                .iter()
                .skip(skip)
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    /// Reads each new durable event once, encodes it once, and moves the head. When the store
    /// stops serving (a sled fault, or an etcd replica that cannot confirm its head) the tail's
    /// head carries the fault, which ends every stream; if the store serves again (etcd came
    /// back), the tail follows its durable head from where it was.
    async fn follow(self, mut durable: watch::Receiver<Head>, shutdown: Shutdown) {
        let mut cursor = self.shared.head.borrow().applied;
        loop {
            let store = durable.borrow_and_update().clone();
            let before = self.shared.head.borrow().clone();
            match store.fault {
                None => {
                    if before.fault.is_some() {
                        self.shared.head.send_replace(Head::live(cursor));
                    }
                    if let Err(error) = self.catch_up(&mut cursor, store.applied) {
                        tracing::error!(%error, "the revocation tail could not read the log");
                    }
                }
                Some(fault) if before.fault.is_none() => {
                    self.shared.head.send_replace(Head {
                        applied: cursor,
                        fault: Some(fault),
                    });
                }
                Some(_) => {}
            }
            let head = self.shared.head.borrow().clone();
            if head != before {
                self.publish_head(head).await;
            }
            tokio::select! {
                () = shutdown.begun() => return self.publish(|signal| signal.closing = true).await,
                changed = durable.changed() => if changed.is_err() {
                    return self.publish(|signal| signal.closing = true).await;
                },
            }
        }
    }

    fn catch_up(&self, cursor: &mut u64, target: u64) -> Result<()> {
        while *cursor < target {
            let batch = self.shared.log.read(*cursor, target, BATCH)?;
            let Some(last) = batch.last().map(|e| e.sequence) else {
                // Pruned before the tail read them (only when retention is tiny): the tail
                // starts again at the target, and streams behind it read the store.
                self.restart_at(target);
                *cursor = target;
                break;
            };
            {
                let mut recent = self
                    .shared
                    .recent
                    .write()
                    .expect("tail lock is never poisoned");
                for event in batch {
                    if event.sequence != recent.first + recent.events.len() as u64 {
                        recent.events.clear();
                        recent.first = event.sequence;
                    }
                    recent.push(TailEvent::new(event));
                }
            }
            *cursor = last;
            self.shared.head.send_replace(Head::live(last));
        }
        Ok(())
    }

    fn restart_at(&self, head: u64) {
        let mut recent = self
            .shared
            .recent
            .write()
            .expect("tail lock is never poisoned");
        recent.events.clear();
        recent.first = head + 1;
        drop(recent);
        self.shared.head.send_replace(Head::live(head));
    }

    /// Encodes the checkpoint at the head once per heartbeat. The clock is read first, then
    /// the store's confirmed head, and the beat waits for the tail to hold everything up to that
    /// head: a beat then says "every revocation acknowledged by `server_time` is in here".
    async fn tick(self, heartbeat: Duration, shutdown: Shutdown) {
        let mut interval = tokio::time::interval(heartbeat);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut head = self.head();
        loop {
            tokio::select! {
                () = shutdown.begun() => return,
                _ = interval.tick() => {}
            }
            // The clock, then a barrier, then the head (`store/head.rs`): on etcd a replica
            // vouches only for what it has confirmed; one that cannot sends no beat (and its
            // probe soon takes it out of service).
            let confirmed = tokio::select! {
                () = shutdown.begun() => return,
                confirmed = self.shared.log.confirm() => confirmed,
            };
            let Ok(Confirmed {
                at: server_time,
                head: durable,
            }) = confirmed
            else {
                continue;
            };
            let caught_up = tokio::select! {
                () = shutdown.begun() => return,
                caught_up = head.wait_for(|h| h.fault.is_some() || h.applied >= durable) => caught_up.map(|h| h.fault.is_none()),
            };
            // A stopped store has no head to vouch for: no beat until it serves again.
            let Ok(true) = caught_up else { continue };
            let checkpoint = checkpoint(self.shared.log.store_id(), durable, durable, server_time);
            let beat = Arc::new(Beat {
                sequence: durable,
                encoded: encode(checkpoint),
            });
            self.publish(|signal| signal.beat = beat.clone()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn started() -> (Tail, Shutdown, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default())
            .unwrap()
            .store;
        let shutdown = Shutdown::default();
        let tail = Tail::start(EventLog::new(store), 16, Duration::from_secs(1), &shutdown);
        (tail, shutdown, dir)
    }

    #[tokio::test]
    async fn the_streams_of_one_connection_share_a_signal_and_the_others_take_turns() {
        let (tail, shutdown, _dir) = started();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let first = tail.signal(Some(peer));
        for _ in 0..SHARDS {
            assert!(tail.signal(Some(peer)).same_channel(&first));
        }
        // Streams of unknown connections are spread over every shard.
        let unknown: Vec<_> = (0..SHARDS).map(|_| tail.signal(None)).collect();
        for (i, a) in unknown.iter().enumerate() {
            for b in &unknown[i + 1..] {
                assert!(!a.same_channel(b));
            }
        }
        shutdown.begin();
    }

    #[tokio::test]
    async fn every_shard_hears_of_shutdown() {
        let (tail, shutdown, _dir) = started();
        let mut signals: Vec<_> = (0..SHARDS).map(|_| tail.signal(None)).collect();
        shutdown.begin();
        for signal in &mut signals {
            let closing = signal.wait_for(|s| s.closing).await;
            assert!(closing.is_ok());
        }
    }
}
