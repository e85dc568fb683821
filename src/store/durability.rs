//! Group commit: a mutation answers OK only once it is on disk, and concurrent mutations
//! share one sled flush instead of queueing a flush each.
//!
//! Each writer takes a ticket *after* its transaction committed, then queues on one lock.
//! Whoever holds the lock flushes once for every ticket issued so far; the writers behind it
//! find their ticket already covered and return without flushing. `benches/group_commit.rs`
//! measures the difference against a flush per write.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{watch, Mutex};

use super::{read_u64, META_HEAD};
use crate::domain::{Error, Result};

pub(super) struct Durability {
    db: sled::Db,
    /// Where the log's committed head is kept.
    meta: sled::Tree,
    /// Tickets handed out; ticket n means "the n-th committed write wants to be durable".
    issued: AtomicU64,
    /// Highest ticket known durable. Guarded by the lock so only one flush runs at a time.
    flushed: Mutex<u64>,
    /// The highest revocation sequence known durable: what subscribers may be told about.
    durable_head: watch::Sender<u64>,
}

impl Durability {
    /// Everything on disk at open is durable, so the durable head starts at the committed one.
    pub fn open(db: sled::Db, meta: sled::Tree) -> Result<Self> {
        let head = committed_head(&meta)?;
        Ok(Durability {
            db,
            meta,
            issued: AtomicU64::new(0),
            flushed: Mutex::new(0),
            durable_head: watch::Sender::new(head),
        })
    }

    /// Returns once everything committed before the call is on disk.
    pub async fn sync(&self) -> Result<()> {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed = self.flushed.lock().await;
        if *flushed >= ticket {
            return Ok(());
        }
        let covers = self.issued.load(Ordering::SeqCst);
        // Read before the flush, so the flush covers it.
        let head = committed_head(&self.meta)?;
        self.db.flush_async().await.map_err(Error::internal)?;
        *flushed = covers;
        self.durable_head.send_if_modified(|durable| {
            let advanced = head > *durable;
            *durable = (*durable).max(head);
            advanced
        });
        Ok(())
    }

    pub fn durable_head(&self) -> watch::Receiver<u64> {
        self.durable_head.subscribe()
    }

    pub fn durable_head_now(&self) -> u64 {
        *self.durable_head.borrow()
    }
}

fn committed_head(meta: &sled::Tree) -> Result<u64> {
    Ok(read_u64(
        meta.get(META_HEAD).map_err(Error::internal)?.as_deref(),
    ))
}
