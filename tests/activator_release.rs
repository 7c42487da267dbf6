//! The release pace over real sockets: when a backend turns ready, its held requests go at a
//! bounded pace. At first at most `RELEASE_WINDOW` are in flight at the backend, and each answer
//! lets one more go: at no moment does the backend hold more than the window plus the requests
//! it has answered. Every held request is answered, by the backend, exactly once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use spinscale_activator::{Activator, RELEASE_WINDOW, Route};
use tokio::net::TcpListener;
use tokio::sync::watch;

const APP: &str = "paced.example.com";
const DEADLINE: Duration = Duration::from_secs(30);

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What the backend saw.
#[derive(Default)]
struct Seen {
    /// Requests being handled now.
    in_flight: AtomicUsize,
    /// Requests answered so far.
    answered: AtomicUsize,
    /// The most requests in flight at once.
    max_in_flight: AtomicUsize,
    /// The most requests in flight beyond those answered, when one arrived.
    max_beyond_answered: AtomicUsize,
    /// Each request's `x-id`, in arrival order.
    ids: Mutex<Vec<usize>>,
}

/// A backend on `addr` that records its concurrency; each request waits until `open` is true,
/// then `delay`, then answers its `x-id`.
async fn backend(addr: SocketAddr, open: watch::Receiver<bool>, delay: Duration) -> Arc<Seen> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let seen = Arc::new(Seen::default());
    let serving = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (seen, open) = (serving.clone(), open.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(request, seen.clone(), open.clone(), delay));
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    seen
}

async fn answer(
    request: Request<Incoming>,
    seen: Arc<Seen>,
    mut open: watch::Receiver<bool>,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let id: usize = request.headers()["x-id"].to_str().unwrap().parse().unwrap();
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let beyond = now.saturating_sub(seen.answered.load(Ordering::SeqCst));
    seen.max_beyond_answered.fetch_max(beyond, Ordering::SeqCst);
    seen.ids.lock().unwrap().push(id);
    open.wait_for(|open| *open).await.unwrap();
    tokio::time::sleep(delay).await;
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    seen.answered.fetch_add(1, Ordering::SeqCst);
    Ok(Response::new(Full::new(Bytes::from(id.to_string()))))
}

/// An activator routing `APP` to a backend that is not there yet, and `held` requests waiting
/// for it; the requests' tasks answer `(status, body)`.
struct Held {
    activator: Arc<Activator>,
    backend: SocketAddr,
    requests: Vec<tokio::task::JoinHandle<(StatusCode, String)>>,
}

async fn hold(held: usize) -> Held {
    let activator = Activator::new(Arc::new(|_: &str| {}));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    tokio::spawn(activator.clone().serve(listener, tokio_util::sync::CancellationToken::new()));
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let mut route = Route::new("default/paced", vec![APP.to_string()], format!("http://{backend}").parse().unwrap());
    route.hold_timeout = Duration::from_secs(120);
    route.max_held = 2 * held;
    activator.set_route(route).unwrap();

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let requests = (0..held)
        .map(|id| {
            let request = Request::get(format!("http://{proxy}/"))
                .header("host", APP)
                .header("x-id", id.to_string())
                .body(Full::default())
                .unwrap();
            let client = client.clone();
            tokio::spawn(async move {
                let response = client.request(request).await.expect("the activator answers");
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8(body.to_vec()).unwrap())
            })
        })
        .collect();
    until("every request held", || activator.stats("default/paced").unwrap().held == held).await;
    Held { activator, backend, requests }
}

/// Every request was answered `200` with its own id, and the backend got each exactly once.
async fn all_answered_once(held: Held, seen: &Seen) {
    let count = held.requests.len();
    for (id, request) in held.requests.into_iter().enumerate() {
        assert_eq!(request.await.unwrap(), (StatusCode::OK, id.to_string()));
    }
    let mut ids = seen.ids.lock().unwrap().clone();
    ids.sort_unstable();
    assert_eq!(ids, (0..count).collect::<Vec<_>>(), "each held request reached the backend exactly once");
    let stats = held.activator.stats("default/paced").unwrap();
    assert_eq!((stats.held, stats.backend_ready), (0, true), "the gate is open once none waits");
    assert_eq!(held.activator.held_totals(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_turned_ready_gets_one_window_then_one_more_per_answer() {
    const HELD: usize = 200;
    let held = hold(HELD).await;
    let (open, gate) = watch::channel(false);
    let seen = backend(held.backend, gate, Duration::from_millis(1)).await;
    held.activator.poke("default/paced"); // what the EndpointSlice watch does

    // The backend answers nothing yet: one window is in flight, the rest stays held.
    until("a window at the backend", || seen.in_flight.load(Ordering::SeqCst) >= RELEASE_WINDOW).await;
    assert_eq!(seen.in_flight.load(Ordering::SeqCst), RELEASE_WINDOW);
    assert_eq!(held.activator.stats("default/paced").unwrap().held, HELD - RELEASE_WINDOW);

    let opened = Instant::now();
    open.send(true).unwrap();
    all_answered_once(held, &seen).await;
    println!(
        "{HELD} held, window {RELEASE_WINDOW}: all answered {:.1} ms after the backend began answering; \
         at most {} in flight at the backend",
        opened.elapsed().as_secs_f64() * 1e3,
        seen.max_in_flight.load(Ordering::SeqCst)
    );
    let beyond = seen.max_beyond_answered.load(Ordering::SeqCst);
    assert!(beyond <= RELEASE_WINDOW, "{beyond} in flight beyond those answered, window {RELEASE_WINDOW}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_held_requests_all_go_to_a_healthy_backend() {
    const HELD: usize = 1000;
    let held = hold(HELD).await;
    let (_open, gate) = watch::channel(true);
    let ready = Instant::now();
    let seen = backend(held.backend, gate, Duration::from_millis(5)).await;
    held.activator.poke("default/paced");

    all_answered_once(held, &seen).await;
    println!(
        "{HELD} held, backend answering in 5 ms: all answered {:.1} ms after it turned ready; at most {} in flight",
        ready.elapsed().as_secs_f64() * 1e3,
        seen.max_in_flight.load(Ordering::SeqCst)
    );
    let beyond = seen.max_beyond_answered.load(Ordering::SeqCst);
    assert!(beyond <= RELEASE_WINDOW, "{beyond} in flight beyond those answered, window {RELEASE_WINDOW}");
}
