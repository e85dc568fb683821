//! [`crate::trace`] in a build without the `otlp` feature (`cargo build --no-default-features`):
//! the same names, and nothing behind them. `--otlp-endpoint` is refused at start, so an
//! operator who asked for traces is told this build cannot make them.

use http::HeaderMap;
use tracing::Span;
use tracing_subscriber::layer::Identity;

/// Never: this build exports no spans.
pub fn enabled() -> bool {
    false
}

/// No exporter can exist in this build: [`Exporter::start`] always refuses.
pub enum Exporter {}

impl Exporter {
    /// Refuses: the OpenTelemetry crates are not in this build.
    pub fn start(endpoint: &str) -> Result<Exporter, String> {
        Err(format!(
            "--otlp-endpoint {endpoint}: this zsc was built without OTLP export \
             (the `otlp` cargo feature, on by default)"
        ))
    }

    /// Unreachable: there is no exporter to make a layer of.
    pub fn layer(&self) -> Identity {
        match *self {}
    }

    /// Unreachable: there is no exporter to shut down.
    pub fn shutdown(self) {
        match self {}
    }
}

/// Nothing to continue: no span is exported.
pub fn continue_from(_span: &Span, _headers: &HeaderMap) {}
