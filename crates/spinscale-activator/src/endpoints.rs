//! In a cluster, the activator learns that a backend is ready from its Service's EndpointSlices
//! (watched through the Kubernetes API) instead of waiting for the next connect attempt: the
//! moment an endpoint turns ready, the apps behind that Service are poked.

use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
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

/// Watches every EndpointSlice of a Service (cluster-wide: backends live in the apps'
/// namespaces) until `shutdown`, and calls `on_ready(namespace, service)` for each slice with a
/// ready endpoint, listed or changed.
///
/// The watch is `kube`'s [`watcher`](watcher::watcher): lists in pages of 500, asks for
/// bookmarks so a watch that ends resumes where it was, lists again after `410 Gone`, and backs
/// off exponentially (0.8 s to 30 s, jittered) while the API server fails.
pub async fn follow(client: kube::Client, on_ready: impl Fn(&str, &str) + Send + Sync, shutdown: CancellationToken) {
    let api: Api<EndpointSlice> = Api::all(client);
    let config = watcher::Config::default().labels(SERVICE_LABEL);
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            Some(Ok(Event::InitApply(slice) | Event::Apply(slice))) => ready(&on_ready, &slice),
            Some(Ok(Event::Init | Event::InitDone | Event::Delete(_))) => {}
            Some(Err(watcher::Error::WatchError(status))) if status.code == 410 => {
                debug!("EndpointSlice watch expired ({}); listing again", status.message);
            }
            Some(Err(e)) => warn!("watching EndpointSlices failed: {e}; retrying with backoff"),
            // The watcher's stream does not end; should it, there is nothing more to follow.
            None => return,
        }
    }
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
