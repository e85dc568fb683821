//! Service accounts and their bearer tokens.

use prost::Message;
use sled::Transactional;

use super::records::{decode, micros, now, AccountRecord};
use super::{abort, audit, lift, tx_u64, Store, META_OPERATORS};
use crate::domain::{
    AccountName, AccountToken, AuditAction, Caller, Error, Result, Role, SecretHash,
    ServiceAccount, CLI_CALLER,
};

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
        let t = self.trees();
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
        self.commit(|| {
            (&t.accounts, &t.tokens, &t.meta, &t.audit).transaction(
                |(accounts, tokens, meta, trail)| {
                    if accounts.get(name)?.is_some() {
                        return abort(Error::AlreadyExists(format!(
                            "a service account named {} already exists",
                            account.name
                        )));
                    }
                    accounts.insert(name, record.as_slice())?;
                    tokens.insert(&hash.0, name)?;
                    if role == Role::Operator {
                        let operators = tx_u64(meta, META_OPERATORS)?;
                        meta.insert(META_OPERATORS, &(operators + 1).to_be_bytes())?;
                    }
                    let action = AuditAction::ServiceAccountCreated;
                    audit::append(trail, audit::entry(by, action, None, account.name.as_str()))?;
                    Ok(())
                },
            )
        })
        .await?;
        Ok((account, token))
    }

    pub fn list_accounts(&self) -> Result<Vec<ServiceAccount>> {
        self.trees()
            .accounts
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(Error::internal)?;
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
        let t = self.trees();
        let key = name.as_str().as_bytes();
        self.commit(|| (&t.accounts, &t.tokens, &t.meta, &t.audit).transaction(|(accounts, tokens, meta, trail)| {
            let Some(bytes) = accounts.get(key)? else {
                return abort(Error::not_found(format!("service account {name} not found")));
            };
            let record = lift(decode::<AccountRecord>(&bytes))?;
            if record.role == Role::Operator.code() {
                let operators = tx_u64(meta, META_OPERATORS)?;
                if operators <= 1 {
                    return abort(Error::FailedPrecondition(format!(
                        "{name} is the last operator account; create another operator before deleting it"
                    )));
                }
                meta.insert(META_OPERATORS, &(operators - 1).to_be_bytes())?;
            }
            accounts.remove(key)?;
            tokens.remove(record.token_hash.as_slice())?;
            let action = AuditAction::ServiceAccountDeleted;
            audit::append(trail, audit::entry(by, action, None, name.as_str()))?;
            Ok(())
        })).await
    }

    /// Who a bearer token belongs to.
    pub fn authenticate(&self, token: &AccountToken) -> Result<Caller> {
        self.holder_of(token.hash())
    }

    /// Who holds the token with this hash now. A deleted account's token, and one replaced by
    /// `operator-token`, belong to no one.
    pub fn holder_of(&self, token: SecretHash) -> Result<Caller> {
        let t = self.trees();
        let unknown = || Error::Unauthenticated(UNKNOWN_TOKEN);
        let name = t
            .tokens
            .get(token.0)
            .map_err(Error::internal)?
            .ok_or_else(unknown)?;
        let record = t
            .accounts
            .get(&name)
            .map_err(Error::internal)?
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
        let t = self.trees();
        let hash = token.hash();
        let name = super::BOOTSTRAP_OPERATOR.as_bytes();
        self.commit(|| {
            (&t.accounts, &t.tokens, &t.meta, &t.audit).transaction(
                |(accounts, tokens, meta, trail)| {
                    let record = match accounts.get(name)? {
                        Some(bytes) => {
                            let mut record = lift(decode::<AccountRecord>(&bytes))?;
                            if record.role != Role::Operator.code() {
                                return abort(Error::FailedPrecondition(
                                "the account named operator is not an operator; delete it first"
                                    .into(),
                            ));
                            }
                            tokens.remove(record.token_hash.as_slice())?;
                            record.token_hash = hash.0.to_vec();
                            record
                        }
                        None => {
                            let operators = tx_u64(meta, META_OPERATORS)?;
                            meta.insert(META_OPERATORS, &(operators + 1).to_be_bytes())?;
                            AccountRecord {
                                role: Role::Operator.code(),
                                created_us: micros(now()),
                                token_hash: hash.0.to_vec(),
                            }
                        }
                    };
                    accounts.insert(name, record.encode_to_vec())?;
                    tokens.insert(&hash.0, name)?;
                    let action = AuditAction::OperatorTokenRotated;
                    let target = super::BOOTSTRAP_OPERATOR;
                    audit::append(trail, audit::entry(&Caller::cli(), action, None, target))?;
                    Ok(())
                },
            )
        })
        .await
    }
}
