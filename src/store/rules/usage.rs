//! Key usage: per key and per calling service account, how many validations succeeded and when
//! the last one did. Counted in memory on the hot path (atomics in a sharded map: no write per
//! validation, no lock shared by all callers), saved to the `usage` tree periodically and at
//! shutdown, so a crash loses at most the counts since the last save.
//!
//! `usage` tree: key_id + `\0` + account name -> `UsageRecord` (totals as last saved).

use std::sync::atomic::Ordering;

use prost::Message;

use crate::domain::{AccountName, KeyId, KeyUsage, Result};
use crate::store::handle::{Counter, Store, UsageKey};
use crate::store::kv::Range;
use crate::store::records::{decode, from_micros, micros, now, UsageRecord};
use crate::store::tables::Table;

/// Totals saved per transaction (well inside etcd's 128 operations per transaction).
const USAGE_CHUNK: usize = 32;

/// The `usage` tree key of a pair, held inline (no allocation) when the consumer's name is
/// short, as every suite service's is: the first validation of a pair then allocates nothing.
fn usage_key(key_id: &KeyId, consumer: &AccountName) -> UsageKey {
    let mut key = UsageKey::new();
    key.extend_from_slice(key_id.as_str().as_bytes());
    key.push(b'\0');
    key.extend_from_slice(consumer.as_str().as_bytes());
    key
}

fn usage_prefix(key_id: &KeyId) -> Vec<u8> {
    [key_id.as_str().as_bytes(), b"\0"].concat()
}

impl Store {
    /// Counts a successful validation of `key_id` by `consumer`. Every ValidateKey counts: a
    /// pair already counted takes only its shard's read lock.
    pub(super) fn count_validation(&self, key_id: &KeyId, consumer: &AccountName) {
        let now = micros(now());
        let unsaved = &self.inner.usage.unsaved;
        let bump = |counter: &Counter| {
            counter.validations.fetch_add(1, Ordering::Relaxed);
            counter.last_us.fetch_max(now, Ordering::Relaxed);
        };
        let key = usage_key(key_id, consumer);
        match unsaved.get(key.as_slice()) {
            Some(counter) => bump(&counter),
            None => bump(&unsaved.entry(key).or_default()),
        }
    }

    /// Who validated `key_id`: saved totals plus what is counted since, by consumer name.
    pub async fn key_usage(&self, key_id: &KeyId) -> Result<Vec<KeyUsage>> {
        let prefix = usage_prefix(key_id);
        let mut usage = Vec::new();
        let saved = self
            .backend()
            .scan(Range::prefix(Table::Usage, &prefix))
            .await?;
        for (key, value) in saved {
            let saved = decode::<UsageRecord>(&value)?;
            usage.push((UsageKey::from_vec(key), saved.validations, saved.last_us));
        }
        for item in self.inner.usage.unsaved.iter() {
            if !item.key().starts_with(&prefix) {
                continue;
            }
            let validations = item.validations.load(Ordering::Relaxed);
            let last_us = item.last_us.load(Ordering::Relaxed);
            match usage.iter_mut().find(|(key, ..)| key == item.key()) {
                Some((_, total, last)) => {
                    *total += validations;
                    *last = (*last).max(last_us);
                }
                None if validations > 0 => usage.push((item.key().clone(), validations, last_us)),
                None => {}
            }
        }
        let mut usage: Vec<KeyUsage> = usage
            .into_iter()
            .map(|(key, validations, last_us)| KeyUsage {
                consumer: AccountName::from_trusted(
                    String::from_utf8_lossy(&key[prefix.len()..]).into_owned(),
                ),
                validations,
                last_validated: from_micros(last_us),
            })
            .collect();
        usage.sort_by_key(|u| std::cmp::Reverse(u.last_validated));
        Ok(usage)
    }

    /// Adds the counts since the last save to the saved totals, durably.
    pub async fn save_usage(&self) -> Result<()> {
        let _one_at_a_time = self.inner.usage.saving.lock().await;
        let mut taken = Vec::new();
        // A pair not validated since the last save is dropped, so memory holds the pairs of
        // the last two intervals, not every pair ever validated (1,000,000 keys: ~60 MiB).
        // `retain` holds each shard's write lock and `count_validation` holds its read lock
        // while it counts, so a count lands either before (kept) or in a new counter.
        self.inner.usage.unsaved.retain(|key, counter| {
            let validations = counter.validations.swap(0, Ordering::Relaxed);
            if validations > 0 {
                taken.push((
                    key.clone(),
                    validations,
                    counter.last_us.load(Ordering::Relaxed),
                ));
            }
            validations > 0
        });
        if taken.is_empty() {
            return Ok(());
        }
        let (saved, merged) = match self.merge_usage(&taken).await {
            Ok(()) => (self.sync().await, 0),
            Err((merged, error)) => (Err(error), merged),
        };
        if saved.is_err() {
            // Not saved: count them again, for the next save (or the next process) to try.
            for (key, validations, last_us) in &taken[merged..] {
                let counter = self.inner.usage.unsaved.entry(key.clone()).or_default();
                counter
                    .validations
                    .fetch_add(*validations, Ordering::Relaxed);
                counter.last_us.fetch_max(*last_us, Ordering::Relaxed);
            }
        }
        saved
    }

    /// Adds `taken` to the saved totals. On sled one save at a time (the lock above) makes the
    /// read-then-write safe; replicas on etcd each add their own counts, so each total is
    /// read and written in one transaction.
    /// On failure, says how many of `taken` were saved before it.
    async fn merge_usage(
        &self,
        taken: &[(UsageKey, u64, i64)],
    ) -> std::result::Result<(), (usize, crate::domain::Error)> {
        self.backend().writable().map_err(|e| (0, e))?;
        for (done, chunk) in taken.chunks(USAGE_CHUNK).enumerate() {
            let prefetch = || {
                chunk
                    .iter()
                    .map(|(key, ..)| (Table::Usage, key.to_vec()))
                    .collect()
            };
            self.backend()
                .transact(prefetch, |tx| {
                    for (key, validations, last_us) in chunk {
                        let saved = match tx.get(Table::Usage, key)? {
                            Some(bytes) => crate::store::kv::lift(decode::<UsageRecord>(&bytes))?,
                            None => UsageRecord::default(),
                        };
                        let total = UsageRecord {
                            validations: saved.validations + validations,
                            last_us: saved.last_us.max(*last_us),
                        };
                        tx.insert(Table::Usage, key, &total.encode_to_vec())?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| (done * USAGE_CHUNK, e))?;
        }
        Ok(())
    }
}
