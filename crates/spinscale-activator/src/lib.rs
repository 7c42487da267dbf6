//! The HTTP activator: a reverse proxy in front of apps that scale to zero.
//!
//! A request for an app whose backend is not ready is held (its body unread) in a bounded
//! queue, `on_demand` is called at once so the app can be woken, and the held requests are
//! forwarded in arrival order as soon as the backend accepts connections, at a bounded pace
//! ([`RELEASE_WINDOW`]). Every routed request is counted, which makes the activator an exact
//! request-rate signal.
//!
//! This crate owns the proxy and depends on nothing else in the workspace: the scaler drives it
//! through [`Activator`] and [`Route`].
//!
//! - `routes`: routes and the host/path table; `app`: one routed app's state; `hold`: its gate
//!   and queue;
//! - `backend`: the pooled client and the readiness prober; `proxy` and `forward`: one request;
//! - `stats`: counts and the per-second ring; `serve`: the listener; `endpoints`: the
//!   EndpointSlice watch that pokes apps whose backend turned ready;
//! - `limits`: what the activator takes on for all apps together ([`ActivatorLimits`]).

#![deny(missing_docs)]

mod app;
mod backend;
mod body;
pub mod endpoints;
mod forward;
mod headers;
mod hold;
mod limits;
mod proxy;
mod reply;
mod routes;
mod serve;
mod stats;

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use hold::RELEASE_WINDOW;
pub use limits::ActivatorLimits;
pub use routes::{BackendProtocol, Route, RouteConflict, RouteError};
pub use routes::{covers, normalize_prefix};
pub use stats::{MAX_WINDOW, RouteStats};

use app::{App, Settings};
use backend::BackendClient;
use hold::Release;
use limits::HeldTotals;
use routes::{Patterns, RouteTable};

/// Checks a route without setting it: what [`Activator::set_route`] would refuse as unusable.
pub fn check_route(route: &Route) -> Result<(), String> {
    Patterns::of(route).map_err(|e| e.to_string())?;
    Settings::of(route.clone()).map_err(|e| e.to_string())?;
    Ok(())
}

/// Called with an app's id (its route's `target`) when a request for it is held and none was
/// held before.
pub type OnDemand = Arc<dyn Fn(&str) + Send + Sync>;

/// The routes and the apps they lead to, under one lock so the two always agree.
struct Table {
    routes: RouteTable<Arc<App>>,
    /// By app id.
    apps: HashMap<String, Arc<App>>,
}

/// The activator: routes, per-app hold queues and counts, and the backend client.
pub struct Activator {
    table: RwLock<Table>,
    on_demand: OnDemand,
    client: BackendClient,
    /// The client for `h2c` backends (HTTP/2 with prior knowledge).
    h2c_client: BackendClient,
    epoch: Instant,
    limits: RwLock<ActivatorLimits>,
    /// The held requests of all apps and their body bytes.
    held: HeldTotals,
}

impl Activator {
    /// `on_demand(target)` runs synchronously on the request's task the moment a request for an
    /// app without a ready backend is held while none was held: once per wait, not per
    /// request. Keep it short; it must not call back into the activator's route setters.
    /// The limits are the [defaults](ActivatorLimits::default).
    pub fn new(on_demand: OnDemand) -> Arc<Self> {
        Self::with_limits(on_demand, ActivatorLimits::default())
    }

    /// Like [`Activator::new`], with `limits` instead of the defaults.
    pub fn with_limits(on_demand: OnDemand, limits: ActivatorLimits) -> Arc<Self> {
        Arc::new(Self {
            table: RwLock::new(Table { routes: RouteTable::new(), apps: HashMap::new() }),
            on_demand,
            client: backend::client(),
            h2c_client: backend::h2c_client(),
            epoch: Instant::now(),
            limits: RwLock::new(limits),
            held: HeldTotals::default(),
        })
    }

    /// Replaces the limits while the activator runs. The held-request limits apply to the next
    /// request that has to wait (requests held already stay held, even above a lowered limit);
    /// the head limits apply to connections accepted from now on.
    pub fn set_limits(&self, limits: ActivatorLimits) {
        *self.limits.write().unwrap_or_else(std::sync::PoisonError::into_inner) = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> ActivatorLimits {
        *self.limits.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The requests held now, all apps together, and the body bytes they count against
    /// [`ActivatorLimits::max_held_body_bytes`].
    pub fn held_totals(&self) -> (usize, u64) {
        self.held.get()
    }

    /// Serves HTTP/1.1 (keep-alive, WebSocket upgrades) and h2c (prior knowledge) on `listener`
    /// until `shutdown`, within the [limits](ActivatorLimits) in force when each connection is
    /// accepted; then stops accepting, lets held requests wait a few more seconds for their
    /// backend, answers those still held with `503`, and lets connections finish.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        serve::serve(self, listener, shutdown).await
    }

    /// Routes the route's hosts and prefixes to its app (`route.target`), replacing the app's
    /// previous route (the same route again changes nothing). A new backend address must prove
    /// ready again. Fails, changing nothing, when another app holds one of the host/prefix pairs
    /// or the route is unusable.
    pub fn set_route(&self, route: Route) -> Result<(), RouteError> {
        let patterns = Patterns::of(&route)?;
        let settings = Settings::of(route)?;
        let mut table = self.write();
        let id = settings.route.target.clone();
        match table.apps.get(&id).cloned() {
            Some(app) => {
                table.routes.insert(&id, patterns, app.clone())?;
                app.update(settings);
            }
            None => {
                let app = Arc::new(App::new(settings, self.epoch));
                table.routes.insert(&id, patterns, app.clone())?;
                table.apps.insert(id, app);
            }
        }
        Ok(())
    }

    /// Removes the route of the app `target`: its requests get `404`, including those held now.
    pub fn remove_route(&self, target: &str) {
        let removed = {
            let mut table = self.write();
            table.routes.remove(target);
            table.apps.remove(target)
        };
        if let Some(app) = removed {
            app.removed.cancel();
            app.hold.release_all(Release::Removed);
        }
    }

    /// The route of the app `target`, as set last, if it has one.
    pub fn route(&self, target: &str) -> Option<Route> {
        Some(self.app(target)?.settings().route.clone())
    }

    /// The counts of the app `target`, if it has a route.
    pub fn stats(&self, target: &str) -> Option<RouteStats> {
        let app = self.app(target)?;
        Some(RouteStats {
            requests_total: app.stats.total(),
            in_flight: app.stats.in_flight(),
            held: app.hold.held(),
            backend_ready: app.hold.is_ready(),
        })
    }

    /// Requests per second for the app `target` over the last `window`, counted in whole seconds
    /// (the current one included), at most [`MAX_WINDOW`].
    pub fn rate(&self, target: &str, window: Duration) -> Option<f64> {
        Some(self.app(target)?.stats.rate(Instant::now(), window))
    }

    /// A hint that the backend of the app `target` may be ready now (an endpoint became ready):
    /// the prober, if it runs, tries at once instead of after its backoff.
    pub fn poke(&self, target: &str) {
        if let Some(app) = self.app(target) {
            app.poke.notify_one();
        }
    }

    /// Pokes every app whose backend is the Service `name` in `namespace` (its host is
    /// `name.namespace[.svc[.cluster.local]]`): it has ready endpoints now. Returns how many.
    pub fn poke_service(&self, namespace: &str, name: &str) -> usize {
        let table = self.read();
        let mut poked = 0;
        for app in table.apps.values() {
            let settings = app.settings();
            let rest = settings
                .authority
                .host()
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('.'))
                .and_then(|r| r.strip_prefix(namespace));
            if matches!(rest, Some("" | ".svc" | ".svc.cluster.local")) {
                app.poke.notify_one();
                poked += 1;
            }
        }
        poked
    }

    fn app(&self, id: &str) -> Option<Arc<App>> {
        self.read().apps.get(id).cloned()
    }

    fn lookup(&self, host: &str, path: &str) -> Option<Arc<App>> {
        self.read().routes.lookup(host, path).cloned()
    }

    fn release_all(&self, why: Release) {
        let apps: Vec<Arc<App>> = self.read().apps.values().cloned().collect();
        for app in apps {
            app.hold.release_all(why);
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
