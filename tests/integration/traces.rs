//! Traces: `zsc serve --otlp-endpoint` exports spans over OTLP/gRPC to a collector this test
//! runs (the OTLP collector's TraceService from `opentelemetry-proto`, served with tonic): a
//! span per RPC with what the log line has, under the caller's `traceparent`, with the store's
//! transaction as a child span, and no secret anywhere in what is exported.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::{common::v1::any_value, trace::v1::Span};
use zsc::proto::*;

use crate::process::{operator_token, sigterm, spawn_zsc_under, Clients};

/// The caller's trace and span, as a W3C traceparent carries them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// Keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves on 127.0.0.1:0 for as long as the test runs; returns its URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        url
    }

    /// Waits (up to 30 s) until a span named `name` in the caller's trace has arrived.
    async fn wait_for(&self, name: &str) -> Vec<Span> {
        let started = Instant::now();
        loop {
            let spans = self.spans.lock().unwrap().clone();
            let trace = hex(TRACE_ID);
            if spans.iter().any(|s| s.name == name && s.trace_id == trace) {
                return spans;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {name} span in the caller's trace among {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A span attribute's value, as text.
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        any_value::Value::DoubleValue(number) => Some(number.to_string()),
        any_value::Value::IntValue(number) => Some(number.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// What a traced zsc exported for one RegenerateKey sent under the caller's traceparent.
struct Traced {
    /// The spans of the caller's trace.
    in_trace: Vec<Span>,
    /// The rpc span among them.
    rpc: Span,
}

impl Traced {
    fn child(&self, name: &str, of: &Span) -> &Span {
        let span = self
            .in_trace
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span: {:#?}", self.in_trace));
        assert_eq!(
            span.parent_span_id, of.span_id,
            "{name} is {}'s child",
            of.name
        );
        span
    }
}

/// Runs zsc (`store_args`: where its store is) exporting to a collector of the test's own,
/// makes an org and a key, regenerates it under the caller's traceparent, stops zsc, and checks
/// that no token or key is in anything exported, from any call.
async fn traced_regenerate(store_args: &[&str]) -> Traced {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir"];
    args.extend([data.to_str().unwrap(), "--otlp-endpoint", &endpoint]);
    args.extend(store_args);
    // The SDK's standard setting: batches go out every 100 ms rather than every 5 s.
    let wrapper = ["env", "OTEL_BSP_SCHEDULE_DELAY=100"];
    let (mut child, _log, addr) = spawn_zsc_under(&wrapper, dir.path(), &args, "info").await;
    let token = operator_token(&data);
    let mut op = Clients::connect(&addr, &token).await;
    let (org_id, admin, first_key) = op.org_with_key("Acme").await;

    let mut regenerate = tonic::Request::new(RegenerateKeyRequest {
        org_id,
        actor_email: admin,
    });
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    regenerate
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let new_key = op
        .keys
        .regenerate_key(regenerate)
        .await
        .unwrap()
        .into_inner()
        .key;

    let spans = collector.wait_for("store.sync").await;
    assert!(sigterm(&mut child).await.success());
    let everything = format!("{:?}", collector.spans.lock().unwrap());
    for secret in [&token, &first_key, &new_key] {
        assert!(
            !everything.contains(secret.as_str()),
            "a secret was exported"
        );
    }
    let in_trace: Vec<Span> = spans
        .into_iter()
        .filter(|s| s.trace_id == hex(TRACE_ID))
        .collect();
    let rpc = in_trace
        .iter()
        .find(|s| s.name == "rpc")
        .unwrap_or_else(|| panic!("no rpc span in the caller's trace: {in_trace:#?}"))
        .clone();
    Traced { in_trace, rpc }
}

#[tokio::test]
async fn an_rpc_is_a_span_in_the_callers_trace_with_the_store_transaction_under_it() {
    let traced = traced_regenerate(&[]).await;
    let rpc = &traced.rpc;
    assert_eq!(rpc.parent_span_id, hex(PARENT_SPAN_ID), "{rpc:#?}");
    assert_eq!(
        attribute(rpc, "method").as_deref(),
        Some("/zsc.v1.KeyService/RegenerateKey")
    );
    assert_eq!(attribute(rpc, "code").as_deref(), Some("OK"), "{rpc:#?}");
    assert_eq!(
        attribute(rpc, "caller").as_deref(),
        Some("operator"),
        "{rpc:#?}"
    );
    let latency: f64 = attribute(rpc, "latency_ms").unwrap().parse().unwrap();
    assert!(latency > 0.0, "{rpc:#?}");
    traced.child("store.transaction", rpc);
    traced.child("store.sync", rpc);
}

/// On etcd, the transaction's round trips (its reads and its guarded write) are its children.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn on_etcd_the_round_trips_are_spans_under_the_store_transaction() {
    let cluster = tokio::task::spawn_blocking(|| zsc::testing::EtcdCluster::start(1))
        .await
        .unwrap();
    let url = cluster.url("/zsc");
    let traced = traced_regenerate(&["--store", &url]).await;
    let transaction = traced.child("store.transaction", &traced.rpc);
    traced.child("etcd.read", transaction);
    traced.child("etcd.txn", transaction);
}
