//! zsc: the service communication key (ZSC key) service.
//!
//! # Bird's-eye view
//! A CRM administrator generates the org's ZSC key; other services (Recruit, Desk, ...) are
//! configured with "admin email + key" and validate it here. zsc keeps orgs, users, keys and
//! service accounts in an embedded sled database, appends every revocation to a gapless,
//! durable log, and streams that log to subscribers so they drop a dead key within
//! milliseconds. Callers are service accounts with a role (operator, console, consumer).
//!
//! # Code map
//! Dependencies point one way: `domain` <- `store` <- `api` <- `server` <- `main`.
//! - [`domain`]: the ZSC rules and validated types (`Email`, `OrgId`, `ZscKey`, ...), the
//!   error enum. No sled, no tonic.
//! - [`store`]: the rules, written once against a small transactional key-value interface
//!   (`store/kv.rs`), and two backends: sled (embedded, the default: one transaction per
//!   mutation, group-committed flushes with an fsync and the write fence in
//!   `store/durability.rs`, private files in `store/files.rs`) and etcd (feature `etcd`:
//!   optimistic transactions, one watch per replica). The trees are named once
//!   (`store/tables.rs`). The revocation log ([`store::EventLog`]), the audit trail
//!   (`store/audit.rs`), key usage counted in memory (`store/usage.rs`), offline backup and
//!   restore (`store/backup.rs`, streamed), and the load bench's bulk loader (`store/bulk.rs`:
//!   CreateOrg, CreateUser and GenerateKey's rules for many orgs in one transaction). A
//!   conformance suite (`store/conformance.rs`) runs the same tests against both backends.
//! - [`api`]: the gRPC adapters: one struct per service, request parsing, the error-to-status
//!   table (`api/status.rs`), the authorization matrix (`api/auth.rs`), the limits and
//!   their defaults (`api/limit.rs`), the framing check (`api/framing.rs`), the revocation
//!   stream (`api/watch.rs`) fed by the one shared tail of the log (`api/tail.rs`) and served
//!   pre-encoded (`api/watch_route.rs`), its caps (`api/subscribers.rs`), and the audit trail
//!   (`api/audit.rs`).
//! - [`proto`]: the generated zsc.v1 types, clients and servers, and their codec (a request
//!   that does not decode is INVALID_ARGUMENT, `proto/codec.rs`).
//! - [`server`]: [`server::Server::open`] + [`server::Server::run`], the one way to start;
//!   [`shutdown`]: the one shutdown signal, and the connections and streams it ends;
//!   `server/fault.rs`: what the server does when its storage fails or its etcd is out of
//!   reach (NOT_SERVING, and on sled an exit for a restart).
//! - [`metrics`]: the Prometheus registry and its `/metrics` endpoint.
//! - [`cli`], [`telemetry`]: flags and logging for the binary; [`trace`]: spans exported over
//!   OTLP when `--otlp-endpoint` is given (nothing installed otherwise); [`progress`]: what `zsc backup`
//!   and `zsc restore` show on a terminal while they run, and the rate they report.
//! - `testing` (feature `etcd`): a real etcd cluster on loopback for the tests and benches.
//! - [`client`], [`verifier`]: the client side. `Verifier` is what a consuming service embeds:
//!   a cache of validated keys kept honest by the revocation stream. It depends on `proto` and
//!   `domain` only, never on the server.
//!
//! # Architecture invariants
//! - On the server side, only `api`, `server` and `shutdown` know tonic; only `store` knows sled
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
//!   OUT_OF_RANGE. In-memory signals (the durable-head `watch`) only wake; events come from
//!   the log, through the tail that holds the durable ones most recently read.
//! - Bad input is never INTERNAL (bar the one case the gRPC spec makes so, a compressed flag
//!   without an encoding): undecodable bytes and broken framing are INVALID_ARGUMENT;
//!   names and emails refuse invisible characters and are kept in one normal form (`domain/text.rs`).
//! - Every zsc.v1 method has a row in the authorization matrix (`api/auth.rs`); a unit test
//!   checks it against the proto.

pub mod api;
pub mod cli;
pub mod client;
pub mod domain;
pub mod metrics;
pub mod progress;
pub mod proto;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
#[cfg(feature = "etcd")]
#[doc(hidden)]
pub mod testing;
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
