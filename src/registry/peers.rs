//! Demand shared between replicas: a request held on one replica wakes the target on all.

use std::sync::Arc;
use std::time::Instant;

use super::Registry;
use crate::peers::Peers;

impl Registry {
    /// Announces every request held here to these peers (set once, at start).
    pub fn set_peers(&self, peers: Arc<Peers>) {
        let _ = self.peers.set(peers);
    }
    /// This replica's id in the peer protocol, when it has peers.
    pub fn peer_id(&self) -> Option<u64> {
        self.peers.get().map(|p| p.id)
    }
    /// A peer holds a request for `target`: it counts as held here too, until the route's
    /// `holdTimeout` at most (the longest the peer can hold it).
    pub fn peer_demand(&self, target: &str) {
        let targets = self.targets.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        for t in targets.values().filter(|t| t.is(target)) {
            let Some(http) = t.spec().http.clone() else { continue };
            *t.shared.peer_held_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(Instant::now() + http.hold_timeout);
            t.shared.demand.notify_one();
        }
    }
    /// A request for `target` (`namespace/name`) is held: its triggers evaluate now.
    pub(super) fn demand(&self, target: &str) {
        let targets = self.targets.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        for t in targets.values().filter(|t| t.is(target) && t.spec().http.is_some()) {
            t.shared.demand.notify_one();
        }
    }
}
