//! The sled backend (the default): one embedded database in the data dir.

pub(super) mod backend;
pub(super) mod batch;
pub(super) mod durability;
pub(super) mod files;
pub(super) mod open;
pub(super) mod transaction;
pub(super) mod writer;
