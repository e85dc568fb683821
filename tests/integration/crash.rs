//! The crash harness: mixed mutations from several tasks against the real binary, SIGKILL at a
//! random moment, restart, and check that every acknowledged change is there, no revoked key
//! came back, the log is gapless and the store id unchanged.
//!
//! 10 cycles run with the suite; 200 with
//! `cargo test --test integration crash::two_hundred -- --ignored --nocapture`.

use std::{path::Path, time::Duration};

use rand::Rng;
use tonic::Code;
use zsc::proto::*;

use crate::common::*;
use crate::process::{operator_token, spawn_zsc, Clients};

/// Tasks driving mutations at once, one org each.
const WRITERS: usize = 4;

#[tokio::test]
async fn ten_sigkills_lose_no_acknowledged_change_and_revive_no_key() {
    crash_cycles(10).await;
}

#[tokio::test]
#[ignore = "long: 200 kill cycles (see the module doc for the command)"]
async fn two_hundred_sigkills_lose_no_acknowledged_change_and_revive_no_key() {
    crash_cycles(200).await;
}

/// What one writer knows was acknowledged for its org.
#[derive(Default)]
struct OrgModel {
    org_id: String,
    owner: String,
    /// The last key acknowledged as current (None after an acknowledged revocation).
    key: Option<String>,
    /// Keys an acknowledged change revoked: they must never validate again.
    revoked: Vec<String>,
    /// How many of `revoked` an earlier check has validated (later checks sample those).
    revoked_checked: usize,
    /// Users whose creation was acknowledged.
    users: Vec<String>,
    /// Orgs whose creation was acknowledged.
    orgs: Vec<String>,
    /// Acknowledged changes that appended a revocation event since the last check.
    revocations: u64,
    /// A change was in flight when the server died: its outcome is unknown.
    uncertain: bool,
}

async fn crash_cycles(cycles: usize) {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mut models: Vec<OrgModel> = Vec::new();
    let mut store_id = None;
    // Events in the log at the last check.
    let mut baseline = 0;
    for cycle in 0..cycles {
        let logs = work.path().join(format!("cycle-{cycle}"));
        std::fs::create_dir(&logs).unwrap();
        let (mut child, _log, addr) = spawn_zsc(&logs, &serve_args(&data), "info").await;
        let token = operator_token(&data);
        let mut op = Clients::connect(&addr, &token).await;

        let id = check(&mut op, &mut models, &mut baseline, cycle).await;
        assert_eq!(
            store_id.get_or_insert(id.clone()),
            &id,
            "cycle {cycle}: store id"
        );
        if models.is_empty() {
            for writer in 0..WRITERS {
                models.push(new_org(&mut op, &format!("Crash {writer}")).await);
            }
        }

        let kill_after = Duration::from_millis(rand::rng().random_range(20..400));
        let writers: Vec<_> = std::mem::take(&mut models)
            .into_iter()
            .map(|model| {
                let (addr, token) = (addr.clone(), token.clone());
                tokio::spawn(async move { drive(&addr, &token, model).await })
            })
            .collect();
        tokio::time::sleep(kill_after).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        for writer in writers {
            models.push(writer.await.unwrap());
        }
    }
    // A last start to check what the last kill left.
    let logs = work.path().join("final");
    std::fs::create_dir(&logs).unwrap();
    let (_child, _log, addr) = spawn_zsc(&logs, &serve_args(&data), "info").await;
    let mut op = Clients::connect(&addr, &operator_token(&data)).await;
    let id = check(&mut op, &mut models, &mut baseline, cycles).await;
    assert_eq!(store_id.as_ref(), Some(&id), "final: store id");
    let revoked: usize = models.iter().map(|m| m.revoked.len()).sum();
    let users: usize = models.iter().map(|m| m.users.len()).sum();
    println!(
        "{cycles} SIGKILLs survived: {baseline} revocation events gapless, {revoked} revoked keys \
         still dead, {users} acknowledged users kept"
    );
    assert!(
        revoked > cycles,
        "the harness revoked too little to prove anything"
    );
}

fn serve_args(data: &Path) -> Vec<&str> {
    vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]
}

async fn new_org(op: &mut Clients, name: &str) -> OrgModel {
    let (org_id, owner, key) = op.org_with_key(name).await;
    OrgModel {
        org_id,
        owner,
        key: Some(key),
        ..Default::default()
    }
}

/// Checks every model against the restarted server, then brings each org back to a known state
/// (owner active, a known current key). Returns the store id.
async fn check(
    op: &mut Clients,
    models: &mut [OrgModel],
    baseline: &mut u64,
    cycle: usize,
) -> String {
    let (events, store_id) = whole_log(&mut op.keys).await;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event.sequence,
            i as u64 + 1,
            "cycle {cycle}: the log has a gap"
        );
    }
    let acknowledged = *baseline + models.iter().map(|m| m.revocations).sum::<u64>();
    let uncertain = models.iter().filter(|m| m.uncertain).count() as u64;
    let head = events.len() as u64;
    assert!(
        head >= acknowledged && head <= acknowledged + uncertain,
        "cycle {cycle}: the log holds {head} events, {acknowledged} acknowledged, {uncertain} in flight"
    );
    *baseline = head;
    for model in models.iter_mut() {
        model.revocations = 0;
        let older = rand::seq::index::sample(
            &mut rand::rng(),
            model.revoked_checked,
            model.revoked_checked.min(20),
        );
        let to_check = older
            .into_iter()
            .chain(model.revoked_checked..model.revoked.len());
        for index in to_check {
            let key = &model.revoked[index];
            let validation = op.keys.validate_key(validate(&model.owner, key)).await;
            let message = format!("cycle {cycle}: revoked key {index} of {}", model.org_id);
            assert_eq!(
                validation.map(|_| ()).unwrap_err().code(),
                Code::Unauthenticated,
                "{message}"
            );
        }
        model.revoked_checked = model.revoked.len();
        for email in &model.users {
            let request = GetUserRequest {
                email: email.clone(),
            };
            op.users
                .get_user(request)
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged user {email} lost: {e:?}"));
        }
        for org_id in &model.orgs {
            let request = GetOrgRequest {
                org_id: org_id.clone(),
            };
            op.users
                .get_org(request)
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged org {org_id} lost: {e:?}"));
        }
        if let Some(key) = &model.key {
            let validation = op.keys.validate_key(validate(&model.owner, key)).await;
            match validation {
                Ok(_) => {}
                // Only a change in flight at the kill may have revoked it.
                Err(status) if model.uncertain && status.code() == Code::Unauthenticated => {}
                Err(status) => panic!("cycle {cycle}: acknowledged key lost: {status:?}"),
            }
        }
        model.uncertain = false;
        rebase(op, model).await;
    }
    store_id
}

/// Owner active and a fresh known key; the key it replaces joins the revoked keys.
async fn rebase(op: &mut Clients, model: &mut OrgModel) {
    op.users
        .reactivate_user(ReactivateUserRequest {
            email: model.owner.clone(),
        })
        .await
        .unwrap();
    let regenerated = op
        .keys
        .regenerate_key(key_request(&model.org_id, &model.owner).into_regenerate())
        .await;
    let key = match regenerated {
        Ok(response) => {
            model.revocations += 1;
            response.into_inner().key
        }
        Err(status) if status.code() == Code::NotFound => {
            op.keys
                .generate_key(key_request(&model.org_id, &model.owner))
                .await
                .unwrap()
                .into_inner()
                .key
        }
        Err(status) => panic!("rebase: {status:?}"),
    };
    model.revoked.extend(model.key.replace(key));
}

/// Mutations on the model's org until the server dies.
async fn drive(addr: &str, token: &str, mut model: OrgModel) -> OrgModel {
    let mut op = Clients::connect(addr, token).await;
    let mut n = 0u32;
    loop {
        n += 1;
        let choice = rand::rng().random_range(0..10);
        let done = match choice {
            0..=5 => regenerate(&mut op, &mut model).await,
            6 => {
                let tag = rand::rng().random::<u32>();
                let email = format!("u{n}-{tag}@crash.example.com");
                let request = user_request(&model.org_id, &email, Profile::Standard);
                let created = op.users.create_user(request).await.is_ok();
                if created {
                    model.users.push(email);
                }
                created
            }
            7 => {
                let tag = rand::rng().random::<u64>();
                let name = format!("Side {tag}");
                match op.users.create_org(org_request(&name)).await {
                    Ok(org) => {
                        model.orgs.push(org.into_inner().org_id);
                        true
                    }
                    Err(_) => false,
                }
            }
            _ => cycle_owner(&mut op, &mut model).await,
        };
        if !done {
            model.uncertain = true;
            return model;
        }
    }
}

async fn regenerate(op: &mut Clients, model: &mut OrgModel) -> bool {
    let request = key_request(&model.org_id, &model.owner).into_regenerate();
    match op.keys.regenerate_key(request).await {
        Ok(response) => {
            model
                .revoked
                .extend(model.key.replace(response.into_inner().key));
            model.revocations += 1;
            true
        }
        Err(_) => false,
    }
}

/// Deactivates the owner (revoking the key), reactivates them and generates a new key.
async fn cycle_owner(op: &mut Clients, model: &mut OrgModel) -> bool {
    let email = model.owner.clone();
    if op
        .users
        .deactivate_user(DeactivateUserRequest {
            email: email.clone(),
        })
        .await
        .is_err()
    {
        return false;
    }
    model.revoked.extend(model.key.take());
    model.revocations += 1;
    if op
        .users
        .reactivate_user(ReactivateUserRequest { email })
        .await
        .is_err()
    {
        return false;
    }
    match op
        .keys
        .generate_key(key_request(&model.org_id, &model.owner))
        .await
    {
        Ok(response) => {
            model.key = Some(response.into_inner().key);
            true
        }
        Err(_) => false,
    }
}

fn org_request(name: &str) -> CreateOrgRequest {
    CreateOrgRequest {
        name: name.into(),
        edition: Edition::Enterprise as i32,
    }
}

fn user_request(org_id: &str, email: &str, profile: Profile) -> CreateUserRequest {
    CreateUserRequest {
        org_id: org_id.into(),
        email: email.into(),
        display_name: "Crash Test".into(),
        profile: profile as i32,
    }
}

fn key_request(org_id: &str, actor: &str) -> GenerateKeyRequest {
    GenerateKeyRequest {
        org_id: org_id.into(),
        actor_email: actor.into(),
    }
}

trait IntoRegenerate {
    fn into_regenerate(self) -> RegenerateKeyRequest;
}

impl IntoRegenerate for GenerateKeyRequest {
    fn into_regenerate(self) -> RegenerateKeyRequest {
        RegenerateKeyRequest {
            org_id: self.org_id,
            actor_email: self.actor_email,
        }
    }
}

fn validate(email: &str, key: &str) -> ValidateKeyRequest {
    ValidateKeyRequest {
        email: email.into(),
        key: key.into(),
    }
}
