//! Storage: every entity and the revocation log in one embedded sled database.
//!
//! Trees (keys -> values):
//! - `meta`: store id, log head, operator count, "initialised" marker
//! - `orgs`: org_id -> `OrgRecord` (including the hash of its active key)
//! - `org_names`: folded name -> org_id (uniqueness)
//! - `users`: email -> `UserRecord`; `org_users`: org_id \0 email -> () (listing)
//! - `keys`: blake3(key) -> `KeyRecord`
//! - `accounts`: name -> `AccountRecord`; `tokens`: blake3(token) -> name
//! - `events`: big-endian sequence -> `EventRecord`
//!
//! Every mutation is one sled transaction over the trees it touches (so no crash leaves half a
//! change, and a revocation is logged atomically with the change it records), followed by a
//! shared flush (`durability.rs`) before it returns.

mod accounts;
mod backup;
mod durability;
mod events;
mod keys;
pub use keys::{GeneratedKey, KeyMode};
mod orgs;
mod records;

use std::{
    fs::{self, File, TryLockError},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
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

use crate::domain::{random_base62, AccountToken, Error, Result, Role};
use durability::Durability;
use records::AccountRecord;

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
    /// Held for the store's lifetime so a second process on the same dir fails at once.
    _lock: File,
}

struct Trees {
    meta: sled::Tree,
    orgs: sled::Tree,
    org_names: sled::Tree,
    users: sled::Tree,
    org_users: sled::Tree,
    keys: sled::Tree,
    accounts: sled::Tree,
    tokens: sled::Tree,
    events: sled::Tree,
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
        let open = |name: &str| db.open_tree(name).map_err(Error::internal);
        let trees = Trees {
            meta: open("meta")?,
            orgs: open("orgs")?,
            org_names: open("org_names")?,
            users: open("users")?,
            org_users: open("org_users")?,
            keys: open("keys")?,
            accounts: open("accounts")?,
            tokens: open("tokens")?,
            events: open("events")?,
        };
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
                durability: Durability::open(db.clone(), trees.meta.clone())?,
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

    /// Answers a mutation only once it is durable, whatever its outcome: even a refusal or a
    /// no-op may rest on another request's change that is committed but not yet flushed.
    async fn durable<T>(&self, outcome: Result<T>) -> Result<T> {
        self.sync().await?;
        outcome
    }

    /// Head of the revocation log as far as it is durable; changes wake subscribers.
    pub fn durable_head(&self) -> watch::Receiver<u64> {
        self.inner.durability.durable_head()
    }

    fn trees(&self) -> &Trees {
        &self.inner.trees
    }
}

/// Every tree, in the order backups write them.
const TREE_NAMES: [&str; 9] = [
    "meta",
    "orgs",
    "org_names",
    "users",
    "org_users",
    "keys",
    "accounts",
    "tokens",
    "events",
];

/// Locks the data dir and opens its sled database (creating both if needed).
fn open_db(dir: &Path, options: &StoreOptions) -> Result<(File, sled::Db)> {
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let lock = lock_data_dir(dir)?;
    let db = sled::Config::new()
        .path(dir.join("db"))
        .cache_capacity(options.cache_bytes)
        .open()
        .map_err(Error::internal)?;
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
        (&trees.meta, &trees.accounts, &trees.tokens).transaction(|(meta, accounts, tokens)| {
            meta.insert(META_STORE_ID, store_id.as_bytes())?;
            meta.insert(META_HEAD, &0u64.to_be_bytes())?;
            meta.insert(META_OPERATORS, &1u64.to_be_bytes())?;
            accounts.insert(BOOTSTRAP_OPERATOR.as_bytes(), account.as_slice())?;
            tokens.insert(&hash.0, BOOTSTRAP_OPERATOR.as_bytes())?;
            meta.insert(META_INITIALISED, &[1])?;
            Ok(())
        }),
    )
}

/// Writes a token to a new file only its owner can read (0600 from creation, never wider).
pub fn write_token_file(path: &Path, token: &AccountToken) -> Result<()> {
    let tmp = path.with_extension("token.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = File::options()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_error(&tmp, e))?;
    file.write_all(token.expose().as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&tmp, e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(|e| io_error(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("{}: {e}", path.display()))
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
