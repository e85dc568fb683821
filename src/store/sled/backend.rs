//! The sled backend: the rules' transactions run as one sled transaction over every tree (sled
//! re-runs the closure on a conflict), reads go straight to the trees, and a mutation is made
//! durable by the group commit in `durability.rs`.

use std::{
    cell::{Cell, RefCell},
    fs::File,
    ops::Bound,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;

use super::durability::Durability;
use crate::domain::{Error, Result};
use crate::store::kv::{Entry, Range, Tx, TxError, TxResult};
use crate::store::tables::{Table, Trees};
use crate::store::view::View;

pub(in crate::store) struct SledBackend {
    pub db: sled::Db,
    pub trees: Trees,
    /// Every tree, in [`Table::ALL`] order (`Table as usize` indexes it): what a transaction spans.
    all: Vec<sled::Tree>,
    pub durability: Durability,
    /// Moves after every committed change to the accounts or tokens (see
    /// [`Backend::accounts_generation`](crate::store::backend::Backend::accounts_generation)).
    accounts: AtomicU64,
    /// The live keys, refreshed after each commit that wrote a key (`view.rs`).
    pub view: Arc<View>,
    /// Every write holds it shared; a backup holds it alone while it copies the trees, so that
    /// the copy is one point of the store (sled has no snapshots).
    pub(in crate::store) writers: std::sync::RwLock<()>,
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
        let view = Arc::new(build_view(&trees)?);
        let all = Table::ALL
            .iter()
            .map(|&table| trees.get(table).clone())
            .collect();
        Ok(SledBackend {
            db,
            trees,
            all,
            durability,
            accounts: AtomicU64::new(0),
            view,
            writers: std::sync::RwLock::new(()),
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
        let outcome = transact_trees(&self.all, &written, rules).map_err(|e| match e {
            Failure::Rule(error) => error,
            Failure::Storage(cause) => self.durability.fail(&cause),
        });
        if outcome.is_ok() && written.accounts.get() {
            self.accounts.fetch_add(1, Ordering::Release);
        }
        if outcome.is_ok() {
            let keys = written.keys.into_inner();
            self.view
                .refresh(keys.iter().map(Vec::as_slice), |table, key| {
                    self.get(table, key)
                })
                .map_err(|cause| self.durability.fail(&cause))?;
        }
        outcome
    }

    /// Waits while a backup copies the trees.
    fn writing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        // Nothing panics while holding it: poisoning cannot happen, and would mean no harm.
        self.writers.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn accounts_generation(&self) -> u64 {
        self.accounts.load(Ordering::Acquire)
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
            self.accounts.fetch_add(1, Ordering::Release);
        }
        Ok(())
    }
}

pub(super) enum Failure {
    Rule(Error),
    Storage(String),
}

/// What the runs of one transaction wrote that others must hear of: whether the accounts or
/// tokens, and which keys (a run that sled re-ran counts too: a spare re-check costs nothing
/// but a few reads).
#[derive(Default)]
pub(super) struct Written {
    accounts: Cell<bool>,
    keys: RefCell<Vec<Vec<u8>>>,
}

/// The view of every key in the trees (at open, before anything else writes).
fn build_view(trees: &Trees) -> Result<View> {
    let keys = trees.keys.iter().map(|item| item.map_err(Error::internal));
    View::build(keys, |org_id| {
        let org = trees.orgs.get(org_id.as_bytes()).map_err(Error::internal)?;
        Ok(org.map(|v| v.to_vec()))
    })
}

/// One sled transaction over `trees` (every table, in `Table::ALL` order), noting in
/// `written` what its runs wrote.
pub(super) fn transact_trees<T>(
    trees: &[sled::Tree],
    written: &Written,
    rules: impl Fn(&mut dyn Tx) -> TxResult<T>,
) -> std::result::Result<T, Failure> {
    let outcome = trees.transaction(|trees: &Vec<TransactionalTree>| {
        let mut tx = InTransaction { trees, written };
        rules(&mut tx).map_err(|e| match e {
            TxError::Conflict => ConflictableTransactionError::Conflict,
            other => ConflictableTransactionError::Abort(other),
        })
    });
    outcome.map_err(|e| match e {
        TransactionError::Abort(TxError::Abort(error)) => Failure::Rule(error),
        TransactionError::Abort(TxError::Storage(cause)) => Failure::Storage(cause),
        TransactionError::Abort(other) => Failure::Rule(crate::store::kv::outcome_error(other)),
        TransactionError::Storage(cause) => Failure::Storage(cause.to_string()),
    })
}

struct InTransaction<'a> {
    trees: &'a [TransactionalTree],
    written: &'a Written,
}

impl InTransaction<'_> {
    fn note(&self, table: Table, key: &[u8]) {
        if table.holds_accounts() {
            self.written.accounts.set(true);
        }
        if table == Table::Keys {
            self.written.keys.borrow_mut().push(key.to_vec());
        }
    }
}

fn unabortable(error: UnabortableTransactionError) -> TxError {
    match error {
        UnabortableTransactionError::Conflict => TxError::Conflict,
        UnabortableTransactionError::Storage(cause) => TxError::Storage(cause.to_string()),
    }
}

impl Tx for InTransaction<'_> {
    fn get(&mut self, table: Table, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        let value = self.trees[table as usize].get(key).map_err(unabortable)?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn insert(&mut self, table: Table, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.note(table, key);
        self.trees[table as usize]
            .insert(key, value)
            .map(drop)
            .map_err(unabortable)
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> TxResult<()> {
        self.note(table, key);
        self.trees[table as usize]
            .remove(key)
            .map(drop)
            .map_err(unabortable)
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
