//! The etcd backend (cargo feature `etcd`): replicas of zsc over one etcd cluster.
//!
//! Layout: every key of table `t` lives at `PREFIX/t/KEY`, so one prefix holds one store and
//! several stores can share a cluster.
//!
//! Transactions are optimistic (`tx.rs`): the rules' closure runs over values fetched with
//! their `mod_revision`; its writes are committed by one etcd Txn that compares every read key's
//! revision, and a failed compare re-runs the closure on the current values. The log head is a
//! key like any other, so the gapless append is part of the same Txn.
//!
//! Each replica runs one follower (`follow.rs`): a single etcd Watch on the prefix that keeps
//! this replica's copy of the accounts, tokens and revocation events and announces the log head
//! (etcd acknowledges a write only once a majority has it on disk, so committed is durable).
//! A health probe marks the store unavailable while the cluster cannot be reached.

use std::{ops::Bound, sync::Arc};

use etcd_client::{ConnectOptions, KvClient, Txn, TxnOp};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use super::barrier::{Barrier, Confirmer};
use super::errors::ambiguous;
use super::mirror::Mirror;
use super::read::read_range;
use super::url::{connect, connect_with, table_key, EtcdUrl, REQUEST_TIMEOUT};
use crate::domain::Result;
use crate::store::head::{Announcer, Confirmed, Head};
use crate::store::kv::{prefix_end, Entry, Range};
use crate::store::tables::Table;
use crate::store::view::View;

/// etcd's default `--max-txn-ops`.
pub(super) const MAX_TXN_OPS: usize = 128;

pub(in crate::store) struct EtcdBackend {
    pub(super) kv: KvClient,
    /// `PREFIX/`.
    pub(super) root: Vec<u8>,
    mirror: Arc<Mirror>,
    /// The live keys, fed by the watch before it moves the head (`view.rs`).
    view: Arc<View>,
    /// The shared linearizable read a call waits on before it reads this replica's memory,
    /// and the head it confirms.
    confirmer: Arc<Confirmer>,
    /// The durable head this replica's watch applied, and the `Unconfirmed` fault while the
    /// probe cannot confirm it (`probe.rs`).
    head: Arc<Announcer>,
    /// One change of this replica at a time: nearly every change appends to the audit trail,
    /// so concurrent ones would only conflict on its head and re-run (measured: 16 at once
    /// made fewer changes per second than one at a time).
    pub(super) writer: tokio::sync::Mutex<()>,
    /// The revision of this replica's latest write, and the revision its watched copy (and so
    /// the durable head its streams follow) reflects: `sync` waits for the one to reach the
    /// other, so a change is announced to this replica's subscribers before it is answered.
    written: std::sync::atomic::AtomicI64,
    applied: watch::Receiver<i64>,
    _tasks: Vec<AbortOnDropHandle<()>>,
}

impl EtcdBackend {
    /// Connects and starts the follower and the health probe. Fails if no endpoint answers.
    pub async fn connect(url: &EtcdUrl) -> Result<EtcdBackend> {
        let client = connect(url).await?;
        let root = url.root();
        let mirror = Arc::new(Mirror::default());
        let head = Arc::new(Announcer::new(0));
        let applied = Arc::new(watch::Sender::new(0));
        let view = Arc::new(View::default());
        let watching = ConnectOptions::new().with_require_leader(true);
        let follower = super::follow::Follower {
            client: connect_with(url, watching).await?,
            root: root.clone(),
            mirror: mirror.clone(),
            view: view.clone(),
            head: head.clone(),
            applied: applied.clone(),
        };
        let loaded_at = std::time::SystemTime::now();
        let loaded = follower.load().await?;
        let confirmer = Arc::new(Confirmer {
            barrier: Barrier::new(
                client.kv_client(),
                &root,
                applied.subscribe(),
                head.subscribe(),
            ),
            head: head.clone(),
            // The load was one linearizable read, after the clock.
            latest: watch::Sender::new(Confirmed {
                at: loaded_at,
                head: head.applied(),
            }),
        });
        let backend = EtcdBackend {
            kv: client.kv_client(),
            root: root.clone(),
            mirror,
            view,
            confirmer: confirmer.clone(),
            head: head.clone(),
            writer: tokio::sync::Mutex::new(()),
            written: std::sync::atomic::AtomicI64::new(0),
            applied: applied.subscribe(),
            _tasks: vec![
                AbortOnDropHandle::new(tokio::spawn(follower.run(loaded))),
                AbortOnDropHandle::new(tokio::spawn(super::probe::probe_forever(confirmer, head))),
            ],
        };
        Ok(backend)
    }

    pub(super) fn key(&self, table: Table, key: &[u8]) -> Vec<u8> {
        table_key(&self.root, table, key)
    }

    /// Notes a write of this replica, committed at `revision`.
    pub(super) fn wrote(&self, revision: i64) {
        self.written
            .fetch_max(revision, std::sync::atomic::Ordering::SeqCst);
    }

    /// Returns once this replica's copy reflects every write it made before the call (etcd
    /// already has them on a majority's disks). Bounded: if the watch is down, the probe
    /// takes the replica out of service, and the write stands.
    pub async fn sync(&self) -> Result<()> {
        let written = self.written.load(std::sync::atomic::Ordering::SeqCst);
        let mut applied = self.applied.clone();
        let caught_up = applied.wait_for(|applied| *applied >= written);
        if tokio::time::timeout(REQUEST_TIMEOUT, caught_up)
            .await
            .is_err()
        {
            tracing::warn!(written, "this replica's watch is behind its own writes");
        }
        Ok(())
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    /// See `barrier.rs`.
    pub async fn barrier(&self) -> Result<()> {
        self.confirm().await.map(drop)
    }

    pub async fn confirm(&self) -> Result<Confirmed> {
        self.confirmer.confirm().await
    }

    pub fn confirmed(&self) -> Confirmed {
        *self.confirmer.latest.borrow()
    }

    pub fn writable(&self) -> Result<()> {
        self.head.serving()
    }

    pub fn head(&self) -> watch::Receiver<Head> {
        self.head.subscribe()
    }

    /// A range read, linearizable; long ranges come in pages.
    pub async fn scan(&self, range: &Range) -> Result<Vec<Entry>> {
        let base = table_key(&self.root, range.table, b"");
        let start = match &range.start {
            Bound::Included(k) => table_key(&self.root, range.table, k),
            Bound::Excluded(k) => [table_key(&self.root, range.table, k), vec![0]].concat(),
            Bound::Unbounded => base.clone(),
        };
        let end = match &range.end {
            Bound::Included(k) => [table_key(&self.root, range.table, k), vec![0]].concat(),
            Bound::Excluded(k) => table_key(&self.root, range.table, k),
            Bound::Unbounded => prefix_end(&base).expect("a table prefix ends in '/'"),
        };
        let read = read_range(&self.kv, start, end, 0, range.limit, range.reverse).await?;
        let strip = |(key, value): (Vec<u8>, Vec<u8>)| (key[base.len()..].to_vec(), value);
        Ok(read.into_iter().map(strip).collect())
    }

    /// Writes to one table outside the rules, in Txns of at most [`MAX_TXN_OPS`].
    pub async fn apply(&self, table: Table, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        self.writable()?;
        for chunk in writes.chunks(MAX_TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(key, value)| match value {
                    Some(value) => TxnOp::put(self.key(table, key), value.clone(), None),
                    None => TxnOp::delete(self.key(table, key), None),
                })
                .collect();
            let mut kv = self.kv.clone();
            let response = kv
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(|e| ambiguous(&e))?;
            self.wrote(response.header().map_or(0, |h| h.revision()));
        }
        Ok(())
    }

    pub fn accounts_generation(&self) -> u64 {
        self.mirror.generation()
    }

    pub fn get_local(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.mirror.get(table, key)
    }

    pub fn scan_local(&self, range: &Range) -> Result<Vec<Entry>> {
        self.mirror.scan(range)
    }
}
