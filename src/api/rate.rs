//! Per-caller rate limits: calls per service account, and failed authentications per client
//! address. Past either, a call is RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` detail that
//! says when to retry, and is counted in `zsc_rate_limited_total{limit="account"|"address"}`
//! (never labelled by address); the observe layer logs it through the shared throttle, so a
//! flood of refusals is a bounded number of lines.
//!
//! - `--rate-limit` is every consumer account's limit; `--rate-limit-account NAME=RATE` gives
//!   one account (of any role) its own. Overrides live in a flag, not the account record: a
//!   limit is per replica anyway (each replica counts only the calls it serves), and a flag
//!   needs no write to change.
//! - `--auth-failure-limit` counts, per client IP address, the calls refused UNAUTHENTICATED
//!   (no token, a malformed or an unknown one). Past it such calls are RESOURCE_EXHAUSTED. A
//!   call with a valid token is never refused by it: behind a load balancer every client shares
//!   one address.
//!
//! The limiters are `governor`'s (GCRA: a burst of N, then N per period), keyed by account name
//! or IP address; the address table forgets idle addresses as it grows.

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    num::NonZeroU32,
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter,
};

type Late = NotUntil<<DefaultClock as Clock>::Instant>;
use tonic::{
    transport::server::{TcpConnectInfo, TlsConnectInfo},
    Code, Status,
};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{shown, AccountName, Caller, Role};
use crate::metrics::Metrics;

/// The address table is swept of idle addresses once per this many failed authentications.
const SWEEP_EVERY: u64 = 4096;

/// A rate: `N/s`, `N/m` or `N/h`, with bursts of up to N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    count: NonZeroU32,
    per: Per,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Per {
    Second,
    Minute,
    Hour,
}

impl Rate {
    fn quota(self) -> Quota {
        match self.per {
            Per::Second => Quota::per_second(self.count),
            Per::Minute => Quota::per_minute(self.count),
            Per::Hour => Quota::per_hour(self.count),
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        let bad = || format!("`{text}` is not a rate: write N/s, N/m or N/h with N > 0");
        let (count, per) = text.trim().split_once('/').ok_or_else(bad)?;
        let count = count.trim().parse::<NonZeroU32>().map_err(|_| bad())?;
        let per = match per.trim() {
            "s" => Per::Second,
            "m" => Per::Minute,
            "h" => Per::Hour,
            _ => return Err(bad()),
        };
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = match self.per {
            Per::Second => "s",
            Per::Minute => "m",
            Per::Hour => "h",
        };
        write!(f, "{}/{per}", self.count)
    }
}

/// One account's own limit: `NAME=RATE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRate {
    pub account: AccountName,
    pub rate: Rate,
}

impl FromStr for AccountRate {
    type Err = String;

    fn from_str(text: &str) -> Result<AccountRate, String> {
        let (name, rate) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}`: write ACCOUNT=RATE, e.g. desk=500/s"))?;
        let account = AccountName::parse(name.trim()).map_err(|e| e.to_string())?;
        Ok(AccountRate {
            account,
            rate: rate.parse()?,
        })
    }
}

/// What the rate flags set; all off by default.
#[derive(Clone, Debug, Default)]
pub struct RateLimits {
    /// Every consumer account's limit, unless it has its own.
    pub consumer: Option<Rate>,
    /// Accounts (of any role) with their own limit.
    pub accounts: Vec<AccountRate>,
    /// Failed authentications per client IP address.
    pub auth_failures: Option<Rate>,
}

/// The limiters, shared by every connection. Cheap to clone.
#[derive(Clone)]
pub struct Rates {
    inner: Arc<Inner>,
}

struct Inner {
    consumers: Option<DefaultKeyedRateLimiter<AccountName>>,
    accounts: HashMap<AccountName, DefaultDirectRateLimiter>,
    addresses: Option<DefaultKeyedRateLimiter<IpAddr>>,
    failures: AtomicU64,
    metrics: Metrics,
}

impl Rates {
    pub fn new(limits: &RateLimits, metrics: Metrics) -> Rates {
        Rates {
            inner: Arc::new(Inner {
                consumers: limits.consumer.map(|r| RateLimiter::keyed(r.quota())),
                accounts: limits
                    .accounts
                    .iter()
                    .map(|a| (a.account.clone(), RateLimiter::direct(a.rate.quota())))
                    .collect(),
                addresses: limits.auth_failures.map(|r| RateLimiter::keyed(r.quota())),
                failures: AtomicU64::new(0),
                metrics,
            }),
        }
    }

    /// Limits nothing.
    pub fn none(metrics: Metrics) -> Rates {
        Rates::new(&RateLimits::default(), metrics)
    }

    /// Takes one call from an authenticated caller's allowance.
    pub fn admit(&self, caller: &Caller) -> Result<(), Status> {
        let inner = &*self.inner;
        let checked = match inner.accounts.get(&caller.name) {
            Some(own) => own.check().map_err(|late| wait(late, own.clock())),
            None => match (&inner.consumers, caller.role) {
                (Some(consumers), Role::Consumer) => consumers
                    .check_key(&caller.name)
                    .map_err(|late| wait(late, consumers.clock())),
                _ => return Ok(()),
            },
        };
        checked.map_err(|late| {
            self.limited(
                "account",
                late,
                format!(
                    "service account {} is over its rate limit (--rate-limit, per replica)",
                    caller.name
                ),
            )
        })
    }

    /// A call whose authentication failed with `refusal`: that refusal, or RESOURCE_EXHAUSTED
    /// once its address is past `--auth-failure-limit`.
    pub fn failed(&self, peer: Option<IpAddr>, refusal: Status) -> Status {
        let inner = &*self.inner;
        let (Some(addresses), Some(peer), Code::Unauthenticated) =
            (&inner.addresses, peer, refusal.code())
        else {
            return refusal;
        };
        if inner.failures.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            addresses.retain_recent();
        }
        match addresses.check_key(&peer) {
            Ok(()) => refusal,
            Err(late) => self.limited(
                "address",
                wait(late, addresses.clock()),
                "too many failed authentications from this address (--auth-failure-limit); \
                 calls with a valid token are not limited"
                    .to_owned(),
            ),
        }
    }

    fn limited(&self, limit: &'static str, wait: Duration, message: String) -> Status {
        self.inner.metrics.rate_limited(limit);
        Status::with_error_details(
            Code::ResourceExhausted,
            format!("{message}; retry in {}", shown::duration(wait)),
            ErrorDetails::with_retry_info(Some(wait)),
        )
    }
}

/// The client's IP address, from what tonic records of the connection (TCP, or TLS over TCP).
pub fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|tls| tls.get_ref().remote_addr())
        })
        .map(|addr| addr.ip())
}

/// How long until the limiter lets the next call in, by its own clock; at least a millisecond,
/// so that a client that rounds to whole milliseconds does not retry at once.
fn wait(late: Late, clock: &DefaultClock) -> Duration {
    late.wait_time_from(clock.now())
        .max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print_as_written() {
        for text in ["1/s", "500/m", "10000/h"] {
            assert_eq!(text.parse::<Rate>().unwrap().to_string(), text);
        }
        for bad in ["0/s", "5", "5/d", "-1/s", "/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        let own: AccountRate = "desk=20/s".parse().unwrap();
        assert_eq!(
            (own.account.as_str(), own.rate.to_string()),
            ("desk", "20/s".into())
        );
        assert!("desk".parse::<AccountRate>().is_err());
    }
}
