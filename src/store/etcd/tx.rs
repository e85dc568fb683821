//! Optimistic transactions on etcd (the shape of etcd's own clientv3/concurrency STM).
//!
//! Every value the closure reads comes from one snapshot revision `R`: the first fetch is a
//! linearizable read that fixes `R`, later fetches read at `R`. So a refusal (or a read-only
//! answer) rests on a state the cluster really had after the call began. Writes are committed
//! by one Txn: `when` every read key still has the `mod_revision` it had at `R` (an absent key:
//! `create_revision == 0`), `then` the writes, `else` read the read keys again, which gives the
//! next attempt its snapshot without another round trip.

use std::collections::{BTreeMap, HashMap, HashSet};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use tracing::Instrument;

use super::backend::{EtcdBackend, MAX_TXN_OPS};
use super::errors::{ambiguous, never_sent, unreachable_cluster};
use super::read::retry_read;
use super::url::table_key;
use crate::domain::{Error, Result};
use crate::store::kv::{Prefetch, Tx, TxError, TxResult};
use crate::store::tables::Table;

/// Attempts before a transaction gives up under contention.
const MAX_ATTEMPTS: usize = 200;

/// Values as of one revision, with the revision each was last modified at (0: absent).
#[derive(Default)]
struct Snapshot {
    revision: i64,
    values: HashMap<Vec<u8>, (Option<Vec<u8>>, i64)>,
}

struct EtcdTx<'a> {
    root: &'a [u8],
    snapshot: &'a Snapshot,
    reads: Vec<Vec<u8>>,
    read_set: HashSet<Vec<u8>>,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    unread: Option<Vec<u8>>,
}

impl Tx for EtcdTx<'_> {
    fn get(&mut self, table: Table, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        let full = table_key(self.root, table, key);
        if let Some(written) = self.writes.get(&full) {
            return Ok(written.clone());
        }
        match self.snapshot.values.get(&full) {
            Some((value, _)) => {
                if self.read_set.insert(full.clone()) {
                    self.reads.push(full);
                }
                Ok(value.clone())
            }
            None => {
                self.unread = Some(full);
                Err(TxError::Unread)
            }
        }
    }

    fn insert(&mut self, table: Table, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.writes
            .insert(table_key(self.root, table, key), Some(value.to_vec()));
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> TxResult<()> {
        self.writes.insert(table_key(self.root, table, key), None);
        Ok(())
    }
}

impl EtcdBackend {
    pub async fn transact<T>(
        &self,
        prefetch: Prefetch,
        rules: impl Fn(&mut dyn Tx) -> TxResult<T>,
    ) -> Result<T> {
        self.writable()?;
        let _one_at_a_time = self.writer.lock().await;
        self.run(prefetch, rules, true).await
    }

    /// A read-only closure. Refused at once while the cluster is out of reach, so that a
    /// client tries another replica rather than wait on this one.
    pub async fn read<T>(
        &self,
        prefetch: Prefetch,
        rules: impl Fn(&mut dyn Tx) -> TxResult<T>,
    ) -> Result<T> {
        self.writable()?;
        self.run(prefetch, rules, false).await
    }

    async fn run<T>(
        &self,
        prefetch: Prefetch,
        rules: impl Fn(&mut dyn Tx) -> TxResult<T>,
        may_write: bool,
    ) -> Result<T> {
        let mut snapshot = Snapshot::default();
        let keys: Vec<Vec<u8>> = prefetch
            .iter()
            .map(|(table, key)| self.key(*table, key))
            .collect();
        if !keys.is_empty() {
            self.fetch(&mut snapshot, keys).await?;
        }
        for _ in 0..MAX_ATTEMPTS {
            let mut tx = EtcdTx {
                root: &self.root,
                snapshot: &snapshot,
                reads: Vec::new(),
                read_set: HashSet::new(),
                writes: BTreeMap::new(),
                unread: None,
            };
            let value = match rules(&mut tx) {
                Ok(value) => value,
                Err(TxError::Unread) => {
                    let key = tx.unread.take().expect("Unread names its key");
                    self.fetch(&mut snapshot, vec![key]).await?;
                    continue;
                }
                Err(TxError::Abort(error)) => return Err(error),
                Err(TxError::Storage(cause)) => return Err(Error::internal(cause)),
                Err(TxError::Conflict) => continue,
            };
            if tx.writes.is_empty() {
                // Everything read comes from one linearizable snapshot.
                return Ok(value);
            }
            if !may_write {
                return Err(Error::internal("a read-only closure wrote"));
            }
            let (reads, writes) = (tx.reads, tx.writes);
            match self.commit(&snapshot, &reads, writes).await? {
                None => return Ok(value),
                Some(current) => snapshot = current,
            }
        }
        Err(Error::Unavailable(
            "too many concurrent changes to the same records: try again",
        ))
    }

    /// Fetches `keys` (in Txns of at most [`MAX_TXN_OPS`] gets): at the snapshot's revision,
    /// or (the first fetch) at the latest one, which then becomes the snapshot's.
    async fn fetch(&self, snapshot: &mut Snapshot, keys: Vec<Vec<u8>>) -> Result<()> {
        for chunk in keys.chunks(MAX_TXN_OPS) {
            let options = (snapshot.revision != 0)
                .then(|| GetOptions::new().with_revision(snapshot.revision));
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|key| TxnOp::get(key.clone(), options.clone()))
                .collect();
            let response = retry_read(|| {
                let mut kv = self.kv.clone();
                let txn = Txn::new().and_then(ops.clone());
                async move { kv.txn(txn).await }
            })
            .await?;
            if snapshot.revision == 0 {
                snapshot.revision = response.header().map_or(0, |h| h.revision());
            }
            for (key, op) in chunk.iter().zip(response.op_responses()) {
                if let TxnOpResponse::Get(get) = op {
                    let found = get.kvs().first();
                    let value = found.map(|kv| kv.value().to_vec());
                    snapshot.values.insert(
                        key.clone(),
                        (value, found.map_or(0, |kv| kv.mod_revision())),
                    );
                }
            }
        }
        Ok(())
    }

    /// Commits `writes` if nothing in `reads` changed since the snapshot. `None`: committed;
    /// otherwise the read keys' current values, to run the rules again on.
    async fn commit(
        &self,
        snapshot: &Snapshot,
        reads: &[Vec<u8>],
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<Option<Snapshot>> {
        let compares: Vec<Compare> = reads
            .iter()
            .map(|key| match snapshot.values[key].1 {
                0 => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                revision => Compare::mod_revision(key.clone(), CompareOp::Equal, revision),
            })
            .collect();
        let ops: Vec<TxnOp> = writes
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => TxnOp::put(key, value, None),
                None => TxnOp::delete(key, None),
            })
            .collect();
        let reread: Vec<TxnOp> = reads.iter().map(|k| TxnOp::get(k.clone(), None)).collect();
        let txn = Txn::new().when(compares).and_then(ops).or_else(reread);
        let mut attempts = 0;
        let response = loop {
            let mut kv = self.kv.clone();
            let round_trip = tracing::debug_span!("etcd.txn", attempts);
            match kv.txn(txn.clone()).instrument(round_trip).await {
                Ok(response) => break response,
                // It never left: sending it again cannot apply it twice.
                Err(error) if never_sent(&error) && attempts < 8 => attempts += 1,
                Err(error) if never_sent(&error) => return Err(unreachable_cluster(&error)),
                Err(error) => return Err(ambiguous(&error)),
            }
        };
        if response.succeeded() {
            self.wrote(response.header().map_or(0, |h| h.revision()));
            return Ok(None);
        }
        let mut current = Snapshot {
            revision: response.header().map_or(0, |h| h.revision()),
            values: HashMap::new(),
        };
        for (key, op) in reads.iter().zip(response.op_responses()) {
            if let TxnOpResponse::Get(get) = op {
                let found = get.kvs().first();
                let value = found.map(|kv| kv.value().to_vec());
                current.values.insert(
                    key.clone(),
                    (value, found.map_or(0, |kv| kv.mod_revision())),
                );
            }
        }
        Ok(Some(current))
    }
}
