//! Integration tests: the real server on 127.0.0.1:0 with a fresh temp data dir, called
//! through the generated clients. One binary, so the suite links once.

mod access;
mod audit;
mod bad_input;
mod common;
mod conformance;
mod crash;
mod deploy;
mod durability;
mod example;
mod grpcurl;
mod keys;
mod limits;
mod logs;
mod operations;
mod process;
mod python;
mod readme;
#[cfg(feature = "etcd")]
mod replicas;
mod storage;
mod subscribers;
mod tls;
mod users;
mod verifier;
mod watch;
