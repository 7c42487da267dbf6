//! The HTTP activator: a reverse proxy in front of apps that scale to zero.
//!
//! A request for a target whose backend is not ready is held (its body unread) in a bounded
//! queue, `on_demand` is called at once so the target can be woken, and the held requests are
//! forwarded in arrival order as soon as the backend accepts connections. Every routed request
//! is counted, which makes the activator an exact request-rate signal.
//!
//! - `routes`: routes and the host/path table; `hold`: the per-target gate and queue;
//! - `backend`: the pooled client and the readiness prober; `proxy` and `forward`: one request;
//! - `stats`: counts and the per-second ring; `serve`: the listener.

mod backend;
mod body;
pub mod endpoints;
mod forward;
mod headers;
mod hold;
mod proxy;
mod reply;
mod routes;
mod serve;
mod stats;
mod target;

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use routes::{Route, RouteConflict, RouteError};
pub use routes::{covers, normalize_prefix};
pub use stats::{MAX_WINDOW, RouteStats};

use backend::BackendClient;
use hold::Release;
use routes::{Patterns, RouteTable};
use target::{Settings, Target};

/// Checks a route without setting it: what [`Activator::set_route`] would refuse as unusable.
pub fn check_route(route: &Route) -> Result<(), String> {
    Patterns::of(route).map_err(|e| e.to_string())?;
    Settings::of(route.clone()).map_err(|e| e.to_string())?;
    Ok(())
}

/// Called with a target's id when a request for it is held and none was held before.
pub type OnDemand = Arc<dyn Fn(&str) + Send + Sync>;

struct Table {
    routes: RouteTable<Arc<Target>>,
    targets: HashMap<String, Arc<Target>>,
}

/// The activator: routes, per-target hold queues and counts, and the backend client.
pub struct Activator {
    table: RwLock<Table>,
    on_demand: OnDemand,
    client: BackendClient,
    epoch: Instant,
}

impl Activator {
    /// `on_demand(target)` runs synchronously on the request's task the moment a request for a
    /// target without a ready backend is held while none was held: once per wait, not per
    /// request. Keep it short; it must not call back into the activator's route setters.
    pub fn new(on_demand: OnDemand) -> Arc<Self> {
        Arc::new(Self {
            table: RwLock::new(Table { routes: RouteTable::new(), targets: HashMap::new() }),
            on_demand,
            client: backend::client(),
            epoch: Instant::now(),
        })
    }

    /// Serves HTTP/1.1 (keep-alive, WebSocket upgrades) and h2c (prior knowledge) on `listener`
    /// until `shutdown`; then stops accepting, lets held requests wait a few more seconds for
    /// their backend, answers those still held with `503`, and lets connections finish.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        serve::serve(self, listener, shutdown).await
    }

    /// Routes the route's hosts and prefixes to its target, replacing the target's previous
    /// route (the same route again changes nothing). A new backend address must prove ready
    /// again. Fails, changing nothing, when another target holds one of the host/prefix pairs
    /// or the route is unusable.
    pub fn set_route(&self, route: Route) -> Result<(), RouteError> {
        let patterns = Patterns::of(&route)?;
        let settings = Settings::of(route)?;
        let mut table = self.write();
        let id = settings.route.target.clone();
        match table.targets.get(&id).cloned() {
            Some(target) => {
                table.routes.insert(&id, patterns, target.clone())?;
                target.update(settings);
            }
            None => {
                let target = Arc::new(Target::new(settings, self.epoch));
                table.routes.insert(&id, patterns, target.clone())?;
                table.targets.insert(id, target);
            }
        }
        Ok(())
    }

    /// Removes the target's route: its requests get `404`, including those held now.
    pub fn remove_route(&self, target: &str) {
        let removed = {
            let mut table = self.write();
            table.routes.remove(target);
            table.targets.remove(target)
        };
        if let Some(target) = removed {
            target.removed.cancel();
            target.hold.release_all(Release::Removed);
        }
    }

    /// The target's counts, if it has a route.
    pub fn stats(&self, target: &str) -> Option<RouteStats> {
        let target = self.target(target)?;
        Some(RouteStats {
            requests_total: target.stats.total(),
            in_flight: target.stats.in_flight(),
            held: target.hold.held(),
            backend_ready: target.hold.is_ready(),
        })
    }

    /// Requests per second for the target over the last `window`, counted in whole seconds
    /// (the current one included), at most [`MAX_WINDOW`].
    pub fn rate(&self, target: &str, window: Duration) -> Option<f64> {
        Some(self.target(target)?.stats.rate(Instant::now(), window))
    }

    /// A hint that the target's backend may be ready now (an endpoint became ready): the prober,
    /// if it runs, tries at once instead of after its backoff.
    pub fn poke(&self, target: &str) {
        if let Some(target) = self.target(target) {
            target.poke.notify_one();
        }
    }

    /// Pokes every target whose backend is the Service `name` in `namespace` (its host is
    /// `name.namespace[.svc[.cluster.local]]`): it has ready endpoints now.
    pub fn poke_service(&self, namespace: &str, name: &str) -> usize {
        let table = self.read();
        let mut poked = 0;
        for target in table.targets.values() {
            let settings = target.settings();
            let rest = settings
                .authority
                .host()
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('.'))
                .and_then(|r| r.strip_prefix(namespace));
            if matches!(rest, Some("" | ".svc" | ".svc.cluster.local")) {
                target.poke.notify_one();
                poked += 1;
            }
        }
        poked
    }

    fn target(&self, id: &str) -> Option<Arc<Target>> {
        self.read().targets.get(id).cloned()
    }

    fn lookup(&self, host: &str, path: &str) -> Option<Arc<Target>> {
        self.read().routes.lookup(host, path).cloned()
    }

    fn release_all(&self, why: Release) {
        let targets: Vec<Arc<Target>> = self.read().targets.values().cloned().collect();
        for target in targets {
            target.hold.release_all(why);
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
