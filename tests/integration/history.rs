//! A linearizability checker for one org's key validity (Wing & Gong's search with memoization,
//! as porcupine does it), and hand-made histories it must reject. The model: the org's current
//! key, if any. A recorded operation has its invocation and, if its outcome is known, its
//! completion; one whose outcome is unknown (a timeout, an UNAVAILABLE) may or may not have
//! taken effect, at any point after its invocation.
//!
//! Not yet here: the harness that records histories from clients against a server under faults
//! (issue 16, item 1), and the revocation stream's properties.

use std::collections::HashSet;

/// What an operation did to, or saw of, the org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// GenerateKey or RegenerateKey, answered with this key (or unknown: then `None` can never
    /// be observed, so only a known key is recorded; an unknown one installs a key nobody holds).
    Install(Option<u32>),
    /// RevokeKey, DeactivateUser of the owner: the org has no valid key.
    Revoke,
    /// ValidateKey of this key, and whether it was valid.
    Validate(u32, bool),
}

/// One operation: invoked at `call`, completed at `ret` (None: outcome unknown).
#[derive(Clone, Debug)]
pub struct Event {
    pub op: Op,
    pub call: u64,
    pub ret: Option<u64>,
}

/// The model's state: the valid key. `Some(None)` is a key nobody knows.
type State = Option<Option<u32>>;

fn apply(state: State, op: &Op) -> Option<State> {
    match op {
        Op::Install(key) => Some(Some(*key)),
        Op::Revoke => Some(None),
        Op::Validate(key, valid) => ((state == Some(Some(*key))) == *valid).then_some(state),
    }
}

/// Whether the history has a linearization: every completed operation takes effect at one
/// point between its call and its return, in an order the model accepts; an operation of unknown
/// outcome takes effect after its call or not at all.
pub fn linearizable(history: &[Event]) -> bool {
    assert!(
        history.len() <= 128,
        "the checker's memo keys are 128-bit sets"
    );
    let mut seen = HashSet::new();
    search(history, 0, None, &mut seen)
}

fn search(history: &[Event], done: u128, state: State, seen: &mut HashSet<(u128, State)>) -> bool {
    let pending = |i: usize| done & (1 << i) == 0;
    if (0..history.len()).all(|i| !pending(i) || history[i].ret.is_none()) {
        return true;
    }
    if !seen.insert((done, state)) {
        return false;
    }
    // An operation may go next if no pending operation completed before it was invoked.
    let first_return = (0..history.len())
        .filter(|&i| pending(i))
        .filter_map(|i| history[i].ret)
        .min()
        .unwrap_or(u64::MAX);
    (0..history.len())
        .filter(|&i| pending(i) && history[i].call < first_return)
        .any(|i| {
            apply(state, &history[i].op)
                .is_some_and(|next| search(history, done | (1 << i), next, seen))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(op: Op, call: u64, ret: u64) -> Event {
        Event {
            op,
            call,
            ret: Some(ret),
        }
    }

    #[test]
    fn a_validation_after_an_acknowledged_regeneration_must_not_pass_the_old_key() {
        let history = [
            at(Op::Install(Some(1)), 0, 1),
            at(Op::Install(Some(2)), 2, 3),
            at(Op::Validate(1, true), 4, 5),
        ];
        assert!(!linearizable(&history));
    }

    #[test]
    fn overlapping_operations_may_take_effect_in_either_order() {
        let history = [
            at(Op::Install(Some(1)), 0, 1),
            at(Op::Install(Some(2)), 2, 6),
            at(Op::Validate(1, true), 3, 4),
            at(Op::Validate(2, true), 7, 8),
        ];
        assert!(linearizable(&history));
    }

    #[test]
    fn an_unknown_outcome_may_or_may_not_have_happened_but_not_both() {
        let unknown = Event {
            op: Op::Install(None),
            call: 2,
            ret: None,
        };
        let valid_then_invalid = [
            at(Op::Install(Some(1)), 0, 1),
            unknown.clone(),
            at(Op::Validate(1, true), 3, 4),
            at(Op::Validate(1, false), 5, 6),
        ];
        assert!(linearizable(&valid_then_invalid));
        let invalid_then_valid = [
            at(Op::Install(Some(1)), 0, 1),
            unknown,
            at(Op::Validate(1, false), 3, 4),
            at(Op::Validate(1, true), 5, 6),
        ];
        assert!(!linearizable(&invalid_then_valid));
    }

    #[test]
    fn a_revoked_key_stays_revoked() {
        let history = [
            at(Op::Install(Some(1)), 0, 1),
            at(Op::Revoke, 2, 3),
            at(Op::Validate(1, true), 4, 5),
        ];
        assert!(!linearizable(&history));
    }
}
