//! In a cluster, the activator learns that a backend is ready from its Service's EndpointSlices
//! (watched through the Kubernetes API) instead of waiting for the next connect attempt: the
//! moment an endpoint turns ready, the apps behind that Service are poked.

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{ListParams, WatchEvent, WatchParams};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Activator;

/// The label that names an EndpointSlice's Service.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// An `on_ready` for [`follow`]: pokes the activator's apps behind a Service that has ready
/// endpoints.
pub fn poker(activator: Arc<Activator>) -> impl Fn(&str, &str) + Send + Sync {
    move |namespace, service| {
        let poked = activator.poke_service(namespace, service);
        if poked > 0 {
            debug!(%namespace, %service, poked, "backend has ready endpoints");
        }
    }
}

/// Watches every EndpointSlice (cluster-wide: backends live in the apps' namespaces) until
/// `shutdown`, re-listing after every break in the watch, and calls `on_ready(namespace,
/// service)` for each slice with a ready endpoint.
pub async fn follow(client: kube::Client, on_ready: impl Fn(&str, &str) + Send + Sync, shutdown: CancellationToken) {
    let api: Api<EndpointSlice> = Api::all(client);
    let mut backoff = Duration::from_millis(500);
    loop {
        let round = tokio::select! {
            _ = shutdown.cancelled() => return,
            round = watch_once(&api, &on_ready) => round,
        };
        match round {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                warn!("watching EndpointSlices failed: {e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn watch_once(api: &Api<EndpointSlice>, on_ready: &impl Fn(&str, &str)) -> Result<(), kube::Error> {
    let listed = api.list(&ListParams::default().labels(SERVICE_LABEL)).await?;
    for slice in &listed.items {
        ready(on_ready, slice);
    }
    let version = listed.metadata.resource_version.unwrap_or_else(|| "0".into());
    let params = WatchParams::default().labels(SERVICE_LABEL).timeout(290);
    let mut events = std::pin::pin!(api.watch(&params, &version).await?);
    while let Some(event) = events.try_next().await? {
        match event {
            WatchEvent::Added(slice) | WatchEvent::Modified(slice) => ready(on_ready, &slice),
            WatchEvent::Deleted(_) | WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(status) => {
                debug!(code = status.code, "EndpointSlice watch ended: {}", status.message);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A slice with at least one ready endpoint: its Service's held requests can go.
fn ready(on_ready: &impl Fn(&str, &str), slice: &EndpointSlice) {
    let ready = slice.endpoints.iter().flatten().any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false));
    let service = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_LABEL));
    if let (true, Some(service), Some(namespace)) = (ready, service, slice.metadata.namespace.as_deref()) {
        on_ready(namespace, service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Route;

    #[test]
    fn a_service_pokes_the_apps_whose_backend_it_is() {
        let activator = Activator::new(Arc::new(|_: &str| {}));
        for (id, host, backend) in [
            ("default/api", "api.example.com", "http://api-function.default.svc:80"),
            ("default/long", "long.example.com", "http://api-function.default.svc.cluster.local"),
            ("default/short", "short.example.com", "http://api-function.default:8080"),
            ("shop/api", "shop.example.com", "http://api-function.shop.svc"),
        ] {
            let route = Route::new(id, vec![host.to_string()], backend.parse().unwrap());
            activator.set_route(route).unwrap();
        }
        assert_eq!(activator.poke_service("default", "api-function"), 3);
        assert_eq!(activator.poke_service("shop", "api-function"), 1);
        assert_eq!(activator.poke_service("default", "api"), 0);
    }
}
