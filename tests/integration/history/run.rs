//! One recorded run: clients of random operations on a few orgs, a subscriber of the
//! revocation stream moving between replicas and cursors, and a Verifier, all for `length`,
//! while `System::fault` injects one fault after another. Every call has a deadline: a call
//! that does not return in time (a paused server) has an unknown outcome, and so does any
//! error but a definite answer.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use tonic::{transport::Channel, Code, Status};
use zsc::client::Bearer;
use zsc::proto::*;
use zsc::proto::{key_service_client::KeyServiceClient, user_service_client::UserServiceClient};
use zsc::verifier::{Verifier, VerifierConfig};

use super::bound::Answer;
use super::checker::Entry;
use super::model::{Op, Outcome, SecretId, USERS};
use super::stream::{Acked, Session};
use super::target::{Backend, System};
use super::watcher;
use crate::process::Clients;

/// The invocation time of an entry left out of the history (it did nothing, or it was a read
/// that saw nothing); its index still names its secret.
const DROPPED: u64 = u64::MAX;

/// How long a client waits for an answer: past it the outcome is unknown.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The Verifier's `max_staleness` in the runs (its `max_clock_skew` is 200 ms).
pub const MAX_STALENESS: Duration = Duration::from_secs(1);

pub struct Plan {
    pub seed: u64,
    pub backend: Backend,
    pub orgs: usize,
    pub clients_per_org: usize,
    pub length: Duration,
    pub cuts: super::target::Cuts,
}

/// What a run recorded.
pub struct Recorded {
    pub orgs: Vec<OrgHistory>,
    pub sessions: Vec<Session>,
    pub acked: Vec<Acked>,
    /// The log's key ids by sequence, read after the run.
    pub log: Vec<String>,
    /// (invoked, sequence answered) of every successful validation.
    pub validations: Vec<(SystemTime, u64)>,
    pub answers: Vec<Answer>,
    pub faults: Vec<String>,
    /// Calls of unknown outcome, by the first words of their error.
    pub unknown: Vec<String>,
}

pub struct OrgHistory {
    pub org_id: String,
    pub entries: Vec<Entry<Op, Outcome>>,
}

/// One org as the clients share it: the history so far and the secrets it was given.
pub struct Org {
    org_id: String,
    emails: Vec<String>,
    history: Mutex<Vec<Entry<Op, Outcome>>>,
    /// (secret id, key, owner) of every secret learnt (id = index in `history` + 1; 0 is the
    /// key made at setup).
    secrets: Mutex<Vec<(SecretId, String, usize)>>,
}

impl Org {
    /// A recent secret and, mostly, its owner's email (sometimes another user's, which must
    /// never pass).
    fn pick_secret(&self, rng: &mut StdRng, among: usize) -> (SecretId, String, usize) {
        let secrets = self.secrets.lock().unwrap();
        let recent = secrets.len().saturating_sub(among);
        let (secret, key, owner) = secrets[rng.random_range(recent..secrets.len())].clone();
        let user = if rng.random_bool(0.9) {
            owner
        } else {
            rng.random_range(0..USERS)
        };
        (secret, key, user)
    }
}

pub struct Shared {
    clock: Instant,
    orgs: Vec<Arc<Org>>,
    pub acked: Mutex<Vec<Acked>>,
    validations: Mutex<Vec<(SystemTime, u64)>>,
    answers: Mutex<Vec<Answer>>,
    unknown: Mutex<Vec<String>>,
    pub until: Instant,
}

impl Shared {
    /// Microseconds since the run began: the histories' clock.
    pub fn now(&self) -> u64 {
        self.clock.elapsed().as_micros() as u64
    }

    fn unknown(&self, status: &Status) {
        let words: String = status.message().chars().take(48).collect();
        let seen = format!("{:?}: {words}", status.code());
        self.unknown.lock().unwrap().push(seen);
    }
}

/// A channel that connects when first used and reconnects after its server restarts.
pub fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}

pub fn clients(addr: &str, token: &str) -> Clients {
    let channel = channel(addr);
    let bearer = Bearer::new(token).unwrap();
    Clients {
        users: UserServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        keys: KeyServiceClient::with_interceptor(channel, bearer),
    }
}

pub async fn run(plan: &Plan) -> Recorded {
    let mut system = System::start(plan.backend).await;
    let addrs = system.addrs();
    let mut setup = Clients::connect(&addrs[0], &system.token).await;
    let mut orgs = Vec::new();
    for n in 0..plan.orgs {
        orgs.push(Arc::new(setup_org(&mut setup, n).await));
    }
    let shared = Arc::new(Shared {
        clock: Instant::now(),
        orgs,
        acked: Mutex::default(),
        validations: Mutex::default(),
        answers: Mutex::default(),
        unknown: Mutex::default(),
        until: Instant::now() + plan.length,
    });
    let mut tasks = spawn_clients(&shared, plan, &addrs, &system.token);
    tasks.push(tokio::spawn(verify(
        shared.clone(),
        addrs.clone(),
        system.token.clone(),
        plan.seed,
    )));
    let sessions = tokio::spawn(watcher::follow(
        shared.clone(),
        addrs.clone(),
        system.token.clone(),
        plan.seed,
    ));
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut faults = Vec::new();
    while Instant::now() + Duration::from_secs(3) < shared.until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
        let at = shared.now() / 1000;
        faults.push(format!(
            "{} at {at} ms",
            system.fault(&mut rng, plan.cuts).await
        ));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let sessions = sessions.await.unwrap();
    let log = watcher::final_log(&addrs[0], &system.token).await;
    // The barrier's own alarm (`store/etcd/barrier.rs`): a replica's announced head behind
    // the revision its watch applied.
    for line in system.log_lines("lags the revision applied") {
        println!("replica log: {line}");
    }
    drop(system);
    let shared = Arc::try_unwrap(shared).unwrap_or_else(|_| panic!("every task ended"));
    Recorded {
        orgs: shared
            .orgs
            .into_iter()
            .map(|org| OrgHistory {
                org_id: org.org_id.clone(),
                entries: std::mem::take(&mut *org.history.lock().unwrap())
                    .into_iter()
                    .filter(|e| e.invoked != DROPPED)
                    .collect(),
            })
            .collect(),
        sessions,
        acked: shared.acked.into_inner().unwrap(),
        log,
        validations: shared.validations.into_inner().unwrap(),
        answers: shared.answers.into_inner().unwrap(),
        faults,
        unknown: shared.unknown.into_inner().unwrap(),
    }
}

async fn setup_org(op: &mut Clients, n: usize) -> Org {
    let (org_id, first, key) = op.org_with_key(&format!("History {n}")).await;
    let mut emails = vec![first];
    for u in 1..USERS {
        let email = format!("admin{u}@history-{n}.example.com");
        op.users
            .create_user(CreateUserRequest {
                org_id: org_id.clone(),
                email: email.clone(),
                display_name: format!("Admin {u}"),
                profile: Profile::Administrator as i32,
            })
            .await
            .unwrap();
        emails.push(email);
    }
    Org {
        org_id,
        emails,
        history: Mutex::default(),
        secrets: Mutex::new(vec![(0, key, 0)]),
    }
}

/// `clients_per_org` clients per org, spread over the replicas.
fn spawn_clients(
    shared: &Arc<Shared>,
    plan: &Plan,
    addrs: &[String],
    token: &str,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (o, org) in shared.orgs.iter().enumerate() {
        for c in 0..plan.clients_per_org {
            let seed = plan.seed ^ (((o as u64) << 16) | (c as u64 + 1));
            let (shared, org) = (shared.clone(), org.clone());
            let mut clients = clients(&addrs[(o + c) % addrs.len()], token);
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                while Instant::now() < shared.until {
                    let known = one_operation(&shared, &org, &mut clients, &mut rng).await;
                    // After an unknown outcome, wait: a down server is not hammered into a
                    // history of nothing but unknowns.
                    let pause = if known { 5..30 } else { 200..400 };
                    tokio::time::sleep(Duration::from_millis(rng.random_range(pause))).await;
                }
            }));
        }
    }
    tasks
}

/// Picks, runs and records one operation; false if its outcome is unknown.
async fn one_operation(
    shared: &Shared,
    org: &Org,
    clients: &mut Clients,
    rng: &mut StdRng,
) -> bool {
    let user = rng.random_range(0..USERS);
    let (op, key) = match rng.random_range(0..100) {
        0..=44 => {
            let (secret, key, user) = org.pick_secret(rng, 4);
            (Op::Validate { user, secret }, Some(key))
        }
        45..=59 => (
            Op::Regenerate {
                actor: user,
                secret: 0,
            },
            None,
        ),
        60..=65 => (
            Op::Generate {
                actor: user,
                secret: 0,
            },
            None,
        ),
        66..=71 => (Op::Revoke, None),
        72..=79 => (Op::Deactivate(user), None),
        80..=89 => (Op::Reactivate(user), None),
        90..=92 => (Op::Demote(user), None),
        93..=94 => (Op::CreateUser, None),
        _ => (Op::Promote(user), None),
    };
    let (index, op) = invoke(shared, org, op);
    let call = call(shared, org, clients, &op, key, index + 1);
    let returned = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("client timeout")));
    let mut history = org.history.lock().unwrap();
    match classify(&returned) {
        Class::Known(outcome) => history[index].returned = Some((shared.now(), outcome)),
        // A read (or a write the model does not hold) of unknown outcome says nothing; a
        // request that never left did nothing.
        Class::NotApplied => history[index].invoked = DROPPED,
        Class::Unknown if matches!(op, Op::Validate { .. } | Op::CreateUser) => {
            history[index].invoked = DROPPED
        }
        Class::Unknown => {}
    }
    if let (Class::Unknown, Err(status)) = (classify(&returned), &returned) {
        shared.unknown(status);
        return false;
    }
    true
}

/// Records the invocation; a generated secret is named by its operation.
fn invoke(shared: &Shared, org: &Org, op: Op) -> (usize, Op) {
    let mut history = org.history.lock().unwrap();
    let index = history.len();
    let op = match op {
        Op::Generate { actor, .. } => Op::Generate {
            actor,
            secret: index + 1,
        },
        Op::Regenerate { actor, .. } => Op::Regenerate {
            actor,
            secret: index + 1,
        },
        other => other,
    };
    history.push(Entry {
        op: op.clone(),
        invoked: shared.now(),
        returned: None,
    });
    (index, op)
}

enum Class {
    Known(Outcome),
    /// The request never reached a server (its connection could not be made).
    NotApplied,
    Unknown,
}

/// A definite refusal is an outcome; anything else but OK (a timeout, a dead server, an
/// internal error) leaves the outcome unknown.
fn classify(result: &Result<(), Status>) -> Class {
    match result {
        Ok(()) => Class::Known(Outcome::Ok),
        Err(status) => match status.code() {
            Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::Unauthenticated => Class::Known(Outcome::Refused),
            Code::Unavailable if status.message().starts_with("tcp connect error") => {
                Class::NotApplied
            }
            _ => Class::Unknown,
        },
    }
}

async fn call(
    shared: &Shared,
    org: &Org,
    clients: &mut Clients,
    op: &Op,
    key: Option<String>,
    secret_id: SecretId,
) -> Result<(), Status> {
    let org_id = org.org_id.clone();
    let email = |u: usize| org.emails[u].clone();
    match *op {
        Op::Generate { actor, .. } => {
            let request = GenerateKeyRequest {
                org_id,
                actor_email: email(actor),
            };
            let key = clients.keys.generate_key(request).await?.into_inner().key;
            org.secrets.lock().unwrap().push((secret_id, key, actor));
        }
        Op::Regenerate { actor, .. } => {
            let request = RegenerateKeyRequest {
                org_id,
                actor_email: email(actor),
            };
            let key = clients.keys.regenerate_key(request).await?.into_inner().key;
            org.secrets.lock().unwrap().push((secret_id, key, actor));
        }
        Op::Revoke => {
            let request = RevokeKeyRequest { org_id };
            let event = clients.keys.revoke_key(request).await?.into_inner().event;
            let sequence = event.expect("a revocation names its event").sequence;
            let acked = Acked {
                sequence,
                at: SystemTime::now(),
            };
            shared.acked.lock().unwrap().push(acked);
        }
        Op::CreateUser => {
            let email = format!(
                "user{secret_id}@{}",
                org.emails[0].split('@').nth(1).expect("an email")
            );
            let profile = Profile::Standard as i32;
            let display_name = format!("User {secret_id}");
            let request = CreateUserRequest {
                org_id,
                email,
                display_name,
                profile,
            };
            clients.users.create_user(request).await?;
        }
        Op::Deactivate(u) => {
            let request = DeactivateUserRequest { email: email(u) };
            clients.users.deactivate_user(request).await?;
        }
        Op::Reactivate(u) => {
            let request = ReactivateUserRequest { email: email(u) };
            clients.users.reactivate_user(request).await?;
        }
        Op::Demote(u) | Op::Promote(u) => {
            let profile = match op {
                Op::Demote(_) => Profile::Standard,
                _ => Profile::Administrator,
            };
            let request = UpdateUserProfileRequest {
                email: email(u),
                profile: profile as i32,
            };
            clients.users.update_user_profile(request).await?;
        }
        Op::Validate { user, .. } => {
            let invoked = SystemTime::now();
            let request = ValidateKeyRequest {
                email: email(user),
                key: key.expect("a secret"),
            };
            let answer = clients.keys.validate_key(request).await?.into_inner();
            shared
                .validations
                .lock()
                .unwrap()
                .push((invoked, answer.sequence));
        }
    }
    Ok(())
}

/// A Verifier following replica 0 (the others as fallbacks), asked by two tasks about recent
/// secrets, mostly the latest (the one its cache can hold).
async fn verify(shared: Arc<Shared>, addrs: Vec<String>, token: String, seed: u64) {
    let mut config = VerifierConfig::new(format!("http://{}", addrs[0]), token);
    config.fallback_urls = addrs[1..].iter().map(|a| format!("http://{a}")).collect();
    config.max_staleness = MAX_STALENESS;
    config.max_clock_skew = Duration::from_millis(200);
    let verifier = Arc::new(Verifier::start(config).expect("a valid config"));
    let other = tokio::spawn(ask(shared.clone(), verifier.clone(), seed ^ 0xFEED));
    ask(shared, verifier, seed ^ 0xBEEF).await;
    other.await.unwrap();
}

async fn ask(shared: Arc<Shared>, verifier: Arc<Verifier>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    while Instant::now() < shared.until {
        let o = rng.random_range(0..shared.orgs.len());
        let among = if rng.random_bool(0.7) { 1 } else { 4 };
        let (secret, key, user) = shared.orgs[o].pick_secret(&mut rng, among);
        let invoked = shared.now();
        let email = &shared.orgs[o].emails[user];
        let answer = tokio::time::timeout(CALL_TIMEOUT, verifier.verify(email, &key)).await;
        let cached_ok = matches!(answer, Ok(Ok(ref v)) if v.cached);
        let answer = Answer {
            org: o,
            secret,
            invoked,
            cached_ok,
        };
        shared.answers.lock().unwrap().push(answer);
        tokio::time::sleep(Duration::from_millis(rng.random_range(1..5))).await;
    }
}
