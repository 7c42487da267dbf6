//! The signal hub: one collector task per distinct [`SourceKey`], alive while a target holds it.
//! Kafka sources of one cluster share one offsets cycle ([`ClusterReader`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{Instrument, debug, info_span, warn};

use super::kafka::ClusterReader;
use super::scrape::{self, CounterRate};
use super::tail::{self, TailRecord, TailWatch};
use super::{Reading, SourceKey, SourceState, prometheus};
use crate::config::CollectorSettings;
use crate::telemetry::Telemetry;
use spinscale_core::engine::PartitionOffsets;
use spinscale_core::spec::kafka_connection::KafkaConnection;
use spinscale_core::spec::{KafkaSource, PrometheusSource, ScrapeSource};

/// Starts, shares and (through [`Collector`]'s drop) stops collectors.
pub struct Hub {
    /// Replaced on a config reload; collectors started after it use the new values.
    settings: RwLock<CollectorSettings>,
    /// `limits.maxResponseBytes`: the longest body a Prometheus or scrape answer may have.
    max_response_bytes: AtomicUsize,
    telemetry: Arc<Telemetry>,
    http: reqwest::Client,
    collectors: Mutex<HashMap<SourceKey, Weak<Collector>>>,
    clusters: Mutex<HashMap<ClusterAddress, Weak<Cluster>>>,
    next_member: AtomicU64,
}

/// A running collector. Dropping the last `Arc` stops it.
pub struct Collector {
    /// The source it polls.
    pub key: SourceKey,
    state: watch::Receiver<SourceState>,
    task: JoinHandle<()>,
    /// A Kafka source's place in its cluster's offsets cycle.
    _membership: Option<Membership>,
}

/// One offsets cycle per Kafka cluster, for every Kafka source on it. Stops with its last member.
struct Cluster {
    shared: Arc<ClusterShared>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct ClusterShared {
    members: Mutex<Vec<Member>>,
    /// A new member wants its first reading now, not at the next tick.
    wake: Notify,
}

/// A cluster is its bootstrap servers and how spinscale connects to them.
type ClusterAddress = (String, Option<KafkaConnection>);

type CycleResult = Option<Result<Arc<[PartitionOffsets]>, String>>;

struct Member {
    id: u64,
    source: KafkaSource,
    cycles: watch::Sender<CycleResult>,
}

struct Membership {
    cluster: Arc<Cluster>,
    id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Ok(mut members) = self.cluster.shared.members.lock() {
            members.retain(|m| m.id != self.id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    /// A receiver of this source's state; `changed()` fires after every poll.
    pub fn subscribe(&self) -> watch::Receiver<SourceState> {
        self.state.clone()
    }

    /// The latest state, borrowed (do not hold across an await).
    pub fn borrow(&self) -> watch::Ref<'_, SourceState> {
        self.state.borrow()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        debug!(source = %self.key, "collector stopped: no target uses it");
        self.task.abort();
    }
}

impl Hub {
    /// A hub with no collector yet; they poll as `settings` say through `http`, read answers of
    /// at most `max_response_bytes`, and count into `telemetry`.
    pub fn new(
        settings: CollectorSettings,
        max_response_bytes: usize,
        telemetry: Arc<Telemetry>,
        http: reqwest::Client,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings: RwLock::new(settings),
            max_response_bytes: AtomicUsize::new(max_response_bytes),
            telemetry,
            http,
            collectors: Mutex::new(HashMap::new()),
            clusters: Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(0),
        })
    }

    /// The collector for `key`, started if no target uses it yet. Must run inside a tokio runtime.
    pub fn subscribe(&self, key: &SourceKey) -> Arc<Collector> {
        let mut collectors = self.collectors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(running) = collectors.get(key).and_then(Weak::upgrade) {
            return running;
        }
        collectors.retain(|_, c| c.strong_count() > 0);
        let collector = Arc::new(self.start(key.clone()));
        collectors.insert(key.clone(), Arc::downgrade(&collector));
        collector
    }

    /// New settings: later subscriptions start new collectors (and cluster cycles) with them, while
    /// the running ones serve their targets until those move over and drop them.
    pub fn reconfigure(&self, settings: CollectorSettings, max_response_bytes: usize) {
        *self.settings.write().unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
        self.max_response_bytes.store(max_response_bytes, Ordering::Relaxed);
        self.collectors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        self.clusters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    /// Every running collector that is still registered (for the exporter and the status page).
    pub fn live(&self) -> Vec<Arc<Collector>> {
        let collectors = self.collectors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        collectors.values().filter_map(Weak::upgrade).collect()
    }

    /// The HTTP client the collectors share (connection pools included).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// How many collectors are running.
    pub fn running(&self) -> usize {
        let collectors = self.collectors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        collectors.values().filter(|c| c.strong_count() > 0).count()
    }

    fn start(&self, key: SourceKey) -> Collector {
        let (tx, rx) = watch::channel(SourceState::default());
        let span = info_span!("collector", source = %key);
        let s = &self.settings.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let cycle = self.telemetry.source_cycle(key.kind());
        let max_body = self.max_response_bytes.load(Ordering::Relaxed);
        let task = match &key {
            SourceKey::Prometheus(source) => tokio::spawn(
                run_prometheus(
                    self.http.clone(),
                    source.clone(),
                    Poll {
                        interval: s.prometheus_interval.0,
                        timeout: source.timeout.unwrap_or(s.timeout.0),
                        max_body,
                    },
                    cycle,
                    tx,
                )
                .instrument(span),
            ),
            SourceKey::Scrape(source) => tokio::spawn(
                run_scrape(
                    self.http.clone(),
                    source.clone(),
                    Poll { interval: s.scrape_interval.0, timeout: s.timeout.0.min(s.scrape_interval.0), max_body },
                    s.scrape_window.0,
                    cycle,
                    tx,
                )
                .instrument(span),
            ),
            SourceKey::Kafka(source) => {
                let (cycles_tx, cycles) = watch::channel(None);
                let membership = self.join_cluster(source, s, cycle, cycles_tx);
                let task = tokio::spawn(run_kafka(source.clone(), s.tail_fetch_wait.0, cycles, tx).instrument(span));
                return Collector { key, state: rx, task, _membership: Some(membership) };
            }
        };
        Collector { key, state: rx, task, _membership: None }
    }
}

impl Hub {
    /// Adds `source` to its cluster's offsets cycle, starting the cycle (timed into `cycle`) if it is
    /// the first.
    fn join_cluster(
        &self,
        source: &KafkaSource,
        settings: &CollectorSettings,
        cycle: Histogram,
        cycles: watch::Sender<CycleResult>,
    ) -> Membership {
        let mut clusters = self.clusters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let address = (source.bootstrap_servers.clone(), source.security.clone());
        let cluster = match clusters.get(&address).and_then(Weak::upgrade) {
            Some(running) => running,
            None => {
                clusters.retain(|_, c| c.strong_count() > 0);
                let shared = Arc::new(ClusterShared::default());
                let span = info_span!("kafka_cluster", bootstrap = %source.bootstrap_servers);
                let run = run_cluster(address.clone(), settings.clone(), cycle, shared.clone());
                let cluster = Arc::new(Cluster { shared, task: tokio::spawn(run.instrument(span)) });
                clusters.insert(address, Arc::downgrade(&cluster));
                cluster
            }
        };
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut members) = cluster.shared.members.lock() {
            members.push(Member { id, source: source.clone(), cycles });
        }
        cluster.shared.wake.notify_one();
        Membership { cluster, id }
    }
}

/// How an HTTP source is polled: how often, how long one answer may take, and how long it may be.
struct Poll {
    interval: Duration,
    timeout: Duration,
    max_body: usize,
}

async fn run_prometheus(
    http: reqwest::Client,
    source: PrometheusSource,
    poll: Poll,
    cycle: Histogram,
    tx: watch::Sender<SourceState>,
) {
    let mut ticker = poll_ticker(poll.interval);
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let result = prometheus::query(&http, &source, poll.timeout, poll.max_body).await;
        cycle.observe(started.elapsed().as_secs_f64());
        publish(&tx, result.map(Reading::Rate).map_err(|e| e.to_string()));
    }
}

async fn run_scrape(
    http: reqwest::Client,
    source: ScrapeSource,
    poll: Poll,
    window: Duration,
    cycle: Histogram,
    tx: watch::Sender<SourceState>,
) {
    let mut ticker = poll_ticker(poll.interval);
    let origin = Instant::now();
    let mut rate = CounterRate::new(window);
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let scraped = scrape::scrape(&http, &source, poll.timeout, poll.max_body).await;
        cycle.observe(started.elapsed().as_secs_f64());
        // Timed when the answers are in: the counters' values are "now", not "when asked".
        match scraped {
            Ok(series) => {
                if let Some(rps) = rate.observe(origin.elapsed(), series) {
                    publish(&tx, Ok(Reading::Rate(rps)));
                }
            }
            Err(e) => publish(&tx, Err(e.to_string())),
        }
    }
}

/// One offsets cycle for every Kafka source of a cluster, each interval (and when one joins).
async fn run_cluster(
    (bootstrap_servers, security): ClusterAddress,
    settings: CollectorSettings,
    cycle: Histogram,
    shared: Arc<ClusterShared>,
) {
    let mut ticker = poll_ticker(settings.kafka_interval.0);
    let mut reader: Option<ClusterReader> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shared.wake.notified() => {}
        }
        let (sources, senders): (Vec<KafkaSource>, Vec<watch::Sender<CycleResult>>) = match shared.members.lock() {
            Ok(members) => members.iter().map(|m| (m.source.clone(), m.cycles.clone())).unzip(),
            Err(_) => return,
        };
        if sources.is_empty() {
            continue;
        }
        let (bootstrap, security, timeout) = (bootstrap_servers.clone(), security.clone(), settings.timeout.0);
        let taken = reader.take();
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut reader = match taken.map_or_else(|| ClusterReader::new(&bootstrap, security.as_ref(), timeout), Ok)
            {
                Ok(r) => r,
                Err(e) => return (None, sources.iter().map(|_| Err(e.to_string())).collect()),
            };
            let results: Vec<Result<Arc<[PartitionOffsets]>, String>> =
                reader.poll(&sources).into_iter().map(|r| r.map(Into::into).map_err(|e| e.to_string())).collect();
            (Some(reader), results)
        })
        .await;
        cycle.observe(started.elapsed().as_secs_f64());
        let results = match outcome {
            Ok((kept, results)) => {
                reader = kept;
                results
            }
            Err(e) => senders.iter().map(|_| Err(format!("offsets cycle ended abnormally: {e}"))).collect(),
        };
        for (sender, result) in senders.iter().zip(results) {
            sender.send_replace(Some(result));
        }
    }
}

/// A Kafka source: publishes its share of each cluster cycle, and runs the tail watch while idle.
async fn run_kafka(
    source: KafkaSource,
    tail_fetch_wait: Duration,
    mut cycles: watch::Receiver<CycleResult>,
    tx: watch::Sender<SourceState>,
) {
    let (records_tx, mut records) = mpsc::channel(256);
    let mut tail: Option<TailWatch> = None;
    loop {
        tokio::select! {
            changed = cycles.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(result) = cycles.borrow_and_update().clone() else { continue };
                if let Ok(partitions) = &result {
                    tail = follow_tail(tail, &source, partitions, tail_fetch_wait, &records_tx);
                }
                publish(&tx, result.map(Reading::Offsets));
            }
            Some(first) = records.recv() => {
                let mut seen = vec![first];
                while let Ok(more) = records.try_recv() {
                    seen.push(more);
                }
                // The offsets cycle takes over from here: there is lag now.
                tail = None;
                tx.send_modify(|state| {
                    if let Some((Reading::Offsets(partitions), at)) = &mut state.last_good {
                        *partitions = tail::advanced(partitions, &seen).into();
                        // The records were seen now: push latency counts from here.
                        *at = Instant::now();
                    }
                });
            }
        }
    }
}

/// Keeps a tail watch running exactly while the group has caught up on every partition.
fn follow_tail(
    tail: Option<TailWatch>,
    source: &KafkaSource,
    partitions: &[PartitionOffsets],
    fetch_wait: Duration,
    records: &mpsc::Sender<TailRecord>,
) -> Option<TailWatch> {
    let ends = tail::idle_ends(partitions)?;
    let same_partitions =
        |t: &TailWatch| t.from.len() == ends.len() && t.from.iter().zip(&ends).all(|(a, b)| (&a.0, a.1) == (&b.0, b.1));
    match tail {
        Some(running) if same_partitions(&running) => Some(running),
        _ => match TailWatch::start(
            &source.bootstrap_servers,
            source.security.as_ref(),
            ends,
            fetch_wait,
            records.clone(),
        ) {
            Ok(started) => Some(started),
            Err(e) => {
                warn!(cause = %e, "tail watch not started; activation waits for the offsets poll");
                None
            }
        },
    }
}

/// A poll loop's clock: a poll that overruns delays the next one instead of bunching them.
fn poll_ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// Stores a poll's outcome. Subscribers are woken only when it differs from the last one: a
/// source shared by thousands of targets must not wake them all every second to say "no change".
/// The reading's time is refreshed either way; targets check staleness on their own tick.
fn publish(tx: &watch::Sender<SourceState>, result: Result<Reading, String>) {
    tx.send_if_modified(|state| match result {
        Ok(reading) => {
            let changed = state.error.is_some() || state.last_good.as_ref().is_none_or(|(last, _)| *last != reading);
            state.last_good = Some((reading, Instant::now()));
            state.error = None;
            changed
        }
        Err(cause) => {
            state.errors += 1;
            let changed = state.error.as_deref() != Some(cause.as_str());
            if changed {
                warn!(%cause, "source poll failed");
            }
            state.error = Some(cause.into());
            changed
        }
    });
}
