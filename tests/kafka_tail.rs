//! The Kafka tail watch on librdkafka's mock cluster: a record on an idle topic becomes a pushed
//! `true` in milliseconds, not one offsets poll later, and the user's group is never touched.

mod support;

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use support::*;

const GROUP: &str = "workers";
const TOPIC: &str = "events";

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
    poll_until(client, r, Duration::from_secs(5), |p| p.as_ref().is_ok_and(|p| !p.active)).await.unwrap();
    let stream = client.stream_is_active(r.clone()).await.unwrap().into_inner();
    // The tail consumer's assignment takes a moment after the poll that started it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream
}

async fn push_latency(kafka: &Kafka, stream: &mut tonic::Streaming<spinscale::proto::IsActiveResponse>) -> Duration {
    let produced = Instant::now();
    kafka.send(TOPIC, 1);
    let pushed = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("pushed");
    assert_eq!(pushed.unwrap().map(|m| m.result), Some(true));
    produced.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_on_an_idle_topic_is_pushed_in_milliseconds_not_one_poll_later() {
    let kafka = Kafka::new(&[(TOPIC, 3)]);
    for p in 0..3 {
        kafka.commit(GROUP, TOPIC, p, 0);
    }
    // Offsets are polled every 10 s: only the tail watch can explain a fast push.
    let server = start_server(config(Duration::from_secs(10))).await;
    let mut client = connect(&server).await;
    let bootstrap = kafka.bootstrap();
    let r = so_ref("so", &kafka_meta(&bootstrap, GROUP, TOPIC));
    let mut stream = idle_stream(&mut client, &r).await;
    let latency = push_latency(&kafka, &mut stream).await;
    eprintln!("record → push through the tail watch: {latency:?}");
    assert!(latency < Duration::from_millis(300), "{latency:?}: the 10 s poll did it, not the tail watch");
    let poll = keda_poll(&mut client, &r).await.unwrap();
    assert!(poll.active && poll.values["spinscale-replicas"] > 0.0, "{poll:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_watch_restarts_after_each_catch_up_and_never_commits_for_the_group() {
    let kafka = Kafka::new(&[(TOPIC, 2)]);
    kafka.commit(GROUP, TOPIC, 0, 0);
    kafka.commit(GROUP, TOPIC, 1, 0);
    let server = start_server(config(Duration::from_millis(500))).await;
    let mut client = connect(&server).await;
    let bootstrap = kafka.bootstrap();
    let r = so_ref("so", &kafka_meta(&bootstrap, GROUP, TOPIC));

    for round in 1..=3i64 {
        let mut stream = idle_stream(&mut client, &r).await;
        let latency = push_latency(&kafka, &mut stream).await;
        eprintln!("round {round}: record → push {latency:?}");
        assert!(latency < Duration::from_millis(300), "round {round}: {latency:?}");
        // The app catches up; the poll sees the group idle again and the tail watch restarts.
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
