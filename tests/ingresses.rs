//! `--watch-ingresses` against recorded Kubernetes API responses: the hosts each namespace's
//! Ingresses and HTTPRoutes serve are followed through `kube::runtime::watcher`, and a trigger may
//! claim only the hosts of its own namespace (`INVALID_ARGUMENT` naming `hosts` otherwise).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use spinscale::config::Config;
use spinscale::ingresses::{self, HostIndex};
use spinscale::registry::Registry;
use spinscale_core::policy::HostOwnership;
use support::kube::RecordedApi;
use support::until;
use tokio_util::sync::CancellationToken;

fn ingress(namespace: &str, name: &str, host: &str) -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": "101"},
        "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "spinscale-activator", "port": {"number": 80}}}}]}}]}
    })
}

fn recorded_cluster() -> RecordedApi {
    let api = RecordedApi::default();
    api.answer(
        "/apis/networking.k8s.io/v1/ingresses",
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressList", "metadata": {"resourceVersion": "100"},
               "items": [ingress("shop", "storefront", "shop.example.com")]}),
    );
    api.answer(
        "/apis/gateway.networking.k8s.io/v1/httproutes",
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRouteList",
               "metadata": {"resourceVersion": "100"},
               "items": [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                          "metadata": {"namespace": "blog", "name": "blog", "resourceVersion": "99"},
                          "spec": {"hostnames": ["*.blog.example.com"]}}]}),
    );
    api
}

fn hosts_trigger(host: &str, namespace: &str) -> HashMap<String, String> {
    let backend = format!("http://app.{namespace}.svc:80");
    [("hosts", host), ("backend", backend.as_str())].into_iter().map(|(k, v)| (k.into(), v.into())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_belong_to_the_namespaces_that_route_them() {
    let api = recorded_cluster();
    let client = api.client().await;
    let index = HostIndex::new();
    let shutdown = CancellationToken::new();
    let follow = tokio::spawn(ingresses::follow(client, index.clone(), shutdown.clone()));
    assert!(
        until(Duration::from_secs(30), || index.may_claim("shop", "shop.example.com").is_ok()).await,
        "the listed Ingress: {:?}",
        api.requests()
    );
    assert!(until(Duration::from_secs(30), || index.may_claim("blog", "www.blog.example.com").is_ok()).await);
    let refused = index.may_claim("evil", "shop.example.com").expect_err("another namespace's host");
    assert!(refused.contains("\"evil\"") && refused.contains("shop.example.com"), "{refused}");

    // Watch events: a new Ingress gives its namespace the host; a deleted one takes it away.
    assert!(until(Duration::from_secs(30), || api.watches() >= 2).await, "{:?}", api.requests());
    api.send(&json!({"type": "ADDED", "object": ingress("evil", "own", "evil.example.com")}).to_string());
    assert!(until(Duration::from_secs(30), || index.may_claim("evil", "evil.example.com").is_ok()).await);
    api.send(&json!({"type": "DELETED", "object": ingress("shop", "storefront", "shop.example.com")}).to_string());
    assert!(until(Duration::from_secs(30), || index.may_claim("shop", "shop.example.com").is_err()).await);

    // The registry asks the index: a claim on a host the namespace does not route is refused.
    let registry = Registry::new(Config::default()).expect("registry");
    registry.enable_activator();
    registry.set_host_owners(index.clone() as Arc<dyn HostOwnership + Send + Sync>);
    let err = registry.target("shop", "app", &hosts_trigger("evil.example.com", "shop")).err().expect("refused");
    let message = err.to_string();
    assert!(message.contains("hosts") && message.contains("evil.example.com"), "{message}");
    registry.target("blog", "app", &hosts_trigger("www.blog.example.com", "blog")).expect("its own host");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), follow).await.expect("stops on shutdown").expect("join");
}
