//! The checkers on hand-made histories: each violating one must be rejected, and a valid one
//! accepted.

use std::time::{Duration, SystemTime};

use super::*;
use stream::{Message, Session};

fn done(op: Op, invoked: u64, returned: u64, outcome: Outcome) -> Entry<Op, Outcome> {
    Entry {
        op,
        invoked,
        returned: Some((returned, outcome)),
    }
}

fn validate(secret: usize, at: u64, outcome: Outcome) -> Entry<Op, Outcome> {
    done(Op::Validate { user: 0, secret }, at, at + 1, outcome)
}

fn regenerate(secret: usize, at: u64, end: Option<u64>) -> Entry<Op, Outcome> {
    Entry {
        op: Op::Regenerate { actor: 0, secret },
        invoked: at,
        returned: end.map(|end| (end, Outcome::Ok)),
    }
}

fn check(history: &[Entry<Op, Outcome>]) -> bool {
    linearizable(&OrgModel, &OrgState::start(0), history)
}

#[test]
fn a_validation_after_an_acknowledged_regeneration_is_a_violation() {
    let history = [regenerate(1, 0, Some(10)), validate(0, 20, Outcome::Ok)];
    assert!(!check(&history));
    // The same validation overlapping the regeneration may come before it.
    let history = [regenerate(1, 0, Some(10)), validate(0, 5, Outcome::Ok)];
    assert!(check(&history));
}

#[test]
fn an_unknown_outcome_may_or_may_not_have_happened() {
    let old_ok = [regenerate(1, 0, None), validate(0, 20, Outcome::Ok)];
    let old_refused = [regenerate(1, 0, None), validate(0, 20, Outcome::Refused)];
    assert!(check(&old_ok));
    assert!(check(&old_refused));
    // But not both, in that order: once the old key is refused, it stays dead.
    let flip = [
        regenerate(1, 0, None),
        validate(0, 20, Outcome::Refused),
        validate(0, 30, Outcome::Ok),
    ];
    assert!(!check(&flip));
}

#[test]
fn a_key_of_a_deactivated_owner_stays_dead_after_reactivation() {
    let history = [
        done(Op::Deactivate(0), 0, 1, Outcome::Ok),
        done(Op::Reactivate(0), 2, 3, Outcome::Ok),
        validate(0, 4, Outcome::Ok),
    ];
    assert!(!check(&history));
    let minimal = minimize(&OrgModel, &OrgState::start(0), &history);
    assert_eq!(
        minimal.len(),
        2,
        "the reactivation is not needed to show it"
    );
}

#[test]
fn the_stream_checker_rejects_gaps_repeats_and_a_checkpoint_below_an_acknowledged_head() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let event = |sequence: u64| Message::Event {
        sequence,
        key_id: format!("k{sequence}"),
    };
    let log: Vec<String> = (1..=3).map(|s| format!("k{s}")).collect();
    let checkpoint = |sequence, durable_head, at| Message::Checkpoint {
        sequence,
        durable_head,
        server_time: at,
    };
    let session = |messages| Session { after: 0, messages };
    let good = session(vec![event(1), event(2), checkpoint(2, 2, t0)]);
    let acked = [Acked {
        sequence: 2,
        at: t0 - Duration::from_millis(1),
    }];
    assert!(stream::violations(&[good], &log, &acked).is_empty());
    let gap = session(vec![event(1), event(3)]);
    assert!(!stream::violations(&[gap], &log, &[]).is_empty());
    let repeat = session(vec![event(1), event(1)]);
    assert!(!stream::violations(&[repeat], &log, &[]).is_empty());
    let stale = session(vec![event(1), checkpoint(1, 1, t0)]);
    assert!(!stream::violations(&[stale], &log, &acked).is_empty());
    // Below its durable head a checkpoint vouches for nothing: the subscriber is behind.
    let behind = session(vec![event(1), checkpoint(1, 2, t0)]);
    assert!(stream::violations(&[behind], &log, &acked).is_empty());
    let wrong = session(vec![Message::Event {
        sequence: 1,
        key_id: "other".into(),
    }]);
    assert!(!stream::violations(&[wrong], &log, &[]).is_empty());
    let resumed = Session {
        after: 1,
        messages: vec![event(2), event(3)],
    };
    assert!(stream::violations(&[resumed], &log, &[]).is_empty());
}

#[test]
fn a_validation_answering_a_head_below_an_acknowledged_revocation_is_stale() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let acked = [Acked {
        sequence: 5,
        at: t0,
    }];
    assert!(!stale_validations(&[(t0 + Duration::from_millis(1), 4)], &acked).is_empty());
    assert!(stale_validations(&[(t0 + Duration::from_millis(1), 5)], &acked).is_empty());
    assert!(stale_validations(&[(t0 - Duration::from_millis(1), 4)], &acked).is_empty());
}

#[test]
fn a_revoked_key_stays_revoked_and_an_instant_operation_may_go_first() {
    let history = [
        done(Op::Revoke, 2, 3, Outcome::Ok),
        validate(0, 4, Outcome::Ok),
    ];
    assert!(!check(&history));
    // A validation invoked and answered at one tick, the first thing in the history.
    assert!(check(&[done(
        Op::Validate { user: 0, secret: 0 },
        0,
        0,
        Outcome::Ok
    )]));
}

#[test]
fn overlapping_regenerations_may_take_effect_in_either_order() {
    let history = [
        done(
            Op::Regenerate {
                actor: 0,
                secret: 1,
            },
            0,
            10,
            Outcome::Ok,
        ),
        done(
            Op::Regenerate {
                actor: 1,
                secret: 2,
            },
            5,
            15,
            Outcome::Ok,
        ),
        done(Op::Validate { user: 0, secret: 1 }, 20, 21, Outcome::Ok),
    ];
    assert!(
        check(&history),
        "the first regeneration may have come second"
    );
    let mut later = history.to_vec();
    later.push(done(
        Op::Validate { user: 1, secret: 2 },
        22,
        23,
        Outcome::Ok,
    ));
    assert!(
        !check(&later),
        "but not both keys valid after both returned"
    );
    let minimal = minimize(&OrgModel, &OrgState::start(0), &later);
    assert_eq!(
        minimal.len(),
        4,
        "every operation is needed to show it: {minimal:?}"
    );
}

#[test]
fn the_verifier_may_not_answer_a_dead_key_from_its_cache_past_max_staleness() {
    let history = [
        done(
            Op::Regenerate {
                actor: 1,
                secret: 1,
            },
            100,
            200,
            Outcome::Ok,
        ),
        done(Op::Demote(1), 300, 400, Outcome::Ok),
    ];
    let deaths = vec![bound::deaths(&history)];
    assert_eq!(deaths[0], vec![(0, 200), (1, 400)]);
    let answer = |secret, invoked| bound::Answer {
        org: 0,
        secret,
        invoked,
        cached_ok: true,
    };
    assert!(bound::violations(&[answer(0, 1_199)], &deaths, 1_000).is_empty());
    assert!(!bound::violations(&[answer(0, 1_200)], &deaths, 1_000).is_empty());
    assert!(bound::violations(&[answer(1, 1_000)], &deaths, 1_000).is_empty());
    assert!(!bound::violations(&[answer(1, 1_400)], &deaths, 1_000).is_empty());
    let uncached = bound::Answer {
        cached_ok: false,
        ..answer(1, 5_000)
    };
    assert!(bound::violations(&[uncached], &deaths, 1_000).is_empty());
}
