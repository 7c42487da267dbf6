//! The PEM files a TLS client of an upstream reads: the CA it trusts (`caFile`) and its own
//! certificate chain and key (`certFile`, `keyFile`, for mTLS). Errors name the field and the
//! file. Which roots to trust without a `caFile` is each client's own choice; the bundled ones
//! are here.

use std::path::Path;

use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The CA certificates of `caFile`; a file without one usable certificate is refused.
pub fn ca_roots(path: &Path) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("caFile {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("caFile {}: no usable CA certificate", path.display()));
    }
    Ok(roots)
}

/// The bundled Mozilla roots, for a client without a `caFile` where no others are at hand.
pub fn bundled_roots() -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    if added == 0 {
        return Err("no root certificates".into());
    }
    Ok(roots)
}

/// The client certificate chain of `certFile` and the key of `keyFile`.
pub fn identity(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("certFile {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("keyFile {}: {e}", key.display()))?;
    Ok((chain, key))
}
