//! Opening sled's database: the private data dir, its lock (one process per data dir) and the
//! database inside it.

use std::{
    fs::{File, TryLockError},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    time::{Duration, Instant},
};

use super::files::{self, io_error};
use crate::domain::{Error, Result};

/// How to open the store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// sled's page cache in bytes. Its default is 1 GiB; our records are small.
    pub cache_bytes: u64,
}

/// sled's page cache unless `--cache-bytes` says otherwise.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Locks the data dir and opens its sled database (creating both if needed).
pub(in crate::store) fn open_db(dir: &Path, options: &StoreOptions) -> Result<(File, sled::Db)> {
    files::create_private_dir(dir)?;
    let lock = lock_data_dir(dir)?;
    let db_dir = dir.join("db");
    let started = Instant::now();
    let db = open_sled(&db_dir, options)?;
    tracing::debug!(
        took_ms = started.elapsed().as_millis() as u64,
        "sled database opened (its recovery)"
    );
    files::secure_tree(dir)?;
    Ok((lock, db))
}

/// How long an open waits for sled's own lock (see [`open_sled`]).
const SLED_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens sled's database in `db_dir`. The data dir's lock is already ours, so sled's own lock
/// on its files can only be held by a database this process has just dropped: sled finishes a
/// `flush_async` on a thread of its own, which lets go of the files a moment after the flush
/// is reported (sled's own tests block on the lock for that reason). Such an open waits for
/// it, up to [`SLED_LOCK_WAIT`]; sled names the failure only in its message.
pub(super) fn open_sled(db_dir: &Path, options: &StoreOptions) -> Result<sled::Db> {
    let deadline = Instant::now() + SLED_LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(db_dir)
            .cache_capacity(options.cache_bytes)
            .open();
        match opened {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.map_err(Error::internal),
        }
    }
}

/// Whether `dir` holds a zsc database.
pub fn has_database(dir: &Path) -> bool {
    dir.join("db").exists()
}

pub(in crate::store) fn lock_data_dir(dir: &Path) -> Result<File> {
    let path = dir.join("zsc.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::FailedPrecondition(format!(
            "data dir {} is in use by another zsc process",
            dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(io_error(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_waits_for_a_database_this_process_is_letting_go_of() {
        let dir = tempfile::tempdir().unwrap();
        let db_dir = dir.path().join("db");
        let held = sled::Config::new().path(&db_dir).open().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let opened = open_sled(&db_dir, &StoreOptions::default());
        release.join().unwrap();
        assert!(opened.is_ok(), "{:?}", opened.err());
    }

    #[test]
    fn a_database_held_past_the_wait_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db_dir = dir.path().join("db");
        let _held = sled::Config::new().path(&db_dir).open().unwrap();
        let refused = open_sled(&db_dir, &StoreOptions::default()).unwrap_err();
        assert!(
            refused.to_string().contains("could not acquire lock"),
            "{refused}"
        );
    }
}
