//! Backup and restore: the commands on a data dir or an etcd prefix.
//!
//! A backup file (`backup_file.rs`) is `ZSCBACKUP1\n`, then one length-delimited entry per key
//! of every tree, then an end entry (empty tree name) holding the count and a blake3 digest of
//! all entries. It holds what the database holds: hashes of keys and tokens, never a secret.
//!
//! A backup is the seam's one-point read (`snapshot.rs`) written entry by entry as it is read,
//! whether offline (`zsc backup`, this file) or from a running server (`online_backup.rs`); a
//! restore is the writes of `restore.rs`, applied as they are read (on sled into a staging dir
//! that only a complete, verified file becomes the database), so neither holds more than a
//! batch in memory. Both report how far they have got ([`Done`]) to a callback, for the CLI's
//! progress display.

use std::{fs, io::Write, path::Path, time::Duration};

use super::backup_file::{Decoder, Encoder};
pub use super::backup_file::{Done, Progress};
use super::handle::Store;
use super::kv::read_u64;
use super::restore::{self, Writes};
use super::rules::audit;
use super::sled::files::{self, io_error};
use super::sled::open::{has_database, lock_data_dir, StoreOptions};
use super::snapshot::Paused;
use super::tables::Table;
use super::tables::{META_HEAD, META_STORE_ID};
use crate::domain::{Error, Result};

/// What a backup or restore handled.
#[derive(Debug, Default)]
pub struct BackupReport {
    pub entries: u64,
    /// The size of the backup file.
    pub bytes: u64,
    /// The revocation log head in the backup: the point it names.
    pub head: u64,
    /// The audit trail's head in the backup (before a restore's own entry).
    pub audit_head: u64,
    /// The store id of the store backed up, or the new one a restore made.
    pub store_id: String,
    /// How long writers waited while the store was read (sled; zero on etcd and for a restore).
    pub paused: Duration,
}

impl BackupReport {
    /// Notes the entries that name the point a backup is of, as they pass.
    fn see(&mut self, table: Table, key: &[u8], value: &[u8]) {
        match (table, key) {
            (Table::Meta, META_HEAD) => self.head = read_u64(Some(value)),
            (Table::Meta, META_STORE_ID) => {
                self.store_id = String::from_utf8_lossy(value).into_owned();
            }
            (Table::Audit, key) if audit::is_head(key) => self.audit_head = read_u64(Some(value)),
            _ => {}
        }
    }
}

impl Store {
    /// Writes a backup of the whole store, as it stood at one point, into `out`. On sled the
    /// copy blocks its thread and writers wait for it: call it off the runtime's workers.
    /// Everything read is committed; a caller that needs it durable syncs the store after.
    pub async fn write_backup(
        &self,
        out: &mut (dyn Write + Send),
        progress: &mut Progress<'_>,
    ) -> Result<BackupReport> {
        let mut report = BackupReport::default();
        let mut backup = Encoder::new(out, progress)?;
        let Paused(paused) = self
            .backend()
            .snapshot(&mut |table, key, value| {
                report.see(table, key, value);
                backup.entry(table, key, value)
            })
            .await?;
        let done = backup.finish()?;
        Ok(BackupReport {
            entries: done.entries,
            bytes: done.bytes,
            paused,
            ..report
        })
    }
}

/// Writes every tree of the (stopped) data dir `dir` to `out`, atomically and mode 0600.
pub fn backup(dir: &Path, out: &Path) -> Result<BackupReport> {
    backup_reporting(dir, out, &mut |_| {})
}

/// [`backup`], calling `progress` every few thousand entries and once at the end.
pub fn backup_reporting(
    dir: &Path,
    out: &Path,
    progress: &mut Progress<'_>,
) -> Result<BackupReport> {
    if !has_database(dir) {
        return Err(Error::not_found(format!(
            "no zsc database in {}",
            dir.display()
        )));
    }
    let store = Store::open(dir, &StoreOptions::default())?.store;
    let mut file = files::PrivateFile::create(out)?;
    // sled's side of the one-point read never waits.
    let report = super::handle::futures_now(store.write_backup(file.writer(), progress))?;
    file.commit()?;
    Ok(report)
}

/// Reads a backup file through, checking every entry, the count and the digest; returns
/// what it holds (for a backup received from a server, before it is trusted).
pub fn verify_backup(path: &Path) -> Result<Done> {
    let mut entries = Decoder::open(path)?;
    while entries.next_entry()?.is_some() {}
    Ok(entries.done)
}

/// Restores a backup into `dir`, which must not hold a database yet. The restored store gets a
/// new store id.
pub fn restore(input: &Path, dir: &Path) -> Result<BackupReport> {
    restore_reporting(input, dir, &mut |_| {})
}

/// [`restore`], calling `progress` every few thousand entries and once at the end.
pub fn restore_reporting(
    input: &Path,
    dir: &Path,
    progress: &mut Progress<'_>,
) -> Result<BackupReport> {
    if has_database(dir) {
        return Err(Error::FailedPrecondition(format!(
            "{} already holds a zsc database; restore into an empty data dir",
            dir.display()
        )));
    }
    let mut writes = Writes::new(Decoder::open(input)?);
    files::create_private_dir(dir)?;
    let _lock = lock_data_dir(dir)?;
    // Built aside and moved into place only when complete, verified and flushed: an
    // interrupted or refused restore leaves no database behind (so no half-restored store,
    // and never one under the old id).
    let staging = dir.join("db.restoring");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
    }
    if let Err(error) = restore::apply_to_sled(&staging, &mut writes, progress) {
        let _ = fs::remove_dir_all(&staging);
        return Err(error);
    }
    // sled's flush is not an fsync: sync every file and the staging dir itself before the
    // rename makes it the database, then the rename.
    files::secure_tree(&staging)?;
    let target = dir.join("db");
    fs::rename(&staging, &target).map_err(|e| io_error(&target, e))?;
    files::fsync_parent(&target)?;
    Ok(restored(&writes))
}

/// What a restore reports once every write is applied.
fn restored(writes: &Writes) -> BackupReport {
    let done = writes.done();
    BackupReport {
        entries: done.entries,
        bytes: done.bytes,
        head: writes.log_head,
        store_id: writes.store_id.clone(),
        ..BackupReport::default()
    }
}

/// Backs up a store on etcd (replicas may keep running: every key is read at one revision).
#[cfg(feature = "etcd")]
pub async fn backup_etcd(url: &super::EtcdUrl, out: &Path) -> Result<BackupReport> {
    let mut file = files::PrivateFile::create(out)?;
    let mut progress = |_| {};
    let mut report = BackupReport::default();
    let mut backup = Encoder::new(file.writer(), &mut progress)?;
    super::etcd::snapshot_of(url, &mut |table, key, value| {
        report.see(table, key, value);
        backup.entry(table, key, value)
    })
    .await?;
    let done = backup.finish()?;
    file.commit()?;
    Ok(BackupReport {
        entries: done.entries,
        bytes: done.bytes,
        ..report
    })
}

/// Restores a backup (of a data dir or of another store on etcd) into an empty prefix on etcd,
/// with a new store id: the migration path from one node to replicas. Replicas started on a
/// prefix whose restore was interrupted refuse it (the `initialised` marker comes last).
#[cfg(feature = "etcd")]
pub async fn restore_etcd(input: &Path, url: &super::EtcdUrl) -> Result<BackupReport> {
    let mut writes = Writes::new(Decoder::open(input)?);
    let marker = (Table::Meta, super::tables::META_INITIALISED);
    let mut next_write = || {
        let next = writes.next_write()?;
        Ok(next.map(|w| (w.table, w.key, w.value)))
    };
    super::etcd::load_empty(url, &mut next_write, marker).await?;
    Ok(restored(&writes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Caller, Email, Name};
    use crate::store::sled::open::open_db;
    use crate::store::tables::Trees;
    use crate::store::{BulkOrg, Store};

    /// Every (table, key, value) of the sled database in `dir`.
    fn everything(dir: &Path) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
        let (_lock, db) = open_db(dir, &StoreOptions::default()).unwrap();
        let trees = Trees::open(&db).unwrap();
        let mut all = Vec::new();
        for &table in Table::ALL {
            for item in trees.get(table).iter() {
                let (key, value) = item.unwrap();
                all.push((table, key.to_vec(), value.to_vec()));
            }
        }
        all
    }

    /// A store of more entries than one restore batch (and one progress report) holds.
    async fn store_of(orgs: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default())
            .unwrap()
            .store;
        let batch = (0..orgs)
            .map(|i| BulkOrg {
                name: Name::parse("name", &format!("Org {i}")).unwrap(),
                admin: Email::parse("email", &format!("admin@org-{i}.example")).unwrap(),
            })
            .collect();
        store
            .bulk_orgs_with_keys(&Caller::cli(), batch)
            .await
            .unwrap();
        dir
    }

    #[tokio::test]
    async fn a_restored_store_holds_every_entry_of_the_original_and_progress_adds_up() {
        let original = store_of(2_000).await;
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("zsc.backup");
        let mut reported = Vec::new();
        let backup = backup_reporting(original.path(), &file, &mut |d| reported.push(d)).unwrap();
        assert!(
            backup.entries > 2 * crate::store::backup_file::REPORT_EVERY,
            "{backup:?}"
        );
        assert_eq!(backup.bytes, fs::metadata(&file).unwrap().len());
        assert!(reported.is_sorted_by_key(|d| d.entries) && reported.len() >= 3);
        let last = Done {
            entries: backup.entries,
            bytes: backup.bytes,
        };
        assert_eq!(
            reported.last(),
            Some(&last),
            "the last report is the whole file"
        );

        let restored_dir = work.path().join("restored");
        let mut reported = Vec::new();
        let restored = restore_reporting(&file, &restored_dir, &mut |d| reported.push(d)).unwrap();
        assert_eq!(
            (restored.entries, restored.bytes),
            (last.entries, last.bytes)
        );
        assert!(reported.is_sorted_by_key(|d| d.bytes) && reported.len() >= 3);
        assert_eq!(reported.last(), Some(&last));

        // Everything is there, but the store id (a new one) and the restore's own audit entry.
        let before = everything(original.path());
        let after = everything(&restored_dir);
        let store_id = |all: &[(Table, Vec<u8>, Vec<u8>)]| {
            all.iter()
                .find(|(t, k, _)| *t == Table::Meta && k == META_STORE_ID)
                .map(|(_, _, v)| v.clone())
        };
        assert_ne!(store_id(&before), store_id(&after));
        let added: Vec<_> = after.iter().filter(|e| !before.contains(e)).collect();
        let lost: Vec<_> = before.iter().filter(|e| !after.contains(e)).collect();
        let kinds = |entries: &[&(Table, Vec<u8>, Vec<u8>)]| {
            entries
                .iter()
                .map(|(t, k, _)| (*t, k[0]))
                .collect::<Vec<_>>()
        };
        // Lost: the old store id and the old audit head; added: the new ones and one entry.
        assert_eq!(kinds(&lost), [(Table::Meta, b's'), (Table::Audit, b'h')]);
        assert_eq!(
            kinds(&added),
            [
                (Table::Meta, b's'),
                (Table::Audit, b'h'),
                (Table::Audit, b's')
            ]
        );
    }

    #[tokio::test]
    async fn a_truncated_backup_is_refused_and_leaves_no_database() {
        let original = store_of(1_000).await;
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("zsc.backup");
        backup(original.path(), &file).unwrap();
        let bytes = fs::read(&file).unwrap();
        // Cut after most entries were applied: the restore fails at the end, not at once.
        fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
        let into = work.path().join("restored");
        let error = restore(&file, &into).unwrap_err();
        assert!(error.to_string().contains("not a zsc backup"), "{error}");
        assert!(!has_database(&into), "no database");
        assert!(
            !into.join("db.restoring").exists(),
            "no staging left behind"
        );
        // And the data dir takes a good restore afterwards.
        fs::write(&file, &bytes).unwrap();
        restore(&file, &into).unwrap();
    }
}
