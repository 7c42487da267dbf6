//! Kafka tail watch: one consumer per cluster, outside any group, assigned to the log end of
//! every partition some idle source waits on, long-polls for the next record. The first one
//! becomes a reading at once, instead of one offsets poll later.
//!
//! It never joins or commits for the users' groups: its own `group.id` (which librdkafka needs for
//! `assign`) is never joined or committed to. Partitions are added and dropped one by one
//! (incremental assignment) as sources go idle and wake, so the others keep their fetch position.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use spinscale_core::spec::kafka_connection::KafkaConnection;
use tokio::sync::Notify;
use tracing::debug;

use super::kafka::Partition;

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

/// What the tail consumer has seen since the cluster task last looked: each partition's highest
/// record offset. Nothing is lost however many records arrive, and it holds one entry per
/// partition, not one per record.
#[derive(Default)]
pub struct TailSeen {
    latest: Mutex<BTreeMap<Partition, i64>>,
    /// Woken when a partition gets its first record since the last look.
    pub notify: Notify,
}

impl TailSeen {
    fn record(&self, partition: Partition, offset: i64) {
        if let Ok(mut latest) = self.latest.lock() {
            let at = latest.entry(partition).or_insert(offset);
            *at = (*at).max(offset);
        }
        self.notify.notify_one();
    }

    /// The records seen since the last call, one per partition (its highest offset).
    pub fn take(&self) -> Vec<TailRecord> {
        let taken = self.latest.lock().map(|mut latest| std::mem::take(&mut *latest)).unwrap_or_default();
        taken.into_iter().map(|((topic, partition), offset)| TailRecord { topic, partition, offset }).collect()
    }
}

/// A cluster's running tail consumer. Dropping it stops the consumer within one fetch wait.
pub struct TailWatch {
    consumer: Arc<BaseConsumer>,
    /// The partitions it tails, each with when a source last waited on it.
    assigned: BTreeMap<Partition, Instant>,
    stop: Arc<AtomicBool>,
}

impl TailWatch {
    /// Starts a consumer on `bootstrap_servers` with nothing assigned yet; records go to `seen`.
    ///
    /// `fetch_wait` is how long one fetch waits at the broker. A broker that answers a waiting
    /// fetch as soon as a record arrives only asks again that often; one that holds every fetch for
    /// the whole wait (librdkafka's mock cluster, tansu) delays the record by up to that long. One
    /// consumer serves the whole cluster, so a short wait costs requests per broker, not per app.
    pub fn start(
        bootstrap_servers: &str,
        security: Option<&KafkaConnection>,
        fetch_wait: Duration,
        seen: Arc<TailSeen>,
    ) -> Result<Self, String> {
        let consumer: BaseConsumer =
            super::kafka::read_only_config(bootstrap_servers, security, "spinscale-tail-watch")?
                .set("client.id", "spinscale-tail")
                .set("fetch.wait.max.ms", fetch_wait.as_millis().max(1).to_string())
                .set("fetch.min.bytes", "1")
                .set("fetch.error.backoff.ms", "100")
                // Only the first record of a partition matters: keep the prefetch queue small, and
                // when a partition's queue is over it, back off that partition for a millisecond,
                // not librdkafka's second (that second was the push delay of idle partitions).
                .set("queued.max.messages.kbytes", "1024")
                .set("fetch.queue.backoff.ms", "1")
                .set("fetch.message.max.bytes", "65536")
                .set("socket.nagle.disable", "true")
                .create()
                .map_err(|e| format!("cannot create tail consumer: {e}"))?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = Watcher { consumer: consumer.clone(), wait: fetch_wait, seen, stop: stop.clone() };
        std::thread::Builder::new()
            .name("spinscale-tail".into())
            .spawn(move || watcher.run())
            .map_err(|e| format!("cannot start tail thread: {e}"))?;
        Ok(Self { consumer, assigned: BTreeMap::new(), stop })
    }

    /// Tails `wanted` (each partition from its log end): new partitions are added at their end,
    /// the others keep their position, and those no source has waited on for `linger` are dropped.
    /// Every change of the assignment restarts the consumer's fetches, which delays the records of
    /// every partition: a partition whose app woke is kept a while, since it is usually waited on
    /// again once the app has caught up. Blocks briefly.
    pub fn follow(&mut self, wanted: &BTreeMap<Partition, i64>, linger: Duration) -> Result<(), String> {
        let now = Instant::now();
        for (p, last) in &mut self.assigned {
            if wanted.contains_key(p) {
                *last = now;
            }
        }
        let kept =
            |p: &Partition, last: &Instant| now.saturating_duration_since(*last) < linger || wanted.contains_key(p);
        let mut gone = TopicPartitionList::new();
        for ((topic, partition), _) in self.assigned.iter().filter(|(p, last)| !kept(p, last)) {
            gone.add_partition(topic, *partition);
        }
        if gone.count() > 0 {
            self.consumer.incremental_unassign(&gone).map_err(|e| format!("cannot drop tail partitions: {e}"))?;
            self.assigned.retain(|p, last| kept(p, last));
        }
        let mut new = TopicPartitionList::new();
        for ((topic, partition), end) in wanted.iter().filter(|(p, _)| !self.assigned.contains_key(*p)) {
            // `add_partition_offset` searches the list again for each partition it adds.
            new.add_partition(topic, *partition).set_offset(Offset::Offset(*end)).map_err(|e| e.to_string())?;
        }
        if new.count() > 0 {
            self.consumer.incremental_assign(&new).map_err(|e| format!("cannot add tail partitions: {e}"))?;
            for p in wanted.keys() {
                self.assigned.entry(p.clone()).or_insert(now);
            }
        }
        Ok(())
    }

    /// How many partitions it tails.
    pub fn partitions(&self) -> usize {
        self.assigned.len()
    }
}

/// The tail consumer's thread.
struct Watcher {
    consumer: Arc<BaseConsumer>,
    wait: Duration,
    seen: Arc<TailSeen>,
    stop: Arc<AtomicBool>,
}

impl Watcher {
    fn run(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            match self.consumer.poll(self.wait) {
                Some(Ok(message)) => {
                    // A busy partition keeps one entry, its highest offset, until the next
                    // offsets cycle drops it from the assignment (its sources have lag by then).
                    self.seen.record((message.topic().into(), message.partition()), message.offset());
                }
                Some(Err(e)) => debug!(error = %e, "tail watch fetch failed"),
                None => {}
            }
        }
    }
}

impl Drop for TailWatch {
    fn drop(&mut self) {
        // The thread sees this within one fetch wait and drops its consumer.
        self.stop.store(true, Ordering::Relaxed);
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
            // A commit past the log end (read_committed consumers, transactions): records below it
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
        let mut tail = TailWatch::start(&bootstrap, None, Duration::from_millis(20), seen.clone()).unwrap();
        let next = || async {
            tokio::time::timeout(Duration::from_secs(10), seen.notify.notified()).await.unwrap();
            seen.take()
        };
        let (a, b): (Partition, Partition) = (("a".into(), 0), ("b".into(), 0));
        tail.follow(&BTreeMap::from([(a.clone(), 1), (b.clone(), 0)]), Duration::ZERO).unwrap();
        assert_eq!(tail.partitions(), 2);
        tail.follow(&BTreeMap::from([(a.clone(), 1)]), Duration::ZERO).unwrap();
        assert_eq!(tail.partitions(), 1, "b's source woke: b is dropped, a keeps its position");
        // Time for the fetcher to settle on its new assignment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        send("b");
        send("a");
        let first = next().await;
        assert_eq!(first, [TailRecord { topic: "a".into(), partition: 0, offset: 1 }], "only a is tailed");
        tail.follow(&BTreeMap::from([(a, 2), (b, 1)]), Duration::ZERO).unwrap();
        send("b");
        let second = next().await;
        assert_eq!(second, [TailRecord { topic: "b".into(), partition: 0, offset: 1 }], "b again, from its new end");
    }
}
