//! Stalled revocation streams, ended by a clock.
//!
//! hyper polls a stream's body (`watch::Feed`) only when HTTP/2 flow control lets it send: for
//! a subscriber that never opens its window again, hyper keeps a frame queued, waits for window
//! and never polls the body again. So the stall cannot be judged by the feed alone. Each feed's
//! waker is an [`Alarm`] that notes the first wake-up (the tail's, at least one per heartbeat)
//! not followed by a poll, and one sweeper task reads every alarm a few times per timeout. A
//! stream woken and not polled for longer than `--subscriber-stall-timeout` is stalled: its slot
//! under the subscriber caps is given back at once (which lowers `zsc_revocation_subscribers`),
//! it is counted in `zsc_revocation_subscribers_ended_total{reason="stalled"}`, and if hyper ever
//! polls it again (the client read again) it ends with RESOURCE_EXHAUSTED, which says how to
//! resume. Ending it on the wire otherwise needs its connection: hyper holds the HTTP/2 stream
//! (so no RST_STREAM can be sent for it from here) and tonic has no per-connection GOAWAY, so the
//! connection is closed (`peers.rs`) once every revocation stream on it has been stalled for
//! [`close_grace`] (time for a client that was only slow to read again and be told), or once
//! one stream has been stalled for three times that (so that a live stream cannot keep any
//! number of stalled ones, no longer counted by the caps, alive). Closing it drops the streams
//! and their buffers.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    task::{Wake, Waker},
    time::{Duration, Instant},
};

use futures_util::task::AtomicWaker;

use super::subscribers::Slot;
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::shutdown::Shutdown;

/// The sweeper reads every alarm at least this often, and four times per timeout when that is
/// shorter.
const SWEEP_AT_MOST: Duration = Duration::from_secs(1);

/// A stalled stream's connection is closed no sooner than this after the stall was found.
const CLOSE_GRACE_AT_LEAST: Duration = Duration::from_secs(10);

/// How long after a stall was found its connection may be closed: the stall timeout, and at
/// least [`CLOSE_GRACE_AT_LEAST`].
fn close_grace(timeout: Duration) -> Duration {
    timeout.max(CLOSE_GRACE_AT_LEAST)
}

/// A feed's waker for its signal: it wakes hyper's task and notes when the first wake that has
/// not been polled since happened.
pub struct Alarm {
    task: AtomicWaker,
    /// Microseconds after `epoch` (plus one, so that 0 means "none") of the first wake not yet
    /// polled.
    woken: AtomicU64,
    epoch: Instant,
}

impl Alarm {
    pub fn new() -> Arc<Alarm> {
        Arc::new(Alarm {
            task: AtomicWaker::new(),
            woken: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The task (hyper's, for the HTTP/2 stream) that a wake-up wakes.
    pub fn register(&self, task: &Waker) {
        self.task.register(task);
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1) + 1
    }

    /// How long ago the first wake since the last poll was, if there was one; clears it (the
    /// feed calls it when polled).
    pub fn unpolled(&self) -> Option<Duration> {
        self.since(self.woken.swap(0, Ordering::Relaxed))
    }

    /// As [`Alarm::unpolled`], without clearing it: for the sweeper.
    fn unpolled_for(&self) -> Option<Duration> {
        self.since(self.woken.load(Ordering::Relaxed))
    }

    fn since(&self, at: u64) -> Option<Duration> {
        (at != 0).then(|| Duration::from_micros(self.now().saturating_sub(at)))
    }
}

impl Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self
            .woken
            .compare_exchange(0, self.now(), Ordering::Relaxed, Ordering::Relaxed);
        self.task.wake();
    }
}

/// Every open revocation stream, for the sweeper. Cheap to clone.
#[derive(Clone)]
pub struct Stalls {
    watched: Arc<Mutex<Vec<Weak<Watched>>>>,
    timeout: Duration,
    metrics: Metrics,
    peers: Peers,
}

impl Stalls {
    /// Starts the sweeper, which ends with shutdown.
    pub fn start(timeout: Duration, metrics: Metrics, shutdown: &Shutdown) -> Stalls {
        let stalls = Stalls {
            watched: Arc::default(),
            timeout,
            metrics,
            peers: shutdown.peers().clone(),
        };
        let every = (timeout / 4).clamp(Duration::from_millis(1), SWEEP_AT_MOST);
        let sweeper = stalls.clone();
        let stopping = shutdown.clone();
        shutdown.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stopping.begun() => return,
                    _ = ticks.tick() => sweeper.sweep(),
                }
            }
        });
        stalls
    }

    /// Puts a new stream (holding `slot`) under watch, for as long as the returned handle
    /// lives; `peer` is its connection's.
    pub fn watch(&self, slot: Slot, peer: Option<SocketAddr>) -> Arc<Watched> {
        let watched = Arc::new(Watched {
            alarm: Alarm::new(),
            slot,
            peer,
            stalled_at: OnceLock::new(),
            timeout: self.timeout,
            metrics: self.metrics.clone(),
        });
        let mut all = self.watched.lock().expect("lock poisoned");
        all.push(Arc::downgrade(&watched));
        watched
    }

    /// Marks the streams stalled since the last sweep, and closes the connections whose streams
    /// have all been stalled for the grace, or one for three times it.
    fn sweep(&self) {
        let live: Vec<Arc<Watched>> = {
            let mut all = self.watched.lock().expect("lock poisoned");
            all.retain(|w| w.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        let grace = close_grace(self.timeout);
        // Per connection: whether every stream was stalled for the grace, and whether one was
        // for three times it.
        let mut connections: HashMap<SocketAddr, (bool, bool)> = HashMap::new();
        for stream in &live {
            let stalled_for = stream.check();
            if let Some(peer) = stream.peer {
                let (all, long) = connections.entry(peer).or_insert((true, false));
                *all &= stalled_for.is_some_and(|d| d > grace);
                *long |= stalled_for.is_some_and(|d| d > grace * 3);
            }
        }
        for (peer, (all_stalled, long_stalled)) in connections {
            if (all_stalled || long_stalled) && self.peers.close(peer) {
                tracing::debug!(%peer, "connection closed: its revocation streams stalled");
            }
        }
    }
}

/// One stream under watch; the feed owns it.
pub struct Watched {
    alarm: Arc<Alarm>,
    slot: Slot,
    peer: Option<SocketAddr>,
    /// Set once, when the stream is found stalled.
    stalled_at: OnceLock<Instant>,
    timeout: Duration,
    metrics: Metrics,
}

impl Watched {
    /// The stream's waker for its signal.
    pub fn alarm(&self) -> &Arc<Alarm> {
        &self.alarm
    }

    /// Whether the stream was found stalled (then it is to end when next polled).
    pub fn is_stalled(&self) -> bool {
        self.stalled_at.get().is_some()
    }

    /// Marks the stream stalled, once: its slot is given back and it is counted. It is woken,
    /// in case hyper polls it after all.
    pub fn mark_stalled(&self) {
        if self.stalled_at.set(Instant::now()).is_ok() {
            self.slot.release();
            self.metrics.subscriber_ended("stalled");
            self.alarm.task.wake();
        }
    }

    /// How long the stream has been known stalled, after marking it if its alarm says so.
    fn check(&self) -> Option<Duration> {
        if !self.is_stalled()
            && self
                .alarm
                .unpolled_for()
                .is_some_and(|since| since > self.timeout)
        {
            self.mark_stalled();
        }
        self.stalled_at.get().map(Instant::elapsed)
    }
}
