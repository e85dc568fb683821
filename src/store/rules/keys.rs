//! ZSC keys: generate, regenerate, revoke, look up, validate.

use std::sync::Arc;

use prost::Message;

use super::audit;
use super::revocation::{org_not_found, read_org, revoke_active_key};
use crate::domain::{
    AccountName, AuditAction, Caller, Email, Error, KeyId, KeyInfo, OrgId, Result, RevocationEvent,
    RevocationReason, SecretHash, Validation, ZscKey,
};
use crate::store::handle::{Fresh, Store};
use crate::store::kv::{abort, lift, Prefetch, Tx, TxResult};
use crate::store::records::{decode, now, KeyRecord, UserRecord};
use crate::store::tables::Table;
use crate::store::tables::META_HEAD;

/// Whether generating a key should replace the org's current one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// GenerateKey: ALREADY_EXISTS if the org has a key.
    New,
    /// RegenerateKey: NOT_FOUND if it has none; the old key is revoked (REGENERATED) in the same
    /// transaction that stores the new one.
    Replace,
}

/// A new key (returned once, never stored), its public facts, and the revocation of the key it
/// replaced.
pub struct GeneratedKey {
    pub key: ZscKey,
    pub info: KeyInfo,
    pub replaced: Option<RevocationEvent>,
}

impl Store {
    /// Generates the org's key for `actor`, who must be an active administrator of the org.
    pub async fn generate_key(
        &self,
        by: &Caller,
        org_id: &OrgId,
        actor: &Email,
        mode: KeyMode,
    ) -> Result<GeneratedKey> {
        let NewKey { key, row } = NewKey::generate(org_id, actor);
        let (row, by) = (Arc::new(row), by.clone());
        let rule = row.clone();
        let prefetch = move || rule.prefetch();
        let rule = row.clone();
        let store = move |tx: &mut dyn Tx| rule.store(tx, &by, mode);
        let replaced = self.commit_batched(prefetch, store).await?;
        Ok(GeneratedKey {
            key,
            info: row.info.clone(),
            replaced,
        })
    }

    /// Revokes the org's key (REVOKED). NOT_FOUND if it has none.
    pub async fn revoke_key(&self, by: &Caller, org_id: &OrgId) -> Result<RevocationEvent> {
        let now = now();
        let org_key = org_id.as_str().as_bytes().to_vec();
        let prefetch = || {
            vec![
                (Table::Orgs, org_key),
                (Table::Meta, META_HEAD.to_vec()),
                audit::head_key(),
            ]
        };
        let (by, org_id) = (by.clone(), org_id.clone());
        self.commit_batched(prefetch, move |tx| {
            let Some(mut org) = read_org(tx, &org_id)? else {
                return abort(org_not_found(&org_id));
            };
            let reason = RevocationReason::Revoked;
            let Some(event) = revoke_active_key(tx, &org_id, &mut org, None, reason, now)? else {
                return abort(no_key(&org_id));
            };
            let action = AuditAction::KeyRevoked;
            let entry = audit::entry(&by, action, Some(&org_id), event.key_id.as_str());
            audit::append(tx, entry.revoking(Some(&event)))?;
            Ok(event)
        })
        .await
    }

    pub async fn key_info(&self, org_id: &OrgId) -> Result<KeyInfo> {
        let prefetch = || vec![(Table::Orgs, org_id.as_str().as_bytes().to_vec())];
        self.backend()
            .read(prefetch, |tx| {
                let Some(org) = read_org(tx, org_id)? else {
                    return abort(org_not_found(org_id));
                };
                let hash = org.active_key.ok_or_else(|| no_key(org_id))?;
                let key = tx.get(Table::Keys, &hash)?.ok_or_else(|| no_key(org_id))?;
                Ok(lift(decode::<KeyRecord>(&key))?.to_info())
            })
            .await
    }

    /// Checks "owner email + key". Every failure is the same Unauthenticated error, so a caller
    /// cannot tell a wrong email from a revoked key or a demoted owner.
    /// A success is counted as `consumer`'s use of the key.
    ///
    /// Linearizable: on etcd it first waits for this replica to reflect every change
    /// acknowledged before the call ([`Store::barrier`]), then answers from memory.
    pub async fn validate_key(
        &self,
        email: &Email,
        key: &ZscKey,
        consumer: &AccountName,
    ) -> Result<Validation> {
        let fresh = self.barrier().await?;
        self.validate_key_after(&fresh, email, &key.hash(), consumer)
    }

    /// [`Store::validate_key`] for a call that already passed a barrier after it arrived, with
    /// the key's hash ([`ZscKey::hash_of`]).
    /// Reads only the validation view (`view.rs`). The head is read first: the view drops a
    /// revoked key before the head that records the revocation moves, so every revocation at
    /// or below the `sequence` returned is reflected in the answer.
    pub fn validate_key_after(
        &self,
        _fresh: &Fresh,
        email: &Email,
        key: &SecretHash,
        consumer: &AccountName,
    ) -> Result<Validation> {
        let sequence = self.backend().head().borrow().applied;
        let validation = self.backend().view().validate(key, email, sequence)?;
        self.count_validation(&validation.key_id, consumer);
        Ok(validation)
    }
}

/// A new key (never stored: only its hash is) and its row, made before its transaction so
/// that a re-run stores the same key (and the bulk loader, `bulk.rs`, can store many in one).
pub(super) struct NewKey {
    pub key: ZscKey,
    pub row: KeyRow,
}

/// What storing a new key writes, without the secret: a batched rule owns it (`writer.rs`).
pub(super) struct KeyRow {
    hash: SecretHash,
    pub info: KeyInfo,
}

impl NewKey {
    pub fn generate(org_id: &OrgId, actor: &Email) -> Self {
        let key = ZscKey::generate();
        let info = KeyInfo {
            key_id: KeyId::generate(),
            org_id: org_id.clone(),
            owner: actor.clone(),
            key_prefix: key.display_prefix(),
            created: now(),
        };
        let row = KeyRow {
            hash: key.hash(),
            info,
        };
        NewKey { key, row }
    }
}

impl KeyRow {
    pub fn prefetch(&self) -> Prefetch {
        let info = &self.info;
        vec![
            (Table::Orgs, info.org_id.as_str().as_bytes().to_vec()),
            (Table::Users, info.owner.as_str().as_bytes().to_vec()),
            (Table::Meta, META_HEAD.to_vec()),
            audit::head_key(),
        ]
    }

    /// GenerateKey's and RegenerateKey's rule: the org exists, its owner-to-be is an active
    /// administrator of it, and `mode` agrees with whether it has a key; the key replaced (if
    /// any) is revoked, the new one stored and made the org's, and the change audited.
    pub fn store(
        &self,
        tx: &mut dyn Tx,
        by: &Caller,
        mode: KeyMode,
    ) -> TxResult<Option<RevocationEvent>> {
        let (org_id, actor, now) = (&self.info.org_id, &self.info.owner, self.info.created);
        let Some(mut org) = read_org(tx, org_id)? else {
            return abort(org_not_found(org_id));
        };
        if !may_hold_key(tx, actor, org_id)? {
            return abort(Error::PermissionDenied(format!(
                "{actor} is not an active administrator of org {org_id}"
            )));
        }
        let replaced = match (mode, org.active_key.is_some()) {
            (KeyMode::New, true) => {
                return abort(Error::AlreadyExists(format!(
                    "org {org_id} already has a key: use RegenerateKey to replace it"
                )))
            }
            (KeyMode::Replace, false) => {
                return abort(Error::not_found(format!(
                    "org {org_id} has no key: use GenerateKey to create one"
                )))
            }
            (KeyMode::New, false) => None,
            (KeyMode::Replace, true) => {
                let reason = RevocationReason::Regenerated;
                revoke_active_key(tx, org_id, &mut org, None, reason, now)?
            }
        };
        org.active_key = Some(self.hash.0.to_vec());
        tx.insert(
            Table::Orgs,
            org_id.as_str().as_bytes(),
            &org.encode_to_vec(),
        )?;
        let record = KeyRecord::new(&self.info, &org);
        tx.insert(Table::Keys, &self.hash.0, &record.encode_to_vec())?;
        let action = match mode {
            KeyMode::New => AuditAction::KeyGenerated,
            KeyMode::Replace => AuditAction::KeyRegenerated,
        };
        let entry = audit::entry(by, action, Some(org_id), self.info.key_id.as_str());
        audit::append(tx, entry.acting_for(actor).revoking(replaced.as_ref()))?;
        Ok(replaced)
    }
}

/// Whether `email` is a user who may hold the key of `org_id` (an active administrator of it).
pub(in crate::store) fn may_hold_key(
    tx: &mut dyn Tx,
    email: &Email,
    org_id: &OrgId,
) -> TxResult<bool> {
    match tx.get(Table::Users, email.as_str().as_bytes())? {
        Some(bytes) => {
            let user = lift(decode::<UserRecord>(&bytes).and_then(|r| r.to_user(email.clone())))?;
            Ok(user.may_hold_key_of(org_id))
        }
        None => Ok(false),
    }
}

fn no_key(org_id: &OrgId) -> Error {
    Error::not_found(format!("org {org_id} has no key"))
}
