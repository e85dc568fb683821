//! The revocation stream's guarantees, checked over what subscribers received, as etcd's
//! robustness tests check its watch: ordered, unique and gapless within a stream, reliable
//! (each event is the log's event at that sequence), resumable (a stream resumed from a cursor
//! starts right after it), and no checkpoint vouches for a head below a revocation that was
//! acknowledged before the checkpoint's `server_time`. Also the Verifier's bound: a key is
//! never answered from its cache `max_staleness` or more after its death was acknowledged.

use std::time::SystemTime;

/// What one stream (one WatchRevocations call) delivered, in order.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// The cursor it was opened with.
    pub after: u64,
    pub messages: Vec<Message>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Event {
        sequence: u64,
        key_id: String,
    },
    Checkpoint {
        sequence: u64,
        durable_head: u64,
        server_time: SystemTime,
    },
}

/// A revocation the server acknowledged: its sequence, and when the client saw the OK.
#[derive(Debug, Clone, Copy)]
pub struct Acked {
    pub sequence: u64,
    pub at: SystemTime,
}

/// Every violation found, as sentences; empty when the sessions keep every guarantee.
/// `log[i]` is the key id of the event with sequence `i + 1`.
pub fn violations(sessions: &[Session], log: &[String], acked: &[Acked]) -> Vec<String> {
    let mut found = Vec::new();
    for (n, session) in sessions.iter().enumerate() {
        let mut last = session.after;
        for message in &session.messages {
            match message {
                Message::Event { sequence, key_id } => {
                    if *sequence != last + 1 {
                        found.push(format!(
                            "stream {n}: event {sequence} after {last} (a gap, a repeat or out of order)"
                        ));
                    }
                    match log.get((*sequence as usize).wrapping_sub(1)) {
                        Some(logged) if logged == key_id => {}
                        other => found.push(format!(
                            "stream {n}: event {sequence} revoked {key_id}, the log says {other:?}"
                        )),
                    }
                    last = *sequence;
                }
                Message::Checkpoint {
                    sequence,
                    durable_head,
                    server_time,
                } => {
                    if *sequence != last {
                        found.push(format!(
                            "stream {n}: checkpoint at {sequence} after event {last}"
                        ));
                    }
                    // A checkpoint at or past the durable head vouches that every revocation
                    // acknowledged by its server_time was sent before it.
                    let vouches = *sequence >= *durable_head;
                    for a in acked.iter().filter(|a| vouches && a.at <= *server_time) {
                        if *sequence < a.sequence {
                            found.push(format!(
                                "stream {n}: checkpoint at {sequence} (durable_head \
                                 {durable_head}) at {server_time:?} vouches for a head below \
                                 revocation {} acknowledged at {:?}",
                                a.sequence, a.at
                            ));
                        }
                    }
                }
            }
        }
    }
    found
}
