//! The Verifier: what a consuming service (Recruit, Desk, ...) embeds to check "admin email +
//! ZSC key" fast, and drop a revoked key within milliseconds.
//!
//! - `verify` answers from a local cache when it can, otherwise calls ValidateKey and caches
//!   the success (bounded, clock eviction, keyed by a keyed blake3 hash of the key; the key
//!   itself is never kept). A hit takes no lock (`cache.rs`); the rules below are applied
//!   under one.
//! - A background task follows WatchRevocations, resuming from the store id and sequence it
//!   last applied; each revocation evicts its key_id. OUT_OF_RANGE flushes the cache and
//!   resubscribes from the head; a lost stream reconnects with jittered backoff.
//! - Another task reports the sequence applied (ConfirmationService.ReportApplied), at most
//!   once a second, so the console sees who has dropped a revoked key (`reporter.rs`).
//! - Fail safe, judged by the server's clock: each checkpoint carries the server's time and
//!   durable head. The cache answers only while the last checkpoint that was complete
//!   (`sequence >= durable_head`) is younger than `max_staleness`, its age counted from its
//!   `server_time` and padded by `max_clock_skew`; otherwise (and at once when the stream
//!   drops) every verify goes to the server, and fails closed if it cannot.
//!
//! # The guarantee
//! If the Verifier's clock and the server's differ by at most `max_clock_skew`, a key whose
//! revocation was acknowledged (the RPC that revoked it returned) at time `r` is never
//! answered from the cache at or after `r + max_staleness`, whatever the network or a proxy
//! in between does: delaying, buffering or replaying the stream makes the cache bypassed, not
//! stale. Normally the key is evicted within milliseconds of `r`. A server clock ahead of
//! ours by more than `max_clock_skew` is detected and the cache is then not used; one behind
//! by more than the bound is not detectable, and stretches the bound by the excess. Keep the
//! server's `--heartbeat-interval` well below `max_staleness - max_clock_skew`, or the cache
//! goes unused between heartbeats.
//!
//! The read/invalidate race and the freshness rule are the I/O-free rules of `state.rs`.

mod cache;
mod reporter;
mod shared;
mod state;
mod watcher;

use std::{
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use thread_local::ThreadLocal;
use tokio::{task::JoinHandle, time::Instant};
use tonic::{Code, Status};

use crate::domain::{shown, Email, ZscKey};
use crate::proto::{ValidateKeyRequest, ValidateKeyResponse};
use cache::{Entry, KeyHash};
use shared::{verified, Replicas, Shared};
use state::{Staleness, State};

pub use compact_str::CompactString;
pub use watcher::Revocation;

/// Called for each revocation the Verifier applies (for logs and metrics).
pub type RevocationHook = Arc<dyn Fn(&Revocation) + Send + Sync>;

#[derive(Clone)]
pub struct VerifierConfig {
    /// The zsc server, e.g. `http://127.0.0.1:50051`.
    pub url: String,
    /// Other replicas of the same store (zsc on etcd). When the one in use fails, the stream
    /// resumes on the next from its cursor (replicas share the store id and the sequences) and
    /// validations go there too.
    pub fallback_urls: Vec<String>,
    /// A consumer (or operator) service-account token.
    pub token: String,
    /// PEM of the CA to trust when `url` is `https://`.
    pub tls_ca: Option<Vec<u8>>,
    /// How old (by the server's clock) the applied revocations may be while the cache answers:
    /// the bound on how long a revoked key may still be accepted from the cache.
    pub max_staleness: Duration,
    /// The most the server's clock and this machine's may differ (NTP keeps it to
    /// milliseconds); must be below `max_staleness`. Subtracted from every grant of freshness.
    pub max_clock_skew: Duration,
    /// Keys cached at most.
    pub cache_capacity: NonZeroUsize,
    /// Revoked key_ids remembered for the read/invalidate check.
    pub revoked_capacity: usize,
    /// Reconnect backoff: first delay and cap (full jitter in between).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub on_revocation: Option<RevocationHook>,
}

impl VerifierConfig {
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        VerifierConfig {
            url: url.into(),
            fallback_urls: Vec::new(),
            token: token.into(),
            tls_ca: None,
            max_staleness: Duration::from_secs(2),
            max_clock_skew: Duration::from_millis(500),
            cache_capacity: NonZeroUsize::new(100_000).expect("non-zero"),
            revoked_capacity: 100_000,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            on_revocation: None,
        }
    }
}

/// A successful verification. Its strings are `CompactString`s (`as_str()`, `Deref<Target =
/// str>`, `==` with `&str` and `String`): a cache hit copies up to 24 bytes each instead of
/// allocating (ids always fit; an email or org name over 24 bytes is still allocated).
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    pub org_id: CompactString,
    pub org_name: CompactString,
    pub key_id: CompactString,
    pub owner_email: CompactString,
    /// Whether the answer came from the cache.
    pub cached: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The key or email is malformed; decided offline.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The server says no: wrong email, unknown or revoked key, owner no longer an admin.
    #[error("invalid email or key")]
    Rejected,
    /// The server could not be asked (and the cache could not be trusted): fail closed.
    #[error("zsc unavailable: {0}")]
    Unavailable(Status),
}

/// What the Verifier is doing, for health checks and dashboards.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifierStats {
    pub hits: u64,
    pub misses: u64,
    pub cached_keys: usize,
    /// The last revocation-log sequence applied (None before the first checkpoint).
    pub applied_sequence: Option<u64>,
    pub store_id: Option<String>,
    pub connected: bool,
    /// Whether the cache may answer now (the freshness rule: the last complete checkpoint's
    /// server time is within max_staleness, less max_clock_skew).
    pub fresh: bool,
    /// Times the whole cache was flushed because the server's log could not serve our cursor.
    pub flushes: u64,
}

pub struct Verifier {
    shared: Arc<Shared>,
    watcher: JoinHandle<()>,
}

impl Verifier {
    /// Starts the Verifier (inside a tokio runtime); the stream connects in the background
    /// (the cache is bypassed until it has).
    pub fn start(config: VerifierConfig) -> Result<Self, Status> {
        if config.max_clock_skew >= config.max_staleness {
            return Err(Status::invalid_argument(format!(
                "max_clock_skew ({}) must be below max_staleness ({}), or the cache could never be used",
                shown::duration(config.max_clock_skew),
                shown::duration(config.max_staleness)
            )));
        }
        let replicas = Replicas::connect(&config)?;
        let hash_key: [u8; 32] = rand::random();
        let staleness = Staleness {
            max_staleness: config.max_staleness,
            max_clock_skew: config.max_clock_skew,
        };
        let state = State::new(config.cache_capacity, config.revoked_capacity, staleness);
        let (applied, reports) = tokio::sync::watch::channel(None);
        let shared = Arc::new(Shared {
            replicas,
            cache: state.reader(),
            state: Mutex::new(state),
            connected: AtomicBool::new(false),
            hits: ThreadLocal::new(),
            misses: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            hash_key,
            applied,
        });
        tokio::spawn(reporter::run(Arc::downgrade(&shared), reports));
        let watcher = tokio::spawn(watcher::run(shared.clone(), config));
        Ok(Verifier { shared, watcher })
    }

    /// Checks "owner email + key".
    pub async fn verify(&self, email: &str, key: &str) -> Result<Verified, VerifyError> {
        // The cache first, on the text as given: a cached entry is keyed by the hash of a key
        // that parsed, so the same text is the same key; and an email that equals the cached
        // (normalised) one but for ASCII case is one Email::parse folds to it. Anything else
        // (an IDNA domain in Unicode, say) is parsed and looked up again.
        let hash = self.shared.hash(key.as_bytes());
        if let Some(hit) = self.shared.hit(&hash, email) {
            return Ok(hit);
        }
        // Boxed: the miss's future (a whole gRPC call) is kilobytes, and inline it would make
        // every hit's future as big, copied whenever a caller moves it.
        Box::pin(self.miss(hash, email, key)).await
    }

    /// `verify` past the first lookup: parse, look up again, ask the server, admit.
    async fn miss(&self, hash: KeyHash, email: &str, key: &str) -> Result<Verified, VerifyError> {
        let key = ZscKey::parse(key).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        let email =
            Email::parse("email", email).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        if let Some(hit) = self.shared.hit(&hash, email.as_str()) {
            return Ok(hit);
        }
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        let request = ValidateKeyRequest {
            email: email.to_string(),
            key: key.expose().to_owned(),
        };
        let response = match self.validate_remotely(request).await {
            Ok(response) => response,
            Err(status) if status.code() == Code::Unauthenticated => {
                return Err(VerifyError::Rejected)
            }
            Err(status) if status.code() == Code::InvalidArgument => {
                return Err(VerifyError::Malformed(status.message().to_owned()))
            }
            Err(status) => return Err(VerifyError::Unavailable(status)),
        };
        let entry = entry_of(&email, &response);
        self.shared
            .state()
            .admit(hash, entry.clone(), response.sequence, &response.store_id);
        Ok(verified(&entry, false))
    }

    /// ValidateKey on the replica in use, then on the others in turn while one is unavailable.
    async fn validate_remotely(
        &self,
        request: ValidateKeyRequest,
    ) -> Result<ValidateKeyResponse, Status> {
        let replicas = &self.shared.replicas;
        let mut outcome = Err(Status::unavailable("no replica"));
        for _ in 0..replicas.len() {
            let (index, mut client) = replicas.current();
            outcome = client
                .validate_key(request.clone())
                .await
                .map(|r| r.into_inner());
            match &outcome {
                Err(status) if status.code() == Code::Unavailable => replicas.fail_over(index),
                _ => break,
            }
        }
        outcome
    }

    /// Offers a ValidateKey success obtained elsewhere (say, by the service's own client) to
    /// the cache, under the same read/invalidate rule as `verify`. Returns whether it was
    /// cached: never for a key whose revocation was already applied, nor for an answer from a
    /// store other than the one the Verifier follows.
    pub fn admit(&self, email: &str, key: &str, response: &ValidateKeyResponse) -> bool {
        let (Ok(key), Ok(email)) = (ZscKey::parse(key), Email::parse("email", email)) else {
            return false;
        };
        if response.owner_email != email.as_str() {
            return false;
        }
        let hash = self.shared.hash(key.expose().as_bytes());
        self.shared.state().admit(
            hash,
            entry_of(&email, response),
            response.sequence,
            &response.store_id,
        )
    }

    pub fn stats(&self) -> VerifierStats {
        let state = self.shared.state();
        VerifierStats {
            hits: self.shared.hits(),
            misses: self.shared.misses.load(Ordering::Relaxed),
            cached_keys: state.len(),
            applied_sequence: state.applied,
            store_id: state.store_id.clone(),
            connected: self.shared.connected.load(Ordering::Relaxed),
            fresh: state.fresh(Instant::now()),
            flushes: self.shared.flushes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn entry_of(email: &Email, response: &ValidateKeyResponse) -> Entry {
    let org = response.org.clone().unwrap_or_default();
    Entry {
        email: email.as_str().into(),
        key_id: response.key_id.as_str().into(),
        org_id: org.org_id.into(),
        org_name: org.name.into(),
    }
}
