//! The activator wired to the scaler: a request held at zero pushes `true` to KEDA's open stream
//! in the same step, the app's response comes back once it listens, every request counts into
//! the target's rate, and routes live and die with their targets.

mod support;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use spinscale::config::Config;
use spinscale::server::{Options, Server};
use spinscale_testkit::free_port;
use support::{connect, so_ref};
use tokio::net::TcpListener;
use tonic::Code;

/// Test backends listen on loopback: the operator allows it (by default a backend must be a
/// Service of the ScaledObject's namespace).
const FAST: &str = "collectors:\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n  idleTimeout: 1s\n\
                    activator:\n  allowedBackends: ['http://127.0.0.1:*']\n  drainPeriod: 0s\n";

async fn start(with_activator: bool) -> Server {
    start_with(Config::parse(FAST).expect("config"), with_activator).await
}

async fn start_with(config: Config, with_activator: bool) -> Server {
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let activator = if with_activator { Some(TcpListener::bind("127.0.0.1:0").await.expect("bind")) } else { None };
    let options = Options { activator, ..Options::default() };
    Server::start_with(config, grpc, http, options).await.expect("server")
}

/// The app, once it starts: answers every path with its name.
async fn app(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("app port");
    let router = Router::new().fallback(get(|| async { "hello from webhook-handler" }));
    tokio::spawn(async move { axum::serve(listener, router).await });
}

fn request_with(client: &reqwest::Client, server: &Server, host: &str) -> reqwest::RequestBuilder {
    let addr = server.activator_addr.expect("activator");
    client.get(format!("http://{addr}/hooks/github")).header("host", host)
}

fn request(server: &Server, host: &str) -> reqwest::RequestBuilder {
    request_with(&reqwest::Client::new(), server, host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_at_zero_pushes_true_at_once_and_gets_the_apps_answer() {
    // Targets re-evaluate on a 1 h tick: a `true` within the test's deadline can only come from
    // the held request's own step, not from a tick.
    let mut config = Config::parse(FAST).expect("config");
    config.targets.tick.0 = Duration::from_secs(3600);
    let server = start_with(config, true).await;
    let mut keda = connect(&server).await;
    let port = free_port().expect("port");
    let backend = format!("http://127.0.0.1:{port}");
    let meta = [("hosts", "hooks.example.com"), ("backend", backend.as_str()), ("metrics", "separate")];
    let r = so_ref("webhook-handler", &meta);
    let mut stream = keda.stream_is_active(r.clone()).await.expect("stream").into_inner();
    assert!(!keda.is_active(r.clone()).await.expect("idle").into_inner().result, "no request yet: inactive");

    // A warm connection, as an Ingress keeps one: the figure is the activator's, not TCP's.
    let http = reqwest::Client::new();
    assert_eq!(request_with(&http, &server, "unknown.example.com").send().await.expect("404").status(), 404);
    let sent = Instant::now();
    let held = tokio::spawn(request_with(&http, &server, "hooks.example.com").send());
    let pushed = tokio::time::timeout(Duration::from_secs(30), stream.message()).await;
    let push_took = sent.elapsed();
    assert!(matches!(pushed, Ok(Ok(Some(ref m))) if m.result), "true pushed: {pushed:?}");
    println!("request sent → true on the stream: {} µs", push_took.as_micros());
    let status = reqwest::get(format!("http://{}/status.json", server.http_addr)).await.expect("status");
    let rows: serde_json::Value = serde_json::from_str(&status.text().await.expect("body")).expect("json");
    assert_eq!(rows[0]["reason"], "held-request", "{rows}");
    assert!(rows[0]["desired_replicas"].as_f64().is_some_and(|d| d >= 1.0), "{rows}");

    // The request was held before the push; the app starts 300 ms after the push at the earliest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app(port).await;
    let response = held.await.expect("join").expect("answered");
    assert_eq!(response.status(), 200);
    let cold = response.headers().get("x-spinscale-cold-start").and_then(|v| v.to_str().ok()).map(String::from);
    assert_eq!(response.text().await.expect("body"), "hello from webhook-handler");
    assert!(cold.and_then(|ms| ms.parse::<u64>().ok()).is_some_and(|ms| ms >= 300), "held at least 300 ms");

    // Back to a 100 ms tick (a live reload keeps the stream): the rate is read at evaluations.
    server.registry.reload(Config::parse(FAST).expect("config")).expect("reload");

    for _ in 0..9 {
        assert_eq!(request(&server, "hooks.example.com").send().await.expect("forwarded").status(), 200);
    }
    let rps_of = |keda: &mut support::Client| {
        let request = spinscale::proto::GetMetricsRequest {
            scaled_object_ref: Some(r.clone()),
            metric_name: "spinscale-rps".into(),
        };
        let mut keda = keda.clone();
        async move { keda.get_metrics(request).await.expect("metrics").into_inner().metric_values[0].metric_value_float }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut value = rps_of(&mut keda).await;
    while value < 0.95 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        value = rps_of(&mut keda).await;
    }
    assert!((0.95..=1.05).contains(&value), "10 requests over the 10 s window: {value}");
    assert!(keda.is_active(r).await.expect("active").into_inner().result);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn routes_conflict_by_name_need_the_activator_and_leave_with_their_target() {
    let without = start(false).await;
    let mut keda = connect(&without).await;
    let meta = [("hosts", "api.example.com"), ("backend", "http://127.0.0.1:9")];
    let status = keda.get_metric_spec(so_ref("api", &meta)).await.expect_err("no activator");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("--activator-listen"), "{status:?}");
    without.shutdown().await.expect("shutdown");

    let server = start(true).await;
    let mut keda = connect(&server).await;
    keda.get_metric_spec(so_ref("api", &meta)).await.expect("route registered");
    let status = keda.get_metric_spec(so_ref("api-v2", &meta)).await.expect_err("conflict");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("default/api") && status.message().contains("default/api-v2"), "{status:?}");
    let bad = [("hosts", "api.example.com"), ("backend", "ftp://files")];
    let status = keda.get_metric_spec(so_ref("ftp", &bad)).await.expect_err("bad backend");
    assert!(status.message().contains("backend: value \"ftp://files\""), "{status:?}");

    // KEDA stops asking (the ScaledObject was deleted): the target and its route go.
    drop(keda);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.registry.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = request(&server, "api.example.com").send().await.expect("answered");
    assert_eq!(gone.status(), 404, "no route once the target is gone");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_routes_exist_before_keda_asks_and_conflicts_reject_the_config() {
    let port = free_port().expect("port");
    let text = format!(
        "{FAST}routes:\n  - scaledObject: default/legacy\n    hosts: [legacy.example.com]\n    \
         backend: http://127.0.0.1:{port}\n    holdTimeout: 5s\n"
    );
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let activator = Some(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    let config = Config::parse(&text).expect("config");
    let server = Server::start_with(config.clone(), grpc, http, Options { activator, ..Options::default() })
        .await
        .expect("server");

    // Right after a restart, before KEDA's first call: the route is there and holds the request.
    let held = tokio::spawn(request(&server, "legacy.example.com").send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    app(port).await;
    let response = held.await.expect("join").expect("answered");
    assert_eq!(response.status(), 200, "held, then forwarded; not a 404");

    // A trigger claims another app on the same host: the config's route is in the way only if
    // the config changes to claim a host a live trigger routes.
    let mut keda = connect(&server).await;
    let meta = [("hosts", "new.example.com"), ("backend", "http://127.0.0.1:9")];
    keda.get_metric_spec(so_ref("new", &meta)).await.expect("trigger route");
    let clash = Config::parse(&format!(
        "{text}  - scaledObject: default/other\n    hosts: [new.example.com]\n    backend: http://127.0.0.1:9\n"
    ))
    .expect("valid alone");
    let rejected = server.registry.reload(clash).expect_err("conflicts with the live trigger's route");
    assert!(rejected.to_string().contains("routes[1]") && rejected.to_string().contains("default/new"), "{rejected}");
    assert_eq!(server.registry.config().routes.len(), 1, "the previous config stays");
    let still = request(&server, "legacy.example.com").send().await.expect("answered");
    assert_eq!(still.status(), 200, "the config's route is still served");

    let bad = Config::parse(&format!(
        "{FAST}routes:\n  - scaledObject: legacy\n    hosts: [a.example.com]\n    backend: ftp://x\n"
    ));
    let text = bad.expect_err("invalid").to_string();
    assert!(text.contains("routes[0]: scaledObject: \"legacy\" is not namespace/name"), "{text}");
    server.shutdown().await.expect("shutdown");
}
