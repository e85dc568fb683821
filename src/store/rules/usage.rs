//! Key usage: per key and per calling service account, how many validations succeeded and when
//! the last one did. Counted in memory on the hot path (atomics in a sharded map: no write per
//! validation, no lock shared by all callers), saved to the `usage` tree periodically and at
//! shutdown, so a crash loses at most the counts since the last save.
//!
//! `usage` tree: key_id -> `KeyUsageRecord`, one row per key with an entry per account
//! (totals as last saved). Stores made before that hold a row per (key, account) pair:
//! key_id + `\0` + account name -> `UsageRecord`. Reads add those in, and a save folds a
//! pair's old row into its key's row and deletes it, so they go as their pairs are validated
//! again (a suite service validates its keys all day). One row per key, not one per service
//! that uses it: at 1,000,000 keys each used by the suite's 8 services, 1,000,000 rows
//! rather than 8,000,000.

use std::sync::atomic::Ordering;

use prost::Message;

use crate::domain::{AccountName, KeyId, KeyUsage, Result};
use crate::store::handle::{Counter, Store, UsageKey};
use crate::store::kv::{lift, Range, Tx, TxResult};
use crate::store::records::{
    decode, from_micros, micros, now, ConsumerUsageRecord, KeyUsageRecord, UsageRecord,
};
use crate::store::tables::Table;

/// Pairs saved per transaction: at most two reads, a write and a delete each, well inside
/// etcd's 128 operations per transaction.
const USAGE_CHUNK: usize = 24;

/// The `usage` tree key of a pair, held inline (no allocation) when the consumer's name is
/// short, as every suite service's is: the first validation of a pair then allocates nothing.
fn usage_key(key_id: &KeyId, consumer: &AccountName) -> UsageKey {
    let mut key = UsageKey::new();
    key.extend_from_slice(key_id.as_str().as_bytes());
    key.push(b'\0');
    key.extend_from_slice(consumer.as_str().as_bytes());
    key
}

/// The pair's key id (its key's row in the `usage` tree) and its account name.
fn split_pair(pair: &[u8]) -> (&[u8], &[u8]) {
    let at = pair.iter().position(|&b| b == 0).unwrap_or(pair.len());
    (&pair[..at], pair.get(at + 1..).unwrap_or_default())
}

/// Adds `validations` of `consumer`, the last at `last_us`, to `totals`.
fn add(totals: &mut Vec<ConsumerUsageRecord>, consumer: &[u8], validations: u64, last_us: i64) {
    let consumer = String::from_utf8_lossy(consumer);
    match totals.iter_mut().find(|t| t.consumer == consumer) {
        Some(total) => {
            total.validations += validations;
            total.last_us = total.last_us.max(last_us);
        }
        None => totals.push(ConsumerUsageRecord {
            consumer: consumer.into_owned(),
            validations,
            last_us,
        }),
    }
}

/// Adds a saved row of the key whose row is `row`: that row itself, or a pair's row from
/// before one row per key.
fn add_saved(
    totals: &mut Vec<ConsumerUsageRecord>,
    row: &[u8],
    key: &[u8],
    value: &[u8],
) -> Result<()> {
    if key == row {
        for saved in decode::<KeyUsageRecord>(value)?.consumers {
            add(
                totals,
                saved.consumer.as_bytes(),
                saved.validations,
                saved.last_us,
            );
        }
    } else {
        let (pair_row, consumer) = split_pair(key);
        if pair_row == row {
            let saved = decode::<UsageRecord>(value)?;
            add(totals, consumer, saved.validations, saved.last_us);
        }
    }
    Ok(())
}

/// Adds each of `pairs` (sorted, so a key's pairs come together) to its key's row, folding in
/// and deleting the pair's row from before one row per key, if any.
fn save_pairs(tx: &mut dyn Tx, pairs: &[(UsageKey, u64, i64)]) -> TxResult<()> {
    let mut rows: Vec<(&[u8], KeyUsageRecord)> = Vec::new();
    for (pair, validations, last_us) in pairs {
        let (row, consumer) = split_pair(pair);
        if rows.last().is_none_or(|(last, _)| *last != row) {
            let saved = match tx.get(Table::Usage, row)? {
                Some(bytes) => lift(decode::<KeyUsageRecord>(&bytes))?,
                None => KeyUsageRecord::default(),
            };
            rows.push((row, saved));
        }
        let totals = &mut rows.last_mut().expect("pushed above").1.consumers;
        if let Some(old) = tx.get(Table::Usage, pair)? {
            let old = lift(decode::<UsageRecord>(&old))?;
            add(totals, consumer, old.validations, old.last_us);
            tx.remove(Table::Usage, pair)?;
        }
        add(totals, consumer, *validations, *last_us);
    }
    for (row, record) in rows {
        tx.insert(Table::Usage, row, &record.encode_to_vec())?;
    }
    Ok(())
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
        let row = key_id.as_str().as_bytes();
        let mut totals = Vec::new();
        let saved = self
            .backend()
            .scan(Range::prefix(Table::Usage, row))
            .await?;
        for (key, value) in saved {
            add_saved(&mut totals, row, &key, &value)?;
        }
        for item in self.inner.usage.unsaved.iter() {
            let (pair_row, consumer) = split_pair(item.key());
            let validations = item.validations.load(Ordering::Relaxed);
            if pair_row == row && validations > 0 {
                let last_us = item.last_us.load(Ordering::Relaxed);
                add(&mut totals, consumer, validations, last_us);
            }
        }
        let mut usage: Vec<KeyUsage> = totals
            .into_iter()
            .map(|total| KeyUsage {
                consumer: AccountName::from_trusted(total.consumer),
                validations: total.validations,
                last_validated: from_micros(total.last_us),
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
        taken.sort_unstable_by(|a, b| a.0.cmp(&b.0));
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

    /// Adds `taken` (sorted) to the saved totals. On sled one save at a time (the lock above)
    /// makes the read-then-write safe; replicas on etcd each add their own counts, so each
    /// total is read and written in one transaction.
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
                    .flat_map(|(pair, ..)| [split_pair(pair).0, pair.as_slice()])
                    .map(|key| (Table::Usage, key.to_vec()))
                    .collect()
            };
            self.backend()
                .transact(prefetch, |tx| save_pairs(tx, chunk))
                .await
                .map_err(|e| (done * USAGE_CHUNK, e))?;
        }
        Ok(())
    }
}
