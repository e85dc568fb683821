//! Restore: one function produces the writes ([`Writes`]), and each backend applies them as
//! they come, holding one batch at a time (sled: into a staging database, flushed after every
//! small batch, with a small cache; etcd: Txns into an empty prefix).
//!
//! The writes are the backup's entries but for three, then what makes the restore a new store:
//! a new store id (events made after the backup are gone, so no subscriber may resume across
//! it), the backup's audit head moved on by one STORE_RESTORED entry, and last the
//! `initialised` marker, so that a store whose restore stopped short is never served.

use std::path::Path;

use super::backup_file::{Decoder, Done, REPORT_EVERY};
use super::kv::read_u64;
use super::rules::audit;
use super::sled::batch::SmallBatches;
use super::tables::{Table, Trees};
use super::tables::{META_HEAD, META_INITIALISED, META_STORE_ID};
use crate::domain::{random_base62, Error, Result};

/// One write of a restore.
pub(super) struct Write {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Write {
    fn new(table: Table, key: &[u8], value: &[u8]) -> Write {
        Write {
            table,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }
}

/// The writes a restore makes, read from a backup one entry at a time.
pub(super) struct Writes {
    entries: Decoder,
    /// The restored store's id, new.
    pub store_id: String,
    /// The backed-up store's id, its audit head and its revocation log head, once read.
    from_store: String,
    audit_head: u64,
    pub log_head: u64,
    /// What follows the backup's entries, once they are all read and verified.
    tail: Option<std::vec::IntoIter<Write>>,
}

impl Writes {
    pub fn new(entries: Decoder) -> Writes {
        Writes {
            entries,
            store_id: format!("st_{}", random_base62(16)),
            from_store: String::new(),
            audit_head: 0,
            log_head: 0,
            tail: None,
        }
    }

    /// How much of the backup file has been read.
    pub fn done(&self) -> Done {
        self.entries.done
    }

    /// The next write; None once the marker has been given.
    pub fn next_write(&mut self) -> Result<Option<Write>> {
        if let Some(tail) = &mut self.tail {
            return Ok(tail.next());
        }
        while let Some(entry) = self.entries.next_entry()? {
            let value = Some(&entry.value[..]);
            match (entry.table, &entry.key[..]) {
                (Table::Meta, META_STORE_ID) => {
                    self.from_store = String::from_utf8_lossy(&entry.value).into_owned();
                    continue;
                }
                (Table::Meta, META_INITIALISED) => continue,
                (Table::Audit, key) if audit::is_head(key) => {
                    self.audit_head = read_u64(value);
                    continue;
                }
                (Table::Meta, META_HEAD) => self.log_head = read_u64(value),
                _ => {}
            }
            return Ok(Some(Write {
                table: entry.table,
                key: entry.key,
                value: entry.value,
            }));
        }
        let mut tail = vec![Write::new(
            Table::Meta,
            META_STORE_ID,
            self.store_id.as_bytes(),
        )];
        for (key, value) in audit::restored(self.audit_head, &self.from_store) {
            tail.push(Write::new(Table::Audit, &key, &value));
        }
        tail.push(Write::new(Table::Meta, META_INITIALISED, &[1]));
        self.tail = Some(tail.into_iter());
        self.next_write()
    }
}

/// sled's page cache while restoring. With small batches ([`SmallBatches`]), each flushed, this is what bounds a
/// restore's memory: at 200,000 keys the server's default of 64 MiB let it grow to 127 MiB
/// even with the database closed and opened again every 4 MiB; with 8 MiB and one opening it
/// peaked at 82 MiB (and flushing every 1 MiB rather than every batch: 149 MiB).
const CACHE_BYTES: u64 = 8 << 20;

/// Applies `writes` to a new sled database at `staging`, in small batches of one table each,
/// each flushed before the next is applied ([`SmallBatches`]).
pub(super) fn apply_to_sled(
    staging: &Path,
    writes: &mut Writes,
    progress: &mut dyn FnMut(Done),
) -> Result<()> {
    let db = sled::Config::new()
        .path(staging)
        .cache_capacity(CACHE_BYTES)
        .open()
        .map_err(Error::internal)?;
    let trees = Trees::open(&db)?;
    let mut reported = 0;
    let mut open: Option<(Table, SmallBatches)> = None;
    while let Some(Write { table, key, value }) = writes.next_write()? {
        if open.as_ref().is_some_and(|(open, _)| *open != table) {
            open.take().expect("checked above").1.finish()?;
        }
        let (_, batches) = open.get_or_insert_with(|| (table, SmallBatches::new(trees.get(table))));
        batches.push(key, value)?;
        let done = writes.done();
        if done.entries >= reported + REPORT_EVERY {
            reported = done.entries;
            progress(done);
        }
    }
    if let Some((_, batches)) = open {
        batches.finish()?;
    }
    progress(writes.done());
    Ok(())
}
