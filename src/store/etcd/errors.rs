//! What an etcd client error means for the caller: sent or not, and so safe to retry or of
//! unknown outcome.

use crate::domain::Error;
use crate::store::head::{Fault, UNREACHABLE};

/// A request that never left this process (the connection to that member was already dead):
/// safe to send again at once, whatever it was.
pub(super) fn never_sent(error: &etcd_client::Error) -> bool {
    let text = format!("{error:?}"); // not shown: matched against the kinds of failure
    text.contains("tcp connect error") || text.contains("Connection refused")
}

pub(super) fn unavailable() -> Error {
    Error::Unavailable(UNREACHABLE)
}

pub(super) fn unreachable_cluster(error: &etcd_client::Error) -> Error {
    tracing::warn!(%error, "etcd request failed");
    unavailable()
}

/// A write whose outcome is unknown (sent, then the connection or leader failed): it may have
/// committed. The caller is told so rather than the change being applied twice. Unless etcd
/// refused it outright: out of space (NOSPACE), nothing was applied.
pub(super) fn ambiguous(error: &etcd_client::Error) -> Error {
    if let etcd_client::Error::GRpcStatus(status) = error {
        if status.code() == tonic::Code::ResourceExhausted
            && status.message().contains("database space exceeded")
        {
            tracing::warn!(%error, "etcd refused a write: out of space (NOSPACE alarm)");
            return Fault::OutOfSpace(status.message().to_owned()).refusal();
        }
    }
    tracing::warn!(%error, "etcd write failed after it was sent; its outcome is unknown");
    Error::Unavailable(
        "the etcd cluster failed while committing this change: it may or may not have been \
         applied; read the state before retrying",
    )
}

impl From<etcd_client::Error> for Error {
    fn from(error: etcd_client::Error) -> Self {
        unreachable_cluster(&error)
    }
}
