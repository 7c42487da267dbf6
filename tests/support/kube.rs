//! A Kubernetes API server on loopback that replays recorded responses: a GET answers the object
//! the test set for its path, a watch (`watch=true`) streams the events the test sends. Every
//! request's URI is recorded.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

#[derive(Clone, Default)]
pub struct RecordedApi {
    objects: Arc<Mutex<HashMap<String, serde_json::Value>>>,
    watchers: Arc<Mutex<Vec<mpsc::UnboundedSender<String>>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl RecordedApi {
    /// GETs of `path` answer `object` from now on.
    pub fn answer(&self, path: &str, object: serde_json::Value) {
        self.objects.lock().unwrap().insert(path.to_string(), object);
    }

    /// Serves on a loopback port; a kube client for it.
    pub async fn client(&self) -> kube::Client {
        let app = Router::new().fallback(respond).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("kube client")
    }

    /// Sends a recorded watch event (JSON) to every open watch.
    pub fn send(&self, event: &str) {
        let line: serde_json::Value = serde_json::from_str(event).expect("event fixture");
        self.watchers.lock().unwrap().retain(|w| w.send(line.to_string()).is_ok());
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Watches opened so far.
    pub fn watches(&self) -> usize {
        self.requests().iter().filter(|r| r.contains("watch=true")).count()
    }
}

async fn respond(State(api): State<RecordedApi>, request: Request) -> Response {
    let uri = request.uri().to_string();
    api.requests.lock().unwrap().push(uri.clone());
    let json = Response::builder().header("content-type", "application/json");
    if uri.contains("watch=true") {
        let (tx, rx) = mpsc::unbounded_channel();
        api.watchers.lock().unwrap().push(tx);
        let lines = UnboundedReceiverStream::new(rx).map(|line| Ok::<_, Infallible>(format!("{line}\n")));
        return json.body(Body::from_stream(lines)).unwrap();
    }
    match api.objects.lock().unwrap().get(request.uri().path()) {
        Some(object) => json.body(Body::from(object.to_string())).unwrap(),
        None => Response::builder().status(404).body(Body::empty()).unwrap(),
    }
}
