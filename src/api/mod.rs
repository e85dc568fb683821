//! gRPC adapters: parse requests into domain types, call the store, turn results into proto
//! messages. Architecture invariant: only this module (and `server`) knows tonic.

mod access;
mod audit;
mod auth;
mod caller_field;
mod confirmations;
mod convert;
mod framing;
mod keys;
mod layer;
mod limit;
mod lines;
mod observe;
mod operations;
mod rate;
mod stall;
mod status;
mod subscribers;
mod tail;
mod users;
mod watch;
mod watch_route;

pub use access::AccessApi;
pub use audit::AuditApi;
pub use auth::AuthLayer;
pub use confirmations::ConfirmationApi;
pub use keys::KeyApi;
pub use limit::{Limits, RequestLimitLayer, DEFAULT_LIMITS};
pub use observe::ObserveLayer;
pub use operations::OperationsApi;
pub use rate::{AccountRate, Rate, RateLimits, Rates};
pub use subscribers::{DEFAULT_MAX_SUBSCRIBERS, DEFAULT_MAX_SUBSCRIBERS_PER_ACCOUNT};
pub use tail::Tail;
pub use users::UserApi;
pub use watch::WatchConfig;
pub use watch_route::KeyRoutes;

/// What the fuzz targets in `fuzz/` reach that is otherwise private to the adapters.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use super::convert::{page_token, parse_page_token};
}
