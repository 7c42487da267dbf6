//! The listener: HTTP/1.1 (keep-alive, upgrades) and h2c with prior knowledge on one port,
//! with graceful shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Activator;
use super::hold::Release;
use super::proxy;

/// On shutdown, held requests keep waiting for their backend this long (a backend about to be
/// ready still answers them); then they get a `503` with `Retry-After`.
const HOLD_DRAIN: Duration = Duration::from_secs(4);
/// After that, how long connections get to finish.
const FINAL_DRAIN: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts and serves connections until `shutdown`, then drains (see [`Activator::serve`]).
pub(super) async fn serve(
    activator: Arc<Activator>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    info!(addr = %listener.local_addr()?, "activator listening");
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "activator accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = {
            let (activator, shutdown) = (activator.clone(), shutdown.clone());
            service_fn(move |request| {
                let response = proxy::handle(activator.clone(), request, peer, shutdown.clone());
                async move { Ok::<_, Infallible>(response.await) }
            })
        };
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "activator connection ended");
            }
        });
    }
    drop(listener);
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    if tokio::time::timeout(HOLD_DRAIN, &mut drained).await.is_err() {
        activator.release_all(Release::Shutdown);
        if tokio::time::timeout(FINAL_DRAIN, drained).await.is_err() {
            info!("activator stopped; some connections did not drain");
            return Ok(());
        }
    }
    info!("activator stopped");
    Ok(())
}
