//! Logging, set up once per process. RUST_LOG filters (default `info`); `--log-format json`
//! is for log shippers; text carries ANSI colour only when stderr is a terminal. Nothing
//! logged anywhere may contain a key or token.
//!
//! Lines a client can cause at will (refused requests, refused connections) go through one
//! [`Throttle`], so that a flood of them is not a flood of log lines.

use std::{
    io::IsTerminal,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use crate::trace::Exporter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up logging, and with an `otlp_endpoint` the span exporter too (`trace.rs`), which the
/// caller shuts down at exit. Without one, no exporter layer exists at all.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Option<Exporter>, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if let Some(endpoint) = otlp_endpoint {
        let exporter = Exporter::start(endpoint)?;
        // The log keeps its own filter; the exporter has its own.
        let log = fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        let log = match format {
            LogFormat::Text => log.with_filter(filter).boxed(),
            LogFormat::Json => log
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_filter(filter)
                .boxed(),
        };
        tracing_subscriber::registry()
            .with(log)
            .with(exporter.layer())
            .init();
        return Ok(Some(exporter));
    }
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
    Ok(None)
}

/// At most [`Throttle::PER_SECOND`] refusal lines are written in any one second; the rest are
/// counted, and [`Throttle::report`] (called every second by the server) writes one line with
/// how many were left out. Cheap to clone; clones share the budget.
#[derive(Clone)]
pub struct Throttle {
    inner: Arc<Mutex<Window>>,
}

struct Window {
    started: Instant,
    written: u32,
    suppressed: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            inner: Arc::new(Mutex::new(Window {
                started: Instant::now(),
                written: 0,
                suppressed: 0,
            })),
        }
    }
}

impl Throttle {
    pub const PER_SECOND: u32 = 10;
    /// How often the left-out count is reported.
    pub const REPORT_EVERY: Duration = Duration::from_secs(1);

    /// Whether a refusal line may be written now; if not, it is counted as left out.
    pub fn allow(&self) -> bool {
        let mut window = self
            .inner
            .lock()
            .expect("the throttle never panics holding it");
        let now = Instant::now();
        if now.duration_since(window.started) >= Duration::from_secs(1) {
            window.started = now;
            window.written = 0;
        }
        if window.written < Self::PER_SECOND {
            window.written += 1;
            true
        } else {
            window.suppressed += 1;
            false
        }
    }

    /// Writes one line saying how many refusal lines were left out since the last report, if any.
    pub fn report(&self) {
        let suppressed = std::mem::take(
            &mut self
                .inner
                .lock()
                .expect("the throttle never panics holding it")
                .suppressed,
        );
        if suppressed > 0 {
            tracing::info!(
                suppressed,
                per_second = Self::PER_SECOND,
                "refusals not logged (over the log rate limit); metrics count every one"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    #[test]
    fn a_burst_gets_the_budget_and_the_rest_is_counted() {
        let throttle = Throttle::default();
        let allowed = (0..1000).filter(|_| throttle.allow()).count();
        // Unless this loop straddled a second, exactly the budget; never more than twice it.
        assert!(
            allowed >= Throttle::PER_SECOND as usize
                && allowed <= 2 * Throttle::PER_SECOND as usize
        );
        let suppressed = throttle.inner.lock().unwrap().suppressed;
        assert_eq!(suppressed as usize + allowed, 1000);
    }
}
