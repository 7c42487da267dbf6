//! The signal hub: one collector task per distinct [`SourceKey`], alive while a target holds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{Instrument, debug, info_span, warn};

use super::kafka::OffsetsReader;
use super::scrape::{self, CounterRate};
use super::tail::{self, TailRecord, TailWatch};
use super::{Reading, SourceKey, SourceState, prometheus};
use crate::config::CollectorSettings;
use crate::engine::PartitionOffsets;
use crate::target::{KafkaSource, PrometheusSource, ScrapeSource};

/// Starts, shares and (through [`Collector`]'s drop) stops collectors.
pub struct Hub {
    settings: CollectorSettings,
    http: reqwest::Client,
    collectors: Mutex<HashMap<SourceKey, Weak<Collector>>>,
}

/// A running collector. Dropping the last `Arc` stops it.
pub struct Collector {
    pub key: SourceKey,
    state: watch::Receiver<SourceState>,
    task: JoinHandle<()>,
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
    pub fn new(settings: CollectorSettings) -> Arc<Self> {
        let http = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(90)).build().unwrap_or_default();
        Arc::new(Self { settings, http, collectors: Mutex::new(HashMap::new()) })
    }

    /// The collector for `key`, started if no target uses it yet. Must run inside a tokio runtime.
    pub fn subscribe(&self, key: &SourceKey) -> Arc<Collector> {
        let mut collectors = self.collectors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = collectors.get(key).and_then(Weak::upgrade) {
            return running;
        }
        collectors.retain(|_, c| c.strong_count() > 0);
        let collector = Arc::new(self.start(key.clone()));
        collectors.insert(key.clone(), Arc::downgrade(&collector));
        collector
    }

    /// How many collectors are running.
    pub fn running(&self) -> usize {
        let collectors = self.collectors.lock().unwrap_or_else(|e| e.into_inner());
        collectors.values().filter(|c| c.strong_count() > 0).count()
    }

    fn start(&self, key: SourceKey) -> Collector {
        let (tx, rx) = watch::channel(SourceState::default());
        let span = info_span!("collector", source = %key);
        let s = &self.settings;
        let task = match &key {
            SourceKey::Prometheus(source) => tokio::spawn(
                run_prometheus(
                    self.http.clone(),
                    source.clone(),
                    s.prometheus_interval.0,
                    source.timeout.unwrap_or(s.timeout.0),
                    tx,
                )
                .instrument(span),
            ),
            SourceKey::Scrape(source) => tokio::spawn(
                run_scrape(self.http.clone(), source.clone(), s.scrape_interval.0, s.scrape_window.0, s.timeout.0, tx)
                    .instrument(span),
            ),
            SourceKey::Kafka(source) => tokio::spawn(run_kafka(source.clone(), s.clone(), tx).instrument(span)),
        };
        Collector { key, state: rx, task }
    }
}

async fn run_prometheus(
    http: reqwest::Client,
    source: PrometheusSource,
    interval: Duration,
    timeout: Duration,
    tx: watch::Sender<SourceState>,
) {
    let mut ticker = poll_ticker(interval);
    loop {
        ticker.tick().await;
        let result = prometheus::query(&http, &source, timeout).await;
        publish(&tx, result.map(Reading::Rate).map_err(|e| e.to_string()));
    }
}

async fn run_scrape(
    http: reqwest::Client,
    source: ScrapeSource,
    interval: Duration,
    window: Duration,
    timeout: Duration,
    tx: watch::Sender<SourceState>,
) {
    let mut ticker = poll_ticker(interval);
    let origin = Instant::now();
    let mut rate = CounterRate::new(window);
    loop {
        ticker.tick().await;
        // Timed when the answers are in: the counters' values are "now", not "when asked".
        match scrape::scrape(&http, &source, timeout.min(interval)).await {
            Ok(series) => {
                if let Some(rps) = rate.observe(origin.elapsed(), series) {
                    publish(&tx, Ok(Reading::Rate(rps)));
                }
            }
            Err(e) => publish(&tx, Err(e.to_string())),
        }
    }
}

async fn run_kafka(source: KafkaSource, settings: CollectorSettings, tx: watch::Sender<SourceState>) {
    let mut ticker = poll_ticker(settings.kafka_interval.0);
    let mut reader: Option<OffsetsReader> = None;
    let (records_tx, mut records) = mpsc::channel(256);
    let mut tail: Option<TailWatch> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let (kept, result) = poll_offsets(reader.take(), source.clone(), settings.timeout.0).await;
                reader = kept;
                if let Ok(partitions) = &result {
                    tail = follow_tail(tail, &source, partitions, settings.tail_fetch_wait.0, &records_tx);
                }
                publish(&tx, result.map(|p| Reading::Offsets(p.into())));
            }
            Some(first) = records.recv() => {
                let mut seen = vec![first];
                while let Ok(more) = records.try_recv() {
                    seen.push(more);
                }
                // The offsets poll takes over from here: there is lag now.
                tail = None;
                tx.send_modify(|state| {
                    if let Some((Reading::Offsets(partitions), _)) = &mut state.last_good {
                        *partitions = tail::advanced(partitions, &seen).into();
                    }
                });
            }
        }
    }
}

/// One offsets poll on a blocking thread; the reader is kept for the next poll.
async fn poll_offsets(
    reader: Option<OffsetsReader>,
    source: KafkaSource,
    timeout: Duration,
) -> (Option<OffsetsReader>, Result<Vec<PartitionOffsets>, String>) {
    let outcome = tokio::task::spawn_blocking(move || {
        let mut reader = match reader {
            Some(r) => r,
            None => match OffsetsReader::new(source, timeout) {
                Ok(r) => r,
                Err(e) => return (None, Err(e.to_string())),
            },
        };
        let result = reader.poll().map_err(|e| e.to_string());
        (Some(reader), result)
    })
    .await;
    outcome.unwrap_or_else(|e| (None, Err(format!("offsets poll ended abnormally: {e}"))))
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
        _ => match TailWatch::start(&source.bootstrap_servers, ends, fetch_wait, records.clone()) {
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
            let changed = state.error.as_deref() != Some(cause.as_str());
            if changed {
                warn!(%cause, "source poll failed");
            }
            state.error = Some(cause.into());
            changed
        }
    });
}
