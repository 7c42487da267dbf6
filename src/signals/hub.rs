//! The signal hub: one collector per distinct [`SourceKey`], alive while a target holds it.
//! Kafka sources of one cluster share one offsets cycle ([`cluster`]); Prometheus sources whose
//! queries differ only in one label's value share one query per interval ([`grouping`]). Each is a
//! [`Pool`](super::pool::Pool): one task for its members, which join and leave with their collectors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span, warn};

use super::cluster::{self, Clusters};
use super::grouping::{self, Batch, PlanMember, Shape};
use super::pool::{Membership, PoolShared, Pools, poll_ticker};
use super::prometheus::QueryError;
use super::scrape::{self, CounterRate};
use super::{Reading, SourceKey, SourceState, body, prometheus, publish, store};
use crate::config::CollectorSettings;
use crate::telemetry::Telemetry;
use spinscale_core::spec::prometheus_connection::PrometheusConnection;
use spinscale_core::spec::{PrometheusSource, ScrapeSource};

/// Starts, shares and (through [`Collector`]'s drop) stops collectors.
pub struct Hub {
    /// Replaced on a config reload; collectors started after it use the new values.
    settings: RwLock<CollectorSettings>,
    /// `limits.maxResponseBytes`: the longest body a Prometheus or scrape answer may have.
    max_response_bytes: AtomicUsize,
    telemetry: Arc<Telemetry>,
    http: reqwest::Client,
    collectors: Mutex<HashMap<SourceKey, Weak<Collector>>>,
    clusters: Clusters,
    groups: Pools<GroupKey, GroupMember>,
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

/// What Prometheus sources must share to share a query: everything of the request but the varying
/// label's value (the connection and its settings included: other credentials, another query),
/// the timeout and the interval. Not `ignoreNullValues`: each member reads its own series under
/// its own rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    address: String,
    shape: Shape,
    headers: Vec<(String, String)>,
    query_parameters: Vec<(String, String)>,
    namespace: Option<String>,
    timeout: Option<Duration>,
    query_interval: Option<Duration>,
    connection: Option<String>,
    auth: Option<PrometheusConnection>,
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
            clusters: Clusters::default(),
            groups: Pools::default(),
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
        self.clusters.clear();
        self.groups.clear();
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
                // `queryInterval` comes bounded below by `prometheusInterval` (the registry's config).
                let poll = Poll {
                    interval: source.query_interval.unwrap_or(s.prometheus_interval.0).max(s.prometheus_interval.0),
                    timeout: source.timeout.unwrap_or(s.timeout.0),
                    max_body,
                };
                if let Some(found) = grouping::recognise(&source.query) {
                    let membership = self.join_group(source, found, poll, cycle, tx);
                    return Collector { key, state: rx, task: None, _membership: Some(Box::new(membership)) };
                }
                tokio::spawn(run_prometheus(self.http.clone(), source.clone(), poll, cycle, tx).instrument(span))
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
                let membership = cluster::join(&self.clusters, source, s, cycle, tx);
                return Collector { key, state: rx, task: None, _membership: Some(Box::new(membership)) };
            }
        };
        Collector { key, state: rx, task: Some(task), _membership: None }
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
            query_interval: source.query_interval,
            connection: source.connection.clone(),
            auth: source.auth.clone(),
        };
        let member = GroupMember { source: source.clone(), values: found.values, state };
        let (http, group) = (self.http.clone(), key.clone());
        self.groups.join(&key, member, move |shared| {
            let span = info_span!("prometheus_group", address = %group.address);
            tokio::spawn(run_group(group, http, poll, cycle, shared).instrument(span))
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
