//! One cluster's offsets cycle for every watched source: one Metadata request (librdkafka, whose
//! call blocks: it runs on a blocking thread), then the log ends ([`log_ends`](super::log_ends))
//! and the groups' committed offsets ([`committed`](super::committed)), put together into each
//! source's partitions. spinscale never joins the users' groups and never commits; it only reads
//! offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::{Metadata, MetadataTopic};
use spinscale_core::spec::kafka_connection::KafkaConnection;

use spinscale_core::engine::PartitionOffsets;

use super::committed::GroupCommits;
use super::log_ends::{Ends, LogEndReader};
use spinscale_core::spec::KafkaSource;

/// The longest wait between reconnects to a broker that is down, so a broker that is back is read
/// again within about one offsets cycle.
const RECONNECT_BACKOFF_MAX_MS: &str = "1000";

/// Why a source's offsets could not be read in one cycle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OffsetsError {
    /// librdkafka refused the client settings (or the connection's secret files).
    #[error("cannot create Kafka client: {0}")]
    Client(String),
    /// The cluster's Metadata request failed; every source of the cluster fails with it.
    #[error("metadata request failed: {0}")]
    Metadata(String),
    /// A topic the trigger names is not in the cluster's metadata.
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    /// `partitionLimitation` left none of the topic's partitions.
    #[error("topic {0:?} has no partitions left after partitionLimitation")]
    NoPartitions(String),
    /// The group's OffsetFetch failed as a whole.
    #[error("fetching committed offsets of group {group:?} failed: {cause}")]
    Committed {
        /// The consumer group.
        group: String,
        /// The client's error.
        cause: String,
    },
    /// The group's OffsetFetch failed for one partition.
    #[error("committed offset of {topic}/{partition} failed: {cause}")]
    PartitionCommitted {
        /// The partition's topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The broker's error for it.
        cause: String,
    },
    /// ListOffsets failed for a partition (its leader is down, for one); never read as lag 0.
    #[error("fetching the latest offset of {partition} failed: {cause}")]
    Latest {
        /// The partition, `topic/partition`.
        partition: String,
        /// The client's error.
        cause: String,
    },
}

/// A topic's partition.
pub type Partition = (Arc<str>, i32);

/// What one cycle reads, from the cluster's metadata: each source's partitions (or why it has
/// none) and each partition's leader.
pub struct Plan {
    wanted: Vec<Result<Vec<Partition>, OffsetsError>>,
    leaders: Leaders,
}

/// Each partition's leader and where it listens, from one Metadata answer.
#[derive(Default)]
pub struct Leaders {
    of: HashMap<Partition, i32>,
    addresses: HashMap<i32, Arc<str>>,
}

impl Leaders {
    fn read(metadata: &Metadata) -> Self {
        let of = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(move |p| ((Arc::from(t.name()), p.id()), p.leader())))
            .collect();
        let addresses = metadata
            .brokers()
            .iter()
            .map(|b| {
                let host = b.host();
                let address =
                    if host.contains(':') { format!("[{host}]:{}", b.port()) } else { format!("{host}:{}", b.port()) };
                (b.id(), Arc::from(address))
            })
            .collect();
        Self { of, addresses }
    }

    /// Where the leader of `partition` listens (`host:port`, as the broker advertises it).
    pub fn address(&self, partition: &Partition) -> Option<Arc<str>> {
        self.addresses.get(self.of.get(partition)?).cloned()
    }
}

impl Plan {
    /// Each group's partitions: the union of its sources' partitions.
    pub fn groups(&self, sources: &[KafkaSource]) -> BTreeMap<String, BTreeSet<Partition>> {
        let mut groups: BTreeMap<String, BTreeSet<Partition>> = BTreeMap::new();
        for (source, wanted) in sources.iter().zip(&self.wanted) {
            groups.entry(source.consumer_group.clone()).or_default().extend(wanted.iter().flatten().cloned());
        }
        groups
    }
}

/// Reads the offsets of every watched source of one cluster. Remembers commits between cycles
/// for `excludePersistentLag`.
pub struct ClusterReader {
    timeout: Duration,
    /// Metadata and ListOffsets; never joins a group.
    cluster: BaseConsumer,
    commits_seen: HashMap<(String, Partition), (Option<i64>, Instant)>,
    /// Each partition's log end at the last cycle: it never moves back unless the topic was deleted.
    ends_seen: HashMap<Partition, i64>,
    /// The leaders of the last cycle's metadata.
    leaders: Leaders,
    log_ends: LogEndReader,
}

impl ClusterReader {
    /// A reader for the cluster at `bootstrap_servers`, each request bounded by `timeout`.
    pub fn new(
        bootstrap_servers: &str,
        security: Option<&KafkaConnection>,
        timeout: Duration,
    ) -> Result<Self, OffsetsError> {
        let cluster = client(bootstrap_servers, security, "spinscale-offsets", timeout)?;
        Ok(Self {
            timeout,
            cluster,
            log_ends: LogEndReader::new(security, timeout),
            commits_seen: HashMap::new(),
            ends_seen: HashMap::new(),
            leaders: Leaders::default(),
        })
    }

    /// A cycle's first step: the cluster's metadata, read into what each source counts.
    pub fn plan(&self, sources: &[KafkaSource]) -> Result<Plan, OffsetsError> {
        // Any broker can answer Metadata. A request that went to a broker just lost fails the whole
        // cycle, every source of the cluster with it: ask once more, librdkafka then picks another.
        let fetch = || self.cluster.fetch_metadata(None, self.timeout);
        let metadata = fetch().or_else(|_| fetch()).map_err(|e| OffsetsError::Metadata(kafka_cause(&e)))?;
        // What each source counts; an empty `topic` first asks for every partition of the cluster.
        let by_name: HashMap<&str, &MetadataTopic> = metadata.topics().iter().map(|t| (t.name(), t)).collect();
        let wanted = sources.iter().map(|s| partitions_of(&metadata, &by_name, s)).collect();
        Ok(Plan { wanted, leaders: Leaders::read(&metadata) })
    }

    /// A cycle's second step, beside the committed offsets: the log end of every partition the
    /// plan's sources count, one ListOffsets per leader.
    pub async fn latest(&mut self, plan: &Plan) -> Ends {
        let all: BTreeSet<&Partition> = plan.wanted.iter().flatten().flatten().collect();
        self.log_ends.fetch(&plan.leaders, all).await
    }

    /// A cycle's last step: each source's partitions with their committed (read by
    /// [`CommittedReader`](super::committed::CommittedReader) for the plan's groups) and latest
    /// offsets, in order.
    pub fn finish(
        &mut self,
        sources: &[KafkaSource],
        plan: Plan,
        committed: &HashMap<String, GroupCommits>,
        mut latest: Ends,
    ) -> Vec<Result<Vec<PartitionOffsets>, OffsetsError>> {
        let now = Instant::now();
        let Plan { wanted, leaders } = plan;
        refuse_ends_gone_back(&mut self.ends_seen, &mut latest);
        let results = sources
            .iter()
            .zip(wanted)
            .map(|(source, wanted)| {
                let committed = committed.get(&source.consumer_group).ok_or_else(|| OffsetsError::Committed {
                    group: source.consumer_group.clone(),
                    cause: "no answer".into(),
                })?;
                let committed = committed.as_ref().map_err(Clone::clone)?;
                let mut partitions = wanted?;
                if source.topics.is_empty() {
                    // The group's topics: those it has committed on.
                    let topics: BTreeSet<Arc<str>> = partitions
                        .iter()
                        .filter(|p| committed.get(*p).is_some_and(Option::is_some))
                        .map(|p| p.0.clone())
                        .collect();
                    partitions.retain(|p| topics.contains(&p.0));
                }
                // An error is not a missing partition (KEDA's lag 0): it would read as a silent 0.
                let failed = partitions.iter().find_map(|p| match latest.get(p) {
                    Some(Err(cause)) => Some((p, cause)),
                    _ => None,
                });
                if let Some((p, cause)) = failed {
                    return Err(OffsetsError::Latest { partition: format!("{}/{}", p.0, p.1), cause: cause.clone() });
                }
                Ok(self.assemble(&source.consumer_group, &partitions, committed, &latest, now))
            })
            .collect();
        self.commits_seen.retain(|_, (_, seen)| now.saturating_duration_since(*seen) < Duration::from_secs(3600));
        self.leaders = leaders;
        results
    }

    /// The leaders of the last finished cycle.
    pub fn leaders(&self) -> &Leaders {
        &self.leaders
    }

    fn assemble(
        &mut self,
        group: &str,
        partitions: &[Partition],
        committed: &HashMap<Partition, Option<i64>>,
        latest: &HashMap<Partition, Result<i64, String>>,
        now: Instant,
    ) -> Vec<PartitionOffsets> {
        partitions
            .iter()
            .map(|p| {
                let offset = committed.get(p).copied().flatten();
                let key = (group.to_string(), p.clone());
                let since = match self.commits_seen.get(&key) {
                    Some((seen, since)) if *seen == offset => *since,
                    _ => now,
                };
                self.commits_seen.insert(key, (offset, since));
                PartitionOffsets {
                    topic: p.0.clone(),
                    partition: p.1,
                    committed: offset,
                    committed_unchanged_for: now.saturating_duration_since(since),
                    latest: latest.get(p).and_then(|l| l.as_ref().ok()).copied(),
                }
            })
            .collect()
    }
}

/// The partitions `source` counts: of its topics (after `partitionLimitation`), or of every
/// non-internal topic when it names none (narrowed to the group's topics once commits are known).
fn partitions_of(
    metadata: &Metadata,
    by_name: &HashMap<&str, &MetadataTopic>,
    source: &KafkaSource,
) -> Result<Vec<Partition>, OffsetsError> {
    if source.topics.is_empty() {
        return Ok(metadata
            .topics()
            .iter()
            .filter(|t| !t.name().starts_with("__") && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(move |p| (Arc::from(t.name()), p.id())))
            .collect());
    }
    let mut partitions = Vec::new();
    for name in &source.topics {
        let topic = by_name.get(name.as_str()).copied();
        let Some(topic) = topic.filter(|t| t.error().is_none() && !t.partitions().is_empty()) else {
            return Err(OffsetsError::TopicNotFound(name.clone()));
        };
        let kept: Vec<Partition> = topic
            .partitions()
            .iter()
            .map(rdkafka::metadata::MetadataPartition::id)
            .filter(|id| source.partition_limitation.as_ref().is_none_or(|only| only.contains(*id)))
            .map(|id| (Arc::from(name.as_str()), id))
            .collect();
        if kept.is_empty() {
            return Err(OffsetsError::NoPartitions(name.clone()));
        }
        partitions.extend(kept);
    }
    Ok(partitions)
}

fn client(
    bootstrap_servers: &str,
    security: Option<&KafkaConnection>,
    group: &str,
    timeout: Duration,
) -> Result<BaseConsumer, OffsetsError> {
    read_only_config(bootstrap_servers, security, group)
        .map_err(OffsetsError::Client)?
        .set("socket.timeout.ms", timeout.as_millis().max(10).to_string())
        .create()
        .map_err(|e| OffsetsError::Client(e.to_string()))
}

/// A consumer that only reads: it never joins `group` (no subscribe), never commits and never
/// creates topics. librdkafka needs the group id for OffsetFetch and for `assign`. With a named
/// connection, its security settings (and the secrets from their files) are added.
pub(super) fn read_only_config(
    bootstrap_servers: &str,
    security: Option<&KafkaConnection>,
    group: &str,
) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("allow.auto.create.topics", "false")
        // librdkafka's default grows to 10 s while a broker is down: a broker that is back would
        // stay unread for up to that long. A few connections retried each second cost nothing.
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .set("client.id", "spinscale");
    if let Some(security) = security {
        super::kafka_security::apply(security, &mut config)?;
    }
    Ok(config)
}

fn kafka_cause(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("{e} ({code:?})"),
        None => e.to_string(),
    }
}

/// A log end that moved back means the topic was deleted (a broker may still list it, empty, for
/// a moment, or it was made again): that cycle fails for the partition instead of reading as an
/// empty log, which would be lag 0 and a silent "inactive". The next cycle starts from the new end.
fn refuse_ends_gone_back(seen: &mut HashMap<Partition, i64>, latest: &mut HashMap<Partition, Result<i64, String>>) {
    seen.retain(|p, _| latest.contains_key(p));
    for (partition, result) in latest.iter_mut() {
        let Ok(end) = *result else { continue };
        if let Some(before) = seen.insert(partition.clone(), end)
            && before > end
        {
            *result =
                Err(format!("its log end went back from {before} to {end} (the topic was deleted or made again)"));
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::CommitMode;
    use rdkafka::mocking::{MockCluster, MockCoordinator};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{Offset, TopicPartitionList};

    use super::super::cluster::{Outcome, offsets_cycle};
    use super::super::committed::CommittedReader;
    use super::*;

    async fn cycle(
        committed: &mut CommittedReader,
        reader: ClusterReader,
        sources: &[KafkaSource],
    ) -> (Option<ClusterReader>, Vec<Outcome>) {
        offsets_cycle(committed, Some(reader), "", None, Duration::from_millis(500), sources.to_vec()).await
    }

    fn source(bootstrap: &str, topic: &str) -> KafkaSource {
        KafkaSource {
            bootstrap_servers: bootstrap.to_string(),
            consumer_group: "g".into(),
            topics: vec![topic.to_string()],
            partition_limitation: None,
            connection: None,
            security: None,
        }
    }

    /// Found by `tests/faults.rs`: a partition whose leader was down read as missing (lag 0, a
    /// silent "inactive"), and the first lookup after it went down failed every source of the cluster.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_that_is_down_fails_only_the_partitions_it_leads() {
        let mock = MockCluster::new(3).unwrap();
        let bootstrap = mock.bootstrap_servers();
        for (topic, leader) in [("a", 1), ("b", 2)] {
            mock.create_topic(topic, 1, 1).unwrap();
            mock.partition_leader(topic, 0, Some(leader)).unwrap();
        }
        mock.coordinator(MockCoordinator::Group("g".into()), 3).unwrap();
        let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
        for topic in ["a", "b"] {
            for _ in 0..5 {
                producer.send(BaseRecord::<(), _>::to(topic).partition(0).payload("x")).map_err(|(e, _)| e).unwrap();
            }
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let committer: BaseConsumer = read_only_config(&bootstrap, None, "g").unwrap().create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("a", 0, Offset::Offset(1)).unwrap();
        tpl.add_partition_offset("b", 0, Offset::Offset(2)).unwrap();
        committer.commit(&tpl, CommitMode::Sync).unwrap();

        let mut reader = ClusterReader::new(&bootstrap, None, Duration::from_millis(500)).unwrap();
        let mut committed = CommittedReader::new(&bootstrap, None, Duration::from_millis(500));
        let sources = [source(&bootstrap, "a"), source(&bootstrap, "b")];
        let (kept, healthy) = cycle(&mut committed, reader, &sources).await;
        reader = kept.unwrap();
        assert_eq!(healthy[0].as_ref().unwrap()[0].latest, Some(5));
        mock.broker_down(1).unwrap();
        for _ in 0..3 {
            let (kept, results) = cycle(&mut committed, reader, &sources).await;
            reader = kept.unwrap();
            let [a, b] = <[_; 2]>::try_from(results).unwrap();
            match a {
                Err(e) => assert!(e.starts_with("fetching the latest offset of a/0 failed"), "{e}"),
                other => panic!("a partition whose leader is down is an error, not lag 0: {other:?}"),
            }
            let b = b.expect("a topic led by a healthy broker still counts");
            assert_eq!((b[0].committed, b[0].latest), (Some(2), Some(5)));
        }
    }

    #[test]
    fn a_log_end_that_goes_back_fails_that_cycle_only() {
        let p: Partition = (Arc::from("payments"), 0);
        let mut seen = HashMap::new();
        let cycle = |seen: &mut HashMap<Partition, i64>, end: i64| {
            let mut latest = HashMap::from([(p.clone(), Ok(end))]);
            refuse_ends_gone_back(seen, &mut latest);
            latest.remove(&p).unwrap()
        };
        assert_eq!(cycle(&mut seen, 10), Ok(10));
        assert_eq!(cycle(&mut seen, 12), Ok(12));
        let gone = cycle(&mut seen, 0).unwrap_err();
        assert!(gone.contains("went back from 12 to 0"), "{gone}");
        assert_eq!(cycle(&mut seen, 0), Ok(0), "the next cycle reads the new log");
        let mut none = HashMap::new();
        refuse_ends_gone_back(&mut seen, &mut none);
        assert!(seen.is_empty(), "partitions no longer read are forgotten");
    }
}
