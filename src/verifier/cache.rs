//! The Verifier's cache: answers keyed by the keyed hash of a key, read by every hit without a
//! lock, written by `State` alone (under the Verifier's mutex, so its read/invalidate rule
//! decides every insert and removal).
//!
//! A hit is the hot path of every consuming service, often from many threads at once, so it
//! writes nothing that another thread's hit reads: the map is `papaya`'s (reads pin an epoch
//! slot of their own thread, no lock, no shared counter), eviction is a clock (second chance)
//! whose "referenced" bit a hit sets only when it is clear, and the freshness deadline is one
//! atomic. An LRU would need every hit to move its entry to the front, which is a write to
//! shared memory and so a lock (or contention) on every hit.
//!
//! Linearizable per key: an entry removed by `Writer::remove` (a revocation) is found by no
//! `Cache::get` that starts after `remove` returned, and nothing else inserts it meanwhile
//! (the single writer checks the revoked set first).

use std::{
    collections::{HashSet, VecDeque},
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use compact_str::CompactString;
use tokio::time::Instant;

/// What the cache knows about a key, keyed by a keyed blake3 hash of the key. Compact strings:
/// every hit copies them into its answer, and the ids (and most emails and names) fit inline.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub email: CompactString,
    pub key_id: CompactString,
    pub org_id: CompactString,
    pub org_name: CompactString,
}

pub type KeyHash = [u8; 32];

/// How much earlier than granted the hits stop answering. They read the coarse monotonic clock
/// (`CLOCK_MONOTONIC_COARSE` on Linux: a few ns, where the precise clock costs ~20 ns here, an
/// eighth of a hit), which runs up to one kernel tick (1 to 10 ms) behind: with this margin a
/// hit never answers after the deadline `State` set, only up to 20 ms before it.
const COARSE_MARGIN: std::time::Duration = std::time::Duration::from_millis(20);

/// What the hits read. Shared (`Arc`) between the writer and the Verifier's callers.
pub struct Cache {
    map: papaya::HashMap<KeyHash, Slot, foldhash::fast::RandomState>,
    /// The freshness deadline (see `state.rs`): 0 for none, else 1 + its nanoseconds since
    /// `epoch` (a deadline before `epoch` is kept as `epoch`: never later than granted).
    fresh_until: AtomicU64,
    /// The same deadline on the coarse clock, less [`COARSE_MARGIN`], for the hits: 0 for
    /// none, else its coarse ticks.
    coarse_fresh_until: AtomicU64,
    epoch: Instant,
}

struct Slot {
    entry: Entry,
    /// Hit since the clock hand last passed: spared once by eviction.
    referenced: AtomicBool,
}

impl Cache {
    /// Applies `read` to the entry for `hash`, if cached, and marks it recently used.
    pub fn get<R>(&self, hash: &KeyHash, read: impl FnOnce(&Entry) -> R) -> Option<R> {
        let map = self.map.pin();
        let slot = map.get(hash)?;
        // Only a write when the clock hand cleared it: a key hit from many threads stays in
        // their caches instead of bouncing between them.
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        Some(read(&slot.entry))
    }

    /// Whether the cache may answer at `now` (the freshness rule's deadline, as `State` set it).
    pub fn fresh(&self, now: Instant) -> bool {
        match self.fresh_until.load(Ordering::Acquire) {
            0 => false,
            until => self.since_epoch(now) < until - 1,
        }
    }

    /// Whether a hit may answer now: [`Cache::fresh`] on the coarse clock, never later than it.
    pub fn fresh_for_hit(&self) -> bool {
        match self.coarse_fresh_until.load(Ordering::Acquire) {
            0 => false,
            until => coarsetime::Instant::now_without_cache_update().as_ticks() < until,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn since_epoch(&self, instant: Instant) -> u64 {
        let nanos = instant.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1)
    }
}

/// The one writer: owned by `State`, so every change goes through its rules.
pub struct Writer {
    cache: Arc<Cache>,
    capacity: NonZeroUsize,
    /// The clock: cached hashes, oldest admission first. A removed key's hash stays until the
    /// hand or a compaction passes it (removals are rare: revocations).
    ring: VecDeque<KeyHash>,
}

impl Writer {
    pub fn new(capacity: NonZeroUsize) -> Self {
        let cache = Cache {
            map: papaya::HashMap::builder()
                // The keys are keyed blake3 outputs: a fast hash of them is as good as any.
                .hasher(foldhash::fast::RandomState::default())
                .build(),
            fresh_until: AtomicU64::new(0),
            coarse_fresh_until: AtomicU64::new(0),
            epoch: Instant::now(),
        };
        Writer {
            cache: Arc::new(cache),
            capacity,
            ring: VecDeque::new(),
        }
    }

    /// The side the hits read.
    pub fn reader(&self) -> Arc<Cache> {
        self.cache.clone()
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Caches `entry` under `hash`, replacing the one there; when a new key finds the cache
    /// full, evicts one first (the first the clock hand finds unreferenced) and returns it.
    pub fn insert(&mut self, hash: KeyHash, entry: Entry) -> Option<Entry> {
        let slot = Slot {
            entry,
            referenced: AtomicBool::new(false),
        };
        // Its own handle, so the map stays pinned while the ring (in `self`) changes.
        let cache = Arc::clone(&self.cache);
        let map = cache.map.pin();
        if map.contains_key(&hash) {
            map.insert(hash, slot);
            return None;
        }
        // Room first, and never by evicting the entry being admitted.
        let evicted = if map.len() >= self.capacity.get() {
            self.evict_one()
        } else {
            None
        };
        map.insert(hash, slot);
        self.ring.push_back(hash);
        if self.ring.len() > 2 * map.len() + 16 {
            self.compact();
        }
        evicted
    }

    /// Removes `hash`'s entry; once this returns, no hit finds it.
    pub fn remove(&mut self, hash: &KeyHash) -> Option<Entry> {
        self.cache
            .map
            .pin()
            .remove(hash)
            .map(|slot| slot.entry.clone())
    }

    pub fn clear(&mut self) {
        self.cache.map.pin().clear();
        self.ring.clear();
    }

    /// Extends the freshness deadline to `until` (never shortens it).
    pub fn fresh_until(&mut self, until: Instant) {
        // What is left of the grant, measured from a coarse reading taken now: the coarse
        // clock's lag at this reading only makes the deadline earlier.
        let left = until.saturating_duration_since(Instant::now());
        let coarse = coarsetime::Instant::now_without_cache_update()
            .saturating_add(left.into())
            .saturating_sub(COARSE_MARGIN.into());
        let until = self.cache.since_epoch(until).saturating_add(1);
        self.cache.fresh_until.fetch_max(until, Ordering::Release);
        if left > COARSE_MARGIN {
            let coarse = coarse.as_ticks().max(1);
            self.cache
                .coarse_fresh_until
                .fetch_max(coarse, Ordering::Release);
        }
    }

    /// The cache stops answering at once.
    pub fn unfresh(&mut self) {
        self.cache.fresh_until.store(0, Ordering::Release);
        self.cache.coarse_fresh_until.store(0, Ordering::Release);
    }

    /// The clock hand: spares (and clears) a referenced entry once, evicts the first
    /// unreferenced one. After two full turns it evicts regardless, so hits that keep setting
    /// bits cannot keep the writer going round.
    fn evict_one(&mut self) -> Option<Entry> {
        let map = self.cache.map.pin();
        let mut turns = 2 * self.ring.len();
        while let Some(hash) = self.ring.pop_front() {
            let Some(slot) = map.get(&hash) else {
                continue; // removed since (revoked): a stale hand position
            };
            if turns > 0 && slot.referenced.swap(false, Ordering::Relaxed) {
                turns -= 1;
                self.ring.push_back(hash);
                continue;
            }
            return map.remove(&hash).map(|slot| slot.entry.clone());
        }
        None
    }

    /// Drops the ring's stale and repeated positions, keeping its order.
    fn compact(&mut self) {
        let map = self.cache.map.pin();
        let mut seen = HashSet::with_capacity(map.len());
        self.ring
            .retain(|hash| map.contains_key(hash) && seen.insert(*hash));
    }

    #[cfg(test)]
    pub fn ring_len(&self) -> usize {
        self.ring.len()
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

    fn writer(capacity: usize) -> Writer {
        Writer::new(NonZeroUsize::new(capacity).unwrap())
    }

    #[test]
    fn a_hit_entry_gets_a_second_chance_over_one_never_hit() {
        let mut writer = writer(3);
        for i in 0..3u8 {
            assert_eq!(writer.insert([i; 32], entry(&format!("zk_{i}"))), None);
        }
        // The oldest was hit; the next oldest was not: that one goes.
        assert!(writer.cache().get(&[0; 32], |_| ()).is_some());
        assert_eq!(writer.insert([3; 32], entry("zk_3")), Some(entry("zk_1")));
        assert!(writer.cache().get(&[0; 32], |_| ()).is_some());
        assert_eq!(writer.cache().len(), 3);
    }

    #[test]
    fn when_every_entry_is_referenced_one_is_still_evicted() {
        let mut writer = writer(2);
        writer.insert([0; 32], entry("zk_0"));
        writer.insert([1; 32], entry("zk_1"));
        writer.cache().get(&[0; 32], |_| ());
        writer.cache().get(&[1; 32], |_| ());
        assert_eq!(writer.insert([2; 32], entry("zk_2")), Some(entry("zk_0")));
        assert_eq!(writer.cache().len(), 2);
    }

    #[test]
    fn replacing_an_entry_neither_evicts_nor_grows_the_ring() {
        let mut writer = writer(2);
        writer.insert([0; 32], entry("zk_0"));
        writer.insert([1; 32], entry("zk_1"));
        assert_eq!(writer.insert([1; 32], entry("zk_1")), None);
        assert_eq!((writer.cache().len(), writer.ring_len()), (2, 2));
    }

    #[test]
    fn removed_keys_do_not_grow_the_clock_without_bound() {
        let mut writer = writer(1000);
        for round in 0..10_000u32 {
            let mut hash = [0; 32];
            hash[..4].copy_from_slice(&round.to_le_bytes());
            writer.insert(hash, entry("zk"));
            assert!(writer.remove(&hash).is_some());
            // Re-admitting a removed key must not duplicate its clock position forever.
            writer.insert([7; 32], entry("zk_7"));
            writer.remove(&[7; 32]);
        }
        assert_eq!(writer.cache().len(), 0);
        assert!(writer.ring_len() <= 16, "{}", writer.ring_len());
    }

    #[test]
    fn freshness_is_a_deadline_that_only_moves_later_until_withdrawn() {
        let mut writer = writer(1);
        let now = Instant::now();
        let second = std::time::Duration::from_secs(1);
        assert!(!writer.cache().fresh(now));
        writer.fresh_until(now + second);
        writer.fresh_until(now);
        assert!(writer.cache().fresh(now));
        assert!(!writer.cache().fresh(now + second));
        writer.unfresh();
        assert!(!writer.cache().fresh(now));
    }

    #[test]
    fn a_hit_is_fresh_only_within_the_deadline_less_the_margin() {
        let mut writer = writer(1);
        assert!(!writer.cache().fresh_for_hit(), "no deadline yet");
        // A grant shorter than the margin: the hits do not answer at all.
        writer.fresh_until(Instant::now() + COARSE_MARGIN / 2);
        assert!(!writer.cache().fresh_for_hit());
        writer.fresh_until(Instant::now() + std::time::Duration::from_secs(60));
        assert!(writer.cache().fresh_for_hit());
        writer.unfresh();
        assert!(!writer.cache().fresh_for_hit(), "withdrawn at once");
        // A deadline that passes: the hits stop answering (by 2 margins, whatever the tick).
        writer.fresh_until(Instant::now() + 2 * COARSE_MARGIN);
        std::thread::sleep(3 * COARSE_MARGIN);
        assert!(!writer.cache().fresh_for_hit());
    }
}
