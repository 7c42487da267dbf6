//! Two `spinscale serve` processes that know each other (`--peers`): KEDA holds the stream on
//! one while the request arrives at the other's activator. The demand crosses over at once.
//!
//! Replicas authenticate each other's demand with a shared token (`activator.peerTokenFile`): a
//! demand without it, or with another, wakes nothing; replicas with peers and no token do not start.
//!
//! Both replicas re-evaluate their targets on a 1 h tick here, so a `true` on A's stream within the
//! test's deadline can only be the push the peer's message caused, never a periodic evaluation.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use spinscale::proto::external_scaler_client::ExternalScalerClient;
use spinscale_testkit::free_port;
use support::so_ref;
use tokio::net::TcpListener;

struct Replica {
    child: Child,
    grpc: u16,
    activator: u16,
}

impl Replica {
    fn start(http: u16, peer_http: u16, config: &Path) -> Self {
        let (grpc, activator) = (free_port().expect("port"), free_port().expect("port"));
        let child = Command::new(env!("CARGO_BIN_EXE_spinscale"))
            .args(["serve", "--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--activator-listen", &format!("127.0.0.1:{activator}")])
            .args(["--peers", &format!("127.0.0.1:{peer_http}")])
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spinscale serve starts");
        Self { child, grpc, activator }
    }

    async fn ready(&self) -> ExternalScalerClient<tonic::transport::Channel> {
        let started = Instant::now();
        loop {
            if let Ok(client) = ExternalScalerClient::connect(format!("http://127.0.0.1:{}", self.grpc)).await {
                return client;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "replica not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with the shared peer token, no periodic re-evaluation, and loopback backends allowed.
fn config_with_token(dir: &Path) -> std::path::PathBuf {
    let token = dir.join("peer-token");
    std::fs::write(&token, "s3cr3t-peer-token-for-tests\n").expect("token file");
    let config = dir.join("config.yaml");
    let text = format!(
        "targets:\n  tick: 1h\nactivator:\n  allowedBackends: ['http://127.0.0.1:*']\n  peerTokenFile: {}\n",
        token.display()
    );
    std::fs::write(&config, text).expect("config file");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_on_one_replica_wakes_the_stream_on_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with_token(dir.path());
    let (http_a, http_b) = (free_port().expect("port"), free_port().expect("port"));
    let a = Replica::start(http_a, http_b, &config);
    let b = Replica::start(http_b, http_a, &config);
    let (mut keda_a, mut keda_b) = (a.ready().await, b.ready().await);
    let app_port = free_port().expect("port");
    let backend = format!("http://127.0.0.1:{app_port}");
    let r = so_ref("checkout", &[("hosts", "shop.example.com"), ("backend", &backend)]);
    // KEDA's calls land on both replicas; its stream happens to be on A.
    keda_b.get_metric_spec(r.clone()).await.expect("route on B");
    let mut stream = keda_a.stream_is_active(r.clone()).await.expect("stream on A").into_inner();
    assert!(!keda_a.is_active(r.clone()).await.expect("idle").into_inner().result);

    let http = reqwest::Client::new();
    let warm = http.get(format!("http://127.0.0.1:{}/", b.activator)).header("host", "nobody.example.com").send();
    assert_eq!(warm.await.expect("404").status(), 404, "a warm connection to B's activator");
    let sent = Instant::now();
    let held = tokio::spawn(
        http.get(format!("http://127.0.0.1:{}/cart", b.activator)).header("host", "shop.example.com").send(),
    );
    // Pushed, not polled: KEDA makes no call meanwhile and A's next tick is an hour away.
    let pushed = tokio::time::timeout(Duration::from_secs(30), stream.message()).await;
    let took = sent.elapsed();
    assert!(matches!(pushed, Ok(Ok(Some(ref m))) if m.result), "true on A's stream: {pushed:?}");
    println!("request held on B → true on A's stream: {} µs", took.as_micros());
    assert!(keda_a.is_active(r.clone()).await.expect("A").into_inner().result, "A says active while B holds it");

    let listener = TcpListener::bind(("127.0.0.1", app_port)).await.expect("app port");
    let app = Router::new().fallback(get(|| async { "cart" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let response = held.await.expect("join").expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "cart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demand_without_the_peer_token_wakes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with_token(dir.path());
    let (http_a, nobody) = (free_port().expect("port"), free_port().expect("port"));
    let a = Replica::start(http_a, nobody, &config);
    let mut keda = a.ready().await;
    let r = so_ref("checkout", &[("hosts", "shop.example.com"), ("backend", "http://127.0.0.1:9")]);
    keda.get_metric_spec(r.clone()).await.expect("registered");
    let demand = r#"{"target":"default/checkout","sender":7}"#;
    let http = reqwest::Client::new();
    let post = |token: Option<&'static str>| {
        let request = http
            .post(format!("http://127.0.0.1:{http_a}/peer/demand"))
            .header("content-type", "application/json")
            .body(demand);
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
        .send()
    };
    assert_eq!(post(None).await.expect("answered").status(), 401, "no token");
    assert_eq!(post(Some("guess")).await.expect("answered").status(), 403, "a wrong token");
    assert!(!keda.is_active(r.clone()).await.expect("answered").into_inner().result, "nothing was woken");
    assert_eq!(post(Some("s3cr3t-peer-token-for-tests")).await.expect("answered").status(), 204);
    let started = Instant::now();
    while !keda.is_active(r.clone()).await.expect("answered").into_inner().result {
        assert!(started.elapsed() < Duration::from_secs(30), "the peer's demand counts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn replicas_with_peers_and_no_token_file_refuse_to_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_spinscale"))
        .args(["serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--activator-listen", "127.0.0.1:0", "--peers", "127.0.0.1:9"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("activator.peerTokenFile"), "{stderr}");
}
