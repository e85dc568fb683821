//! Group commit and the write fence: a mutation answers OK only once it would survive a power
//! loss, concurrent mutations share one flush, and a storage failure stops every later write.
//!
//! Each writer takes a ticket *after* its transaction committed, then queues on one lock.
//! Whoever holds the lock flushes once for every ticket issued so far; the writers behind it
//! find their ticket already covered and return without flushing. `benches/group_commit.rs`
//! measures the difference against a flush per write.
//!
//! A flush is sled's own (which on Linux ends in `sync_file_range`: it survives a process crash
//! but neither flushes the disk's write cache nor the file's size) followed by an `fdatasync`
//! of sled's files ([`DiskFiles`]), so one fsync covers every writer waiting on that flush.
//!
//! A flush or fsync that fails is never retried ("fsyncgate": after a failed fsync the page
//! cache cannot be trusted). The store is *faulted*: every later mutation is refused with
//! [`Error::StorageFailed`], the durable head carries the [`Fault`] (which ends every
//! revocation stream), and the server watches it to go NOT_SERVING and exit once it can restart.

use std::{
    collections::HashSet,
    ffi::OsString,
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex as SyncMutex,
    },
};

use tokio::sync::{watch, Mutex};

use crate::domain::{Error, Result};
use crate::store::head::{Announcer, Fault, Head};
use crate::store::{kv::read_u64, tables::META_HEAD};

pub(in crate::store) struct Durability {
    db: sled::Db,
    /// Where the log's committed head is kept.
    meta: sled::Tree,
    files: Arc<DiskFiles>,
    /// Tickets handed out; ticket n means "the n-th committed write wants to be durable".
    issued: AtomicU64,
    /// Highest ticket known durable. Guarded by the lock so only one flush runs at a time.
    flushed: Mutex<u64>,
    /// The highest revocation sequence known durable (what subscribers may be told about),
    /// and the fault once a flush failed: never cleared, only a restart clears it.
    head: Announcer,
}

impl Durability {
    /// Everything on disk at open is durable, so the durable head starts at the committed one.
    pub fn open(db: sled::Db, meta: sled::Tree, db_dir: &Path) -> Result<Self> {
        let head = committed_head(&meta)?;
        Ok(Durability {
            db,
            meta,
            files: Arc::new(DiskFiles::open(db_dir)?),
            issued: AtomicU64::new(0),
            flushed: Mutex::new(0),
            head: Announcer::new(head),
        })
    }

    /// Returns once everything committed before the call is on disk and fsynced.
    pub async fn sync(&self) -> Result<()> {
        self.writable()?;
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed = self.flushed.lock().await;
        if *flushed >= ticket {
            return Ok(());
        }
        // A flush that failed while this writer queued covers nothing: never retry it.
        self.writable()?;
        let covers = self.issued.load(Ordering::SeqCst);
        // Read before the flush, so the flush covers it.
        let head = committed_head(&self.meta)?;
        if let Err(cause) = self.flush().await {
            return Err(self.fail(&cause));
        }
        *flushed = covers;
        // A flush that failed meanwhile (another writer's) stopped the head: it stands.
        if self.head.serving().is_ok() {
            self.head.advance(head);
        }
        Ok(())
    }

    async fn flush(&self) -> io::Result<()> {
        self.db.flush_async().await.map_err(io::Error::other)?;
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || files.sync())
            .await
            .map_err(io::Error::other)?
    }

    /// Refuses a write once the store has faulted.
    pub fn writable(&self) -> Result<()> {
        self.head.serving()
    }

    /// Faults the store: from now on it refuses writes and its durable head stands still (the
    /// streams following it end). Returns the error for the caller that hit the failure.
    pub fn fail(&self, cause: &dyn std::fmt::Display) -> Error {
        let fault = Fault::Storage(cause.to_string());
        if self.head.set_fault(Some(fault.clone())) {
            tracing::error!(
                %cause,
                "storage failed: refusing every change from now on; zsc exits once the data dir \
                 takes writes again, so that its supervisor restarts it on a clean open"
            );
        }
        fault.refusal()
    }

    /// The durable head, and the fault once the store refuses writes.
    pub fn head(&self) -> watch::Receiver<Head> {
        self.head.subscribe()
    }
}

fn committed_head(meta: &sled::Tree) -> Result<u64> {
    Ok(read_u64(
        meta.get(META_HEAD).map_err(Error::internal)?.as_deref(),
    ))
}

/// sled's files, made stable with `fdatasync` after each of sled's flushes.
///
/// sled keeps all data in `db` (whose size change `fdatasync` also makes stable) and writes
/// values too big for a page to files in `blobs/` without syncing them, so each new blob is
/// synced once along with its directory entry. `conf` is written once, when the database is
/// created, and synced by [`super::files::secure_tree`] at open.
struct DiskFiles {
    data: File,
    blobs: PathBuf,
    synced_blobs: SyncMutex<HashSet<OsString>>,
}

impl DiskFiles {
    fn open(db_dir: &Path) -> Result<Self> {
        let path = db_dir.join("db");
        let data = File::open(&path).map_err(|e| super::files::io_error(&path, e))?;
        Ok(DiskFiles {
            data,
            blobs: db_dir.join("blobs"),
            synced_blobs: SyncMutex::default(),
        })
    }

    /// Blocking: one fdatasync of the data file, plus one per blob not synced before.
    fn sync(&self) -> io::Result<()> {
        self.data.sync_data()?;
        let mut synced = self
            .synced_blobs
            .lock()
            .expect("blob set is never poisoned");
        let mut new_blobs = false;
        for entry in std::fs::read_dir(&self.blobs)? {
            let entry = entry?;
            if !synced.contains(&entry.file_name()) {
                File::open(entry.path())?.sync_data()?;
                synced.insert(entry.file_name());
                new_blobs = true;
            }
        }
        if new_blobs {
            File::open(&self.blobs)?.sync_all()?;
        }
        Ok(())
    }
}
