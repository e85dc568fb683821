//! The Verifier's memory and its rules, free of I/O so each rule can be tested on its own.
//!
//! The read/invalidate rule: a ValidateKey success read at log head `h` may be cached only if
//! this Verifier will see every revocation after `h`. It sees everything after `trusted_from`
//! (the head it subscribed at, or resumed from without a gap), so `h >= trusted_from` is
//! required; a key_id it has already seen revoked is never cached again; and the answer must
//! come from the store it follows (a sequence of another store, say one restored from a backup,
//! says nothing about this one's revocations).
//!
//! The freshness rule: the cache may answer only while the news it has applied is younger than
//! `max_staleness`, judged by the server's clock, not by when a message arrived. A checkpoint
//! whose `sequence >= durable_head` proves that every revocation acknowledged by its
//! `server_time` has been applied. If the two clocks differ by at most `max_clock_skew`, its
//! age at arrival is at most `arrival_wall - server_time + max_clock_skew`; from then on it
//! ages on the monotonic clock. So the cache may answer until
//! `arrival + max_staleness - max_clock_skew - (arrival_wall - server_time)`, and a revocation
//! acknowledged at real time `r` is never answered from the cache at or after
//! `r + max_staleness`. A checkpoint that is behind its durable head, that has no server time
//! (an older server) or whose server time is ahead of the local clock by more than
//! `max_clock_skew` (the bound is broken) grants nothing; a disconnect withdraws what was
//! granted.

use std::{
    collections::{HashMap, VecDeque},
    num::NonZeroUsize,
    sync::Arc,
    time::{Duration, SystemTime},
};

use compact_str::CompactString;
use tokio::time::Instant;

use super::cache::{Cache, Entry, KeyHash, Writer};

/// How old the applied news may be, and how far the server's clock may be from ours.
#[derive(Clone, Copy, Debug)]
pub struct Staleness {
    pub max_staleness: Duration,
    pub max_clock_skew: Duration,
}

/// A checkpoint as the freshness rule reads it.
#[derive(Clone, Copy, Debug)]
pub struct Checkpoint<'a> {
    pub sequence: u64,
    pub store_id: &'a str,
    pub durable_head: u64,
    /// None from a server that does not send it.
    pub server_time: Option<SystemTime>,
}

/// What a checkpoint did to freshness.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Grant {
    /// The cache may answer until this instant (or a later one granted before).
    Until(Instant),
    /// The stream had not sent everything up to the durable head.
    Behind,
    /// No server time: freshness cannot be judged, so the cache is not used.
    NoServerTime,
    /// The news was already too old when it arrived (a slow or buffering path).
    TooOld(Duration),
    /// The server's clock is ahead of ours by more than `max_clock_skew`: the bound the
    /// guarantee rests on does not hold, so nothing is granted.
    ClockAhead(Duration),
}

pub struct State {
    /// Bounded; the hits read it without the lock this `State` is under.
    cache: Writer,
    by_key_id: HashMap<CompactString, KeyHash>,
    /// Revoked key_ids this Verifier has applied, oldest first, bounded.
    revoked: VecDeque<(u64, String)>,
    revoked_ids: HashMap<String, u64>,
    revoked_capacity: usize,
    /// Every revocation with a greater sequence has been or will be applied. None until the
    /// stream's first checkpoint, and again after a flush.
    pub trusted_from: Option<u64>,
    /// The last sequence applied (event or checkpoint): where a resumed stream starts.
    pub applied: Option<u64>,
    pub store_id: Option<String>,
    /// The cache keeps the resulting deadline (the freshness rule), where hits read it.
    staleness: Staleness,
}

impl State {
    pub fn new(capacity: NonZeroUsize, revoked_capacity: usize, staleness: Staleness) -> Self {
        State {
            cache: Writer::new(capacity),
            by_key_id: HashMap::new(),
            revoked: VecDeque::new(),
            revoked_ids: HashMap::new(),
            revoked_capacity,
            trusted_from: None,
            applied: None,
            store_id: None,
            staleness,
        }
    }

    /// The cache, as the hits read it (without this state's lock).
    pub fn reader(&self) -> Arc<Cache> {
        self.cache.reader()
    }

    /// Whether the cache may answer at `now` (the freshness rule).
    pub fn fresh(&self, now: Instant) -> bool {
        self.cache.cache().fresh(now)
    }

    /// The stream is gone: nothing it said is renewed, so the cache stops answering at once.
    pub fn disconnected(&mut self) {
        self.cache.unfresh();
    }

    #[cfg(test)]
    pub fn get(&self, hash: &KeyHash) -> Option<Entry> {
        self.cache.cache().get(hash, Entry::clone)
    }

    pub fn len(&self) -> usize {
        self.cache.cache().len()
    }

    /// Offers a success read at `sequence` of the store `store_id`; returns whether it was
    /// cached. Sequences of another store say nothing about this one's revocations.
    pub fn admit(&mut self, hash: KeyHash, entry: Entry, sequence: u64, store_id: &str) -> bool {
        let ours = self.store_id.as_deref() == Some(store_id);
        let trusted = ours && self.trusted_from.is_some_and(|from| sequence >= from);
        if !trusted || self.revoked_ids.contains_key(entry.key_id.as_str()) {
            return false;
        }
        self.by_key_id.insert(entry.key_id.clone(), hash);
        if let Some(evicted) = self.cache.insert(hash, entry) {
            if self.by_key_id.get(&evicted.key_id) != Some(&hash) {
                self.by_key_id.remove(&evicted.key_id);
            }
        }
        true
    }

    /// Applies a revocation; returns the entry it evicted, if the key was cached.
    pub fn revoke(&mut self, sequence: u64, key_id: &str) -> Option<Entry> {
        self.applied = Some(sequence);
        self.revoked_ids.insert(key_id.to_owned(), sequence);
        self.revoked.push_back((sequence, key_id.to_owned()));
        while self.revoked.len() > self.revoked_capacity {
            let (seq, id) = self
                .revoked
                .pop_front()
                .expect("longer than capacity, so not empty");
            self.revoked_ids.remove(&id);
            // Forgetting this revocation: a success read before it can no longer be checked.
            self.trusted_from = self.trusted_from.map(|from| from.max(seq));
        }
        let hash = self.by_key_id.remove(key_id)?;
        self.cache.remove(&hash)
    }

    /// A checkpoint, arrived at `arrival` (monotonic) when the local wall clock read
    /// `arrival_wall`: everything up to `sequence` of `store_id` has been sent.
    pub fn checkpoint(
        &mut self,
        checkpoint: Checkpoint<'_>,
        arrival: Instant,
        arrival_wall: SystemTime,
    ) -> Grant {
        let Checkpoint {
            sequence, store_id, ..
        } = checkpoint;
        if self
            .store_id
            .as_deref()
            .is_some_and(|ours| ours != store_id)
        {
            self.flush();
        }
        self.store_id = Some(store_id.to_owned());
        if self.trusted_from.is_none() {
            self.trusted_from = Some(sequence);
        }
        self.applied = Some(self.applied.map_or(sequence, |a| a.max(sequence)));
        let grant = self.staleness.grant(checkpoint, arrival, arrival_wall);
        if let Grant::Until(until) = grant {
            self.cache.fresh_until(until);
        }
        grant
    }

    /// Forgets everything: the server's log is not the one this state was built from.
    pub fn flush(&mut self) {
        self.cache.unfresh();
        self.cache.clear();
        self.by_key_id.clear();
        self.revoked.clear();
        self.revoked_ids.clear();
        self.trusted_from = None;
        self.applied = None;
        self.store_id = None;
    }
}

impl Staleness {
    /// The freshness rule for one checkpoint (see the module docs).
    fn grant(
        &self,
        checkpoint: Checkpoint<'_>,
        arrival: Instant,
        arrival_wall: SystemTime,
    ) -> Grant {
        let Some(server_time) = checkpoint.server_time else {
            return Grant::NoServerTime;
        };
        if checkpoint.sequence < checkpoint.durable_head {
            return Grant::Behind;
        }
        // The most the news can have aged before it arrived, by the two clocks and the bound.
        let worst_age = match arrival_wall.duration_since(server_time) {
            Ok(age) => age + self.max_clock_skew,
            Err(ahead) => match self.max_clock_skew.checked_sub(ahead.duration()) {
                Some(age) => age,
                None => return Grant::ClockAhead(ahead.duration()),
            },
        };
        match self.max_staleness.checked_sub(worst_age) {
            Some(left) if !left.is_zero() => Grant::Until(arrival + left),
            _ => Grant::TooOld(worst_age),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key_id: &str) -> Entry {
        Entry {
            email: "a@b.example".into(),
            key_id: key_id.into(),
            org_id: "org_1".into(),
            org_name: "A".into(),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    /// 2 s of staleness, 500 ms of clock skew.
    fn new_state() -> State {
        let staleness = Staleness {
            max_staleness: 2 * SECOND,
            max_clock_skew: 500 * MS,
        };
        State::new(NonZeroUsize::new(4).unwrap(), 3, staleness)
    }

    /// A wall-clock reading, fixed so the tests do not depend on the machine's clock.
    fn wall() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// A checkpoint at the durable head, stamped `server_time`.
    fn current(sequence: u64, store_id: &str, server_time: SystemTime) -> Checkpoint<'_> {
        Checkpoint {
            sequence,
            store_id,
            durable_head: sequence,
            server_time: Some(server_time),
        }
    }

    /// A checkpoint from a server whose clock reads the same as ours, arriving at once.
    fn checkpoint(state: &mut State, sequence: u64, store_id: &str) -> Grant {
        state.checkpoint(current(sequence, store_id, wall()), Instant::now(), wall())
    }

    fn state() -> State {
        let mut state = new_state();
        checkpoint(&mut state, 10, "st_a");
        state
    }

    #[test]
    fn nothing_is_cached_before_the_first_checkpoint() {
        let mut state = new_state();
        assert!(!state.admit([1; 32], entry("zk_1"), 100, "st_a"));
        checkpoint(&mut state, 10, "st_a");
        assert!(state.admit([1; 32], entry("zk_1"), 10, "st_a"));
    }

    #[test]
    fn a_success_read_before_an_applied_revocation_is_not_cached() {
        let mut state = state();
        // The revocation (seq 12) is applied while a validation read at 11 is in flight.
        assert_eq!(state.revoke(12, "zk_1"), None);
        assert!(!state.admit([1; 32], entry("zk_1"), 11, "st_a"));
        assert!(state.get(&[1; 32]).is_none());
    }

    #[test]
    fn a_success_read_before_the_subscription_point_is_not_cached() {
        let mut state = state();
        assert!(!state.admit([1; 32], entry("zk_1"), 9, "st_a"));
    }

    #[test]
    fn a_revocation_evicts_the_cached_key() {
        let mut state = state();
        assert!(state.admit([1; 32], entry("zk_1"), 10, "st_a"));
        assert!(state.admit([2; 32], entry("zk_2"), 10, "st_a"));
        assert_eq!(state.revoke(11, "zk_1"), Some(entry("zk_1")));
        assert!(state.get(&[1; 32]).is_none());
        assert!(state.get(&[2; 32]).is_some());
        assert_eq!(state.applied, Some(11));
    }

    #[test]
    fn forgetting_old_revocations_raises_the_trust_floor() {
        let mut state = state();
        for seq in 11..=14 {
            state.revoke(seq, &format!("zk_{seq}"));
        }
        // zk_11 was forgotten (capacity 3): a success read before 11 cannot be checked.
        assert_eq!(state.trusted_from, Some(11));
        assert!(!state.admit([1; 32], entry("zk_x"), 10, "st_a"));
        assert!(state.admit([1; 32], entry("zk_x"), 14, "st_a"));
    }

    #[test]
    fn an_answer_from_another_store_is_not_cached() {
        let mut state = state();
        assert!(!state.admit([1; 32], entry("zk_1"), 10, "st_b"));
        assert!(!state.admit([1; 32], entry("zk_1"), 10, ""));
        assert!(state.get(&[1; 32]).is_none());
        assert!(state.admit([1; 32], entry("zk_1"), 10, "st_a"));
    }

    #[test]
    fn a_different_store_flushes_everything() {
        let mut state = state();
        assert!(state.admit([1; 32], entry("zk_1"), 10, "st_a"));
        checkpoint(&mut state, 3, "st_b");
        assert!(state.get(&[1; 32]).is_none());
        assert_eq!((state.applied, state.trusted_from), (Some(3), Some(3)));
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut state = state();
        for i in 0..10u8 {
            state.admit([i; 32], entry(&format!("zk_{i}")), 10, "st_a");
        }
        assert_eq!(state.len(), 4);
        // Evicting by LRU also forgets the key_id index, so a late revocation is harmless.
        assert_eq!(state.revoke(11, "zk_0"), None);
    }

    #[test]
    fn a_current_checkpoint_keeps_the_cache_fresh_for_max_staleness_less_the_skew() {
        let mut state = new_state();
        let arrival = Instant::now();
        assert!(!state.fresh(arrival), "not before the first checkpoint");
        let grant = state.checkpoint(current(0, "st_a", wall()), arrival, wall());
        assert_eq!(grant, Grant::Until(arrival + 1500 * MS));
        assert!(state.fresh(arrival + 1499 * MS));
        assert!(!state.fresh(arrival + 1500 * MS));
        // The next heartbeat renews it.
        let next = arrival + SECOND;
        state.checkpoint(current(0, "st_a", wall() + SECOND), next, wall() + SECOND);
        assert!(state.fresh(next + 1499 * MS));
        assert!(!state.fresh(next + 1500 * MS));
    }

    #[test]
    fn news_that_was_old_on_arrival_counts_as_old() {
        let mut state = new_state();
        let arrival = Instant::now();
        // Stamped 1 s before it arrived (a slow or buffering path): 2 - 0.5 - 1 s are left.
        let late = current(0, "st_a", wall() - SECOND);
        assert_eq!(
            state.checkpoint(late, arrival, wall()),
            Grant::Until(arrival + 500 * MS)
        );
        assert!(!state.fresh(arrival + 500 * MS));
        // 1.5 s old or more on arrival: nothing is left.
        let stale = current(0, "st_a", wall() - 1500 * MS);
        assert_eq!(
            state.checkpoint(stale, arrival, wall()),
            Grant::TooOld(2 * SECOND)
        );
    }

    #[test]
    fn a_proxy_replaying_a_buffered_stream_cannot_keep_the_cache_fresh() {
        let mut state = new_state();
        let start = Instant::now();
        state.checkpoint(current(0, "st_a", wall()), start, wall());
        // The proxy now holds the stream back and delivers its checkpoints (one a second by
        // the server's clock) ten seconds late, one every 100 ms, for a minute.
        for i in 0..600u32 {
            let late = start + 10 * SECOND + i * 100 * MS;
            let stamped = wall() + (i / 10) * SECOND;
            let replayed = current(0, "st_a", stamped);
            let grant = state.checkpoint(replayed, late, wall() + (late - start));
            assert!(matches!(grant, Grant::TooOld(_)), "{grant:?}");
            assert!(!state.fresh(late));
        }
    }

    #[test]
    fn a_checkpoint_behind_the_durable_head_grants_nothing() {
        let mut state = new_state();
        let arrival = Instant::now();
        let behind = Checkpoint {
            durable_head: 12,
            ..current(10, "st_a", wall())
        };
        assert_eq!(state.checkpoint(behind, arrival, wall()), Grant::Behind);
        assert!(!state.fresh(arrival));
        assert_eq!(
            state.applied,
            Some(10),
            "what it says about the log still counts"
        );
    }

    #[test]
    fn a_checkpoint_without_server_time_grants_nothing() {
        let mut state = new_state();
        let arrival = Instant::now();
        let untimed = Checkpoint {
            server_time: None,
            ..current(0, "st_a", wall())
        };
        assert_eq!(
            state.checkpoint(untimed, arrival, wall()),
            Grant::NoServerTime
        );
        assert!(!state.fresh(arrival));
    }

    #[test]
    fn a_server_clock_ahead_within_the_bound_is_allowed_for_beyond_it_grants_nothing() {
        let mut state = new_state();
        let arrival = Instant::now();
        // 300 ms ahead: its news can be at most 200 ms old, so 1.8 s are left; never more
        // than max_staleness.
        let ahead = current(0, "st_a", wall() + 300 * MS);
        assert_eq!(
            state.checkpoint(ahead, arrival, wall()),
            Grant::Until(arrival + 1800 * MS)
        );
        let mut state = new_state();
        let too_far = current(0, "st_a", wall() + 600 * MS);
        assert_eq!(
            state.checkpoint(too_far, arrival, wall()),
            Grant::ClockAhead(600 * MS)
        );
        assert!(!state.fresh(arrival));
    }

    #[test]
    fn a_late_old_checkpoint_does_not_shorten_what_a_newer_one_granted() {
        let mut state = new_state();
        let arrival = Instant::now();
        state.checkpoint(current(0, "st_a", wall()), arrival, wall());
        let older = current(0, "st_a", wall() - SECOND);
        state.checkpoint(older, arrival + 100 * MS, wall() + 100 * MS);
        assert!(state.fresh(arrival + 1499 * MS));
    }

    #[test]
    fn a_disconnect_or_a_flush_ends_freshness_at_once() {
        let mut state = state();
        let now = Instant::now();
        assert!(state.fresh(now));
        state.disconnected();
        assert!(!state.fresh(now));
        checkpoint(&mut state, 10, "st_a");
        assert!(state.fresh(Instant::now()));
        state.flush();
        assert!(!state.fresh(Instant::now()));
    }
}
