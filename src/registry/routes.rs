//! Activator routes: a trigger's `hosts` and `backend`, and the config's static `routes`.
//!
//! A ScaledObject whose trigger routes through the activator owns its route; the config's static
//! route for the same ScaledObject applies only while no trigger does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::warn;

use spinscale_activator::{Activator, BackendProtocol, Route};
use spinscale_core::spec::{self, HttpRoute};

use super::{Refused, Registry, Target, TargetKey};
use crate::config::StaticRoute;

impl Registry {
    /// Creates the HTTP activator (once; later calls return it): a held request wakes its
    /// target at once. Triggers with `hosts` are refused until it exists.
    pub fn enable_activator(&self) -> Arc<Activator> {
        self.activator
            .get_or_init(|| {
                let registry = self.this.clone();
                let limits = self.config().activator_limits();
                Activator::with_limits(
                    Arc::new(move |target: &str| {
                        if let Some(registry) = registry.upgrade() {
                            registry.demand(target);
                            if let Some(peers) = registry.peers.get() {
                                peers.announce(target);
                            }
                        }
                    }),
                    limits,
                )
            })
            .clone()
    }
    /// Sets the config's static routes that changed between `old` and `new` in the activator, and
    /// removes those that went. A ScaledObject whose trigger has `hosts` keeps its trigger's route.
    /// All or nothing: on a refused route, the routes set so far are put back.
    pub fn apply_static_routes(&self, old: &[StaticRoute], new: &[StaticRoute]) -> Result<usize, Vec<String>> {
        let targets = self.targets.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.set_static_routes(old, new, &routed_by_triggers(&targets))
    }
    pub(super) fn set_static_routes(
        &self,
        old: &[StaticRoute],
        new: &[StaticRoute],
        routed: &HashSet<String>,
    ) -> Result<usize, Vec<String>> {
        let Some(activator) = self.activator.get() else { return Ok(0) };
        let owned_by_trigger = |id: &str| routed.contains(id);
        let mut problems = Vec::new();
        let mut applied = Vec::new();
        for (i, route) in new.iter().enumerate() {
            if old.contains(route) || owned_by_trigger(&route.scaled_object) {
                continue;
            }
            match route.to_route().and_then(|r| activator.set_route(r).map_err(|e| e.to_string())) {
                Ok(()) => applied.push(route.scaled_object.clone()),
                Err(e) => problems.push(format!("routes[{i}]: {e}")),
            }
        }
        if !problems.is_empty() {
            for id in applied {
                restore_static_route(activator, old, &id);
            }
            return Err(problems);
        }
        for gone in old.iter().filter(|r| !new.iter().any(|n| n.scaled_object == r.scaled_object)) {
            if !owned_by_trigger(&gone.scaled_object) {
                activator.remove_route(&gone.scaled_object);
            }
        }
        Ok(applied.len())
    }
    /// Routes `hosts` to the target in the activator (`INVALID_ARGUMENT` without one, or on a conflict).
    pub(super) fn route(&self, key: &TargetKey, http: &HttpRoute) -> Result<(), Refused> {
        let Some(activator) = self.activator.get() else {
            return Err(Refused::Route(format!(
                "{}/{}: hosts and backend need the activator: start spinscale with --activator-listen",
                spinscale_core::spec::HOSTS,
                spinscale_core::spec::BACKEND
            )));
        };
        activator
            .set_route(trigger_route(key.to_string(), http))
            .map_err(|e| Refused::Route(format!("{}: {e}", spinscale_core::spec::HOSTS)))
    }
}

/// The ScaledObjects whose triggers route requests through the activator.
pub(super) fn routed_by_triggers(targets: &HashMap<TargetKey, Arc<Target>>) -> HashSet<String> {
    targets.values().filter(|t| t.spec().http.is_some()).map(|t| t.id()).collect()
}

/// Puts the route of `routes` for the ScaledObject `id` back in the activator, or removes the
/// route there when `routes` has none.
/// Sets the route of ScaledObject `id` after its targets changed: that of its most recently asked
/// about live target that carries one, else the config's static route, else none.
pub(super) fn settle_route(
    activator: &Activator,
    targets: &HashMap<TargetKey, Arc<Target>>,
    routes: &[StaticRoute],
    id: &str,
) {
    let owner = targets
        .values()
        .filter(|t| t.is(id))
        .filter_map(|t| Some((t.shared.last_seen_ms.load(Ordering::Relaxed), t.spec().http.clone()?)))
        .max_by_key(|(seen, _)| *seen);
    match owner {
        Some((_, http)) => {
            if let Err(e) = activator.set_route(trigger_route(id, &http)) {
                warn!(scaled_object = id, "the trigger's route could not be set again: {e}");
            }
        }
        None => restore_static_route(activator, routes, id),
    }
}

pub(super) fn restore_static_route(activator: &Activator, routes: &[StaticRoute], id: &str) {
    match routes.iter().find(|r| r.scaled_object == id).and_then(|r| r.to_route().ok()) {
        Some(route) => {
            let _ = activator.set_route(route);
        }
        None => activator.remove_route(id),
    }
}

/// The activator route a trigger's `hosts`, `backend` and hold keys ask for, for `target`.
pub fn trigger_route(target: impl Into<String>, http: &HttpRoute) -> Route {
    Route {
        target: target.into(),
        hosts: http.hosts.clone(),
        path_prefixes: http.path_prefixes.clone(),
        backend: http.backend.clone(),
        hold_timeout: http.hold_timeout,
        max_held: http.max_held,
        cold_start_header: http.cold_start_header,
        backend_protocol: match http.backend_protocol {
            spec::BackendProtocol::Http1 => BackendProtocol::Http1,
            spec::BackendProtocol::H2c => BackendProtocol::H2c,
        },
    }
}
