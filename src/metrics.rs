//! Prometheus metrics (prometheus-client, one registry per server) and the HTTP endpoint that
//! serves them on `--metrics-listen`.

use std::{convert::Infallible, io, path::PathBuf, sync::Arc};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio_stream::wrappers::ReceiverStream;

mod confirmations;
pub use confirmations::{Behind, MAX_LABELLED_SERVICES};

use crate::shutdown::Shutdown;
use crate::store::{EventLog, Store};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Every metric zsc exports; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    rpcs: Family<RpcLabels, Counter>,
    rpc_seconds: Family<RpcLabels, Histogram>,
    validations: Family<ResultLabels, Counter>,
    revocations: Family<ReasonLabels, Counter>,
    subscribers: Gauge,
    subscribers_ended: Family<ReasonLabels, Counter>,
    writes_refused: Family<ReasonLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    head: Gauge,
    db_bytes: Gauge,
    /// Registered only when the server serves TLS.
    tls_expiry: Gauge,
    tls_reloads: Family<ResultLabels, Counter>,
    sampled: SampledGauges,
    confirmations: confirmations::ConfirmationMetrics,
}

/// What is read at each scrape (`serve`'s `scrape` hook), for the gauges of the same names.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scrape {
    /// The durable head of the revocation log.
    pub head: u64,
    /// The sled database's size on disk (0 on etcd).
    pub db_bytes: u64,
    /// The data dir's filesystem: bytes available to zsc, and its size (None if statvfs failed).
    pub data_dir: Option<(u64, u64)>,
    /// Whether health reports SERVING (no storage fault, not shutting down).
    pub serving: bool,
    /// Whether the store refuses writes (a storage fault; on etcd, a cluster out of reach).
    pub refusing_writes: bool,
}

/// The gauges [`Scrape`] sets, which alerting rules read (deploy/monitoring/zsc-rules.yaml).
#[derive(Default)]
struct SampledGauges {
    free: Gauge,
    capacity: Gauge,
    serving: Gauge,
    refusing_writes: Gauge,
}

impl SampledGauges {
    fn register(&self, registry: &mut Registry) {
        let gauges = [
            (
                "data_dir_free_bytes",
                "Bytes available to zsc on the data dir's filesystem",
                &self.free,
            ),
            (
                "data_dir_capacity_bytes",
                "Size of the data dir's filesystem",
                &self.capacity,
            ),
            (
                "serving",
                "1 while gRPC health reports SERVING, else 0",
                &self.serving,
            ),
            (
                "store_refusing_writes",
                "1 while the store refuses every change (storage fault; etcd out of reach), else 0",
                &self.refusing_writes,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
    }

    fn set(&self, scrape: &Scrape) {
        if let Some((free, capacity)) = scrape.data_dir {
            self.free.set(free as i64);
            self.capacity.set(capacity as i64);
        }
        self.serving.set(scrape.serving.into());
        self.refusing_writes.set(scrape.refusing_writes.into());
    }
}

/// How a ValidateKey call ended, for `zsc_key_validations_total{result}`.
#[derive(Clone, Copy, Debug)]
pub enum ValidationOutcome {
    Ok,
    Failed,
    Malformed,
}

/// The TLS certificate's expiry and its reloads, registered when `tls` (a server without TLS
/// exports neither; both reload results are exported from the start, at 0).
fn tls_metrics(registry: &mut Registry, tls: bool) -> (Gauge, Family<ResultLabels, Counter>) {
    let expiry = Gauge::default();
    let reloads = Family::<ResultLabels, Counter>::default();
    if tls {
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the serving TLS certificate expires (its notAfter), in Unix seconds",
            expiry.clone(),
        );
        registry.register(
            "tls_reloads",
            "Reloads of the TLS files (on change or SIGHUP), by result (ok, error)",
            reloads.clone(),
        );
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ResultLabels { result });
        }
    }
    (expiry, reloads)
}

/// What zsc refused or ended, by why: stalled subscribers, writes the store refused, rate-limited
/// calls.
fn refusal_metrics(
    registry: &mut Registry,
) -> (
    Family<ReasonLabels, Counter>,
    Family<ReasonLabels, Counter>,
    Family<LimitLabels, Counter>,
) {
    let subscribers_ended = Family::<ReasonLabels, Counter>::default();
    registry.register(
        "revocation_subscribers_ended",
        "WatchRevocations streams ended by the server, by reason (stalled: the subscriber \
         read nothing for --subscriber-stall-timeout)",
        subscribers_ended.clone(),
    );
    let writes_refused = Family::<ReasonLabels, Counter>::default();
    registry.register(
        "store_writes_refused",
        "Writes the store refused outright, not applied, by reason (nospace: etcd is out of \
         space)",
        writes_refused.clone(),
    );
    let rate_limited = Family::<LimitLabels, Counter>::default();
    registry.register(
        "rate_limited",
        "Calls refused RESOURCE_EXHAUSTED by a rate limit, by limit (account: --rate-limit; \
         address: --auth-failure-limit)",
        rate_limited.clone(),
    );
    (subscribers_ended, writes_refused, rate_limited)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(false)
    }
}

impl Metrics {
    /// Every metric; the TLS ones only when the server serves TLS.
    pub fn new(tls: bool) -> Self {
        let mut registry = Registry::with_prefix("zsc");
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "gRPC requests handled, by method and status code",
            rpcs.clone(),
        );
        let rpc_seconds = Family::<RpcLabels, Histogram>::new_with_constructor(|| {
            // 100 µs .. ~3 s.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 2.0, 16,
            ))
        });
        registry.register(
            "rpc_duration_seconds",
            "gRPC request latency, by method and status code",
            rpc_seconds.clone(),
        );
        let validations = Family::<ResultLabels, Counter>::default();
        registry.register(
            "key_validations",
            "ValidateKey calls, by result (ok, failed, malformed)",
            validations.clone(),
        );
        let revocations = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "revocations",
            "Keys revoked, by reason",
            revocations.clone(),
        );
        let subscribers = Gauge::default();
        registry.register(
            "revocation_subscribers",
            "Open WatchRevocations streams",
            subscribers.clone(),
        );
        let (subscribers_ended, writes_refused, rate_limited) = refusal_metrics(&mut registry);
        let head = Gauge::default();
        registry.register(
            "revocation_head_sequence",
            "Durable head of the revocation log",
            head.clone(),
        );
        let db_bytes = Gauge::default();
        registry.register(
            "database_size_bytes",
            "Size of the sled database on disk",
            db_bytes.clone(),
        );
        let (tls_expiry, tls_reloads) = tls_metrics(&mut registry, tls);
        let sampled = SampledGauges::default();
        sampled.register(&mut registry);
        let confirmations = confirmations::ConfirmationMetrics::register(&mut registry);
        Metrics {
            inner: Arc::new(Inner {
                registry,
                rpcs,
                rpc_seconds,
                validations,
                revocations,
                subscribers,
                subscribers_ended,
                writes_refused,
                rate_limited,
                head,
                db_bytes,
                tls_expiry,
                tls_reloads,
                sampled,
                confirmations,
            }),
        }
    }
}

impl Metrics {
    pub fn rpc(&self, method: &'static str, code: &'static str, seconds: f64) {
        let labels = RpcLabels { method, code };
        self.inner.rpcs.get_or_create(&labels).inc();
        self.inner
            .rpc_seconds
            .get_or_create(&labels)
            .observe(seconds);
    }

    pub fn validation(&self, outcome: ValidationOutcome) {
        let result = match outcome {
            ValidationOutcome::Ok => "ok",
            ValidationOutcome::Failed => "failed",
            ValidationOutcome::Malformed => "malformed",
        };
        self.inner
            .validations
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The serving certificate's notAfter, in Unix seconds.
    pub fn tls_certificate(&self, not_after: i64) {
        self.inner.tls_expiry.set(not_after);
    }

    pub fn tls_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.inner
            .tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn revocation(&self, reason: &str) {
        self.inner
            .revocations
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A revocation stream the server ended, for `zsc_revocation_subscribers_ended_total`.
    pub fn subscriber_ended(&self, reason: &str) {
        self.inner
            .subscribers_ended
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A write the store refused, for `zsc_store_writes_refused_total`.
    pub fn write_refused(&self, reason: &str) {
        self.inner
            .writes_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A call refused by a rate limit, for `zsc_rate_limited_total{limit}`.
    pub fn rate_limited(&self, limit: &'static str) {
        self.inner
            .rate_limited
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// A revocation every subscribed service has confirmed, `seconds` after it was made.
    pub fn revocation_confirmed(&self, seconds: f64) {
        self.inner.confirmations.confirmed(seconds);
    }

    /// How many services are subscribed, and how far behind each is.
    pub fn confirmation_fleet(&self, subscribed: usize, behind: Vec<Behind>) {
        self.inner.confirmations.fleet(subscribed, behind);
    }

    /// Counts an open stream until the guard is dropped.
    pub fn subscriber(&self) -> SubscriberGuard {
        self.inner.subscribers.inc();
        SubscriberGuard(self.clone())
    }

    /// The text exposition, after setting the gauges read at scrape time.
    fn render(&self, scrape: &Scrape) -> String {
        self.inner.head.set(scrape.head as i64);
        self.inner.db_bytes.set(scrape.db_bytes as i64);
        self.inner.sampled.set(scrape);
        let mut text = String::new();
        encode(&mut text, &self.inner.registry).expect("writing to a String cannot fail");
        text
    }
}

/// What the server reads at each scrape: the log's durable head, the database's size, the data
/// dir's free space (one statvfs), and the health state (a storage fault, or shutdown begun).
pub fn scrape_hook(
    store: Store,
    data_dir: PathBuf,
    stopping: Shutdown,
) -> Arc<dyn Fn() -> Scrape + Send + Sync> {
    let log = EventLog::new(store.clone());
    Arc::new(move || {
        let head = store.head().borrow().clone();
        let refusing_writes = head.fault.is_some();
        Scrape {
            head: head.applied,
            db_bytes: log.size_on_disk().unwrap_or(0),
            data_dir: fs2::available_space(&data_dir)
                .and_then(|free| Ok((free, fs2::total_space(&data_dir)?)))
                .ok(),
            serving: !refusing_writes && !stopping.has_begun(),
            refusing_writes,
        }
    })
}

pub struct SubscriberGuard(Metrics);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.inner.subscribers.dec();
    }
}

/// Serves `GET /metrics` until shutdown begins (its connections are tracked); `scrape_values`
/// reads what the gauges sampled at scrape time show.
pub async fn serve<C>(
    mut connections: ReceiverStream<io::Result<C>>,
    metrics: Metrics,
    scrape_values: Arc<dyn Fn() -> Scrape + Send + Sync>,
    shutdown: Shutdown,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    loop {
        let stream = tokio::select! {
            () = shutdown.begun() => return,
            accepted = connections.next() => match accepted {
                Some(Ok(connection)) => connection,
                Some(Err(error)) => {
                    tracing::warn!(%error, "metrics listener accept failed");
                    continue;
                }
                None => return,
            },
        };
        let metrics = metrics.clone();
        let scrape_values = scrape_values.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = if request.uri().path() == "/metrics" {
                    let scrape = scrape_values();
                    Response::builder()
                        .header(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(Full::new(Bytes::from(metrics.render(&scrape))))
                } else {
                    Response::builder()
                        .status(404)
                        .body(Full::new(Bytes::from_static(b"see /metrics\n")))
                };
                async move { Ok::<_, Infallible>(response.expect("static parts are valid")) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
