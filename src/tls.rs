//! TLS (and mTLS) for the gRPC port, with certificate files re-read while serving.
//!
//! cert-manager and the kubelet replace mounted Secrets in place, so the files are checked every
//! [`FILE_POLL`]; a new set that loads applies to the next connection, one that does not is logged
//! and the previous set stays. Established connections keep the certificate they started with.
//!
//! Within the crate it may use no other module (a leaf).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

/// How often the files are checked for a change.
pub const FILE_POLL: Duration = Duration::from_secs(1);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files of `--tls-cert`, `--tls-key` and `--tls-client-ca`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
    /// With it, clients must present a certificate signed by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS files did not make a server config.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no usable PEM.
    #[error("{flag} {path}: {message}")]
    File {
        /// The flag that named the file, e.g. `--tls-key`.
        flag: &'static str,
        /// The file, as given.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the certificate and key together (e.g. a key that does not match).
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify client certificates.
    #[error("--tls-client-ca: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

impl TlsFiles {
    fn contents(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut all = vec![std::fs::read(&self.cert)?, std::fs::read(&self.key)?];
        if let Some(ca) = &self.client_ca {
            all.push(std::fs::read(ca)?);
        }
        Ok(all)
    }

    /// Loads and checks the files into a server config (HTTP/2 only, as gRPC needs).
    pub fn load(&self) -> Result<ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs = read_certs("--tls-cert", &self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| file_error("--tls-key", &self.key, e))?;
        let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs("--tls-client-ca", path)? {
                    roots.add(cert).map_err(|e| file_error("--tls-client-ca", path, e))?;
                }
                builder.with_client_cert_verifier(
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?,
                )
            }
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn read_certs(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(std::iter::Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| file_error(flag, path, e))?;
    if certs.is_empty() {
        return Err(file_error(flag, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn file_error(flag: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File { flag, path: path.display().to_string(), message: e.to_string() }
}

/// The current server config, replaced when the files change.
pub struct Certificates {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl Certificates {
    /// Loads the files; fails (naming the flag and file) when they do not make a valid set.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let config = files.load()?;
        Ok(Arc::new(Self { files, current: RwLock::new(Arc::new(config)) }))
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }

    /// Re-reads the files whenever their contents change, until `shutdown`.
    pub async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last = self.files.contents().ok();
        let mut ticker = tokio::time::interval(FILE_POLL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let Ok(now) = self.files.contents() else { continue };
            if last.as_ref() == Some(&now) {
                continue;
            }
            match self.files.load() {
                Ok(config) => {
                    *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
                    info!("TLS certificates reloaded");
                }
                // A half-written set (cert updated, key not yet) fails here and loads on a later tick.
                Err(e) => error!("TLS certificates not reloaded, the previous ones stay: {e}"),
            }
            last = Some(now);
        }
    }
}

/// TLS connections accepted on `listener`, handshaken off the accept loop.
pub fn incoming(
    listener: TcpListener,
    certificates: Arc<Certificates>,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        debug!("accept failed: {e}");
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = certificates.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
