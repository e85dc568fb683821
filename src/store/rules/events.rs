//! The revocation log: gapless sequences, appended inside the transaction of the change each
//! event records, read by subscribers only up to the durable head.

use std::time::SystemTime;

use std::ops::Bound;

use prost::Message;
use tokio::sync::watch;

use crate::domain::{KeyId, Result, RevocationEvent};
use crate::store::handle::{Store, PRUNE_BATCH};
use crate::store::head::{Confirmed, Head};
use crate::store::kv::{get_u64, read_u64, Range, Tx, TxResult};
use crate::store::records::{decode, EventRecord};
use crate::store::tables::Table;
use crate::store::tables::META_HEAD;

/// Appends `event` with the next sequence number; the caller's transaction makes it atomic
/// with the change it records, and sled's conflict detection on `head` keeps sequences gapless
/// under concurrent revocations.
pub(super) fn append_event(
    tx: &mut dyn Tx,
    mut event: RevocationEvent,
) -> TxResult<RevocationEvent> {
    event.sequence = get_u64(tx, Table::Meta, META_HEAD)? + 1;
    tx.insert(Table::Meta, META_HEAD, &event.sequence.to_be_bytes())?;
    tx.insert(
        Table::Events,
        &event.sequence.to_be_bytes(),
        &EventRecord::from_event(&event).encode_to_vec(),
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

    /// Wakes when the durable head moves or the store stops (`store/head.rs`): the value is
    /// the head, and the fault that ends every stream (its checkpoints would claim a freshness
    /// the store cannot give); events are read from the log.
    pub fn head(&self) -> watch::Receiver<Head> {
        self.store.head()
    }

    /// The latest head this replica confirmed (`head.rs`): what a checkpoint may vouch for
    /// without waiting.
    pub fn confirmed(&self) -> Confirmed {
        self.store.backend().confirmed()
    }

    /// Confirms the head now (on etcd one shared linearizable read and the watch catching up
    /// with it; UNAVAILABLE if it does not within the bound).
    pub async fn confirm(&self) -> Result<Confirmed> {
        self.store.backend().confirm().await
    }

    /// Size of the database files on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.store.size_on_disk()
    }

    /// The lowest sequence still retained, if any event is.
    pub fn first_retained(&self) -> Result<Option<u64>> {
        let range = Range::new(Table::Events, Bound::Unbounded, Bound::Unbounded).limit(1);
        let first = self.store.backend().scan_local(&range)?;
        Ok(first.first().map(|(key, _)| read_u64(Some(key))))
    }

    /// Up to `limit` events with `after < sequence <= up_to`, in order.
    pub fn read(&self, after: u64, up_to: u64, limit: usize) -> Result<Vec<RevocationEvent>> {
        if after >= up_to {
            return Ok(Vec::new());
        }
        let range = Range::new(
            Table::Events,
            Bound::Included((after + 1).to_be_bytes().to_vec()),
            Bound::Included(up_to.to_be_bytes().to_vec()),
        )
        .limit(limit);
        self.store
            .backend()
            .scan_local(&range)?
            .into_iter()
            .map(|(key, value)| decode::<EventRecord>(&value)?.to_event(read_u64(Some(&key))))
            .collect()
    }

    /// The revocation of `key_id` at or below `up_to`, newest first, if the log retains it.
    pub fn find_key(&self, key_id: &KeyId, up_to: u64) -> Result<Option<RevocationEvent>> {
        let mut below = Bound::Included(up_to.to_be_bytes().to_vec());
        loop {
            let range = Range::new(Table::Events, Bound::Unbounded, below)
                .reverse()
                .limit(PRUNE_BATCH);
            let page = self.store.backend().scan_local(&range)?;
            for (key, value) in &page {
                let record = decode::<EventRecord>(value)?;
                if record.key_id == key_id.as_str() {
                    return record.to_event(read_u64(Some(key))).map(Some);
                }
            }
            match page.last() {
                Some((key, _)) if page.len() == PRUNE_BATCH => below = Bound::Excluded(key.clone()),
                _ => return Ok(None),
            }
        }
    }

    /// Deletes events beyond both retention bounds: only those that are more than `keep_count`
    /// behind the head *and* older than `keep_since`. Returns how many were removed.
    ///
    /// Works in batches of `PRUNE_BATCH`, each durable before the next (on sled each on the
    /// blocking pool), so a large backlog never holds a runtime worker for long.
    pub async fn prune(&self, keep_count: u64, keep_since: SystemTime) -> Result<u64> {
        let below = self.head().borrow().applied.saturating_sub(keep_count);
        let mut removed = 0;
        loop {
            let log = self.clone();
            let batch = self
                .store
                .off_the_runtime(move |_| async move { log.prune_batch(below, keep_since).await })
                .await?;
            if batch == 0 {
                return Ok(removed);
            }
            self.store.sync().await?;
            removed += batch;
        }
    }

    /// Removes up to `PRUNE_BATCH` of the oldest events at or below `below` and older than
    /// `keep_since`, in one atomic batch.
    async fn prune_batch(&self, below: u64, keep_since: SystemTime) -> Result<u64> {
        let backend = self.store.backend();
        backend.writable()?;
        let range = Range::new(
            Table::Events,
            Bound::Unbounded,
            Bound::Included(below.to_be_bytes().to_vec()),
        )
        .limit(PRUNE_BATCH);
        let mut removals = Vec::new();
        for (key, value) in backend.scan(range).await? {
            let event = decode::<EventRecord>(&value)?.to_event(read_u64(Some(&key)))?;
            if event.revoked >= keep_since {
                break;
            }
            removals.push((key, None));
        }
        let count = removals.len() as u64;
        if count > 0 {
            backend.apply(Table::Events, removals).await?;
        }
        Ok(count)
    }
}
