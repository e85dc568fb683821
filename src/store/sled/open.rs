//! Opening sled's database: the private data dir, its lock (one process per data dir) and the
//! database inside it.

use std::{
    fs::{File, TryLockError},
    os::unix::fs::OpenOptionsExt,
    path::Path,
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
    let started = std::time::Instant::now();
    let db = sled::Config::new()
        .path(&db_dir)
        .cache_capacity(options.cache_bytes)
        .open()
        .map_err(Error::internal)?;
    tracing::debug!(
        took_ms = started.elapsed().as_millis() as u64,
        "sled database opened (its recovery)"
    );
    files::secure_tree(dir)?;
    Ok((lock, db))
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
