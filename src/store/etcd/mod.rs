//! The etcd backend (cargo feature `etcd`): replicas of zsc over one etcd cluster.
//! `backend.rs` says how a store lives on etcd; one file per concern:
//! - `url.rs`: the store URL, the connection, and each entry's key;
//! - `tx.rs`: optimistic transactions (the rules run here);
//! - `follow.rs`: the one watch per replica, which keeps `mirror.rs` (the tables read without
//!   a round trip), the validation view and the durable head (`store/head.rs`) current;
//! - `barrier.rs`: the shared linearizable read a call waits on, and the head it confirms;
//! - `probe.rs`: the health probe; `errors.rs`: what a client error means;
//! - `read.rs`: every read, retried, and the one paged range read;
//! - `snapshot.rs`: the whole store at one revision, and loading one into an empty prefix.

mod backend;
mod barrier;
mod errors;
mod follow;
mod mirror;
mod probe;
mod read;
mod snapshot;
mod tx;
mod url;

pub(in crate::store) use backend::EtcdBackend;
pub(in crate::store) use snapshot::{load_empty, snapshot_of};
pub use url::EtcdUrl;
