//! Client-side helpers for calling zsc: the bearer-token interceptor every generated client
//! needs, and a channel with sensible keepalives.

use std::time::Duration;

use tonic::{
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
    transport::{Channel, Endpoint},
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

/// A lazily connecting channel with HTTP/2 keepalive, so a dead peer is noticed within seconds.
pub fn channel(url: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// `zsc health-check`: exit 0 when the server reports SERVING for `service`.
pub async fn health_check(
    url: &str,
    service: &str,
    tls_ca: Option<&std::path::Path>,
) -> std::process::ExitCode {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let outcome = async {
        let mut endpoint =
            Endpoint::from_shared(url.to_owned())?.connect_timeout(Duration::from_secs(3));
        if let Some(ca) = tls_ca {
            let pem = std::fs::read(ca)?;
            endpoint = endpoint.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            )?;
        }
        let mut client = HealthClient::new(endpoint.connect().await?);
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let status = tokio::time::timeout(Duration::from_secs(3), client.check(request))
            .await??
            .into_inner()
            .status();
        Ok::<_, Box<dyn std::error::Error>>(status)
    };
    match outcome.await {
        Ok(ServingStatus::Serving) => {
            println!("SERVING");
            std::process::ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("{}", status.as_str_name());
            std::process::ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("zsc health-check: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
