//! The activator's EndpointSlice watch against recorded Kubernetes API responses: a Service
//! whose slice turns ready is reported at once; slices without ready endpoints are not; the
//! watch starts from the listed version and re-lists after 410 Gone.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::routing::get;
use spinscale::activator::endpoints;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct RecordedApi {
    watchers: Arc<Mutex<Vec<mpsc::UnboundedSender<String>>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn slices(State(api): State<RecordedApi>, request: Request) -> axum::response::Response {
    let uri = request.uri().to_string();
    api.requests.lock().unwrap().push(uri.clone());
    if !uri.contains("watch=true") {
        let body = include_str!("fixtures/kube/endpointslices-list.json");
        return axum::response::Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
    }
    let (tx, rx) = mpsc::unbounded_channel();
    api.watchers.lock().unwrap().push(tx);
    let lines = UnboundedReceiverStream::new(rx).map(|line| Ok::<_, Infallible>(format!("{line}\n")));
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(lines))
        .unwrap()
}

impl RecordedApi {
    fn send(&self, event: &str) {
        let line: serde_json::Value = serde_json::from_str(event).expect("fixture");
        self.watchers.lock().unwrap().retain(|w| w.send(line.to_string()).is_ok());
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn ready_endpoints_are_reported_the_moment_they_turn_ready() {
    let api = RecordedApi::default();
    let app = Router::new().route("/apis/discovery.k8s.io/v1/endpointslices", get(slices)).with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");

    let ready: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen = ready.clone();
    let shutdown = CancellationToken::new();
    let follow = tokio::spawn(endpoints::follow(
        client,
        move |namespace: &str, service: &str| seen.lock().unwrap().push((namespace.into(), service.into())),
        shutdown.clone(),
    ));
    let watching = |api: &RecordedApi| api.requests().iter().filter(|r| r.contains("watch=true")).count();
    assert!(until(Duration::from_secs(3), || watching(&api) == 1).await, "{:?}", api.requests());
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
    assert!(until(Duration::from_secs(3), || watching(&api) == 2).await, "re-listed and watched again");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), follow).await.expect("stops on shutdown").expect("join");
}
