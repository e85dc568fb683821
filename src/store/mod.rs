//! Storage: every entity, the revocation log and the audit trail, in sled (embedded, the
//! default) or on etcd (feature `etcd`, for replicas). This file is the face: it declares the
//! rooms and re-exports what the rest of the crate may use.
//!
//! Rules over a seam over backends:
//! - `rules/`: the rules (`orgs.rs`, `keys.rs`, `accounts.rs`, `revocation.rs`, `events.rs`,
//!   `audit.rs`, `usage.rs`, `turns.rs`, `bulk.rs`, `bootstrap.rs`), each a closure over the
//!   transactional key-value interface of `kv.rs`, and methods of the [`Store`] handle
//!   (`handle.rs`, a leaf the rules import);
//! - what each server keeps in memory: `view.rs` (the live keys ValidateKey answers from)
//!   and `head.rs` (the durable head, the fault that stops a store, and the head a replica
//!   has confirmed, and when);
//! - the seam: `kv.rs` (what a transaction may do), `tables.rs` (every table and `meta` key,
//!   named once), `records.rs` (how values are encoded), `backend.rs` (which backend runs a
//!   transaction);
//! - the backends: `sled/` (the database, its durability and its private files) and `etcd/`.
//!   `open.rs` opens either and runs the bootstrap rule. A third backend is a folder beside
//!   these two, an arm of `Backend` and an `open_*` in `open.rs`; `conformance.rs` is the suite
//!   it must pass.
//!
//! Every mutation is one transaction (so no crash leaves half a change, and a revocation is
//! logged atomically with the change it records), made durable before it returns: on sled by
//! a shared flush (`sled/durability.rs`), on etcd by the cluster's own quorum fsync.

mod backend;
mod backup;
mod backup_file;
#[cfg(feature = "etcd")]
mod etcd;
mod handle;
mod head;
mod kv;
mod online_backup;
mod open;
mod records;
mod restore;
mod rules;
mod sled;
mod snapshot;
mod tables;
mod view;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod view_props;

pub use self::sled::files::PrivateFile;
pub use self::sled::open::{has_database, StoreOptions, DEFAULT_CACHE_BYTES};
pub use backup::{
    backup, backup_reporting, restore, restore_reporting, verify_backup, BackupReport, Done,
    Progress,
};
#[cfg(feature = "etcd")]
pub use backup::{backup_etcd, restore_etcd};
#[cfg(feature = "etcd")]
pub use etcd::EtcdUrl;
pub use handle::{Fresh, Opened, Store};
pub use head::{Confirmed, Fault, Head};
/// For the `records` fuzz target in `fuzz/`.
#[cfg(feature = "fuzzing")]
pub use records::decode_any as decode_any_record;
pub use rules::bootstrap::{write_token_file, BOOTSTRAP_OPERATOR, OPERATOR_TOKEN_FILE};
#[doc(hidden)]
pub use rules::bulk::BulkOrg;
pub use rules::confirmations::{
    lag_after, ConfirmedBy, NotYet, Presence, RevocationConfirmations, RevocationRef, ServiceState,
    PRESENCE_EVERY, SUBSCRIBED_WINDOW,
};
pub use rules::events::EventLog;
pub use rules::keys::{GeneratedKey, KeyMode};
