//! One request through the activator: route it, count it, hold it while the backend is not
//! ready (waking the target), then forward it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use super::Activator;
use super::backend;
use super::body::ProxyBody;
use super::forward::Forward;
use super::hold::{Admit, Release};
use super::reply;
use super::routes::request_host;

pub(super) async fn handle(
    activator: Arc<Activator>,
    request: Request<Incoming>,
    peer: SocketAddr,
    shutdown: CancellationToken,
) -> Response<ProxyBody> {
    let arrived = Instant::now();
    let Some(host) = request_host(&request) else { return reply::no_host() };
    let Some(target) = activator.lookup(&host, request.uri().path()) else {
        return reply::no_route(&host, request.uri().path());
    };
    target.stats.record(arrived);
    let settings = target.settings();
    let mut held = None;
    if !target.hold.is_ready() {
        match target.hold.admit(settings.route.max_held) {
            Admit::Ready => {}
            Admit::Full => return reply::full(&target.id, settings.route.max_held),
            Admit::Held { mut ticket, first, start_probe } => {
                if first {
                    (activator.on_demand)(&target.id);
                }
                if start_probe {
                    tokio::spawn(backend::probe(target.clone()));
                }
                match tokio::time::timeout(settings.route.hold_timeout, ticket.released()).await {
                    Ok(Release::Ready) => held = Some(arrived.elapsed()),
                    Ok(Release::Removed) => return reply::no_route(&host, request.uri().path()),
                    Ok(Release::Shutdown) => return reply::shutting_down(&target.id),
                    Err(_) => return reply::timed_out(&target.id, arrived.elapsed()),
                }
            }
        }
    }
    drop(host); // it borrows `request`, which the forward takes
    let forward =
        Forward { client: &activator.client, target: &target, settings: &settings, peer, held, shutdown: &shutdown };
    forward.run(request).await
}
