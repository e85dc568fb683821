//! The revocation stream's subscriber in a run: one session after another, each on a replica
//! chosen in turn and from a cursor that is mostly where the last left off and sometimes an
//! earlier one (resumable from any cursor). A session ends after 0.5 to 3 s, when the run
//! does, when the stream breaks, or when nothing arrives for two seconds (a paused server):
//! heartbeats come every 100 ms.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use zsc::proto::{watch_revocations_response::Event, *};

use super::run::{clients, Shared, CALL_TIMEOUT};
use super::stream::{Message, Session};

pub async fn follow(
    shared: Arc<Shared>,
    addrs: Vec<String>,
    token: String,
    seed: u64,
) -> Vec<Session> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED);
    let mut sessions: Vec<Session> = Vec::new();
    let mut store_id = String::new();
    let mut last = 0;
    let mut n = 0;
    while Instant::now() < shared.until {
        let after = if rng.random_bool(0.3) {
            rng.random_range(0..=last)
        } else {
            last
        };
        let lasts = Instant::now() + Duration::from_millis(rng.random_range(500..3000));
        let addr = &addrs[n % addrs.len()];
        let session = one_session(
            addr,
            &token,
            after,
            &mut store_id,
            lasts.min(shared.until),
            false,
        )
        .await;
        n += 1;
        last = last.max(last_sequence(&session));
        if session.messages.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sessions.push(session);
    }
    sessions
}

/// One stream from `after` until `until`, or only up to its first checkpoint if `to_checkpoint`.
async fn one_session(
    addr: &str,
    token: &str,
    after: u64,
    store_id: &mut String,
    until: Instant,
    to_checkpoint: bool,
) -> Session {
    let mut session = Session {
        after,
        messages: Vec::new(),
    };
    let mut clients = clients(addr, token);
    let request = WatchRevocationsRequest {
        after_sequence: Some(after),
        store_id: store_id.clone(),
        ..Default::default()
    };
    let opened = tokio::time::timeout(CALL_TIMEOUT, clients.keys.watch_revocations(request));
    let Ok(Ok(stream)) = opened.await else {
        return session;
    };
    let mut stream = stream.into_inner();
    let until = tokio::time::Instant::from_std(until);
    loop {
        let wait = tokio::time::Instant::now() + CALL_TIMEOUT;
        let next = tokio::time::timeout_at(wait.min(until), stream.message()).await;
        let Ok(Ok(Some(message))) = next else {
            return session;
        };
        session
            .messages
            .push(match message.event.expect("event set") {
                Event::Revocation(e) => Message::Event {
                    sequence: e.sequence,
                    key_id: e.key_id,
                },
                Event::Checkpoint(c) => {
                    store_id.clone_from(&c.store_id);
                    Message::Checkpoint {
                        sequence: c.sequence,
                        durable_head: c.durable_head,
                        server_time: c
                            .server_time
                            .and_then(|t| SystemTime::try_from(t).ok())
                            .expect("a checkpoint carries server_time"),
                    }
                }
            });
        if to_checkpoint && matches!(session.messages.last(), Some(Message::Checkpoint { .. })) {
            return session;
        }
    }
}

fn last_sequence(session: &Session) -> u64 {
    session
        .messages
        .iter()
        .filter_map(|m| match m {
            Message::Event { sequence, .. } => Some(*sequence),
            Message::Checkpoint { .. } => None,
        })
        .max()
        .unwrap_or(session.after)
}

/// The log's key ids by sequence, read from the start once the faults are over: the events
/// before the first checkpoint of a stream from 0. Retried: a replica restarted by the last
/// fault, or one whose etcd connection was cut, may take a moment to serve again.
pub async fn final_log(addr: &str, token: &str) -> Vec<String> {
    let mut store_id = String::new();
    for _ in 0..40 {
        let until = Instant::now() + Duration::from_secs(5);
        let session = one_session(addr, token, 0, &mut store_id, until, true).await;
        let checkpoint = session
            .messages
            .iter()
            .position(|m| matches!(m, Message::Checkpoint { .. }));
        if let Some(end) = checkpoint {
            let events = session.messages[..end].iter().map(|m| match m {
                Message::Event { key_id, .. } => key_id.clone(),
                Message::Checkpoint { .. } => unreachable!("before the first checkpoint"),
            });
            return events.collect();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the log could not be read after the run")
}
