//! Restore: one function produces the writes ([`Writes`]), and each backend applies them as
//! they come, holding one batch at a time (sled: into a staging database, flushed after every
//! batch; etcd: Txns into an empty prefix).
//!
//! The writes are the backup's entries but for three, then what makes the restore a new store:
//! a new store id (events made after the backup are gone, so no subscriber may resume across
//! it), the backup's audit head moved on by one STORE_RESTORED entry, and last the
//! `initialised` marker, so that a store whose restore stopped short is never served.

use std::path::Path;

use super::backup::{Decoder, Done, REPORT_EVERY};
use super::kv::read_u64;
use super::tables::{Table, Trees};
use super::{audit, META_HEAD, META_INITIALISED, META_STORE_ID};
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

/// The most a sled batch holds before it is applied and flushed (keys and values).
const BATCH_BYTES: usize = 8 << 20;

/// Applies `writes` to a new sled database at `staging`, a batch at a time, each flushed before
/// the next is read: what sled holds dirty stays within a batch.
pub(super) fn apply_to_sled(
    staging: &Path,
    writes: &mut Writes,
    progress: &mut dyn FnMut(Done),
) -> Result<()> {
    let db = sled::Config::new()
        .path(staging)
        .cache_capacity(super::DEFAULT_CACHE_BYTES)
        .open()
        .map_err(Error::internal)?;
    let trees = Trees::open(&db)?;
    let (mut batch, mut table, mut bytes) = (sled::Batch::default(), Table::Meta, 0);
    let mut reported = 0;
    loop {
        let next = writes.next_write()?;
        let switch = next.as_ref().is_some_and(|w| w.table != table);
        if bytes > 0 && (next.is_none() || switch || bytes >= BATCH_BYTES) {
            let full = std::mem::take(&mut batch);
            trees
                .get(table)
                .apply_batch(full)
                .map_err(Error::internal)?;
            db.flush().map_err(Error::internal)?;
            bytes = 0;
        }
        let Some(write) = next else { break };
        let done = writes.done();
        if done.entries >= reported + REPORT_EVERY {
            reported = done.entries;
            progress(done);
        }
        table = write.table;
        bytes += write.key.len() + write.value.len() + 1;
        batch.insert(write.key, write.value);
    }
    progress(writes.done());
    Ok(())
}
