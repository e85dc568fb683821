//! This replica's copy of the tables it reads without a round trip, kept current by the
//! follower (`follow.rs`).

use std::{collections::BTreeMap, ops::Bound, sync::RwLock};

use super::url::table_key;
use crate::domain::Result;
use crate::store::kv::{prefix_end, Entry, Range};
use crate::store::tables::Table;

/// Tables kept in memory on each replica, current through the watch: what authentication and
/// the revocation streams read without a round trip.
pub(super) const MIRRORED: [Table; 3] = [Table::Accounts, Table::Tokens, Table::Events];

/// This replica's copy of the mirrored tables.
#[derive(Default)]
pub(super) struct Mirror {
    pub(super) tables: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Moves after each change to the mirrored accounts or tokens is in `tables`.
    accounts: std::sync::atomic::AtomicU64,
}

impl Mirror {
    pub(super) fn accounts_changed(&self) {
        self.accounts
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    pub(super) fn generation(&self) -> u64 {
        self.accounts.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        debug_assert!(MIRRORED.contains(&table), "{table:?} is not mirrored");
        let tables = self.tables.read().expect("mirror lock is never poisoned");
        Ok(tables.get(&table_key(b"", table, key)).cloned())
    }

    pub(super) fn scan(&self, range: &Range) -> Result<Vec<Entry>> {
        debug_assert!(
            MIRRORED.contains(&range.table),
            "{:?} is not mirrored",
            range.table
        );
        let base = table_key(b"", range.table, b"");
        let bound = |b: &Bound<Vec<u8>>| match b {
            Bound::Included(k) => Bound::Included(table_key(b"", range.table, k)),
            Bound::Excluded(k) => Bound::Excluded(table_key(b"", range.table, k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let start = match bound(&range.start) {
            Bound::Unbounded => Bound::Included(base.clone()),
            other => other,
        };
        let end = match bound(&range.end) {
            Bound::Unbounded => Bound::Excluded(prefix_end(&base).expect("ends in '/'")),
            other => other,
        };
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
            (&start, &end)
        {
            if s > e {
                return Ok(Vec::new());
            }
        }
        let tables = self.tables.read().expect("mirror lock is never poisoned");
        let entries = tables.range((start, end));
        let item = |(k, v): (&Vec<u8>, &Vec<u8>)| (k[base.len()..].to_vec(), v.clone());
        Ok(if range.reverse {
            entries.rev().take(range.limit).map(item).collect()
        } else {
            entries.take(range.limit).map(item).collect()
        })
    }
}
