//! The rules: closures over the transactional key-value interface (`store/kv.rs`), written once
//! and run by whichever backend holds the store.

pub(super) mod accounts;
pub(super) mod audit;
pub(super) mod bootstrap;
pub(super) mod bulk;
pub(super) mod events;
pub(super) mod keys;
pub(super) mod orgs;
pub(super) mod revocation;
pub(super) mod turns;
pub(super) mod usage;
