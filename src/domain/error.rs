//! The one error type of the domain and storage layers.
//!
//! Every variant names an outcome a caller can act on; `api::status` maps each to exactly one
//! gRPC code. Nothing here knows tonic or sled.

use std::error::Error as StdError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: an empty, over-long or unparsable field.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller or actor is known but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is valid but the system is not in a state that allows it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Missing, malformed or unknown credentials, or a failed key validation. The message is
    /// deliberately the same whatever was wrong.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A stream cursor the server cannot serve from: the message says what to do.
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// The store refused a write outright, so it was not applied (etcd out of space). `reason`
    /// labels `zsc_store_writes_refused_total`.
    #[error("{message}")]
    WriteRefused {
        reason: &'static str,
        message: String,
    },
    /// The server is shutting down.
    #[error("{0}")]
    Unavailable(&'static str),
    /// Storage failed (disk full, I/O error): the store refuses writes until the server
    /// restarts. The message is for callers; the cause went to the log.
    #[error("{0}")]
    StorageFailed(&'static str),
    /// Storage or I/O failure. Callers see a generic message; the cause goes to the log.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

/// The one message for every failed validation of a well-formed key.
pub const INVALID_EMAIL_OR_KEY: &str = "invalid email or key";

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
    }

    pub fn internal(cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Error::Internal(cause.into())
    }
}
