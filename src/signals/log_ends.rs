//! Kafka log ends of many partitions: one ListOffsets ("latest") per partition leader, the leaders
//! asked in parallel over kept connections, so a broker that is down fails only the partitions it
//! leads. Spoken with the `kafka-protocol` codecs, like the committed offsets: librdkafka matched
//! each answered partition to the asked list by a linear search, quadratic in partitions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, ListOffsetsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use spinscale_core::spec::kafka_connection::KafkaConnection;

use super::kafka::{Leaders, Partition};
use super::kafka_wire::{BrokerConnection, error_name};

/// How the log-end reader calls itself to brokers.
const CLIENT_ID: &str = "spinscale-log-ends";
/// ListOffsets "latest": the timestamp that asks for the log end.
const LATEST: i64 = -1;

/// Each partition's log end, or why it is unknown.
pub type Ends = HashMap<Partition, Result<i64, String>>;

/// Reads log ends on one cluster, keeping a connection per leader.
pub struct LogEndReader {
    security: Option<KafkaConnection>,
    timeout: Duration,
    connections: HashMap<Arc<str>, BrokerConnection>,
}

impl LogEndReader {
    /// A reader whose requests (and connecting) are each bounded by `timeout`.
    pub fn new(security: Option<&KafkaConnection>, timeout: Duration) -> Self {
        Self { security: security.cloned(), timeout, connections: HashMap::new() }
    }

    /// The log end of every partition of `partitions`, at the leader `leaders` names. A kept
    /// connection that fails (the broker closed it while idle) is opened again once.
    pub async fn fetch<'a>(&mut self, leaders: &Leaders, partitions: impl IntoIterator<Item = &'a Partition>) -> Ends {
        let mut ends = Ends::new();
        let mut per_leader: BTreeMap<Arc<str>, Vec<Partition>> = BTreeMap::new();
        for p in partitions {
            match leaders.address(p) {
                Some(leader) => per_leader.entry(leader).or_default().push(p.clone()),
                None => {
                    ends.insert(p.clone(), Err("no leader in the cluster's metadata".into()));
                }
            }
        }
        // Connections to brokers that lead nothing asked any more are closed.
        self.connections.retain(|address, _| per_leader.contains_key(address));
        let work = per_leader.into_iter().map(|(leader, partitions)| {
            let kept = self.connections.remove(&leader);
            let (security, timeout) = (self.security.clone(), self.timeout);
            async move {
                let reused = kept.is_some();
                let mut answer = ask(kept, &leader, security.as_ref(), timeout, &partitions).await;
                if reused && answer.is_err() {
                    answer = ask(None, &leader, security.as_ref(), timeout, &partitions).await;
                }
                (leader, partitions, answer)
            }
        });
        for (leader, partitions, answer) in futures_util::future::join_all(work).await {
            match answer {
                Ok((connection, answer)) => {
                    self.connections.insert(leader, connection);
                    ends.extend(read_answer(&partitions, &answer));
                }
                Err(cause) => {
                    let cause = format!("leader {leader}: {cause}");
                    ends.extend(partitions.into_iter().map(|p| (p, Err(cause.clone()))));
                }
            }
        }
        ends
    }
}

/// One ListOffsets for `partitions` on `connection` (or a new one to `leader`).
async fn ask(
    connection: Option<BrokerConnection>,
    leader: &str,
    security: Option<&KafkaConnection>,
    timeout: Duration,
    partitions: &[Partition],
) -> Result<(BrokerConnection, ListOffsetsResponse), String> {
    let mut connection = match connection {
        Some(open) => open,
        None => BrokerConnection::open(leader, CLIENT_ID, security, timeout).await?,
    };
    // 1 is the first with one offset per partition; 6 on carry tagged fields.
    let version = connection.version::<ListOffsetsRequest>(1..=5).ok_or("the broker has no ListOffsets v1 to v5")?;
    let answer = connection.call(request(partitions), version).await?;
    Ok((connection, answer))
}

fn request(partitions: &[Partition]) -> ListOffsetsRequest {
    let mut topics: BTreeMap<&Arc<str>, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics
            .entry(topic)
            .or_default()
            .push(ListOffsetsPartition::default().with_partition_index(*partition).with_timestamp(LATEST));
    }
    let topics = topics
        .into_iter()
        .map(|(topic, partitions)| {
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(topics)
}

/// Each asked partition's end from `answer`; one it left out is an error, never a missing
/// partition (KEDA's lag 0, a silent "inactive").
fn read_answer(asked: &[Partition], answer: &ListOffsetsResponse) -> Ends {
    let mut answered: HashMap<(&str, i32), Result<i64, String>> = HashMap::new();
    for topic in &answer.topics {
        for p in &topic.partitions {
            let end = match p.error_code {
                0 if p.offset >= 0 => Ok(p.offset),
                0 => Err(format!("the broker returned no offset ({})", p.offset)),
                code => Err(error_name(code)),
            };
            answered.insert((&**topic.name, p.partition_index), end);
        }
    }
    asked
        .iter()
        .map(|p| {
            let end = answered.remove(&(&*p.0, p.1)).unwrap_or_else(|| Err("the broker did not answer for it".into()));
            (p.clone(), end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};

    use super::*;

    #[test]
    fn every_asked_partition_gets_its_end_or_why_not() {
        let part = |i: i32, error_code: i16, offset: i64| {
            ListOffsetsPartitionResponse::default()
                .with_partition_index(i)
                .with_error_code(error_code)
                .with_offset(offset)
        };
        let answer = ListOffsetsResponse::default().with_topics(vec![
            ListOffsetsTopicResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![part(0, 0, 42), part(1, 6, -1), part(2, 0, -1)]),
        ]);
        let asked: Vec<Partition> = (0..4).map(|i| (Arc::from("t"), i)).collect();
        let ends = read_answer(&asked, &answer);
        assert_eq!(ends[&asked[0]], Ok(42));
        assert_eq!(ends[&asked[1]], Err("NotLeaderOrFollower".to_string()));
        assert!(ends[&asked[2]].as_ref().is_err_and(|e| e.contains("no offset")), "{:?}", ends[&asked[2]]);
        assert!(ends[&asked[3]].as_ref().is_err_and(|e| e.contains("did not answer")), "{:?}", ends[&asked[3]]);
    }

    #[test]
    fn one_request_asks_each_topic_once_for_its_latest_offsets() {
        let asked: Vec<Partition> = vec![(Arc::from("a"), 0), (Arc::from("b"), 3), (Arc::from("a"), 1)];
        let request = request(&asked);
        assert_eq!(request.replica_id, BrokerId(-1));
        let topics: Vec<(&str, Vec<(i32, i64)>)> = request
            .topics
            .iter()
            .map(|t| (&**t.name, t.partitions.iter().map(|p| (p.partition_index, p.timestamp)).collect()))
            .collect();
        assert_eq!(topics, [("a", vec![(0, LATEST), (1, LATEST)]), ("b", vec![(3, LATEST)])]);
    }
}
