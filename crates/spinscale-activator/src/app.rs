//! One routed app (a ScaledObject) as the activator keeps it: its current route, its hold gate
//! and its counts.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::hold::Hold;
use super::routes::{Route, RouteError};
use super::stats::Stats;

/// A route with its backend address split out once.
pub(super) struct Settings {
    /// An `http://` backend (the only scheme accepted).
    pub route: Route,
    /// The backend's `host[:port]`, as sent to it.
    pub authority: Authority,
    /// `host:port` to connect to.
    pub address: String,
}

impl Settings {
    /// Checks the route's backend and limits; refuses what the activator cannot serve.
    pub fn of(route: Route) -> Result<Self, RouteError> {
        let invalid = |reason: String| RouteError::Invalid { target: route.target.clone(), reason };
        let backend = &route.backend;
        if backend.scheme().is_some_and(|s| *s != Scheme::HTTP) {
            return Err(invalid(format!("backend {backend}: only http:// backends are supported")));
        }
        let Some(authority) = backend.authority().cloned() else {
            return Err(invalid(format!("backend {backend} has no host")));
        };
        if route.max_held == 0 {
            return Err(invalid("maxHeld must be at least 1".into()));
        }
        let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
        Ok(Self { route, authority, address })
    }
}

/// The backend's address as the prober last looked it up: kept until the route's address
/// changes, so probing does not ask the resolver on every attempt.
pub(super) struct Resolved {
    /// The `host:port` looked up.
    pub address: String,
    /// What it resolved to; empty when the lookup failed.
    pub addrs: Vec<SocketAddr>,
    /// When it was looked up.
    pub at: Instant,
}

impl Resolved {
    /// Whether this lookup answers for `address` at `now`, if it may be at most `max_age` old
    /// (`None`: any age).
    pub fn serves(&self, address: &str, now: Instant, max_age: Option<Duration>) -> bool {
        self.address == address && max_age.is_none_or(|max| now.saturating_duration_since(self.at) < max)
    }
}

/// One routed app: its current route, its hold gate, its counts.
pub(super) struct App {
    /// The app's id, `namespace/name` of its ScaledObject (the route's `target`).
    pub id: String,
    settings: RwLock<Arc<Settings>>,
    /// The gate requests wait at while the backend is not ready.
    pub hold: Arc<Hold>,
    /// Its request counts.
    pub stats: Arc<Stats>,
    /// Wakes the prober for an attempt now.
    pub poke: Notify,
    /// Cancelled when the route is removed.
    pub removed: CancellationToken,
    /// The backend's address as last looked up.
    resolved: Mutex<Option<Resolved>>,
}

impl App {
    /// A newly routed app: gate closed, nothing counted yet.
    pub fn new(settings: Settings, epoch: Instant) -> Self {
        let stats = Arc::new(Stats::new(epoch));
        let counted = stats.clone();
        Self {
            id: settings.route.target.clone(),
            settings: RwLock::new(Arc::new(settings)),
            // Its release is paced by the requests in flight at the backend.
            hold: Arc::new(Hold::new(move || counted.in_flight())),
            stats,
            poke: Notify::new(),
            removed: CancellationToken::new(),
            resolved: Mutex::new(None),
        }
    }

    /// The backend's address as last looked up, to read or replace.
    pub fn resolved(&self) -> MutexGuard<'_, Option<Resolved>> {
        self.resolved.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current route.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Applies a new route; a different backend must prove itself ready again.
    pub fn update(&self, settings: Settings) {
        let mut current = self.settings.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let moved = current.address != settings.address;
        *current = Arc::new(settings);
        drop(current);
        if moved {
            self.hold.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_serves_its_address_until_too_old() {
        let at = Instant::now();
        let resolved = Resolved { address: "api.default.svc:80".into(), addrs: Vec::new(), at };
        let later = at + Duration::from_secs(3600);
        assert!(resolved.serves("api.default.svc:80", later, None), "any age while probes are not failing");
        assert!(!resolved.serves("api.other.svc:80", at, None), "a new address is looked up");
        assert!(resolved.serves("api.default.svc:80", at, Some(Duration::from_secs(1))));
        assert!(!resolved.serves("api.default.svc:80", at + Duration::from_secs(1), Some(Duration::from_secs(1))));
        assert!(!resolved.serves("api.default.svc:80", at, Some(Duration::ZERO)));
    }
}
