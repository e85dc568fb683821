//! The sled backend: the rules' transactions run as one sled transaction over every tree (sled
//! re-runs the closure on a conflict; the key rules share one with the callers queued beside
//! them, `writer.rs`), reads go straight to the trees, and a mutation is made durable by the
//! group commit in `durability.rs`.

use std::{fs::File, ops::Bound, sync::Arc};

use prost::Message;

use super::batch::SmallBatches;
use super::durability::Durability;
use super::transaction::{transact_trees, AfterCommit, Failure, Written};
use super::writer::Writer;
use crate::domain::{Error, Result};
use crate::store::kv::{Entry, Range, Tx, TxError, TxResult};
use crate::store::tables::{Table, Trees};
use crate::store::view::{Scanned, View};

pub(in crate::store) struct SledBackend {
    /// Runs batched rules (`writer.rs`); first, so that its thread ends before the rest drops.
    writer: Writer,
    pub db: sled::Db,
    pub trees: Trees,
    /// Every tree, the accounts generation and the view: what a commit updates.
    after: Arc<AfterCommit>,
    pub durability: Durability,
    /// The live keys, refreshed after each commit that wrote a key (`view.rs`).
    pub view: Arc<View>,
    /// Every write holds it shared; a backup holds it alone while it copies the trees, so that
    /// the copy is one point of the store (sled has no snapshots).
    pub(in crate::store) writers: Arc<std::sync::RwLock<()>>,
    /// The data dir (where a backup spools what it copies).
    pub(in crate::store) dir: std::path::PathBuf,
    /// Held for the store's lifetime so a second process on the same dir fails at once.
    _lock: File,
}

impl SledBackend {
    pub fn new(
        db: sled::Db,
        trees: Trees,
        durability: Durability,
        lock: File,
        dir: &std::path::Path,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let mut write_back = SmallBatches::new(&trees.keys);
        let view = Arc::new(build_view(&trees, &mut write_back)?);
        let written_back = write_back.finish()?;
        let took_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(keys = view.len(), took_ms, "validation view built");
        if written_back > 0 {
            tracing::info!(
                keys = written_back,
                took_ms,
                "key records now carry their org (written once, for records made before they did)"
            );
        }
        release_freed_memory();
        let all: Vec<sled::Tree> = Table::ALL
            .iter()
            .map(|&table| trees.get(table).clone())
            .collect();
        let after = Arc::new(AfterCommit::new(all.clone(), view.clone()));
        let writers = Arc::new(std::sync::RwLock::new(()));
        let writer = Writer::start(all, writers.clone(), after.clone()).map_err(Error::internal)?;
        Ok(SledBackend {
            writer,
            db,
            trees,
            after,
            durability,
            view,
            writers,
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// Runs `rules` in one sled transaction over every tree; sled re-runs it on a conflict.
    /// A storage failure faults the store.
    /// A change to the accounts or tokens moves the accounts generation once it is committed;
    /// the keys it wrote are refreshed in the view before it returns (so before the flush that
    /// moves the durable head and acknowledges it).
    pub fn transact<T>(&self, rules: impl Fn(&mut dyn Tx) -> TxResult<T>) -> Result<T> {
        let _writing = self.writing();
        let written = Written::default();
        let outcome = transact_trees(&self.after.all, &written, rules).and_then(|value| {
            self.after.publish(written).map_err(Failure::Storage)?;
            Ok(value)
        });
        outcome.map_err(|failure| self.failed(failure))
    }

    /// [`SledBackend::transact`] for a rule that owns what it reads: it runs on the writer
    /// thread, in one transaction with the rules queued beside it (`writer.rs`).
    pub async fn transact_batched<T: Send + 'static>(
        &self,
        rules: impl Fn(&mut dyn Tx) -> TxResult<T> + Send + Sync + 'static,
    ) -> Result<T> {
        let outcome = self.writer.run(rules).await;
        outcome.map_err(|failure| self.failed(failure))
    }

    /// The caller's error for a failed transaction; a storage failure faults the store.
    fn failed(&self, failure: Failure) -> Error {
        match failure {
            Failure::Rule(error) => error,
            Failure::Storage(cause) => self.durability.fail(&cause),
        }
    }

    /// Waits while a backup copies the trees.
    fn writing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        // Nothing panics while holding it: poisoning cannot happen, and would mean no harm.
        self.writers.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn accounts_generation(&self) -> u64 {
        self.after.accounts_generation()
    }

    /// Runs a read-only closure against the trees as they are (no transaction: a single
    /// get is atomic, and the rules that need several reads to agree run in `transact`).
    pub fn read<T>(&self, rules: impl Fn(&mut dyn Tx) -> TxResult<T>) -> Result<T> {
        rules(&mut Reader { trees: &self.trees }).map_err(crate::store::kv::outcome_error)
    }

    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .trees
            .get(table)
            .get(key)
            .map_err(Error::internal)?
            .map(|v| v.to_vec()))
    }

    pub fn scan(&self, range: &Range) -> Result<Vec<Entry>> {
        let tree = self.trees.get(range.table);
        let bounds = (range.start.clone(), range.end.clone());
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
            (&range.start, &range.end)
        {
            if s > e {
                return Ok(Vec::new());
            }
        }
        let iter = tree.range::<Vec<u8>, _>(bounds);
        let collect = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(Error::internal)
        };
        if range.reverse {
            iter.rev().take(range.limit).map(collect).collect()
        } else {
            iter.take(range.limit).map(collect).collect()
        }
    }

    /// Applies writes to one table atomically, outside any transaction (pruning, usage).
    pub fn apply(&self, table: Table, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        self.durability.writable()?;
        let _writing = self.writing();
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.trees
            .get(table)
            .apply_batch(batch)
            .map_err(|cause| self.durability.fail(&cause))?;
        if table.holds_accounts() {
            self.after.accounts_changed();
        }
        Ok(())
    }
}

/// The view of every key in the trees (at open, before anything else writes), and the key
/// records it completed with their org (records written before keys carried it) written
/// back into `write_back` as it joins them, so that the next open reads the keys table alone.
/// A record rewritten holds what it held plus its org's unchanging name, edition and creation
/// time, so a write-back lost to a crash is simply done again. In small flushed batches
/// ([`SmallBatches`]), as they come: in batches of 20,000 records a store of 1,000,000 keys
/// grew this process to 4.7 GiB, and holding every completed record until the end of the
/// build peaked at 1,191 MiB there; as they come, at 1,010 MiB.
///
/// The keys table is read in two halves at once: its keys are blake3 hashes, so the halves
/// are even, and at 1,000,000 keys reading them is most of the time to SERVING.
/// `View::build` asks for orgs in org id order, which is the orgs tree's byte
/// order, so one cursor over that tree answers them all without a lookup per key.
fn build_view(trees: &Trees, write_back: &mut SmallBatches<'_>) -> Result<View> {
    let half: &[u8] = &[0x80];
    let scan = |rows: sled::Iter| Scanned::read(rows.map(|row| row.map_err(Error::internal)));
    let (low, high) = std::thread::scope(|threads| {
        let high = threads.spawn(|| scan(trees.keys.range(half..)));
        let low = scan(trees.keys.range(..half));
        (low, high.join())
    });
    let high = high.map_err(|_| Error::internal("reading the keys table panicked"))?;
    let mut orgs = trees.orgs.iter();
    let mut at: Option<(sled::IVec, sled::IVec)> = None;
    let org = |org_id: &str| {
        let wanted = org_id.as_bytes();
        while at.as_ref().is_none_or(|(id, _)| id.as_ref() < wanted) {
            match orgs.next() {
                Some(row) => at = Some(row.map_err(Error::internal)?),
                None => return Ok(None),
            }
        }
        Ok(at
            .as_ref()
            .filter(|(id, _)| id.as_ref() == wanted)
            .map(|(_, org)| org.to_vec()))
    };
    View::build([low?, high?], org, |hash, record| {
        write_back.push(hash.to_vec(), record.encode_to_vec())
    })
}

/// Hands memory freed by the open back to the system: reading the keys frees much of what
/// it allocates (sled's page reads, the build's scratch), and glibc keeps what a thread freed
/// in that thread's arena. At 1,000,000 keys read on two threads, the process held 24 MiB
/// more without it (752 against 728 MiB just opened).
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks malloc's own arenas, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Plain reads, for read-only closures.
struct Reader<'a> {
    trees: &'a Trees,
}

impl Tx for Reader<'_> {
    fn get(&mut self, table: Table, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        let value = self.trees.get(table).get(key);
        let value = value.map_err(|cause| TxError::Storage(cause.to_string()))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn insert(&mut self, _: Table, _: &[u8], _: &[u8]) -> TxResult<()> {
        Err(TxError::Abort(Error::internal("a read-only closure wrote")))
    }

    fn remove(&mut self, _: Table, _: &[u8]) -> TxResult<()> {
        Err(TxError::Abort(Error::internal("a read-only closure wrote")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{consumer, new_key, org_with_admins};
    use crate::store::records::{decode, KeyRecord};
    use crate::store::{Store, StoreOptions};

    /// The keys table's one record, decoded, with the data dir's store closed.
    fn the_key_record(db_dir: &std::path::Path) -> (sled::Tree, sled::IVec, KeyRecord) {
        let db = crate::store::sled::open::open_sled(db_dir, &StoreOptions::default()).unwrap();
        let keys = db.open_tree(Table::Keys.name()).unwrap();
        let mut rows = keys.iter();
        let (hash, record) = rows.next().unwrap().unwrap();
        assert!(rows.next().is_none());
        let record = decode::<KeyRecord>(&record).unwrap();
        (keys, hash, record)
    }

    /// A store whose key was stored as versions before `KeyRecord::org` stored it (without
    /// its org) opens with the key live, and the open writes the record back with its org.
    #[tokio::test]
    async fn a_key_stored_without_its_org_is_live_and_written_back_with_it_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions::default();
        let (ada, key) = {
            let store = Store::open(dir.path(), &options).unwrap().store;
            let (org, ada, _) = org_with_admins(&store, "Acme").await;
            (ada.clone(), new_key(&store, &org, &ada).await.key)
        };
        let db_dir = dir.path().join("db");
        {
            let (keys, hash, mut record) = the_key_record(&db_dir);
            assert_eq!(record.org.as_ref().unwrap().name, "Acme");
            record.org = None;
            keys.insert(hash, record.encode_to_vec()).unwrap();
            keys.flush().unwrap();
        }
        {
            let store = Store::open(dir.path(), &options).unwrap().store;
            let validation = store.validate_key(&ada, &key, &consumer()).await.unwrap();
            assert_eq!(validation.org.name, "Acme");
        }
        let (_, _, record) = the_key_record(&db_dir);
        assert_eq!(record.org.unwrap().name, "Acme");
    }
}
