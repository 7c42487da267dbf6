//! KEDA's protocol, driven over real gRPC by a client that calls as KEDA does (docs/keda.md §2.6–2.7),
//! with librdkafka's mock cluster as the signal source.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use spinscale::proto::GetMetricsRequest;
use support::*;
use tonic::Code;

const GROUP: &str = "webhook-handler";
const TOPIC: &str = "events";

fn meta_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_specs_are_stable_and_fill_both_fields() {
    let kafka = Kafka::new(&[(TOPIC, 2)]);
    let bootstrap = kafka.bootstrap();
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;

    let combined = so_ref("combined", &kafka_meta(&bootstrap, GROUP, TOPIC));
    let first = client.get_metric_spec(combined.clone()).await.unwrap().into_inner();
    let second = client.get_metric_spec(combined).await.unwrap().into_inner();
    assert_eq!(first, second, "specs are identical across calls");
    assert_eq!(first.metric_specs.len(), 1);
    let spec = &first.metric_specs[0];
    assert_eq!((spec.metric_name.as_str(), spec.target_size, spec.target_size_float), ("spinscale-replicas", 1, 1.0));

    let mut meta = kafka_meta(&bootstrap, GROUP, TOPIC);
    meta.extend([("metrics", "separate"), ("lagThreshold", "2.5")]);
    let separate = client.get_metric_spec(so_ref("separate", &meta)).await.unwrap().into_inner();
    let specs: Vec<(&str, i64, f64)> =
        separate.metric_specs.iter().map(|s| (s.metric_name.as_str(), s.target_size, s.target_size_float)).collect();
    assert_eq!(specs, vec![("spinscale-lag", 3, 2.5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metadata_is_invalid_argument_on_every_call_naming_key_and_value() {
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;
    let bad = so_ref("bad", &[("bootstrapServers", "k:9092"), ("consumerGroup", "g"), ("lagThreshold", "0")]);
    let check = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("lagThreshold: value \"0\" is not a number greater than 0"), "{status:?}");
    };
    check(client.get_metric_spec(bad.clone()).await.unwrap_err());
    check(client.is_active(bad.clone()).await.unwrap_err());
    check(client.stream_is_active(bad.clone()).await.unwrap_err());
    check(client.stream_metric_spec(bad.clone()).await.unwrap_err());
    let request = GetMetricsRequest { scaled_object_ref: Some(bad), metric_name: "spinscale-replicas".into() };
    check(client.get_metrics(request).await.unwrap_err());

    let mut nameless = so_ref("x", &[("query", "up"), ("serverAddress", "http://p:9090")]);
    nameless.namespace.clear();
    let status = client.is_active(nameless).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("scaledObjectRef.namespace"), "{status:?}");
    assert_eq!(server.registry.len(), 0, "bad targets are never registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_metric_name_is_not_found_naming_it() {
    let kafka = Kafka::new(&[(TOPIC, 1)]);
    let bootstrap = kafka.bootstrap();
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;
    let r = so_ref("so", &kafka_meta(&bootstrap, GROUP, TOPIC));
    // KEDA strips its `s0-` prefix; a name with the prefix left on is not ours.
    let request = GetMetricsRequest { scaled_object_ref: Some(r), metric_name: "s0-spinscale-replicas".into() };
    let status = client.get_metrics(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("\"s0-spinscale-replicas\""), "{status:?}");
    assert!(status.message().contains("spinscale-replicas"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_drives_metric_values_and_activity_as_records_arrive_and_are_committed() {
    let kafka = Kafka::new(&[(TOPIC, 4)]);
    let bootstrap = kafka.bootstrap();
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;
    for p in 0..4 {
        kafka.commit(GROUP, TOPIC, p, 0);
    }
    let mut meta = kafka_meta(&bootstrap, GROUP, TOPIC);
    meta.push(("lagThreshold", "5"));
    let r = so_ref("so", &meta);

    let idle = keda_poll(&mut client, &r).await.unwrap();
    assert_eq!((idle.values["spinscale-replicas"], idle.active), (0.0, false));

    kafka.produce(TOPIC, 0, 12);
    // The tail watch may show the first records before the offsets cycle shows all twelve.
    let busy = poll_until(&mut client, &r, Duration::from_secs(30), |p| {
        p.as_ref().is_ok_and(|p| p.active && p.values["spinscale-replicas"] == 12.0 / 5.0)
    })
    .await
    .unwrap();
    assert!(busy.active);

    kafka.commit(GROUP, TOPIC, 0, 12);
    let done =
        poll_until(&mut client, &r, Duration::from_secs(30), |p| p.as_ref().is_ok_and(|p| !p.active)).await.unwrap();
    assert_eq!(done.values["spinscale-replicas"], 0.0);
}

/// Pushed, not polled: the client makes no call while it waits, and targets re-evaluate on a 1 h
/// tick, so the `true` can only come from the step that took in the new reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_on_an_idle_topic_is_pushed_to_an_open_stream_as_true() {
    let kafka = Kafka::new(&[(TOPIC, 2)]);
    let bootstrap = kafka.bootstrap();
    kafka.commit(GROUP, TOPIC, 0, 0);
    kafka.commit(GROUP, TOPIC, 1, 0);
    let mut config = fast_config();
    config.targets.tick.0 = Duration::from_secs(3600);
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    let r = so_ref("so", &kafka_meta(&bootstrap, GROUP, TOPIC));
    assert!(!keda_poll(&mut client, &r).await.unwrap().active);

    let mut stream = client.stream_is_active(r.clone()).await.unwrap().into_inner();
    let produced = Instant::now();
    kafka.produce(TOPIC, 1, 1);
    let first = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("pushed");
    let latency = produced.elapsed();
    assert_eq!(first.unwrap().map(|m| m.result), Some(true));
    eprintln!("record → stream true: {latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_send_true_at_once_then_on_each_rising_edge_and_never_false() {
    let kafka = Kafka::new(&[(TOPIC, 1)]);
    let bootstrap = kafka.bootstrap();
    kafka.commit(GROUP, TOPIC, 0, 0);
    kafka.produce(TOPIC, 0, 3);
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;
    let r = so_ref("so", &kafka_meta(&bootstrap, GROUP, TOPIC));
    poll_until(&mut client, &r, Duration::from_secs(30), |p| p.as_ref().is_ok_and(|p| p.active)).await.unwrap();

    // The target is active and stays so (nobody commits): there is no rising edge to wait for, so
    // a `true` can only be the one sent on open.
    let mut stream = client.stream_is_active(r.clone()).await.unwrap().into_inner();
    let opened = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("true on open");
    assert_eq!(opened.unwrap().map(|m| m.result), Some(true));

    // Caught up: inactive, and nothing is sent (KEDA ≥ 2.18 ignores false; older KEDA scales in on it).
    kafka.commit(GROUP, TOPIC, 0, 3);
    poll_until(&mut client, &r, Duration::from_secs(30), |p| p.as_ref().is_ok_and(|p| !p.active)).await.unwrap();

    // The next message is the next rising edge's `true`: anything sent on the falling edge would
    // have come before it.
    kafka.produce(TOPIC, 0, 1);
    let again = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("second rising edge");
    assert_eq!(again.unwrap().map(|m| m.result), Some(true), "nothing on a falling edge");

    // One message per edge: more readings and a falling edge go by, then the stream ends; a second
    // message for that edge would have come before the end.
    kafka.commit(GROUP, TOPIC, 0, 4);
    poll_until(&mut client, &r, Duration::from_secs(30), |p| p.as_ref().is_ok_and(|p| !p.active)).await.unwrap();
    server.shutdown().await.expect("shutdown");
    let end = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("the stream ends");
    assert!(matches!(end, Ok(None)), "one message per edge, then the OK end: {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_streams_leave_nothing_behind_and_reconnects_work() {
    let kafka = Kafka::new(&[(TOPIC, 1)]);
    let bootstrap = kafka.bootstrap();
    let server = start_server(fast_config()).await;
    let meta = kafka_meta(&bootstrap, GROUP, TOPIC);
    let r = so_ref("so", &meta);
    let target = server.registry.target("default", "so", &meta_map(&meta)).unwrap();

    // KEDA cancels its stream on every ScaledObject change; do that many times over one connection.
    let mut client = connect(&server).await;
    for _ in 0..50 {
        let stream = client.stream_is_active(r.clone()).await.unwrap().into_inner();
        let specs = client.stream_metric_spec(r.clone()).await.unwrap().into_inner();
        drop((stream, specs));
    }
    let released = until(Duration::from_secs(30), || target.open_streams() == 0).await;
    assert!(released, "every cancelled stream is released: {} still open", target.open_streams());

    let mut stream = client.stream_metric_spec(r.clone()).await.unwrap().into_inner();
    let specs = stream.message().await.unwrap().expect("specs on open");
    assert_eq!(specs.metric_specs[0].metric_name, "spinscale-replicas");
    assert_eq!(specs, client.get_metric_spec(r).await.unwrap().into_inner(), "GetMetricSpec agrees with the stream");
    assert_eq!(target.open_streams(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_is_unavailable_naming_the_source_and_recovers() {
    let kafka = Kafka::new(&[(TOPIC, 1)]);
    let bootstrap = kafka.bootstrap();
    kafka.commit(GROUP, TOPIC, 0, 0);
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;
    let r = so_ref("so", &kafka_meta(&bootstrap, GROUP, TOPIC));
    keda_poll(&mut client, &r).await.expect("healthy at first");

    kafka.mock.broker_down(1).unwrap();
    let down = poll_until(&mut client, &r, Duration::from_secs(30), std::result::Result::is_err).await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert!(down.message().contains(&format!("kafka {bootstrap}")), "{down:?}");
    let down_active = client.is_active(r.clone()).await.unwrap_err();
    assert_eq!(down_active.code(), Code::Unavailable, "never a silent false");

    kafka.mock.broker_up(1).unwrap();
    poll_until(&mut client, &r, Duration::from_secs(30), std::result::Result::is_ok).await.unwrap();

    let nowhere = format!("127.0.0.1:{}", spinscale_testkit::free_port().unwrap());
    let r = so_ref("nowhere", &kafka_meta(&nowhere, GROUP, TOPIC));
    let status = poll_until(&mut client, &r, Duration::from_secs(30), std::result::Result::is_err).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains(&nowhere), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_unavailable_naming_it() {
    let kafka = Kafka::new(&[(TOPIC, 1)]);
    let bootstrap = kafka.bootstrap();
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;
    let r = so_ref("so", &kafka_meta(&bootstrap, GROUP, "no-such-topic"));
    let status = keda_poll(&mut client, &r).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("topic \"no-such-topic\" does not exist"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_targets_first_call_waits_for_its_first_reading() {
    let kafka = Kafka::new(&[(TOPIC, 1)]);
    let bootstrap = kafka.bootstrap();
    kafka.produce(TOPIC, 0, 4);
    let mut config = fast_config();
    // Offsets are polled once an hour: the first reading comes from the first poll, at once, not
    // after one interval; a call answered from a reading proves it (the call's own limit is 5 s,
    // after which it would fail with DEADLINE_EXCEEDED, and one answered without a reading would
    // be UNAVAILABLE).
    config.collectors.kafka_interval.0 = Duration::from_secs(3600);
    config.collectors.stale_after.0 = Duration::from_secs(7200);
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    let r = so_ref("so", &kafka_meta(&bootstrap, GROUP, TOPIC));
    let active = client.is_active(r).await.expect("answered from the first reading").into_inner().result;
    assert!(active, "no commit yet with offsetResetPolicy latest: lag 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_share_collectors_and_idle_targets_are_dropped_with_them() {
    let kafka = Kafka::new(&[(TOPIC, 1), ("other", 1)]);
    let bootstrap = kafka.bootstrap();
    kafka.commit(GROUP, "other", 0, 0);
    let mut config = fast_config();
    config.targets.idle_timeout.0 = Duration::from_secs(1);
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    for name in ["a", "b", "c"] {
        client.get_metric_spec(so_ref(name, &kafka_meta(&bootstrap, GROUP, TOPIC))).await.unwrap();
    }
    assert_eq!((server.registry.len(), server.registry.collectors()), (3, 1), "one collector per distinct source");
    let other = so_ref("d", &kafka_meta(&bootstrap, GROUP, "other"));
    let mut stream = client.stream_is_active(other).await.unwrap().into_inner();
    assert_eq!((server.registry.len(), server.registry.collectors()), (4, 2));

    // Nobody asks about a, b, c any more; d has an open stream, which counts as interest.
    until(Duration::from_secs(30), || server.registry.len() == 1 && server.registry.collectors() == 1).await;
    assert_eq!((server.registry.len(), server.registry.collectors()), (1, 1));
    // d's stream is still open and still pushes: a record on its idle topic arrives as `true`.
    kafka.produce("other", 0, 1);
    let pushed = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("stream still open");
    assert_eq!(pushed.unwrap().map(|m| m.result), Some(true), "stream still open");
}

/// The shutdown ends open streams itself, with OK. Left alone, they would stay open: the gRPC
/// server's graceful stop waits for them, and the server gives up on them after its drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_with_ok() {
    let kafka = Kafka::new(&[(TOPIC, 1)]);
    let bootstrap = kafka.bootstrap();
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;
    let r = so_ref("so", &kafka_meta(&bootstrap, GROUP, TOPIC));
    let mut active = client.stream_is_active(r.clone()).await.unwrap().into_inner();
    let mut specs = client.stream_metric_spec(r).await.unwrap().into_inner();
    specs.message().await.unwrap().expect("specs on open");

    let started = Instant::now();
    let stopping = tokio::spawn(server.shutdown());
    // An OK end is `Ok(None)`; any other status would be `Err` and grow KEDA's backoff.
    let active_end = async {
        loop {
            match active.message().await {
                Ok(Some(_)) => {} // a `true` before the end is fine
                end => return end,
            }
        }
    };
    let (active_end, specs_end) =
        tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(active_end, specs.message()) })
            .await
            .expect("both streams end");
    assert!(matches!(active_end, Ok(None)), "OK end: {active_end:?}");
    assert!(matches!(specs_end, Ok(None)), "OK end: {specs_end:?}");
    eprintln!("shutdown → streams ended: {:?}", started.elapsed());
    stopping.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let server = start_server(fast_config()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr)).unwrap();
    let mut health = HealthClient::new(channel.connect().await.unwrap());
    let request = HealthCheckRequest { service: "externalscaler.ExternalScaler".into() };
    let status = health.check(request).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);

    for path in ["healthz", "readyz"] {
        let response = reqwest::get(format!("http://{}/{path}", server.http_addr)).await.unwrap();
        assert_eq!(response.status(), 200, "/{path}");
    }
}
