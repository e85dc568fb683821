//! Storage: every entity and the revocation log in one embedded sled database.
//!
//! The trees and what each holds are listed once, in `tables.rs`.
//!
//! Every mutation is one sled transaction over the trees it touches (so no crash leaves half a
//! change, and a revocation is logged atomically with the change it records), followed by a
//! shared flush (`durability.rs`) before it returns.

mod accounts;
mod audit;
mod backup;
mod durability;
mod events;
mod files;
mod keys;
pub use keys::{GeneratedKey, KeyMode};
mod orgs;
mod records;
mod revocation;
mod tables;
mod usage;

use std::{
    fs::{File, TryLockError},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::Arc,
};

use prost::Message;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use sled::Transactional;
use tokio::sync::watch;

use crate::domain::{random_base62, AccountToken, AuditAction, Caller, Error, Result, Role};
use durability::Durability;
use files::io_error;
use records::AccountRecord;
use tables::Trees;

pub use backup::{backup, restore, BackupReport};
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

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    trees: Trees,
    store_id: String,
    durability: Durability,
    usage: usage::UsageCounters,
    /// Held for the store's lifetime so a second process on the same dir fails at once.
    _lock: File,
}

/// What `Store::open` found.
pub struct Opened {
    pub store: Store,
    /// True when this open created the data dir's database and its operator token file.
    pub created: bool,
}

impl Store {
    /// Opens (or creates) the database in `dir`. A new database gets a store id and the
    /// `operator` account, whose token is written to `dir/operator.token` (mode 0600).
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Opened> {
        let (lock, db) = open_db(dir, options)?;
        let trees = Trees::open(&db)?;
        let created = trees
            .meta
            .get(META_INITIALISED)
            .map_err(Error::internal)?
            .is_none();
        if created {
            initialise(dir, &trees)?;
            db.flush().map_err(Error::internal)?;
        }
        let store_id = trees
            .meta
            .get(META_STORE_ID)
            .map_err(Error::internal)?
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .ok_or_else(|| Error::internal("data dir has no store id"))?;
        let store = Store {
            inner: Arc::new(Inner {
                durability: Durability::open(db.clone(), trees.meta.clone(), &dir.join("db"))?,
                usage: usage::UsageCounters::default(),
                db,
                trees,
                store_id,
                _lock: lock,
            }),
        };
        Ok(Opened { store, created })
    }

    /// A random id made when the data dir was created: a subscriber's cursor is only
    /// meaningful against the same store.
    pub fn store_id(&self) -> &str {
        &self.inner.store_id
    }

    /// Size of the database files on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.inner.db.size_on_disk().map_err(Error::internal)
    }

    /// Makes everything committed so far durable (one flush shared with concurrent callers).
    ///
    /// The flush runs in a task of its own: a caller that gives up (a cancelled RPC) cannot
    /// leave a committed revocation on disk but unannounced to subscribers.
    pub async fn sync(&self) -> Result<()> {
        let store = self.clone();
        tokio::spawn(async move { store.inner.durability.sync().await })
            .await
            .map_err(Error::internal)?
    }

    /// Runs one mutation's transaction and answers only once it is durable, whatever its
    /// outcome: even a refusal or a no-op may rest on another request's change that is
    /// committed but not yet flushed. Nothing runs once the store has faulted.
    async fn commit<T>(
        &self,
        transaction: impl FnOnce() -> std::result::Result<T, TransactionError<Error>>,
    ) -> Result<T> {
        let durability = &self.inner.durability;
        durability.writable()?;
        let outcome = transaction().map_err(|e| match e {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(cause) => durability.fail(&cause),
        });
        self.sync().await?;
        outcome
    }

    /// Why the store refuses writes, once it does (disk full, a failed flush or fsync).
    pub fn fault(&self) -> watch::Receiver<Option<String>> {
        self.inner.durability.fault()
    }

    /// Head of the revocation log as far as it is durable; changes wake subscribers.
    pub fn durable_head(&self) -> watch::Receiver<u64> {
        self.inner.durability.durable_head()
    }

    fn trees(&self) -> &Trees {
        &self.inner.trees
    }
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
/// 0600 file. The file is written before the account is committed, so a crash in between
/// leaves an uninitialised store that the next start initialises afresh.
fn initialise(dir: &Path, trees: &Trees) -> Result<()> {
    let token = AccountToken::generate();
    write_token_file(&dir.join(OPERATOR_TOKEN_FILE), &token)?;
    let store_id = format!("st_{}", random_base62(16));
    let account = AccountRecord {
        role: Role::Operator.code(),
        created_us: records::micros(records::now()),
        token_hash: token.hash().0.to_vec(),
    }
    .encode_to_vec();
    let hash = token.hash();
    finish(
        (&trees.meta, &trees.accounts, &trees.tokens, &trees.audit).transaction(
            |(meta, accounts, tokens, trail)| {
                meta.insert(META_STORE_ID, store_id.as_bytes())?;
                meta.insert(META_HEAD, &0u64.to_be_bytes())?;
                meta.insert(META_OPERATORS, &1u64.to_be_bytes())?;
                accounts.insert(BOOTSTRAP_OPERATOR.as_bytes(), account.as_slice())?;
                tokens.insert(&hash.0, BOOTSTRAP_OPERATOR.as_bytes())?;
                let action = AuditAction::ServiceAccountCreated;
                let entry = audit::entry(&Caller::cli(), action, None, BOOTSTRAP_OPERATOR);
                audit::append(trail, entry)?;
                meta.insert(META_INITIALISED, &[1])?;
                Ok(())
            },
        ),
    )
}

/// Writes a token to a new file only its owner can read (0600 from creation, never wider),
/// durably: a token acknowledged as written survives a power loss.
pub fn write_token_file(path: &Path, token: &AccountToken) -> Result<()> {
    let contents = zeroize::Zeroizing::new(format!("{}\n", token.expose()));
    files::write_private_file(path, contents.as_bytes())
}

type TxResult<T> = ConflictableTransactionResult<T, Error>;

/// Ends a transaction with a domain error (nothing it wrote is kept).
fn abort<T>(error: Error) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(error))
}

/// Lifts a domain result into a transaction, aborting on error.
fn lift<T>(result: Result<T>) -> TxResult<T> {
    result.map_err(ConflictableTransactionError::Abort)
}

fn finish<T>(result: std::result::Result<T, TransactionError<Error>>) -> Result<T> {
    result.map_err(|e| match e {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => Error::internal(error),
    })
}

fn read_u64(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

fn tx_u64(tree: &TransactionalTree, key: &[u8]) -> TxResult<u64> {
    Ok(read_u64(tree.get(key)?.as_deref()))
}
