//! The seam between the rules and a backend: a small transactional key-value interface.
//!
//! Every rule (unique names, the generate/regenerate matrix, revoking the owner's key, the
//! last-operator guard, the gapless logs) is written once, as a closure over [`Tx`]. A backend
//! runs the closure inside one of its transactions and re-runs it when the transaction
//! conflicts, so a closure must be free of side effects: it may only read and write through
//! `tx` and return a value.
//!
//! Architecture invariant: no rule knows which backend runs it; no backend knows a rule.

use super::tables::Table;
use crate::domain::{Error, Result};

/// Why a transaction closure stopped.
#[derive(Debug)]
pub(super) enum TxError {
    /// A rule refused: nothing the closure wrote is kept, and the caller gets the error.
    Abort(Error),
    /// Another transaction got in the way: the backend re-runs the closure.
    Conflict,
    /// The closure read a key the backend has not fetched yet: the backend fetches it and
    /// re-runs the closure (optimistic backends read this way; see `etcd/tx.rs`).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    Unread,
    /// The storage itself failed.
    Storage(String),
}

pub(super) type TxResult<T> = std::result::Result<T, TxError>;

/// Reads and writes of one transaction. Reads see the transaction's own writes.
pub(super) trait Tx {
    fn get(&mut self, table: Table, key: &[u8]) -> TxResult<Option<Vec<u8>>>;
    fn insert(&mut self, table: Table, key: &[u8], value: &[u8]) -> TxResult<()>;
    fn remove(&mut self, table: Table, key: &[u8]) -> TxResult<()>;
}

/// Keys a transaction is known to read, so that a backend may fetch them in one round trip
/// before running the closure. Only a hint: a closure may read other keys too.
pub(super) type Prefetch = Vec<(Table, Vec<u8>)>;

/// Ends a transaction with a domain error (nothing it wrote is kept).
pub(super) fn abort<T>(error: Error) -> TxResult<T> {
    Err(TxError::Abort(error))
}

/// Lifts a domain result into a transaction, aborting on error.
pub(super) fn lift<T>(result: Result<T>) -> TxResult<T> {
    result.map_err(TxError::Abort)
}

pub(super) fn read_u64(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// A big-endian counter (0 when absent) inside a transaction.
pub(super) fn get_u64(tx: &mut dyn Tx, table: Table, key: &[u8]) -> TxResult<u64> {
    Ok(read_u64(tx.get(table, key)?.as_deref()))
}

/// One key and value read by a range scan.
pub(super) type Entry = (Vec<u8>, Vec<u8>);

/// A key range of one table for [`super::backend::Backend::scan`].
#[derive(Clone, Debug)]
pub(super) struct Range {
    pub table: Table,
    pub start: std::ops::Bound<Vec<u8>>,
    pub end: std::ops::Bound<Vec<u8>>,
    /// Newest (highest key) first.
    pub reverse: bool,
    pub limit: usize,
}

impl Range {
    pub fn new(
        table: Table,
        start: std::ops::Bound<Vec<u8>>,
        end: std::ops::Bound<Vec<u8>>,
    ) -> Self {
        Range {
            table,
            start,
            end,
            reverse: false,
            limit: usize::MAX,
        }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(table: Table, prefix: &[u8]) -> Self {
        let end = prefix_end(prefix).map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        Range::new(table, std::ops::Bound::Included(prefix.to_vec()), end)
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }
}

/// The first key after every key starting with `prefix` (None: no such key).
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl From<Error> for TxError {
    fn from(error: Error) -> Self {
        TxError::Abort(error)
    }
}

/// What a transaction's outcome means to a caller, once the backend no longer retries it.
pub(super) fn outcome_error(error: TxError) -> Error {
    match error {
        TxError::Abort(error) => error,
        TxError::Storage(cause) => Error::internal(cause),
        TxError::Conflict | TxError::Unread => {
            Error::internal("a transaction ended in a state its backend should have retried")
        }
    }
}

/// What the one-point read hands each entry to.
pub(in crate::store) type Each<'a> = dyn FnMut(Table, &[u8], &[u8]) -> Result<()> + Send + 'a;

/// The next write of a restore (table, key, value), or None after the last: what a backend
/// applies without knowing the backup format.
#[cfg(feature = "etcd")]
pub(in crate::store) type NextWrite<'a> =
    dyn FnMut() -> Result<Option<(Table, Vec<u8>, Vec<u8>)>> + Send + 'a;
