//! Limits: oversized metadata is bad input; too many targets, streams or concurrent calls are
//! refused with RESOURCE_EXHAUSTED at once, and everything already admitted keeps working.

mod support;

use std::time::{Duration, Instant};

use spinscale::config::Config;
use support::{Kafka, connect, kafka_meta, so_ref, start_server, until};
use tonic::Code;

const FAST: &str = "collectors:\n  kafkaInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n";

#[tokio::test]
async fn oversized_metadata_is_invalid_argument_naming_the_limit() {
    let server = start_server(Config::parse(FAST).expect("config")).await;
    let mut client = connect(&server).await;
    let keys: Vec<(String, String)> = (0..65).map(|i| (format!("extra{i}"), "x".to_string())).collect();
    let pairs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let status = client.is_active(so_ref("many", &pairs)).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("65 keys") && status.message().contains("limits.maxMetadataKeys"), "{status:?}");

    let huge = "q".repeat(20_000);
    let status = client.get_metric_spec(so_ref("huge", &[("query", huge.as_str())])).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("limits.maxMetadataBytes"), "{status:?}");
    assert!(server.registry.is_empty(), "nothing was registered");
}

#[tokio::test]
async fn targets_and_streams_beyond_their_limits_are_refused_and_the_rest_keep_working() {
    let kafka = Kafka::new(&[("orders", 1)]);
    let config = Config::parse(&format!("{FAST}limits:\n  maxTargets: 2\n  maxStreams: 2\n")).expect("config");
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    let bootstrap = kafka.bootstrap();
    let meta = kafka_meta(&bootstrap, "billing", "orders");
    let (a, b, c) = (so_ref("a", &meta), so_ref("b", &meta), so_ref("c", &meta));
    client.get_metric_spec(a.clone()).await.expect("first target");
    client.get_metric_spec(b.clone()).await.expect("second target");
    let status = client.get_metric_spec(c.clone()).await.expect_err("third target");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("2 targets (limits.maxTargets)"), "{status:?}");
    client.is_active(a.clone()).await.expect("a known target is still served");

    let first = client.stream_is_active(a.clone()).await.expect("stream 1").into_inner();
    let _second = client.stream_is_active(b.clone()).await.expect("stream 2").into_inner();
    let status = client.stream_is_active(a.clone()).await.expect_err("stream 3");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("limits.maxStreams"), "{status:?}");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    let reopened = loop {
        match client.stream_is_active(a.clone()).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("a closed stream frees its place: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    drop(reopened);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn calls_over_the_concurrency_limit_are_shed_at_once() {
    // A "Prometheus" that accepts connections and never answers: the first call to a new target
    // waits (firstReadingWait) for a reading that does not come, holding the only slot.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", silent.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let config = Config::parse(&format!("{FAST}limits:\n  maxConcurrentCalls: 1\n")).expect("config");
    let server = start_server(config).await;
    let slow_ref = so_ref("slow", &[("prometheusAddress", address.as_str()), ("query", "sum(rate(x[1m]))")]);
    let (mut slow_client, mut client) = (connect(&server).await, connect(&server).await);
    let slow = tokio::spawn(async move { slow_client.is_active(slow_ref).await });
    // The slow call registered its target: it is in its handler, holding the only slot.
    let holding = until(Duration::from_secs(30), || server.registry.len() == 1).await;
    assert!(holding, "the slow call reached its handler");

    // Refused, not queued: a queued call would be admitted once the slot frees and then answered
    // INVALID_ARGUMENT for its metadata (as `after` below is), so RESOURCE_EXHAUSTED proves it.
    let refused = Instant::now();
    let status = client.is_active(so_ref("other", &[("lagThreshold", "5")])).await.expect_err("shed");
    eprintln!("refused after {:?}", refused.elapsed());
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limits.maxConcurrentCalls"), "{status:?}");
    let held = slow.await.expect("join").expect_err("no reading within firstReadingWait");
    assert_eq!(held.code(), Code::Unavailable, "{held:?}");
    let after = client.is_active(so_ref("other", &[("lagThreshold", "5")])).await.expect_err("invalid, but admitted");
    assert_eq!(after.code(), Code::InvalidArgument, "the slot is free again: {after:?}");
    server.shutdown().await.expect("shutdown");
}
