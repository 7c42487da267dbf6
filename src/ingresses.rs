//! Which namespace owns which host (`--watch-ingresses`): the hosts of every Ingress
//! (`networking.k8s.io/v1`) and Gateway API `HTTPRoute` (`gateway.networking.k8s.io/v1`), by
//! namespace, followed through `kube::runtime::watcher` (paginated lists, bookmarks, re-lists).
//!
//! A trigger may claim a host in `hosts` only when an Ingress or HTTPRoute of its own namespace
//! serves that host: a tenant cannot take another team's host (and its traffic) by naming it first.
//!
//! Within the crate it may use no other module (a leaf).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use spinscale_core::policy::{HostOwnership, glob};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// An object that names hosts: its kind, namespace and name.
type ObjectKey = (&'static str, String, String);

/// The hosts each namespace's Ingresses and HTTPRoutes serve.
#[derive(Debug, Default)]
pub struct HostIndex {
    objects: RwLock<HashMap<ObjectKey, Vec<String>>>,
}

impl HostIndex {
    /// An empty index; [`follow`] fills it.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Records (or replaces) the hosts of one object; an empty list forgets it.
    pub fn set(&self, kind: &'static str, namespace: &str, name: &str, hosts: Vec<String>) {
        let mut objects = self.objects.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (kind, namespace.to_string(), name.to_string());
        match hosts.is_empty() {
            true => objects.remove(&key),
            false => objects.insert(key, hosts),
        };
    }

    /// Replaces every object of `kind` (after a re-list).
    fn replace_all(&self, kind: &'static str, all: Vec<(String, String, Vec<String>)>) {
        let mut objects = self.objects.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        objects.retain(|(k, _, _), _| *k != kind);
        for (namespace, name, hosts) in all.into_iter().filter(|(_, _, h)| !h.is_empty()) {
            objects.insert((kind, namespace, name), hosts);
        }
    }

    /// The hosts served in `namespace`, sorted.
    pub fn hosts_of(&self, namespace: &str) -> BTreeSet<String> {
        let objects = self.objects.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        objects.iter().filter(|((_, ns, _), _)| ns == namespace).flat_map(|(_, hosts)| hosts.iter().cloned()).collect()
    }
}

impl HostOwnership for HostIndex {
    fn may_claim(&self, namespace: &str, host: &str) -> Result<(), String> {
        // An Ingress host may itself be a wildcard (`*.shop.example.com`); a claim matches it then.
        match self.hosts_of(namespace).iter().any(|served| served == host || glob(served, host)) {
            true => Ok(()),
            false => Err(format!(
                "no Ingress or HTTPRoute in namespace {namespace:?} serves host {host:?} \
                 (--watch-ingresses: a namespace may claim only the hosts it routes)"
            )),
        }
    }
}

/// The hosts of an Ingress's rules.
fn ingress_hosts(ingress: &Ingress) -> Vec<String> {
    let rules = ingress.spec.as_ref().and_then(|s| s.rules.as_ref());
    rules.into_iter().flatten().filter_map(|r| r.host.clone()).map(|h| h.to_ascii_lowercase()).collect()
}

/// The `spec.hostnames` of an HTTPRoute.
fn route_hosts(route: &DynamicObject) -> Vec<String> {
    let names = route.data.get("spec").and_then(|s| s.get("hostnames")).and_then(|h| h.as_array());
    names.into_iter().flatten().filter_map(|h| h.as_str()).map(str::to_ascii_lowercase).collect()
}

fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"))
}

/// Keeps `index` in step with every Ingress and HTTPRoute of the cluster until `shutdown`.
pub async fn follow(client: kube::Client, index: Arc<HostIndex>, shutdown: CancellationToken) {
    let ingresses = watch_kind("Ingress", Api::<Ingress>::all(client.clone()), ingress_hosts, index.clone());
    let routes =
        watch_kind("HTTPRoute", Api::<DynamicObject>::all_with(client, &http_route_resource()), route_hosts, index);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = futures_util::future::join(ingresses, routes) => {}
    }
}

async fn watch_kind<K>(kind: &'static str, api: Api<K>, hosts: fn(&K) -> Vec<String>, index: Arc<HostIndex>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let key = |object: &K| {
        let meta = object.meta();
        (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
    };
    let mut relisted: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
    let mut failures = 0u32;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(object)) => {
                let (namespace, name) = key(&object);
                index.set(kind, &namespace, &name, hosts(&object));
            }
            Ok(Event::Delete(object)) => {
                let (namespace, name) = key(&object);
                index.set(kind, &namespace, &name, Vec::new());
            }
            Ok(Event::Init) => relisted.clear(),
            Ok(Event::InitApply(object)) => {
                let (namespace, name) = key(&object);
                relisted.push((namespace, name, hosts(&object)));
            }
            Ok(Event::InitDone) => {
                debug!(kind, objects = relisted.len(), "host owners listed");
                index.replace_all(kind, std::mem::take(&mut relisted));
                failures = 0;
            }
            Err(e) => {
                // A cluster without the Gateway API has no HTTPRoutes: say so once in a while, not per retry.
                failures += 1;
                if failures == 1 || failures.is_multiple_of(100) {
                    warn!(kind, "watching {kind}s failed: {e}; retrying");
                }
                tokio::time::sleep(Duration::from_millis(500).saturating_mul(failures.min(20))).await;
            }
        }
    }
}
