//! gRPC adapters: parse requests into domain types, call the store, turn results into proto
//! messages. Architecture invariant: only this module (and `server`) knows tonic.

mod access;
mod auth;
mod convert;
mod keys;
mod limit;
mod observe;
mod status;
mod subscribers;
mod users;
mod watch;

pub use access::AccessApi;
pub use auth::AuthLayer;
pub use keys::KeyApi;
pub use limit::{RequestLimitLayer, MAX_REQUEST_BYTES};
pub use observe::ObserveLayer;
pub use subscribers::{DEFAULT_MAX_SUBSCRIBERS, DEFAULT_MAX_SUBSCRIBERS_PER_ACCOUNT};
pub use users::UserApi;
pub use watch::WatchConfig;
