//! The backends the rules run on, behind one enum (a closure-taking `transact` is generic, so
//! not object-safe): sled, embedded, the default; etcd, for replicas (cargo feature `etcd`).

use tokio::sync::watch;

use super::head::{Confirmed, Head};
use super::kv::{Entry, Prefetch, Range, Tx, TxResult};
use super::sled::backend::SledBackend;
use super::tables::Table;
use crate::domain::Result;

// One per process, inside the store's Arc: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Backend {
    Sled(SledBackend),
    #[cfg(feature = "etcd")]
    Etcd(super::etcd::EtcdBackend),
}

impl Backend {
    /// Runs `rules` as one transaction, re-running it on conflicts, and commits its writes.
    /// `prefetch` names keys it reads, for a backend that can fetch them in one round trip;
    /// it is only called by such a backend, so sled builds no list.
    pub async fn transact<T: Send>(
        &self,
        #[cfg_attr(not(feature = "etcd"), allow(unused_variables))] prefetch: impl FnOnce() -> Prefetch,
        rules: impl Fn(&mut dyn Tx) -> TxResult<T> + Send + Sync,
    ) -> Result<T> {
        match self {
            Backend::Sled(sled) => sled.transact(rules),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.transact(prefetch(), rules).await,
        }
    }

    /// [`Backend::transact`] for a rule that owns what it reads: on sled it shares one
    /// transaction with the rules queued beside it (`sled/writer.rs`).
    pub async fn transact_batched<T: Send + 'static>(
        &self,
        #[cfg_attr(not(feature = "etcd"), allow(unused_variables))] prefetch: impl FnOnce() -> Prefetch,
        rules: impl Fn(&mut dyn Tx) -> TxResult<T> + Send + Sync + 'static,
    ) -> Result<T> {
        match self {
            Backend::Sled(sled) => sled.transact_batched(rules).await,
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.transact(prefetch(), rules).await,
        }
    }

    /// Runs a read-only closure; on etcd every read comes from one snapshot.
    pub async fn read<T: Send>(
        &self,
        #[cfg_attr(not(feature = "etcd"), allow(unused_variables))] prefetch: impl FnOnce() -> Prefetch,
        rules: impl Fn(&mut dyn Tx) -> TxResult<T> + Send + Sync,
    ) -> Result<T> {
        match self {
            Backend::Sled(sled) => sled.read(rules),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.read(prefetch(), rules).await,
        }
    }

    /// The keys in `range`, in key order (or reversed), up to its limit.
    pub async fn scan(&self, range: Range) -> Result<Vec<Entry>> {
        match self {
            Backend::Sled(sled) => sled.scan(&range),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.scan(&range).await,
        }
    }

    /// Atomic writes to one table outside any rule (pruning, saving usage counts).
    pub async fn apply(&self, table: Table, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        match self {
            Backend::Sled(sled) => sled.apply(table, writes),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.apply(table, writes).await,
        }
    }

    /// Reads a key of a table this replica keeps locally and current: every table on sled;
    /// on etcd the accounts, tokens and events, which its watch keeps up to date.
    pub fn get_local(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self {
            Backend::Sled(sled) => sled.get(table, key),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.get_local(table, key),
        }
    }

    /// A number that moves whenever this replica's copy of the accounts or tokens changes
    /// (after the change is visible to [`Backend::get_local`]): a caller that checked an
    /// account at one generation need not read it again until the generation moves.
    pub fn accounts_generation(&self) -> u64 {
        match self {
            Backend::Sled(sled) => sled.accounts_generation(),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.accounts_generation(),
        }
    }

    /// A range of a table kept locally (see [`Backend::get_local`]).
    pub fn scan_local(&self, range: &Range) -> Result<Vec<Entry>> {
        match self {
            Backend::Sled(sled) => sled.scan(range),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.scan_local(range),
        }
    }

    /// The live keys (`view.rs`), fed by the path that moves the durable head.
    pub fn view(&self) -> &super::view::View {
        match self {
            Backend::Sled(sled) => &sled.view,
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.view(),
        }
    }

    /// Returns once this replica reflects every change acknowledged anywhere before the
    /// call: at once on sled (one process, whose changes are in the view before they are
    /// acknowledged); on etcd after the shared linearizable read (`etcd/barrier.rs`).
    pub async fn barrier(&self) -> Result<()> {
        match self {
            Backend::Sled(_) => Ok(()),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.barrier().await,
        }
    }

    /// Refuses a change once the store cannot take one (its head carries a fault).
    pub fn writable(&self) -> Result<()> {
        match self {
            Backend::Sled(sled) => sled.durability.writable(),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.writable(),
        }
    }

    /// Returns once everything committed before the call is durable.
    pub async fn sync(&self) -> Result<()> {
        match self {
            Backend::Sled(sled) => sled.durability.sync().await,
            // etcd answers a write only once a majority has it on disk; what remains is for
            // this replica's own streams to have heard of it.
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.sync().await,
        }
    }

    /// The durable head this replica has applied, and the fault once the store stops
    /// (`head.rs`); changes wake the streams.
    pub fn head(&self) -> watch::Receiver<Head> {
        match self {
            Backend::Sled(sled) => sled.durability.head(),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.head(),
        }
    }

    /// The latest head this replica confirmed (`head.rs`): on sled, now (clock, then head).
    pub fn confirmed(&self) -> Confirmed {
        match self {
            Backend::Sled(_) => Confirmed {
                at: std::time::SystemTime::now(),
                head: self.head().borrow().applied,
            },
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.confirmed(),
        }
    }

    /// Confirms the head now: the clock, then [`Backend::barrier`], then the head.
    pub async fn confirm(&self) -> Result<Confirmed> {
        match self {
            Backend::Sled(_) => Ok(self.confirmed()),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.confirm().await,
        }
    }

    pub fn size_on_disk(&self) -> Result<u64> {
        match self {
            Backend::Sled(sled) => sled
                .db
                .size_on_disk()
                .map_err(crate::domain::Error::internal),
            #[cfg(feature = "etcd")]
            Backend::Etcd(_) => Ok(0),
        }
    }
}
