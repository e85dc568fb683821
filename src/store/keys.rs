//! ZSC keys: generate, regenerate, revoke, look up, validate.

use prost::Message;
use sled::Transactional;

use super::records::{decode, now, KeyRecord, OrgRecord, UserRecord};
use super::revocation::{org_not_found, read_org, revoke_active_key, KeyTx};
use super::{abort, audit, lift, Store};
use crate::domain::{
    AccountName, AuditAction, Caller, Email, Error, KeyId, KeyInfo, OrgId, Result, RevocationEvent,
    RevocationReason, Validation, ZscKey, INVALID_EMAIL_OR_KEY,
};

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
        let t = self.trees();
        let key = ZscKey::generate();
        let hash = key.hash();
        let now = now();
        let info = KeyInfo {
            key_id: KeyId::generate(),
            org_id: org_id.clone(),
            owner: actor.clone(),
            key_prefix: key.display_prefix(),
            created: now,
        };
        let record = KeyRecord::from_info(&info).encode_to_vec();
        let replaced = self
            .commit(|| {
                (&t.users, &t.orgs, &t.keys, &t.meta, &t.events, &t.audit).transaction(
                    |(users, orgs, keys, meta, events, trail)| {
                        let Some(mut org) = read_org(orgs, org_id)? else {
                            return abort(org_not_found(org_id));
                        };
                        let may_hold = match users.get(actor.as_str())? {
                            Some(bytes) => lift(
                                decode::<UserRecord>(&bytes).and_then(|r| r.to_user(actor.clone())),
                            )?
                            .may_hold_key_of(org_id),
                            None => false,
                        };
                        if !may_hold {
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
                                let tx = KeyTx {
                                    orgs,
                                    keys,
                                    meta,
                                    events,
                                };
                                revoke_active_key(
                                    &tx,
                                    org_id,
                                    &mut org,
                                    None,
                                    RevocationReason::Regenerated,
                                    now,
                                )?
                            }
                        };
                        org.active_key = Some(hash.0.to_vec());
                        orgs.insert(org_id.as_str(), org.encode_to_vec())?;
                        keys.insert(&hash.0, record.as_slice())?;
                        let action = match mode {
                            KeyMode::New => AuditAction::KeyGenerated,
                            KeyMode::Replace => AuditAction::KeyRegenerated,
                        };
                        let entry = audit::entry(by, action, Some(org_id), info.key_id.as_str());
                        audit::append(trail, entry.acting_for(actor).revoking(replaced.as_ref()))?;
                        Ok(replaced)
                    },
                )
            })
            .await?;
        Ok(GeneratedKey {
            key,
            info,
            replaced,
        })
    }

    /// Revokes the org's key (REVOKED). NOT_FOUND if it has none.
    pub async fn revoke_key(&self, by: &Caller, org_id: &OrgId) -> Result<RevocationEvent> {
        let t = self.trees();
        let now = now();
        let event = self
            .commit(|| {
                (&t.orgs, &t.keys, &t.meta, &t.events, &t.audit).transaction(
                    |(orgs, keys, meta, events, trail)| {
                        let Some(mut org) = read_org(orgs, org_id)? else {
                            return abort(org_not_found(org_id));
                        };
                        let tx = KeyTx {
                            orgs,
                            keys,
                            meta,
                            events,
                        };
                        match revoke_active_key(
                            &tx,
                            org_id,
                            &mut org,
                            None,
                            RevocationReason::Revoked,
                            now,
                        )? {
                            Some(event) => {
                                let action = AuditAction::KeyRevoked;
                                let entry =
                                    audit::entry(by, action, Some(org_id), event.key_id.as_str());
                                audit::append(trail, entry.revoking(Some(&event)))?;
                                Ok(event)
                            }
                            None => abort(no_key(org_id)),
                        }
                    },
                )
            })
            .await?;
        Ok(event)
    }

    pub fn key_info(&self, org_id: &OrgId) -> Result<KeyInfo> {
        let t = self.trees();
        let org_bytes = t
            .orgs
            .get(org_id.as_str())
            .map_err(Error::internal)?
            .ok_or_else(|| org_not_found(org_id))?;
        let hash = decode::<OrgRecord>(&org_bytes)?
            .active_key
            .ok_or_else(|| no_key(org_id))?;
        let key_bytes = t
            .keys
            .get(&hash)
            .map_err(Error::internal)?
            .ok_or_else(|| no_key(org_id))?;
        Ok(decode::<KeyRecord>(&key_bytes)?.to_info())
    }

    /// Checks "owner email + key". Every failure is the same Unauthenticated error, so a caller
    /// cannot tell a wrong email from a revoked key or a demoted owner.
    /// A success is counted as `consumer`'s use of the key.
    pub fn validate_key(
        &self,
        email: &Email,
        key: &ZscKey,
        consumer: &AccountName,
    ) -> Result<Validation> {
        let t = self.trees();
        // The durable head, read before anything else: every revocation at or below it is
        // committed, so the reads below see its effect; and being durable, that sequence can
        // never be reused after a crash. A Verifier relies on both.
        let sequence = self.inner.durability.durable_head_now();
        let hash = key.hash();
        let denied = || Error::Unauthenticated(INVALID_EMAIL_OR_KEY);
        let record = decode::<KeyRecord>(
            &t.keys
                .get(hash.0)
                .map_err(Error::internal)?
                .ok_or_else(denied)?,
        )?;
        let info = record.to_info();
        if info.owner != *email {
            return Err(denied());
        }
        let user = match self.get_user(email) {
            Err(Error::NotFound(_)) => return Err(denied()),
            other => other?,
        };
        if !user.may_hold_key_of(&info.org_id) {
            return Err(denied());
        }
        let org = match self.get_org(&info.org_id) {
            Err(Error::NotFound(_)) => return Err(denied()),
            other => other?,
        };
        self.count_validation(&info.key_id, consumer);
        Ok(Validation {
            org,
            key_id: info.key_id,
            owner: info.owner,
            sequence,
        })
    }
}

fn no_key(org_id: &OrgId) -> Error {
    Error::not_found(format!("org {org_id} has no key"))
}
