//! Integration tests: the real server on 127.0.0.1:0 with a fresh temp data dir, called
//! through the generated clients. One binary, so the suite links once.

mod access;
mod common;
mod deploy;
mod durability;
mod grpcurl;
mod keys;
mod operations;
mod python;
mod readme;
mod subscribers;
mod tls;
mod users;
mod verifier;
mod watch;
