//! Group commit and the write fence: a mutation answers OK only once it would survive a power
//! loss, concurrent mutations share one flush, and a storage failure stops every later write.
//!
//! Each writer takes a ticket *after* its transaction committed. If no flush is running it
//! flushes once for every ticket issued so far; otherwise it waits for the running flush to
//! end (every waiter woken at once) and returns if that flush covered its ticket. `benches/group_commit.rs`
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

use tokio::sync::{watch, Mutex, MutexGuard};

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
    /// Highest ticket known durable; every writer waiting for a flush watches it.
    flushed: watch::Sender<u64>,
    /// Held by the one writer flushing (for every ticket issued when it starts); the others
    /// wait for `flushed` to move, all woken at once, instead of queueing on a lock one by one.
    flushing: Mutex<()>,
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
            flushed: watch::Sender::new(0),
            flushing: Mutex::new(()),
            head: Announcer::new(head),
        })
    }

    /// Returns once everything committed before the call is on disk and fsynced.
    pub async fn sync(&self) -> Result<()> {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed = self.flushed.subscribe();
        loop {
            if *flushed.borrow_and_update() >= ticket {
                return Ok(());
            }
            // A flush that failed while this writer waited covers nothing: never retry it.
            self.writable()?;
            match self.flushing.try_lock() {
                // A flush may have ended between the check and the lock: it may cover this one.
                Ok(_flushing) if *self.flushed.borrow() >= ticket => return Ok(()),
                Ok(flushing) => return self.flush_issued(flushing).await,
                // Wakes when the running flush ends (whatever its outcome), then checks again.
                Err(_) => {
                    let _ = flushed.changed().await;
                }
            }
        }
    }

    /// One flush for every ticket issued so far, by the holder of `flushing`.
    async fn flush_issued(&self, flushing: MutexGuard<'_, ()>) -> Result<()> {
        let _wake = WakeWaiters {
            flushed: &self.flushed,
            flushing: Some(flushing),
        };
        let covers = self.issued.load(Ordering::SeqCst);
        // Read before the flush, so the flush covers it.
        let head = committed_head(&self.meta)?;
        if let Err(cause) = self.flush().await {
            return Err(self.fail(&cause));
        }
        // A flush that failed meanwhile (another writer's) stopped the head: it stands.
        if self.head.serving().is_ok() {
            self.head.advance(head);
        }
        // After the head: a writer told its change is durable finds the head past it.
        self.flushed.send_modify(|flushed| *flushed = covers);
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

/// Ends a flush however it ends: lets go of `flushing`, then wakes every writer waiting (they
/// find their ticket covered, the store faulted, or no flush running and start one).
struct WakeWaiters<'a> {
    flushed: &'a watch::Sender<u64>,
    flushing: Option<MutexGuard<'a, ()>>,
}

impl Drop for WakeWaiters<'_> {
    fn drop(&mut self) {
        drop(self.flushing.take());
        self.flushed.send_modify(|_| {});
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
