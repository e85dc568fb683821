//! The handle every rule is a method of: [`Store`], what it holds in memory, and how one
//! mutation is run and made durable. A leaf: it knows the seam (`backend.rs`, `kv.rs`), not the
//! rules that use it.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{watch, Mutex};
use tracing::Instrument;

use super::backend::Backend;
use super::head::Head;
use super::kv::{Prefetch, Tx, TxResult};
use crate::domain::{random_base62, Caller, Error, Result, SecretHash};

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(in crate::store) inner: Arc<Inner>,
}

pub(in crate::store) struct Inner {
    pub(in crate::store) backend: Backend,
    pub(in crate::store) store_id: String,
    /// Names this process among the replicas of a shared store (`turns.rs`).
    pub(in crate::store) replica_id: String,
    pub(in crate::store) usage: UsageCounters,
    /// Verifiers' reports and open streams not yet written (`rules/confirmations.rs`).
    pub(in crate::store) confirmations: std::sync::Mutex<Unflushed>,
    /// Who holds each token lately asked about, and at which accounts generation
    /// ([`Store::holder_of`]).
    pub(in crate::store) holders: FastMap<SecretHash, (u64, Caller)>,
}

/// A concurrent map on a fast hasher seeded per process, for the maps every ValidateKey
/// touches: what goes in is the hash of a token that authenticated (refused guesses are never
/// kept) or a key id this server made with an account name an operator chose, never bytes a
/// caller picks, so SipHash's defence against chosen keys buys nothing there; it cost about
/// 700 instructions a call (callgrind, row 1).
pub(in crate::store) type FastMap<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

/// A `usage` tree key (key_id `\0` account name), inline up to 48 bytes.
pub(in crate::store) type UsageKey = smallvec::SmallVec<[u8; 48]>;

/// Counts not saved yet, by `usage` tree key.
#[derive(Default)]
pub(in crate::store) struct UsageCounters {
    pub(in crate::store) unsaved: FastMap<UsageKey, Counter>,
    /// One save at a time (the periodic one and shutdown's).
    pub(in crate::store) saving: Mutex<()>,
}

#[derive(Default)]
pub(in crate::store) struct Counter {
    pub(in crate::store) validations: AtomicU64,
    pub(in crate::store) last_us: AtomicI64,
}

/// What this replica heard about Verifiers since its last confirmations flush.
#[derive(Default)]
pub(in crate::store) struct Unflushed {
    /// Reports in arrival order: (service, applied sequence, receipt time in µs).
    pub(in crate::store) reports: Vec<(crate::domain::AccountName, u64, i64)>,
    /// Revocation streams open on this replica, per service.
    pub(in crate::store) streams: std::collections::BTreeMap<crate::domain::AccountName, usize>,
    /// When this replica last wrote each streaming service's presence (µs).
    pub(in crate::store) presence_written:
        std::collections::BTreeMap<crate::domain::AccountName, i64>,
}

/// Proof that a call passed [`Store::barrier`] after it arrived: reads from this replica's
/// memory made with it are linearizable.
#[derive(Clone, Debug)]
pub struct Fresh(());

/// What `Store::open` found.
pub struct Opened {
    pub store: Store,
    /// True when this open created the store and wrote its operator token file.
    pub created: bool,
}

impl Store {
    pub(in crate::store) fn from_backend(backend: Backend, store_id: String) -> Store {
        Store {
            inner: Arc::new(Inner {
                backend,
                store_id,
                replica_id: format!("replica_{}", random_base62(12)),
                usage: UsageCounters::default(),
                confirmations: std::sync::Mutex::default(),
                holders: FastMap::default(),
            }),
        }
    }

    /// A random id made when the store was created: a subscriber's cursor is only
    /// meaningful against the same store.
    pub fn store_id(&self) -> &str {
        &self.inner.store_id
    }

    /// Size of the database files on disk, in bytes (0 on etcd: the cluster keeps them).
    pub fn size_on_disk(&self) -> Result<u64> {
        self.backend().size_on_disk()
    }

    /// Makes everything committed so far durable (one flush shared with concurrent callers).
    ///
    /// The flush runs in a task of its own: a caller that gives up (a cancelled RPC) cannot
    /// leave a committed revocation on disk but unannounced to subscribers.
    pub async fn sync(&self) -> Result<()> {
        let store = self.clone();
        tokio::spawn(async move { store.backend().sync().await })
            .await
            .map_err(Error::internal)?
    }

    /// Runs one mutation's rules as one transaction and answers only once it is durable,
    /// whatever its outcome: even a refusal or a no-op may rest on another request's change
    /// that is committed but not yet flushed. Nothing runs once the store has faulted.
    pub(in crate::store) async fn commit<T: Send>(
        &self,
        prefetch: impl FnOnce() -> Prefetch,
        rules: impl Fn(&mut dyn Tx) -> TxResult<T> + Send + Sync,
    ) -> Result<T> {
        self.backend().writable()?;
        self.durable(self.backend().transact(prefetch, rules)).await
    }

    /// [`Store::commit`] for a rule that owns what it reads: on sled it shares one transaction
    /// with the rules queued beside it (`sled/writer.rs`). The transaction and the flush run in
    /// a task of their own, so a caller that gives up cannot leave its change committed but
    /// unflushed (and a revocation unannounced).
    pub(in crate::store) async fn commit_batched<T: Send + 'static>(
        &self,
        prefetch: impl FnOnce() -> Prefetch + Send + 'static,
        rules: impl Fn(&mut dyn Tx) -> TxResult<T> + Send + Sync + 'static,
    ) -> Result<T> {
        self.backend().writable()?;
        let store = self.clone();
        let committing = async move {
            let transaction = store.backend().transact_batched(prefetch, rules);
            store.durable(transaction).await
        };
        let task = tokio::spawn(committing.in_current_span());
        task.await.map_err(Error::internal)?
    }

    /// Runs a mutation's transaction, then makes it durable whatever its outcome.
    async fn durable<T>(&self, transaction: impl Future<Output = Result<T>>) -> Result<T> {
        // Child spans of the RPC when traces are exported (`trace.rs`); debug, so the default
        // log filter never creates them.
        let outcome = transaction
            .instrument(tracing::debug_span!("store.transaction"))
            .await;
        self.sync()
            .instrument(tracing::debug_span!("store.sync"))
            .await?;
        outcome
    }

    /// Head of the revocation log as far as it is durable, and why the store refuses writes
    /// once it does (disk full, a failed flush or fsync; on etcd, a head this replica cannot
    /// confirm); changes wake subscribers.
    pub fn head(&self) -> watch::Receiver<Head> {
        self.backend().head()
    }

    pub(in crate::store) fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// Waits until this replica reflects every change acknowledged anywhere before the call
    /// (at once on sled; on etcd one linearizable read shared with every call waiting, then
    /// the watch catching up to it, within a bound, else UNAVAILABLE). What it returns is the
    /// proof a read from memory asks for.
    pub async fn barrier(&self) -> Result<Fresh> {
        self.backend().barrier().await?;
        Ok(Fresh(()))
    }

    /// Runs a long store job (a pruning batch) so that it holds no runtime worker: on the
    /// blocking pool for sled, whose calls block their thread; as it is on etcd, whose calls
    /// are asynchronous I/O.
    pub(in crate::store) async fn off_the_runtime<T, F, Fut>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Store) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send,
    {
        if self.is_replica() {
            return work(self.clone()).await;
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || futures_now(work(store)))
            .await
            .map_err(Error::internal)?
    }

    /// True when this store is one replica's view of a shared store (etcd), whose faults
    /// come and go with the cluster, rather than a data dir this process owns.
    pub fn is_replica(&self) -> bool {
        !matches!(self.backend(), Backend::Sled(_))
    }
}
/// Runs a future that cannot wait on anything (a sled-backed store operation) to completion.
pub(in crate::store) fn futures_now<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker))
    {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => unreachable!("sled operations complete without waiting"),
    }
}

/// Log or audit entries removed per pruning step: each step is one batch on the blocking pool.
pub(in crate::store) const PRUNE_BATCH: usize = 1000;
