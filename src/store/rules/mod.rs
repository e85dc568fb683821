//! The rules: closures over the transactional key-value interface (`store/kv.rs`), written once
//! and run by whichever backend holds the store.

pub(super) mod accounts;
pub(in crate::store) mod audit;
pub(super) mod bootstrap;
pub(super) mod bulk;
pub(super) mod confirmations;
pub(super) mod events;
pub(in crate::store) mod keys;
pub(super) mod orgs;
pub(in crate::store) mod revocation;
pub(super) mod turns;
pub(super) mod usage;
