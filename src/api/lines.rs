//! Which finished calls write a log line, as far as the layers before the log need to know
//! (`observe.rs` decides the line itself; `caller_field.rs` decides when the caller goes on
//! the span).

use std::time::Duration;

/// A call at least this slow is logged whatever it was.
pub const SLOW_CALL: Duration = Duration::from_secs(1);

/// Successful calls that change nothing and are made at a high rate.
pub fn is_read(method: &str) -> bool {
    let name = method.rsplit('/').next().unwrap_or_default();
    (method.starts_with("/zsc.v1.")
        && (name.starts_with("Get") || name.starts_with("List") || name == "ValidateKey"))
        || method == "/grpc.health.v1.Health/Check"
}

/// Whether a call to `method` that succeeds within [`SLOW_CALL`] writes no line: a read,
/// unless `--log-reads`, debug lines or exported spans show it.
pub fn quiet_on_success(method: &str, log_reads: bool) -> bool {
    // Cheapest first; the level is the most verbose one any part of the log may show.
    !log_reads
        && !crate::trace::enabled()
        && tracing::level_filters::LevelFilter::current() < tracing::Level::DEBUG
        && is_read(method)
}
