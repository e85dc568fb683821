//! The store conformance suite: every rule, checked through `Store`'s own methods, once per
//! backend. [`conformance_suite!`] writes the tests; each backend instantiates it with a
//! constructor of fresh, empty stores (sled: a temp dir; etcd: a fresh prefix on a real
//! cluster), so both backends are held to the same tests, not to copies of them.

use std::sync::Arc;

use crate::domain::{
    AccountName, AuditFilter, Caller, Edition, Email, Name, OrgId, Profile, ZscKey,
};
use crate::store::{GeneratedKey, KeyMode, Store, BOOTSTRAP_OPERATOR};

/// A fresh store and whatever must live as long as it (a temp dir, a cluster).
pub(crate) struct Fresh {
    pub store: Store,
    pub _guard: Box<dyn std::any::Any + Send>,
}

pub(crate) fn by() -> Caller {
    Caller::cli()
}

pub(crate) fn email(s: &str) -> Email {
    Email::parse("email", s).unwrap()
}

pub(crate) fn consumer() -> AccountName {
    AccountName::from_trusted("recruit".into())
}

/// An org with an active administrator (and a second administrator), as the tests need.
pub(crate) async fn org_with_admins(store: &Store, name: &str) -> (OrgId, Email, Email) {
    let org = store
        .create_org(&by(), Name::parse("name", name).unwrap(), Edition::Free)
        .await
        .unwrap();
    let ada = email(&format!("ada@{}.example", name.to_lowercase()));
    let bob = email(&format!("bob@{}.example", name.to_lowercase()));
    for user in [&ada, &bob] {
        store
            .create_user(
                &by(),
                org.id.clone(),
                user.clone(),
                Name::parse("display_name", "A").unwrap(),
                Profile::Administrator,
            )
            .await
            .unwrap();
    }
    (org.id, ada, bob)
}

/// The org's first key, made by `admin`.
pub(crate) async fn new_key(store: &Store, org: &OrgId, admin: &Email) -> GeneratedKey {
    store
        .generate_key(&by(), org, admin, KeyMode::New)
        .await
        .unwrap()
}

/// A pair's usage row as stores made before one row per key saved it.
pub(crate) fn usage_row_from_before(validations: u64, last_us: i64) -> Vec<u8> {
    use prost::Message;
    crate::store::records::UsageRecord {
        validations,
        last_us,
    }
    .encode_to_vec()
}

pub(crate) async fn validates(store: &Store, owner: &Email, key: &ZscKey) -> bool {
    store.validate_key(owner, key, &consumer()).await.is_ok()
}

pub(crate) async fn trail(store: &Store) -> Vec<crate::domain::AuditEvent> {
    let mut page = store
        .list_audit(&AuditFilter::default(), None, 1000)
        .await
        .unwrap()
        .items;
    page.reverse();
    page
}

/// Writes the suite for one backend: `$fresh` is an async fn returning a [`Fresh`] store.
macro_rules! conformance_suite {
    ($fresh:path) => {
        use $crate::domain::*;
        use $crate::store::conformance::*;
        use $crate::store::KeyMode;

        #[tokio::test]
        async fn a_new_store_has_an_id_and_one_operator_whose_token_authenticates() {
            let fresh = $fresh().await;
            assert!(fresh.store.store_id().starts_with("st_"));
            let accounts = fresh.store.list_accounts().await.unwrap();
            assert_eq!(accounts.len(), 1);
            assert_eq!(accounts[0].role, Role::Operator);
            let token = AccountToken::generate();
            fresh.store.reset_operator_token(&token).await.unwrap();
            let caller = fresh.store.authenticate(&token).unwrap();
            assert_eq!(caller.name.as_str(), BOOTSTRAP_OPERATOR_NAME);
        }

        #[tokio::test]
        async fn org_names_are_unique_whatever_their_case() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let name = |s| Name::parse("name", s).unwrap();
            store
                .create_org(&by(), name("Acme"), Edition::Free)
                .await
                .unwrap();
            let again = store.create_org(&by(), name("ACME"), Edition::Free).await;
            assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
            assert_eq!(store.list_orgs(None, 10).await.unwrap().items.len(), 1);
        }

        #[tokio::test]
        async fn user_emails_are_unique_and_users_need_an_org() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (org, ada, _) = org_with_admins(store, "Acme").await;
            let display = || Name::parse("display_name", "A").unwrap();
            let again = store
                .create_user(
                    &by(),
                    org.clone(),
                    ada.clone(),
                    display(),
                    Profile::Standard,
                )
                .await;
            assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
            let orphan = store
                .create_user(
                    &by(),
                    OrgId::generate(),
                    email("x@y.example"),
                    display(),
                    Profile::Standard,
                )
                .await;
            assert!(matches!(orphan, Err(Error::NotFound(_))), "{orphan:?}");
            let page = store.list_users(&org, None, 1).await.unwrap();
            assert_eq!(page.items.len(), 1);
            let rest = store
                .list_users(&org, page.next_after.as_deref(), 10)
                .await
                .unwrap();
            assert_eq!(rest.items.len(), 1);
            assert_eq!(rest.next_after, None);
        }

        #[tokio::test]
        async fn the_generate_and_regenerate_matrix() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (org, ada, bob) = org_with_admins(store, "Acme").await;
            let none = store
                .generate_key(&by(), &org, &ada, KeyMode::Replace)
                .await;
            assert!(matches!(none, Err(Error::NotFound(_))), "{:?}", none.err());
            let first = new_key(store, &org, &ada).await;
            assert!(first.replaced.is_none());
            let twice = store.generate_key(&by(), &org, &ada, KeyMode::New).await;
            assert!(
                matches!(twice, Err(Error::AlreadyExists(_))),
                "{:?}",
                twice.err()
            );
            let stranger = email("eve@else.example");
            let denied = store
                .generate_key(&by(), &org, &stranger, KeyMode::Replace)
                .await;
            assert!(
                matches!(denied, Err(Error::PermissionDenied(_))),
                "{:?}",
                denied.err()
            );
            let missing = store
                .generate_key(&by(), &OrgId::generate(), &ada, KeyMode::New)
                .await;
            assert!(
                matches!(missing, Err(Error::NotFound(_))),
                "{:?}",
                missing.err()
            );

            let second = store
                .generate_key(&by(), &org, &bob, KeyMode::Replace)
                .await
                .unwrap();
            let replaced = second.replaced.expect("the old key was revoked");
            assert_eq!(replaced.sequence, 1);
            assert_eq!(replaced.reason, RevocationReason::Regenerated);
            assert_eq!(replaced.key_id, first.info.key_id);
            assert!(!validates(store, &ada, &first.key).await, "old key revived");
            assert!(validates(store, &bob, &second.key).await);
            assert_eq!(
                store.key_info(&org).await.unwrap().key_id,
                second.info.key_id
            );
            let validation = store
                .validate_key(&bob, &second.key, &consumer())
                .await
                .unwrap();
            assert_eq!(validation.sequence, 1);
            assert_eq!(validation.org.id, org);
            // The right key with the wrong email fails like any other failure.
            let wrong = store.validate_key(&ada, &second.key, &consumer()).await;
            assert!(matches!(wrong, Err(Error::Unauthenticated(_))), "{wrong:?}");
        }

        #[tokio::test]
        async fn revoking_a_key_logs_it_and_a_second_revoke_finds_none() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (org, ada, _) = org_with_admins(store, "Acme").await;
            let generated = new_key(store, &org, &ada).await;
            let event = store.revoke_key(&by(), &org).await.unwrap();
            assert_eq!(
                (event.sequence, event.reason),
                (1, RevocationReason::Revoked)
            );
            assert!(!validates(store, &ada, &generated.key).await);
            let again = store.revoke_key(&by(), &org).await;
            assert!(matches!(again, Err(Error::NotFound(_))), "{again:?}");
            let log = $crate::store::EventLog::new(store.clone());
            wait_for_head(&log, 1).await;
            let events = log.read(0, 1, 10).unwrap();
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].key_id, generated.info.key_id);
            assert_eq!(log.first_retained().unwrap(), Some(1));
        }

        #[tokio::test]
        async fn demoting_or_deactivating_the_owner_revokes_the_key_and_no_one_else_does() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (org, ada, bob) = org_with_admins(store, "Acme").await;
            let key = new_key(store, &org, &ada).await;
            // Bob is not the owner: demoting him revokes nothing.
            let (_, none) = store
                .update_user_profile(&by(), &bob, Profile::Standard)
                .await
                .unwrap();
            assert!(none.is_none());
            assert!(validates(store, &ada, &key.key).await);
            let (_, event) = store
                .update_user_profile(&by(), &ada, Profile::Standard)
                .await
                .unwrap();
            assert_eq!(event.unwrap().reason, RevocationReason::OwnerDemoted);
            assert!(!validates(store, &ada, &key.key).await);

            store
                .update_user_profile(&by(), &ada, Profile::Administrator)
                .await
                .unwrap();
            let key = new_key(store, &org, &ada).await;
            let (user, event) = store.deactivate_user(&by(), &ada).await.unwrap();
            assert_eq!(user.status, UserStatus::Deactivated);
            assert_eq!(event.unwrap().reason, RevocationReason::OwnerDeactivated);
            // Reactivating does not bring the key back.
            let (_, none) = store.reactivate_user(&by(), &ada).await.unwrap();
            assert!(none.is_none());
            assert!(
                !validates(store, &ada, &key.key).await,
                "a revoked key revived"
            );
        }

        #[tokio::test]
        async fn a_change_that_changes_nothing_writes_and_audits_nothing() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (_, ada, _) = org_with_admins(store, "Acme").await;
            let before = trail(store).await.len();
            let (user, event) = store.reactivate_user(&by(), &ada).await.unwrap();
            assert!(event.is_none());
            assert_eq!(user.updated, store.get_user(&ada).await.unwrap().updated);
            let (_, event) = store
                .update_user_profile(&by(), &ada, Profile::Administrator)
                .await
                .unwrap();
            assert!(event.is_none());
            assert_eq!(trail(store).await.len(), before, "a no-op was audited");
        }

        #[tokio::test]
        async fn the_last_operator_cannot_be_deleted() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let operator = AccountName::from_trusted(BOOTSTRAP_OPERATOR_NAME.into());
            let last = store.delete_account(&by(), &operator).await;
            assert!(
                matches!(last, Err(Error::FailedPrecondition(_))),
                "{last:?}"
            );
            let second = AccountName::parse("ops-2").unwrap();
            let (_, token) = store
                .create_account(&by(), second.clone(), Role::Operator)
                .await
                .unwrap();
            let twice = store
                .create_account(&by(), second.clone(), Role::Consumer)
                .await;
            assert!(matches!(twice, Err(Error::AlreadyExists(_))), "{twice:?}");
            store.delete_account(&by(), &operator).await.unwrap();
            let last = store.delete_account(&by(), &second).await;
            assert!(
                matches!(last, Err(Error::FailedPrecondition(_))),
                "{last:?}"
            );
            assert!(store.authenticate(&token).is_ok());
            // The recovery path re-creates the operator account.
            store
                .reset_operator_token(&AccountToken::generate())
                .await
                .unwrap();
            store.delete_account(&by(), &second).await.unwrap();
            wait_until(|| store.authenticate(&token).is_err()).await;
        }

        #[tokio::test]
        async fn the_accounts_generation_moves_with_every_account_change_and_no_other() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let mut seen = store.accounts_generation();
            let mut moved = |what: &str| {
                let now = store.accounts_generation();
                let moved = now != seen;
                seen = now;
                assert!(moved, "{what} did not move the accounts generation");
            };
            let name = AccountName::parse("desk").unwrap();
            store
                .create_account(&by(), name.clone(), Role::Consumer)
                .await
                .unwrap();
            moved("creating an account");
            store
                .reset_operator_token(&AccountToken::generate())
                .await
                .unwrap();
            moved("replacing the operator's token");
            store.delete_account(&by(), &name).await.unwrap();
            moved("deleting an account");
            // Other changes (the revocation streams' hot path) leave it where it is.
            let (org, ada, _) = org_with_admins(store, "Acme").await;
            for mode in [KeyMode::New, KeyMode::Replace] {
                store.generate_key(&by(), &org, &ada, mode).await.unwrap();
            }
            assert_eq!(store.accounts_generation(), seen, "a key change moved it");
        }

        #[tokio::test]
        async fn concurrent_regenerations_leave_both_logs_gapless() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (org, ada, _) = org_with_admins(store, "Acme").await;
            new_key(store, &org, &ada).await;
            let before = trail(store).await.len() as u64;
            let rounds = 40;
            let tasks: Vec<_> = (0..rounds)
                .map(|_| {
                    let (store, org, ada) = (store.clone(), org.clone(), ada.clone());
                    tokio::spawn(async move {
                        store
                            .generate_key(&by(), &org, &ada, KeyMode::Replace)
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let mut sequences = Vec::new();
            for task in tasks {
                let generated = task.await.unwrap();
                sequences.push(generated.replaced.unwrap().sequence);
            }
            sequences.sort();
            assert_eq!(sequences, (1..=rounds).collect::<Vec<u64>>());
            let log = $crate::store::EventLog::new(store.clone());
            wait_for_head(&log, rounds).await;
            let events = log.read(0, rounds, 1000).unwrap();
            let logged: Vec<u64> = events.iter().map(|e| e.sequence).collect();
            assert_eq!(logged, (1..=rounds).collect::<Vec<u64>>());
            let audit = trail(store).await;
            let audited: Vec<u64> = audit.iter().map(|e| e.sequence).collect();
            assert_eq!(audited, (1..=before + rounds).collect::<Vec<u64>>());
            // Exactly one key is alive: the one whose regeneration committed last.
            let alive = store.key_info(&org).await.unwrap();
            let revoked: std::collections::HashSet<_> =
                events.iter().map(|e| e.key_id.clone()).collect();
            assert!(!revoked.contains(&alive.key_id));
            assert_eq!(revoked.len() as u64, rounds);
        }

        #[tokio::test]
        async fn every_change_is_audited_once_with_its_revocation() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (org, ada, _) = org_with_admins(store, "Acme").await;
            new_key(store, &org, &ada).await;
            store
                .generate_key(&by(), &org, &ada, KeyMode::Replace)
                .await
                .unwrap();
            let refused = store.generate_key(&by(), &org, &ada, KeyMode::New).await;
            assert!(refused.is_err());
            let actions: Vec<AuditAction> = trail(store).await.iter().map(|e| e.action).collect();
            assert_eq!(
                actions,
                [
                    AuditAction::ServiceAccountCreated,
                    AuditAction::OrgCreated,
                    AuditAction::UserCreated,
                    AuditAction::UserCreated,
                    AuditAction::KeyGenerated,
                    AuditAction::KeyRegenerated,
                ]
            );
            let regenerated = trail(store).await.pop().unwrap();
            assert_eq!(regenerated.revocation_sequence, Some(1));
            assert_eq!(regenerated.actor.as_ref(), Some(&ada));
            let by_org = AuditFilter {
                org_id: Some(org),
                ..Default::default()
            };
            let listed = store.list_audit(&by_org, None, 2).await.unwrap();
            assert_eq!(listed.items.len(), 2);
            assert!(listed.next_after.is_some());
        }

        #[tokio::test]
        async fn the_audit_trail_pages_through_an_org_and_everything_newest_first() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (org, _, _) = org_with_admins(store, "Acme").await;
            for i in 0..150 {
                store
                    .create_user(
                        &by(),
                        org.clone(),
                        email(&format!("u{i}@acme.example")),
                        Name::parse("display_name", "U").unwrap(),
                        Profile::Standard,
                    )
                    .await
                    .unwrap();
            }
            // OrgCreated, 2 admins, 150 users: 153 entries of the org, 154 in all.
            let by_org = AuditFilter {
                org_id: Some(org),
                ..Default::default()
            };
            for (filter, total) in [(by_org, 153), (AuditFilter::default(), 154)] {
                let first = store.list_audit(&filter, None, 140).await.unwrap();
                assert_eq!(first.items.len(), 140);
                let before: u64 = first.next_after.as_deref().unwrap().parse().unwrap();
                let rest = store.list_audit(&filter, Some(before), 140).await.unwrap();
                assert_eq!(rest.next_after, None);
                let sequences: Vec<u64> = first
                    .items
                    .iter()
                    .chain(&rest.items)
                    .map(|e| e.sequence)
                    .collect();
                assert_eq!(sequences.len(), total);
                assert!(
                    sequences.windows(2).all(|w| w[0] > w[1]),
                    "newest first, no repeats"
                );
            }
        }

        #[tokio::test]
        async fn a_revocation_is_announced_to_subscribers_before_it_is_answered() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (org, ada, _) = org_with_admins(store, "Acme").await;
            new_key(store, &org, &ada).await;
            let log = $crate::store::EventLog::new(store.clone());
            for round in 1..=200 {
                let generated = store
                    .generate_key(&by(), &org, &ada, KeyMode::Replace)
                    .await
                    .unwrap();
                assert_eq!(generated.replaced.unwrap().sequence, round);
                // No waiting: a subscriber that starts now from the head already has it.
                assert_eq!(log.head().borrow().applied, round);
                assert_eq!(log.read(round - 1, round, 1).unwrap().len(), 1);
            }
        }

        #[tokio::test]
        async fn validations_are_counted_and_saved() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (org, ada, _) = org_with_admins(store, "Acme").await;
            let generated = new_key(store, &org, &ada).await;
            for _ in 0..3 {
                assert!(validates(store, &ada, &generated.key).await);
            }
            store.save_usage().await.unwrap();
            assert!(validates(store, &ada, &generated.key).await);
            let usage = store.key_usage(&generated.info.key_id).await.unwrap();
            assert_eq!(usage.len(), 1);
            assert_eq!(usage[0].validations, 4);
        }

        #[tokio::test]
        async fn a_pair_idle_for_a_save_leaves_memory_and_keeps_its_saved_count() {
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (org, ada, _) = org_with_admins(store, "Acme").await;
            let generated = new_key(store, &org, &ada).await;
            assert!(validates(store, &ada, &generated.key).await);
            store.save_usage().await.unwrap();
            assert_eq!(
                store.inner.usage.unsaved.len(),
                1,
                "validated since the last save"
            );
            store.save_usage().await.unwrap();
            assert_eq!(store.inner.usage.unsaved.len(), 0, "idle for a whole save");
            assert!(validates(store, &ada, &generated.key).await);
            store.save_usage().await.unwrap();
            let usage = store.key_usage(&generated.info.key_id).await.unwrap();
            assert_eq!(usage[0].validations, 2);
        }

        /// Two accounts' counts of one key are saved in one row, and a pair's row as stores
        /// made before that saved it is counted, then folded into the key's row and deleted
        /// by the next save of that pair.
        #[tokio::test]
        async fn usage_is_one_row_per_key_and_a_pair_row_from_before_is_folded_into_it() {
            use $crate::store::kv::Range;
            use $crate::store::tables::Table;
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (org, ada, _) = org_with_admins(store, "Acme").await;
            let generated = new_key(store, &org, &ada).await;
            let key_id = generated.info.key_id.as_str().as_bytes().to_vec();
            let old_pair = [&key_id[..], b"\0books"].concat();
            let old_row = usage_row_from_before(5, 1_700_000_000_000_000);
            store
                .backend()
                .transact(|| vec![], |tx| tx.insert(Table::Usage, &old_pair, &old_row))
                .await
                .unwrap();
            let desk = AccountName::parse("desk").unwrap();
            let books = AccountName::parse("books").unwrap();
            for consumer in [&desk, &books, &books] {
                store
                    .validate_key(&ada, &generated.key, consumer)
                    .await
                    .unwrap();
            }
            let counts = |usage: Vec<KeyUsage>| {
                let mut counts: Vec<(String, u64)> = usage
                    .into_iter()
                    .map(|u| (u.consumer.as_str().to_owned(), u.validations))
                    .collect();
                counts.sort();
                counts
            };
            let expected = vec![("books".to_owned(), 7), ("desk".to_owned(), 1)];
            let usage = store.key_usage(&generated.info.key_id).await.unwrap();
            assert_eq!(counts(usage), expected, "before the save");
            store.save_usage().await.unwrap();
            let usage = store.key_usage(&generated.info.key_id).await.unwrap();
            assert_eq!(counts(usage), expected, "after it");
            let rows = store
                .backend()
                .scan(Range::prefix(Table::Usage, &key_id))
                .await
                .unwrap();
            let keys: Vec<Vec<u8>> = rows.into_iter().map(|(key, _)| key).collect();
            assert_eq!(
                keys,
                vec![key_id.clone()],
                "one row for the key, the pair's gone"
            );
        }

        #[tokio::test]
        async fn confirmations_are_flushed_keep_the_first_receipt_and_are_pruned() {
            use $crate::store::RevocationRef;
            let fresh = $fresh().await;
            let store = &fresh.store;
            let (org, ada, _) = org_with_admins(store, "Acme").await;
            let mut revoked = Vec::new();
            for _ in 0..2 {
                new_key(store, &org, &ada).await;
                revoked.push(store.revoke_key(&by(), &org).await.unwrap());
            }
            let log = $crate::store::EventLog::new(store.clone());
            wait_for_head(&log, 2).await;
            let (desk, books) = (
                AccountName::parse("desk").unwrap(),
                AccountName::parse("books").unwrap(),
            );
            let id = store.store_id().to_owned();
            assert!(matches!(
                store.report_applied(&desk, 3, &id),
                Err(Error::OutOfRange(_))
            ));
            assert!(matches!(
                store.report_applied(&desk, 1, "st_other"),
                Err(Error::FailedPrecondition(_))
            ));
            let first = store.report_applied(&desk, 1, &id).unwrap();
            store.flush_confirmations().await.unwrap();
            let second = store.report_applied(&desk, 2, &id).unwrap();
            let _streaming = store.stream_presence(&books);
            store.flush_confirmations().await.unwrap();

            let one = store
                .revocation_confirmations(&RevocationRef::Sequence(1))
                .await
                .unwrap();
            assert_eq!(one.revocation, revoked[0]);
            assert_eq!(one.confirmed.len(), 1);
            assert_eq!(
                (
                    one.confirmed[0].service.as_str(),
                    one.confirmed[0].confirmed
                ),
                ("desk", first)
            );
            assert_eq!(
                one.pending
                    .iter()
                    .map(|p| (p.service.as_str(), p.applied))
                    .collect::<Vec<_>>(),
                [("books", 0)]
            );
            let by_key = RevocationRef::KeyId(revoked[1].key_id.clone());
            let two = store.revocation_confirmations(&by_key).await.unwrap();
            assert_eq!(two.revocation.sequence, 2);
            assert_eq!(two.confirmed[0].confirmed, second);
            assert_eq!(
                two.confirmed[0].lag,
                $crate::store::lag_after(&revoked[1], second)
            );

            // A later report of an already confirmed sequence keeps the first receipt; as the
            // latest report it also says the service is back at 1 (an instance behind).
            store.report_applied(&desk, 1, &id).unwrap();
            store.flush_confirmations().await.unwrap();
            let one_again = store
                .revocation_confirmations(&RevocationRef::Sequence(1))
                .await
                .unwrap();
            assert_eq!(one_again.confirmed[0].confirmed, first);
            let two_again = store.revocation_confirmations(&by_key).await.unwrap();
            assert!(two_again.confirmed.is_empty());
            assert_eq!(
                two_again
                    .pending
                    .iter()
                    .map(|p| (p.service.as_str(), p.applied))
                    .collect::<Vec<_>>(),
                [("books", 0), ("desk", 1)]
            );

            assert_eq!(store.prune_confirmations(2).await.unwrap(), 1);
            assert!(store
                .first_confirmation(&desk, 1)
                .await
                .unwrap()
                .is_some_and(|t| t > first));
            let unknown = store
                .revocation_confirmations(&RevocationRef::Sequence(3))
                .await;
            assert!(matches!(unknown, Err(Error::NotFound(_))), "{unknown:?}");
        }
    };
}
pub(crate) use conformance_suite;

pub(crate) const BOOTSTRAP_OPERATOR_NAME: &str = BOOTSTRAP_OPERATOR;

/// Waits (bounded) until the log's durable head reaches `head`.
pub(crate) async fn wait_for_head(log: &crate::store::EventLog, head: u64) {
    let mut rx = log.head();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        rx.wait_for(|h| h.applied >= head),
    )
    .await
    .expect("the durable head reaches the log's head")
    .expect("the store is alive");
}

/// Waits (bounded) until `done` holds: replica-local state follows the store a moment later.
pub(crate) async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("condition not reached in 5 s");
}

/// Fresh sled stores, in temp dirs.
pub(crate) async fn fresh_sled() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let options = crate::store::StoreOptions {
        cache_bytes: 8 * 1024 * 1024,
    };
    let store = Store::open(dir.path(), &options).unwrap().store;
    Fresh {
        store,
        _guard: Box::new(Arc::new(dir)),
    }
}

mod sled {
    super::conformance_suite!(crate::store::conformance::fresh_sled);
}

/// Fresh etcd stores: a one-member cluster of their own (a real etcd), under the default prefix.
#[cfg(feature = "etcd")]
pub(crate) async fn fresh_etcd() -> Fresh {
    let cluster = tokio::task::spawn_blocking(|| crate::testing::EtcdCluster::start(1))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = cluster.url("/conformance").parse().unwrap();
    let store = Store::open_etcd(&url, dir.path()).await.unwrap().store;
    Fresh {
        store,
        _guard: Box::new((cluster, dir)),
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    super::conformance_suite!(crate::store::conformance::fresh_etcd);
}
