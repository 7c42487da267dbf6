//! Fault scenarios against real components, each run as KEDA would see it.
//!
//! Every scenario starts with a target that is active with a known value. During the fault:
//! (a) it never reports inactive — `IsActive` never answers `false` and an open `StreamIsActive`
//! never sends `false` — it answers `UNAVAILABLE` naming the source instead (unless KEDA's own rules
//! read the fault as a value, marked "KEDA rule" below); (b) every call answers within 1 s;
//! (c) a target on a healthy source, polled throughout on the same connection, is unaffected;
//! (d) once the source is back, the target recovers within one collector interval plus slack.
//!
//! | scenario | what spinscale answers | recovery |
//! |---|---|---|
//! | Prometheus process stopped, restarted on the same port | `UNAVAILABLE` "… Connection refused" | next query |
//! | Prometheus slow (answers after 10 s, `timeout: 1s`) | `UNAVAILABLE` "… operation timed out" | the query in flight times out, the next one |
//! | Prometheus HTTP 500 | `UNAVAILABLE` "… HTTP 500, text/plain…, 14 bytes" (never the body) | next query |
//! | Prometheus 200 with garbage JSON | `UNAVAILABLE` "… not Prometheus API JSON" | next query |
//! | several series | `UNAVAILABLE` "… returned 2 series" (KEDA: always an error) | next query |
//! | NaN, +Inf, empty result, `ignoreNullValues: false` | `UNAVAILABLE` naming the value or "the result is empty" | next query |
//! | NaN, +Inf, empty result, `ignoreNullValues: true` (default) | KEDA rule: 0, inactive | next query |
//! | negative value | KEDA rule: passed through, clamped to 0, inactive | next query |
//! | scrape endpoint down, restarted on the same port | `UNAVAILABLE` "… Connection refused" | next scrape |
//! | scrape endpoint HTTP 500 | `UNAVAILABLE` "… HTTP 500" | next scrape |
//! | scrape endpoint 200 with a body that is not an exposition | `UNAVAILABLE` "… not a Prometheus exposition" | next scrape |
//! | Kafka broker down (`broker_down`/`broker_up`) | the last good answer while fresh, then `UNAVAILABLE` "… metadata request failed …" (or "… is stale") | next offsets cycle |
//! | one broker of three down | `UNAVAILABLE` "… latest offset of t/0 failed" for partitions it leads; other topics of the cluster unaffected | next cycle |
//! | Kafka broker slow (10 s round trip, timeout 1 s) | the last good answer while fresh, then `UNAVAILABLE` "… Timed out" (or "… is stale") | next cycle |
//! | broker reports the topic unknown (injected metadata error) | `UNAVAILABLE` "topic … does not exist" | next cycle |
//! | broker refuses ListOffsets (TOPIC_AUTHORIZATION_FAILED, injected) | `UNAVAILABLE` "… latest offset of t/0 failed …" | next cycle |
//! | group without commits | KEDA rule: `latest` 1 per partition, `earliest` the whole log, `scaleToZeroOnInvalidOffset` 0 | – |
//!
//! Not covered, because librdkafka's mock cluster (2.12.1) has no handler for the admin requests:
//! a topic **deleted** (DeleteTopics), **partitions added** (CreatePartitions; `create_topic` on an
//! existing topic answers TOPIC_ALREADY_EXISTS) and a group **deleted** (DeleteGroups). On the wire a
//! deleted group is a group without commits (OffsetFetch answers -1), covered above; a deleted topic
//! disappears from Metadata, which the injected UNKNOWN_TOPIC_OR_PART scenario exercises without
//! pretending to delete anything. A real topic and group deletion run in `tests/tansu_e2e.rs`
//! on the tansu broker; partitions added stays uncovered (tansu 0.6 has no CreatePartitions).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use spinscale::config::Config;
use spinscale::proto::{GetMetricsRequest, ScaledObjectRef};
use spinscale_testkit::Exposition;
use support::*;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

/// KEDA's HPA path allows 3 s for all calls of one read; each call here gets 1 s.
const CALL_LIMIT: Duration = Duration::from_secs(1);
/// Every collector's interval in these tests.
const INTERVAL: Duration = Duration::from_millis(200);
/// The upstream timeout in these tests (`collectors.timeout`, and `timeout` on Prometheus triggers).
const TIMEOUT: Duration = Duration::from_secs(1);
/// Recovery may take one interval plus this (the poll in flight, scheduling on a busy 2-core machine).
const SLACK: Duration = Duration::from_secs(1);
/// How long a fault is held once it shows, polling all along.
const HOLD: Duration = Duration::from_millis(1500);

fn config() -> Config {
    let mut config = fast_config();
    config.collectors.scrape_interval.0 = INTERVAL;
    config.collectors.scrape_window.0 = Duration::from_secs(1);
    assert_eq!((config.collectors.prometheus_interval.0, config.collectors.kafka_interval.0), (INTERVAL, INTERVAL));
    assert_eq!(config.collectors.timeout.0, TIMEOUT);
    config
}

// === one KEDA-like round ===

/// What one round of KEDA's calls (GetMetrics, then IsActive) answered.
#[derive(Debug)]
struct Answer {
    replicas: Result<f64, Status>,
    active: Result<bool, Status>,
    /// The slower of the two calls.
    slowest: Duration,
}

async fn ask(client: &mut Client, r: &ScaledObjectRef, limit: Duration) -> Answer {
    let request = GetMetricsRequest { scaled_object_ref: Some(r.clone()), metric_name: "spinscale-replicas".into() };
    let started = Instant::now();
    let replicas = within(limit, "GetMetrics", client.get_metrics(request)).await.map(|m| {
        assert_eq!(m.metric_values.len(), 1, "exactly one value");
        m.metric_values[0].metric_value_float
    });
    let metrics_took = started.elapsed();
    let started = Instant::now();
    let active = within(limit, "IsActive", client.is_active(r.clone())).await.map(|a| a.result);
    Answer { replicas, active, slowest: metrics_took.max(started.elapsed()) }
}

async fn within<T>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(limit, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => panic!("{what} did not answer within {limit:?}"),
    }
}

impl Answer {
    fn is(&self, replicas: f64, tolerance: f64, active: bool) -> bool {
        self.active.as_ref().is_ok_and(|a| *a == active)
            && self.replicas.as_ref().is_ok_and(|v| (v - replicas).abs() <= replicas.abs() * tolerance + 1e-9)
    }

    /// Both calls failed with `UNAVAILABLE` and a message holding one of the `|`-separated `parts`.
    fn unavailable_with(&self, parts: &str) -> bool {
        [&self.active.as_ref().err(), &self.replicas.as_ref().err()].iter().all(|e| {
            e.is_some_and(|s| s.code() == Code::Unavailable && parts.split('|').any(|p| s.message().contains(p)))
        })
    }
}

// === a scenario ===

/// What a fault must look like once it shows.
#[derive(Clone, Copy, Debug)]
enum During {
    /// Both calls answer `UNAVAILABLE` naming the source, with this (or one of its `|`-separated
    /// alternatives) in the message.
    Unavailable(&'static str),
    /// KEDA's rules read the fault as this value: (replicas, active).
    Reads(f64, bool),
}

/// One target through a fault, checked on every round.
struct Scenario {
    name: String,
    client: Client,
    r: ScaledObjectRef,
    /// What every `UNAVAILABLE` message must contain: the source's name.
    source: String,
    replicas: f64,
    tolerance: f64,
    /// Set once a KEDA rule lets the fault read as inactive.
    inactive_allowed: bool,
    stream: Arc<Mutex<Vec<Result<bool, String>>>>,
    stream_task: JoinHandle<()>,
    rounds: usize,
    slowest: Duration,
    detected: Duration,
    /// What the fault read as, for the printed figures.
    shown: String,
}

impl Scenario {
    /// Polls until the target answers `replicas` (± `tolerance`, relative) and active, then opens a
    /// `StreamIsActive`, which must send `true` at once.
    async fn healthy(name: &str, client: &Client, r: ScaledObjectRef, source: String, replicas: f64) -> Self {
        Self::healthy_within(name, client, r, source, replicas, 0.0).await
    }

    async fn healthy_within(
        name: &str,
        client: &Client,
        r: ScaledObjectRef,
        source: String,
        replicas: f64,
        tolerance: f64,
    ) -> Self {
        let mut client = client.clone();
        let started = Instant::now();
        loop {
            // A new target's first call may wait `firstReadingWait` (2 s) for its first reading.
            let answer = ask(&mut client, &r, Duration::from_secs(3)).await;
            if answer.is(replicas, tolerance, true) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{name}: never healthy; last answer {answer:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut stream = client.stream_is_active(r.clone()).await.expect("stream opens").into_inner();
        let first = tokio::time::timeout(CALL_LIMIT, stream.message()).await.expect("true at once");
        assert_eq!(first.map(|m| m.map(|m| m.result)).ok().flatten(), Some(true), "{name}: stream opens with true");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let stream_task = tokio::spawn(async move {
            loop {
                let message = match stream.message().await {
                    Ok(Some(m)) => Ok(m.result),
                    Ok(None) => Err("the stream ended".to_string()),
                    Err(status) => Err(format!("the stream failed: {status:?}")),
                };
                let end = message.is_err();
                record.lock().unwrap().push(message);
                if end {
                    return;
                }
            }
        });
        Self {
            name: name.to_string(),
            client,
            r,
            source,
            replicas,
            tolerance,
            inactive_allowed: false,
            stream: seen,
            stream_task,
            rounds: 0,
            slowest: Duration::ZERO,
            detected: Duration::ZERO,
            shown: String::new(),
        }
    }

    /// One round, checked: never `false` (unless a KEDA rule allows it), errors are `UNAVAILABLE`
    /// naming the source, values finite and ≥ 0, calls within 1 s.
    async fn round(&mut self) -> Answer {
        let answer = ask(&mut self.client, &self.r, CALL_LIMIT).await;
        self.rounds += 1;
        self.slowest = self.slowest.max(answer.slowest);
        let name = &self.name;
        if !self.inactive_allowed {
            assert!(!matches!(answer.active, Ok(false)), "{name}: IsActive answered false during the fault");
        }
        for error in [answer.active.as_ref().err(), answer.replicas.as_ref().err()].into_iter().flatten() {
            assert_eq!(error.code(), Code::Unavailable, "{name}: {error:?}");
            assert!(error.message().contains(&self.source), "{name}: does not name {:?}: {error:?}", self.source);
        }
        if let Ok(v) = answer.replicas {
            assert!(v.is_finite() && v >= 0.0, "{name}: value {v}");
        }
        answer
    }

    /// The fault is in place: polls until it shows as `during` (within 8 s), then holds it for
    /// [`HOLD`], every round checked and still showing it.
    async fn fault(&mut self, during: During) {
        let started = Instant::now();
        let shows = |a: &Answer| match during {
            During::Unavailable(part) => a.unavailable_with(part),
            During::Reads(replicas, active) => a.is(replicas, 0.0, active),
        };
        if let During::Reads(_, false) = during {
            self.inactive_allowed = true;
        }
        loop {
            let answer = self.round().await;
            if shows(&answer) {
                self.shown = match &answer.active {
                    Err(status) => status.message().rsplit(": signal source unavailable: ").next().unwrap_or("").into(),
                    Ok(active) => format!("replicas {:?}, active {active}", answer.replicas.as_ref().ok()),
                };
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "{}: fault never showed as {during:?}: {answer:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.detected = started.elapsed();
        let shown = Instant::now();
        while shown.elapsed() < HOLD {
            let answer = self.round().await;
            assert!(shows(&answer), "{}: the fault stopped showing as {during:?}: {answer:?}", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The source is back: polls until the target answers as before, within `budget`.
    async fn recover(&mut self, budget: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let answer = self.round().await;
            if answer.is(self.replicas, self.tolerance, true) {
                break;
            }
            let took = started.elapsed();
            assert!(took < budget, "{}: not recovered within {budget:?}: {answer:?}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    /// The stream sent nothing but `true` and is still open. Prints the scenario's figures.
    fn finish(self, recovery: Duration) {
        self.stream_task.abort();
        let seen = self.stream.lock().unwrap().clone();
        for message in &seen {
            assert_eq!(message, &Ok(true), "{}: the stream sent something other than true: {seen:?}", self.name);
        }
        eprintln!(
            "SCENARIO {}: {:?}; fault shown after {:?}, recovered {:?} after the source returned; {} rounds, \
             slowest call {:?}, {} more true on the stream",
            self.name,
            self.shown,
            self.detected,
            recovery,
            self.rounds,
            self.slowest,
            seen.len()
        );
    }
}

// === a target on a healthy source, polled throughout ===

/// Polls a healthy target on its own Kafka cluster until finished; every round must be healthy.
struct Control {
    stop: CancellationToken,
    task: JoinHandle<usize>,
}

impl Control {
    async fn start(client: &Client, r: ScaledObjectRef, replicas: f64) -> Self {
        let mut client = client.clone();
        poll_until(&mut client, &r, Duration::from_secs(10), |p| {
            p.as_ref().is_ok_and(|p| p.active && p.values["spinscale-replicas"] == replicas)
        })
        .await
        .expect("the control target is healthy");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut rounds = 0;
            while !stopped.is_cancelled() {
                let answer = ask(&mut client, &r, CALL_LIMIT).await;
                assert!(answer.is(replicas, 0.0, true), "a target on a healthy source was affected: {answer:?}");
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            rounds
        });
        Self { stop, task }
    }

    async fn finish(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(rounds) => assert!(rounds > 0, "the control target was polled"),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// A Kafka cluster with a group 30 records behind on one partition: 3 replicas at lagThreshold 10.
fn control_cluster() -> Kafka {
    let kafka = Kafka::new(&[("control", 1)]);
    kafka.produce("control", 0, 30);
    kafka.commit("control", "control", 0, 0);
    kafka
}

async fn control(client: &Client, kafka: &Kafka) -> Control {
    let bootstrap = kafka.bootstrap();
    let mut meta = kafka_meta(&bootstrap, "control", "control");
    meta.extend([("lagThreshold", "10"), ("allowIdleConsumers", "true")]);
    Control::start(client, so_ref("control", &meta), 3.0).await
}

// === a misbehaving HTTP upstream ===

/// How the upstream answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Good,
    /// Answers well, after 10 s.
    Slow,
    Status500,
    /// 200 with a body that is neither Prometheus API JSON nor an exposition.
    Garbage,
}

/// An HTTP server that plays a Prometheus (`/api/v1/query`, always one series at 35) and an
/// exposition endpoint (`/metrics`, a counter rising at 20/s), and misbehaves on demand. Used only
/// for behaviours the real Prometheus cannot be made to show; the scrape endpoint is its own kind.
struct Upstream {
    addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    origin: Instant,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let mut upstream = Self {
            addr: listener.local_addr().unwrap(),
            behaviour: Arc::new(Mutex::new(Behaviour::Good)),
            origin: Instant::now(),
            running: None,
        };
        upstream.serve(listener);
        upstream
    }

    fn serve(&mut self, listener: TcpListener) {
        let (query, metrics) = (self.behaviour.clone(), self.behaviour.clone());
        let origin = self.origin;
        let app = Router::new()
            .route(
                "/api/v1/query",
                get(move || {
                    let behaviour = *query.lock().unwrap();
                    async move {
                        let good = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"35"]}]}}"#;
                        match behaviour {
                            Behaviour::Good => (StatusCode::OK, good).into_response(),
                            Behaviour::Slow => {
                                tokio::time::sleep(Duration::from_secs(10)).await;
                                (StatusCode::OK, good).into_response()
                            }
                            Behaviour::Status500 => (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(),
                            Behaviour::Garbage => (
                                StatusCode::OK,
                                [("content-type", "application/json")],
                                r#"{"status":"success","data":{"resultType":"vector","result":[{"metr"#,
                            )
                                .into_response(),
                        }
                    }
                }),
            )
            .route(
                "/metrics",
                get(move || {
                    let behaviour = *metrics.lock().unwrap();
                    async move {
                        let count = origin.elapsed().as_secs_f64() * 20.0;
                        let good = format!("# TYPE requests_total counter\nrequests_total{{app=\"web\"}} {count}\n");
                        match behaviour {
                            Behaviour::Good => (StatusCode::OK, good).into_response(),
                            Behaviour::Slow => {
                                tokio::time::sleep(Duration::from_secs(10)).await;
                                (StatusCode::OK, good).into_response()
                            }
                            Behaviour::Status500 => (StatusCode::INTERNAL_SERVER_ERROR, "").into_response(),
                            // A sign-in page, as an auth proxy in front of the endpoint answers.
                            Behaviour::Garbage => (
                                StatusCode::OK,
                                [("content-type", "text/html")],
                                "<html>\n<body>\n<form action=\"/login\">Sign in</form>\n</body>\n</html>\n",
                            )
                                .into_response(),
                        }
                    }
                }),
            );
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned()).await;
        });
        self.running = Some((stop, task));
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// Stops listening and closes every connection: connections are refused from here on.
    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            tokio::time::timeout(Duration::from_secs(5), task).await.expect("upstream stops").unwrap();
        }
    }

    /// Listens again on the same port.
    async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind the same port");
        self.serve(listener);
    }

    fn prometheus_address(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

fn prometheus_meta<'a>(address: &'a str, query: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut meta = vec![
        ("scalerAddress", "spinscale:9500"),
        ("serverAddress", address),
        ("query", query),
        ("threshold", "10"),
        ("timeout", "1s"),
    ];
    meta.extend_from_slice(extra);
    meta
}

/// One fault on the fake Prometheus: 35 req/s at threshold 10 is 3.5 replicas before and after.
async fn fake_prometheus_fault(name: &str, behaviour: Behaviour, during: During, budget: Duration) {
    let upstream = Upstream::start().await;
    let kafka = control_cluster();
    let server = start_server(config()).await;
    let client = connect(&server).await;
    let control = control(&client, &kafka).await;
    let address = upstream.prometheus_address();
    let r = so_ref(name, &prometheus_meta(&address, "sum(rate(requests_total[1m]))", &[]));
    let mut s = Scenario::healthy(name, &client, r, format!("prometheus {address}"), 3.5).await;
    upstream.set(behaviour);
    s.fault(during).await;
    upstream.set(Behaviour::Good);
    let recovery = s.recover(budget).await;
    s.finish(recovery);
    control.finish().await;
}

// === Prometheus ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stopped_and_restarted_on_the_same_port() {
    let Some(mut prometheus) = prometheus(&[]).await else { return };
    let kafka = control_cluster();
    let server = start_server(config()).await;
    let client = connect(&server).await;
    let control = control(&client, &kafka).await;
    // A constant query: no scrape needed, so the answer is there as soon as Prometheus is.
    let address = prometheus.address.clone();
    let r = so_ref("stopped", &prometheus_meta(&address, "vector(35)", &[]));
    let mut s = Scenario::healthy("prometheus stopped", &client, r, format!("prometheus {address}"), 3.5).await;
    prometheus.stop();
    s.fault(During::Unavailable("Connection refused")).await;
    prometheus.restart().await.expect("prometheus restarts");
    let recovery = s.recover(INTERVAL + SLACK).await;
    s.finish(recovery);
    control.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_slow_beyond_the_timeout() {
    // The query in flight when the upstream turns fast again still waits for its timeout.
    let budget = TIMEOUT + INTERVAL + SLACK;
    fake_prometheus_fault("prometheus slow", Behaviour::Slow, During::Unavailable("timed out"), budget).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_answering_http_500() {
    // The status, content type and length: never the body, which may not be Prometheus's to show.
    let during = During::Unavailable("HTTP 500, text/plain; charset=utf-8, 14 bytes (not a Prometheus API answer)");
    fake_prometheus_fault("prometheus HTTP 500", Behaviour::Status500, during, INTERVAL + SLACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_answering_garbage_json() {
    let during = During::Unavailable("not Prometheus API JSON");
    fake_prometheus_fault("prometheus garbage JSON", Behaviour::Garbage, during, INTERVAL + SLACK).await;
}

/// The body of an exposition holding each gauge's current lines.
struct Gauges {
    exposition: Exposition,
    lines: Mutex<BTreeMap<String, String>>,
}

impl Gauges {
    fn set(&self, gauge: &str, lines: &str) {
        let mut all = self.lines.lock().unwrap();
        all.insert(gauge.to_string(), lines.to_string());
        let body: String = all.iter().map(|(g, l)| format!("# TYPE {g} gauge\n{l}")).collect();
        self.exposition.set(body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_results_keda_rules_through_the_real_server() {
    // (gauge, ignoreNullValues, the gauge's lines during the fault, what spinscale must answer)
    let cases: [(&str, &str, &str, During); 8] = [
        ("multi", "true", "multi{i=\"1\"} 1\nmulti{i=\"2\"} 2\n", During::Unavailable("returned 2 series")),
        ("nan_strict", "false", "nan_strict NaN\n", During::Unavailable("\"NaN\" is not a finite number")),
        ("nan_lenient", "true", "nan_lenient NaN\n", During::Reads(0.0, false)),
        ("inf_strict", "false", "inf_strict +Inf\n", During::Unavailable("\"+Inf\" is not a finite number")),
        ("inf_lenient", "true", "inf_lenient +Inf\n", During::Reads(0.0, false)),
        ("negative", "true", "negative -3\n", During::Reads(0.0, false)),
        ("empty_strict", "false", "", During::Unavailable("the result is empty")),
        ("empty_lenient", "true", "", During::Reads(0.0, false)),
    ];
    let gauges = Gauges { exposition: Exposition::start("").await.unwrap(), lines: Mutex::new(BTreeMap::new()) };
    for (gauge, ..) in &cases {
        gauges.set(gauge, &format!("{gauge} 35\n"));
    }
    let Some(prometheus) = prometheus(&[gauges.exposition.addr]).await else { return };
    let kafka = control_cluster();
    let server = start_server(config()).await;
    let mut client = connect(&server).await;
    let address = prometheus.address.as_str();
    // Prometheus's first scrape comes several seconds after it starts.
    let first = so_ref("first", &prometheus_meta(address, "multi", &[]));
    poll_until(&mut client, &first, Duration::from_secs(40), |p| p.as_ref().is_ok_and(|p| p.active)).await.unwrap();
    let control = control(&client, &kafka).await;

    // Prometheus scrapes every 200 ms, spinscale queries every 200 ms.
    let budget = 2 * INTERVAL + SLACK;
    let scenarios = cases.iter().map(|(gauge, ignore, lines, during)| {
        let (client, gauges) = (&client, &gauges);
        async move {
            let r = so_ref(gauge, &prometheus_meta(address, gauge, &[("ignoreNullValues", ignore)]));
            let name = format!("prometheus {gauge} (ignoreNullValues {ignore})");
            let mut s = Scenario::healthy(&name, client, r, format!("prometheus {address}"), 3.5).await;
            gauges.set(gauge, lines);
            s.fault(*during).await;
            gauges.set(gauge, &format!("{gauge} 35\n"));
            let recovery = s.recover(budget).await;
            s.finish(recovery);
        }
    });
    futures_util::future::join_all(scenarios).await;
    control.finish().await;
}

// === direct scrape ===

/// One fault on a scraped endpoint: 20 req/s at the default 10 per replica is about 2 replicas.
async fn scrape_fault(name: &str, fault: impl AsyncFnOnce(&mut Upstream), during: During) {
    let mut upstream = Upstream::start().await;
    let kafka = control_cluster();
    let server = start_server(config()).await;
    let client = connect(&server).await;
    let control = control(&client, &kafka).await;
    let url = upstream.metrics_url();
    let meta = [("scalerAddress", "spinscale:9500"), ("scrapeUrl", url.as_str()), ("scrapeMetric", "requests_total")];
    let mut s = Scenario::healthy_within(name, &client, so_ref(name, &meta), format!("scrape {url}"), 2.0, 0.25).await;
    fault(&mut upstream).await;
    s.fault(during).await;
    upstream.set(Behaviour::Good);
    if upstream.running.is_none() {
        upstream.restart().await;
    }
    let recovery = s.recover(INTERVAL + SLACK).await;
    s.finish(recovery);
    control.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_endpoint_down_and_back_on_the_same_port() {
    scrape_fault(
        "scrape endpoint down",
        async |u: &mut Upstream| u.stop().await,
        During::Unavailable("Connection refused"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_endpoint_answering_http_500() {
    scrape_fault(
        "scrape HTTP 500",
        async |u: &mut Upstream| u.set(Behaviour::Status500),
        During::Unavailable("HTTP 500"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_endpoint_answering_a_body_that_is_not_an_exposition() {
    let during = During::Unavailable("not a Prometheus exposition");
    scrape_fault("scrape garbage body", async |u: &mut Upstream| u.set(Behaviour::Garbage), during).await;
}

// === Kafka ===

const GROUP: &str = "workers";

/// Metadata for a group 30 records behind on `topic`: 3 replicas at lagThreshold 10.
fn lagging<'a>(bootstrap: &'a str, topic: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut meta = kafka_meta(bootstrap, GROUP, topic);
    meta.extend([("lagThreshold", "10"), ("allowIdleConsumers", "true")]);
    meta
}

/// A cycle reads metadata, committed and latest offsets, each bounded by the timeout; librdkafka
/// reconnects with its own backoff once the broker is back.
const KAFKA_BUDGET: Duration = Duration::from_secs(3);

type Mock = MockCluster<'static, DefaultProducerContext>;

/// One fault on a single-broker cluster whose group is 30 records behind on `events` (3 replicas),
/// with a healthy target on another cluster beside it: `fault` breaks the broker, `mend` puts it
/// right, and the answers are checked before, during and after.
async fn kafka_fault(
    name: &str,
    fault: impl FnOnce(&Mock),
    during: During,
    mend: impl FnOnce(&Mock),
    budget: Duration,
) {
    let kafka = Kafka::new(&[("events", 1)]);
    kafka.produce("events", 0, 30);
    kafka.commit(GROUP, "events", 0, 0);
    let other = control_cluster();
    let server = start_server(config()).await;
    let client = connect(&server).await;
    let control = control(&client, &other).await;
    let bootstrap = kafka.bootstrap();
    let r = so_ref(name, &lagging(&bootstrap, "events"));
    let mut s = Scenario::healthy(name, &client, r, format!("kafka {bootstrap}"), 3.0).await;
    fault(&kafka.mock);
    s.fault(during).await;
    mend(&kafka.mock);
    let recovery = s.recover(budget).await;
    s.finish(recovery);
    control.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_down_and_up() {
    kafka_fault(
        "kafka broker down",
        |mock| mock.broker_down(1).unwrap(),
        // Each lookup waits for its timeout, so a loaded machine may see the reading go stale first.
        During::Unavailable("metadata request failed|the last good reading is"),
        |mock| mock.broker_up(1).unwrap(),
        KAFKA_BUDGET,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_one_broker_of_three_down_fails_only_the_topics_it_leads() {
    let kafka = Kafka::with_brokers(3, &[("led-by-1", 1), ("led-by-2", 1)]);
    kafka.mock.partition_leader("led-by-1", 0, Some(1)).unwrap();
    kafka.mock.partition_leader("led-by-2", 0, Some(2)).unwrap();
    kafka.mock.coordinator(MockCoordinator::Group(GROUP.into()), 3).unwrap();
    for topic in ["led-by-1", "led-by-2"] {
        kafka.produce(topic, 0, 30);
        kafka.commit(GROUP, topic, 0, 0);
    }
    let server = start_server(config()).await;
    let client = connect(&server).await;
    let bootstrap = kafka.bootstrap();
    // The healthy target shares the cluster (and its offsets cycle) with the failing one.
    let control = Control::start(&client, so_ref("healthy", &lagging(&bootstrap, "led-by-2")), 3.0).await;
    let r = so_ref("failing", &lagging(&bootstrap, "led-by-1"));
    let mut s =
        Scenario::healthy("kafka one broker of three down", &client, r, format!("kafka {bootstrap}"), 3.0).await;
    kafka.mock.broker_down(1).unwrap();
    s.fault(During::Unavailable("led-by-1")).await;
    kafka.mock.broker_up(1).unwrap();
    let recovery = s.recover(KAFKA_BUDGET).await;
    s.finish(recovery);
    control.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_slow_beyond_the_timeout() {
    kafka_fault(
        "kafka broker slow",
        |mock| mock.broker_round_trip_time(1, Duration::from_secs(10)).unwrap(),
        // librdkafka reports requests past its timeout as timed out, or, once it drops the connection
        // over them, as a transport failure: both name the source.
        During::Unavailable("Timed out|timed out|Broker transport failure|the last good reading is"),
        |mock| mock.broker_round_trip_time(1, Duration::ZERO).unwrap(),
        KAFKA_BUDGET + TIMEOUT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topic_reported_unknown_by_the_broker() {
    // Injected: the mock cannot delete a topic (no DeleteTopics), but it can answer Metadata for it
    // with UNKNOWN_TOPIC_OR_PART, which is what spinscale sees of a deleted topic.
    kafka_fault(
        "kafka topic unknown",
        |mock| mock.topic_error("events", RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART).unwrap(),
        During::Unavailable("topic \"events\" does not exist"),
        |mock| mock.topic_error("events", RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).unwrap(),
        KAFKA_BUDGET,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_list_offsets_refused_by_the_broker() {
    // Injected: the broker answers ListOffsets with TOPIC_AUTHORIZATION_FAILED for the partition
    // (an ACL change). KEDA fails the call; a silent lag of 0 would scale the app in.
    kafka_fault(
        "kafka ListOffsets refused",
        |mock| {
            let refusals = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 1000];
            mock.request_errors(RDKafkaApiKey::ListOffsets, &refusals);
        },
        During::Unavailable("events/0"),
        |mock| mock.clear_request_errors(RDKafkaApiKey::ListOffsets),
        KAFKA_BUDGET,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_group_without_commits_follows_keda_offset_reset_rules() {
    // A group that never committed (or was deleted: OffsetFetch answers -1 either way).
    let kafka = Kafka::new(&[("events", 2)]);
    kafka.produce("events", 0, 30);
    let other = control_cluster();
    let server = start_server(config()).await;
    let mut client = connect(&server).await;
    let control = control(&client, &other).await;
    let bootstrap = kafka.bootstrap();
    // (extra metadata, replicas at lagThreshold 10, active)
    type Case<'a> = (&'a [(&'a str, &'a str)], f64, bool);
    let cases: [Case; 3] = [
        (&[], 0.2, true),
        (&[("offsetResetPolicy", "earliest")], 3.0, true),
        (&[("scaleToZeroOnInvalidOffset", "true")], 0.0, false),
    ];
    for (i, (extra, replicas, active)) in cases.into_iter().enumerate() {
        let mut meta = lagging(&bootstrap, "events");
        meta.extend_from_slice(extra);
        let r = so_ref(&format!("fresh-{i}"), &meta);
        let started = Instant::now();
        loop {
            let answer = ask(&mut client, &r, Duration::from_secs(3)).await;
            if answer.is(replicas, 1e-9, active) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "{extra:?}: {answer:?}");
        }
        // Stable, and never UNAVAILABLE: no commit is an answer, not a fault.
        let held = Instant::now();
        while held.elapsed() < Duration::from_millis(600) {
            let answer = ask(&mut client, &r, CALL_LIMIT).await;
            assert!(answer.is(replicas, 1e-9, active), "{extra:?}: {answer:?}");
        }
    }
    control.finish().await;
}
