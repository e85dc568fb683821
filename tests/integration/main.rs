//! Integration tests: the real server on 127.0.0.1:0 with a fresh temp data dir, called
//! through the generated clients. One binary, so the suite links once.

mod accept;
mod access;
mod audit;
mod backup;
mod bad_input;
mod common;
mod confirmations;
mod conformance;
mod crash;
mod deploy;
mod durability;
mod example;
mod fsync;
mod grpcurl;
mod history;
mod keys;
mod limits;
mod logs;
#[cfg(feature = "etcd")]
mod nospace;
mod operations;
mod process;
mod prometheus;
mod python;
mod rates;
mod readme;
#[cfg(feature = "etcd")]
mod readpath;
#[cfg(feature = "etcd")]
mod replicas;
#[cfg(feature = "etcd")]
mod stale;
mod stalls;
mod storage;
mod subscribers;
mod tls;
mod tls_reload;
#[cfg(feature = "otlp")]
mod traces;
mod upgrade;
mod users;
mod verifier;
mod watch;
