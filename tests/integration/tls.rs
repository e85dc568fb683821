//! TLS and mutual TLS, with certificates made here (rcgen), through the generated client,
//! grpcurl -cacert, and the plaintext health listener that probes use.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use zsc::proto::{user_service_client::UserServiceClient, *};
use zsc::server::TlsFiles;

use crate::common::*;
use crate::process::run_zsc;

struct Pki {
    dir: tempfile::TempDir,
    ca: String,
    client_cert: String,
    client_key: String,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A CA, a server certificate for localhost and 127.0.0.1, and a client certificate.
fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_params = CertificateParams::new(vec!["desk.internal".to_owned()]).unwrap();
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    let write = |name: &str, pem: &str| std::fs::write(dir.path().join(name), pem).unwrap();
    write("ca.pem", &ca_cert.pem());
    write("server.pem", &server_cert.pem());
    write("server.key", &server_key.serialize_pem());
    write("client.pem", &client_cert.pem());
    write("client.key", &client_key.serialize_pem());
    Pki {
        ca: ca_cert.pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
        dir,
    }
}

async fn tls_server(pki: &Pki, mutual: bool) -> TestServer {
    let files = TlsFiles {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: mutual.then(|| pki.path("ca.pem")),
    };
    let mut server = TestServer::start_with(tempfile::tempdir().unwrap(), move |d: &Path| {
        let mut config = test_config(d);
        config.tls = Some(files);
        config.health_listen = Some("127.0.0.1:0".parse().unwrap());
        config
    })
    .await;
    // Mutual TLS needs a client certificate the shared helpers do not carry.
    if !mutual {
        server.tls_ca = Some(pki.ca.clone().into_bytes());
    }
    server
}

async fn list_orgs(channel: Channel, token: &str) -> Result<ListOrgsResponse, tonic::Status> {
    let mut client =
        UserServiceClient::with_interceptor(channel, zsc::client::Bearer::new(token).unwrap());
    client
        .list_orgs(ListOrgsRequest::default())
        .await
        .map(tonic::Response::into_inner)
}

async fn grpcurl(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("grpcurl")
        .args(args)
        .output()
        .await
        .expect("grpcurl installed (tests/run.sh)")
}

#[tokio::test]
async fn tls_serves_verified_clients_and_grpcurl_with_cacert() {
    let pki = pki();
    let server = tls_server(&pki, false).await;
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca));
    let channel = connect_tls(&url, tls).await.unwrap();
    list_orgs(channel, &server.operator_token)
        .await
        .expect("a TLS client that trusts the CA is served");

    // Plain text is not served on a TLS port.
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(list_orgs(channel, &server.operator_token).await.is_err());
    }

    let addr = server.addr.to_string();
    let ca = pki.path("ca.pem");
    let listed = grpcurl(&["-cacert", ca.to_str().unwrap(), &addr, "list"]).await;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("zsc.v1.KeyService"));
    let untrusted = grpcurl(&[&addr, "list"]).await;
    assert!(
        !untrusted.status.success(),
        "a client that does not trust the CA is refused"
    );

    // The plaintext health listener, for probes that cannot speak TLS (Kubernetes gRPC probes).
    let health = format!("http://{}", server.health_addr.unwrap());
    let channel = Channel::from_shared(health)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut probe = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = probe
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let other = list_orgs(channel, &server.operator_token)
        .await
        .unwrap_err();
    assert_eq!(
        other.code(),
        tonic::Code::Unimplemented,
        "the health listener serves nothing else"
    );

    // zsc health-check speaks TLS too.
    let output = run_zsc(&[
        "health-check",
        "--url",
        &url,
        "--tls-ca",
        ca.to_str().unwrap(),
    ])
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let pki = pki();
    let server = tls_server(&pki, true).await;
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let anonymous = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca));
    let refused = match connect_tls(&url, anonymous).await {
        Ok(channel) => list_orgs(channel, &server.operator_token).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate is refused");

    let with_cert = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    let channel = connect_tls(&url, with_cert).await.unwrap();
    list_orgs(channel, &server.operator_token)
        .await
        .expect("a client with a certificate is served");

    let addr = server.addr.to_string();
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let auth = format!("authorization: Bearer {}", server.operator_token);
    let args = [
        "-cacert",
        ca.to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
        "-H",
        &auth,
        &addr,
        "zsc.v1.UserService/ListOrgs",
    ];
    let listed = grpcurl(&args).await;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let without = grpcurl(&["-cacert", ca.to_str().unwrap(), &addr, "list"]).await;
    assert!(!without.status.success());
}

#[tokio::test]
async fn the_verifier_follows_revocations_over_tls() {
    let pki = pki();
    let server = tls_server(&pki, false).await;
    let desk = server.account("desk", Role::Consumer).await;
    let mut config = zsc::verifier::VerifierConfig::new(server.url(), desk);
    config.tls_ca = Some(pki.ca.clone().into_bytes());
    let verifier = zsc::verifier::Verifier::start(config).unwrap();
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, _) = server.key(&org_id, &admin).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !verifier.stats().fresh {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the TLS stream never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!verifier.verify(&admin, &key).await.unwrap().cached);
    assert!(verifier.verify(&admin, &key).await.unwrap().cached);
    server.regenerate(&org_id, &admin).await;
    while verifier.stats().applied_sequence != Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revocation never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(matches!(
        verifier.verify(&admin, &key).await,
        Err(zsc::verifier::VerifyError::Rejected)
    ));
}

#[tokio::test]
async fn plain_text_on_a_non_loopback_address_is_refused_at_once_unless_allowed() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        run_zsc(&[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            data.to_str().unwrap(),
        ]),
    )
    .await
    .expect("exits at once");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("plain text") && stderr.contains("--allow-plaintext"),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing was created before refusing");
}

/// A channel to `url` over TLS configured by `tls`.
async fn connect_tls(url: &str, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Channel::from_shared(url.to_owned()).unwrap();
    endpoint.tls_config(tls).unwrap().connect().await
}
