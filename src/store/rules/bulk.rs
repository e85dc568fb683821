//! The bulk loader behind the load bench's store of 1,000,000 keys (issue 9, row 5). Through
//! the API such a store is 3,000,000 durable calls (an org, its administrator, its key); here
//! each org gets the very same rules and records as CreateOrg, CreateUser and GenerateKey
//! (`NewOrg`, `NewUser`, `NewKey`: audit entries included), many orgs to a transaction and
//! one flush per transaction. Not part of the service: nothing but the bench calls it.

use super::keys::{KeyMode, NewKey};
use super::orgs::{NewOrg, NewUser};
use crate::domain::{Caller, Edition, Email, Name, Profile, Result, ZscKey};
use crate::store::handle::Store;

/// One org the loader creates: its name and its administrator, who owns its key.
pub struct BulkOrg {
    pub name: Name,
    pub admin: Email,
}

impl Store {
    /// Creates each of `orgs` with its administrator and an active key, in one transaction
    /// (made durable before it returns), as `by`; returns the keys in the same order. Refused
    /// as a whole, like any transaction, if a rule refuses one of them (a name or an email
    /// already taken).
    #[doc(hidden)]
    pub async fn bulk_orgs_with_keys(
        &self,
        by: &Caller,
        orgs: Vec<BulkOrg>,
    ) -> Result<Vec<ZscKey>> {
        let created: Vec<_> = orgs
            .into_iter()
            .map(|BulkOrg { name, admin }| {
                let org = NewOrg::new(name, Edition::Enterprise);
                let display_name = Name::parse("display_name", "Admin").expect("a valid name");
                let user = NewUser::new(
                    org.org.id.clone(),
                    admin,
                    display_name,
                    Profile::Administrator,
                );
                let key = NewKey::generate(&org.org.id, &user.user.email);
                (org, user, key)
            })
            .collect();
        let prefetch = || {
            created
                .iter()
                .flat_map(|(org, user, key)| [org.prefetch(), user.prefetch(), key.row.prefetch()])
                .flatten()
                .collect()
        };
        self.commit(prefetch, |tx| {
            for (org, user, key) in &created {
                org.insert(tx, by)?;
                user.insert(tx, by)?;
                key.row.store(tx, by, KeyMode::New)?;
            }
            Ok(())
        })
        .await?;
        Ok(created.into_iter().map(|(_, _, key)| key.key).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AuditAction;
    use crate::store::conformance::{by, email, fresh_sled, trail, validates};

    fn bulk(names: &[&str]) -> Vec<BulkOrg> {
        names
            .iter()
            .map(|n| BulkOrg {
                name: Name::parse("name", n).unwrap(),
                admin: email(&format!("admin@{}.example", n.to_lowercase())),
            })
            .collect()
    }

    #[tokio::test]
    async fn bulk_loaded_orgs_are_what_the_single_calls_make() {
        let fresh = fresh_sled().await;
        let store = &fresh.store;
        let keys = store
            .bulk_orgs_with_keys(&by(), bulk(&["Acme", "Globex"]))
            .await
            .unwrap();
        assert_eq!(keys.len(), 2);
        for (key, n) in keys.iter().zip(["acme", "globex"]) {
            let admin = email(&format!("admin@{n}.example"));
            assert!(validates(store, &admin, key).await, "{n}'s key validates");
            let user = store.get_user(&admin).await.unwrap();
            let info = store.key_info(&user.org_id).await.unwrap();
            assert_eq!(info.owner, admin);
        }
        // Audited like the single calls: org, user and key, per org, in order.
        let actions: Vec<_> = trail(store).await.into_iter().map(|e| e.action).collect();
        let per_org = [
            AuditAction::OrgCreated,
            AuditAction::UserCreated,
            AuditAction::KeyGenerated,
        ];
        assert_eq!(actions[actions.len() - 6..], [per_org, per_org].concat());
    }

    #[tokio::test]
    async fn a_batch_with_a_taken_name_is_refused_whole() {
        let fresh = fresh_sled().await;
        let store = &fresh.store;
        store
            .bulk_orgs_with_keys(&by(), bulk(&["Acme"]))
            .await
            .unwrap();
        let refused = store
            .bulk_orgs_with_keys(&by(), bulk(&["Initech", "ACME"]))
            .await;
        assert!(
            refused.is_err(),
            "the name ACME is taken (names are folded)"
        );
        let orgs = store.list_orgs(None, 10).await.unwrap().items;
        assert_eq!(orgs.len(), 1, "nothing of the refused batch was kept");
    }
}
