//! The TLS client of a connection with `tls`: the CA it trusts (`caFile`, else the bundled Mozilla
//! roots), its client certificate (mTLS), and the name the server's certificate must carry
//! (`serverName`, else the address's host; the SNI stays the address's host).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use spinscale_core::spec::prometheus_connection::TlsFiles;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::super::tls_files;

/// A client for `files`, the files read now. Errors name the field (`caFile`) and the file.
pub(super) fn client(files: &TlsFiles) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = match &files.ca_file {
        Some(path) => tls_files::ca_roots(path)?,
        None => tls_files::bundled_roots()?,
    };
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("caFile: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match &files.server_name {
        Some(name) => {
            let name = ServerName::try_from(name.clone()).map_err(|e| format!("serverName {name:?}: {e}"))?;
            Arc::new(NamedVerifier { inner: webpki, name })
        }
        None => webpki,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            let (chain, key) = tls_files::identity(cert, key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("certFile and keyFile: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    // Pooled like the shared client (`outbound`), with this connection's TLS; a redirect is an
    // answer, never followed with the connection's secrets.
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .use_preconfigured_tls(config);
    client.build().map_err(|e| e.to_string())
}

/// Checks the server's certificate against `name` instead of the name the client connected to.
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl fmt::Debug for NamedVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedVerifier").field("name", &self.name).finish_non_exhaustive()
    }
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
