//! Client-side helpers for calling zsc: the bearer-token interceptor every generated client
//! needs, and a channel with sensible keepalives.

use std::time::Duration;

use tonic::{
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
    transport::{Certificate, ClientTlsConfig, Endpoint},
    Request, Status,
};

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    /// Fails if the token has characters that cannot go in metadata (a real token never does).
    pub fn new(token: &str) -> Result<Self, Status> {
        format!("Bearer {}", token.trim())
            .parse()
            .map(Bearer)
            .map_err(|_| Status::invalid_argument("token is not valid metadata"))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

/// An endpoint with sensible timeouts and HTTP/2 keepalive (so a dead peer is noticed within
/// seconds). `tls_ca` is the PEM of the CA to trust for an `https://` URL.
pub fn endpoint(url: &str, tls_ca: Option<&[u8]>) -> Result<Endpoint, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if let Some(pem) = tls_ca {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))?;
    }
    Ok(endpoint)
}

/// The server's gRPC health status for `service` ("" for the whole server).
pub async fn health(
    url: &str,
    service: &str,
    tls_ca: Option<&std::path::Path>,
) -> Result<tonic_health::pb::health_check_response::ServingStatus, Box<dyn std::error::Error>> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let pem = tls_ca.map(std::fs::read).transpose()?;
    let mut client = HealthClient::new(endpoint(url, pem.as_deref())?.connect().await?);
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let response = tokio::time::timeout(Duration::from_secs(3), client.check(request)).await??;
    Ok(response.into_inner().status())
}
