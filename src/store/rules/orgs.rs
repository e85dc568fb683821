//! Orgs and their users.

use std::ops::Bound;

use prost::Message;

use super::audit;
use super::revocation::{org_not_found, read_org, revoke_active_key};
use crate::domain::{
    AuditAction, Caller, Edition, Email, Error, Name, Org, OrgId, Page, Profile, Result,
    RevocationEvent, RevocationReason, User, UserStatus,
};
use crate::store::handle::Store;
use crate::store::kv::{abort, lift, Entry, Prefetch, Range, Tx, TxResult};
use crate::store::records::{decode, micros, now, OrgRecord, UserRecord};
use crate::store::tables::Table;
use crate::store::tables::META_HEAD;

/// A user change and the revocation it caused, if any.
pub type UserChange = (User, Option<RevocationEvent>);

impl Store {
    pub async fn create_org(&self, by: &Caller, name: Name, edition: Edition) -> Result<Org> {
        let new = NewOrg::new(name, edition);
        let prefetch = || new.prefetch();
        self.commit(prefetch, |tx| new.insert(tx, by)).await?;
        Ok(new.org)
    }

    pub async fn get_org(&self, id: &OrgId) -> Result<Org> {
        let key = id.as_str().as_bytes();
        let bytes = self
            .backend()
            .read(
                || vec![(Table::Orgs, key.to_vec())],
                |tx| tx.get(Table::Orgs, key),
            )
            .await?
            .ok_or_else(|| org_not_found(id))?;
        decode::<OrgRecord>(&bytes)?.to_org(id.clone())
    }

    /// Orgs in org_id order, starting after `after`.
    pub async fn list_orgs(&self, after: Option<&str>, limit: usize) -> Result<Page<Org>> {
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.as_bytes().to_vec()));
        let range = Range::new(Table::Orgs, start, Bound::Unbounded).limit(limit.saturating_add(1));
        let entries = self.backend().scan(range).await?;
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
        let new = NewUser::new(org_id, email, display_name, profile);
        let prefetch = || new.prefetch();
        self.commit(prefetch, |tx| new.insert(tx, by)).await?;
        Ok(new.user)
    }

    pub async fn get_user(&self, email: &Email) -> Result<User> {
        let key = email.as_str().as_bytes();
        let bytes = self
            .backend()
            .read(
                || vec![(Table::Users, key.to_vec())],
                |tx| tx.get(Table::Users, key),
            )
            .await?
            .ok_or_else(|| user_not_found(email))?;
        decode::<UserRecord>(&bytes)?.to_user(email.clone())
    }

    /// An org's users in email order, starting after the email `after`.
    pub async fn list_users(
        &self,
        org_id: &OrgId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<User>> {
        self.get_org(org_id).await?;
        let prefix = org_user_key(org_id, &Email::from_trusted(String::new()));
        let mut range = Range::prefix(Table::OrgUsers, &prefix).limit(limit.saturating_add(1));
        if let Some(email) = after {
            range.start =
                Bound::Excluded(org_user_key(org_id, &Email::from_trusted(email.to_owned())));
        }
        let entries = self.backend().scan(range).await?;
        let mut users = Vec::new();
        for (key, _) in entries.iter().take(limit) {
            let email = Email::from_trusted(utf8(&key[prefix.len()..])?);
            users.push(self.get_user(&email).await?);
        }
        paginate(entries, limit, |key, _| {
            let email = utf8(&key[prefix.len()..])?;
            let user = users.iter().find(|u| u.email.as_str() == email).cloned();
            Ok((
                email,
                user.ok_or_else(|| Error::internal("user listed twice"))?,
            ))
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
        change: impl Fn(&mut User) -> Option<RevocationReason> + Send + Sync,
    ) -> Result<UserChange> {
        let now = now();
        let key = email.as_str().as_bytes();
        let prefetch = || {
            vec![
                (Table::Users, key.to_vec()),
                (Table::Meta, META_HEAD.to_vec()),
                audit::head_key(),
            ]
        };
        self.commit(prefetch, |tx| {
            let Some(bytes) = tx.get(Table::Users, key)? else {
                return abort(user_not_found(email));
            };
            let before = lift(decode::<UserRecord>(&bytes).and_then(|r| r.to_user(email.clone())))?;
            let mut user = before.clone();
            let loses_key_for = change(&mut user);
            if user == before {
                return Ok((user, None));
            }
            user.updated = now;
            tx.insert(
                Table::Users,
                key,
                &UserRecord::from_user(&user).encode_to_vec(),
            )?;
            let event = match loses_key_for {
                Some(reason) => revoke_owned_key(tx, &user.org_id, email, reason, now)?,
                None => None,
            };
            let entry = audit::entry(by, action, Some(&user.org_id), email.as_str());
            audit::append(tx, entry.revoking(event.as_ref()))?;
            Ok((user, event))
        })
        .await
    }
}

/// A new org, its record and its folded name, made before its transaction so that a re-run
/// writes the same org (and the bulk loader, `bulk.rs`, can create many in one).
pub(super) struct NewOrg {
    pub org: Org,
    record: Vec<u8>,
    folded: String,
}

impl NewOrg {
    pub fn new(name: Name, edition: Edition) -> Self {
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
        NewOrg {
            org,
            record,
            folded: name.folded(),
        }
    }

    pub fn prefetch(&self) -> Prefetch {
        vec![
            (Table::OrgNames, self.folded.as_bytes().to_vec()),
            audit::head_key(),
        ]
    }

    /// CreateOrg's rule: the name (folded) is not taken; the org, its name and the audit entry.
    pub fn insert(&self, tx: &mut dyn Tx, by: &Caller) -> TxResult<()> {
        let org = &self.org;
        if tx.get(Table::OrgNames, self.folded.as_bytes())?.is_some() {
            return abort(Error::AlreadyExists(format!(
                "an org named \"{}\" already exists",
                org.name
            )));
        }
        tx.insert(
            Table::OrgNames,
            self.folded.as_bytes(),
            org.id.as_str().as_bytes(),
        )?;
        tx.insert(Table::Orgs, org.id.as_str().as_bytes(), &self.record)?;
        let action = AuditAction::OrgCreated;
        audit::append(tx, audit::entry(by, action, Some(&org.id), &org.name))?;
        Ok(())
    }
}

/// A new user and its records, made before its transaction (see [`NewOrg`]).
pub(super) struct NewUser {
    pub user: User,
    record: Vec<u8>,
    index: Vec<u8>,
}

impl NewUser {
    pub fn new(org_id: OrgId, email: Email, display_name: Name, profile: Profile) -> Self {
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
        NewUser {
            user,
            record,
            index,
        }
    }

    pub fn prefetch(&self) -> Prefetch {
        let user = &self.user;
        vec![
            (Table::Orgs, user.org_id.as_str().as_bytes().to_vec()),
            (Table::Users, user.email.as_str().as_bytes().to_vec()),
            audit::head_key(),
        ]
    }

    /// CreateUser's rule: the org exists and the email is not taken; the user, the org's
    /// index of it and the audit entry.
    pub fn insert(&self, tx: &mut dyn Tx, by: &Caller) -> TxResult<()> {
        let user = &self.user;
        if tx
            .get(Table::Orgs, user.org_id.as_str().as_bytes())?
            .is_none()
        {
            return abort(org_not_found(&user.org_id));
        }
        if tx
            .get(Table::Users, user.email.as_str().as_bytes())?
            .is_some()
        {
            return abort(Error::AlreadyExists(format!(
                "a user with email {} already exists",
                user.email
            )));
        }
        tx.insert(Table::Users, user.email.as_str().as_bytes(), &self.record)?;
        tx.insert(Table::OrgUsers, &self.index, &[])?;
        let action = AuditAction::UserCreated;
        let entry = audit::entry(by, action, Some(&user.org_id), user.email.as_str());
        audit::append(tx, entry)?;
        Ok(())
    }
}

/// Collects up to `limit` items and says where the next page starts if more remain.
fn paginate<T>(
    entries: Vec<Entry>,
    limit: usize,
    mut item: impl FnMut(&[u8], &[u8]) -> Result<(String, T)>,
) -> Result<Page<T>> {
    let mut items = Vec::new();
    let mut last = None;
    for (key, value) in entries {
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

/// Revokes the org's active key if `owner` owns it, in the caller's transaction.
fn revoke_owned_key(
    tx: &mut dyn Tx,
    org_id: &OrgId,
    owner: &Email,
    reason: RevocationReason,
    now: std::time::SystemTime,
) -> crate::store::kv::TxResult<Option<RevocationEvent>> {
    match read_org(tx, org_id)? {
        Some(mut org) => revoke_active_key(tx, org_id, &mut org, Some(owner), reason, now),
        None => Ok(None),
    }
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
