//! What a replica may vouch for about the log head.
//!
//! The durable head this replica has applied moves as its feed delivers (on sled the commit
//! path, on etcd the watch); on its own it proves nothing about changes acknowledged
//! elsewhere. A [`Confirmed`] head does: the clock was read first, then a barrier made sure
//! this replica had applied every change acknowledged by then (at once on sled, one process;
//! on etcd a linearizable read and the watch catching up with it), then the head was read. So
//! every revocation acknowledged anywhere by `at` has a sequence at or below `head`: what a
//! checkpoint's `server_time` and `durable_head` promise.

use std::time::SystemTime;

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
