//! Orgs and their users.

use std::ops::Bound;

use prost::Message;
use sled::Transactional;

use super::records::{decode, micros, now, OrgRecord, UserRecord};
use super::revocation::{org_not_found, read_org, revoke_active_key, KeyTx};
use super::{abort, audit, lift, Store};
use crate::domain::{
    AuditAction, Caller, Edition, Email, Error, Name, Org, OrgId, Page, Profile, Result,
    RevocationEvent, RevocationReason, User, UserStatus,
};

/// A user change and the revocation it caused, if any.
pub type UserChange = (User, Option<RevocationEvent>);

impl Store {
    pub async fn create_org(&self, by: &Caller, name: Name, edition: Edition) -> Result<Org> {
        let t = self.trees();
        let org = Org {
            id: OrgId::generate(),
            name: name.as_str().to_owned(),
            edition,
            created: now(),
        };
        let record = OrgRecord {
            name: org.name.clone(),
            edition: edition.code(),
            created_us: micros(org.created),
            active_key: None,
        }
        .encode_to_vec();
        let folded = name.folded();
        self.commit(|| {
            (&t.orgs, &t.org_names, &t.audit).transaction(|(orgs, org_names, trail)| {
                if org_names.get(folded.as_bytes())?.is_some() {
                    return abort(Error::AlreadyExists(format!(
                        "an org named {:?} already exists",
                        org.name
                    )));
                }
                org_names.insert(folded.as_bytes(), org.id.as_str().as_bytes())?;
                orgs.insert(org.id.as_str().as_bytes(), record.as_slice())?;
                let action = AuditAction::OrgCreated;
                audit::append(trail, audit::entry(by, action, Some(&org.id), &org.name))?;
                Ok(())
            })
        })
        .await?;
        Ok(org)
    }

    pub fn get_org(&self, id: &OrgId) -> Result<Org> {
        let bytes = self
            .trees()
            .orgs
            .get(id.as_str())
            .map_err(Error::internal)?
            .ok_or_else(|| org_not_found(id))?;
        decode::<OrgRecord>(&bytes)?.to_org(id.clone())
    }

    /// Orgs in org_id order, starting after `after`.
    pub fn list_orgs(&self, after: Option<&str>, limit: usize) -> Result<Page<Org>> {
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.as_bytes().to_vec()));
        let entries = self
            .trees()
            .orgs
            .range::<Vec<u8>, _>((start, Bound::Unbounded));
        paginate(entries, limit, |key, value| {
            let id = OrgId::from_trusted(utf8(key)?);
            let org = decode::<OrgRecord>(value)?.to_org(id.clone())?;
            Ok((id.to_string(), org))
        })
    }

    pub async fn create_user(
        &self,
        by: &Caller,
        org_id: OrgId,
        email: Email,
        display_name: Name,
        profile: Profile,
    ) -> Result<User> {
        let t = self.trees();
        let now = now();
        let user = User {
            email,
            org_id,
            display_name: display_name.into_string(),
            profile,
            status: UserStatus::Active,
            created: now,
            updated: now,
        };
        let record = UserRecord::from_user(&user).encode_to_vec();
        let index = org_user_key(&user.org_id, &user.email);
        self.commit(|| {
            (&t.orgs, &t.users, &t.org_users, &t.audit).transaction(
                |(orgs, users, org_users, trail)| {
                    if orgs.get(user.org_id.as_str())?.is_none() {
                        return abort(org_not_found(&user.org_id));
                    }
                    if users.get(user.email.as_str())?.is_some() {
                        return abort(Error::AlreadyExists(format!(
                            "a user with email {} already exists",
                            user.email
                        )));
                    }
                    users.insert(user.email.as_str(), record.as_slice())?;
                    org_users.insert(index.as_slice(), &[])?;
                    let action = AuditAction::UserCreated;
                    let entry = audit::entry(by, action, Some(&user.org_id), user.email.as_str());
                    audit::append(trail, entry)?;
                    Ok(())
                },
            )
        })
        .await?;
        Ok(user)
    }

    pub fn get_user(&self, email: &Email) -> Result<User> {
        let bytes = self
            .trees()
            .users
            .get(email.as_str())
            .map_err(Error::internal)?
            .ok_or_else(|| user_not_found(email))?;
        decode::<UserRecord>(&bytes)?.to_user(email.clone())
    }

    /// An org's users in email order, starting after the email `after`.
    pub fn list_users(
        &self,
        org_id: &OrgId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<User>> {
        self.get_org(org_id)?;
        let prefix = org_user_key(org_id, &Email::from_trusted(String::new()));
        let start = match after {
            Some(email) => {
                Bound::Excluded(org_user_key(org_id, &Email::from_trusted(email.to_owned())))
            }
            None => Bound::Included(prefix.clone()),
        };
        let entries = self
            .trees()
            .org_users
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take_while(|entry| {
                entry
                    .as_ref()
                    .map_or(true, |(key, _)| key.starts_with(&prefix))
            });
        paginate(entries, limit, |key, _| {
            let email = Email::from_trusted(utf8(&key[prefix.len()..])?);
            Ok((email.to_string(), self.get_user(&email)?))
        })
    }

    /// Changes a profile; demoting the owner of the org's key revokes it (OWNER_DEMOTED).
    pub async fn update_user_profile(
        &self,
        by: &Caller,
        email: &Email,
        profile: Profile,
    ) -> Result<UserChange> {
        self.change_user(by, email, AuditAction::UserProfileChanged, |user| {
            user.profile = profile;
            (profile != Profile::Administrator).then_some(RevocationReason::OwnerDemoted)
        })
        .await
    }

    /// Deactivates a user; deactivating the owner of the org's key revokes it (OWNER_DEACTIVATED).
    pub async fn deactivate_user(&self, by: &Caller, email: &Email) -> Result<UserChange> {
        self.change_user(by, email, AuditAction::UserDeactivated, |user| {
            user.status = UserStatus::Deactivated;
            Some(RevocationReason::OwnerDeactivated)
        })
        .await
    }

    /// Reactivates a user. A key revoked by the deactivation stays revoked.
    pub async fn reactivate_user(&self, by: &Caller, email: &Email) -> Result<UserChange> {
        self.change_user(by, email, AuditAction::UserReactivated, |user| {
            user.status = UserStatus::Active;
            None
        })
        .await
    }

    /// Applies `change` to a user in one transaction. When `change` returns a reason (the user
    /// may have lost the right to hold a key) and they own the org's active key, it is revoked
    /// for that reason. A change that changes nothing writes nothing and revokes nothing (but
    /// still waits for the flush: what it saw may be another request's change in flight). A
    /// change is audited as `action`; a no-op is not audited.
    async fn change_user(
        &self,
        by: &Caller,
        email: &Email,
        action: AuditAction,
        change: impl Fn(&mut User) -> Option<RevocationReason>,
    ) -> Result<UserChange> {
        let t = self.trees();
        let now = now();
        self.commit(|| {
            (&t.users, &t.orgs, &t.keys, &t.meta, &t.events, &t.audit).transaction(
                |(users, orgs, keys, meta, events, trail)| {
                    let Some(bytes) = users.get(email.as_str())? else {
                        return abort(user_not_found(email));
                    };
                    let before =
                        lift(decode::<UserRecord>(&bytes).and_then(|r| r.to_user(email.clone())))?;
                    let mut user = before.clone();
                    let loses_key_for = change(&mut user);
                    if user == before {
                        return Ok((user, None));
                    }
                    user.updated = now;
                    users.insert(email.as_str(), UserRecord::from_user(&user).encode_to_vec())?;
                    let event = match loses_key_for {
                        Some(reason) => match read_org(orgs, &user.org_id)? {
                            Some(mut org) => {
                                let tx = KeyTx {
                                    orgs,
                                    keys,
                                    meta,
                                    events,
                                };
                                revoke_active_key(
                                    &tx,
                                    &user.org_id,
                                    &mut org,
                                    Some(email),
                                    reason,
                                    now,
                                )?
                            }
                            None => None,
                        },
                        None => None,
                    };
                    let entry = audit::entry(by, action, Some(&user.org_id), email.as_str());
                    audit::append(trail, entry.revoking(event.as_ref()))?;
                    Ok((user, event))
                },
            )
        })
        .await
    }
}

/// Collects up to `limit` items and says where the next page starts if more remain.
fn paginate<T>(
    entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    limit: usize,
    mut item: impl FnMut(&[u8], &[u8]) -> Result<(String, T)>,
) -> Result<Page<T>> {
    let mut items = Vec::new();
    let mut last = None;
    for entry in entries {
        let (key, value) = entry.map_err(Error::internal)?;
        if items.len() == limit {
            return Ok(Page {
                items,
                next_after: last,
            });
        }
        let (sort_key, value) = item(&key, &value)?;
        items.push(value);
        last = Some(sort_key);
    }
    Ok(Page {
        items,
        next_after: None,
    })
}

fn org_user_key(org_id: &OrgId, email: &Email) -> Vec<u8> {
    [org_id.as_str().as_bytes(), b"\0", email.as_str().as_bytes()].concat()
}

fn utf8(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(Error::internal)
}

pub(super) fn user_not_found(email: &Email) -> Error {
    Error::not_found(format!("user {email} not found"))
}
