//! What both keys and user changes need: reading an org inside a transaction and revoking its
//! active key (deleting it and appending the revocation to the log, in the caller's
//! transaction). Kept apart so that `keys.rs` and `orgs.rs` depend on it, not on each other.

use std::time::SystemTime;

use prost::Message;
use sled::transaction::TransactionalTree;

use super::events::append_event;
use super::records::{decode, KeyRecord, OrgRecord};
use super::{abort, lift, TxResult};
use crate::domain::{Email, Error, OrgId, RevocationEvent, RevocationReason};

/// The trees a revocation touches, inside a transaction.
pub(super) struct KeyTx<'a> {
    pub orgs: &'a TransactionalTree,
    pub keys: &'a TransactionalTree,
    pub meta: &'a TransactionalTree,
    pub events: &'a TransactionalTree,
}

/// The org's record inside a transaction, if the org exists.
pub(super) fn read_org(orgs: &TransactionalTree, org_id: &OrgId) -> TxResult<Option<OrgRecord>> {
    match orgs.get(org_id.as_str())? {
        Some(bytes) => lift(decode::<OrgRecord>(&bytes)).map(Some),
        None => Ok(None),
    }
}

/// Revokes the org's active key, if it has one (and, when `owner` is given, only if that user
/// owns it): the key is deleted, `org` forgets it and is written back, and the event is
/// appended to the log, all in the caller's transaction.
pub(super) fn revoke_active_key(
    tx: &KeyTx<'_>,
    org_id: &OrgId,
    org: &mut OrgRecord,
    owner: Option<&Email>,
    reason: RevocationReason,
    now: SystemTime,
) -> TxResult<Option<RevocationEvent>> {
    let Some(hash) = org.active_key.clone() else {
        return Ok(None);
    };
    let Some(key_bytes) = tx.keys.get(&hash)? else {
        return abort(Error::internal(format!(
            "org {org_id} names a key that does not exist"
        )));
    };
    let key = lift(decode::<KeyRecord>(&key_bytes))?.to_info();
    if owner.is_some_and(|owner| *owner != key.owner) {
        return Ok(None);
    }
    tx.keys.remove(hash.as_slice())?;
    org.active_key = None;
    tx.orgs.insert(org_id.as_str(), org.encode_to_vec())?;
    let event = RevocationEvent {
        sequence: 0,
        key_id: key.key_id,
        org_id: key.org_id,
        owner: key.owner,
        reason,
        revoked: now,
    };
    append_event(tx.meta, tx.events, event).map(Some)
}

pub(super) fn org_not_found(id: &OrgId) -> Error {
    Error::not_found(format!("org {id} not found"))
}
