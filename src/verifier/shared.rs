//! What the Verifier's handle and its watcher share: the clients of the replicas, the state
//! and the cache a hit reads without a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_utils::CachePadded;
use thread_local::ThreadLocal;
use tonic::{service::interceptor::InterceptedService, transport::Channel, Status};

use super::cache::{Cache, Entry, KeyHash};
use super::state::State;
use super::{Verified, VerifierConfig};
use crate::client::Bearer;
use crate::proto::confirmation_service_client::ConfirmationServiceClient;
use crate::proto::key_service_client::KeyServiceClient;

pub(super) type Client = KeyServiceClient<InterceptedService<Channel, Bearer>>;
/// What was applied, for the reporter (`reporter.rs`): (sequence, store_id); None before the
/// first checkpoint.
pub(super) type Applied = Option<(u64, String)>;
pub(super) type ReportClient = ConfirmationServiceClient<InterceptedService<Channel, Bearer>>;

/// A client per replica, and which one is in use.
pub(super) struct Replicas {
    pub(super) clients: Vec<Client>,
    /// Report clients on the same connections (`reporter.rs`).
    pub(super) reporters: Vec<ReportClient>,
    pub(super) current: AtomicUsize,
}

impl Replicas {
    pub(super) fn connect(config: &VerifierConfig) -> Result<Replicas, Status> {
        let bearer = Bearer::new(&config.token)?;
        let channels = std::iter::once(&config.url)
            .chain(&config.fallback_urls)
            .map(|url| {
                Ok(crate::client::endpoint(url, config.tls_ca.as_deref())
                    .map_err(|e| Status::invalid_argument(format!("{url}: {e}")))?
                    .connect_lazy())
            })
            .collect::<Result<Vec<Channel>, Status>>()?;
        Ok(Replicas {
            clients: channels
                .iter()
                .map(|c| KeyServiceClient::with_interceptor(c.clone(), bearer.clone()))
                .collect(),
            reporters: channels
                .into_iter()
                .map(|c| ConfirmationServiceClient::with_interceptor(c, bearer.clone()))
                .collect(),
            current: AtomicUsize::new(0),
        })
    }

    /// The replica in use: its index and a client for it.
    pub(super) fn current(&self) -> (usize, Client) {
        let index = self.current.load(Ordering::Relaxed) % self.clients.len();
        (index, self.clients[index].clone())
    }

    /// A report client for the replica in use.
    pub(super) fn reporter(&self) -> ReportClient {
        let index = self.current.load(Ordering::Relaxed) % self.reporters.len();
        self.reporters[index].clone()
    }

    /// Replica `failed` failed: use the next one (unless another caller already moved on).
    pub(super) fn fail_over(&self, failed: usize) {
        let next = (failed + 1) % self.clients.len();
        let _ = self
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub(super) fn len(&self) -> usize {
        self.clients.len()
    }
}

pub(super) struct Shared {
    pub(super) replicas: Replicas,
    /// The rules (admissions, revocations, checkpoints), one change at a time.
    pub(super) state: Mutex<State>,
    /// What a hit reads: the state's cache, without its lock.
    pub(super) cache: Arc<Cache>,
    pub(super) connected: AtomicBool,
    /// Per thread, so that hits on different threads write no common cache line.
    pub(super) hits: ThreadLocal<CachePadded<AtomicU64>>,
    pub(super) misses: AtomicU64,
    pub(super) flushes: AtomicU64,
    /// Per-process key for cache hashes, so they identify nothing outside this process.
    pub(super) hash_key: [u8; 32],
    /// The applied sequence, for the reporter (`reporter.rs`).
    pub(super) applied: tokio::sync::watch::Sender<Applied>,
}

impl Shared {
    /// A cached answer for `hash` and `email`, if the cache is fresh: no lock, and no write
    /// that another thread's hit reads; no allocation but the answer's. Freshness is read
    /// after the entry, so a hit that races a disconnect or a flush answers only if it was
    /// still fresh when the entry was found.
    pub(super) fn hit(&self, hash: &KeyHash, email: &str) -> Option<Verified> {
        let hit = self
            .cache
            .get(hash, |entry| {
                // The same text first (a compare of words, not a loop over bytes): callers
                // usually pass the address as the server normalised it.
                let same = entry.email == email || entry.email.eq_ignore_ascii_case(email);
                (same && self.cache.fresh_for_hit()).then(|| verified(entry, true))
            })
            .flatten()?;
        // Only this thread writes its counter: a load and a store, not a locked add.
        let hits = self.hits.get_or_default();
        hits.store(hits.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        Some(hit)
    }

    pub(super) fn hits(&self) -> u64 {
        self.hits.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Hands the reporter the applied sequence if it moved; never waits.
    pub(super) fn publish_applied(&self) {
        let applied = {
            let state = self.state();
            state.applied.zip(state.store_id.clone())
        };
        self.applied.send_if_modified(|current| {
            let moved = applied.is_some() && *current != applied;
            if moved {
                current.clone_from(&applied);
            }
            moved
        });
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("lock poisoned")
    }

    pub(super) fn hash(&self, key: &[u8]) -> KeyHash {
        *blake3::keyed_hash(&self.hash_key, key).as_bytes()
    }
}

pub(super) fn verified(entry: &Entry, cached: bool) -> Verified {
    Verified {
        org_id: entry.org_id.clone(),
        org_name: entry.org_name.clone(),
        key_id: entry.key_id.clone(),
        owner_email: entry.email.clone(),
        cached,
    }
}
