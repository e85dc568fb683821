//! Storage: every entity, the revocation log and the audit trail, in sled (embedded, the
//! default) or on etcd (feature `etcd`, for replicas).
//!
//! The tables and what each holds are listed once, in `tables.rs`. The rules (`orgs.rs`,
//! `keys.rs`, `accounts.rs`, `revocation.rs`, `events.rs`, `audit.rs`) are closures over the
//! transactional key-value interface of `kv.rs`; `backend.rs` runs them on `sled_backend.rs`
//! or `etcd/`.
//!
//! Every mutation is one transaction (so no crash leaves half a change, and a revocation is
//! logged atomically with the change it records), made durable before it returns: on sled by
//! a shared flush (`durability.rs`), on etcd by the cluster's own quorum fsync.

mod accounts;
mod audit;
mod backend;
mod backup;
mod bulk;
mod durability;
#[cfg(feature = "etcd")]
mod etcd;
mod events;
mod files;
mod keys;
mod kv;
mod sled_backend;
pub use keys::{GeneratedKey, KeyMode};
mod orgs;
mod records;
mod revocation;
mod tables;
mod turns;
mod usage;

#[cfg(test)]
mod conformance;

use std::{
    fs::{File, TryLockError},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::Arc,
};

use prost::Message;
use tokio::sync::watch;
use tracing::Instrument;

use crate::domain::{
    random_base62, AccountToken, AuditAction, Caller, Error, Result, Role, SecretHash,
};
use backend::Backend;
use durability::Durability;
use files::io_error;
use kv::{abort, Prefetch, Tx, TxResult};
use records::AccountRecord;
use sled_backend::SledBackend;
use tables::{Table, Trees};

pub use backup::{backup, backup_reporting, restore, restore_reporting, BackupReport, Done};
#[cfg(feature = "etcd")]
pub use backup::{backup_etcd, restore_etcd};
#[doc(hidden)]
pub use bulk::BulkOrg;
pub use events::EventLog;
/// For the `records` fuzz target in `fuzz/`.
#[cfg(feature = "fuzzing")]
pub use records::decode_any as decode_any_record;

/// The file the first operator token is written to, inside the data dir.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";
/// The account created on first start.
pub const BOOTSTRAP_OPERATOR: &str = "operator";

const META_STORE_ID: &[u8] = b"store_id";
const META_HEAD: &[u8] = b"head";
const META_OPERATORS: &[u8] = b"operators";
const META_INITIALISED: &[u8] = b"initialised";

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

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    store_id: String,
    /// Names this process among the replicas of a shared store (`turns.rs`).
    replica_id: String,
    usage: usage::UsageCounters,
    /// Who holds each token lately asked about, and at which accounts generation
    /// ([`Store::holder_of`]).
    holders: dashmap::DashMap<SecretHash, (u64, Caller)>,
}

/// What `Store::open` found.
pub struct Opened {
    pub store: Store,
    /// True when this open created the store and wrote its operator token file.
    pub created: bool,
}

impl Store {
    /// Opens (or creates) the database in `dir`. A new database gets a store id and the
    /// `operator` account, whose token is written to `dir/operator.token` (mode 0600).
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Opened> {
        let (lock, db) = open_db(dir, options)?;
        let trees = Trees::open(&db)?;
        let durability = Durability::open(db.clone(), trees.meta.clone(), &dir.join("db"))?;
        let backend = Backend::Sled(SledBackend::new(db.clone(), trees, durability, lock));
        let created = match futures_now(initialise(dir, &backend))? {
            true => {
                db.flush().map_err(Error::internal)?;
                true
            }
            false => false,
        };
        let store_id = futures_now(read_store_id(&backend))?;
        Ok(Opened {
            store: Store::from_backend(backend, store_id),
            created,
        })
    }

    fn from_backend(backend: Backend, store_id: String) -> Store {
        Store {
            inner: Arc::new(Inner {
                backend,
                store_id,
                replica_id: format!("replica_{}", random_base62(12)),
                usage: usage::UsageCounters::default(),
                holders: dashmap::DashMap::new(),
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
    async fn commit<T: Send>(
        &self,
        prefetch: impl FnOnce() -> Prefetch,
        rules: impl Fn(&mut dyn Tx) -> TxResult<T> + Send + Sync,
    ) -> Result<T> {
        self.backend().writable()?;
        // Child spans of the RPC when traces are exported (`trace.rs`); debug, so the default
        // log filter never creates them.
        let outcome = self
            .backend()
            .transact(prefetch, rules)
            .instrument(tracing::debug_span!("store.transaction"))
            .await;
        self.sync()
            .instrument(tracing::debug_span!("store.sync"))
            .await?;
        outcome
    }

    /// Why the store refuses writes, once it does (disk full, a failed flush or fsync; on etcd,
    /// a cluster this replica cannot reach).
    pub fn fault(&self) -> watch::Receiver<Option<String>> {
        self.backend().fault()
    }

    /// Head of the revocation log as far as it is durable; changes wake subscribers.
    pub fn durable_head(&self) -> watch::Receiver<u64> {
        self.backend().durable_head()
    }

    fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// Runs a long store job (a pruning batch) so that it holds no runtime worker: on the
    /// blocking pool for sled, whose calls block their thread; as it is on etcd, whose calls
    /// are asynchronous I/O.
    async fn off_the_runtime<T, F, Fut>(&self, work: F) -> Result<T>
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
}

/// Runs a future that cannot wait on anything (a sled-backed store operation) to completion.
fn futures_now<T>(future: impl std::future::Future<Output = T>) -> T {
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

/// The store id, which initialisation wrote.
async fn read_store_id(backend: &Backend) -> Result<String> {
    let id = backend
        .read(
            || vec![(Table::Meta, META_STORE_ID.to_vec())],
            |tx| tx.get(Table::Meta, META_STORE_ID),
        )
        .await?;
    id.and_then(|v| String::from_utf8(v).ok())
        .ok_or_else(|| Error::internal("store has no store id"))
}

/// Log or audit entries removed per pruning step: each step is one batch on the blocking pool.
const PRUNE_BATCH: usize = 1000;

/// Locks the data dir and opens its sled database (creating both if needed).
fn open_db(dir: &Path, options: &StoreOptions) -> Result<(File, sled::Db)> {
    files::create_private_dir(dir)?;
    let lock = lock_data_dir(dir)?;
    let db_dir = dir.join("db");
    let db = sled::Config::new()
        .path(&db_dir)
        .cache_capacity(options.cache_bytes)
        .open()
        .map_err(Error::internal)?;
    files::secure_tree(dir)?;
    Ok((lock, db))
}

/// Whether `dir` holds a zsc database.
pub fn has_database(dir: &Path) -> bool {
    dir.join("db").exists()
}

fn lock_data_dir(dir: &Path) -> Result<File> {
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

/// First start: a store id, an empty log, and the operator account whose token goes to a
/// 0600 file; true if this call initialised the store. The file is written before the account
/// is committed, so a crash in between leaves an uninitialised store that the next start
/// initialises afresh; a start that loses the race to initialise (another replica on the same
/// etcd prefix) removes the file it wrote, so only the initialising replica has one.
async fn initialise(dir: &Path, backend: &Backend) -> Result<bool> {
    let marker = || vec![(Table::Meta, META_INITIALISED.to_vec())];
    let initialised = |tx: &mut dyn Tx| Ok(tx.get(Table::Meta, META_INITIALISED)?.is_some());
    if backend.read(marker, initialised).await? {
        return Ok(false);
    }
    let token = AccountToken::generate();
    let token_file = dir.join(OPERATOR_TOKEN_FILE);
    write_token_file(&token_file, &token)?;
    let store_id = format!("st_{}", random_base62(16));
    let account = AccountRecord {
        role: Role::Operator.code(),
        created_us: records::micros(records::now()),
        token_hash: token.hash().0.to_vec(),
    }
    .encode_to_vec();
    let hash = token.hash();
    let created = backend
        .transact(marker, |tx| {
            if tx.get(Table::Meta, META_INITIALISED)?.is_some() {
                return Ok(false);
            }
            if tx.get(Table::Meta, META_STORE_ID)?.is_some() {
                return abort(Error::FailedPrecondition(
                    "the store has an id but was never marked initialised: a restore into it \
                     was interrupted; restore again into an empty prefix"
                        .into(),
                ));
            }
            tx.insert(Table::Meta, META_STORE_ID, store_id.as_bytes())?;
            tx.insert(Table::Meta, META_HEAD, &0u64.to_be_bytes())?;
            tx.insert(Table::Meta, META_OPERATORS, &1u64.to_be_bytes())?;
            tx.insert(Table::Accounts, BOOTSTRAP_OPERATOR.as_bytes(), &account)?;
            tx.insert(Table::Tokens, &hash.0, BOOTSTRAP_OPERATOR.as_bytes())?;
            let action = AuditAction::ServiceAccountCreated;
            let entry = audit::entry(&Caller::cli(), action, None, BOOTSTRAP_OPERATOR);
            audit::append(tx, entry)?;
            tx.insert(Table::Meta, META_INITIALISED, &[1])?;
            Ok(true)
        })
        .await?;
    if !created {
        let _ = std::fs::remove_file(&token_file);
    }
    Ok(created)
}

/// Writes a token to a new file only its owner can read (0600 from creation, never wider),
/// durably: a token acknowledged as written survives a power loss.
pub fn write_token_file(path: &Path, token: &AccountToken) -> Result<()> {
    let contents = zeroize::Zeroizing::new(format!("{}\n", token.expose()));
    files::write_private_file(path, contents.as_bytes())
}

#[cfg(feature = "etcd")]
pub use etcd::EtcdUrl;

#[cfg(feature = "etcd")]
impl Store {
    /// Connects to a store on etcd (initialising the prefix if it is empty: then, and only
    /// then, the operator token is written to `dir/operator.token`).
    pub async fn open_etcd(url: &EtcdUrl, dir: &Path) -> Result<Opened> {
        files::create_private_dir(dir)?;
        let backend = Backend::Etcd(etcd::EtcdBackend::connect(url).await?);
        let created = initialise(dir, &backend).await?;
        let store_id = read_store_id(&backend).await?;
        Ok(Opened {
            store: Store::from_backend(backend, store_id),
            created,
        })
    }
}

impl Store {
    /// True when this store is one replica's view of a shared store (etcd), whose faults
    /// come and go with the cluster, rather than a data dir this process owns.
    pub fn is_replica(&self) -> bool {
        !matches!(self.backend(), Backend::Sled(_))
    }
}
