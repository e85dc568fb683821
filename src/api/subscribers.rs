//! The subscriber caps: how many revocation streams may be open in all and per service
//! account. Each open stream's response body (`watch::Feed`) holds a [`Slot`] for as long as
//! it lives (which is what holds its buffers), so a slot is given back when the stream ends,
//! whichever way, or earlier, when the stream stalls ([`Slot::release`], `stall.rs`).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use tonic::Status;

use crate::domain::AccountName;
use crate::metrics::SubscriberGuard;

/// Defaults of `--max-subscribers` and `--max-subscribers-per-account`.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 10_000;
pub const DEFAULT_MAX_SUBSCRIBERS_PER_ACCOUNT: usize = 1_000;

#[derive(Clone)]
pub struct Subscribers {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_account: usize,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_account: BTreeMap<AccountName, usize>,
}

impl Subscribers {
    pub fn new(max_total: usize, max_per_account: usize) -> Self {
        Subscribers {
            counts: Arc::default(),
            max_total,
            max_per_account,
        }
    }

    /// A slot for one more stream of `account`, or RESOURCE_EXHAUSTED past either cap.
    pub fn admit(&self, account: &AccountName, gauge: SubscriberGuard) -> Result<Slot, Status> {
        let mut counts = self.counts.lock().expect("lock poisoned");
        let mine = counts.per_account.get(account).copied().unwrap_or(0);
        if mine >= self.max_per_account {
            return Err(Status::resource_exhausted(format!(
                "service account {account} already has {mine} revocation streams open, the most one \
                 account may (--max-subscribers-per-account); close one, or share one stream per process"
            )));
        }
        if counts.total >= self.max_total {
            return Err(Status::resource_exhausted(format!(
                "this server already serves {} revocation streams, its maximum (--max-subscribers); \
                 retry with backoff",
                counts.total
            )));
        }
        counts.total += 1;
        *counts.per_account.entry(account.clone()).or_default() += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            account: account.clone(),
            gauge: Mutex::new(Some(gauge)),
            presence: None,
        })
    }
}

/// One stream's place under the caps; given back on drop, if not released before.
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    account: AccountName,
    /// Counts the stream in the subscriber gauge too; taken when the slot is given back.
    gauge: Mutex<Option<SubscriberGuard>>,
    /// Counts the account as subscribed for revocation confirmations while the stream lives.
    presence: Option<crate::store::Presence>,
}

impl Slot {
    /// The slot, also holding `presence` for as long as it lives.
    pub fn with_presence(mut self, presence: crate::store::Presence) -> Slot {
        self.presence = Some(presence);
        self
    }

    /// Gives the place back now (and lowers the gauge), once: a stalled stream's body may live
    /// on until its connection closes.
    pub fn release(&self) {
        let Some(gauge) = self.gauge.lock().expect("lock poisoned").take() else {
            return;
        };
        drop(gauge);
        let mut counts = self.counts.lock().expect("lock poisoned");
        counts.total -= 1;
        if let Some(n) = counts.per_account.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                counts.per_account.remove(&self.account);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}
