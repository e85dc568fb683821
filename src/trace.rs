//! Traces over OTLP/gRPC: `zsc serve --otlp-endpoint URL` (or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) exports one span per RPC (`rpc`: method, caller, code,
//! latency_ms; what the log line has, never a secret) continuing the caller's W3C `traceparent`,
//! with the store's transaction and durable flush of a change as child spans (and on etcd, each
//! round trip under the transaction).
//!
//! Off by default, and then nothing of this runs: no layer is installed, [`enabled`] is false,
//! and the store's spans are `debug` spans that the `info` log filter never creates.
//! On, the exporter has its own filter (zsc's spans and events down to `debug`, nothing from
//! other crates, so its own tonic client is never traced), apart from the log's `RUST_LOG`.

use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use opentelemetry::{propagation::Extractor, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{filter::Targets, registry::LookupSpan, Layer};

/// Set once, when an exporter starts; read for every RPC.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (the RPC layer then records more on its span).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The OTLP exporter. Spans go out in batches from a thread of the SDK's own; [`Exporter::shutdown`]
/// sends what is left.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Connects (lazily) to the OTLP/gRPC collector at `endpoint`. Call inside the tokio runtime:
    /// the exporter's tonic channel runs on it.
    pub fn start(endpoint: &str) -> Result<Exporter, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
        let resource = Resource::builder().with_service_name("zsc").build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Exporter { provider })
    }

    /// The layer that turns zsc's spans into OTLP spans.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let only_zsc = Targets::new().with_target("zsc", tracing::Level::DEBUG);
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("zsc"))
            .with_filter(only_zsc)
    }

    /// Exports the spans still queued. Blocks: call it off the runtime's workers.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("exporting the last spans failed: {error}");
        }
    }
}

/// Makes `span` a child of the caller's span, when the request carries a `traceparent`.
pub fn continue_from(span: &Span, headers: &HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Headers(headers))
    });
    // Fails only when no exporter layer is installed, and `enabled()` says one is.
    let _ = span.set_parent(parent);
}

/// An HTTP/2 request's headers, as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}
