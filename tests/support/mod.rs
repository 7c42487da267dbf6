//! Shared test harness: a spinscale server on port 0, a client that calls as KEDA does, an embedded
//! Kafka (librdkafka's mock cluster: a real wire-protocol broker) and the real `prometheus`.
#![allow(dead_code)]

pub mod kube;
pub mod pki;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use spinscale::config::Config;
use spinscale::proto::external_scaler_client::ExternalScalerClient;
use spinscale::proto::{GetMetricsRequest, ScaledObjectRef};
use spinscale::server::Server;
use spinscale_testkit::PrometheusProcess;
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub type Client = ExternalScalerClient<Channel>;

/// Config with fast collectors, so tests wait milliseconds, not seconds.
pub fn fast_config() -> Config {
    Config::parse(
        "collectors:\n  prometheusInterval: 200ms\n  kafkaInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\n\
         targets:\n  tick: 100ms\n",
    )
    .expect("test config is valid")
}

pub async fn start_server(config: Config) -> Server {
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
    Server::start(config, grpc, http).await.expect("server starts")
}

/// One HTTP/2 connection, as KEDA shares one per scaler address.
pub async fn connect(server: &Server) -> Client {
    ExternalScalerClient::connect(format!("http://{}", server.grpc_addr)).await.expect("connect")
}

pub fn so_ref(name: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    spinscale::grpc::scaled_object_ref("default", name, metadata)
}

/// One KEDA poll (`checkScalers`): GetMetricSpec, then GetMetrics followed by IsActive per spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    pub values: HashMap<String, f64>,
    pub active: bool,
}

pub async fn keda_poll(client: &mut Client, r: &ScaledObjectRef) -> Result<Poll, tonic::Status> {
    let specs = client.get_metric_spec(r.clone()).await?.into_inner().metric_specs;
    assert!(!specs.is_empty(), "KEDA treats an empty spec list as a failure");
    let mut values = HashMap::new();
    let mut active = false;
    for spec in specs {
        let request = GetMetricsRequest { scaled_object_ref: Some(r.clone()), metric_name: spec.metric_name.clone() };
        let response = client.get_metrics(request).await?.into_inner();
        assert_eq!(response.metric_values.len(), 1, "exactly one value: the HPA sums them");
        let v = &response.metric_values[0];
        assert!(v.metric_value_float.is_finite() && v.metric_value_float >= 0.0, "{v:?}");
        assert_eq!(v.metric_value, v.metric_value_float.ceil() as i64, "int and float agree: {v:?}");
        values.insert(spec.metric_name, v.metric_value_float);
        active = client.is_active(r.clone()).await?.into_inner().result;
    }
    Ok(Poll { values, active })
}

/// Polls as KEDA does until `accept` holds, or panics after `limit` with the last answer.
pub async fn poll_until(
    client: &mut Client,
    r: &ScaledObjectRef,
    limit: Duration,
    accept: impl Fn(&Result<Poll, tonic::Status>) -> bool,
) -> Result<Poll, tonic::Status> {
    let started = Instant::now();
    loop {
        let answer = keda_poll(client, r).await;
        if accept(&answer) {
            return answer;
        }
        if started.elapsed() > limit {
            panic!("condition not met within {limit:?}; last answer: {answer:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `done` holds within `limit` (checked every 20 ms, and once more at the end).
pub async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// Whether a missing component must fail the test (CI) rather than skip it.
pub fn components_required() -> bool {
    std::env::var_os("SPINSCALE_REQUIRE_COMPONENTS").is_some() || std::env::var_os("CI").is_some()
}

/// The real Prometheus scraping `targets` every 200 ms; `None` (with a printed reason) only
/// outside CI when the binary is missing.
pub async fn prometheus(targets: &[std::net::SocketAddr]) -> Option<PrometheusProcess> {
    if PrometheusProcess::binary().is_none() {
        assert!(!components_required(), "the `prometheus` binary is required (apt-get install prometheus)");
        eprintln!("SKIPPED: no `prometheus` binary on PATH (apt-get install prometheus)");
        return None;
    }
    Some(PrometheusProcess::start(targets, Duration::from_millis(200)).await.expect("prometheus starts"))
}

/// librdkafka's mock cluster with a producer and helpers to commit as a consumer group would.
pub struct Kafka {
    pub mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    producer: BaseProducer,
}

impl Kafka {
    pub fn new(topics: &[(&str, i32)]) -> Self {
        Self::with_brokers(1, topics)
    }

    /// A cluster of `brokers` brokers (ids 1..=brokers) holding `topics`.
    pub fn with_brokers(brokers: i32, topics: &[(&str, i32)]) -> Self {
        let mock = MockCluster::new(brokers).expect("mock cluster");
        for (topic, partitions) in topics {
            mock.create_topic(topic, *partitions, 1).expect("create topic");
        }
        let producer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("linger.ms", "0")
            .create()
            .expect("producer");
        Self { mock, producer }
    }

    pub fn bootstrap(&self) -> String {
        self.mock.bootstrap_servers()
    }

    /// Produces `n` records to one partition and waits until they are acknowledged.
    pub fn produce(&self, topic: &str, partition: i32, n: usize) {
        for i in 0..n {
            let payload = format!("record {i}");
            self.producer
                .send(BaseRecord::<(), _>::to(topic).partition(partition).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("enqueue record");
        }
        self.producer.flush(Duration::from_secs(10)).expect("flush");
    }

    /// Enqueues one record without waiting for its acknowledgement (librdkafka sends it at once
    /// with `linger.ms=0`; `flush` itself would add up to 100 ms of its own polling).
    pub fn send(&self, topic: &str, partition: i32) {
        self.producer
            .send(BaseRecord::<(), _>::to(topic).partition(partition).payload("record"))
            .map_err(|(e, _)| e)
            .expect("enqueue record");
    }

    /// Commits `offset` for `group` on one partition, as a consumer of that group would.
    pub fn commit(&self, group: &str, topic: &str, partition: i32, offset: i64) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset)).expect("tpl");
        consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    }
}

/// Trigger metadata for a Kafka source on `kafka`.
pub fn kafka_meta<'a>(bootstrap: &'a str, group: &'a str, topic: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("scalerAddress", "spinscale:9500"),
        ("bootstrapServers", bootstrap),
        ("consumerGroup", group),
        ("topic", topic),
    ]
}

/// Everything the process logs (debug and up), for the checks that no secret is ever written.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).to_string()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends this test binary's logs to a buffer (once per binary: the first caller's subscriber wins).
pub fn capture_logs() -> Logs {
    let logs = Logs::default();
    let writer = logs.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug,h2=info,hyper=info,tower=info")
        .with_writer(move || writer.clone())
        .try_init();
    logs
}
