//! The HTTP client for outbound calls (Prometheus, scrape endpoints, peers), built so that a
//! missing CA store never stops the server: the system's roots when there are any, else the
//! bundled Mozilla roots (a minimal image has no `/etc/ssl`).
//!
//! Within the crate it may use no other module (a leaf).

use std::sync::OnceLock;

use tracing::warn;

/// `builder` built with the system's CA roots, or with the bundled roots when the system has none.
pub fn client(builder: impl Fn() -> reqwest::ClientBuilder) -> Result<reqwest::Client, reqwest::Error> {
    match builder().build() {
        Ok(client) => Ok(client),
        Err(e) => {
            static WARNED: OnceLock<()> = OnceLock::new();
            WARNED.get_or_init(|| warn!("no usable system CA store ({e}); using the bundled Mozilla roots"));
            builder().tls_certs_only(bundled_roots()).build()
        }
    }
}

/// Mozilla's root certificates, as shipped in the `webpki-root-certs` crate.
fn bundled_roots() -> Vec<reqwest::Certificate> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().filter_map(|der| reqwest::Certificate::from_der(der).ok()).collect()
}
