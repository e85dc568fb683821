//! TLS on the gRPC listener, terminated in the one accept path (`accept.rs`) with tokio-rustls,
//! from a configuration that is swapped whole when the files change.
//!
//! tonic's `ServerTlsConfig` is fixed when the server is built, so rotating a certificate used to
//! take a restart. Here the `rustls::ServerConfig` (certificate, key, the client CA's verifier,
//! ALPN `h2`) sits behind an [`ArcSwap`]: each handshake takes the current one, a reload
//! replaces it, and open connections keep the one they were made with.
//!
//! Reloads: [`ServerTls::reload_forever`] reads the three files every [`POLL`] and rebuilds the
//! configuration when their bytes changed, and at once on SIGHUP. Reading the bytes (not
//! watching inotify events or mtimes) sees every way a file can change, Kubernetes' swap of the
//! `..data` symlink included. Files caught mid-update (a new certificate beside the old key) are
//! refused and tried again when they change again. A refused reload keeps the old configuration.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        server::WebPkiClientVerifier,
        RootCertStore, ServerConfig,
    },
    server::TlsStream,
    TlsAcceptor,
};

use crate::domain::{Error, Result};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// How often the files are read for changes.
pub const POLL: Duration = Duration::from_secs(1);

/// PEM files for TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// The files' bytes, read once: a configuration is built from exactly what was compared.
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl TlsFiles {
    fn read(&self) -> Result<Contents> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| {
                Error::FailedPrecondition(format!("cannot read {}: {e}", path.display()))
            })
        };
        Ok(Contents {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            client_ca: self.client_ca.as_deref().map(read).transpose()?,
        })
    }
}

/// A configuration built from the files, and what the log and the metrics say of it.
struct Loaded {
    config: Arc<ServerConfig>,
    /// The serving certificate's notAfter, in seconds since the Unix epoch.
    not_after: i64,
    serial: String,
    subject: String,
}

fn refused(what: &str, error: impl std::fmt::Display) -> Error {
    Error::FailedPrecondition(format!("{what}: {error}"))
}

impl Contents {
    /// Builds the configuration: the chain and key must parse and match, the CA must hold at
    /// least one certificate.
    fn build(&self, files: &TlsFiles) -> Result<Loaded> {
        let cert_path = files.cert.display();
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| refused(&format!("{cert_path}"), e))?;
        let leaf = chain
            .first()
            .ok_or_else(|| refused(&format!("{cert_path}"), "no certificate in the file"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| refused(&format!("{cert_path}"), e))?;
        let (not_after, serial, subject) = (
            parsed.validity().not_after.timestamp(),
            parsed.raw_serial_as_string(),
            parsed.subject().to_string(),
        );
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| refused(&format!("{}", files.key.display()), e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(Error::internal)?;
        let builder = match (&self.client_ca, &files.client_ca) {
            (Some(pem), Some(path)) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| refused(&format!("{}", path.display()), e))?;
                    roots
                        .add(cert)
                        .map_err(|e| refused(&format!("{}", path.display()), e))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| refused(&format!("{}", path.display()), e))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| refused(&format!("{cert_path} with {}", files.key.display()), e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Loaded {
            config: Arc::new(config),
            not_after,
            serial,
            subject,
        })
    }
}

/// The gRPC listener's TLS: the current configuration and how to reload it. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    /// The whole handshake must be done by then (tonic's `ServerTlsConfig::timeout` did this).
    handshake_timeout: Duration,
    /// The serving certificate's notAfter, for the metric.
    not_after: Mutex<i64>,
    /// The bytes last tried (or why they could not be read), loaded or refused: polling
    /// retries only what changed since, so a broken file is logged once.
    tried: Mutex<std::result::Result<Contents, String>>,
}

impl ServerTls {
    /// Loads the files (at startup: an error here stops zsc before it opens its store).
    pub fn load(files: TlsFiles, handshake_timeout: Duration) -> Result<ServerTls> {
        let contents = files.read()?;
        let loaded = contents.build(&files)?;
        log_loaded(&loaded, "TLS certificate loaded");
        Ok(ServerTls {
            inner: Arc::new(Inner {
                files,
                current: ArcSwap::new(loaded.config),
                handshake_timeout,
                not_after: Mutex::new(loaded.not_after),
                tried: Mutex::new(Ok(contents)),
            }),
        })
    }

    /// The server side of a TLS handshake on `io`, with the configuration current now.
    pub async fn handshake<IO>(&self, io: IO) -> std::io::Result<TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(self.inner.current.load_full());
        tokio::time::timeout(self.inner.handshake_timeout, acceptor.accept(io))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake not done within the handshake timeout",
                )
            })?
    }

    /// Rereads the files; swaps the configuration in when they changed since the last try, or
    /// always when `forced` (SIGHUP). `None` when there was nothing to do, else whether the new
    /// files were taken.
    pub fn reload(&self, forced: bool) -> Option<bool> {
        let files = &self.inner.files;
        let seen = files.read().map_err(|e| e.to_string());
        let mut tried = self.inner.tried.lock().expect("never poisoned");
        if !forced && *tried == seen {
            return None;
        }
        let built = match &seen {
            Ok(contents) => contents.build(files).map_err(|e| e.to_string()),
            Err(error) => Err(error.clone()),
        };
        *tried = seen;
        drop(tried);
        match built {
            Ok(loaded) => {
                log_loaded(&loaded, "TLS certificate reloaded: new connections get it");
                self.inner.current.store(loaded.config);
                *self.inner.not_after.lock().expect("never poisoned") = loaded.not_after;
                Some(true)
            }
            Err(error) => {
                tracing::error!(%error, "TLS files refused; still serving the previous certificate");
                Some(false)
            }
        }
    }

    /// The serving certificate's notAfter (seconds since the Unix epoch).
    pub fn not_after(&self) -> i64 {
        *self.inner.not_after.lock().expect("never poisoned")
    }

    /// Reloads when the files change (read every [`POLL`]) and on SIGHUP, until shutdown.
    pub async fn reload_forever(self, metrics: Metrics, stopping: Shutdown) {
        metrics.tls_certificate(self.not_after());
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP: TLS reloads on file changes only");
                None
            }
        };
        let mut poll = tokio::time::interval(POLL);
        loop {
            let forced = tokio::select! {
                () = stopping.begun() => return,
                Some(()) = async { hangup.as_mut()?.recv().await } => true,
                _ = poll.tick() => false,
            };
            if forced {
                tracing::info!("SIGHUP: reloading the TLS files");
            }
            let this = self.clone();
            let reloaded = tokio::task::spawn_blocking(move || this.reload(forced))
                .await
                .unwrap_or(Some(false));
            if let Some(ok) = reloaded {
                metrics.tls_reload(ok);
                metrics.tls_certificate(self.not_after());
            }
        }
    }
}

fn log_loaded(loaded: &Loaded, message: &str) {
    let not_after = std::time::UNIX_EPOCH + Duration::from_secs(loaded.not_after.max(0) as u64);
    tracing::info!(
        serial = %loaded.serial,
        subject = %loaded.subject,
        not_after = %humantime::format_rfc3339_seconds(not_after),
        "{message}"
    );
}
