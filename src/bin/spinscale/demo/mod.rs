//! `spinscale demo`: push activation, watched live, in one process with nothing external.
//!
//! An embedded Kafka (librdkafka's mock cluster) gets bursts of records with idle gaps in between.
//! A simulated app, `webhook-handler`, consumes them at 15 records/s per replica and commits. When
//! a `prometheus` binary is installed, it scrapes a synthetic request counter that follows the
//! bursts. The spinscale server runs in-process, and a client calls it over real gRPC the way KEDA
//! does: one `StreamIsActive` stream (a pushed `true` scales 0 → 1 at once), a poll loop with a
//! cooldown (→ 0), and an HPA loop (1 → N). The timeline shows the app woken from zero about a
//! second after the first record of a burst, where KEDA's own kafka scaler waits for its next poll.

pub mod http;
mod kafka;
mod keda;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle as ThreadHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::Channel;

use spinscale::config::Config;
use spinscale::grpc::scaled_object_ref;
use spinscale::proto::external_scaler_client::ExternalScalerClient;
use spinscale::proto::{GetMetricsRequest, MetricSpec, ScaledObjectRef};
use spinscale::registry::{Registry, TargetState};
use spinscale::server::Server;

use kafka::{app_consumer, load_producer, spawn_consumer, spawn_producer};
use keda::Keda;
use spinscale_testkit::{Exposition, PrometheusProcess};

// === settings ===

const NAMESPACE: &str = "default";
const APP: &str = "webhook-handler";
const TOPIC: &str = "events";
const PARTITIONS: i32 = 4;
/// Records one replica handles per second.
const RECORDS_PER_REPLICA: f64 = 15.0;
/// KEDA's default is 30 s; shorter here so a one-minute demo shows a full cycle.
const POLLING_INTERVAL: Duration = Duration::from_secs(5);
const COOLDOWN_PERIOD: Duration = Duration::from_secs(10);
/// The real HPA syncs every 15 s.
const HPA_INTERVAL: Duration = Duration::from_secs(3);
const MAX_REPLICAS: u32 = 50;
const LAG_THRESHOLD: &str = "5";
const TARGET_RPS: &str = "10";
const QUERY: &str = r#"sum(rate(demo_requests_total{app="webhook-handler"}[5s]))"#;
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// Prometheus applies scrape targets on a 5 s reload tick: the first scrape can take ~12 s.
const FIRST_SCRAPE_WAIT: Duration = Duration::from_secs(20);
const PRODUCE_TICK: Duration = Duration::from_millis(20);
const CONSUME_TICK: Duration = Duration::from_millis(100);
const HTTP_TICK: Duration = Duration::from_millis(100);

// === load plan ===

/// One burst, in seconds from the start of the timeline; rates ramp linearly from `.0` to `.1`.
struct Burst {
    at: f64,
    secs: f64,
    records: (f64, f64),
    http: (f64, f64),
}

/// The plan repeats every `CYCLE` seconds, so every run is the same and longer runs see more bursts.
const CYCLE: f64 = 60.0;
/// Idle 8 s, a short burst, an idle gap long enough for scale to zero, then a bigger burst.
const BURSTS: [Burst; 2] = [
    Burst { at: 8.0, secs: 4.0, records: (40.0, 40.0), http: (6.0, 24.0) },
    Burst { at: 36.0, secs: 8.0, records: (30.0, 60.0), http: (10.0, 50.0) },
];
/// HTTP requests go on a little longer than the records.
const HTTP_TAIL: f64 = 2.0;

fn records_per_s(t: f64) -> f64 {
    rate_at(t, |b| (b.secs, b.records))
}

fn http_rps(t: f64) -> f64 {
    rate_at(t, |b| (b.secs + HTTP_TAIL, b.http))
}

fn rate_at(t: f64, shape: impl Fn(&Burst) -> (f64, (f64, f64))) -> f64 {
    let t = t.rem_euclid(CYCLE);
    BURSTS
        .iter()
        .find_map(|b| {
            let (secs, (from, to)) = shape(b);
            let x = (t - b.at) / secs;
            (0.0..1.0).contains(&x).then_some(from + (to - from) * x)
        })
        .unwrap_or(0.0)
}

/// The bursts that start within `duration`, one line each.
fn describe_plan(duration: Duration, with_http: bool) -> Vec<String> {
    let cycles = (duration.as_secs_f64() / CYCLE).ceil() as u32;
    (0..cycles)
        .flat_map(|c| BURSTS.iter().map(move |b| (f64::from(c) * CYCLE + b.at, b)))
        .filter(|(start, _)| *start < duration.as_secs_f64())
        .map(|(start, b)| {
            let records = format!("{start:>3.0}-{:.0} s: {} records/s", start + b.secs, ramp(b.records));
            if with_http {
                format!("{records}; HTTP {} requests/s until {:.0} s", ramp(b.http), start + b.secs + HTTP_TAIL)
            } else {
                records
            }
        })
        .collect()
}

fn ramp((from, to): (f64, f64)) -> String {
    if from == to { format!("{from:.0}") } else { format!("{from:.0}->{to:.0}") }
}

// === shared state ===

/// What the demo's threads and tasks share.
struct Shared {
    start: Instant,
    replicas: AtomicU32,
    stop: AtomicBool,
    /// When the producer sent the first record after an idle gap; taken by the next push.
    burst_started: Mutex<Option<Instant>>,
    produced: AtomicU64,
    consumed: AtomicU64,
    log: Mutex<Log>,
}

/// What the summary reports, and what the loops remember between rounds.
#[derive(Default)]
struct Log {
    pushes: u32,
    push_latencies_ms: Vec<u64>,
    last_active: Option<Instant>,
    scale_events: Vec<String>,
    errors: Vec<ErrorSeen>,
    stream_ends: Vec<String>,
    problem: Option<String>,
}

/// One failed gRPC call.
struct ErrorSeen {
    at: f64,
    call: &'static str,
    code: tonic::Code,
    message: String,
}

impl Shared {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            replicas: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            burst_started: Mutex::new(None),
            produced: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            log: Mutex::new(Log::default()),
        }
    }

    fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::SeqCst)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn event(&self, text: impl std::fmt::Display) {
        println!("{:>6.1}s  >> {text}", self.secs());
    }

    fn mark_active(&self) {
        self.log().last_active = Some(Instant::now());
    }

    /// Sets the replica count if it is still `from` (the three loops race, as KEDA's and the HPA's do).
    fn scale(&self, from: u32, to: u32, why: &str) {
        if from == to || self.replicas.compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return;
        }
        let at = self.secs();
        self.event(format!("scale {from} -> {to} {why}"));
        self.log().scale_events.push(format!("{at:>6.1}s  {from} -> {to} {why}"));
    }

    fn take_burst_start(&self) -> Option<Instant> {
        self.burst_started.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    fn set_burst_start(&self, at: Instant) {
        *self.burst_started.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(at);
    }
}

// === entry point ===

/// Runs the demo for `duration` (or until Ctrl-C) and prints a timeline and a summary.
pub async fn run(duration: Duration) -> anyhow::Result<()> {
    // !Send: it stays in this future's body, which main awaits directly.
    let mock = MockCluster::new(1).context("cannot start the embedded Kafka (librdkafka mock cluster)")?;
    mock.create_topic(TOPIC, PARTITIONS, 1).with_context(|| format!("cannot create topic {TOPIC:?}"))?;
    let bootstrap = mock.bootstrap_servers();
    // Before spinscale sees the group: its first commit is what makes the app idle.
    let consumer = {
        let bootstrap = bootstrap.clone();
        tokio::task::spawn_blocking(move || app_consumer(&bootstrap)).await??
    };
    let producer = load_producer(&bootstrap)?;
    let server = start_server().await?;
    let query_signal = start_query_signal().await;
    let metadata = trigger_metadata(&bootstrap, query_signal.as_ref().map(|q| q.process.address.as_str()));
    let pairs: Vec<(&str, &str)> = metadata.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let so = scaled_object_ref(NAMESPACE, APP, &pairs);
    server.registry.target(NAMESPACE, APP, &so.scaler_metadata).context("the demo's trigger metadata")?;
    let client = ExternalScalerClient::connect(format!("http://{}", server.grpc_addr))
        .await
        .with_context(|| format!("cannot connect to spinscale at {}", server.grpc_addr))?;
    print_header(duration, &bootstrap, &server, query_signal.as_ref(), &pairs);

    let running = Running::start(client, so, &server.registry, query_signal.as_ref(), producer, consumer)?;
    let interrupted = wait_for_end(duration).await;
    let shared = running.stop(server).await?;
    drop(query_signal);
    print_summary(&shared, interrupted);
    drop(mock);
    Ok(())
}

/// Everything that runs during the timeline.
struct Running {
    shared: Arc<Shared>,
    threads: Vec<ThreadHandle<()>>,
    loops: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    stream_done: CancellationToken,
    stream: JoinHandle<()>,
}

impl Running {
    fn start(
        client: ExternalScalerClient<Channel>,
        so: ScaledObjectRef,
        registry: &Arc<Registry>,
        query_signal: Option<&QuerySignal>,
        producer: BaseProducer,
        consumer: BaseConsumer,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::new());
        let threads = vec![spawn_producer(shared.clone(), producer)?, spawn_consumer(shared.clone(), consumer)?];
        let keda = Keda { client, so, shared: shared.clone() };
        let loops = CancellationToken::new();
        let tasks = spawn_loops(&keda, registry, query_signal, &loops);
        let stream_done = CancellationToken::new();
        let stream = tokio::spawn(keda.watch_stream(stream_done.clone()));
        Ok(Self { shared, threads, loops, tasks, stream_done, stream })
    }

    /// Stops the client and the load, then the server (its streams end with OK), then waits for
    /// the stream's end and for spinscale's Kafka clients to close.
    async fn stop(self, server: Server) -> anyhow::Result<Arc<Shared>> {
        self.loops.cancel();
        futures_util::future::join_all(self.tasks).await;
        stop_threads(&self.shared, self.threads).await;
        let registry = Arc::downgrade(&server.registry);
        server.shutdown().await.context("spinscale shutdown")?;
        self.stream_done.cancel();
        if tokio::time::timeout(Duration::from_secs(3), self.stream).await.is_err() {
            self.shared.event("StreamIsActive: no end seen within 3 s of shutdown");
        }
        release_kafka_clients(registry).await;
        Ok(self.shared)
    }
}

/// Waits until spinscale's Kafka clients are gone: dropping the mock cluster first makes them log
/// "all brokers down". The registry goes with the server; its collector tasks are aborted, and their
/// clients dropped shortly after on a worker thread, which nothing can await from here.
async fn release_kafka_clients(registry: Weak<Registry>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while registry.strong_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn start_server() -> anyhow::Result<Server> {
    let grpc = TcpListener::bind("127.0.0.1:0").await.context("cannot bind the gRPC listener")?;
    let http = TcpListener::bind("127.0.0.1:0").await.context("cannot bind the HTTP listener")?;
    Server::start(Config::default(), grpc, http).await.context("cannot start the spinscale server")
}

fn spawn_loops(
    keda: &Keda,
    registry: &Arc<Registry>,
    query_signal: Option<&QuerySignal>,
    cancel: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let shared = keda.shared.clone();
    let metadata = keda.so.scaler_metadata.clone();
    let with_rps = query_signal.is_some();
    let mut tasks = vec![
        tokio::spawn(keda.clone().poll_loop(cancel.clone())),
        tokio::spawn(keda.clone().hpa_loop(cancel.clone())),
        tokio::spawn(timeline(shared.clone(), registry.clone(), metadata, with_rps, cancel.clone())),
    ];
    if let Some(q) = query_signal {
        tasks.push(tokio::spawn(http_load(shared, q.exposition.clone(), cancel.clone())));
    }
    tasks
}

/// Waits for `duration`; true if Ctrl-C came first.
async fn wait_for_end(duration: Duration) -> bool {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = ctrl_c => true,
    }
}

async fn stop_threads(shared: &Shared, threads: Vec<ThreadHandle<()>>) {
    shared.stop.store(true, Ordering::SeqCst);
    let joined = tokio::task::spawn_blocking(move || threads.into_iter().all(|t| t.join().is_ok())).await;
    if !matches!(joined, Ok(true)) {
        shared.event("a Kafka client thread ended abnormally");
    }
}

/// The trigger, as a ScaledObject would carry it.
fn trigger_metadata(bootstrap: &str, prometheus: Option<&str>) -> Vec<(&'static str, String)> {
    let mut metadata = vec![
        ("scalerAddress", "spinscale.keda:9500".to_string()),
        ("bootstrapServers", bootstrap.to_string()),
        ("consumerGroup", APP.to_string()),
        ("topic", TOPIC.to_string()),
        ("lagThreshold", LAG_THRESHOLD.to_string()),
    ];
    if let Some(address) = prometheus {
        metadata.push(("prometheusAddress", address.to_string()));
        metadata.push(("query", QUERY.to_string()));
        metadata.push(("threshold", TARGET_RPS.to_string()));
    }
    metadata
}

// === request-rate signal (optional) ===

/// A real Prometheus scraping a synthetic request counter.
struct QuerySignal {
    process: PrometheusProcess,
    exposition: Arc<Exposition>,
}

async fn start_query_signal() -> Option<QuerySignal> {
    let Some(binary) = PrometheusProcess::binary() else {
        println!(
            "No `prometheus` binary on PATH: the request-rate (query) signal is skipped, Kafka lag only. \
             To see it too: apt-get install prometheus (or set SPINSCALE_PROMETHEUS_BIN)."
        );
        return None;
    };
    println!("Starting Prometheus ({}) and waiting for its first scrape (can take ~12 s)...", binary.display());
    match try_start_query_signal().await {
        Ok(signal) => Some(signal),
        Err(e) => {
            println!("Prometheus did not start ({e:#}): continuing with Kafka lag only.");
            None
        }
    }
}

async fn try_start_query_signal() -> anyhow::Result<QuerySignal> {
    let exposition = Exposition::start(&exposition_text(0)).await.context("cannot serve /metrics")?;
    let process = PrometheusProcess::start(&[exposition.addr], SCRAPE_INTERVAL).await?;
    let started = Instant::now();
    if wait_first_scrape(&process.address).await {
        println!("Prometheus scraped the counter {:.1} s after it was ready.", started.elapsed().as_secs_f64());
    } else {
        println!("Prometheus has not scraped yet after {FIRST_SCRAPE_WAIT:?}; the rate reads 0 until it does.");
    }
    Ok(QuerySignal { process, exposition: Arc::new(exposition) })
}

/// True once Prometheus has a sample of the counter.
async fn wait_first_scrape(address: &str) -> bool {
    let http = reqwest::Client::new();
    let started = Instant::now();
    while started.elapsed() < FIRST_SCRAPE_WAIT {
        let answer = http
            .get(format!("{address}/api/v1/query"))
            .query(&[("query", "demo_requests_total")])
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if let Ok(response) = answer
            && let Ok(text) = response.text().await
            && let Ok(body) = serde_json::from_str::<serde_json::Value>(&text)
            && body["data"]["result"].as_array().is_some_and(|r| !r.is_empty())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

fn exposition_text(requests: u64) -> String {
    format!("# TYPE demo_requests_total counter\ndemo_requests_total{{app=\"{APP}\"}} {requests}\n")
}

/// Synthetic HTTP load: the counter grows at the plan's request rate.
async fn http_load(shared: Arc<Shared>, exposition: Arc<Exposition>, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(HTTP_TICK);
    let mut requests = 0.0;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        requests += http_rps(shared.secs()) * (now - last).as_secs_f64();
        last = now;
        exposition.set(exposition_text(requests as u64));
    }
}

// === Kafka load and the simulated app ===

const COLUMNS: &str = "     t | rec/s http/s | backlog |    rps  lag active reason desired | replicas";

fn print_header(
    duration: Duration,
    bootstrap: &str,
    server: &Server,
    query_signal: Option<&QuerySignal>,
    metadata: &[(&str, &str)],
) {
    println!();
    println!("spinscale demo: everything in one process for {}", spinscale_core::duration::format(duration));
    println!("  Kafka      embedded (librdkafka mock) at {bootstrap}, topic `{TOPIC}` with {PARTITIONS} partitions");
    println!("  spinscale  gRPC {} (KEDA's ExternalScaler), HTTP {}", server.grpc_addr, server.http_addr);
    match query_signal {
        Some(q) => println!("  Prometheus {} scraping a synthetic request counter every second", q.process.address),
        None => println!("  Prometheus none: the request-rate signal is skipped"),
    }
    println!(
        "  app        `{APP}`: consumes {RECORDS_PER_REPLICA} records/s per replica and commits \
         (at most {PARTITIONS} replicas busy: one per partition)"
    );
    println!("  KEDA-like client over gRPC:");
    println!("    StreamIsActive kept open: each pushed `true` scales 0 -> 1 at once (as KEDA's RequestScale)");
    println!(
        "    poll every {POLLING_INTERVAL:?} (KEDA's default pollingInterval is 30 s): GetMetricSpec, \
         GetMetrics + IsActive; inactive for cooldownPeriod {COOLDOWN_PERIOD:?} -> 0"
    );
    println!(
        "    HPA every {HPA_INTERVAL:?} (real HPA: 15 s, and a 5 min scale-down window left out here): \
         replicas = ceil(value / target), 1..{MAX_REPLICAS}"
    );
    let shown: Vec<String> =
        metadata.iter().filter(|(k, _)| *k != "scalerAddress").map(|(k, v)| format!("{k}: {v}")).collect();
    println!("  trigger metadata: {}", shown.join(", "));
    println!("  load plan (repeats every {CYCLE:.0} s):");
    for line in describe_plan(duration, query_signal.is_some()) {
        println!("    {line}");
    }
    println!();
    println!("columns: load (records/s produced, HTTP requests/s) | records not yet consumed |");
    println!("         spinscale's decision (rps, lag as KEDA caps it, active, reason, desired replicas) | replicas");
    println!("{COLUMNS}");
}

/// One line per second, from what spinscale decided (the registry's state for this trigger).
async fn timeline(
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    metadata: HashMap<String, String>,
    with_rps: bool,
    cancel: CancellationToken,
) {
    let first = tokio::time::Instant::from_std(shared.start) + Duration::from_secs(1);
    let mut ticker = tokio::time::interval_at(first, Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match registry.target(NAMESPACE, APP, &metadata) {
            Ok(target) => {
                let state = target.state();
                note_problem(&shared, &state);
                println!("{}", timeline_line(&shared, &state, with_rps));
            }
            Err(e) => shared.event(format!("target: {e}")),
        }
    }
}

fn timeline_line(shared: &Shared, state: &TargetState, with_rps: bool) -> String {
    let t = shared.secs();
    let d = &state.decision;
    let http = if with_rps { format!("{:.0}", http_rps(t)) } else { "-".into() };
    let rps = if with_rps { format!("{:.1}", d.rps) } else { "-".into() };
    let backlog = shared.produced.load(Ordering::SeqCst).saturating_sub(shared.consumed.load(Ordering::SeqCst));
    let active = if d.active { "yes" } else { "no" };
    let reason = if state.problem.is_some() { "n/a" } else { d.reason.as_str() };
    format!(
        "{:>5.0}s | {:>5.0} {http:>6} | {backlog:>7} | {rps:>6} {:>4.0} {active:>6} {reason:>6} {:>7.2} | {:>8}",
        t.round(),
        records_per_s(t),
        d.lag,
        d.desired_replicas,
        shared.replicas(),
    )
}

/// Shows a source problem when it appears, changes or clears.
fn note_problem(shared: &Shared, state: &TargetState) {
    let now = state.problem.as_ref().map(ToString::to_string);
    let before = std::mem::replace(&mut shared.log().problem, now.clone());
    if before != now {
        match now {
            Some(p) => shared.event(format!("signal source problem (calls answer UNAVAILABLE): {p}")),
            None if before.is_some() => shared.event("every signal source answers"),
            None => {}
        }
    }
}

fn print_summary(shared: &Shared, interrupted: bool) {
    let log = shared.log();
    let ended = if interrupted { ", ended early by Ctrl-C" } else { "" };
    println!();
    println!("summary after {:.0} s{ended}", shared.secs());
    println!(
        "  records: {} produced, {} consumed by the app",
        shared.produced.load(Ordering::SeqCst),
        shared.consumed.load(Ordering::SeqCst)
    );
    println!("  pushes received over StreamIsActive: {}", log.pushes);
    println!("  push latency after the first record of a burst: {}", latency_summary(&log.push_latencies_ms));
    println!(
        "    (while the group is idle, spinscale's tail watch long-polls the topic, so the first record is seen \
         at once; otherwise the offsets cycle, every {} (collectors.kafkaInterval), sees it)",
        spinscale_core::duration::format(Config::default().collectors.kafka_interval.0)
    );
    println!("  scale events: {}", log.scale_events.len());
    for e in &log.scale_events {
        println!("    {e}");
    }
    println!("  gRPC errors: {} (none read as 0 or inactive: replicas kept)", log.errors.len());
    for line in error_summary(&log.errors) {
        println!("    {line}");
    }
    let ends = if log.stream_ends.is_empty() { "none seen".to_string() } else { log.stream_ends.join(", ") };
    println!("  StreamIsActive stream ends: {ends}");
    println!(
        "  KEDA's own kafka scaler would notice a burst only at its next poll: up to pollingInterval \
         (30 s by default) after the first record."
    );
}

/// One line per (call, code): how many, and the first message.
fn error_summary(errors: &[ErrorSeen]) -> Vec<String> {
    let mut groups: Vec<(&ErrorSeen, usize)> = Vec::new();
    for e in errors {
        match groups.iter_mut().find(|(first, _)| first.call == e.call && first.code == e.code) {
            Some((_, count)) => *count += 1,
            None => groups.push((e, 1)),
        }
    }
    groups
        .iter()
        .map(|(first, count)| {
            format!("{} {:?} x{count}, first at {:.1} s: {}", first.call, first.code, first.at, first.message)
        })
        .collect()
}

fn latency_summary(ms: &[u64]) -> String {
    if ms.is_empty() {
        return "none measured".into();
    }
    let mut sorted = ms.to_vec();
    sorted.sort_unstable();
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2
    };
    format!("min {} ms, median {median} ms, max {} ms ({} measured)", sorted[0], sorted[sorted.len() - 1], sorted.len())
}
