//! The validation view answers what the store answers: random sequences of changes through
//! the rules, and after each step every key and token checked twice, from memory (what
//! ValidateKey and caller authentication read) and by reading the tables; on both backends.
//! Also: an answer's `sequence` is never below a revocation acknowledged before the call.

use proptest::prelude::*;

use super::conformance::{by, consumer, email, Fresh};
use super::kv::{lift, Tx, TxResult};
use super::records::{decode, AccountRecord, KeyRecord};
use super::rules::keys::may_hold_key;
use super::rules::revocation::read_org;
use super::tables::Table;
use super::{KeyMode, Store};
use crate::domain::{
    AccountName, AccountToken, Edition, Email, Name, OrgId, Profile, Role, ZscKey,
};

const ORGS: usize = 2;
const USERS: usize = 2;
const ACCOUNTS: usize = 2;

#[derive(Clone, Debug)]
enum Op {
    Generate(usize, usize),
    Regenerate(usize, usize),
    Revoke(usize),
    Deactivate(usize, usize),
    Reactivate(usize, usize),
    Demote(usize, usize),
    Promote(usize, usize),
    CreateAccount(usize),
    DeleteAccount(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let (o, u, a) = (0..ORGS, 0..USERS, 0..ACCOUNTS);
    prop_oneof![
        3 => (o.clone(), u.clone()).prop_map(|(o, u)| Op::Generate(o, u)),
        3 => (o.clone(), u.clone()).prop_map(|(o, u)| Op::Regenerate(o, u)),
        2 => o.clone().prop_map(Op::Revoke),
        2 => (o.clone(), u.clone()).prop_map(|(o, u)| Op::Deactivate(o, u)),
        2 => (o.clone(), u.clone()).prop_map(|(o, u)| Op::Reactivate(o, u)),
        2 => (o.clone(), u.clone()).prop_map(|(o, u)| Op::Demote(o, u)),
        2 => (o, u).prop_map(|(o, u)| Op::Promote(o, u)),
        1 => a.clone().prop_map(Op::CreateAccount),
        1 => a.prop_map(Op::DeleteAccount),
    ]
}

/// One case's world: its orgs and users (named after the case, so cases can share a store),
/// every key generated and every token handed out.
struct World {
    case: usize,
    orgs: Vec<OrgId>,
    users: Vec<Vec<Email>>,
    keys: Vec<ZscKey>,
    tokens: Vec<(usize, AccountToken)>,
    /// The highest log sequence of a revocation acknowledged so far.
    acknowledged: u64,
}

impl World {
    async fn create(store: &Store, case: usize) -> World {
        let mut world = World {
            case,
            orgs: Vec::new(),
            users: Vec::new(),
            keys: Vec::new(),
            tokens: Vec::new(),
            acknowledged: 0,
        };
        for o in 0..ORGS {
            let name = Name::parse("name", &format!("Case {case} org {o}")).unwrap();
            let org = store.create_org(&by(), name, Edition::Free).await.unwrap();
            let mut users = Vec::new();
            for u in 0..USERS {
                let user = email(&format!("u{u}@c{case}o{o}.example"));
                let display = Name::parse("display_name", "U").unwrap();
                let profile = Profile::Administrator;
                store
                    .create_user(&by(), org.id.clone(), user.clone(), display, profile)
                    .await
                    .unwrap();
                users.push(user);
            }
            world.orgs.push(org.id);
            world.users.push(users);
        }
        world
    }

    fn account(&self, a: usize) -> AccountName {
        AccountName::parse(&format!("c{}-a{a}", self.case)).unwrap()
    }

    /// Applies one change through the rules; refusals are part of the game.
    async fn step(&mut self, store: &Store, op: &Op) {
        let user = |o: usize, u: usize| self.users[o][u].clone();
        let revoked = match op {
            Op::Generate(o, u) | Op::Regenerate(o, u) => {
                let mode = match op {
                    Op::Generate(..) => KeyMode::New,
                    _ => KeyMode::Replace,
                };
                let actor = user(*o, *u);
                match store
                    .generate_key(&by(), &self.orgs[*o], &actor, mode)
                    .await
                {
                    Ok(generated) => {
                        self.keys.push(generated.key);
                        generated.replaced
                    }
                    Err(_) => None,
                }
            }
            Op::Revoke(o) => store.revoke_key(&by(), &self.orgs[*o]).await.ok(),
            Op::Deactivate(o, u) => {
                let change = store.deactivate_user(&by(), &user(*o, *u)).await;
                change.ok().and_then(|(_, event)| event)
            }
            Op::Reactivate(o, u) => {
                let change = store.reactivate_user(&by(), &user(*o, *u)).await;
                change.ok().and_then(|(_, event)| event)
            }
            Op::Demote(o, u) | Op::Promote(o, u) => {
                let profile = match op {
                    Op::Demote(..) => Profile::Standard,
                    _ => Profile::Administrator,
                };
                let (caller, email) = (by(), user(*o, *u));
                let change = store.update_user_profile(&caller, &email, profile).await;
                change.ok().and_then(|(_, event)| event)
            }
            Op::CreateAccount(a) => {
                let caller = by();
                let made = store.create_account(&caller, self.account(*a), Role::Consumer);
                if let Ok((_, token)) = made.await {
                    self.tokens.push((*a, token));
                }
                None
            }
            Op::DeleteAccount(a) => {
                let _ = store.delete_account(&by(), &self.account(*a)).await;
                None
            }
        };
        if let Some(event) = revoked {
            self.acknowledged = self.acknowledged.max(event.sequence);
        }
    }

    /// Every key with every email, and every token: memory against the tables.
    async fn check(&self, store: &Store, after: &Op) {
        let emails: Vec<&Email> = self.users.iter().flatten().collect();
        for key in &self.keys {
            for email in &emails {
                let served = store.validate_key(email, key, &consumer()).await;
                let read = read_validation(store, email, key).await;
                let served_facts = served.as_ref().ok().map(|v| {
                    assert!(
                        v.sequence >= self.acknowledged,
                        "after {after:?}: answered at head {} below an acknowledged \
                         revocation at {}",
                        v.sequence,
                        self.acknowledged
                    );
                    let org = (v.org.id.to_string(), v.org.name.clone(), v.org.edition);
                    (org, v.key_id.to_string(), v.owner.to_string())
                });
                assert_eq!(served_facts, read, "after {after:?}: {email}");
            }
        }
        for (a, token) in &self.tokens {
            let served = store
                .barrier()
                .await
                .ok()
                .and(store.authenticate(token).ok());
            let served = served.map(|caller| caller.name.to_string());
            let read = read_holder(store, token).await;
            assert_eq!(served, read, "after {after:?}: account {a}'s token");
        }
    }
}

type Facts = ((String, String, Edition), String, String);

/// ValidateKey's answer as the tables say it, read in one transaction (on etcd, one snapshot).
async fn read_validation(store: &Store, email: &Email, key: &ZscKey) -> Option<Facts> {
    let hash = key.hash();
    let read = |tx: &mut dyn Tx| -> TxResult<Option<Facts>> {
        let Some(record) = tx.get(Table::Keys, &hash.0)? else {
            return Ok(None);
        };
        let info = lift(decode::<KeyRecord>(&record))?.to_info();
        if info.owner != *email || !may_hold_key(tx, email, &info.org_id)? {
            return Ok(None);
        }
        let Some(org) = read_org(tx, &info.org_id)? else {
            return Ok(None);
        };
        let org = lift(org.to_org(info.org_id.clone()))?;
        let org = (org.id.to_string(), org.name, org.edition);
        Ok(Some((org, info.key_id.to_string(), info.owner.to_string())))
    };
    store.backend().read(Vec::new, read).await.unwrap()
}

/// Who holds `token`, as the tables say it.
async fn read_holder(store: &Store, token: &AccountToken) -> Option<String> {
    let hash = token.hash();
    let read = |tx: &mut dyn Tx| -> TxResult<Option<String>> {
        let Some(name) = tx.get(Table::Tokens, &hash.0)? else {
            return Ok(None);
        };
        let Some(record) = tx.get(Table::Accounts, &name)? else {
            return Ok(None);
        };
        let record = lift(decode::<AccountRecord>(&record))?;
        Ok((record.token_hash == hash.0).then(|| String::from_utf8(name).unwrap()))
    };
    store.backend().read(Vec::new, read).await.unwrap()
}

/// Runs `cases` random sequences on one store of the kind `fresh` makes (each case in orgs
/// and accounts of its own), checking after every step.
type MakeStore = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Fresh> + Send>>;

fn view_matches_store(fresh: MakeStore, cases: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fresh = runtime.block_on(fresh());
    let store = fresh.store.clone();
    let case = std::sync::atomic::AtomicUsize::new(0);
    let config = ProptestConfig {
        cases,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let ops = proptest::collection::vec(op(), 1..24);
    let outcome = runner.run(&ops, |ops| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        runtime.block_on(async {
            let mut world = World::create(&store, case).await;
            for op in &ops {
                world.step(&store, op).await;
                world.check(&store, op).await;
            }
        });
        Ok(())
    });
    drop(store);
    drop(fresh);
    outcome.unwrap();
}

#[test]
fn on_sled_the_view_answers_what_the_store_answers() {
    view_matches_store(|| Box::pin(super::conformance::fresh_sled()), 48);
}

#[cfg(feature = "etcd")]
#[test]
fn on_etcd_the_view_answers_what_the_store_answers() {
    view_matches_store(|| Box::pin(super::conformance::fresh_etcd()), 16);
}
