//! Backends: a pooled HTTP/1.1 client, and the prober that finds out when a held app's backend
//! accepts connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;
use tracing::debug;

use super::app::{App, Resolved};
use super::body::OutBody;

/// Delay before the second connect attempt; it doubles after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(2);
/// Probing runs only while requests wait, and a refused connect costs microseconds: a short cap
/// keeps "backend ready → held response" within ~10 ms (a 100 ms cap made it up to 100 ms).
const MAX_BACKOFF: Duration = Duration::from_millis(10);
/// One connect attempt (probe or forward) gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// While connects fail, the prober looks the backend's name up again at most this often.
const LOOKUP_REFRESH: Duration = Duration::from_secs(1);
/// Idle pooled connections to a backend are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// The client every forward goes through, pooling connections per backend.
pub(super) type BackendClient = Client<HttpConnector, OutBody>;

/// A client that connects with `TCP_NODELAY` and [`CONNECT_TIMEOUT`].
pub(super) fn client() -> BackendClient {
    Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).pool_idle_timeout(POOL_IDLE).build(connector())
}

/// The same, speaking HTTP/2 with prior knowledge (`backendProtocol: h2c`): one multiplexed
/// connection per backend, trailers intact.
pub(super) fn h2c_client() -> BackendClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .timer(TokioTimer::new())
        .http2_only(true)
        .build(connector())
}

fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector
}

/// Tries to connect to the app's backend while requests are held, with backoff; on the
/// first success, opens the gate (which releases them in order). Started by the first held
/// request when no prober runs.
///
/// The backend's name is looked up once per address (a route change), not per attempt. While
/// attempts fail, the lookup is renewed at most every [`LOOKUP_REFRESH`], and at once on a
/// poke, so a Service whose address changed (re-created, or headless with new pods) is found.
pub(super) async fn probe(app: Arc<App>) {
    let mut backoff = FIRST_BACKOFF;
    // How old a lookup may be for the next attempt: any age for the first one.
    let mut max_age = None;
    loop {
        if app.removed.is_cancelled() {
            app.hold.stop_probing();
            return;
        }
        if !app.hold.keep_probing() {
            return;
        }
        let address = app.settings().address.clone();
        // Empty when the name does not resolve (`addresses` logged why).
        let addrs = addresses(&app, &address, max_age).await;
        if !addrs.is_empty() {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addrs[..])).await {
                Ok(Ok(_)) => {
                    let released = app.hold.open();
                    debug!(target = %app.id, %address, released, "backend ready");
                    return;
                }
                Ok(Err(e)) => debug!(target = %app.id, %address, error = %e, "backend not ready"),
                Err(_) => debug!(target = %app.id, %address, "backend connect timed out"),
            }
        }
        max_age = Some(LOOKUP_REFRESH);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = app.poke.notified() => max_age = Some(Duration::ZERO),
            _ = app.removed.cancelled() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The socket addresses of `address` (`host:port`): the app's last lookup if it serves (see
/// [`Resolved::serves`]), else a new one, kept for the next attempts. Empty when it does not
/// resolve.
async fn addresses(app: &App, address: &str, max_age: Option<Duration>) -> Vec<SocketAddr> {
    if let Some(resolved) = app.resolved().as_ref().filter(|r| r.serves(address, Instant::now(), max_age)) {
        return resolved.addrs.clone();
    }
    let addrs = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(address)).await {
        Ok(Ok(found)) => found.collect(),
        Ok(Err(e)) => {
            debug!(target = %app.id, %address, error = %e, "backend does not resolve");
            Vec::new()
        }
        Err(_) => {
            debug!(target = %app.id, %address, "backend lookup timed out");
            Vec::new()
        }
    };
    *app.resolved() = Some(Resolved { address: address.to_string(), addrs: addrs.clone(), at: Instant::now() });
    addrs
}
