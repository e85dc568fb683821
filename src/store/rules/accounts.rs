//! Service accounts and their bearer tokens.

use std::ops::Bound;

use prost::Message;

use super::audit;
use crate::domain::{
    AccountName, AccountToken, AuditAction, Caller, Error, Result, Role, SecretHash,
    ServiceAccount, CLI_CALLER,
};
use crate::store::handle::Store;
use crate::store::kv::{abort, get_u64, lift, Prefetch, Range};
use crate::store::records::{decode, micros, now, AccountRecord};
use crate::store::tables::Table;
use crate::store::tables::META_OPERATORS;

/// The one message for a bad bearer token, whatever was wrong with it.
const UNKNOWN_TOKEN: &str = "unknown or revoked token";

impl Store {
    /// Creates an account and its token. The token is returned here and never again.
    pub async fn create_account(
        &self,
        by: &Caller,
        name: AccountName,
        role: Role,
    ) -> Result<(ServiceAccount, AccountToken)> {
        let token = AccountToken::generate();
        let hash = token.hash();
        let account = ServiceAccount {
            name,
            role,
            created: now(),
        };
        let record = AccountRecord {
            role: role.code(),
            created_us: micros(account.created),
            token_hash: hash.0.to_vec(),
        }
        .encode_to_vec();
        if account.name.as_str() == CLI_CALLER {
            return Err(Error::invalid(format!(
                "the name {CLI_CALLER} is reserved: the audit trail names the offline commands so"
            )));
        }
        let name = account.name.as_str().as_bytes();
        let prefetch = || account_and_operators(name);
        self.commit(prefetch, |tx| {
            if tx.get(Table::Accounts, name)?.is_some() {
                return abort(Error::AlreadyExists(format!(
                    "a service account named {} already exists",
                    account.name
                )));
            }
            tx.insert(Table::Accounts, name, &record)?;
            tx.insert(Table::Tokens, &hash.0, name)?;
            if role == Role::Operator {
                let operators = get_u64(tx, Table::Meta, META_OPERATORS)?;
                tx.insert(Table::Meta, META_OPERATORS, &(operators + 1).to_be_bytes())?;
            }
            let action = AuditAction::ServiceAccountCreated;
            audit::append(tx, audit::entry(by, action, None, account.name.as_str()))?;
            Ok(())
        })
        .await?;
        Ok((account, token))
    }

    pub async fn list_accounts(&self) -> Result<Vec<ServiceAccount>> {
        let range = Range::new(Table::Accounts, Bound::Unbounded, Bound::Unbounded);
        self.backend()
            .scan(range)
            .await?
            .into_iter()
            .map(|(key, value)| {
                let name = AccountName::from_trusted(
                    String::from_utf8(key.to_vec()).map_err(Error::internal)?,
                );
                decode::<AccountRecord>(&value)?.to_account(name)
            })
            .collect()
    }

    /// Deletes an account; its token fails from the moment this returns. The last operator
    /// account cannot be deleted (that would lock every operator out).
    pub async fn delete_account(&self, by: &Caller, name: &AccountName) -> Result<()> {
        let key = name.as_str().as_bytes();
        let prefetch = || {
            vec![
                (Table::Accounts, key.to_vec()),
                (Table::Meta, META_OPERATORS.to_vec()),
                audit::head_key(),
            ]
        };
        self.commit(prefetch, |tx| {
            let Some(bytes) = tx.get(Table::Accounts, key)? else {
                return abort(Error::not_found(format!(
                    "service account {name} not found"
                )));
            };
            let record = lift(decode::<AccountRecord>(&bytes))?;
            if record.role == Role::Operator.code() {
                let operators = get_u64(tx, Table::Meta, META_OPERATORS)?;
                if operators <= 1 {
                    return abort(Error::FailedPrecondition(format!(
                        "{name} is the last operator account; create another operator before \
                         deleting it"
                    )));
                }
                tx.insert(Table::Meta, META_OPERATORS, &(operators - 1).to_be_bytes())?;
            }
            tx.remove(Table::Accounts, key)?;
            tx.remove(Table::Tokens, &record.token_hash)?;
            let action = AuditAction::ServiceAccountDeleted;
            audit::append(tx, audit::entry(by, action, None, name.as_str()))?;
            Ok(())
        })
        .await
    }

    /// Who a bearer token belongs to. Read from this replica's copy of the accounts (on etcd
    /// kept current by its watch), so that authenticating costs no round trip.
    pub fn authenticate(&self, token: &AccountToken) -> Result<Caller> {
        self.holder_of(token.hash())
    }

    /// Moves whenever an account or token changes on this replica (created, deleted, its token
    /// replaced), once the change is visible to [`Store::holder_of`]: whoever checked a caller
    /// at one generation need not read it again until the generation moves.
    pub fn accounts_generation(&self) -> u64 {
        self.backend().accounts_generation()
    }

    /// Who holds the token with this hash now. A deleted account's token, and one replaced by
    /// `operator-token`, belong to no one.
    ///
    /// Every authenticated call asks, so the answer is kept in memory for as long as the
    /// accounts stay as they were
    /// ([`Store::accounts_generation`]): the generation is read
    /// before the tables, so an answer read from tables older than a change is never kept
    /// under the generation that follows it.
    pub fn holder_of(&self, token: SecretHash) -> Result<Caller> {
        let generation = self.backend().accounts_generation();
        let holders = &self.inner.holders;
        if let Some(known) = holders.get(&token).filter(|k| k.0 == generation) {
            return Ok(known.1.clone());
        }
        let caller = self.read_holder(token)?;
        // Only tokens that belong to someone are kept: refused guesses cannot grow the map.
        holders.insert(token, (generation, caller.clone()));
        Ok(caller)
    }

    fn read_holder(&self, token: SecretHash) -> Result<Caller> {
        let backend = self.backend();
        let unknown = || Error::Unauthenticated(UNKNOWN_TOKEN);
        let name = backend
            .get_local(Table::Tokens, &token.0)?
            .ok_or_else(unknown)?;
        let record = backend
            .get_local(Table::Accounts, &name)?
            .ok_or_else(unknown)?;
        let name =
            AccountName::from_trusted(String::from_utf8(name.to_vec()).map_err(Error::internal)?);
        let account = decode::<AccountRecord>(&record)?.to_account(name)?;
        Ok(Caller {
            name: account.name,
            role: account.role,
            token,
        })
    }
}

impl Store {
    /// Recovery when the last operator token is lost: gives the `operator` account `token`
    /// (creating the account if it was deleted). Its previous token stops working.
    pub async fn reset_operator_token(&self, token: &AccountToken) -> Result<()> {
        let hash = token.hash();
        let name = super::bootstrap::BOOTSTRAP_OPERATOR.as_bytes();
        let prefetch = || account_and_operators(name);
        self.commit(prefetch, |tx| {
            let record = match tx.get(Table::Accounts, name)? {
                Some(bytes) => {
                    let mut record = lift(decode::<AccountRecord>(&bytes))?;
                    if record.role != Role::Operator.code() {
                        return abort(Error::FailedPrecondition(
                            "the account named operator is not an operator; delete it first".into(),
                        ));
                    }
                    tx.remove(Table::Tokens, &record.token_hash)?;
                    record.token_hash = hash.0.to_vec();
                    record
                }
                None => {
                    let operators = get_u64(tx, Table::Meta, META_OPERATORS)?;
                    tx.insert(Table::Meta, META_OPERATORS, &(operators + 1).to_be_bytes())?;
                    AccountRecord {
                        role: Role::Operator.code(),
                        created_us: micros(now()),
                        token_hash: hash.0.to_vec(),
                    }
                }
            };
            tx.insert(Table::Accounts, name, &record.encode_to_vec())?;
            tx.insert(Table::Tokens, &hash.0, name)?;
            let action = AuditAction::OperatorTokenRotated;
            let target = super::bootstrap::BOOTSTRAP_OPERATOR;
            audit::append(tx, audit::entry(&Caller::cli(), action, None, target))?;
            Ok(())
        })
        .await
    }
}

/// What a change to the account `name` reads: it, the operator count and the audit head.
fn account_and_operators(name: &[u8]) -> Prefetch {
    vec![
        (Table::Accounts, name.to_vec()),
        (Table::Meta, META_OPERATORS.to_vec()),
        audit::head_key(),
    ]
}
