//! Kafka tail watch: for a source whose group has caught up, a consumer outside any group,
//! assigned to every partition at its log end, long-polls for the next record. The first one
//! becomes a reading at once, instead of one offsets poll later.
//!
//! It never joins or commits for the user's group: its own `group.id` (which librdkafka needs for
//! `assign`) is never joined or committed to. It runs only while the source is idle: the offsets
//! poll takes over as soon as there is lag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use spinscale_core::spec::kafka_connection::KafkaConnection;
use tokio::sync::mpsc;
use tracing::debug;

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

/// A running tail watch. Dropping it stops the consumer within one fetch wait.
pub struct TailWatch {
    /// The partitions and the offsets it started from.
    pub from: Vec<(Arc<str>, i32, i64)>,
    stop: Arc<AtomicBool>,
}

impl TailWatch {
    /// Starts watching `from` (topic, partition, log end offset) on `bootstrap_servers`.
    ///
    /// `fetch_wait` is how long one fetch waits at the broker: a Kafka broker answers a waiting
    /// fetch as soon as a record arrives, so it only sets how often an idle partition is asked
    /// again. (librdkafka's mock cluster answers only at the end of the wait.)
    pub fn start(
        bootstrap_servers: &str,
        security: Option<&KafkaConnection>,
        from: Vec<(Arc<str>, i32, i64)>,
        fetch_wait: Duration,
        records: mpsc::Sender<TailRecord>,
    ) -> Result<Self, String> {
        let consumer: BaseConsumer =
            super::kafka::read_only_config(bootstrap_servers, security, "spinscale-tail-watch")?
                .set("client.id", "spinscale-tail")
                .set("fetch.wait.max.ms", fetch_wait.as_millis().max(1).to_string())
                .set("fetch.min.bytes", "1")
                .set("socket.nagle.disable", "true")
                .create()
                .map_err(|e| format!("cannot create tail consumer: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, end) in &from {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*end)).map_err(|e| e.to_string())?;
        }
        consumer.assign(&tpl).map_err(|e| format!("cannot assign tail partitions: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::Builder::new()
            .name("spinscale-tail".into())
            .spawn(move || watch(consumer, fetch_wait, records, stopping))
            .map_err(|e| format!("cannot start tail thread: {e}"))?;
        Ok(Self { from, stop })
    }
}

fn watch(consumer: BaseConsumer, wait: Duration, records: mpsc::Sender<TailRecord>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(wait) {
            Some(Ok(message)) => {
                let record = TailRecord {
                    topic: message.topic().into(),
                    partition: message.partition(),
                    offset: message.offset(),
                };
                // A full channel means the collector already has records to act on.
                let _ = records.try_send(record);
            }
            Some(Err(e)) => debug!(error = %e, "tail watch fetch failed"),
            None => {}
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
pub fn idle_ends(partitions: &[spinscale_core::engine::PartitionOffsets]) -> Option<Vec<(Arc<str>, i32, i64)>> {
    if partitions.is_empty() {
        return None;
    }
    partitions
        .iter()
        .map(|p| match (p.committed, p.latest) {
            (Some(committed), Some(end)) if committed >= end => Some((p.topic.clone(), p.partition, end)),
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
}
