//! The activator's EndpointSlice watch against recorded Kubernetes API responses: a Service
//! whose slice turns ready is reported at once; slices without ready endpoints are not; the
//! watch starts from the listed version and re-lists after 410 Gone.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spinscale_activator::endpoints;
use support::kube::RecordedApi;
use support::until;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn ready_endpoints_are_reported_the_moment_they_turn_ready() {
    let api = RecordedApi::default();
    let list = include_str!("fixtures/kube/endpointslices-list.json");
    api.answer("/apis/discovery.k8s.io/v1/endpointslices", serde_json::from_str(list).expect("fixture"));
    let client = api.client().await;

    let ready: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen = ready.clone();
    let shutdown = CancellationToken::new();
    let follow = tokio::spawn(endpoints::follow(
        client,
        move |namespace: &str, service: &str| seen.lock().unwrap().push((namespace.into(), service.into())),
        shutdown.clone(),
    ));
    assert!(until(Duration::from_secs(3), || api.watches() == 1).await, "{:?}", api.requests());
    let requests = api.requests();
    assert!(requests[0].contains("labelSelector=kubernetes.io%2Fservice-name"), "only Service slices: {requests:?}");
    assert!(requests[1].contains("resourceVersion=77120"), "watches from the listed version: {requests:?}");
    assert_eq!(*ready.lock().unwrap(), vec![("default".to_string(), "api-function".to_string())], "from the list");

    api.send(include_str!("fixtures/kube/endpointslice-starting.json"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ready.lock().unwrap().len(), 1, "a pod that is not ready yet changes nothing");
    let sent = Instant::now();
    api.send(include_str!("fixtures/kube/endpointslice-ready.json"));
    assert!(until(Duration::from_secs(2), || ready.lock().unwrap().len() == 2).await);
    println!("EndpointSlice ready event → reported in {} µs", sent.elapsed().as_micros());
    assert_eq!(ready.lock().unwrap()[1], ("default".to_string(), "webhook-handler".to_string()));

    api.send(include_str!("fixtures/kube/watch-gone.json"));
    assert!(until(Duration::from_secs(3), || api.watches() == 2).await, "re-listed and watched again");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), follow).await.expect("stops on shutdown").expect("join");
}
