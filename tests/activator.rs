//! The HTTP activator over real sockets: an in-test hyper backend that counts and echoes, real
//! clients (HTTP/1.1 pooled, h2c prior knowledge, a raw WebSocket handshake).

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use spinscale_activator::{Activator, ActivatorLimits, Route, RouteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const APP: &str = "app.example.com";
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------- activator under test

/// Every `on_demand` call: target and when.
type Demands = Arc<Mutex<Vec<(String, Instant)>>>;

struct Proxy {
    activator: Arc<Activator>,
    addr: SocketAddr,
    demands: Demands,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Proxy {
    async fn start() -> Self {
        let demands: Demands = Arc::default();
        let log = demands.clone();
        let activator = Activator::new(Arc::new(move |target: &str| {
            log.lock().unwrap().push((target.to_string(), Instant::now()));
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(activator.clone().serve(listener, shutdown.clone()));
        Self { activator, addr, demands, shutdown, served }
    }

    fn route(&self, target: &str, hosts: &[&str], backend: SocketAddr) -> Route {
        let route = Route::new(target, hosts.iter().map(std::string::ToString::to_string).collect(), uri(backend));
        self.activator.set_route(route.clone()).unwrap();
        route
    }

    fn demands(&self) -> Vec<String> {
        self.demands.lock().unwrap().iter().map(|(t, _)| t.clone()).collect()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn uri(addr: SocketAddr) -> http::Uri {
    format!("http://{addr}").parse().unwrap()
}

/// A free port on loopback, for a backend that starts later.
async fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

async fn until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !condition() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------- clients

type Http1 = Client<HttpConnector, Full<Bytes>>;

fn http1() -> Http1 {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(client: &Http1, request: Request<Full<Bytes>>) -> Answer {
    let response = client.request(request).await.expect("the activator answers");
    let (parts, body) = response.into_parts();
    Answer { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
}

fn get(proxy: &Proxy, host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(proxy.url(path)).header("host", host).body(Full::default()).unwrap()
}

// ---------------------------------------------------------------- backend

type BackendBody = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
    /// `x-seq` of each request, in the order the backend got them.
    order: Mutex<Vec<String>>,
    /// When each request arrived.
    at: Mutex<Vec<Instant>>,
    /// The connection tasks, so that `stop` returns only once every connection is closed.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct Backend {
    addr: SocketAddr,
    seen: Arc<Seen>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Serves HTTP/1.1 on `addr` until stopped; `name` comes back in `x-backend`.
    async fn start(addr: SocketAddr, name: &'static str) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let (seen, stop) = (Arc::new(Seen::default()), CancellationToken::new());
        let task = tokio::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            async move {
                loop {
                    let stream = tokio::select! {
                        _ = stop.cancelled() => return,
                        accepted = listener.accept() => accepted.unwrap().0,
                    };
                    seen.connections.fetch_add(1, Ordering::SeqCst);
                    let (tasks, seen, stop) = (seen.clone(), seen.clone(), stop.clone());
                    let task = tokio::spawn(async move {
                        let service = service_fn(move |request| backend_answer(request, name, seen.clone()));
                        let connection = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades();
                        // Stopped wins over a request that arrives at the same moment.
                        tokio::select! {
                            biased;
                            () = stop.cancelled() => {}
                            _ = connection => {}
                        }
                    });
                    tasks.tasks.lock().unwrap().push(task);
                }
            }
        });
        Self { addr, seen, stop, task }
    }

    /// Stops accepting and closes every connection.
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
        let connections = std::mem::take(&mut *self.seen.tasks.lock().unwrap());
        for connection in connections {
            connection.await.unwrap();
        }
    }

    fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn backend_answer(
    mut request: Request<Incoming>,
    name: &'static str,
    seen: Arc<Seen>,
) -> Result<Response<BackendBody>, Infallible> {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    seen.at.lock().unwrap().push(Instant::now());
    if let Some(seq) = request.headers().get("x-seq") {
        seen.order.lock().unwrap().push(seq.to_str().unwrap().to_string());
    }
    let echo = |name: &str| request.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let mut response = Response::builder()
        .header("x-backend", name)
        .header("x-seen-host", echo("host"))
        .header("x-seen-forwarded-for", echo("x-forwarded-for"))
        .header("x-seen-forwarded-proto", echo("x-forwarded-proto"))
        .header("x-seen-forwarded-host", echo("x-forwarded-host"))
        .header("x-seen-hop", if request.headers().contains_key("x-hop") { "yes" } else { "no" })
        .header("x-seen-keep-alive", if request.headers().contains_key("keep-alive") { "yes" } else { "no" });
    let body: BackendBody = match request.uri().path() {
        "/exact" => {
            response = response
                .status(StatusCode::CREATED)
                .header("content-type", "text/x-exact")
                .header("set-cookie", "a=1")
                .header("set-cookie", "b=2");
            Full::new(Bytes::from_static(b"hello from the backend\n")).boxed_unsync()
        }
        "/echo" => {
            let (mut hash, mut len) = (FNV_START, 0usize);
            let mut body = request.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.expect("request body streams").into_data() {
                    hash = fnv1a(hash, &data);
                    len += data.len();
                }
            }
            response = response.header("x-body-hash", hash.to_string()).header("x-body-len", len.to_string());
            Full::default().boxed_unsync()
        }
        "/stream" => {
            let chunks = pattern(10 * MIB).chunks(64 * 1024).map(Bytes::copy_from_slice).collect::<Vec<_>>();
            let frames = futures_util::stream::iter(chunks.into_iter().map(|c| Ok::<_, Infallible>(Frame::data(c))));
            StreamBody::new(frames).boxed_unsync()
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let mut io = TokioIo::new(upgrade.await.expect("upgrade"));
                io.write_all(b"welcome\n").await.unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    let n = io.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    io.write_all(&buf[..n].to_ascii_uppercase()).await.unwrap();
                }
            });
            response = response
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "Upgrade");
            Full::default().boxed_unsync()
        }
        _ => Full::new(Bytes::from(format!("{name} ok\n"))).boxed_unsync(),
    };
    Ok(response.body(body).unwrap())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn a_held_request_gets_the_backends_exact_response() {
    let proxy = Proxy::start().await;
    let backend_addr = free_addr().await;
    proxy.route("default/webhook", &[APP], backend_addr);
    let client = http1();
    // A first (refused) request opens the keep-alive connection, so the timing below is the
    // request alone.
    assert_eq!(send(&client, get(&proxy, "nobody.example.com", "/")).await.status, StatusCode::NOT_FOUND);

    let sent = Instant::now();
    let pending = tokio::spawn({
        let client = client.clone();
        let request = get(&proxy, APP, "/exact");
        async move { send(&client, request).await }
    });
    until("on_demand", Duration::from_secs(30), || !proxy.demands().is_empty()).await;
    let demanded = proxy.demands.lock().unwrap()[0].1;
    assert_eq!(proxy.activator.stats("default/webhook").unwrap().held, 1);

    tokio::time::sleep(Duration::from_secs(1)).await; // the app takes a second to start
    let backend = Backend::start(backend_addr, "webhook").await;
    let ready = Instant::now();
    let answer = pending.await.unwrap();
    let delivered = ready.elapsed();
    let round_trip = sent.elapsed();

    assert_eq!(proxy.demands(), ["default/webhook"], "on_demand fires once, before the backend existed");
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.text(), "hello from the backend\n");
    assert_eq!(answer.header("content-type"), "text/x-exact");
    assert_eq!(answer.header("x-backend"), "webhook");
    let cookies: Vec<_> = answer.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    let cold_ms: u64 = answer.header("x-spinscale-cold-start").parse().expect("cold-start header in ms");
    // Held before the 1 s sleep began, so at least 1 s; and never more than the client waited in
    // all (a consistency check that no slowness can fail).
    assert!(
        cold_ms >= 1000 && u128::from(cold_ms) <= round_trip.as_millis(),
        "held {cold_ms} ms for a backend that started after 1 s, answered {round_trip:?} after sending"
    );
    assert_eq!(backend.requests(), 1);
    let stats = proxy.activator.stats("default/webhook").unwrap();
    assert_eq!((stats.requests_total, stats.held, stats.backend_ready), (1, 0, true));
    until("in_flight back to 0", Duration::from_secs(30), || {
        proxy.activator.stats("default/webhook").unwrap().in_flight == 0
    })
    .await;
    // Ready now: the next request goes straight through, without the header.
    let direct = send(&client, get(&proxy, APP, "/exact")).await;
    assert_eq!(direct.status, StatusCode::CREATED);
    assert!(direct.headers.get("x-spinscale-cold-start").is_none());
    println!(
        "request sent -> on_demand: {} us; backend listening -> held response delivered: {:.1} ms (connect probing, no poke)",
        demanded.duration_since(sent).as_micros(),
        delivered.as_secs_f64() * 1e3
    );
}

#[tokio::test]
async fn headers_are_rewritten_and_the_host_kept() {
    let proxy = Proxy::start().await;
    let backend = Backend::start(free_addr().await, "b").await;
    proxy.route("default/app", &[APP], backend.addr);
    let request = Request::get(proxy.url("/"))
        .header("host", "App.Example.com:8080")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .body(Full::default())
        .unwrap();
    let answer = send(&http1(), request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-seen-host"), "App.Example.com:8080");
    assert_eq!(answer.header("x-seen-forwarded-for"), "203.0.113.9, 127.0.0.1");
    assert_eq!(answer.header("x-seen-forwarded-proto"), "http");
    assert_eq!(answer.header("x-seen-forwarded-host"), "App.Example.com:8080");
    assert_eq!((answer.header("x-seen-hop"), answer.header("x-seen-keep-alive")), ("no", "no"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_held_requests_all_complete_exactly_once() {
    const CONCURRENT: usize = 500;
    const SEQUENTIAL: usize = 20;
    let proxy = Proxy::start().await;
    let backend_addr = free_addr().await;
    proxy.route("default/api", &[APP], backend_addr);
    let client = http1();
    let done: Arc<Mutex<Vec<Instant>>> = Arc::default();

    let mut tasks = Vec::new();
    for i in 0..CONCURRENT {
        let request = Request::get(proxy.url("/")).header("host", APP).header("x-seq", format!("c{i}"));
        let (client, done) = (client.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let answer = send(&client, request.body(Full::default()).unwrap()).await;
            done.lock().unwrap().push(Instant::now());
            answer.status
        }));
    }
    // One client with its own connection, sending one request after another.
    let sequential = tokio::spawn({
        let client = http1();
        let url = proxy.url("/");
        async move {
            for i in 0..SEQUENTIAL {
                let request = Request::get(&url).header("host", APP).header("x-seq", format!("s{i:02}"));
                assert_eq!(send(&client, request.body(Full::default()).unwrap()).await.status, StatusCode::OK);
            }
        }
    });
    until("every request held", Duration::from_secs(30), || {
        proxy.activator.stats("default/api").unwrap().held == CONCURRENT + 1
    })
    .await;

    let backend = Backend::start(backend_addr, "api").await;
    proxy.activator.poke("default/api"); // what an EndpointSlice watch does when the pod is ready
    let ready = Instant::now();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    sequential.await.unwrap();

    assert_eq!(backend.requests(), CONCURRENT + SEQUENTIAL, "none lost, none duplicated");
    let order = backend.seen.order.lock().unwrap().clone();
    let distinct: HashSet<&String> = order.iter().collect();
    assert_eq!(distinct.len(), CONCURRENT + SEQUENTIAL);
    let mine: Vec<&String> = order.iter().filter(|s| s.starts_with('s')).collect();
    let mut sorted = mine.clone();
    sorted.sort();
    assert_eq!(mine, sorted, "one client's requests reach the backend in the order it sent them");
    assert_eq!(proxy.demands(), ["default/api"]);
    assert_eq!(proxy.activator.stats("default/api").unwrap().requests_total, (CONCURRENT + SEQUENTIAL) as u64);
    assert_eq!(proxy.activator.held_totals(), (0, 0));

    let mut latencies: Vec<Duration> =
        done.lock().unwrap().iter().map(|t| t.saturating_duration_since(ready)).collect();
    latencies.sort();
    let first_at_backend = backend.seen.at.lock().unwrap().iter().min().map(|t| t.duration_since(ready));
    println!(
        "backend ready (poked) -> first request at the backend {:.1} ms; held response delivered, {CONCURRENT} \
         requests: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        first_at_backend.unwrap_or_default().as_secs_f64() * 1e3,
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3
    );
}

#[tokio::test]
async fn ten_mib_bodies_stream_through_a_hold() {
    let proxy = Proxy::start().await;
    let backend_addr = free_addr().await;
    proxy.route("default/upload", &[APP], backend_addr);
    let body = pattern(10 * MIB);
    let expected_hash = fnv1a(FNV_START, &body);
    let upload = tokio::spawn({
        let client = http1();
        let request = Request::post(proxy.url("/echo")).header("host", APP).body(Full::new(Bytes::from(body))).unwrap();
        async move { send(&client, request).await }
    });
    until("the upload held", Duration::from_secs(30), || proxy.activator.stats("default/upload").unwrap().held == 1)
        .await;
    let _backend = Backend::start(backend_addr, "upload").await;
    let answer = upload.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-body-len"), (10 * MIB).to_string());
    assert_eq!(answer.header("x-body-hash"), expected_hash.to_string());

    let download = send(&http1(), get(&proxy, APP, "/stream")).await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.body.len(), 10 * MIB);
    assert_eq!(fnv1a(FNV_START, &download.body), expected_hash);
}

#[tokio::test]
async fn h2c_from_the_client_passes_through() {
    let proxy = Proxy::start().await;
    let backend = Backend::start(free_addr().await, "h2").await;
    proxy.route("default/h2", &["h2.example.com"], backend.addr);
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    for (method, path, body) in [("GET", "/exact", Bytes::new()), ("POST", "/echo", Bytes::from(pattern(300_000)))] {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://h2.example.com{path}"))
            .body(Full::new(body.clone()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let status = response.status();
        let headers = response.headers().clone();
        let received = response.into_body().collect().await.unwrap().to_bytes();
        if path == "/exact" {
            assert_eq!(status, StatusCode::CREATED);
            assert_eq!(received, "hello from the backend\n");
            assert_eq!(headers["x-seen-host"], "h2.example.com", "the :authority becomes the Host");
        } else {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers["x-body-hash"], fnv1a(FNV_START, &body).to_string().as_str());
        }
    }
    assert_eq!(backend.requests(), 2);
}

#[tokio::test]
async fn a_websocket_upgrade_passes_through_both_ways() {
    let proxy = Proxy::start().await;
    let backend_addr = free_addr().await;
    proxy.route("default/ws", &[APP], backend_addr);
    let _backend = Backend::start(backend_addr, "ws").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    let head_end = loop {
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the 101");
        received.extend_from_slice(&buf[..n]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    let mut tunnel = received.split_off(head_end);
    read_until(&mut stream, &mut tunnel, b"welcome\n").await;
    assert_eq!(proxy.activator.stats("default/ws").unwrap().in_flight, 1, "an open tunnel is in flight");
    for message in [&b"hello\n"[..], b"both ways\n"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = Vec::new();
        read_until(&mut stream, &mut echoed, &message.to_ascii_uppercase()).await;
    }
    drop(stream);
    until("the tunnel closed", Duration::from_secs(30), || proxy.activator.stats("default/ws").unwrap().in_flight == 0)
        .await;
}

async fn read_until(stream: &mut TcpStream, buffer: &mut Vec<u8>, expected: &[u8]) {
    let read = async {
        while buffer.len() < expected.len() {
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {buffer:?}");
            buffer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("bytes through the tunnel");
    assert_eq!(buffer.as_slice(), expected);
}

#[tokio::test]
async fn refusals_name_what_they_refuse() {
    let proxy = Proxy::start().await;
    let client = http1();
    let unknown = send(&client, get(&proxy, "nobody.example.com:8080", "/x")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.text().contains("\"nobody.example.com\""), "{}", unknown.text());

    // maxHeld 2: the third request is refused at once, the two held are answered 404 when
    // their route goes.
    let mut route = Route::new("default/busy", vec![APP.into()], uri(free_addr().await));
    route.max_held = 2;
    proxy.activator.set_route(route).unwrap();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (client, request) = (client.clone(), get(&proxy, APP, "/"));
            tokio::spawn(async move { send(&client, request).await })
        })
        .collect();
    until("two held", Duration::from_secs(30), || proxy.activator.stats("default/busy").unwrap().held == 2).await;
    let full = send(&client, get(&proxy, APP, "/")).await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(full.header("retry-after"), "1");
    assert!(full.text().contains("default/busy"), "{}", full.text());
    assert_eq!(proxy.activator.stats("default/busy").unwrap().requests_total, 3);
    proxy.activator.remove_route("default/busy");
    for task in held {
        assert_eq!(task.await.unwrap().status, StatusCode::NOT_FOUND);
    }
    assert!(proxy.activator.stats("default/busy").is_none());

    // holdTimeout: the request is held (it wakes the app), then answered 504 naming the target and
    // the wait, which the activator measures and reports as at least the hold timeout.
    let mut route = Route::new("default/slow", vec![APP.into()], uri(free_addr().await));
    route.hold_timeout = Duration::from_millis(300);
    proxy.activator.set_route(route).unwrap();
    let timeout = send(&client, get(&proxy, APP, "/")).await;
    assert_eq!(timeout.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(proxy.demands().contains(&"default/slow".to_string()), "held (waking the app), not refused");
    let text = timeout.text();
    let waited: u64 = text.split("waiting ").nth(1).and_then(|t| t.split(' ').next()).unwrap().parse().unwrap();
    assert!(text.contains("default/slow") && text.contains("holdTimeout") && waited >= 300, "{text}");
    assert_eq!(proxy.activator.stats("default/slow").unwrap().held, 0);
}

/// A backend speaking just enough HTTP/1.1 to answer (`healthy`) or to read a request and hang
/// up without answering; it counts the request heads it read.
async fn flaky_backend(healthy: Arc<AtomicBool>, heads: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (healthy, heads) = (healthy.clone(), heads.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                heads.fetch_add(1, Ordering::SeqCst);
                if healthy.load(Ordering::SeqCst) {
                    let _ =
                        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_backend_failing_after_ready_is_502_retried_once_when_idempotent() {
    let proxy = Proxy::start().await;
    let (healthy, heads) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicUsize::new(0)));
    let addr = flaky_backend(healthy.clone(), heads.clone()).await;
    proxy.route("default/flaky", &[APP], addr);
    let client = http1();
    assert_eq!(send(&client, get(&proxy, APP, "/")).await.text(), "ok");
    assert!(proxy.activator.stats("default/flaky").unwrap().backend_ready);

    healthy.store(false, Ordering::SeqCst);
    heads.store(0, Ordering::SeqCst);
    let failed = send(&client, get(&proxy, APP, "/")).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert!(failed.text().contains("default/flaky"), "{}", failed.text());
    for internal in [addr.to_string(), addr.ip().to_string(), addr.port().to_string(), "http://".into()] {
        assert!(!failed.text().contains(&internal), "the backend's address stays inside: {}", failed.text());
    }
    assert_eq!(heads.load(Ordering::SeqCst), 2, "an idempotent GET is tried exactly twice");

    heads.store(0, Ordering::SeqCst);
    let post = Request::post(proxy.url("/")).header("host", APP).body(Full::new(Bytes::from_static(b"x"))).unwrap();
    assert_eq!(send(&client, post).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(heads.load(Ordering::SeqCst), 1, "a POST is never retried");
    assert!(proxy.activator.stats("default/flaky").unwrap().backend_ready, "only a connect error un-readies");
}

/// Each time the backend goes away: a `502` for the request that found out, then requests are
/// held again, `on_demand` fires again, and the backend's return releases them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_went_away_holds_requests_instead_of_failing_them() {
    const CYCLES: usize = 3;
    let proxy = Proxy::start().await;
    let addr = free_addr().await;
    proxy.route("default/gone", &[APP], addr);
    let mut backend = Backend::start(addr, "up").await;
    let client = http1();
    assert_eq!(send(&client, get(&proxy, APP, "/")).await.text(), "up ok\n");
    let mut wakes = Vec::new();
    for cycle in 0..CYCLES {
        // Scaled to zero: the next request finds nobody listening. It was never sent, so it is
        // held like one that arrives at zero, not failed.
        backend.stop().await;
        let held = tokio::spawn({
            let (client, request) = (client.clone(), get(&proxy, APP, "/"));
            async move { send(&client, request).await }
        });
        until("a new demand", Duration::from_secs(30), || proxy.demands().len() == cycle + 2).await;
        assert!(!proxy.activator.stats("default/gone").unwrap().backend_ready);
        tokio::time::sleep(Duration::from_millis(50)).await; // a pod starting
        backend = Backend::start(addr, "up").await;
        proxy.activator.poke("default/gone");
        let ready = Instant::now();
        let answer = held.await.unwrap();
        wakes.push(ready.elapsed());
        assert_eq!(answer.text(), "up ok\n");
        assert!(answer.headers.contains_key("x-spinscale-cold-start"));
        assert_eq!(backend.requests(), 1);
    }
    assert_eq!(proxy.activator.held_totals(), (0, 0), "held again and released: nothing left counted");
    let wakes: Vec<String> = wakes.iter().map(|d| format!("{:.2} ms", d.as_secs_f64() * 1e3)).collect();
    println!("backend ready (poked) -> one held response delivered: {}", wakes.join(", "));
}

/// A backend named by DNS (`localhost` here, a Service name in a cluster) is looked up by the
/// prober and reached by the forward.
#[tokio::test]
async fn a_backend_named_by_dns_is_probed_and_reached() {
    let proxy = Proxy::start().await;
    let addr = free_addr().await;
    let route =
        Route::new("default/named", vec![APP.into()], format!("http://localhost:{}", addr.port()).parse().unwrap());
    proxy.activator.set_route(route).unwrap();
    let client = http1();
    let held = tokio::spawn({
        let (client, request) = (client.clone(), get(&proxy, APP, "/"));
        async move { send(&client, request).await }
    });
    until("held", Duration::from_secs(30), || proxy.activator.stats("default/named").unwrap().held == 1).await;
    let backend = Backend::start(addr, "named").await;
    let answer = held.await.unwrap();
    assert_eq!((answer.status, answer.text().as_str()), (StatusCode::OK, "named ok\n"));
    assert!(answer.headers.contains_key("x-spinscale-cold-start"), "it was held");
    assert_eq!(send(&client, get(&proxy, APP, "/")).await.text(), "named ok\n");
    assert_eq!(backend.requests(), 2);
}

#[tokio::test]
async fn routes_conflict_match_and_disappear() {
    let proxy = Proxy::start().await;
    let (a, b) = (Backend::start(free_addr().await, "a").await, Backend::start(free_addr().await, "b").await);
    proxy.route("ns/root", &[APP, "*.wild.example.com"], a.addr);
    let mut api = Route::new("ns/api", vec![APP.into()], uri(b.addr));
    api.path_prefixes = vec!["/api".into()];
    proxy.activator.set_route(api.clone()).unwrap();
    proxy.activator.set_route(api.clone()).unwrap(); // the same route again is fine

    let mut thief = api.clone();
    thief.target = "other/thief".into();
    thief.hosts = vec!["APP.example.com".into()];
    let err = proxy.activator.set_route(thief).unwrap_err();
    let RouteError::Conflict(conflict) = &err else { panic!("{err}") };
    assert_eq!((conflict.existing.as_str(), conflict.requested.as_str()), ("ns/api", "other/thief"));
    let message = err.to_string();
    for part in ["ns/api", "other/thief", APP, "/api"] {
        assert!(message.contains(part), "{message} names {part}");
    }

    let client = http1();
    let backend_of = |answer: Answer| answer.header("x-backend").to_string();
    assert_eq!(backend_of(send(&client, get(&proxy, APP, "/api/v1")).await), "b", "longest prefix wins");
    assert_eq!(backend_of(send(&client, get(&proxy, APP, "/apix")).await), "a", "prefixes match whole segments");
    assert_eq!(backend_of(send(&client, get(&proxy, "App.Example.com:8443", "/")).await), "a", "Host with port");
    assert_eq!(backend_of(send(&client, get(&proxy, "x.y.wild.example.com", "/")).await), "a", "wildcard host");
    assert_eq!(send(&client, get(&proxy, "wild.example.com", "/")).await.status, StatusCode::NOT_FOUND);

    proxy.activator.remove_route("ns/api");
    assert_eq!(backend_of(send(&client, get(&proxy, APP, "/api/v1")).await), "a", "removed: / takes it");
    proxy.activator.remove_route("ns/root");
    assert_eq!(send(&client, get(&proxy, APP, "/")).await.status, StatusCode::NOT_FOUND);
    assert!(
        proxy.activator.set_route(Route::new("ns/bad", vec![APP.into()], "https://x:443".parse().unwrap())).is_err()
    );
}

/// One GET on a raw connection that stays open afterwards (HTTP/1.1 keep-alive); the response head.
async fn raw_get(stream: &mut TcpStream, host: &str) -> String {
    stream.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    let read = async {
        let mut received = Vec::new();
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .expect("a response with a content-length")
                    .trim()
                    .parse()
                    .unwrap();
                if received.len() >= end + 4 + length {
                    return head;
                }
            }
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the response ended: {received:?}");
            received.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("a response")
}

#[tokio::test]
async fn every_request_counts_into_the_rate_and_shutdown_closes_idle_connections() {
    let proxy = Proxy::start().await;
    let backend = Backend::start(free_addr().await, "rate").await;
    proxy.route("default/rate", &[APP], backend.addr);
    let client = http1();
    for _ in 0..100 {
        assert_eq!(send(&client, get(&proxy, APP, "/")).await.status, StatusCode::OK);
    }
    // Unrouted, nobody's request; its connection stays open, idle, as a client's keep-alive one,
    // for an hour unless the shutdown closes it.
    let hour = ActivatorLimits { header_read_timeout: Duration::from_secs(3600), ..ActivatorLimits::default() };
    proxy.activator.set_limits(hour);
    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(raw_get(&mut idle, "elsewhere.example.com").await.starts_with("http/1.1 404"));
    let stats = proxy.activator.stats("default/rate").unwrap();
    assert_eq!((stats.requests_total, stats.held, stats.backend_ready), (100, 0, true));
    let connections = backend.seen.connections.load(Ordering::SeqCst);
    assert!(connections <= 2, "the readiness probe and one pooled keep-alive connection, not {connections}");
    let rate = proxy.activator.rate("default/rate", Duration::from_secs(10)).unwrap();
    assert!((rate - 10.0).abs() < 1e-9, "100 requests over a 10 s window: {rate}/s");
    assert!(proxy.activator.rate("default/none", Duration::from_secs(10)).is_none());

    let stopping = Instant::now();
    proxy.shutdown.cancel();
    proxy.served.await.unwrap().unwrap();
    println!("shutdown with idle keep-alive connections took {:?}", stopping.elapsed());
    // The shutdown closed the idle connection: its end is there to read as soon as the activator
    // stopped. One it left open would stay open for its hour of header-read timeout (the
    // activator gives up on such connections after its 5 s of drain and leaves them be), so the
    // 3 s allowed here is far from that.
    let mut rest = [0u8; 64];
    let end = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut rest)).await;
    assert!(matches!(end, Ok(Ok(0) | Err(_))), "the idle keep-alive connection is closed by the shutdown: {end:?}");
    assert!(TcpStream::connect(proxy.addr).await.is_err(), "no longer accepting");
}

/// Held requests are not answered when the shutdown begins: they keep waiting through the drain
/// (4 s), so an app that becomes ready meanwhile still answers; the rest get a `503` after it.
#[tokio::test]
async fn shutdown_answers_requests_still_held_after_the_drain_time() {
    const LATE: &str = "late.example.com";
    let proxy = Proxy::start().await;
    proxy.route("default/never", &[APP], free_addr().await);
    let late_addr = free_addr().await;
    proxy.route("default/late", &[LATE], late_addr);
    let [held, late] = [(APP, "default/never"), (LATE, "default/late")].map(|(host, target)| {
        let (client, request) = (http1(), get(&proxy, host, "/"));
        (target, tokio::spawn(async move { send(&client, request).await }))
    });
    for (target, _) in [&held, &late] {
        until("held", Duration::from_secs(30), || proxy.activator.stats(target).unwrap().held == 1).await;
    }
    let stopping = Instant::now();
    proxy.shutdown.cancel();
    // The listener closes as the drain begins. The late app becomes ready right after that: within
    // the drain's 4 s by orders of magnitude (milliseconds), so its request is still held and
    // answered by it, not refused.
    until("the listener closed", Duration::from_secs(30), || std::net::TcpStream::connect(proxy.addr).is_err()).await;
    let _backend = Backend::start(late_addr, "late").await;
    proxy.activator.poke("default/late");
    let answer = late.1.await.unwrap();
    assert_eq!((answer.status, answer.text().as_str()), (StatusCode::OK, "late ok\n"), "held through the drain");
    assert_eq!(proxy.activator.stats("default/never").unwrap().held, 1, "still held during the drain");

    let answer = held.1.await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.header("retry-after"), "1");
    assert!(answer.text().contains("default/never"), "{}", answer.text());
    assert_eq!(proxy.activator.held_totals(), (0, 0), "answered at shutdown: nothing left counted");
    proxy.served.await.unwrap().unwrap();
    println!("shutdown with a request held through the drain took {:?}", stopping.elapsed());
}

#[tokio::test]
async fn a_client_hanging_up_while_held_frees_its_place() {
    let proxy = Proxy::start().await;
    let mut route = Route::new("default/hangup", vec![APP.into()], uri(free_addr().await));
    route.max_held = 1;
    proxy.activator.set_route(route).unwrap();
    let heads: [&[u8]; 2] = [
        b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\r\nhello",
    ];
    for head in heads {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(head).await.unwrap();
        until("held", Duration::from_secs(30), || proxy.activator.stats("default/hangup").unwrap().held == 1).await;
        drop(stream);
        until("its place freed", Duration::from_secs(30), || {
            proxy.activator.stats("default/hangup").unwrap().held == 0
        })
        .await;
        until("its share given back", Duration::from_secs(30), || proxy.activator.held_totals() == (0, 0)).await;
    }
}
