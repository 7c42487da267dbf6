//! The Kafka tail watch on librdkafka's mock cluster: a record on an idle topic becomes a pushed
//! `true` at once, not one offsets poll later, and the user's group is never touched.
//!
//! The offsets poll runs once an hour here, so a `true` within the tests' deadlines can only have
//! come from the tail watch; no assertion depends on how fast the machine is.

mod support;

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use support::*;

const GROUP: &str = "workers";
const TOPIC: &str = "events";
const HOUR: Duration = Duration::from_secs(3600);

/// Offsets are polled every `kafka_interval`; they are also read when a new source joins the cluster.
fn config(kafka_interval: Duration) -> spinscale::config::Config {
    let mut config = fast_config();
    config.collectors.kafka_interval.0 = kafka_interval;
    config.collectors.stale_after.0 = kafka_interval * 3;
    // The mock broker answers a waiting fetch only at the end of the wait (a real one at once).
    config.collectors.tail_fetch_wait.0 = Duration::from_millis(20);
    config
}

/// Waits until the target is known to be idle (so the tail watch runs), then opens a stream.
async fn idle_stream(
    client: &mut Client,
    r: &spinscale::proto::ScaledObjectRef,
) -> tonic::Streaming<spinscale::proto::IsActiveResponse> {
    poll_until(client, r, Duration::from_secs(30), |p| p.as_ref().is_ok_and(|p| !p.active)).await.unwrap();
    let stream = client.stream_is_active(r.clone()).await.unwrap().into_inner();
    // The tail's partitions are followed a moment after the poll that started it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream
}

/// Sends one record and waits (30 s at most; the offsets poll is an hour away) for the pushed
/// `true`; returns how long that took, for the log only.
async fn pushed_after_a_record(
    kafka: &Kafka,
    stream: &mut tonic::Streaming<spinscale::proto::IsActiveResponse>,
) -> Duration {
    let produced = Instant::now();
    kafka.send(TOPIC, 1);
    let pushed = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a `true` pushed by the tail watch (the offsets poll is an hour away)");
    assert_eq!(pushed.unwrap().map(|m| m.result), Some(true));
    produced.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_on_an_idle_topic_is_pushed_by_the_tail_watch_not_the_offsets_poll() {
    let kafka = Kafka::new(&[(TOPIC, 3)]);
    for p in 0..3 {
        kafka.commit(GROUP, TOPIC, p, 0);
    }
    // Offsets are polled once an hour (and once at the start): only the tail watch can push a
    // `true` for a record sent after that first reading.
    let server = start_server(config(HOUR)).await;
    let mut client = connect(&server).await;
    let bootstrap = kafka.bootstrap();
    let r = so_ref("so", &kafka_meta(&bootstrap, GROUP, TOPIC));
    let mut stream = idle_stream(&mut client, &r).await;
    let latency = pushed_after_a_record(&kafka, &mut stream).await;
    eprintln!("record → push through the tail watch: {latency:?}");
    let poll = keda_poll(&mut client, &r).await.unwrap();
    assert!(poll.active && poll.values["spinscale-replicas"] > 0.0, "{poll:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_watch_restarts_after_each_catch_up_and_never_commits_for_the_group() {
    let kafka = Kafka::new(&[(TOPIC, 2)]);
    kafka.commit(GROUP, TOPIC, 0, 0);
    kafka.commit(GROUP, TOPIC, 1, 0);
    // Offsets are polled once an hour: each round's push can only come from the tail watch.
    let server = start_server(config(HOUR)).await;
    let mut client = connect(&server).await;
    let bootstrap = kafka.bootstrap();
    let r = so_ref("so", &kafka_meta(&bootstrap, GROUP, TOPIC));

    for round in 1..=3i64 {
        if round > 1 {
            // A new source joining the cluster reads every source's offsets at once: this read
            // (not a timer) sees that the app caught up, and the tail watch restarts from it.
            let group = format!("nudge-{round}");
            let nudge = so_ref(&group, &kafka_meta(&bootstrap, &group, TOPIC));
            client.get_metric_spec(nudge).await.expect("a new source on the same cluster");
        }
        let mut stream = idle_stream(&mut client, &r).await;
        let latency = pushed_after_a_record(&kafka, &mut stream).await;
        eprintln!("round {round}: record → push {latency:?}");
        // The app catches up; the next offsets read sees the group idle again.
        kafka.commit(GROUP, TOPIC, 1, round);
    }

    let observer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", GROUP).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(TOPIC, 0);
    tpl.add_partition(TOPIC, 1);
    let committed = observer.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    let offsets: Vec<Offset> =
        committed.elements().iter().map(rdkafka::topic_partition_list::TopicPartitionListElem::offset).collect();
    assert_eq!(offsets, vec![Offset::Offset(0), Offset::Offset(3)], "only the app's own commits");
}
