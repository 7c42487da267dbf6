//! The signal hub: one collector per distinct [`SourceKey`], alive while a target holds it.
//! Kafka sources of one cluster share one offsets cycle ([`ClusterReader`]); Prometheus sources whose
//! queries differ only in one label's value share one query per interval ([`grouping`]). Each is a
//! `Pool`: one task for its members, which join and leave with their collectors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{Instrument, debug, info_span, warn};

use super::grouping::{self, Batch, PlanMember, Shape};
use super::kafka::ClusterReader;
use super::prometheus::QueryError;
use super::scrape::{self, CounterRate};
use super::tail::{self, TailRecord, TailWatch};
use super::{Reading, SourceKey, SourceState, body, prometheus};
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
    clusters: Mutex<HashMap<ClusterAddress, Weak<Pool<Member>>>>,
    groups: Mutex<HashMap<GroupKey, Weak<Pool<GroupMember>>>>,
    next_member: AtomicU64,
}

/// A running collector. Dropping the last `Arc` stops it.
pub struct Collector {
    /// The source it polls.
    pub key: SourceKey,
    state: watch::Receiver<SourceState>,
    /// Its own poll loop; `None` when its pool's task publishes its readings.
    task: Option<JoinHandle<()>>,
    /// Its place in a pool (a `Membership`): a Kafka cluster's cycle or a query group.
    _membership: Option<Box<dyn Send + Sync>>,
}

/// One task for many members: a Kafka cluster's offsets cycle, or a group of Prometheus queries
/// that share one query. Stops with its last member.
struct Pool<M> {
    shared: Arc<PoolShared<M>>,
    task: JoinHandle<()>,
}

struct PoolShared<M> {
    members: Mutex<Vec<(u64, M)>>,
    /// A new member wants its first reading now, not at the next tick.
    wake: Notify,
}

impl<M> Default for PoolShared<M> {
    fn default() -> Self {
        Self { members: Mutex::new(Vec::new()), wake: Notify::new() }
    }
}

/// A place in a pool, left on drop.
struct Membership<M> {
    pool: Arc<Pool<M>>,
    id: u64,
}

impl<M> Drop for Membership<M> {
    fn drop(&mut self) {
        if let Ok(mut members) = self.pool.shared.members.lock() {
            members.retain(|(id, _)| *id != self.id);
        }
    }
}

impl<M> Drop for Pool<M> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A cluster is its bootstrap servers and how spinscale connects to them.
type ClusterAddress = (String, Option<KafkaConnection>);

type CycleResult = Option<Result<Arc<[PartitionOffsets]>, String>>;

/// A Kafka source in its cluster's cycle.
struct Member {
    source: KafkaSource,
    cycles: watch::Sender<CycleResult>,
}

/// What Prometheus sources must share to share a query: everything of the request but the varying
/// label's value, and the timeout. Not `ignoreNullValues`: each member reads its own series under
/// its own rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    address: String,
    shape: Shape,
    headers: Vec<(String, String)>,
    query_parameters: Vec<(String, String)>,
    namespace: Option<String>,
    timeout: Option<Duration>,
}

/// A Prometheus source in its query group: its values of the shape's labels, and its collector's
/// channel, which the group's task publishes to.
#[derive(Clone)]
struct GroupMember {
    source: PrometheusSource,
    values: Vec<String>,
    state: watch::Sender<SourceState>,
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
        if let Some(task) = &self.task {
            task.abort();
        }
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
            groups: Mutex::new(HashMap::new()),
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
        self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
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
            SourceKey::Prometheus(source) => {
                if let Some(found) = grouping::recognise(&source.query) {
                    let poll = Poll {
                        interval: s.prometheus_interval.0,
                        timeout: source.timeout.unwrap_or(s.timeout.0),
                        max_body,
                    };
                    let membership = self.join_group(source, found, poll, cycle, tx);
                    return Collector { key, state: rx, task: None, _membership: Some(Box::new(membership)) };
                }
                tokio::spawn(
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
                )
            }
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
                return Collector { key, state: rx, task: Some(task), _membership: Some(Box::new(membership)) };
            }
        };
        Collector { key, state: rx, task: Some(task), _membership: None }
    }

    /// Adds `member` to the pool at `key` in `pools`, starting the pool with `start` if it is the
    /// first, and wakes the pool for the member's first reading.
    fn join<K: Eq + std::hash::Hash + Clone, M>(
        &self,
        pools: &Mutex<HashMap<K, Weak<Pool<M>>>>,
        key: &K,
        member: M,
        start: impl FnOnce(Arc<PoolShared<M>>) -> JoinHandle<()>,
    ) -> Membership<M> {
        let mut pools = pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pool = match pools.get(key).and_then(Weak::upgrade) {
            Some(running) => running,
            None => {
                pools.retain(|_, p| p.strong_count() > 0);
                let shared = Arc::new(PoolShared::default());
                let pool = Arc::new(Pool { shared: shared.clone(), task: start(shared) });
                pools.insert(key.clone(), Arc::downgrade(&pool));
                pool
            }
        };
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut members) = pool.shared.members.lock() {
            members.push((id, member));
        }
        pool.shared.wake.notify_one();
        Membership { pool, id }
    }

    /// Adds a groupable Prometheus source to its query group, publishing to `state`.
    fn join_group(
        &self,
        source: &PrometheusSource,
        found: grouping::Recognised,
        poll: Poll,
        cycle: Histogram,
        state: watch::Sender<SourceState>,
    ) -> Membership<GroupMember> {
        let key = GroupKey {
            address: source.address.clone(),
            shape: found.shape,
            headers: source.headers.clone(),
            query_parameters: source.query_parameters.clone(),
            namespace: source.namespace.clone(),
            timeout: source.timeout,
        };
        let member = GroupMember { source: source.clone(), values: found.values, state };
        let (http, group) = (self.http.clone(), key.clone());
        self.join(&self.groups, &key, member, move |shared| {
            let span = info_span!("prometheus_group", address = %group.address);
            tokio::spawn(run_group(group, http, poll, cycle, shared).instrument(span))
        })
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
    ) -> Membership<Member> {
        let address = (source.bootstrap_servers.clone(), source.security.clone());
        let member = Member { source: source.clone(), cycles };
        let (cluster, settings) = (address.clone(), settings.clone());
        self.join(&self.clusters, &address, member, move |shared| {
            let span = info_span!("kafka_cluster", bootstrap = %cluster.0);
            tokio::spawn(run_cluster(cluster, settings, cycle, shared).instrument(span))
        })
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

/// Queries of one group running at once, at most (a shape with several labels may need several).
const GROUP_CONCURRENCY: usize = 16;

/// A query group: each interval the queries its plan names for all members (and, when members
/// join, for the new ones at once), each member's share published to its collector.
async fn run_group(
    key: GroupKey,
    http: reqwest::Client,
    poll: Poll,
    cycle: Histogram,
    shared: Arc<PoolShared<GroupMember>>,
) {
    let mut ticker = poll_ticker(poll.interval);
    let (timeout, max_body) = (poll.timeout, poll.max_body);
    loop {
        let everyone = tokio::select! {
            _ = ticker.tick() => true,
            _ = shared.wake.notified() => false,
        };
        let members: Vec<GroupMember> = match shared.members.lock() {
            Ok(members) => {
                members.iter().map(|(_, m)| m).filter(|m| everyone || never_polled(&m.state)).cloned().collect()
            }
            Err(_) => return,
        };
        // Address, headers and parameters are the group's: any member's source carries them.
        let Some(source) = members.first().map(|m| &m.source) else { continue };
        let planned: Vec<PlanMember<'_>> =
            members.iter().map(|m| PlanMember { query: &m.source.query, values: &m.values }).collect();
        let batches = grouping::plan(&key.shape, &planned, grouping::QUERY_BUDGET);
        let (http, cycle) = (&http, &cycle);
        futures_util::stream::iter(batches)
            .map(|batch| async move {
                let started = Instant::now();
                let answer = prometheus::fetch_query(http, source, &batch.query, timeout, max_body).await;
                cycle.observe(started.elapsed().as_secs_f64());
                (batch, answer)
            })
            .buffer_unordered(GROUP_CONCURRENCY)
            .for_each(|(batch, answer)| {
                deliver(&batch, answer, &members);
                std::future::ready(())
            })
            .await;
    }
}

fn never_polled(state: &watch::Sender<SourceState>) -> bool {
    let state = state.borrow();
    state.last_good.is_none() && state.error.is_none()
}

/// Publishes each member's share of one query's answer. An error of a grouped query names it
/// (abbreviated) and the member's value; a query of one value reads as the member's own.
fn deliver(batch: &Batch, answer: Result<body::Answer, QueryError>, members: &[GroupMember]) {
    let Some(label) = &batch.split else {
        for (i, _) in &batch.members {
            let m = &members[*i];
            let read =
                answer.as_ref().map_err(Clone::clone).and_then(|a| prometheus::read(a, m.source.ignore_null_values));
            publish_member(m, read.map(Reading::Rate).map_err(|e| e.to_string()));
        }
        return;
    };
    let shown = grouping::abbreviated(&batch.query);
    let named = |value: &str, e: &QueryError| format!("grouped query {shown} for {label}=\"{value}\": {e}");
    match answer.and_then(|a| grouping::split(&a.body, label).map_err(|e| e.described(&a))) {
        Err(e) => {
            let mut changed = false;
            for (i, value) in &batch.members {
                changed |= store(&members[*i].state, Err(named(value, &e))).is_some();
            }
            if changed {
                warn!(query = %shown, cause = %e, members = batch.members.len(), "grouped query failed");
            }
        }
        Ok(split) => {
            for (i, value) in &batch.members {
                let m = &members[*i];
                let read = grouping::member_value(&split, value, m.source.ignore_null_values);
                publish_member(m, read.map(Reading::Rate).map_err(|e| named(value, &e)));
            }
        }
    }
}

fn publish_member(m: &GroupMember, result: Result<Reading, String>) {
    if let Some(cause) = store(&m.state, result) {
        warn!(address = %m.source.address, query = %m.source.query, %cause, "source poll failed");
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
    shared: Arc<PoolShared<Member>>,
) {
    let mut ticker = poll_ticker(settings.kafka_interval.0);
    let mut reader: Option<ClusterReader> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shared.wake.notified() => {}
        }
        let (sources, senders): (Vec<KafkaSource>, Vec<watch::Sender<CycleResult>>) = match shared.members.lock() {
            Ok(members) => members.iter().map(|(_, m)| (m.source.clone(), m.cycles.clone())).unzip(),
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
    if let Some(cause) = store(tx, result) {
        warn!(%cause, "source poll failed");
    }
}

/// [`publish`] without the log line: the failure, when it is a new one.
fn store(tx: &watch::Sender<SourceState>, result: Result<Reading, String>) -> Option<Arc<str>> {
    let mut failed = None;
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
            let cause: Arc<str> = cause.into();
            if changed {
                failed = Some(cause.clone());
            }
            state.error = Some(cause);
            changed
        }
    });
    failed
}
