//! The one table from domain errors to gRPC statuses.

use tonic::{metadata::MetadataMap, Code, Status};

use crate::domain::Error;

/// The response header that names why the store refused a write
/// (`zsc_store_writes_refused_total{reason}`).
pub const WRITE_REFUSED: &str = "zsc-write-refused";

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::OutOfRange(m) => Status::out_of_range(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            Error::WriteRefused { reason, message } => {
                // Named in a header, so that the observe layer counts it by reason.
                let mut metadata = MetadataMap::new();
                metadata.insert(
                    WRITE_REFUSED,
                    reason.parse().expect("a static ASCII reason"),
                );
                Status::with_metadata(Code::ResourceExhausted, message, metadata)
            }
            Error::Unavailable(m) | Error::StorageFailed(m) => Status::unavailable(m),
            // The caller learns nothing about our internals; the log gets the whole cause.
            Error::Internal(cause) => {
                tracing::error!(error = &*cause as &dyn std::error::Error, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
