//! Kafka tail watch: for every partition some idle source waits on, a long-polling fetch from the
//! log end at the partition's leader, one fetch loop per broker ([`BrokerTail`]). The first record
//! becomes a reading at once, instead of one offsets poll later.
//!
//! It reads no records and is in no group: it never joins or commits for the users' groups.
//! Partitions are added and dropped one by one as sources go idle and wake, so the others keep
//! their fetch position.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spinscale_core::spec::kafka_connection::KafkaConnection;
use tokio::sync::Notify;

use super::kafka::Partition;
use super::tail_fetch::BrokerTail;

/// Partitions with the log end to tail each from.
pub type Ends = Vec<(Arc<str>, i32, i64)>;

/// A record seen at the tail: the partition's log end is now at least `offset + 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailRecord {
    /// The record's topic.
    pub topic: Arc<str>,
    /// The record's partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
}

/// Records kept as each partition's highest offset: one entry per partition however many arrive.
#[derive(Default)]
pub struct Latest(BTreeMap<Partition, i64>);

impl Latest {
    /// Keeps `offset` as `partition`'s record if it is the highest so far.
    pub fn keep(&mut self, partition: Partition, offset: i64) {
        let at = self.0.entry(partition).or_insert(offset);
        *at = (*at).max(offset);
    }

    /// Keeps each of `records`.
    pub fn extend(&mut self, records: impl IntoIterator<Item = TailRecord>) {
        for r in records {
            self.keep((r.topic, r.partition), r.offset);
        }
    }

    /// The records kept, one per partition.
    pub fn into_records(self) -> Vec<TailRecord> {
        self.0.into_iter().map(|((topic, partition), offset)| TailRecord { topic, partition, offset }).collect()
    }
}

/// What the tail has seen since the cluster task last looked. Nothing is lost however many
/// records arrive, and it holds one entry per partition, not one per record.
#[derive(Default)]
pub struct TailSeen {
    latest: Mutex<Latest>,
    /// Woken when a partition gets its first record since the last look.
    pub notify: Notify,
}

impl TailSeen {
    /// Keeps `offset` as `partition`'s record if it is the highest seen since the last look.
    pub(super) fn record(&self, partition: Partition, offset: i64) {
        if let Ok(mut latest) = self.latest.lock() {
            latest.keep(partition, offset);
        }
        self.notify.notify_one();
    }

    /// The records seen since the last call, one per partition (its highest offset).
    pub fn take(&self) -> Vec<TailRecord> {
        self.latest.lock().map(|mut latest| std::mem::take(&mut *latest)).unwrap_or_default().into_records()
    }
}

/// A cluster's tail: one fetch loop ([`BrokerTail`]) per broker that leads a followed partition.
/// Dropping it stops them.
pub struct TailWatch {
    security: Option<KafkaConnection>,
    wait: Duration,
    timeout: Duration,
    seen: Arc<TailSeen>,
    brokers: HashMap<Arc<str>, BrokerTail>,
    /// The partitions it tails, each with its leader and when a source last waited on it.
    followed: BTreeMap<Partition, (Arc<str>, Instant)>,
}

impl TailWatch {
    /// A tail on nothing yet, whose records go to `seen`.
    ///
    /// `fetch_wait` is how long one fetch waits at the broker. A broker that answers a waiting
    /// fetch as soon as a record arrives only asks again that often; one that holds every fetch for
    /// the whole wait (librdkafka's mock cluster, tansu) delays the record by up to twice that. One
    /// loop serves each broker, so a short wait costs requests per broker, not per app.
    pub fn new(
        security: Option<&KafkaConnection>,
        fetch_wait: Duration,
        timeout: Duration,
        seen: Arc<TailSeen>,
    ) -> Self {
        Self {
            security: security.cloned(),
            wait: fetch_wait,
            timeout,
            seen,
            brokers: HashMap::new(),
            followed: BTreeMap::new(),
        }
    }

    /// Tails `wanted` (each partition from the log end it maps to) at its leader, `leader_of`:
    /// new partitions are added at their end, the others keep their position, and those no
    /// source has waited on for `linger` are dropped. A partition whose app woke is kept a while,
    /// since it is usually waited on again once the app has caught up. One without a known leader,
    /// or that its leader refused for good a moment ago, is left to the offsets poll.
    pub fn follow(
        &mut self,
        wanted: &BTreeMap<Partition, i64>,
        leader_of: impl Fn(&Partition) -> Option<Arc<str>>,
        linger: Duration,
    ) {
        let now = Instant::now();
        self.followed.retain(|p, (leader, last)| {
            let waited_on = wanted.contains_key(p);
            if waited_on {
                *last = now;
            }
            let kept = waited_on || now.saturating_duration_since(*last) < linger;
            if !kept && let Some(broker) = self.brokers.get(leader) {
                broker.stop_fetching(p);
            }
            kept
        });
        for (p, end) in wanted {
            let Some(leader) = leader_of(p) else { continue };
            let before = self.followed.get(p).map(|(l, _)| l.clone());
            let at_leader = self.brokers.get(&leader);
            if at_leader.is_some_and(|b| b.refused(p))
                || (before.as_ref() == Some(&leader) && at_leader.is_some_and(|b| b.fetches(p)))
            {
                continue;
            }
            if let Some(moved_from) = before.and_then(|l| self.brokers.get(&l)) {
                moved_from.stop_fetching(p);
            }
            let (security, seen) = (&self.security, &self.seen);
            self.brokers
                .entry(leader.clone())
                .or_insert_with(|| {
                    BrokerTail::start(leader.clone(), security.clone(), self.wait, self.timeout, seen.clone())
                })
                .fetch_from(p, *end);
            self.followed.insert(p.clone(), (leader, now));
        }
        self.brokers.retain(|_, broker| !broker.is_idle());
    }

    /// How many partitions it tails.
    pub fn partitions(&self) -> usize {
        self.followed.len()
    }
}

/// Where to tail `partitions` from: every partition's log end, if the group has caught up on all
/// of them, an empty partition counting as caught up even without a commit (`None` while any has
/// lag, or no commit on a non-empty log, or no known end).
pub fn idle_ends(partitions: &[spinscale_core::engine::PartitionOffsets]) -> Option<Ends> {
    if partitions.is_empty() {
        return None;
    }
    partitions
        .iter()
        .map(|p| match (p.committed, p.latest) {
            // A commit past the log end (made ahead of it, or a log cut back): records below it
            // were already processed, so the tail starts at the commit.
            (Some(committed), Some(end)) if committed >= end => Some((p.topic.clone(), p.partition, committed)),
            (None, Some(0)) => Some((p.topic.clone(), p.partition, 0)),
            _ => None,
        })
        .collect()
}

/// `partitions` with each log end moved past the records seen at the tail.
pub fn advanced(
    partitions: &[spinscale_core::engine::PartitionOffsets],
    records: &[TailRecord],
) -> Vec<spinscale_core::engine::PartitionOffsets> {
    partitions
        .iter()
        .map(|p| {
            let seen =
                records.iter().filter(|r| r.topic == p.topic && r.partition == p.partition).map(|r| r.offset + 1);
            let latest = seen.fold(p.latest, |end, after| Some(end.map_or(after, |e| e.max(after))));
            spinscale_core::engine::PartitionOffsets { latest, ..p.clone() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use spinscale_core::engine::PartitionOffsets;

    fn part(partition: i32, committed: Option<i64>, latest: Option<i64>) -> PartitionOffsets {
        PartitionOffsets { topic: "t".into(), partition, committed, committed_unchanged_for: Duration::ZERO, latest }
    }

    #[test]
    fn only_a_group_that_caught_up_everywhere_is_tailed() {
        assert_eq!(idle_ends(&[part(0, Some(5), Some(5)), part(1, Some(0), Some(0))]).map(|e| e.len()), Some(2));
        assert_eq!(idle_ends(&[part(0, Some(5), Some(5)), part(1, Some(0), Some(1))]), None, "lag on one");
        assert_eq!(idle_ends(&[part(0, None, Some(5))]), None, "no commit: KEDA counts lag already");
        assert_eq!(idle_ends(&[part(0, None, Some(0))]).map(|e| e.len()), Some(1), "a new topic and a new group");
        assert_eq!(idle_ends(&[part(0, Some(5), None)]), None, "unknown end");
        assert_eq!(idle_ends(&[]), None);
    }

    #[test]
    fn records_move_the_log_end_past_them() {
        let records = [
            TailRecord { topic: "t".into(), partition: 1, offset: 7 },
            TailRecord { topic: "t".into(), partition: 1, offset: 9 },
        ];
        let moved = advanced(&[part(0, Some(3), Some(3)), part(1, Some(7), Some(7))], &records);
        assert_eq!(moved.iter().map(|p| p.latest).collect::<Vec<_>>(), vec![Some(3), Some(10)]);
    }

    /// A flood on one partition never crowds out another's single record: one entry a partition.
    #[test]
    fn a_flood_on_one_partition_keeps_another_partitions_record() {
        let seen = TailSeen::default();
        for offset in 0..100_000 {
            seen.record(("busy".into(), 0), offset);
        }
        seen.record(("quiet".into(), 3), 7);
        let taken = seen.take();
        assert_eq!(
            taken,
            [
                TailRecord { topic: "busy".into(), partition: 0, offset: 99_999 },
                TailRecord { topic: "quiet".into(), partition: 3, offset: 7 },
            ]
        );
        assert!(seen.take().is_empty(), "taken once");
    }

    /// Partitions join and leave the one consumer as sources go idle and wake; a partition it no
    /// longer tails brings no record, one it was given brings the first record past its end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partitions_are_added_and_dropped_one_by_one() {
        use rdkafka::config::ClientConfig;
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

        let mock = MockCluster::new(1).unwrap();
        for topic in ["a", "b"] {
            mock.create_topic(topic, 1, 1).unwrap();
        }
        let bootstrap = mock.bootstrap_servers();
        let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
        let send = |topic: &str| {
            producer.send(BaseRecord::<(), _>::to(topic).partition(0).payload("x")).map_err(|(e, _)| e).unwrap();
            producer.flush(Duration::from_secs(10)).unwrap();
        };
        send("a");
        let seen = Arc::new(TailSeen::default());
        let mut tail = TailWatch::new(None, Duration::from_millis(20), Duration::from_secs(5), seen.clone());
        let leader: Arc<str> = Arc::from(bootstrap.as_str());
        let leader_of = |_: &Partition| Some(leader.clone());
        let next = || async {
            tokio::time::timeout(Duration::from_secs(10), seen.notify.notified()).await.unwrap();
            seen.take()
        };
        let (a, b): (Partition, Partition) = (("a".into(), 0), ("b".into(), 0));
        tail.follow(&BTreeMap::from([(a.clone(), 1), (b.clone(), 0)]), leader_of, Duration::ZERO);
        assert_eq!(tail.partitions(), 2);
        tail.follow(&BTreeMap::from([(a.clone(), 1)]), leader_of, Duration::ZERO);
        assert_eq!(tail.partitions(), 1, "b's source woke: b is dropped, a keeps its position");
        // Time for the fetcher to settle on its new assignment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        send("b");
        send("a");
        let first = next().await;
        assert_eq!(first, [TailRecord { topic: "a".into(), partition: 0, offset: 1 }], "only a is tailed");
        tail.follow(&BTreeMap::from([(a, 2), (b, 1)]), leader_of, Duration::ZERO);
        send("b");
        let second = next().await;
        assert_eq!(second, [TailRecord { topic: "b".into(), partition: 0, offset: 1 }], "b again, from its new end");
    }
}
