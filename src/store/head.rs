//! The durable head, and why a store stops: one type each, from the backends to the streams.
//!
//! [`Head`] is what a backend announces on one `watch` channel: the head of the revocation log
//! this replica has applied (sled: flushed by the commit path; etcd: applied by its watch), and,
//! once the store does not serve, the [`Fault`] that stopped it. Streams follow the applied head
//! and end on a fault; changes are refused with the fault's [`Fault::refusal`]. An etcd replica's
//! fault clears when it can confirm its head again, and the same channel moves on.
//!
//! The applied head on its own proves nothing about changes acknowledged elsewhere. A
//! [`Confirmed`] head does: the clock was read first, then a barrier made sure this replica had
//! applied every change acknowledged by then (at once on sled, one process; on etcd a
//! linearizable read and the watch catching up with it), then the head was read. So every
//! revocation acknowledged anywhere by `at` has a sequence at or below `head`: what a
//! checkpoint's `server_time` and `durable_head` promise.

use std::time::SystemTime;

use tokio::sync::watch;

use crate::domain::{Error, Result};

/// A store's durable head as this replica holds it, and whether the store serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Every revocation up to this sequence is durable and applied here: it may be sent.
    pub applied: u64,
    /// Why the store does not serve, once it does not: no change is taken and streams end.
    pub fault: Option<Fault>,
}

impl Head {
    /// A head at `applied` of a store that serves.
    pub fn live(applied: u64) -> Head {
        Head {
            applied,
            fault: None,
        }
    }

    /// Ok while the store serves; the refusal a caller gets once it does not.
    pub fn serving(&self) -> Result<()> {
        match &self.fault {
            None => Ok(()),
            Some(fault) => Err(fault.refusal()),
        }
    }
}

/// Why a store refuses a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A flush or fsync failed (sled: disk full, an I/O error): never retried, so every change
    /// is refused until the process restarts on a clean open.
    Storage(String),
    /// This replica cannot confirm its head (etcd): the cluster does not answer a
    /// linearizable read, or this replica's watch does not apply what it read (a watch that
    /// stopped) within the bound. Until it can again.
    Unconfirmed(String),
    /// etcd refused a write because it is out of space (the NOSPACE alarm): that write was not
    /// applied. It refuses one write, never the store: reads and streams go on.
    OutOfSpace(String),
}

impl Fault {
    /// What happened, for the log (callers get [`Fault::refusal`]).
    pub fn cause(&self) -> &str {
        match self {
            Fault::Storage(cause) | Fault::Unconfirmed(cause) | Fault::OutOfSpace(cause) => cause,
        }
    }

    /// The error a caller whose change (or stream) is refused gets.
    pub fn refusal(&self) -> Error {
        match self {
            Fault::Storage(_) => Error::StorageFailed(
                "storage cannot take writes (disk full or I/O error): this server refuses changes \
                 until it restarts; reads and validation still work",
            ),
            Fault::Unconfirmed(_) => Error::Unavailable(UNREACHABLE),
            Fault::OutOfSpace(cause) => Error::WriteRefused {
                reason: "nospace",
                message: format!(
                    "etcd is out of space: {cause}; the change was not applied (the operator must \
                     compact, defragment and disarm the NOSPACE alarm, or raise the quota)"
                ),
            },
        }
    }
}

/// What a caller is told while this replica cannot reach its cluster.
pub(in crate::store) const UNREACHABLE: &str =
    "the etcd cluster cannot be reached: try again shortly";

/// The channel a backend announces its [`Head`] on: the applied head only moves forward, and a
/// fault is kept (the first cause) until it is cleared.
pub(in crate::store) struct Announcer(watch::Sender<Head>);

impl Announcer {
    pub fn new(applied: u64) -> Announcer {
        Announcer(watch::Sender::new(Head::live(applied)))
    }

    pub fn subscribe(&self) -> watch::Receiver<Head> {
        self.0.subscribe()
    }

    #[cfg(feature = "etcd")]
    pub fn applied(&self) -> u64 {
        self.0.borrow().applied
    }

    /// Ok while the store serves (see [`Head::serving`]).
    pub fn serving(&self) -> Result<()> {
        self.0.borrow().serving()
    }

    /// Moves the applied head forward (never back) and wakes the streams.
    pub fn advance(&self, applied: u64) {
        self.0.send_if_modified(|head| {
            let advanced = applied > head.applied;
            head.applied = head.applied.max(applied);
            advanced
        });
    }

    /// Stops the store with `fault`, or (`None`) serves again. Returns whether the store
    /// went from serving to not or back; while it is stopped the first fault stays.
    pub fn set_fault(&self, fault: Option<Fault>) -> bool {
        self.0.send_if_modified(|head| {
            let changed = head.fault.is_some() != fault.is_some();
            if changed {
                head.fault = fault;
            }
            changed
        })
    }
}

/// At `at`, the durable head was at least `head`, and this replica held it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirmed {
    pub at: SystemTime,
    pub head: u64,
}

impl Confirmed {
    /// The later of two confirmations (a later one never names a lower head).
    pub fn later(self, other: Confirmed) -> Confirmed {
        if other.at > self.at {
            other
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_applied_head_only_moves_forward_and_wakes_only_when_it_moves() {
        let announcer = Announcer::new(5);
        let mut head = announcer.subscribe();
        announcer.advance(3);
        assert!(
            !head.has_changed().unwrap(),
            "a lower head woke the streams"
        );
        assert_eq!(head.borrow().applied, 5);
        announcer.advance(7);
        assert!(head.has_changed().unwrap());
        assert_eq!(head.borrow_and_update().applied, 7);
    }

    #[test]
    fn a_fault_keeps_its_first_cause_until_cleared_and_refuses_with_its_own_error() {
        let announcer = Announcer::new(1);
        assert!(announcer.serving().is_ok());
        assert!(announcer.set_fault(Some(Fault::Unconfirmed("first".into()))));
        assert!(!announcer.set_fault(Some(Fault::Unconfirmed("second".into()))));
        let head = announcer.subscribe().borrow().clone();
        assert_eq!(head.fault.as_ref().map(Fault::cause), Some("first"));
        assert!(matches!(announcer.serving(), Err(Error::Unavailable(_))));
        // The head still moves while the store is stopped (an etcd watch goes on applying).
        announcer.advance(2);
        assert_eq!(announcer.subscribe().borrow().applied, 2);
        assert!(announcer.set_fault(None));
        assert!(announcer.serving().is_ok());
    }

    #[test]
    fn each_fault_refuses_with_the_error_its_callers_are_promised() {
        let storage = Fault::Storage("EIO".into()).refusal();
        assert!(matches!(storage, Error::StorageFailed(m) if m.contains("until it restarts")));
        let space = Fault::OutOfSpace("database space exceeded".into()).refusal();
        assert!(matches!(
            space,
            Error::WriteRefused { reason: "nospace", message } if message.contains("database space exceeded")
        ));
    }
}
