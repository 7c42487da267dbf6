//! gRPC apps behind the activator: with `backendProtocol: h2c` an h2c request reaches an
//! HTTP/2-only backend as HTTP/2, and the response's trailers (gRPC's status) come back intact.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use spinscale_activator::{Activator, BackendProtocol, Route};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const HOST: &str = "grpc.example.com";

/// An HTTP/2-only (prior knowledge) backend that answers every request as a gRPC server would:
/// the version it was reached with, then `grpc-status: 0` in the trailers.
async fn grpc_backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|request: Request<Incoming>| async move {
                let version = format!("{:?}", request.version());
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                let frames =
                    vec![Ok::<_, Infallible>(Frame::data(Bytes::from(version))), Ok(Frame::trailers(trailers))];
                let body = StreamBody::new(futures_util::stream::iter(frames));
                Ok::<_, Infallible>(Response::builder().header("content-type", "application/grpc").body(body).unwrap())
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_backend_gets_http2_and_its_trailers_reach_the_client() {
    let backend = grpc_backend().await;
    let activator = Activator::new(Arc::new(|_: &str| {}));
    let mut route = Route::new("default/grpc", vec![HOST.to_string()], backend.parse().expect("uri"));
    route.backend_protocol = BackendProtocol::H2c;
    activator.set_route(route).expect("routed");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(activator.clone().serve(listener, shutdown.clone()));

    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2c");
    tokio::spawn(connection);
    // As a gRPC client sends it: the host in :authority.
    let request = Request::post(format!("http://{HOST}/helloworld.Greeter/SayHello"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .expect("request");
    let response = sender.send_request(request).await.expect("answered");
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers came through");
    assert_eq!(trailers.get("grpc-status").map(HeaderValue::as_bytes), Some(&b"0"[..]));
    assert_eq!(collected.to_bytes(), Bytes::from("HTTP/2.0"), "the backend was reached over HTTP/2");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_h2c_an_http2_only_backend_is_a_502_naming_the_app() {
    let backend = grpc_backend().await;
    let activator = Activator::new(Arc::new(|_: &str| {}));
    activator.set_route(Route::new("default/grpc", vec![HOST.to_string()], backend.parse().expect("uri"))).expect("ok");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(activator.clone().serve(listener, shutdown.clone()));

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(format!("http://{addr}/")).header("host", HOST).body(Full::default()).expect("request");
    let response = client.request(request).await.expect("answered");
    assert_eq!(response.status(), 502);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("default/grpc"), "{body:?}");
    shutdown.cancel();
}
