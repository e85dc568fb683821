//! One sled transaction over every tree, and what a commit updates before its callers hear of
//! it (the accounts generation and the view): shared by the backend's direct path
//! (`backend.rs`) and the writer thread (`writer.rs`).

use std::{
    cell::{Cell, RefCell},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;

use crate::domain::Error;
use crate::store::kv::{Tx, TxError, TxResult};
use crate::store::tables::Table;
use crate::store::view::View;

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

/// What every commit updates before its callers hear of its outcome.
pub(super) struct AfterCommit {
    /// Every tree, in [`Table::ALL`] order (`Table as usize` indexes it): what a transaction spans.
    pub all: Vec<sled::Tree>,
    /// Moves after every committed change to the accounts or tokens (see
    /// [`Backend::accounts_generation`](crate::store::backend::Backend::accounts_generation)).
    accounts: AtomicU64,
    view: Arc<View>,
}

impl AfterCommit {
    pub fn new(all: Vec<sled::Tree>, view: Arc<View>) -> Self {
        AfterCommit {
            all,
            accounts: AtomicU64::new(0),
            view,
        }
    }

    pub fn accounts_generation(&self) -> u64 {
        self.accounts.load(Ordering::Acquire)
    }

    /// Moves the accounts generation, after a write to the accounts or tokens is visible.
    pub fn accounts_changed(&self) {
        self.accounts.fetch_add(1, Ordering::Release);
    }

    /// After a commit: moves the accounts generation if it wrote accounts or tokens, and
    /// refreshes the keys it wrote in the view (reading them again, after the commit).
    pub fn publish(&self, written: Written) -> std::result::Result<(), String> {
        if written.accounts.get() {
            self.accounts_changed();
        }
        let keys = written.keys.into_inner();
        let read = |table: Table, key: &[u8]| {
            let value = self.all[table as usize].get(key);
            Ok(value.map_err(Error::internal)?.map(|v| v.to_vec()))
        };
        let refreshed = self.view.refresh(keys.iter().map(Vec::as_slice), read);
        refreshed.map_err(|cause| cause.to_string())
    }
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
