//! The Verifier's bound (src/verifier/mod.rs, "The guarantee"): a key whose death was
//! acknowledged at `r` is never answered from the cache at or after `r + max_staleness`.
//!
//! A key dies by any change acknowledged after it was generated: a regeneration or generation
//! of another key, a revocation, or its owner's deactivation or demotion (each one, placed after
//! the key's generation, leaves the key dead in every linearization).

use super::checker::Entry;
use super::model::{Op, Outcome, SecretId};

/// One answer of the Verifier: when `verify` was called (the history's clock), for which
/// secret of which org, and whether it passed from the cache.
#[derive(Debug, Clone)]
pub struct Answer {
    pub org: usize,
    pub secret: SecretId,
    pub invoked: u64,
    pub cached_ok: bool,
}

/// When each secret's death was first acknowledged, per the org's history (None: never, or not
/// known to be).
pub fn deaths(history: &[Entry<Op, Outcome>]) -> Vec<(SecretId, u64)> {
    let generated = history.iter().filter_map(|e| match (&e.op, &e.returned) {
        (
            Op::Generate { actor, secret } | Op::Regenerate { actor, secret },
            Some((at, Outcome::Ok)),
        ) => Some((*secret, *actor, *at)),
        _ => None,
    });
    let mut found = Vec::new();
    // The key made at setup: secret 0, owned by user 0, generated before the history began.
    for (secret, owner, born) in std::iter::once((0, 0, 0)).chain(generated) {
        let killed = history
            .iter()
            .filter(|e| e.invoked >= born && kills(&e.op, secret, owner))
            .filter_map(|e| match e.returned {
                Some((at, Outcome::Ok)) => Some(at),
                _ => None,
            })
            .min();
        found.extend(killed.map(|at| (secret, at)));
    }
    found
}

fn kills(op: &Op, secret: SecretId, owner: usize) -> bool {
    match *op {
        Op::Generate { secret: s, .. } | Op::Regenerate { secret: s, .. } => s != secret,
        Op::Revoke => true,
        Op::Deactivate(u) | Op::Demote(u) => u == owner,
        Op::Reactivate(_) | Op::Promote(_) | Op::Validate { .. } | Op::CreateUser => false,
    }
}

/// Cached answers given `max_staleness` (in the history's unit) or more after the key's death
/// was acknowledged. `deaths[org]` is [`deaths`] of that org's history.
pub fn violations(
    answers: &[Answer],
    deaths: &[Vec<(SecretId, u64)>],
    max_staleness: u64,
) -> Vec<String> {
    let mut found = Vec::new();
    for answer in answers.iter().filter(|a| a.cached_ok) {
        let died = deaths[answer.org].iter().find(|(s, _)| *s == answer.secret);
        if let Some((_, at)) = died.filter(|(_, at)| answer.invoked >= at + max_staleness) {
            found.push(format!(
                "the Verifier passed org {}'s secret {} from its cache at {} us, {} us after its \
                 death was acknowledged at {at} us (max_staleness {max_staleness} us)",
                answer.org,
                answer.secret,
                answer.invoked,
                answer.invoked - at
            ));
        }
    }
    found
}
