//! The listener: HTTP/1.1 (keep-alive, upgrades) and h2c with prior knowledge on one port,
//! within the head limits of [`ActivatorLimits`], with graceful shutdown.
//!
//! A connection's first bytes tell the protocols apart (h2c opens with its preface); they are
//! peeked, not read, so the protocol's own server reads them again.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Activator;
use super::hold::Release;
use super::limits::{self, ActivatorLimits};
use super::proxy;

/// On shutdown, held requests keep waiting for their backend this long (a backend about to be
/// ready still answers them); then they get a `503` with `Retry-After`.
const HOLD_DRAIN: Duration = Duration::from_secs(4);
/// After that, how long connections get to finish.
const FINAL_DRAIN: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How an h2c connection with prior knowledge begins.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Pause between peeks at a connection that has sent part of the h2c preface.
const SNIFF_PAUSE: Duration = Duration::from_millis(1);

/// Accepts and serves connections until `shutdown`, then drains (see [`Activator::serve`]).
pub(super) async fn serve(
    activator: Arc<Activator>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Every connection's task holds a sender; the receiver sees the end when the last is gone.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
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
        let limits = activator.limits();
        let (activator, shutdown, alive) = (activator.clone(), shutdown.clone(), alive.clone());
        tokio::spawn(async move {
            let _alive = alive;
            if let Err(e) = connection(activator, stream, peer, limits, shutdown).await {
                debug!(%peer, error = %e, "activator connection ended");
            }
        });
    }
    drop(listener);
    drop(alive);
    let drained = all_closed.recv();
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

/// Serves one connection until it ends; on `shutdown`, finishes its requests and closes it.
async fn connection(
    activator: Arc<Activator>,
    stream: TcpStream,
    peer: SocketAddr,
    limits: ActivatorLimits,
    shutdown: CancellationToken,
) -> Result<(), hyper::Error> {
    let h2 = tokio::select! {
        sniffed = is_h2(&stream, limits.header_read_timeout) => match sniffed {
            Some(h2) => h2,
            None => {
                debug!(%peer, "activator connection sent no request in time");
                return Ok(());
            }
        },
        _ = shutdown.cancelled() => return Ok(()),
    };
    let service = {
        let shutdown = shutdown.clone();
        service_fn(move |request| {
            let response = proxy::handle(activator.clone(), request, peer, shutdown.clone());
            async move { Ok::<_, Infallible>(response.await) }
        })
    };
    let io = TokioIo::new(stream);
    if h2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(limits::H2_STREAM_WINDOW)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        drive(builder.serve_connection(io, service), &shutdown, http2::Connection::graceful_shutdown).await
    } else {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout((!limits.header_read_timeout.is_zero()).then_some(limits.header_read_timeout))
            .max_header_size(limits.max_header_bytes)
            .max_buf_size(limits::h1_read_buffer(&limits));
        let connection = builder.serve_connection(io, service).with_upgrades();
        drive(connection, &shutdown, http1::UpgradeableConnection::graceful_shutdown).await
    }
}

/// Runs `connection` to its end; on `shutdown`, asks it to end gracefully first.
async fn drive<C>(
    connection: C,
    shutdown: &CancellationToken,
    graceful: impl FnOnce(Pin<&mut C>),
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        done = connection.as_mut() => return done,
        _ = shutdown.cancelled() => graceful(connection.as_mut()),
    }
    connection.await
}

/// Whether the connection opens with the h2c preface; `None` when it sends nothing to serve
/// within `within` (zero: no limit) or closes.
async fn is_h2(stream: &TcpStream, within: Duration) -> Option<bool> {
    let sniff = async {
        let mut first = [0u8; H2_PREFACE.len()];
        loop {
            let n = stream.peek(&mut first).await.ok()?;
            if n == 0 {
                return None;
            }
            if first[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            // Part of the preface: the rest is on its way.
            tokio::time::sleep(SNIFF_PAUSE).await;
        }
    };
    if within.is_zero() { sniff.await } else { tokio::time::timeout(within, sniff).await.ok().flatten() }
}
