//! The Verifier's memory and its rules, free of I/O so each rule can be tested on its own.
//!
//! The read/invalidate rule: a ValidateKey success read at log head `h` may be cached only if
//! this Verifier will see every revocation after `h`. It sees everything after `trusted_from`
//! (the head it subscribed at, or resumed from without a gap), so `h >= trusted_from` is
//! required; a key_id it has already seen revoked is never cached again; and the answer must
//! come from the store it follows (a sequence of another store, say one restored from a backup,
//! says nothing about this one's revocations).

use std::{
    collections::{HashMap, VecDeque},
    num::NonZeroUsize,
};

use lru::LruCache;

/// What the cache knows about a key, keyed by a keyed blake3 hash of the key.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub email: String,
    pub key_id: String,
    pub org_id: String,
    pub org_name: String,
}

pub type KeyHash = [u8; 32];

pub struct State {
    cache: LruCache<KeyHash, Entry>,
    by_key_id: HashMap<String, KeyHash>,
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
}

impl State {
    pub fn new(capacity: NonZeroUsize, revoked_capacity: usize) -> Self {
        State {
            cache: LruCache::new(capacity),
            by_key_id: HashMap::new(),
            revoked: VecDeque::new(),
            revoked_ids: HashMap::new(),
            revoked_capacity,
            trusted_from: None,
            applied: None,
            store_id: None,
        }
    }

    pub fn get(&mut self, hash: &KeyHash) -> Option<&Entry> {
        self.cache.get(hash)
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Offers a success read at `sequence` of the store `store_id`; returns whether it was
    /// cached. Sequences of another store say nothing about this one's revocations.
    pub fn admit(&mut self, hash: KeyHash, entry: Entry, sequence: u64, store_id: &str) -> bool {
        let ours = self.store_id.as_deref() == Some(store_id);
        let trusted = ours && self.trusted_from.is_some_and(|from| sequence >= from);
        if !trusted || self.revoked_ids.contains_key(&entry.key_id) {
            return false;
        }
        self.by_key_id.insert(entry.key_id.clone(), hash);
        if let Some((_, evicted)) = self.cache.push(hash, entry) {
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
        self.cache.pop(&hash)
    }

    /// A checkpoint: everything up to `sequence` of `store_id` has been sent.
    pub fn checkpoint(&mut self, sequence: u64, store_id: &str) {
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
    }

    /// Forgets everything: the server's log is not the one this state was built from.
    pub fn flush(&mut self) {
        self.cache.clear();
        self.by_key_id.clear();
        self.revoked.clear();
        self.revoked_ids.clear();
        self.trusted_from = None;
        self.applied = None;
        self.store_id = None;
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

    fn state() -> State {
        let mut state = State::new(NonZeroUsize::new(4).unwrap(), 3);
        state.checkpoint(10, "st_a");
        state
    }

    #[test]
    fn nothing_is_cached_before_the_first_checkpoint() {
        let mut state = State::new(NonZeroUsize::new(4).unwrap(), 3);
        assert!(!state.admit([1; 32], entry("zk_1"), 100, "st_a"));
        state.checkpoint(10, "st_a");
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
        state.checkpoint(3, "st_b");
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
}
