//! The revocation-confirmation metrics: how long the fleet takes to drop a revoked key, and how
//! far behind each subscribed service is. Set by the server's confirmation tracker
//! (`server/confirmations.rs`) once a second.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Services labelled in the per-service gauges at most (the furthest behind first), so that a
/// fleet of many accounts cannot grow the series without bound.
pub const MAX_LABELLED_SERVICES: usize = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

/// One subscribed service's distance from the log's head.
#[derive(Clone, Debug)]
pub struct Behind {
    pub service: String,
    /// Revocations it has not applied yet.
    pub sequences: u64,
    /// Age of the oldest revocation it has not applied (0 when it is current).
    pub seconds: f64,
}

pub(super) struct ConfirmationMetrics {
    confirmed: Histogram,
    behind_sequences: Family<ServiceLabels, Gauge>,
    behind_seconds: Family<ServiceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    subscribed: Gauge,
    unconfirmed: Gauge,
    /// The largest of `behind_seconds`, exported from the start (0 with no one behind), for
    /// the alert: a family has no series until a service is subscribed.
    behind_max_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl ConfirmationMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = ConfirmationMetrics {
            // 1 ms .. ~65 s.
            confirmed: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 17,
            )),
            behind_sequences: Family::default(),
            behind_seconds: Family::default(),
            subscribed: Gauge::default(),
            unconfirmed: Gauge::default(),
            behind_max_seconds: Gauge::default(),
        };
        registry.register(
            "revocation_confirmation_seconds",
            "Time from a revocation's acknowledgement to its confirmation by every subscribed \
             service (each replica observes every revocation)",
            metrics.confirmed.clone(),
        );
        registry.register(
            "revocation_confirmation_behind_sequences",
            "Revocations a subscribed service has not confirmed applying, by service",
            metrics.behind_sequences.clone(),
        );
        registry.register(
            "revocation_confirmation_behind_seconds",
            "Age of the oldest revocation a subscribed service has not confirmed, by service",
            metrics.behind_seconds.clone(),
        );
        registry.register(
            "revocation_subscribed_services",
            "Services that reported or held a revocation stream within the subscribed window",
            metrics.subscribed.clone(),
        );
        registry.register(
            "revocation_unconfirmed_services",
            "Subscribed services that have not confirmed every revocation up to the head",
            metrics.unconfirmed.clone(),
        );
        registry.register(
            "revocation_confirmation_behind_max_seconds",
            "The largest revocation_confirmation_behind_seconds of any subscribed service (0: all current)",
            metrics.behind_max_seconds.clone(),
        );
        metrics
    }

    pub(super) fn confirmed(&self, seconds: f64) {
        self.confirmed.observe(seconds);
    }

    pub(super) fn fleet(&self, subscribed: usize, mut behind: Vec<Behind>) {
        self.subscribed.set(subscribed as i64);
        self.unconfirmed
            .set(behind.iter().filter(|b| b.sequences > 0).count() as i64);
        let max = behind.iter().map(|b| b.seconds).fold(0.0, f64::max);
        self.behind_max_seconds.set(max);
        behind.sort_by(|a, b| {
            b.sequences
                .cmp(&a.sequences)
                .then(a.service.cmp(&b.service))
        });
        behind.truncate(MAX_LABELLED_SERVICES);
        self.behind_sequences.clear();
        self.behind_seconds.clear();
        for b in behind {
            let labels = ServiceLabels { service: b.service };
            self.behind_sequences
                .get_or_create(&labels)
                .set(b.sequences as i64);
            self.behind_seconds.get_or_create(&labels).set(b.seconds);
        }
    }
}
