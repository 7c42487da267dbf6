//! One broker's share of a cluster's tail: a loop of Fetch requests for every partition the tail
//! follows that this broker leads, each from its position (at first the log end a source caught
//! up to). A partition whose high watermark passes its position has a new record: it goes to
//! [`TailSeen`] at once, and the position moves to the new end.
//!
//! Only high watermarks are read, never records: each partition asks for one byte, which still
//! wakes a fetch the broker holds until a record arrives. Every request is a full fetch (no
//! KIP-227 session), so its size grows with the partitions the broker leads, not with apps.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use spinscale_core::spec::kafka_connection::KafkaConnection;
use tokio::sync::Notify;
use tracing::{Instrument, debug, warn};

use super::kafka::Partition;
use super::kafka_wire::{BrokerConnection, error_name};
use super::tail::TailSeen;

/// How the tail calls itself to brokers.
const CLIENT_ID: &str = "spinscale-tail";
/// Fetch versions it speaks: from 4 (a high watermark per partition) to 11. 12 is the last that
/// names topics (13 on name them by id), but its answers carry tagged fields, and tansu 0.6 sends
/// one there that only 16 defines, which the codec refuses.
const VERSIONS: RangeInclusive<i16> = 4..=11;
/// How long a fetch loop waits after a failed fetch (the broker down, or busy).
const RETRY: Duration = Duration::from_millis(250);
/// How long a partition the broker refused for good (no READ permission, say) is left to the
/// offsets poll, and how long a broker without a Fetch version spinscale speaks waits.
pub const REFUSED_FOR: Duration = Duration::from_secs(60);
/// The most bytes one answer may hold: records are never read, but a broker may send the first
/// batch of a partition whatever the limit.
const ANSWER_BYTES: i32 = 1 << 20;

/// Each followed topic's partitions and their positions.
type Positions = HashMap<Arc<str>, HashMap<i32, i64>>;
/// Partitions whose high watermark passed their position, with the new end.
type Moved = Vec<(Partition, i64)>;
/// Partitions the broker answered with an error, with its code.
type Dropped = Vec<(Partition, i16)>;

#[derive(Default)]
struct Shared {
    positions: Mutex<Positions>,
    /// Partitions the broker refused with an error that asking again does not mend, and when.
    refused: Mutex<HashMap<Partition, Instant>>,
    /// Woken when a partition is added.
    added: Notify,
}

/// The fetch loop of one broker. Dropping it stops the loop.
pub struct BrokerTail {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl BrokerTail {
    /// Starts the loop for the broker at `address`, with nothing to fetch yet: each fetch waits up
    /// to `wait` at the broker, each request (and connecting) is bounded by `timeout` more.
    pub fn start(
        address: Arc<str>,
        security: Option<KafkaConnection>,
        wait: Duration,
        timeout: Duration,
        seen: Arc<TailSeen>,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let loop_span = tracing::info_span!("tail_fetch", broker = %address);
        let task = tokio::spawn(run(address, security, wait, timeout, shared.clone(), seen).instrument(loop_span));
        Self { shared, task }
    }

    /// Fetches `partition` from `position` on, whatever position it had.
    pub fn fetch_from(&self, p @ (topic, partition): &Partition, position: i64) {
        if let Ok(mut refused) = self.shared.refused.lock() {
            refused.remove(p);
        }
        if let Ok(mut positions) = self.shared.positions.lock() {
            positions.entry(topic.clone()).or_default().insert(*partition, position);
        }
        self.shared.added.notify_one();
    }

    /// Stops fetching `partition`.
    pub fn stop_fetching(&self, (topic, partition): &Partition) {
        if let Ok(mut positions) = self.shared.positions.lock()
            && let Some(partitions) = positions.get_mut(&**topic)
        {
            partitions.remove(partition);
            if partitions.is_empty() {
                positions.remove(&**topic);
            }
        }
    }

    /// Whether it still fetches `partition`: one the broker answered with an error (it no longer
    /// leads it, the topic is gone) is dropped until it is given again.
    pub fn fetches(&self, (topic, partition): &Partition) -> bool {
        self.shared.positions.lock().is_ok_and(|p| p.get(&**topic).is_some_and(|p| p.contains_key(partition)))
    }

    /// Whether the broker refused `partition` for good within [`REFUSED_FOR`]: it is not
    /// worth giving again before then.
    pub fn refused(&self, partition: &Partition) -> bool {
        let Ok(mut refused) = self.shared.refused.lock() else { return false };
        match refused.get(partition) {
            Some(at) if at.elapsed() < REFUSED_FOR => true,
            Some(_) => {
                refused.remove(partition);
                false
            }
            None => false,
        }
    }

    /// Whether it fetches nothing and remembers no refusal: it may be dropped.
    pub fn is_idle(&self) -> bool {
        let remembers = self.shared.refused.lock().is_ok_and(|mut refused| {
            refused.retain(|_, at| at.elapsed() < REFUSED_FOR);
            !refused.is_empty()
        });
        !remembers && self.shared.positions.lock().is_ok_and(|p| p.is_empty())
    }
}

impl Drop for BrokerTail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    address: Arc<str>,
    security: Option<KafkaConnection>,
    wait: Duration,
    timeout: Duration,
    shared: Arc<Shared>,
    seen: Arc<TailSeen>,
) {
    let mut connection: Option<BrokerConnection> = None;
    loop {
        let Ok(request) = shared.positions.lock().map(|positions| request_of(&positions, wait)) else { return };
        let Some(request) = request else {
            shared.added.notified().await;
            continue;
        };
        let answer = match fetch(&mut connection, &address, security.as_ref(), timeout + wait, request).await {
            Ok(answer) => answer,
            Err(Failure::Refused(cause)) => {
                warn!(%cause, "the broker cannot serve the tail; its idle apps wait for the offsets poll");
                connection = None;
                tokio::time::sleep(REFUSED_FOR).await;
                continue;
            }
            Err(Failure::Failed(cause)) => {
                debug!(%cause, "tail fetch failed");
                connection = None;
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let Ok((moved, dropped)) = shared.positions.lock().map(|mut positions| apply(&mut positions, &answer)) else {
            return;
        };
        for (partition, end) in moved {
            seen.record(partition, end - 1);
        }
        refuse(&shared, dropped);
    }
}

/// Why a fetch failed: the broker cannot serve it at all, or this time.
enum Failure {
    Refused(String),
    Failed(String),
}

/// Keeps the partitions dropped for an error that asking again does not mend out for
/// [`REFUSED_FOR`], with one warning for them all.
fn refuse(shared: &Shared, dropped: Dropped) {
    let lasting: Dropped = dropped
        .into_iter()
        .filter(|(_, code)| kafka_protocol::ResponseError::try_from_code(*code).is_some_and(|e| !e.is_retriable()))
        .collect();
    let Some(((topic, partition), code)) = lasting.first() else { return };
    warn!(
        partitions = lasting.len(),
        example = %format!("{topic}/{partition}"),
        error = %error_name(*code),
        "the broker refused tail fetches; their idle apps wait for the offsets poll, asked again in {REFUSED_FOR:?}"
    );
    if let Ok(mut refused) = shared.refused.lock() {
        let now = Instant::now();
        refused.extend(lasting.into_iter().map(|(p, _)| (p, now)));
    }
}

async fn fetch(
    connection: &mut Option<BrokerConnection>,
    address: &str,
    security: Option<&KafkaConnection>,
    timeout: Duration,
    request: FetchRequest,
) -> Result<FetchResponse, Failure> {
    let connection = match connection {
        Some(open) => open,
        None => connection
            .insert(BrokerConnection::open(address, CLIENT_ID, security, timeout).await.map_err(Failure::Failed)?),
    };
    let version = connection
        .version::<FetchRequest>(VERSIONS)
        .ok_or_else(|| Failure::Refused(format!("{address} offers no Fetch version from 4 to 11")))?;
    let answer = connection.call(request, version).await.map_err(Failure::Failed)?;
    if answer.error_code != 0 {
        return Err(Failure::Failed(format!("Fetch refused: {}", error_name(answer.error_code))));
    }
    Ok(answer)
}

/// One fetch of every partition from its position, or `None` when there is none.
fn request_of(positions: &Positions, wait: Duration) -> Option<FetchRequest> {
    if positions.is_empty() {
        return None;
    }
    let topics = positions
        .iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .iter()
                .map(|(&partition, &position)| {
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(position)
                        .with_partition_max_bytes(1)
                })
                .collect();
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    Some(
        FetchRequest::default()
            .with_max_wait_ms(i32::try_from(wait.as_millis()).unwrap_or(i32::MAX))
            .with_min_bytes(1)
            .with_max_bytes(ANSWER_BYTES)
            .with_topics(topics),
    )
}

/// Moves each partition's position to the high watermark the broker answered, if that is past
/// it; drops the partitions the broker answered with an error. Returns the partitions that moved,
/// with their new ends, and those dropped, with their errors.
fn apply(positions: &mut Positions, answer: &FetchResponse) -> (Moved, Dropped) {
    let (mut moved, mut dropped) = (Vec::new(), Vec::new());
    for topic in &answer.responses {
        let name: &str = &topic.topic;
        let Some(key) = positions.get_key_value(name).map(|(key, _)| key.clone()) else { continue };
        let Some(partitions) = positions.get_mut(&key) else { continue };
        for answered in &topic.partitions {
            let index = answered.partition_index;
            let Some(position) = partitions.get_mut(&index) else { continue };
            if answered.error_code != 0 {
                debug!(topic = name, partition = index, error = %error_name(answered.error_code), "dropped from the tail");
                partitions.remove(&index);
                dropped.push(((key.clone(), index), answered.error_code));
            } else if answered.high_watermark > *position {
                *position = answered.high_watermark;
                moved.push(((key.clone(), index), answered.high_watermark));
            }
        }
        if partitions.is_empty() {
            positions.remove(&key);
        }
    }
    (moved, dropped)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};

    use super::*;

    fn answer(partitions: &[(&str, i32, i16, i64)]) -> FetchResponse {
        let responses = partitions
            .iter()
            .map(|&(topic, partition, error_code, high_watermark)| {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.into())))
                    .with_partitions(vec![
                        PartitionData::default()
                            .with_partition_index(partition)
                            .with_error_code(error_code)
                            .with_high_watermark(high_watermark),
                    ])
            })
            .collect();
        FetchResponse::default().with_responses(responses)
    }

    #[test]
    fn a_high_watermark_past_the_position_is_a_record_and_an_error_drops_the_partition() {
        let mut positions: Positions = HashMap::from([
            (Arc::from("a"), HashMap::from([(0, 5), (1, 3)])),
            (Arc::from("gone"), HashMap::from([(0, 9)])),
        ]);
        // UNKNOWN_TOPIC_OR_PARTITION for "gone"; a partition nobody asked for is ignored.
        let (moved, dropped) =
            apply(&mut positions, &answer(&[("a", 0, 0, 5), ("a", 1, 0, 4), ("gone", 0, 3, -1), ("b", 0, 0, 7)]));
        assert_eq!(moved, [((Arc::from("a"), 1), 4)]);
        assert_eq!(dropped, [((Arc::from("gone"), 0), 3)]);
        assert_eq!(positions, HashMap::from([(Arc::from("a"), HashMap::from([(0, 5), (1, 4)]))]));
        assert_eq!(
            apply(&mut positions, &answer(&[("a", 1, 0, 4)])),
            (vec![], vec![]),
            "the same end again is no record"
        );
    }

    /// A partition refused for good (TOPIC_AUTHORIZATION_FAILED) is not worth giving again for a
    /// while, and its loop is kept to remember it; one that moved (NOT_LEADER_OR_FOLLOWER) is
    /// followed again at the next cycle.
    #[tokio::test]
    async fn a_partition_refused_for_good_waits_and_one_that_moved_does_not() {
        let (denied, moved): (Partition, Partition) = ((Arc::from("secret"), 0), (Arc::from("a"), 0));
        let shared = Shared::default();
        refuse(&shared, vec![(denied.clone(), 29), (moved.clone(), 6)]);
        let tail = BrokerTail { shared: Arc::new(shared), task: tokio::spawn(async {}) };
        assert!(tail.refused(&denied));
        assert!(!tail.refused(&moved));
        assert!(!tail.is_idle(), "it remembers the refusal");
        tail.fetch_from(&denied, 0);
        assert!(!tail.refused(&denied), "given again on purpose");
    }

    #[test]
    fn a_request_asks_each_partition_from_its_position_for_one_byte() {
        assert!(request_of(&Positions::new(), Duration::from_millis(50)).is_none());
        let positions: Positions = HashMap::from([(Arc::from("a"), HashMap::from([(2, 7)]))]);
        let request = request_of(&positions, Duration::from_millis(50)).unwrap();
        assert_eq!((request.max_wait_ms, request.min_bytes), (50, 1));
        let partition = &request.topics[0].partitions[0];
        assert_eq!((&**request.topics[0].topic, partition.partition, partition.fetch_offset), ("a", 2, 7));
        assert_eq!(partition.partition_max_bytes, 1);
    }

    /// The loop outlives a broker that goes down: it connects again once the broker is back and
    /// still sees the record from its position. A topic the broker does not know is dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_that_was_down_is_fetched_again_and_an_unknown_topic_is_dropped() {
        use rdkafka::config::ClientConfig;
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

        use super::super::tail::TailRecord;

        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let bootstrap = mock.bootstrap_servers();
        let seen = Arc::new(TailSeen::default());
        let wait = Duration::from_millis(20);
        let tail = BrokerTail::start(Arc::from(bootstrap.as_str()), None, wait, Duration::from_secs(2), seen.clone());
        let (t, unknown): (Partition, Partition) = ((Arc::from("t"), 0), (Arc::from("unknown"), 0));
        tail.fetch_from(&t, 0);
        tail.fetch_from(&unknown, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tail.fetches(&unknown) {
            assert!(std::time::Instant::now() < deadline, "an unknown topic is dropped");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        mock.broker_down(1).unwrap();
        // Some fetches fail while it is down.
        tokio::time::sleep(Duration::from_millis(500)).await;
        mock.broker_up(1).unwrap();
        let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
        producer.send(BaseRecord::<(), _>::to("t").partition(0).payload("x")).map_err(|(e, _)| e).unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        tokio::time::timeout(Duration::from_secs(10), seen.notify.notified()).await.expect("the record is seen");
        assert_eq!(seen.take(), [TailRecord { topic: "t".into(), partition: 0, offset: 0 }]);
        assert!(tail.fetches(&t) && !tail.is_idle());
    }
}
