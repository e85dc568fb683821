//! The revocation log: gapless sequences, appended inside the transaction of the change each
//! event records, read by subscribers only up to the durable head.

use std::time::SystemTime;

use prost::Message;
use sled::transaction::TransactionalTree;
use tokio::sync::watch;

use super::records::{decode, EventRecord};
use super::{read_u64, tx_u64, Store, TxResult, META_HEAD, PRUNE_BATCH};
use crate::domain::{Error, Result, RevocationEvent};

/// Appends `event` with the next sequence number; the caller's transaction makes it atomic
/// with the change it records, and sled's conflict detection on `head` keeps sequences gapless
/// under concurrent revocations.
pub(super) fn append_event(
    meta: &TransactionalTree,
    events: &TransactionalTree,
    mut event: RevocationEvent,
) -> TxResult<RevocationEvent> {
    event.sequence = tx_u64(meta, META_HEAD)? + 1;
    meta.insert(META_HEAD, &event.sequence.to_be_bytes())?;
    events.insert(
        &event.sequence.to_be_bytes(),
        EventRecord::from_event(&event).encode_to_vec(),
    )?;
    Ok(event)
}

/// Read access to the log for subscribers.
#[derive(Clone)]
pub struct EventLog {
    store: Store,
}

impl EventLog {
    pub fn new(store: Store) -> Self {
        EventLog { store }
    }

    pub fn store_id(&self) -> &str {
        self.store.store_id()
    }

    /// Wakes when the durable head moves. The value is the head; events are read from sled.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.store.durable_head()
    }

    /// Fails once the store has faulted: its durable head no longer moves, so a stream's
    /// checkpoints would claim a freshness it cannot give.
    pub fn check_live(&self) -> Result<()> {
        self.store.inner.durability.writable()
    }

    /// The highest sequence that is durable, so may be sent.
    pub fn durable_head(&self) -> u64 {
        self.store.inner.durability.durable_head_now()
    }

    /// Size of the database files on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.store.size_on_disk()
    }

    /// The lowest sequence still retained, if any event is.
    pub fn first_retained(&self) -> Result<Option<u64>> {
        let first = self.store.trees().events.first().map_err(Error::internal)?;
        Ok(first.map(|(key, _)| read_u64(Some(&key))))
    }

    /// Up to `limit` events with `after < sequence <= up_to`, in order.
    pub fn read(&self, after: u64, up_to: u64, limit: usize) -> Result<Vec<RevocationEvent>> {
        if after >= up_to {
            return Ok(Vec::new());
        }
        let range = (after + 1).to_be_bytes()..=up_to.to_be_bytes();
        self.store
            .trees()
            .events
            .range(range)
            .take(limit)
            .map(|entry| {
                let (key, value) = entry.map_err(Error::internal)?;
                decode::<EventRecord>(&value)?.to_event(read_u64(Some(&key)))
            })
            .collect()
    }

    /// Deletes events beyond both retention bounds: only those that are more than `keep_count`
    /// behind the head *and* older than `keep_since`. Returns how many were removed.
    ///
    /// Works in batches of `PRUNE_BATCH`, each on the blocking pool and durable before the
    /// next, so a large backlog never holds a runtime worker for long.
    pub async fn prune(&self, keep_count: u64, keep_since: SystemTime) -> Result<u64> {
        let below = self.durable_head().saturating_sub(keep_count);
        let mut removed = 0;
        loop {
            let log = self.clone();
            let batch = tokio::task::spawn_blocking(move || log.prune_batch(below, keep_since))
                .await
                .map_err(Error::internal)??;
            if batch == 0 {
                return Ok(removed);
            }
            self.store.sync().await?;
            removed += batch;
        }
    }

    /// Removes up to `PRUNE_BATCH` of the oldest events at or below `below` and older than
    /// `keep_since`, in one atomic batch. Blocking.
    fn prune_batch(&self, below: u64, keep_since: SystemTime) -> Result<u64> {
        self.store.inner.durability.writable()?;
        let events = &self.store.trees().events;
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for entry in events.range(..=below.to_be_bytes()).take(PRUNE_BATCH) {
            let (key, value) = entry.map_err(Error::internal)?;
            let event = decode::<EventRecord>(&value)?.to_event(read_u64(Some(&key)))?;
            if event.revoked >= keep_since {
                break;
            }
            batch.remove(key);
            count += 1;
        }
        if count > 0 {
            events
                .apply_batch(batch)
                .map_err(|cause| self.store.inner.durability.fail(&cause))?;
        }
        Ok(count)
    }
}
