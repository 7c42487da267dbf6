//! A Kafka cluster's shared work: one offsets cycle for every source on it ([`ClusterReader`]),
//! each source publishing its share, and the tail watch of idle sources.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use spinscale_core::engine::PartitionOffsets;
use spinscale_core::spec::KafkaSource;
use spinscale_core::spec::kafka_connection::KafkaConnection;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, info_span, warn};

use super::kafka::ClusterReader;
use super::pool::{Membership, PoolShared, Pools, poll_ticker};
use super::tail::{self, TailRecord, TailWatch};
use super::{Reading, SourceState, publish};
use crate::config::CollectorSettings;

/// The running cluster cycles.
pub type Clusters = Pools<ClusterAddress, Member>;

/// Starts `source`'s collector in its cluster's cycle (started, timed into `cycle`, if it is the
/// first source on the cluster): its task, and its place in the cycle.
pub fn start(
    clusters: &Clusters,
    source: &KafkaSource,
    settings: &CollectorSettings,
    cycle: Histogram,
    tx: watch::Sender<SourceState>,
) -> (JoinHandle<()>, Membership<Member>) {
    let (cycles_tx, cycles) = watch::channel(None);
    let address = (source.bootstrap_servers.clone(), source.security.clone());
    let member = Member { source: source.clone(), cycles: cycles_tx };
    let (cluster, s) = (address.clone(), settings.clone());
    let membership = clusters.join(&address, member, move |shared| {
        let span = info_span!("kafka_cluster", bootstrap = %cluster.0);
        tokio::spawn(run_cluster(cluster, s, cycle, shared).instrument(span))
    });
    let span = info_span!("kafka_source", group = %source.consumer_group);
    let task = tokio::spawn(run_kafka(source.clone(), settings.tail_fetch_wait.0, cycles, tx).instrument(span));
    (task, membership)
}

/// A cluster is its bootstrap servers and how spinscale connects to them.
pub type ClusterAddress = (String, Option<KafkaConnection>);

type CycleResult = Option<Result<Arc<[PartitionOffsets]>, String>>;

/// A Kafka source in its cluster's cycle.
pub struct Member {
    source: KafkaSource,
    cycles: watch::Sender<CycleResult>,
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
