//! One request through the activator: route it, count it, hold it while the backend is not
//! ready (waking the app), then forward it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use super::Activator;
use super::app::{App, Settings};
use super::backend;
use super::body::ProxyBody;
use super::forward::Forward;
use super::hold::{Admit, Release};
use super::limits::{BodySize, OverLimit};
use super::reply;
use super::routes::request_host;

/// Answers one client request: the backend's response, or the activator's own refusal.
pub(super) async fn handle(
    activator: Arc<Activator>,
    request: Request<Incoming>,
    peer: SocketAddr,
    shutdown: CancellationToken,
) -> Response<ProxyBody> {
    let arrived = Instant::now();
    let Some(host) = request_host(&request) else { return reply::no_host() };
    let Some(app) = activator.lookup(&host, request.uri().path()) else {
        return reply::no_route(&host, request.uri().path());
    };
    app.stats.record(arrived);
    let settings = app.settings();
    let body = BodySize::of(&request);
    let held = match until_ready(&activator, &app, &settings, body, arrived).await {
        Ok(held) => held,
        Err(refusal) => {
            return refusal.reply(&app, &settings, arrived, || reply::no_route(&host, request.uri().path()));
        }
    };
    drop(host); // it borrows `request`, which the forward takes
    let forward = Forward {
        activator: &activator,
        app: &app,
        settings: &settings,
        peer,
        held,
        body,
        arrived,
        shutdown: &shutdown,
    };
    forward.run(request).await
}

/// Why a request was not let through to its backend.
pub(super) enum Refusal {
    /// The hold queue was full (`503`).
    Full,
    /// The activator holds as many requests or body bytes as its limits allow, all apps
    /// together (`503`).
    OverLimit(OverLimit),
    /// The route was removed while the request waited.
    Removed,
    /// The activator shut down while the request waited (`503`).
    Shutdown,
    /// The backend was not ready within the hold timeout (`504`).
    TimedOut,
}

impl Refusal {
    /// The reply to a request refused while held; `removed` is the one for a route that went.
    pub(super) fn reply(
        self,
        app: &App,
        settings: &Settings,
        arrived: Instant,
        removed: impl FnOnce() -> Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        match self {
            Refusal::Full => reply::full(&app.id, settings.route.max_held),
            Refusal::OverLimit(over) => reply::over_limit(&app.id, over),
            Refusal::Removed => removed(),
            Refusal::Shutdown => reply::shutting_down(&app.id),
            Refusal::TimedOut => reply::timed_out(&app.id, arrived.elapsed()),
        }
    }
}

/// Waits (held) until the app's backend is ready, waking the app on the first hold.
/// `Ok(Some(waited since arrival))` when it had to wait, `Ok(None)` when the backend was ready.
/// While it waits, the request and its `body` count against the activator's limits.
pub(super) async fn until_ready(
    activator: &Activator,
    app: &Arc<App>,
    settings: &Settings,
    body: BodySize,
    arrived: Instant,
) -> Result<Option<Duration>, Refusal> {
    if app.hold.is_ready() {
        return Ok(None);
    }
    let limits = activator.limits();
    // Given back when this returns (released, refused, timed out) or is dropped (client gone).
    let _reserved = activator.held.reserve(body.charge(&limits), &limits).map_err(Refusal::OverLimit)?;
    match app.hold.admit(settings.route.max_held) {
        Admit::Ready => Ok(None),
        Admit::Full => Err(Refusal::Full),
        Admit::Held { mut ticket, first, start_probe } => {
            if first {
                (activator.on_demand)(&app.id);
            }
            if start_probe {
                tokio::spawn(backend::probe(app.clone()));
            }
            let left = settings.route.hold_timeout.saturating_sub(arrived.elapsed());
            match tokio::time::timeout(left, ticket.released()).await {
                Ok(Release::Ready) => Ok(Some(arrived.elapsed())),
                Ok(Release::Removed) => Err(Refusal::Removed),
                Ok(Release::Shutdown) => Err(Refusal::Shutdown),
                Err(_) => Err(Refusal::TimedOut),
            }
        }
    }
}
