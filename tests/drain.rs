//! Graceful drain: on SIGTERM (the shutdown token) `/readyz` fails at once while the activator
//! keeps accepting and serving for `activator.drainPeriod`; then the listeners close, open
//! `StreamIsActive` streams end with OK, and the server stops cleanly.

mod support;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use spinscale::config::Config;
use spinscale::server::{Options, Server};
use support::{connect, so_ref};
use tokio::net::TcpListener;

const HOST: &str = "drain.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activator_serves_through_the_drain_period_then_stops_cleanly() {
    let app = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = format!("http://{}", app.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(app, Router::new().fallback(get(|| async { "ok" }))).await });

    let config = Config::parse(
        "targets:\n  tick: 100ms\nactivator:\n  drainPeriod: 10s\n  allowedBackends: ['http://127.0.0.1:*']\n",
    )
    .expect("config");
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let activator = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let options = Options { activator: Some(activator), ..Options::default() };
    let server = Server::start_with(config, grpc, http, options).await.expect("server");
    let (http_addr, activator_addr) = (server.http_addr, server.activator_addr.expect("activator"));
    let mut keda = connect(&server).await;
    let r = so_ref("drain", &[("hosts", HOST), ("backend", backend.as_str())]);
    keda.get_metric_spec(r.clone()).await.expect("routed");
    let mut stream = keda.stream_is_active(r).await.expect("stream").into_inner();

    let client = reqwest::Client::new();
    let through_activator = || client.get(format!("http://{activator_addr}/")).header("host", HOST).send();
    let ready = || client.get(format!("http://{http_addr}/readyz")).send();
    assert_eq!(ready().await.expect("readyz").status(), 200);
    assert_eq!(through_activator().await.expect("served").status(), 200);

    let sigterm = server.shutdown_token();
    let stopped = tokio::spawn(server.wait());
    sigterm.cancel();
    assert_eq!(ready().await.expect("readyz answers while draining").status(), 503, "not ready at once");
    // Within the drain period the activator keeps accepting and answering (new connections too).
    for i in 0..20 {
        let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
        let answer = fresh.get(format!("http://{activator_addr}/")).header("host", HOST).send().await;
        assert_eq!(answer.map(|a| a.status().as_u16()).ok(), Some(200), "request {i} during the drain");
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    // The requests woke the app (pushes of `true`); after them, the stream's end.
    let ended = loop {
        match tokio::time::timeout_at(deadline.into(), stream.message()).await.expect("the stream ends") {
            Ok(Some(pushed)) => assert!(pushed.result, "only true is ever pushed"),
            other => break other,
        }
    };
    assert!(matches!(ended, Ok(None)), "the stream ends with OK: {ended:?}");
    tokio::time::timeout_at(deadline.into(), stopped).await.expect("stops").expect("join").expect("a clean stop");
    assert!(
        tokio::net::TcpStream::connect(activator_addr).await.is_err(),
        "after the drain the activator no longer accepts"
    );
}
