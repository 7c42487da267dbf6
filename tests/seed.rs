//! The acceptance scenario: the `spinscale serve` binary with built-in defaults, and a client that
//! behaves as KEDA does using the seed article's trigger values (query, threshold 10, Kafka topic
//! `events`, lagThreshold 5), through load, lag, outages, bad input and SIGTERM.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spinscale_testkit::{Exposition, free_port};
use support::*;
use tonic::Code;

struct Serve(Child);

impl Serve {
    async fn start(grpc: u16, http: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_spinscale"))
            .args([
                "serve",
                "--grpc-listen",
                &format!("127.0.0.1:{grpc}"),
                "--http-listen",
                &format!("127.0.0.1:{http}"),
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn spinscale serve");
        let ready = format!("http://127.0.0.1:{http}/readyz");
        let started = Instant::now();
        while !reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success()) {
            assert!(started.elapsed() < Duration::from_secs(30), "spinscale serve not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self(child)
    }

    fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_trigger_values_work_end_to_end_and_sigterm_ends_streams_with_ok() {
    let kafka = Kafka::new(&[("events", 4)]);
    let bootstrap = kafka.bootstrap();
    for p in 0..4 {
        kafka.commit("webhook-handler", "events", p, 0);
    }
    let exposition = Exposition::start("http_requests_total{app=\"webhook-handler\"} 0\n").await.unwrap();
    let Some(mut prometheus) = prometheus(&[exposition.addr]).await else { return };
    let (grpc, http) = (free_port().unwrap(), free_port().unwrap());
    let mut serve = Serve::start(grpc, http).await;
    let mut client = Client::connect(format!("http://127.0.0.1:{grpc}")).await.unwrap();

    let query = "sum(rate(http_requests_total{app=\"webhook-handler\"}[2s]))";
    let seed = [
        ("scalerAddress", "spinscale.keda:9500"),
        ("serverAddress", prometheus.address.as_str()),
        ("query", query),
        ("threshold", "10"),
        ("bootstrapServers", bootstrap.as_str()),
        ("consumerGroup", "webhook-handler"),
        ("topic", "events"),
        ("lagThreshold", "5"),
    ];
    let r = so_ref("webhook-handler-scaler", &seed);

    // Specs, then idle values (Prometheus needs a few seconds for its first scrapes).
    let specs = client.get_metric_spec(r.clone()).await.unwrap().into_inner().metric_specs;
    assert_eq!(specs.iter().map(|s| s.metric_name.as_str()).collect::<Vec<_>>(), ["spinscale-replicas"]);
    let idle = poll_until(&mut client, &r, Duration::from_secs(40), std::result::Result::is_ok).await.unwrap();
    assert_eq!((idle.values["spinscale-replicas"], idle.active), (0.0, false));

    // The first record on the idle topic is pushed: the client makes no call while it waits, so
    // the `true` can only be the server's own push.
    let mut stream = client.stream_is_active(r.clone()).await.unwrap().into_inner();
    let produced = Instant::now();
    kafka.produce("events", 2, 1);
    let pushed = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("pushed");
    assert_eq!(pushed.unwrap().map(|m| m.result), Some(true));
    eprintln!("record → push with default intervals: {:?}", produced.elapsed());

    // Lag 11 on 4 partitions: 11 / 5 = 2.2 replicas.
    kafka.produce("events", 0, 10);
    let lagging = poll_until(&mut client, &r, Duration::from_secs(30), |p| {
        p.as_ref().is_ok_and(|p| p.values["spinscale-replicas"] == 2.2)
    })
    .await
    .unwrap();
    assert!(lagging.active);

    // Load of 50 req/s outweighs the lag: 50 / 10 = 5 replicas.
    let load = tokio::spawn(async move {
        for i in 1u64.. {
            exposition.set(format!("http_requests_total{{app=\"webhook-handler\"}} {}\n", i * 5));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    poll_until(&mut client, &r, Duration::from_secs(30), |p| {
        p.as_ref().is_ok_and(|p| (4.0..=6.0).contains(&p.values["spinscale-replicas"]))
    })
    .await
    .unwrap();
    load.abort();

    // Bad metadata: INVALID_ARGUMENT naming the key and the value.
    let mut bad = seed.to_vec();
    bad.retain(|(k, _)| *k != "lagThreshold");
    bad.push(("lagThreshold", "five"));
    let status = client.is_active(so_ref("bad", &bad)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("lagThreshold: value \"five\""), "{status:?}");

    // Prometheus down: UNAVAILABLE naming it, never a silent 0 (Kafka still says active).
    prometheus.stop();
    let down = poll_until(&mut client, &r, Duration::from_secs(30), std::result::Result::is_err).await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable);
    assert!(down.message().contains("prometheus"), "{down:?}");

    // Kafka down too: now nothing healthy shows activity, so IsActive is UNAVAILABLE as well.
    kafka.mock.broker_down(1).unwrap();
    let started = Instant::now();
    loop {
        match client.is_active(r.clone()).await {
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                break;
            }
            Ok(still) => assert!(started.elapsed() < Duration::from_secs(30), "still {still:?} after 30 s"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIGTERM: the open stream ends with OK (KEDA then reconnects after 2 s) and the process exits 0.
    // An OK end (`Ok(None)`) is the server ending the stream on shutdown; a process that left it
    // open would drop the connection when it exits, an error here, not `Ok(None)`.
    let stopped = Instant::now();
    serve.terminate();
    let end = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("stream ends");
    assert!(matches!(end, Ok(None)), "OK end, got {end:?}");
    eprintln!("SIGTERM → stream ended: {:?}", stopped.elapsed());
    let status = tokio::task::spawn_blocking(move || serve.0.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn help_documents_every_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_spinscale")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--grpc-listen", "--http-listen", "--config", "--log-format", "0.0.0.0:9500", "0.0.0.0:9501"] {
        assert!(help.contains(flag), "serve --help lacks {flag}:\n{help}");
    }
}

#[test]
fn a_bad_config_file_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "defaults:\n  lagTreshold: \"5\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_spinscale"))
        .args(["serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("defaults.lagTreshold"), "{stderr}");
}
