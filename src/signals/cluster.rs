//! A Kafka cluster's shared work, one task for every source on it: each interval one offsets
//! cycle (committed offsets of all groups from their coordinators, [`CommittedReader`]; log ends
//! per leader, [`ClusterReader`]), each source's share published to its collector; and the tail
//! ([`TailWatch`]) of every partition an idle source waits on, whose first record wakes the
//! sources waiting on it at once. Threads and connections grow with brokers, not with sources.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use spinscale_core::engine::PartitionOffsets;
use spinscale_core::spec::KafkaSource;
use spinscale_core::spec::kafka_connection::KafkaConnection;
use tokio::sync::watch;
use tracing::{Instrument, info_span};

use super::committed::CommittedReader;
use super::kafka::{ClusterReader, OffsetsError, Partition};
use super::pool::{Membership, PoolShared, Pools, poll_ticker};
use super::tail::{self, Latest, TailRecord, TailSeen, TailWatch};
use super::{Reading, SourceState, publish};
use crate::config::CollectorSettings;

/// How long the tail keeps a partition no source waits on any more (see [`TailWatch::follow`]).
const TAIL_LINGER: Duration = Duration::from_secs(60);

/// A cluster is its bootstrap servers and how spinscale connects to them.
pub type ClusterAddress = (String, Option<KafkaConnection>);

/// The running cluster tasks.
pub type Clusters = Pools<ClusterAddress, Member>;

/// A Kafka source in its cluster's task, and its collector's channel.
pub struct Member {
    source: KafkaSource,
    state: watch::Sender<SourceState>,
}

/// Adds `source`, publishing to `state`, to its cluster's task (started, its cycles timed into
/// `cycle`, if it is the first source on the cluster).
pub fn join(
    clusters: &Clusters,
    source: &KafkaSource,
    settings: &CollectorSettings,
    cycle: Histogram,
    state: watch::Sender<SourceState>,
) -> Membership<Member> {
    let address = (source.bootstrap_servers.clone(), source.security.clone());
    let member = Member { source: source.clone(), state };
    let (cluster, settings) = (address.clone(), settings.clone());
    clusters.join(&address, member, move |shared| {
        let span = info_span!("kafka_cluster", bootstrap = %cluster.0);
        tokio::spawn(run_cluster(cluster, settings, cycle, shared).instrument(span))
    })
}

/// One source's share of a cycle: its partitions, or why they could not be read.
pub type Outcome = Result<Arc<[PartitionOffsets]>, String>;

/// The sources waiting at the tail: each member's partitions with the log end it caught up to.
#[derive(Default)]
struct Waiting {
    members: HashMap<u64, (watch::Sender<SourceState>, tail::Ends)>,
}

impl Waiting {
    /// Every partition some member waits on, from the lowest end any of them waits at.
    fn partitions(&self) -> BTreeMap<Partition, i64> {
        let mut wanted: BTreeMap<Partition, i64> = BTreeMap::new();
        for (_, ends) in self.members.values() {
            for (topic, partition, end) in ends {
                let at = wanted.entry((topic.clone(), *partition)).or_insert(*end);
                *at = (*at).min(*end);
            }
        }
        wanted
    }

    /// Wakes every member a record past its end arrived for: its last reading's log ends move
    /// past the records, and it stops waiting (the offsets cycle takes over: there is lag now).
    fn wake(&mut self, records: &[TailRecord]) {
        let woken: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, (_, ends))| {
                records
                    .iter()
                    .any(|r| ends.iter().any(|(t, p, end)| *t == r.topic && *p == r.partition && r.offset >= *end))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in woken {
            if let Some((state, _)) = self.members.remove(&id) {
                state.send_modify(|state| {
                    if let Some((Reading::Offsets(partitions), at)) = &mut state.last_good {
                        *partitions = tail::advanced(partitions, records).into();
                        // The records were seen now: push latency counts from here.
                        *at = Instant::now();
                    }
                });
            }
        }
    }
}

/// Every source of a cluster: an offsets cycle each interval (and when one joins), and the tail.
async fn run_cluster(
    (bootstrap_servers, security): ClusterAddress,
    settings: CollectorSettings,
    cycle: Histogram,
    shared: Arc<PoolShared<Member>>,
) {
    let timeout = settings.timeout.0;
    let mut ticker = poll_ticker(settings.kafka_interval.0);
    let mut reader: Option<ClusterReader> = None;
    let mut committed = CommittedReader::new(&bootstrap_servers, security.as_ref(), timeout);
    let seen_at_tail = Arc::new(TailSeen::default());
    let mut tail = TailWatch::new(security.as_ref(), settings.tail_fetch_wait.0, timeout, seen_at_tail.clone());
    let mut waiting = Waiting::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shared.wake.notified() => {}
            () = seen_at_tail.notify.notified() => {
                waiting.wake(&seen_at_tail.take());
                continue;
            }
        }
        let Ok(members) = shared
            .members
            .lock()
            .map(|m| m.iter().map(|(id, m)| (*id, m.source.clone(), m.state.clone())).collect::<Vec<_>>())
        else {
            return;
        };
        if members.is_empty() {
            continue;
        }
        let sources: Vec<KafkaSource> = members.iter().map(|(_, s, _)| s.clone()).collect();
        let started = Instant::now();
        let offsets =
            offsets_cycle(&mut committed, reader.take(), &bootstrap_servers, security.as_ref(), timeout, sources);
        // Records that arrive during the cycle wake their sources now, and move the cycle's
        // (older) log ends past them, so a reading never goes back.
        let mut latest = Latest::default();
        let (kept, results) = serving_tail(offsets, &seen_at_tail, &mut waiting, &mut latest).await;
        let seen = latest.into_records();
        cycle.observe(started.elapsed().as_secs_f64());
        reader = kept;
        waiting.members.clear();
        for ((id, _, state), result) in members.into_iter().zip(results) {
            let result = result.map(|p| -> Arc<[PartitionOffsets]> {
                if seen.is_empty() { p } else { tail::advanced(&p, &seen).into() }
            });
            if let Ok(partitions) = &result
                && let Some(ends) = tail::idle_ends(partitions)
            {
                waiting.members.insert(id, (state.clone(), ends));
            }
            publish(&state, result.map(Reading::Offsets));
        }
        if let Some(reader) = &reader {
            tail.follow(&waiting.partitions(), |p| reader.leaders().address(p), TAIL_LINGER);
        }
    }
}

/// Runs `work` while waking the sources records arrive for (and keeping those records in `seen`):
/// an offsets cycle never delays a wake.
async fn serving_tail<T>(
    work: impl Future<Output = T>,
    seen_at_tail: &TailSeen,
    waiting: &mut Waiting,
    seen: &mut Latest,
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            () = seen_at_tail.notify.notified() => {
                let batch = seen_at_tail.take();
                waiting.wake(&batch);
                seen.extend(batch);
            }
        }
    }
}

/// One offsets cycle: the metadata, then the groups' committed offsets and the log ends side by
/// side, then every source's outcome, in order, with the reader to keep. The metadata request
/// runs on a blocking thread (librdkafka's calls block).
pub async fn offsets_cycle(
    committed: &mut CommittedReader,
    reader: Option<ClusterReader>,
    bootstrap: &str,
    security: Option<&KafkaConnection>,
    timeout: Duration,
    sources: Vec<KafkaSource>,
) -> (Option<ClusterReader>, Vec<Outcome>) {
    let fail_all = |count: usize, cause: String| (0..count).map(|_| Err(cause.clone())).collect();
    let count = sources.len();
    let (bootstrap, security) = (bootstrap.to_string(), security.cloned());
    let planned = tokio::task::spawn_blocking(move || {
        let reader = reader.map_or_else(|| ClusterReader::new(&bootstrap, security.as_ref(), timeout), Ok)?;
        let plan = reader.plan(&sources);
        Ok::<_, OffsetsError>((reader, plan, sources))
    })
    .await;
    let (mut reader, plan, sources) = match planned {
        Ok(Ok(planned)) => planned,
        Ok(Err(e)) => return (None, fail_all(count, e.to_string())),
        Err(e) => return (None, fail_all(count, format!("offsets cycle ended abnormally: {e}"))),
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => return (Some(reader), fail_all(count, e.to_string())),
    };
    let groups = plan.groups(&sources);
    let (commits, latest) = tokio::join!(committed.fetch(&groups), reader.latest(&plan));
    let results = reader
        .finish(&sources, plan, &commits, latest)
        .into_iter()
        .map(|r| r.map(Into::into).map_err(|e| e.to_string()))
        .collect();
    (Some(reader), results)
}
