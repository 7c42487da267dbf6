//! Committed offsets of every watched group of one cluster, without a client per group: each
//! group's coordinator is found once (FindCoordinator, many keys per request where the broker
//! offers v4), and each coordinator is asked for all its groups at once (OffsetFetch v8), or with
//! one request per group written back to back on one connection where it offers only older
//! versions. Threads and connections grow with brokers, not with groups.
//!
//! spinscale never joins a group and never commits: OffsetFetch only reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{FindCoordinatorRequest, GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use spinscale_core::spec::kafka_connection::KafkaConnection;

use super::kafka::{OffsetsError, Partition};
use super::kafka_wire::{BrokerConnection, error_name, shown};

/// How the offsets reader calls itself to brokers.
const CLIENT_ID: &str = "spinscale-offsets";
/// Groups asked in one batched OffsetFetch.
const GROUPS_PER_REQUEST: usize = 500;
/// Kafka's "the coordinator moved or is not ready" codes: the group's coordinator is looked up again.
const COORDINATOR_MOVED: [i16; 3] = [14, 15, 16];
/// GROUP_ID_NOT_FOUND: a group that does not exist has no commits.
const GROUP_ID_NOT_FOUND: i16 = 69;

/// Each partition's committed offset (`None`: no commit), of one group.
pub type Committed = HashMap<Partition, Option<i64>>;

/// What one group's fetch gave.
pub type GroupCommits = Result<Committed, OffsetsError>;

/// Reads committed offsets on one cluster, keeping a connection per broker it talks to.
pub struct CommittedReader {
    bootstrap: Vec<String>,
    security: Option<KafkaConnection>,
    timeout: Duration,
    connections: HashMap<String, BrokerConnection>,
    coordinators: HashMap<String, String>,
}

impl CommittedReader {
    /// A reader for the cluster at `bootstrap_servers` (a comma-separated list), each request
    /// bounded by `timeout`.
    pub fn new(bootstrap_servers: &str, security: Option<&KafkaConnection>, timeout: Duration) -> Self {
        let bootstrap = bootstrap_servers
            .split(',')
            .map(|s| s.trim().rsplit("://").next().unwrap_or_default().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Self {
            bootstrap,
            security: security.cloned(),
            timeout,
            connections: HashMap::new(),
            coordinators: HashMap::new(),
        }
    }

    /// The committed offsets of each group's partitions, or why they could not be read. A group
    /// whose coordinator moved is looked up and asked again once in the same call.
    pub async fn fetch(&mut self, wanted: &BTreeMap<String, BTreeSet<Partition>>) -> HashMap<String, GroupCommits> {
        self.coordinators.retain(|group, _| wanted.contains_key(group));
        let mut results: HashMap<String, GroupCommits> =
            wanted.iter().filter(|(_, p)| p.is_empty()).map(|(g, _)| (g.clone(), Ok(Committed::new()))).collect();
        let groups: Vec<(String, Vec<Partition>)> = wanted
            .iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(g, p)| (g.clone(), p.iter().cloned().collect()))
            .collect();
        results.extend(self.fetch_once(&groups).await);
        let moved: Vec<(String, Vec<Partition>)> = groups
            .into_iter()
            .filter(|(group, _)| {
                results.get(group).is_some_and(Result::is_err) && !self.coordinators.contains_key(group)
            })
            .collect();
        if !moved.is_empty() {
            results.extend(self.fetch_once(&moved).await);
        }
        results
    }

    async fn fetch_once(&mut self, groups: &[(String, Vec<Partition>)]) -> HashMap<String, GroupCommits> {
        let mut results = HashMap::new();
        let unknown: Vec<String> =
            groups.iter().map(|(g, _)| g).filter(|g| !self.coordinators.contains_key(*g)).cloned().collect();
        if !unknown.is_empty() {
            for (group, found) in self.find_coordinators(&unknown).await {
                match found {
                    Ok(address) => {
                        self.coordinators.insert(group, address);
                    }
                    Err(cause) => {
                        results.insert(group.clone(), Err(OffsetsError::Committed { group, cause }));
                    }
                }
            }
        }
        let mut per_coordinator: BTreeMap<String, Vec<(String, Vec<Partition>)>> = BTreeMap::new();
        for (group, partitions) in groups {
            if let Some(address) = self.coordinators.get(group) {
                per_coordinator.entry(address.clone()).or_default().push((group.clone(), partitions.clone()));
            }
        }
        let work = per_coordinator.into_iter().map(|(address, groups)| {
            let connection = self.connections.remove(&address);
            let (security, timeout) = (self.security.clone(), self.timeout);
            async move {
                let connection = match connection {
                    Some(open) => Ok(open),
                    None => BrokerConnection::open(&address, CLIENT_ID, security.as_ref(), timeout).await,
                };
                match connection {
                    Ok(mut connection) => {
                        let answer = offset_fetch(&mut connection, &groups).await;
                        let keep = answer.is_ok().then_some(connection);
                        (address, groups, answer, keep)
                    }
                    Err(cause) => (address, groups, Err(cause), None),
                }
            }
        });
        for (address, groups, answer, connection) in futures_util::future::join_all(work).await {
            if let Some(connection) = connection {
                self.connections.insert(address.clone(), connection);
            }
            match answer {
                Ok(answers) => {
                    for (group, answer) in answers {
                        if let Err(code) = &answer
                            && COORDINATOR_MOVED.contains(code)
                        {
                            self.coordinators.remove(&group);
                        }
                        let answer = answer.map_err(|code| OffsetsError::Committed {
                            group: group.clone(),
                            cause: format!("coordinator {address} answered {}", error_name(code)),
                        });
                        results.insert(group, answer.and_then(|r| r));
                    }
                }
                Err(cause) => {
                    for (group, _) in groups {
                        self.coordinators.remove(&group);
                        let cause = format!("coordinator {address}: {cause}");
                        results.insert(group.clone(), Err(OffsetsError::Committed { group, cause }));
                    }
                }
            }
        }
        results
    }

    /// Each group's coordinator address, asked of the first bootstrap broker that answers. A kept
    /// connection that fails (the broker closed it while idle) is opened again once.
    async fn find_coordinators(&mut self, groups: &[String]) -> Vec<(String, Result<String, String>)> {
        let mut last_error = "no bootstrap server".to_string();
        for address in self.bootstrap.clone() {
            let kept = self.connections.remove(&address);
            for connection in [kept, None] {
                let reused = connection.is_some();
                let opened = match connection {
                    Some(open) => Ok(open),
                    None => BrokerConnection::open(&address, CLIENT_ID, self.security.as_ref(), self.timeout).await,
                };
                let mut connection = match opened {
                    Ok(open) => open,
                    Err(e) => {
                        last_error = e;
                        break;
                    }
                };
                match find_on(&mut connection, groups).await {
                    Ok(found) => {
                        self.connections.insert(address, connection);
                        return found;
                    }
                    Err(e) => last_error = format!("{address}: {e}"),
                }
                if !reused {
                    break;
                }
            }
        }
        let cause = format!("finding the group coordinator failed: {last_error}");
        groups.iter().map(|g| (g.clone(), Err(cause.clone()))).collect()
    }
}

async fn find_on(
    connection: &mut BrokerConnection,
    groups: &[String],
) -> Result<Vec<(String, Result<String, String>)>, String> {
    let version = connection.version::<FindCoordinatorRequest>(0..=4).ok_or("the broker has no FindCoordinator")?;
    let address = |host: &StrBytes, port: i32| format!("{}:{port}", host.as_str());
    let refused = |code: i16, message: Option<&StrBytes>| {
        format!("no coordinator: {} {}", error_name(code), shown(message.map(StrBytes::as_str).unwrap_or_default()))
    };
    if version >= 4 {
        let mut found = Vec::with_capacity(groups.len());
        for chunk in groups.chunks(GROUPS_PER_REQUEST) {
            let keys = chunk.iter().map(|g| StrBytes::from_string(g.clone())).collect();
            let answer =
                connection.call(FindCoordinatorRequest::default().with_coordinator_keys(keys), version).await?;
            for c in answer.coordinators {
                let result = if c.error_code == 0 {
                    Ok(address(&c.host, c.port))
                } else {
                    Err(refused(c.error_code, c.error_message.as_ref()))
                };
                found.push((c.key.to_string(), result));
            }
        }
        return Ok(found);
    }
    let requests =
        groups.iter().map(|g| FindCoordinatorRequest::default().with_key(StrBytes::from_string(g.clone()))).collect();
    let answers = connection.call_many(requests, version).await?;
    Ok(groups
        .iter()
        .zip(answers)
        .map(|(group, a)| {
            let result = if a.error_code == 0 {
                Ok(address(&a.host, a.port))
            } else {
                Err(refused(a.error_code, a.error_message.as_ref()))
            };
            (group.clone(), result)
        })
        .collect())
}

/// Every group's answer from its coordinator: its commits, or the group's error code.
async fn offset_fetch(
    connection: &mut BrokerConnection,
    groups: &[(String, Vec<Partition>)],
) -> Result<Vec<(String, Result<GroupCommits, i16>)>, String> {
    let version = connection.version::<OffsetFetchRequest>(1..=8).ok_or("the coordinator has no OffsetFetch v1+")?;
    let group_id = |g: &String| GroupId(StrBytes::from_string(g.clone()));
    if version >= 8 {
        let mut out = Vec::with_capacity(groups.len());
        for chunk in groups.chunks(GROUPS_PER_REQUEST) {
            let request = OffsetFetchRequest::default().with_groups(
                chunk
                    .iter()
                    .map(|(g, partitions)| {
                        let topics = by_topic(partitions)
                            .map(|(topic, indexes)| {
                                OffsetFetchRequestTopics::default().with_name(topic).with_partition_indexes(indexes)
                            })
                            .collect();
                        OffsetFetchRequestGroup::default().with_group_id(group_id(g)).with_topics(Some(topics))
                    })
                    .collect(),
            );
            let answer = connection.call(request, version).await?;
            let asked: BTreeSet<&str> = chunk.iter().map(|(g, _)| g.as_str()).collect();
            for group in answer.groups.into_iter().filter(|g| asked.contains(g.group_id.0.as_str())) {
                let name = group.group_id.0.to_string();
                let partitions = group.topics.iter().flat_map(|t| {
                    let topic: Arc<str> = Arc::from(t.name.0.as_str());
                    t.partitions
                        .iter()
                        .map(move |p| (topic.clone(), p.partition_index, p.committed_offset, p.error_code))
                });
                out.push((name.clone(), group_answer(&name, group.error_code, partitions)));
            }
        }
        return Ok(out);
    }
    let requests = groups
        .iter()
        .map(|(g, partitions)| {
            let topics = by_topic(partitions)
                .map(|(topic, indexes)| {
                    OffsetFetchRequestTopic::default().with_name(topic).with_partition_indexes(indexes)
                })
                .collect();
            OffsetFetchRequest::default().with_group_id(group_id(g)).with_topics(Some(topics))
        })
        .collect();
    let answers: Vec<OffsetFetchResponse> = connection.call_many(requests, version).await?;
    Ok(groups
        .iter()
        .zip(answers)
        .map(|((group, _), answer)| {
            let partitions = answer.topics.iter().flat_map(|t| {
                let topic: Arc<str> = Arc::from(t.name.0.as_str());
                t.partitions.iter().map(move |p| (topic.clone(), p.partition_index, p.committed_offset, p.error_code))
            });
            (group.clone(), group_answer(group, answer.error_code, partitions))
        })
        .collect())
}

/// `partitions` (sorted) as the wire's topic names with their partition indexes.
fn by_topic(partitions: &[Partition]) -> impl Iterator<Item = (TopicName, Vec<i32>)> + '_ {
    partitions
        .chunk_by(|a, b| a.0 == b.0)
        .map(|same| (TopicName(StrBytes::from_string(same[0].0.to_string())), same.iter().map(|p| p.1).collect()))
}

/// One group's answer: its error code, or its commits (a partition's error fails the group).
fn group_answer(
    group: &str,
    error_code: i16,
    partitions: impl Iterator<Item = (Arc<str>, i32, i64, i16)>,
) -> Result<GroupCommits, i16> {
    match error_code {
        0 => {}
        GROUP_ID_NOT_FOUND => return Ok(Ok(Committed::new())),
        code if COORDINATOR_MOVED.contains(&code) => return Err(code),
        code => {
            return Ok(Err(OffsetsError::Committed { group: group.to_string(), cause: error_name(code) }));
        }
    }
    let mut committed = Committed::new();
    for (topic, partition, offset, code) in partitions {
        if code != 0 {
            return Ok(Err(OffsetsError::PartitionCommitted {
                topic: topic.to_string(),
                partition,
                cause: error_name(code),
            }));
        }
        committed.insert((topic, partition), (offset >= 0).then_some(offset));
    }
    Ok(Ok(committed))
}

#[cfg(test)]
mod tests {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::mocking::{MockCluster, MockCoordinator};
    use rdkafka::{Offset, TopicPartitionList};

    use super::*;

    fn commit(bootstrap: &str, group: &str, offset: i64) {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Offset(offset)).unwrap();
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    }

    /// Each group gets its own commits from one reader; a group that never committed has none; a
    /// coordinator that moves is found again within the same fetch, and one that is down fails only
    /// its groups, naming them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_groups_from_one_reader_as_coordinators_move_and_fail() {
        let mock = MockCluster::new(3).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let bootstrap = mock.bootstrap_servers();
        for (group, broker) in [("g1", 1), ("g2", 2), ("g3", 3)] {
            mock.coordinator(MockCoordinator::Group(group.into()), broker).unwrap();
        }
        commit(&bootstrap, "g1", 4);
        commit(&bootstrap, "g2", 7);
        let wanted: BTreeMap<String, BTreeSet<Partition>> =
            ["g1", "g2", "g3"].iter().map(|g| (g.to_string(), BTreeSet::from([(Arc::from("t"), 0)]))).collect();
        let mut reader = CommittedReader::new(&bootstrap, None, Duration::from_secs(2));
        let read = |answers: &HashMap<String, GroupCommits>, group: &str| {
            answers[group].as_ref().map(|c| c.get(&(Arc::from("t"), 0)).copied().flatten()).map_err(ToString::to_string)
        };
        let answers = reader.fetch(&wanted).await;
        assert_eq!(
            (read(&answers, "g1"), read(&answers, "g2"), read(&answers, "g3")),
            (Ok(Some(4)), Ok(Some(7)), Ok(None))
        );

        mock.coordinator(MockCoordinator::Group("g1".into()), 2).unwrap();
        let answers = reader.fetch(&wanted).await;
        assert_eq!(read(&answers, "g1"), Ok(Some(4)), "found on its new coordinator in the same fetch");

        mock.broker_down(3).unwrap();
        let answers = reader.fetch(&wanted).await;
        assert_eq!((read(&answers, "g1"), read(&answers, "g2")), (Ok(Some(4)), Ok(Some(7))));
        let down = read(&answers, "g3").unwrap_err();
        assert!(down.contains("\"g3\""), "{down}");
    }
}
