//! Certificates rotated in place: files laid out as Kubernetes mounts a Secret (`tls.crt ->
//! ..data/tls.crt`, `..data -> ..<version>`, swapped atomically), certificates made here
//! (rcgen), and the certificate a new connection gets read from the client side.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, ServerName},
    ClientConfig, RootCertStore,
};
use zsc::server::TlsFiles;

use crate::accept::assert_nodelay;
use crate::common::*;
use crate::operations::{sample, scrape};
use crate::process::{spawn_zsc, wait_for_log};

const EXPIRY: &str = "zsc_tls_certificate_expiry_timestamp_seconds";
const RELOADS_OK: &str = "zsc_tls_reloads_total{result=\"ok\"}";
const RELOADS_ERROR: &str = "zsc_tls_reloads_total{result=\"error\"}";

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate for localhost and 127.0.0.1 named `name`, valid until January 1st of
/// `until`, and its key.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn leaf(&self, name: &str, until: i32) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
            .unwrap();
        roots
    }
}

/// The Unix time of January 1st of `year`, 00:00 UTC.
fn new_year(year: i32) -> f64 {
    let days = (1970..year)
        .map(|y| {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                366
            } else {
                365
            }
        })
        .sum::<i64>();
    (days * 86_400) as f64
}

/// Publishes `cert` and `key` in `dir` as the kubelet updates a Secret volume: a new
/// `..<version>` directory, then one atomic rename of the `..data` symlink.
fn publish(dir: &Path, version: &str, cert: &str, key: &str) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("tls.crt"), cert).unwrap();
    std::fs::write(versioned.join("tls.key"), key).unwrap();
    let staged = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &staged).unwrap();
    std::fs::rename(&staged, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        if !dir.join(name).exists() {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
}

/// The common name of the certificate a new TLS connection to `addr` is served.
async fn served_name(addr: std::net::SocketAddr, ca: &Ca) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with a certificate the CA signed");
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    let leaf = &session.peer_certificates().expect("a server certificate")[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).unwrap();
    let name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .expect("a common name")
        .to_owned();
    name
}

/// Waits (up to 20 s, then fails) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(server: &TestServer, series: &str) -> f64 {
    let text = scrape(server.metrics_addr.unwrap(), "/metrics").await;
    sample(&text, series)
}

async fn rotating_server(ca: &Ca, dir: &Path) -> TestServer {
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: None,
    };
    let mut server = TestServer::start_with(tempfile::tempdir().unwrap(), move |d: &Path| {
        let mut config = test_config(d);
        config.tls = Some(files);
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        config
    })
    .await;
    server.tls_ca = Some(ca.pem.clone().into_bytes());
    server
}

#[tokio::test]
async fn swapped_files_serve_new_connections_and_broken_ones_are_refused() {
    let ca = Ca::new();
    let secret = tempfile::tempdir().unwrap();
    let dir = secret.path();
    let first = ca.leaf("zsc-first", 2031);
    publish(dir, "v1", &first.cert, &first.key);
    let server = rotating_server(&ca, dir).await;
    assert_eq!(served_name(server.addr, &ca).await, "zsc-first");
    assert_eq!(metric(&server, EXPIRY).await, new_year(2031));

    // A revocation stream opened on the first certificate (its connection stays open).
    let (org_id, admin) = server.org_with_admin("Acme").await;
    server.key(&org_id, &admin).await;
    let mut stream = server.watch(watch_from(None)).await.unwrap();
    next(&mut stream).await.expect("the first checkpoint");
    assert_nodelay("gRPC over TLS", server.addr);

    let second = ca.leaf("zsc-second", 2032);
    publish(dir, "v2", &second.cert, &second.key);
    eventually(
        "new connections never got the second certificate",
        || async { served_name(server.addr, &ca).await == "zsc-second" },
    )
    .await;
    assert_eq!(metric(&server, EXPIRY).await, new_year(2032));
    assert!(metric(&server, RELOADS_OK).await >= 1.0);

    // The stream opened before the swap still delivers.
    server.regenerate(&org_id, &admin).await;
    loop {
        match next(&mut stream).await.expect("the old stream goes on") {
            zsc::proto::watch_revocations_response::Event::Revocation(r) => {
                assert_eq!(r.sequence, 1);
                break;
            }
            _ => continue,
        }
    }

    // A certificate beside a key that is not its own, then a file that is not PEM: refused,
    // and the second certificate stays.
    // (A poll that read the two files across a swap may have counted an error already.)
    let third = ca.leaf("zsc-third", 2033);
    let errors = metric(&server, RELOADS_ERROR).await;
    publish(dir, "v3", &third.cert, &second.key);
    eventually("the mismatched key was not refused", || async {
        metric(&server, RELOADS_ERROR).await > errors
    })
    .await;
    assert_eq!(served_name(server.addr, &ca).await, "zsc-second");
    let errors = metric(&server, RELOADS_ERROR).await;
    publish(dir, "v4", "not a certificate", &second.key);
    eventually("the broken file was not refused", || async {
        metric(&server, RELOADS_ERROR).await > errors
    })
    .await;
    assert_eq!(served_name(server.addr, &ca).await, "zsc-second");
    assert_eq!(metric(&server, EXPIRY).await, new_year(2032));
    server.orgs().await;
}

#[tokio::test]
async fn sighup_reloads_the_tls_files() {
    let ca = Ca::new();
    let work = tempfile::tempdir().unwrap();
    let first = ca.leaf("zsc-first", 2031);
    let (cert, key): (PathBuf, PathBuf) = (work.path().join("c.pem"), work.path().join("k.pem"));
    std::fs::write(&cert, &first.cert).unwrap();
    std::fs::write(&key, &first.key).unwrap();
    let data = work.path().join("data");
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let (child, log, addr) = spawn_zsc(work.path(), &args, "info").await;
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert_eq!(served_name(addr, &ca).await, "zsc-first");

    // Unchanged files: only SIGHUP reloads them (polling reloads what changed).
    let pid = child.id().unwrap() as libc::pid_t;
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let reloaded = wait_for_log(&log, "TLS certificate reloaded", Duration::from_secs(20)).await;
    assert!(
        reloaded.is_some_and(|line| line.contains("zsc-first")),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(served_name(addr, &ca).await, "zsc-first");
    drop(child);
}
