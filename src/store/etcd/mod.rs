//! The etcd backend (cargo feature `etcd`); `backend.rs` says how a store lives on etcd.

mod backend;
mod follow;
mod tx;

pub use backend::EtcdUrl;
pub(in crate::store) use backend::{dump, load_empty, EtcdBackend};
