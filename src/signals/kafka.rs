//! Kafka consumer-group offsets: committed (OffsetFetch) and latest (ListOffsets) per partition.
//!
//! Runs on a blocking thread: librdkafka's calls block, each with a timeout. spinscale never joins
//! the group and never commits; it only reads offsets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::engine::PartitionOffsets;
use crate::target::KafkaSource;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OffsetsError {
    #[error("cannot create Kafka client: {0}")]
    Client(String),
    #[error("metadata request failed: {0}")]
    Metadata(String),
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    #[error("topic {0:?} has no partitions left after partitionLimitation")]
    NoPartitions(String),
    #[error("fetching committed offsets of group {group:?} failed: {cause}")]
    Committed { group: String, cause: String },
    #[error("committed offset of {topic}/{partition} failed: {cause}")]
    PartitionCommitted { topic: String, partition: i32, cause: String },
    #[error("fetching latest offsets failed: {0}")]
    Latest(String),
}

/// A reader of one source's offsets. Remembers commits between polls for `excludePersistentLag`.
pub struct OffsetsReader {
    consumer: BaseConsumer,
    source: KafkaSource,
    timeout: Duration,
    commits_seen: HashMap<(Arc<str>, i32), (Option<i64>, Instant)>,
}

impl OffsetsReader {
    pub fn new(source: KafkaSource, timeout: Duration) -> Result<Self, OffsetsError> {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", &source.bootstrap_servers)
            // The group id is needed for OffsetFetch; without subscribe() the client never joins.
            .set("group.id", &source.consumer_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("allow.auto.create.topics", "false")
            .set("client.id", "spinscale")
            .set("socket.timeout.ms", timeout.as_millis().max(10).to_string())
            .create()
            .map_err(|e| OffsetsError::Client(e.to_string()))?;
        Ok(Self { consumer, source, timeout, commits_seen: HashMap::new() })
    }

    /// One poll: the partitions to count, their committed and latest offsets.
    pub fn poll(&mut self) -> Result<Vec<PartitionOffsets>, OffsetsError> {
        let now = Instant::now();
        let partitions = self.partitions()?;
        if partitions.count() == 0 {
            return Ok(Vec::new());
        }
        let committed = self.consumer.committed_offsets(partitions.clone(), self.timeout).map_err(|e| {
            OffsetsError::Committed { group: self.source.consumer_group.clone(), cause: kafka_cause(&e) }
        })?;
        let mut latest_request = TopicPartitionList::new();
        for e in partitions.elements() {
            latest_request
                .add_partition_offset(e.topic(), e.partition(), Offset::End)
                .map_err(|e| OffsetsError::Latest(kafka_cause(&e)))?;
        }
        // A ListOffsets for timestamp -1 (latest), batched per leader broker by librdkafka.
        let latest = self
            .consumer
            .offsets_for_times(latest_request, self.timeout)
            .map_err(|e| OffsetsError::Latest(kafka_cause(&e)))?;
        let latest = latest.elements();
        let latest_by_partition: HashMap<(&str, i32), i64> = latest
            .iter()
            .filter(|e| e.error().is_ok())
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic(), e.partition()), o)),
                _ => None,
            })
            .collect();
        let mut out = Vec::with_capacity(committed.count());
        for e in committed.elements() {
            if let Err(cause) = e.error() {
                return Err(OffsetsError::PartitionCommitted {
                    topic: e.topic().into(),
                    partition: e.partition(),
                    cause: kafka_cause(&cause),
                });
            }
            let committed = match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            };
            let topic: Arc<str> = e.topic().into();
            let since = match self.commits_seen.get(&(topic.clone(), e.partition())) {
                Some((seen, since)) if *seen == committed => *since,
                _ => now,
            };
            self.commits_seen.insert((topic.clone(), e.partition()), (committed, since));
            out.push(PartitionOffsets {
                latest: latest_by_partition.get(&(e.topic(), e.partition())).copied(),
                topic,
                partition: e.partition(),
                committed,
                committed_unchanged_for: now.saturating_duration_since(since),
            });
        }
        Ok(out)
    }

    /// The partitions to count: of the configured topics (after `partitionLimitation`), or of
    /// every topic the group has committed offsets for.
    fn partitions(&self) -> Result<TopicPartitionList, OffsetsError> {
        let mut tpl = TopicPartitionList::new();
        if self.source.topics.is_empty() {
            let metadata = self
                .consumer
                .fetch_metadata(None, self.timeout)
                .map_err(|e| OffsetsError::Metadata(kafka_cause(&e)))?;
            let mut all = TopicPartitionList::new();
            for topic in metadata.topics().iter().filter(|t| !t.name().starts_with("__")) {
                for p in topic.partitions() {
                    all.add_partition(topic.name(), p.id());
                }
            }
            if all.count() == 0 {
                return Ok(all);
            }
            let committed = self.consumer.committed_offsets(all, self.timeout).map_err(|e| {
                OffsetsError::Committed { group: self.source.consumer_group.clone(), cause: kafka_cause(&e) }
            })?;
            let committed = committed.elements();
            let group_topics: Vec<&str> = committed
                .iter()
                .filter(|e| matches!(e.offset(), Offset::Offset(o) if o >= 0))
                .map(|e| e.topic())
                .collect();
            for e in committed.iter().filter(|e| group_topics.contains(&e.topic())) {
                tpl.add_partition(e.topic(), e.partition());
            }
            return Ok(tpl);
        }
        for name in &self.source.topics {
            let metadata = self
                .consumer
                .fetch_metadata(Some(name), self.timeout)
                .map_err(|e| OffsetsError::Metadata(kafka_cause(&e)))?;
            let topic = metadata.topics().iter().find(|t| t.name() == name);
            let Some(topic) = topic.filter(|t| t.error().is_none() && !t.partitions().is_empty()) else {
                return Err(OffsetsError::TopicNotFound(name.clone()));
            };
            let mut kept = 0;
            for p in topic.partitions() {
                let limited =
                    self.source.partition_limitation.as_ref().is_some_and(|only| only.binary_search(&p.id()).is_err());
                if !limited {
                    tpl.add_partition(name, p.id());
                    kept += 1;
                }
            }
            if kept == 0 {
                return Err(OffsetsError::NoPartitions(name.clone()));
            }
        }
        Ok(tpl)
    }
}

fn kafka_cause(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("{e} ({code:?})"),
        None => e.to_string(),
    }
}
