//! End to end on a real Kafka broker process: the `tansu` broker (in-memory storage) on loopback.
//! produce → lag → activation pushed → a real consumer group catches up and commits → inactive;
//! then the broker is killed → UNAVAILABLE naming the source. Also the faults librdkafka's mock
//! cannot show: a topic deleted, and a consumer group deleted. (Partitions added cannot be
//! shown here: tansu 0.6 answers CreatePartitions with UNSUPPORTED_FEATURE.)
//!
//! Runs where `tansu` is installed (`tests/tansu.sh` installs it:
//! `cargo install tansu --locked --features dynostore`); elsewhere it skips with the reason,
//! unless `SPINSCALE_REQUIRE_TANSU` is set (`scripts/test.sh` installs tansu and sets it, so CI runs these).

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use spinscale::config::Config;
use spinscale_testkit::free_port;
use support::{connect, kafka_meta, poll_until, so_ref, start_server};

struct Tansu {
    child: Child,
    bootstrap: String,
}

impl Tansu {
    async fn start(binary: &PathBuf) -> Self {
        let port = free_port().expect("port");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(binary)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let bootstrap = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(&bootstrap).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "tansu did not listen within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, bootstrap }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The tansu binary, or `None` (with the reason printed) where it is not installed.
fn tansu() -> Option<PathBuf> {
    let binary = spinscale_testkit::tansu_binary();
    if binary.is_none() {
        assert!(
            std::env::var_os("SPINSCALE_REQUIRE_TANSU").is_none(),
            "tansu is required: cargo install tansu --locked --features dynostore"
        );
        eprintln!("SKIPPED: no `tansu` broker (cargo install tansu --locked --features dynostore, or tests/tansu.sh)");
    }
    binary
}

fn client_config(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> AdminClient<DefaultClientContext> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap, &[]).create().expect("admin");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let created = admin.create_topics([&topic], &AdminOptions::new()).await.expect("CreateTopics");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    admin
}

/// One record per request: tansu's ListOffsets is exact for those (DEPS.md §5).
async fn produce(bootstrap: &str, topic: &str, partitions: i32, n: i32) {
    let producer: FutureProducer = client_config(bootstrap, &[("linger.ms", "0")]).create().expect("producer");
    for i in 0..n {
        let key = format!("order-{i}");
        let record = FutureRecord::to(topic).partition(i % partitions).key(&key).payload("{}");
        producer.send(record, Duration::from_secs(5)).await.map_err(|(e, _)| e).expect("produce");
    }
}

fn fast() -> Config {
    Config::parse("collectors:\n  kafkaInterval: 200ms\n  timeout: 2s\n  staleAfter: 5s\ntargets:\n  tick: 100ms\n")
        .expect("config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_broker_lag_wakes_the_app_and_a_real_consumer_puts_it_back_to_sleep() {
    let Some(binary) = tansu() else { return };
    let mut broker = Tansu::start(&binary).await;
    let client = |extra: &[(&str, &str)]| client_config(&broker.bootstrap, extra);
    create_topic(&broker.bootstrap, "orders", 2).await;

    let server = start_server(fast()).await;
    let mut keda = connect(&server).await;
    let mut meta = kafka_meta(&broker.bootstrap, "billing", "orders");
    meta.extend([("offsetResetPolicy", "earliest"), ("lagThreshold", "10")]);
    let r = so_ref("orders", &meta);
    let idle =
        poll_until(&mut keda, &r, Duration::from_secs(10), std::result::Result::is_ok).await.expect("first poll");
    assert!(!idle.active, "an empty topic is idle: {idle:?}");
    let mut stream = keda.stream_is_active(r.clone()).await.expect("stream").into_inner();

    let produced = Instant::now();
    produce(&broker.bootstrap, "orders", 2, 20).await;
    let pushed = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    assert!(matches!(pushed, Ok(Ok(Some(ref m))) if m.result), "true pushed: {pushed:?}");
    println!("20 records on tansu → true pushed after {} ms", produced.elapsed().as_millis());
    let busy = poll_until(&mut keda, &r, Duration::from_secs(5), |p| {
        p.as_ref().is_ok_and(|p| p.active && p.values["spinscale-replicas"] == 20.0 / 10.0)
    })
    .await
    .expect("lag 20");
    assert!(busy.active);

    // The app's real consumer group reads everything and commits.
    let consumer: StreamConsumer = client(&[
        ("group.id", "billing"),
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
        ("session.timeout.ms", "6000"),
    ])
    .create()
    .expect("consumer");
    consumer.subscribe(&["orders"]).expect("subscribe");
    for _ in 0..20 {
        let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await;
        message.expect("a record within 20 s").expect("record");
    }
    consumer.commit_consumer_state(CommitMode::Sync).expect("commit");
    let caught_up = poll_until(&mut keda, &r, Duration::from_secs(10), |p| p.as_ref().is_ok_and(|p| !p.active))
        .await
        .expect("caught up");
    assert_eq!(caught_up.values["spinscale-replicas"], 0.0);

    // The broker process dies: UNAVAILABLE naming the source, never a silent "inactive".
    broker.kill();
    let down = poll_until(&mut keda, &r, Duration::from_secs(10), std::result::Result::is_err).await;
    let status = down.expect_err("unavailable");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains(&broker.bootstrap), "{status:?}");
    server.shutdown().await.expect("shutdown");
}

/// Polls as KEDA does for `limit`, failing on any `false` while the fault lasts.
async fn never_inactive(
    keda: &mut support::Client,
    r: &spinscale::proto::ScaledObjectRef,
    limit: Duration,
) -> Vec<String> {
    let until = Instant::now() + limit;
    let mut errors = Vec::new();
    while Instant::now() < until {
        match keda.is_active(r.clone()).await {
            Ok(answer) => assert!(answer.into_inner().result, "inactive during the fault"),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                errors.push(status.message().to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_is_unavailable_naming_it_never_inactive() {
    let Some(binary) = tansu() else { return };
    let broker = Tansu::start(&binary).await;
    let admin = create_topic(&broker.bootstrap, "payments", 1).await;
    produce(&broker.bootstrap, "payments", 1, 10).await;
    let server = start_server(fast()).await;
    let mut keda = connect(&server).await;
    let mut meta = kafka_meta(&broker.bootstrap, "ledger", "payments");
    meta.push(("offsetResetPolicy", "earliest"));
    let r = so_ref("payments", &meta);
    poll_until(&mut keda, &r, Duration::from_secs(10), |p| p.as_ref().is_ok_and(|p| p.active)).await.expect("lag 10");

    let deleted = admin.delete_topics(&["payments"], &AdminOptions::new()).await.expect("DeleteTopics");
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let errors = never_inactive(&mut keda, &r, Duration::from_secs(3)).await;
    let last = errors.last().expect("UNAVAILABLE once the topic is gone");
    assert!(last.contains("payments"), "names the topic: {last}");
    println!("topic deleted → {last}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_group_falls_back_to_kedas_rule_for_a_group_without_commits() {
    let Some(binary) = tansu() else { return };
    let broker = Tansu::start(&binary).await;
    let admin = create_topic(&broker.bootstrap, "invoices", 2).await;
    produce(&broker.bootstrap, "invoices", 2, 20).await;
    let committer: StreamConsumer =
        client_config(&broker.bootstrap, &[("group.id", "billing"), ("enable.auto.commit", "false")])
            .create()
            .expect("committer");
    let mut offsets = rdkafka::TopicPartitionList::new();
    for partition in 0..2 {
        offsets.add_partition_offset("invoices", partition, rdkafka::Offset::Offset(5)).expect("offset");
    }
    committer.commit(&offsets, CommitMode::Sync).expect("commit");
    drop(committer);

    let server = start_server(fast()).await;
    let mut keda = connect(&server).await;
    let mut meta = kafka_meta(&broker.bootstrap, "billing", "invoices");
    meta.extend([("lagThreshold", "100"), ("metrics", "separate")]);
    let r = so_ref("invoices", &meta);
    let lag = |p: &Result<support::Poll, tonic::Status>, want: f64| {
        p.as_ref().is_ok_and(|p| p.active && p.values["spinscale-lag"] == want)
    };
    poll_until(&mut keda, &r, Duration::from_secs(10), |p| lag(p, 10.0)).await.expect("two partitions, 5 behind each");

    let deleted = admin.delete_groups(&["billing"], &AdminOptions::new()).await.expect("DeleteGroups");
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    // No commits any more: KEDA's rule for `offsetResetPolicy: latest` counts 1 per partition,
    // so the app stays active instead of reading the deletion as "no lag".
    let after = poll_until(&mut keda, &r, Duration::from_secs(10), |p| lag(p, 2.0)).await.expect("1 per partition");
    assert!(after.active);
    server.shutdown().await.expect("shutdown");
}

/// Commits `offset` on partition 0 of `topic` for `group`, as that group's consumer would.
fn commit(bootstrap: &str, group: &str, topic: &str, offset: i64) {
    let committer: StreamConsumer =
        client_config(bootstrap, &[("group.id", group), ("enable.auto.commit", "false")]).create().expect("committer");
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets.add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset)).expect("offset");
    committer.commit(&offsets, CommitMode::Sync).expect("commit");
}

/// Many groups on one real broker: their committed offsets come from one reader (OffsetFetch of
/// many groups to their coordinator where the broker offers v8), each app reading its own lag;
/// idle apps wake through the one tail, and the push delays are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_on_a_real_broker_each_read_their_own_lag_and_idle_ones_wake_through_one_tail() {
    const APPS: usize = 30;
    let Some(binary) = tansu() else { return };
    let broker = Tansu::start(&binary).await;
    let topic = |i: usize| format!("fleet-{i}");
    for i in 0..APPS {
        create_topic(&broker.bootstrap, &topic(i), 1).await;
        produce(&broker.bootstrap, &topic(i), 1, 1 + (i % 3) as i32).await;
        commit(&broker.bootstrap, &format!("group-{i}"), &topic(i), 1);
    }
    // Each app's join runs an offsets cycle; after the last one the next is a minute away, so a
    // wake within the test's deadlines can only come through the tail.
    let server = start_server(
        Config::parse("collectors:\n  kafkaInterval: 60s\n  timeout: 2s\n  staleAfter: 5m\n").expect("config"),
    )
    .await;
    let mut keda = connect(&server).await;
    let refs: Vec<_> = (0..APPS)
        .map(|i| {
            let (t, g) = (topic(i), format!("group-{i}"));
            let mut meta = kafka_meta(&broker.bootstrap, &g, &t);
            meta.push(("metrics", "separate"));
            so_ref(&t, &meta)
        })
        .collect();
    for (i, r) in refs.iter().enumerate() {
        let want = (i % 3) as f64;
        let poll = poll_until(&mut keda, r, Duration::from_secs(20), |p| {
            p.as_ref().is_ok_and(|p| p.values.get("spinscale-lag") == Some(&want))
        })
        .await
        .expect("own lag");
        assert_eq!(poll.active, want > 0.0, "app {i}: {poll:?}");
    }

    // Each idle app in turn: one record, and the time until its stream says `true`.
    let producer: FutureProducer = client_config(&broker.bootstrap, &[("linger.ms", "0")]).create().expect("producer");
    let mut delays = Vec::new();
    for i in (0..APPS).filter(|i| i % 3 == 0) {
        let mut stream = keda.stream_is_active(refs[i].clone()).await.expect("stream").into_inner();
        // The tail follows the idle partitions after each offsets cycle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let produced = Instant::now();
        let t = topic(i);
        producer
            .send(FutureRecord::to(&t).partition(0).key("k").payload("{}"), Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
        let pushed = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        assert!(matches!(pushed, Ok(Ok(Some(ref m))) if m.result), "app {i}: true pushed: {pushed:?}");
        delays.push(produced.elapsed());
    }
    delays.sort();
    println!(
        "record → push on tansu, {APPS} apps, {} idle ones woken one by one: p50 {:?}, max {:?}",
        delays.len(),
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    server.shutdown().await.expect("shutdown");
}
