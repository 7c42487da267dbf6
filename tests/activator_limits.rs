//! The activator's limits over real sockets: held requests and their bodies bounded for all apps
//! together (and given back however a held request ends), request heads bounded in size and in
//! time, and requests whose framing is ambiguous never reaching a backend.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use spinscale_activator::{Activator, ActivatorLimits, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const APP: &str = "app.example.com";
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- activator under test

struct Proxy {
    activator: Arc<Activator>,
    addr: SocketAddr,
    _stop: tokio_util::sync::DropGuard,
}

impl Proxy {
    async fn start(limits: ActivatorLimits) -> Self {
        let activator = Activator::with_limits(Arc::new(|_: &str| {}), limits);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(activator.clone().serve(listener, stop.clone()));
        Self { activator, addr, _stop: stop.drop_guard() }
    }

    fn route(&self, target: &str, host: &str, backend: SocketAddr, max_held: usize) {
        let mut route = Route::new(target, vec![host.to_string()], format!("http://{backend}").parse().unwrap());
        route.max_held = max_held;
        self.activator.set_route(route).unwrap();
    }

    fn request(&self, host: &str, path: &str, body: &'static [u8]) -> Request<Body> {
        let method = if body.is_empty() { http::Method::GET } else { http::Method::POST };
        let body = Full::new(Bytes::from_static(body)).map_err(|never| match never {}).boxed_unsync();
        Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("host", host)
            .body(body)
            .unwrap()
    }

    async fn held_totals_become(&self, expected: (usize, u64)) {
        let activator = &self.activator;
        until(&format!("held totals {expected:?}"), || activator.held_totals() == expected).await;
    }
}

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A free port on loopback, for a backend that starts later.
async fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

fn limits(change: impl FnOnce(&mut ActivatorLimits)) -> ActivatorLimits {
    let mut limits = ActivatorLimits::default();
    change(&mut limits);
    limits
}

// ---------------------------------------------------------------- HTTP clients

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    text: String,
}

async fn send(request: Request<Body>) -> Answer {
    let response = client().request(request).await.expect("the activator answers");
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer { status, retry_after, text: String::from_utf8_lossy(&body).into_owned() }
}

/// Sends on its own task and connection; the answer comes when the task is awaited.
fn spawn_send(request: Request<Body>) -> tokio::task::JoinHandle<Answer> {
    tokio::spawn(send(request))
}

/// Writes `bytes` on a new connection and reads until the activator closes it (or resets it);
/// everything received.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await; // the activator may stop reading early
    String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned()
}

/// Reads until the peer closes the connection or resets it; what was received.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let read = async {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            received.extend_from_slice(&buf[..n]);
        }
        received
    };
    tokio::time::timeout(DEADLINE, read).await.expect("the activator closes the connection")
}

/// Whether the peer has closed `stream` (end or reset), without waiting for it to.
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(tokio::time::timeout(Duration::ZERO, stream.peek(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

// ---------------------------------------------------------------- backend

/// An HTTP/1.1 backend on `addr`: answers `200` with the request's body length in `x-body-len`
/// and records every request line it gets.
struct Backend {
    requests: Arc<Mutex<Vec<String>>>,
}

impl Backend {
    async fn start(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let line = format!("{} {}", request.method(), request.uri().path());
                        seen.lock().unwrap().push(line);
                        let len = request.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                        Ok::<_, Infallible>(
                            Response::builder().header("x-body-len", len).body(Full::new(Bytes::from("ok"))).unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------- held requests

#[tokio::test]
async fn held_requests_of_all_apps_together_are_bounded() {
    let proxy = Proxy::start(limits(|l| l.max_held_requests = 2)).await;
    let (a_addr, b_addr) = (free_addr().await, free_addr().await);
    proxy.route("default/a", "a.example.com", a_addr, 1000);
    proxy.route("default/b", "b.example.com", b_addr, 1);
    let held = vec![
        spawn_send(proxy.request("a.example.com", "/", b"")),
        spawn_send(proxy.request("b.example.com", "/", b"")),
    ];
    proxy.held_totals_become((2, 0)).await;

    // The third request, for either app, is refused at once: never queued.
    let refused = send(proxy.request("a.example.com", "/", b"")).await;
    assert_eq!((refused.status, refused.retry_after.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("1")));
    assert!(refused.text.contains("default/a") && refused.text.contains("2 requests"), "{}", refused.text);
    assert_eq!(proxy.activator.stats("default/a").unwrap().held, 1);

    // Raised while running: app a holds more; app b's own maxHeld (1) still refuses.
    proxy.activator.set_limits(limits(|l| l.max_held_requests = 10));
    let mut held = held;
    held.push(spawn_send(proxy.request("a.example.com", "/", b"")));
    proxy.held_totals_become((3, 0)).await;
    let full = send(proxy.request("b.example.com", "/", b"")).await;
    assert_eq!((full.status, full.retry_after.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("1")));
    assert!(full.text.contains("maxHeld"), "{}", full.text);

    let (_a, _b) = (Backend::start(a_addr).await, Backend::start(b_addr).await);
    for task in held {
        assert_eq!(task.await.unwrap().status, StatusCode::OK);
    }
    proxy.held_totals_become((0, 0)).await;
}

#[tokio::test]
async fn held_request_bodies_are_bounded_by_what_they_declare() {
    let proxy = Proxy::start(limits(|l| l.max_held_body_bytes = 1000)).await;
    let backend_addr = free_addr().await;
    proxy.route("default/upload", APP, backend_addr, 1000);
    let first = spawn_send(proxy.request(APP, "/", &[b'a'; 600]));
    proxy.held_totals_become((1, 600)).await;

    let over = send(proxy.request(APP, "/", &[b'b'; 401])).await;
    assert_eq!((over.status, over.retry_after.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("1")));
    assert!(over.text.contains("default/upload") && over.text.contains("401 bytes"), "{}", over.text);
    assert!(over.text.contains("1000 bytes"), "{}", over.text);
    let second = spawn_send(proxy.request(APP, "/", &[b'c'; 400]));
    proxy.held_totals_become((2, 1000)).await;
    // Requests without a body take a place but no bytes.
    let third = spawn_send(proxy.request(APP, "/", b""));
    proxy.held_totals_become((3, 1000)).await;

    // A chunked body declares no length: it counts as what its connection may have read of it,
    // far more than is left.
    let chunks = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x")))]);
    let mut chunked = proxy.request(APP, "/", b"");
    *chunked.method_mut() = http::Method::POST;
    *chunked.body_mut() = StreamBody::new(chunks).boxed_unsync();
    let refused = send(chunked).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text);

    let backend = Backend::start(backend_addr).await;
    proxy.activator.poke("default/upload");
    for task in [first, second, third] {
        assert_eq!(task.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(backend.requests().len(), 3, "refused bodies never reach the backend");
    proxy.held_totals_become((0, 0)).await;
}

/// Held requests end in every way there is (released, route removed, timed out, client gone);
/// each gives its place and its bytes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_held_request_ends_gives_its_share_back() {
    const EACH: usize = 40;
    const BODY: &[u8] = &[b'x'; 100];
    let proxy = Proxy::start(ActivatorLimits::default()).await;
    let released_addr = free_addr().await;
    proxy.route("default/released", "released.example.com", released_addr, 1000);
    proxy.route("default/removed", "removed.example.com", free_addr().await, 1000);
    proxy.route("default/hangup", "hangup.example.com", free_addr().await, 1000);

    let released: Vec<_> = (0..EACH).map(|_| spawn_send(proxy.request("released.example.com", "/", BODY))).collect();
    let removed: Vec<_> = (0..EACH).map(|_| spawn_send(proxy.request("removed.example.com", "/", BODY))).collect();
    let mut hangups = Vec::new();
    for _ in 0..EACH {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let head = "POST / HTTP/1.1\r\nHost: hangup.example.com\r\nContent-Length: 100\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(BODY).await.unwrap();
        hangups.push(stream);
    }
    proxy.held_totals_become((3 * EACH, 3 * EACH as u64 * 100)).await;

    drop(hangups);
    proxy.held_totals_become((2 * EACH, 2 * EACH as u64 * 100)).await;
    proxy.activator.remove_route("default/removed");
    for task in removed {
        assert_eq!(task.await.unwrap().status, StatusCode::NOT_FOUND);
    }
    let backend = Backend::start(released_addr).await;
    proxy.activator.poke("default/released");
    for task in released {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    assert_eq!(backend.requests().len(), EACH);
    assert_eq!(proxy.activator.held_totals(), (0, 0));

    let mut route = Route::new("default/slow", vec!["slow.example.com".into()], "http://127.0.0.1:9".parse().unwrap());
    route.hold_timeout = Duration::from_millis(200);
    proxy.activator.set_route(route).unwrap();
    let slow: Vec<_> = (0..EACH).map(|_| spawn_send(proxy.request("slow.example.com", "/", BODY))).collect();
    for task in slow {
        assert_eq!(task.await.unwrap().status, StatusCode::GATEWAY_TIMEOUT);
    }
    proxy.held_totals_become((0, 0)).await;
}

// ---------------------------------------------------------------- request heads

/// A raw request head with one header `x-pad` that makes it `len` bytes long.
fn head_of(len: usize) -> Vec<u8> {
    let start = format!("GET / HTTP/1.1\r\nHost: {APP}\r\nx-pad: ");
    let pad = len - start.len() - 4;
    let mut head = start.into_bytes();
    head.extend(std::iter::repeat_n(b'p', pad));
    head.extend_from_slice(b"\r\n\r\n");
    assert_eq!(head.len(), len);
    head
}

#[tokio::test]
async fn a_head_longer_than_max_header_bytes_gets_431() {
    let proxy = Proxy::start(ActivatorLimits::default()).await;
    let backend_addr = free_addr().await;
    let backend = Backend::start(backend_addr).await;
    proxy.route("default/app", APP, backend_addr, 1000);
    // Default: 64 KiB.
    let long = exchange(proxy.addr, &head_of(64 * 1024 + 1)).await;
    assert!(long.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{long:?}");
    let answer = exchange(proxy.addr, &head_of_len_with_close(64 * 1024)).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");

    // Lowered while running: new connections get the new limit.
    proxy.activator.set_limits(limits(|l| l.max_header_bytes = 16 * 1024));
    let long = exchange(proxy.addr, &head_of(16 * 1024 + 1)).await;
    assert!(long.starts_with("HTTP/1.1 431 "), "{long:?}");
    let answer = exchange(proxy.addr, &head_of_len_with_close(16 * 1024)).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    assert_eq!(backend.requests(), ["GET /", "GET /"], "only the heads within the limit reach the backend");
}

/// Like [`head_of`], asking the activator to close the connection after its answer.
fn head_of_len_with_close(len: usize) -> Vec<u8> {
    let close = b"Connection: close\r\n";
    let mut head = head_of(len - close.len());
    head.splice(head.len() - 2..head.len() - 2, close.iter().copied());
    assert_eq!(head.len(), len);
    head
}

#[tokio::test]
async fn an_h2c_header_list_longer_than_max_header_bytes_gets_431() {
    let proxy = Proxy::start(limits(|l| l.max_header_bytes = 32 * 1024)).await;
    let backend_addr = free_addr().await;
    let backend = Backend::start(backend_addr).await;
    proxy.route("default/h2", APP, backend_addr, 1000);
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = |pad: usize| {
        Request::get(format!("http://{APP}/")).header("x-pad", "p".repeat(pad)).body(Full::<Bytes>::default()).unwrap()
    };
    match sender.send_request(request(40 * 1024)).await {
        Ok(response) => assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => panic!("the activator answers 431, not {e}"),
    }
    // Longer than hyper's own default (16 KiB): the limit is the activator's.
    let fine = sender.send_request(request(24 * 1024)).await.unwrap();
    assert_eq!(fine.status(), StatusCode::OK);
    assert_eq!(backend.requests(), ["GET /"]);
}

/// A client gets `header_read_timeout` to send a head: one that stalls in the middle of it, one
/// that sends nothing, one that sends part of the h2c preface, and a keep-alive connection idle
/// after its answer are all disconnected. The same connections to an activator with a long
/// timeout stay open meanwhile: the limit, not something else, closed them.
#[tokio::test]
async fn slow_and_idle_clients_are_disconnected_after_the_header_read_timeout() {
    let quick = Proxy::start(limits(|l| l.header_read_timeout = Duration::from_millis(300))).await;
    let patient = Proxy::start(limits(|l| l.header_read_timeout = Duration::from_secs(3600))).await;
    let openings: [&[u8]; 4] =
        [b"GET / HTTP/1.1\r\nHost: app.exa", b"", b"PRI * HTTP/2", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"];
    let mut connections = Vec::new();
    for proxy in [&patient, &quick] {
        let mut opened = Vec::new();
        for opening in openings {
            let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
            stream.write_all(opening).await.unwrap();
            if opening.ends_with(b"\r\n\r\n") {
                let answer = read_answer(&mut stream).await;
                assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
            }
            opened.push(stream);
        }
        connections.push(opened);
    }
    let [mut patient_streams, quick_streams] = <[Vec<TcpStream>; 2]>::try_from(connections).ok().unwrap();
    for (mut stream, opening) in quick_streams.into_iter().zip(openings) {
        let rest = read_to_close(&mut stream).await;
        assert!(rest.is_empty(), "closed without a word after {opening:?}: {rest:?}");
    }
    for (stream, opening) in patient_streams.iter_mut().zip(openings) {
        assert!(
            !is_closed(stream).await,
            "with a long timeout, still open after {:?}",
            String::from_utf8_lossy(opening)
        );
    }
}

/// Reads one response with a `content-length` from a keep-alive connection; its head.
async fn read_answer(stream: &mut TcpStream) -> String {
    let read = async {
        let mut received = Vec::new();
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).into_owned();
                let length: usize = head
                    .to_ascii_lowercase()
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                    .unwrap_or(0);
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
    tokio::time::timeout(DEADLINE, read).await.expect("a response")
}

// ---------------------------------------------------------------- framing

/// Two different `Content-Length`s, or a `Transfer-Encoding` that is not chunked at the end (or
/// in HTTP/1.0), make the body's end ambiguous: `400`, and nothing reaches the backend.
#[tokio::test]
async fn requests_with_ambiguous_lengths_are_refused_before_the_backend() {
    let proxy = Proxy::start(ActivatorLimits::default()).await;
    let backend_addr = free_addr().await;
    let backend = Backend::start(backend_addr).await;
    proxy.route("default/app", APP, backend_addr, 1000);
    let requests: [&[u8]; 4] = [
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\nContent-Length: 30\r\n\r\nhelloGET /smuggled HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5, 30\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for request in requests {
        let answer = exchange(proxy.addr, request).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{} -> {answer:?}", String::from_utf8_lossy(request));
    }
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());
    assert_eq!(proxy.activator.stats("default/app").unwrap().requests_total, 0, "refused before routing");
}

/// `Content-Length` together with `Transfer-Encoding: chunked` (in either order): the chunked
/// framing wins and the `Content-Length` is dropped (RFC 9112 §6.3), the request is forwarded with
/// the body the chunks carry, and the connection is closed after the answer. What the
/// `Content-Length` would have covered past the chunks (a smuggled request) is never read as a
/// request and never reaches the backend.
#[tokio::test]
async fn content_length_with_chunked_never_smuggles_a_request() {
    let proxy = Proxy::start(ActivatorLimits::default()).await;
    let backend_addr = free_addr().await;
    let backend = Backend::start(backend_addr).await;
    proxy.route("default/app", APP, backend_addr, 1000);
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
    let chunks = format!("3\r\nabc\r\n0\r\n\r\n{smuggled}");
    for headers in [
        format!("Content-Length: {}\r\nTransfer-Encoding: chunked", chunks.len()),
        format!("Transfer-Encoding: chunked\r\nContent-Length: {}", chunks.len()),
    ] {
        let request = format!("POST /upload HTTP/1.1\r\nHost: {APP}\r\n{headers}\r\n\r\n{chunks}");
        let answer = exchange(proxy.addr, request.as_bytes()).await;
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "one answer, then the connection closes: {answer:?}");
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
        assert!(answer.to_ascii_lowercase().contains("x-body-len: 3\r\n"), "the chunked body: {answer:?}");
    }
    assert_eq!(backend.requests(), ["POST /upload", "POST /upload"]);
}
