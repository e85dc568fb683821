//! What both keys and user changes need: reading an org inside a transaction and revoking its
//! active key (deleting it and appending the revocation to the log, in the caller's
//! transaction). Kept apart so that `keys.rs` and `orgs.rs` depend on it, not on each other.

use std::time::SystemTime;

use prost::Message;

use super::events::append_event;
use crate::domain::{Email, Error, OrgId, RevocationEvent, RevocationReason};
use crate::store::kv::{abort, lift, Tx, TxResult};
use crate::store::records::{decode, KeyRecord, OrgRecord};
use crate::store::tables::Table;

/// The org's record inside a transaction, if the org exists.
pub(in crate::store) fn read_org(tx: &mut dyn Tx, org_id: &OrgId) -> TxResult<Option<OrgRecord>> {
    match tx.get(Table::Orgs, org_id.as_str().as_bytes())? {
        Some(bytes) => lift(decode::<OrgRecord>(&bytes)).map(Some),
        None => Ok(None),
    }
}

/// Revokes the org's active key, if it has one (and, when `owner` is given, only if that user
/// owns it): the key is deleted, `org` forgets it and is written back, and the event is
/// appended to the log, all in the caller's transaction.
pub(super) fn revoke_active_key(
    tx: &mut dyn Tx,
    org_id: &OrgId,
    org: &mut OrgRecord,
    owner: Option<&Email>,
    reason: RevocationReason,
    now: SystemTime,
) -> TxResult<Option<RevocationEvent>> {
    let Some(hash) = org.active_key.clone() else {
        return Ok(None);
    };
    let Some(key_bytes) = tx.get(Table::Keys, &hash)? else {
        return abort(Error::internal(format!(
            "org {org_id} names a key that does not exist"
        )));
    };
    let key = lift(decode::<KeyRecord>(&key_bytes))?.to_info();
    if owner.is_some_and(|owner| *owner != key.owner) {
        return Ok(None);
    }
    tx.remove(Table::Keys, &hash)?;
    org.active_key = None;
    tx.insert(
        Table::Orgs,
        org_id.as_str().as_bytes(),
        &org.encode_to_vec(),
    )?;
    let event = RevocationEvent {
        sequence: 0,
        key_id: key.key_id,
        org_id: key.org_id,
        owner: key.owner,
        reason,
        revoked: now,
    };
    append_event(tx, event).map(Some)
}

pub(super) fn org_not_found(id: &OrgId) -> crate::domain::Error {
    Error::not_found(format!("org {id} not found"))
}
