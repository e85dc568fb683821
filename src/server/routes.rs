//! What the gRPC listener serves: health, reflection, the four zsc.v1 services, and the layers
//! every call passes through.

use tonic::server::NamedService;
use tonic::transport::server::Router;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService as Statuses};
use tonic_health::ServingStatus;
use tower::layer::util::{Identity, Stack};
use tower::ServiceBuilder;

use super::Config;
use crate::api::{
    AccessApi, AuditApi, AuthLayer, ConfirmationApi, KeyApi, KeyRoutes, Limits, ObserveLayer,
    OperationsApi, RequestLimitLayer, Tail, UserApi,
};
use crate::domain::{Error, Result};
use crate::metrics::Metrics;
use crate::proto::{
    access_service_server::AccessServiceServer, audit_service_server::AuditServiceServer,
    confirmation_service_server::ConfirmationServiceServer, key_service_server::KeyServiceServer,
    operations_service_server::OperationsServiceServer, user_service_server::UserServiceServer,
    FILE_DESCRIPTOR_SET,
};
use crate::shutdown::Shutdown;
use crate::store::{EventLog, Store};
use crate::telemetry::Throttle;

/// Revocations the shared tail keeps in memory, encoded: a stream further behind reads the store.
const RECENT_EVENTS: usize = 4096;

/// The layers every call passes through, as tonic's router holds them.
pub type Layers = Stack<
    ServiceBuilder<Stack<AuthLayer, Stack<RequestLimitLayer, Stack<ObserveLayer, Identity>>>>,
    Identity,
>;

/// The gRPC health service, as served.
pub type HealthService = HealthServer<Statuses>;

/// The services health reports on: the server as a whole (`""`) and each zsc.v1 service.
pub const HEALTH_NAMES: [&str; 7] = [
    "",
    <UserServiceServer<UserApi> as NamedService>::NAME,
    <KeyServiceServer<KeyApi> as NamedService>::NAME,
    <AccessServiceServer<AccessApi> as NamedService>::NAME,
    <AuditServiceServer<AuditApi> as NamedService>::NAME,
    <OperationsServiceServer<OperationsApi> as NamedService>::NAME,
    <ConfirmationServiceServer<ConfirmationApi> as NamedService>::NAME,
];

/// Health, every name SERVING, and its service (limited to `max_message` bytes a request).
pub(super) async fn health(max_message: usize) -> (HealthReporter, HealthService) {
    let reporter = HealthReporter::new();
    set_health(&reporter, ServingStatus::Serving).await;
    let service = HealthServer::new(Statuses::from_health_reporter(reporter.clone()))
        .max_decoding_message_size(max_message);
    (reporter, service)
}

/// Reports `status` for every name in [`HEALTH_NAMES`].
pub(super) async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

/// What the router shares with the rest of the server.
#[derive(Clone, Copy)]
pub(super) struct Shared<'a> {
    pub store: &'a Store,
    pub metrics: &'a Metrics,
    pub refusals: &'a Throttle,
    pub stopping: &'a Shutdown,
}

/// The router of the gRPC listener: every service behind the layers (observe outermost, so
/// that what the limits and auth refuse is logged and counted).
pub(super) fn router(
    config: &Config,
    shared: Shared<'_>,
    health_service: HealthService,
) -> Result<Router<Layers>> {
    let Shared {
        store,
        metrics,
        refusals,
        stopping,
    } = shared;
    let limits = &config.limits;
    let max_message = limits.max_message_bytes;
    let layers = ServiceBuilder::new()
        .layer(ObserveLayer::new(
            metrics.clone(),
            refusals.clone(),
            config.log_reads,
        ))
        .layer(RequestLimitLayer::new(limits))
        .layer(
            AuthLayer::new(store.clone())
                .with_rates(crate::api::Rates::new(&config.rate_limits, metrics.clone()))
                .with_log_reads(config.log_reads),
        );
    let builder = grpc_server(limits);
    let tail = Tail::start(
        EventLog::new(store.clone()),
        RECENT_EVENTS,
        config.watch.heartbeat,
        stopping,
    );
    let key_api = KeyApi::new(
        store.clone(),
        tail,
        config.watch.clone(),
        stopping.clone(),
        metrics.clone(),
    );
    // Both reflection versions: grpcurl 1.8 and Python's grpcio speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(Error::internal)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(Error::internal)?;
    Ok(builder
        .layer(layers)
        .add_service(health_service)
        .add_service(reflection_v1.max_decoding_message_size(max_message))
        .add_service(reflection_v1alpha.max_decoding_message_size(max_message))
        .add_service(
            UserServiceServer::new(UserApi::new(store.clone(), metrics.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(KeyRoutes::new(key_api, max_message))
        .add_service(
            AccessServiceServer::new(AccessApi::new(store.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            AuditServiceServer::new(AuditApi::new(store.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(OperationsServiceServer::new(OperationsApi::new(
            store.clone(),
            config.data_dir.clone(),
        )))
        .add_service(
            ConfirmationServiceServer::new(ConfirmationApi::new(store.clone()))
                .max_decoding_message_size(max_message),
        ))
}

/// A tonic server with the HTTP/2 limits set: tonic leaves hyper's stream limit and h2's
/// reset-flood guard off unless told, and keepalive off.
pub(super) fn grpc_server(limits: &Limits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_local_error_reset_streams(Some(limits.max_local_error_resets))
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
}
