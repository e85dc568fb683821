//! zsc: the service communication key (ZSC key) service.
//!
//! # Bird's-eye view
//! A CRM administrator generates the org's ZSC key; other services (Recruit, Desk, ...) are
//! configured with "admin email + key" and validate it here. zsc keeps orgs, users, keys and
//! service accounts in one store (sled in its data dir, or etcd shared by any number of
//! replicas), appends every revocation to a gapless,
//! durable log, and streams that log to subscribers so they drop a dead key within
//! milliseconds. Callers are service accounts with a role (operator, console, consumer).
//!
//! # Code map
//! Dependencies point one way: `domain` <- `store` <- `api` <- `server` <- `main`.
//! - [`domain`]: the ZSC rules and validated types (`Email`, `OrgId`, `ZscKey`, ...), the
//!   error enum, and how values are shown to a person (`domain/shown.rs`). No sled, no tonic.
//! - [`store`]: rules over a seam over backends. `store/mod.rs` is only the face.
//!   - `store/rules/`: every rule, written once as a closure over the transactional key-value
//!     interface: orgs, users and keys (`orgs.rs`, `keys.rs`, `revocation.rs`), service
//!     accounts (`accounts.rs`), the revocation log ([`store::EventLog`], `events.rs`), the
//!     audit trail (`audit.rs`), key usage counted in memory (`usage.rs`), what each Verifier
//!     reported applying (`confirmations.rs`, flushed once a second), replicas taking turns
//!     (`turns.rs`), the first start (`bootstrap.rs`) and the load bench's bulk loader
//!     (`bulk.rs`: CreateOrg, CreateUser and GenerateKey's rules for many orgs at once).
//!   - the seam: `kv.rs` (what a transaction may do), `tables.rs` (every table and `meta` key,
//!     named once), `records.rs` (how values are encoded), `backend.rs` (which backend runs a
//!     transaction), and the [`store::Store`] handle every rule is a method of (`handle.rs`, a
//!     leaf); `open.rs` opens a backend and runs the bootstrap rule on it.
//!   - `store/sled/`: the default backend: one transaction per mutation (`backend.rs`,
//!     `transaction.rs`), or, for the key rules, one per batch of callers on a writer thread
//!     (`writer.rs`), group-committed flushes with an fsync and the write fence
//!     (`durability.rs`), private files (`files.rs`), the data dir's lock (`open.rs`).
//!   - `store/etcd/` (feature `etcd`): optimistic transactions (`tx.rs`), one watch per replica
//!     (`follow.rs`) keeping a mirror (`mirror.rs`), the view and the durable head, the read
//!     barrier (`barrier.rs`), the health probe, the URL and one paged range read.
//!   - backup and restore: `store/backup.rs` (the commands), `store/backup_file.rs` (the file
//!     format), `store/snapshot.rs` (the one-point read every backup is; on etcd
//!     `etcd/snapshot.rs`), `store/restore.rs` (the one function making a restore's writes),
//!     `store/online_backup.rs` (a running server's, served by `api/operations.rs`).
//!     `store/conformance.rs`: the tests every backend passes.
//!
//!   The next backend is a folder beside `sled/` and `etcd/`, an arm of `Backend`
//!   (`store/backend.rs`), an `open_*` in `store/open.rs`, and a run of the conformance suite.
//!   ValidateKey reads only the validation view (`store/view.rs`: every live key in memory,
//!   fed by the path that moves the durable head), on etcd after the shared read barrier
//!   (`store/etcd/barrier.rs`); checkpoints vouch only for a confirmed head. `store/head.rs`
//!   names the durable head ([`store::Head`], one `watch` from each backend to the streams),
//!   the [`store::Fault`] that stops a store, and the [`store::Confirmed`] head.
//! - [`api`]: the gRPC adapters: one struct per service, request parsing, the error-to-status
//!   table (`api/status.rs`), the authorization matrix (`api/auth.rs`), the limits and
//!   their defaults (`api/limit.rs`), the framing check (`api/framing.rs`), the revocation
//!   stream (`api/watch.rs`) fed by the one shared tail of the log (`api/tail.rs`) and served
//!   pre-encoded (`api/watch_route.rs`), its caps (`api/subscribers.rs`), the clock that ends
//!   stalled streams (`api/stall.rs`), the per-caller rate limits (`api/rate.rs`), the audit
//!   trail (`api/audit.rs`), the online backup (`api/operations.rs`), who has dropped a revoked
//!   key (`api/confirmations.rs`), and each call's log line, metrics and span (`api/observe.rs`).
//!   The request layers (limits, auth, observe) share one tower plumbing (`api/layer.rs`).
//! - [`proto`]: the generated zsc.v1 types, clients and servers, and their codec (a request
//!   that does not decode is INVALID_ARGUMENT, `proto/codec.rs`).
//! - [`server`]: [`server::Server::open`] + [`server::Server::run`], the one way to start:
//!   `server/routes.rs` (health, reflection, the services and their layers),
//!   `server/tasks.rs` (the periodic jobs, one `every` loop, and the side listeners);
//!   `server/confirmations.rs` (writes Verifiers' reports each second, sets their metrics);
//!   [`accept`]: the one accept path every listener's connections pass (TCP_NODELAY, the
//!   connection limits, tracking for shutdown, TLS); [`tls`]: the gRPC listener's TLS
//!   configuration, reloaded when its files change or on SIGHUP;
//!   [`shutdown`]: the one shutdown signal, and the connections and streams it ends;
//!   `server/fault.rs`: what the server does when its storage fails or its etcd is out of
//!   reach (NOT_SERVING, and on sled an exit for a restart).
//! - [`peers`]: open connections by peer address, so that one can be closed on its own (a
//!   connection whose revocation streams all stalled, `api/stall.rs`).
//! - [`metrics`]: the Prometheus registry and its `/metrics` endpoint.
//! - [`cli`], [`telemetry`]: flags and logging for the binary; [`trace`]: spans exported over
//!   OTLP when `--otlp-endpoint` is given (nothing installed otherwise; `trace_absent.rs` in a
//!   build without the default `otlp` feature); [`progress`]: what `zsc backup`
//!   and `zsc restore` show on a terminal while they run, and the rate they report;
//!   [`backup_client`]: `zsc backup --url`, the client of a running server's online backup.
//! - `testing` (feature `etcd`): a real etcd cluster on loopback for the tests and benches;
//!   `testkit`: the setup tests and benches share (an org with an administrator and a key, a
//!   service account, the operator token).
//! - [`client`], [`verifier`]: the client side. `Verifier` is what a consuming service embeds:
//!   a cache of validated keys kept honest by the revocation stream. It depends on `proto` and
//!   `domain` only, never on the server.
//!
//! # Architecture invariants
//! - On the server side, only `api`, `server`, `accept` and `shutdown` know tonic; only `store` knows sled
//!   or etcd, and within it no rule knows which backend runs it.
//! - Secrets are [`domain::Secret`]s: redacted in `Debug`, zeroed on drop, stored only as
//!   blake3 hashes, returned once by the RPC that creates them, never logged.
//! - A revocation is appended to the log in the same transaction as the change it records,
//!   and no subscriber hears of it before it is durable.
//! - A mutating RPC answers OK only after its change is flushed and fsynced; after a storage
//!   failure no change is acknowledged again in this process.
//! - Every change that succeeds is in the audit trail, written in the change's own transaction.
//! - A call that outlives its request (a revocation stream) is authorized again while it
//!   lasts, by the same matrix: a deleted account's stream ends.
//! - A revocation stream never skips a sequence: if it cannot serve the next one it ends with
//!   OUT_OF_RANGE. In-memory signals (the `watch` of the durable [`store::Head`]) only wake;
//!   events come from the log, through the tail that holds the durable ones most recently read.
//! - Bad input is never INTERNAL (bar the one case the gRPC spec makes so, a compressed flag
//!   without an encoding): undecodable bytes and broken framing are INVALID_ARGUMENT;
//!   names and emails refuse invisible characters and are kept in one normal form (`domain/text.rs`).
//! - Every zsc.v1 method has a row in the authorization matrix (`api/auth.rs`); a unit test
//!   checks it against the proto.

pub mod accept;
pub mod api;
pub mod backup_client;
pub mod cli;
pub mod client;
pub mod domain;
pub mod metrics;
pub mod peers;
pub mod progress;
pub mod proto;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
#[cfg(feature = "etcd")]
#[doc(hidden)]
pub mod testing;
#[doc(hidden)]
pub mod testkit;
pub mod tls;
#[cfg(feature = "otlp")]
pub mod trace;
/// What [`trace`] offers in a build without the `otlp` feature: nothing is ever exported.
#[cfg(not(feature = "otlp"))]
#[path = "trace_absent.rs"]
pub mod trace;
pub mod verifier;

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
