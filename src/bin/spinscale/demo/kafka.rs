//! The demo's Kafka side: a producer with bursts and idle gaps, and an app's consumer group that
//! keeps up only slowly, both on librdkafka's mock cluster.

use super::*;

pub(super) fn load_producer(bootstrap: &str) -> anyhow::Result<BaseProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .context("cannot create the Kafka producer")
}

pub(super) fn spawn_producer(shared: Arc<Shared>, producer: BaseProducer) -> anyhow::Result<ThreadHandle<()>> {
    std::thread::Builder::new()
        .name("demo-producer".into())
        .spawn(move || produce(&shared, &producer))
        .context("cannot start the producer thread")
}

/// Produces the plan's records, round-robin over the partitions.
fn produce(shared: &Shared, producer: &BaseProducer) {
    let mut due = 0.0;
    let mut in_burst = false;
    let mut sent: u64 = 0;
    let mut last = Instant::now();
    while !shared.stopping() {
        std::thread::sleep(PRODUCE_TICK);
        let now = Instant::now();
        let rate = records_per_s(shared.secs());
        due += rate * (now - last).as_secs_f64();
        last = now;
        if rate == 0.0 {
            (in_burst, due) = (false, 0.0);
        }
        while due >= 1.0 {
            if !in_burst {
                in_burst = true;
                shared.set_burst_start(Instant::now());
            }
            let payload = format!("event {sent}");
            let record =
                BaseRecord::<(), str>::to(TOPIC).partition((sent % PARTITIONS as u64) as i32).payload(&payload);
            if let Err((e, _)) = producer.send(record) {
                shared.event(format!("produce failed: {e}"));
                break;
            }
            (sent, due) = (sent + 1, due - 1.0);
            shared.produced.fetch_add(1, Ordering::SeqCst);
        }
        producer.poll(Duration::ZERO);
    }
    if let Err(e) = producer.flush(Duration::from_secs(2)) {
        shared.event(format!("producer flush: {e}"));
    }
}

/// The app's consumer, positioned at the start of every partition.
///
/// It assigns the partitions instead of subscribing: one client stands in for every replica, and a
/// group rebalance (~3 s on the mock) on each replica change would blur the simulation. Commits under
/// `group.id` work without membership, and committed offsets are all spinscale reads.
pub(super) fn app_consumer(bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", APP)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("cannot create the app's Kafka consumer")?;
    let mut start = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        start.add_partition_offset(TOPIC, p, Offset::Offset(0)).context("partition list")?;
    }
    // As if the app had run once: without a commit, KEDA's rules count lag 1 per partition, never idle.
    consumer.commit(&start, CommitMode::Sync).context("the app's first commit")?;
    consumer.assign(&start).context("cannot assign the topic's partitions")?;
    Ok(consumer)
}

pub(super) fn spawn_consumer(shared: Arc<Shared>, consumer: BaseConsumer) -> anyhow::Result<ThreadHandle<()>> {
    std::thread::Builder::new()
        .name("demo-app".into())
        .spawn(move || consume(&shared, &consumer))
        .context("cannot start the app's consumer thread")
}

/// Consumes at `replicas × RECORDS_PER_REPLICA` (at most one busy replica per partition) and commits.
fn consume(shared: &Shared, consumer: &BaseConsumer) {
    let mut allowance = 0.0;
    let mut last = Instant::now();
    while !shared.stopping() {
        std::thread::sleep(CONSUME_TICK);
        let now = Instant::now();
        let busy = f64::from(shared.replicas().min(PARTITIONS as u32));
        let per_tick = busy * RECORDS_PER_REPLICA * (now - last).as_secs_f64();
        last = now;
        allowance = if busy == 0.0 { 0.0 } else { (allowance + per_tick).min(per_tick * 2.0 + 1.0) };
        let mut next = HashMap::new();
        while allowance >= 1.0 {
            match consumer.poll(Duration::from_millis(5)) {
                Some(Ok(m)) => {
                    next.insert(m.partition(), m.offset() + 1);
                    allowance -= 1.0;
                    shared.consumed.fetch_add(1, Ordering::SeqCst);
                }
                Some(Err(e)) => {
                    shared.event(format!("app consume error: {e}"));
                    break;
                }
                None => {
                    allowance = allowance.min(1.0);
                    break;
                }
            }
        }
        if let Err(e) = commit(consumer, &next) {
            shared.event(format!("app commit failed: {e}"));
        }
    }
}

/// Commits the next offset to read of each partition in `next` (none: nothing to do).
fn commit(consumer: &BaseConsumer, next: &HashMap<i32, i64>) -> KafkaResult<()> {
    if next.is_empty() {
        return Ok(());
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, offset) in next {
        offsets.add_partition_offset(TOPIC, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&offsets, CommitMode::Sync)
}

// === the KEDA-like client ===
