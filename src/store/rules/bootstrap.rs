//! First start: the store id, the empty log and the operator account, whose token goes to a
//! private file in the data dir.

use std::path::Path;

use prost::Message;

use super::audit;
use crate::domain::{random_base62, AccountToken, AuditAction, Caller, Error, Result, Role};
use crate::store::backend::Backend;
use crate::store::kv::{abort, Tx};
use crate::store::records::{self, AccountRecord};
use crate::store::sled::files;
use crate::store::tables::{Table, META_HEAD, META_INITIALISED, META_OPERATORS, META_STORE_ID};

/// The file the first operator token is written to, inside the data dir.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";
/// The account created on first start.
pub const BOOTSTRAP_OPERATOR: &str = "operator";

/// First start: a store id, an empty log, and the operator account whose token goes to a
/// 0600 file; true if this call initialised the store. The file is written before the account
/// is committed, so a crash in between leaves an uninitialised store that the next start
/// initialises afresh; a start that loses the race to initialise (another replica on the same
/// etcd prefix) removes the file it wrote, so only the initialising replica has one.
pub(in crate::store) async fn initialise(dir: &Path, backend: &Backend) -> Result<bool> {
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

/// The store id, which initialisation wrote.
pub(in crate::store) async fn read_store_id(backend: &Backend) -> Result<String> {
    let id = backend
        .read(
            || vec![(Table::Meta, META_STORE_ID.to_vec())],
            |tx| tx.get(Table::Meta, META_STORE_ID),
        )
        .await?;
    id.and_then(|v| String::from_utf8(v).ok())
        .ok_or_else(|| Error::internal("store has no store id"))
}
