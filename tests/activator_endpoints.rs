//! The activator's EndpointSlice watch (kube's `watcher`) against recorded Kubernetes API
//! responses: a Service whose slice is ready is reported from the list and the moment a watch
//! event says so; slices without ready endpoints are not; lists come in pages; the watch starts
//! from the listed version, asks for bookmarks, and lists again after 410 Gone.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use spinscale_activator::endpoints;
use support::kube::RecordedApi;
use support::until;
use tokio_util::sync::CancellationToken;

const LIST: &str = include_str!("fixtures/kube/endpointslices-list.json");
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const DEADLINE: Duration = Duration::from_secs(30);

type Reported = Arc<Mutex<Vec<(String, String)>>>;

/// Follows the slices through `client` until the returned token is cancelled; what it reports.
fn follow(client: kube::Client) -> (Reported, CancellationToken, tokio::task::JoinHandle<()>) {
    let reported: Reported = Arc::default();
    let seen = reported.clone();
    let shutdown = CancellationToken::new();
    let follow = tokio::spawn(endpoints::follow(
        client,
        move |namespace: &str, service: &str| seen.lock().unwrap().push((namespace.into(), service.into())),
        shutdown.clone(),
    ));
    (reported, shutdown, follow)
}

fn service(name: &str) -> (String, String) {
    ("default".to_string(), name.to_string())
}

fn is_list(uri: &str) -> bool {
    uri.starts_with(SLICES) && !uri.contains("watch=true")
}

#[tokio::test]
async fn ready_slices_are_reported_from_the_list_from_events_and_after_410_gone() {
    let api = RecordedApi::default();
    api.answer(SLICES, serde_json::from_str(LIST).expect("fixture"));
    let (reported, shutdown, follow) = follow(api.client().await);

    assert!(until(DEADLINE, || api.watches() == 1).await, "{:?}", api.requests());
    let requests = api.requests();
    assert!(is_list(&requests[0]), "lists first: {requests:?}");
    assert!(requests[0].contains("labelSelector=kubernetes.io%2Fservice-name"), "only Service slices: {requests:?}");
    assert!(requests[0].contains("limit=500"), "in pages: {requests:?}");
    let watch = &requests[1];
    assert!(watch.contains("watch=true") && watch.contains("labelSelector=kubernetes.io%2Fservice-name"), "{watch}");
    assert!(watch.contains("resourceVersion=77120"), "watches from the listed version: {watch}");
    assert!(watch.contains("allowWatchBookmarks=true"), "with bookmarks: {watch}");
    assert_eq!(*reported.lock().unwrap(), [service("api-function")], "the ready slice of the list, not the empty one");

    // Events are handled in order: once the ready event is reported, the not-ready one and the
    // bookmark sent before it have been handled, and reported nothing.
    api.send(include_str!("fixtures/kube/endpointslice-starting.json"));
    api.send(r#"{"type":"BOOKMARK","object":{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{"resourceVersion":"77145"}}}"#);
    let sent = Instant::now();
    api.send(include_str!("fixtures/kube/endpointslice-ready.json"));
    assert!(until(DEADLINE, || reported.lock().unwrap().len() >= 2).await);
    println!("EndpointSlice ready event → reported in {} µs", sent.elapsed().as_micros());
    assert_eq!(*reported.lock().unwrap(), [service("api-function"), service("webhook-handler")]);
    assert_eq!(api.watches(), 1, "a bookmark does not break the watch");

    api.send(include_str!("fixtures/kube/watch-gone.json"));
    assert!(until(DEADLINE, || api.watches() == 2).await, "watched again: {:?}", api.requests());
    let requests = api.requests();
    assert!(is_list(&requests[2]), "listed again before watching again: {requests:?}");
    assert!(requests[3].contains("watch=true") && requests[3].contains("resourceVersion=77120"), "{requests:?}");
    assert_eq!(
        *reported.lock().unwrap(),
        [service("api-function"), service("webhook-handler"), service("api-function")],
        "the list again reports its ready slice"
    );

    shutdown.cancel();
    tokio::time::timeout(DEADLINE, follow).await.expect("stops on shutdown").expect("join");
}

/// An API server whose EndpointSlice list comes in two pages (the first with a continue token)
/// and whose watches stay open and silent. Every request's URI is recorded.
#[derive(Clone, Default)]
struct PagedApi {
    requests: Arc<Mutex<Vec<String>>>,
}

async fn paged(State(api): State<PagedApi>, request: Request) -> Response {
    let uri = request.uri().to_string();
    api.requests.lock().unwrap().push(uri.clone());
    let json = Response::builder().header("content-type", "application/json");
    if uri.contains("watch=true") {
        let silent = tokio_stream::pending::<Result<Bytes, Infallible>>();
        return json.body(Body::from_stream(silent)).unwrap();
    }
    let mut list: serde_json::Value = serde_json::from_str(LIST).expect("fixture");
    if uri.contains("continue=page-2") {
        // The second page: the webhook handler's slice, ready.
        let event: serde_json::Value =
            serde_json::from_str(include_str!("fixtures/kube/endpointslice-ready.json")).expect("fixture");
        list["items"] = serde_json::Value::Array(vec![event["object"].clone()]);
    } else {
        // The first page: the API function's slice, and more to come.
        list["items"].as_array_mut().unwrap().truncate(1);
        list["metadata"]["continue"] = "page-2".into();
    }
    json.body(Body::from(list.to_string())).unwrap()
}

#[tokio::test]
async fn every_page_of_the_list_is_reported_before_the_watch() {
    let api = PagedApi::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let router = axum::Router::new().fallback(paged).with_state(api.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("kube client");
    let (reported, shutdown, follow) = follow(client);

    let requests = || api.requests.lock().unwrap().clone();
    assert!(until(DEADLINE, || requests().iter().any(|r| r.contains("watch=true"))).await, "{:?}", requests());
    let requests = requests();
    assert!(is_list(&requests[0]) && requests[0].contains("limit=500"), "{requests:?}");
    assert!(!requests[0].contains("continue="), "{requests:?}");
    assert!(is_list(&requests[1]) && requests[1].contains("continue=page-2"), "the second page: {requests:?}");
    assert!(requests[2].contains("watch=true") && requests[2].contains("resourceVersion=77120"), "{requests:?}");
    assert_eq!(*reported.lock().unwrap(), [service("api-function"), service("webhook-handler")]);

    shutdown.cancel();
    tokio::time::timeout(DEADLINE, follow).await.expect("stops on shutdown").expect("join");
}
