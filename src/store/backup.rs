//! Offline backup and restore of a data dir (the server must be stopped: the data-dir lock
//! makes sure of it).
//!
//! A backup file is `ZSCBACKUP1\n`, then one length-delimited [`Entry`] per key of every tree,
//! then an end entry (empty tree name) holding the count and a blake3 digest of all entries.
//! It holds what the database holds: hashes of keys and tokens, never a secret.
//!
//! A restore gets a new store id: events made after the backup are gone, so no subscriber may
//! resume across it (its cursor is refused with OUT_OF_RANGE and it flushes its cache).

use std::{fs, path::Path};

use prost::Message;

use super::tables::{Table, Trees};
#[cfg(feature = "etcd")]
use super::META_INITIALISED;
use super::{
    audit, files, has_database, io_error, kv::read_u64, lock_data_dir, open_db, StoreOptions,
    META_HEAD, META_STORE_ID,
};
use crate::domain::{random_base62, Error, Result};

const MAGIC: &[u8] = b"ZSCBACKUP1\n";

#[derive(Clone, PartialEq, Message)]
struct Entry {
    /// Empty for the end entry.
    #[prost(string, tag = "1")]
    tree: String,
    #[prost(bytes = "vec", tag = "2")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    value: Vec<u8>,
}

/// What a backup or restore handled.
#[derive(Debug)]
pub struct BackupReport {
    pub entries: u64,
    /// The revocation log head in the backup.
    pub head: u64,
    /// The store id of the data dir backed up, or the new one a restore made.
    pub store_id: String,
}

/// Writes every tree of the (stopped) data dir `dir` to `out`, atomically and mode 0600.
pub fn backup(dir: &Path, out: &Path) -> Result<BackupReport> {
    if !has_database(dir) {
        return Err(Error::not_found(format!(
            "no zsc database in {}",
            dir.display()
        )));
    }
    let (_lock, db) = open_db(dir, &StoreOptions::default())?;
    let trees = Trees::open(&db)?;
    let mut all = Vec::new();
    for &table in Table::ALL {
        for item in trees.get(table).iter() {
            let (key, value) = item.map_err(Error::internal)?;
            all.push((table, key.to_vec(), value.to_vec()));
        }
    }
    let (bytes, entries) = encode(&all);
    files::write_private_file(out, &bytes)?;

    let head = read_u64(
        trees
            .meta
            .get(META_HEAD)
            .map_err(Error::internal)?
            .as_deref(),
    );
    let store_id = trees
        .meta
        .get(META_STORE_ID)
        .map_err(Error::internal)?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    Ok(BackupReport {
        entries,
        head,
        store_id: store_id.unwrap_or_default(),
    })
}

/// The backup file for `all` (every key of every table) and how many entries it holds.
fn encode(all: &[(Table, Vec<u8>, Vec<u8>)]) -> (Vec<u8>, u64) {
    let mut bytes = MAGIC.to_vec();
    let mut digest = blake3::Hasher::new();
    let mut entries = 0u64;
    for (table, key, value) in all {
        let entry = Entry {
            tree: table.name().to_owned(),
            key: key.clone(),
            value: value.clone(),
        }
        .encode_length_delimited_to_vec();
        digest.update(&entry);
        bytes.extend_from_slice(&entry);
        entries += 1;
    }
    let end = Entry {
        tree: String::new(),
        key: entries.to_be_bytes().to_vec(),
        value: digest.finalize().as_bytes().to_vec(),
    };
    bytes.extend_from_slice(&end.encode_length_delimited_to_vec());
    (bytes, entries)
}

/// Restores a backup into `dir`, which must not hold a database yet. The restored store gets a
/// new store id.
pub fn restore(input: &Path, dir: &Path) -> Result<BackupReport> {
    if has_database(dir) {
        return Err(Error::FailedPrecondition(format!(
            "{} already holds a zsc database; restore into an empty data dir",
            dir.display()
        )));
    }
    let bytes = fs::read(input).map_err(|e| io_error(input, e))?;
    let entries = parse(&bytes)
        .map_err(|why| Error::invalid(format!("{} is not a zsc backup: {why}", input.display())))?;

    files::create_private_dir(dir)?;
    let _lock = lock_data_dir(dir)?;
    // Built aside and moved into place only when complete and flushed: an interrupted restore
    // leaves no database behind (so no half-restored store, and never one under the old id).
    let staging = dir.join("db.restoring");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
    }
    let store_id = format!("st_{}", random_base62(16));
    let from_store = entries
        .iter()
        .find(|e| e.table == Table::Meta && e.key == META_STORE_ID)
        .map(|e| String::from_utf8_lossy(&e.value).into_owned())
        .unwrap_or_default();
    let head = {
        let db = sled::Config::new()
            .path(&staging)
            .open()
            .map_err(Error::internal)?;
        let trees = Trees::open(&db)?;
        for &table in Table::ALL {
            let mut batch = sled::Batch::default();
            let in_table = || entries.iter().filter(move |e| e.table == table);
            for entry in in_table() {
                batch.insert(entry.key.as_slice(), entry.value.as_slice());
            }
            match table {
                // A restore is a new store: no subscriber may resume across it.
                Table::Meta => batch.insert(META_STORE_ID, store_id.as_bytes()),
                Table::Audit => {
                    let head = audit::head_of(in_table().map(|e| (&e.key[..], &e.value[..])));
                    for (key, value) in audit::restored(head, &from_store) {
                        batch.insert(key, value);
                    }
                }
                _ => {}
            }
            trees
                .get(table)
                .apply_batch(batch)
                .map_err(Error::internal)?;
        }
        let head = read_u64(
            trees
                .meta
                .get(META_HEAD)
                .map_err(Error::internal)?
                .as_deref(),
        );
        db.flush().map_err(Error::internal)?;
        head
    };
    // sled's flush is not an fsync: sync every file and the staging dir itself before the
    // rename makes it the database, then the rename.
    files::secure_tree(&staging)?;
    let target = dir.join("db");
    fs::rename(&staging, &target).map_err(|e| io_error(&target, e))?;
    files::fsync_parent(&target)?;
    Ok(BackupReport {
        entries: entries.len() as u64,
        head,
        store_id,
    })
}

/// One key of one table, read back from a backup.
struct Restored {
    table: Table,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// Checks the magic, every entry, the count and the digest.
fn parse(bytes: &[u8]) -> std::result::Result<Vec<Restored>, &'static str> {
    let mut rest = bytes.strip_prefix(MAGIC).ok_or("wrong header")?;
    let mut digest = blake3::Hasher::new();
    let mut entries = Vec::new();
    loop {
        let before = rest;
        let entry =
            Entry::decode_length_delimited(&mut rest).map_err(|_| "truncated or corrupt entry")?;
        if entry.tree.is_empty() {
            let count =
                <[u8; 8]>::try_from(entry.key.as_slice()).map_err(|_| "corrupt end entry")?;
            if u64::from_be_bytes(count) != entries.len() as u64
                || entry.value != digest.finalize().as_bytes()
            {
                return Err("checksum mismatch");
            }
            if !rest.is_empty() {
                return Err("data after the end entry");
            }
            return Ok(entries);
        }
        let table = Table::from_name(&entry.tree).ok_or("unknown tree")?;
        digest.update(&before[..before.len() - rest.len()]);
        entries.push(Restored {
            table,
            key: entry.key,
            value: entry.value,
        });
    }
}

/// Backs up a store on etcd (replicas may keep running: every key is read at one revision).
#[cfg(feature = "etcd")]
pub async fn backup_etcd(url: &super::EtcdUrl, out: &Path) -> Result<BackupReport> {
    let all = super::etcd::dump(url).await?;
    let (bytes, entries) = encode(&all);
    files::write_private_file(out, &bytes)?;
    let meta = |key: &[u8]| {
        all.iter()
            .find(|(t, k, _)| *t == Table::Meta && k == key)
            .map(|(_, _, v)| v.clone())
    };
    Ok(BackupReport {
        entries,
        head: read_u64(meta(META_HEAD).as_deref()),
        store_id: String::from_utf8_lossy(&meta(META_STORE_ID).unwrap_or_default()).into_owned(),
    })
}

/// Restores a backup (of a data dir or of another store on etcd) into an empty prefix on etcd,
/// with a new store id: the migration path from one node to replicas. The `initialised` marker
/// is written last, so replicas started on a prefix whose restore was interrupted refuse it
/// rather than serve half a store.
#[cfg(feature = "etcd")]
pub async fn restore_etcd(input: &Path, url: &super::EtcdUrl) -> Result<BackupReport> {
    let bytes = fs::read(input).map_err(|e| io_error(input, e))?;
    let entries = parse(&bytes)
        .map_err(|why| Error::invalid(format!("{} is not a zsc backup: {why}", input.display())))?;
    let store_id = format!("st_{}", random_base62(16));
    let from_store = entries
        .iter()
        .find(|e| e.table == Table::Meta && e.key == META_STORE_ID)
        .map(|e| String::from_utf8_lossy(&e.value).into_owned())
        .unwrap_or_default();
    let audit_head = audit::head_of(
        entries
            .iter()
            .filter(|e| e.table == Table::Audit)
            .map(|e| (&e.key[..], &e.value[..])),
    );
    let mut all: Vec<(Table, Vec<u8>, Vec<u8>)> = entries
        .iter()
        .filter(|e| {
            !(e.table == Table::Meta && (e.key == META_STORE_ID || e.key == META_INITIALISED))
        })
        .filter(|e| !(e.table == Table::Audit && audit::is_head(&e.key)))
        .map(|e| (e.table, e.key.clone(), e.value.clone()))
        .collect();
    all.push((
        Table::Meta,
        META_STORE_ID.to_vec(),
        store_id.as_bytes().to_vec(),
    ));
    for (key, value) in audit::restored(audit_head, &from_store) {
        all.push((Table::Audit, key, value));
    }
    let head = read_u64(
        entries
            .iter()
            .find(|e| e.table == Table::Meta && e.key == META_HEAD)
            .map(|e| &e.value[..]),
    );
    let count = all.len() as u64;
    super::etcd::load_empty(url, all, (Table::Meta, META_INITIALISED.to_vec(), vec![1])).await?;
    Ok(BackupReport {
        entries: count,
        head,
        store_id,
    })
}
