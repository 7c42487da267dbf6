//! Record → push on the real broker: idle Kafka apps on tansu, each with its stream open and
//! KEDA's poll running; one record to each of some of them, at shuffled times, until the app's
//! stream says `true`, against the poll's first `active` for the same record.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;
use serde_json::json;
use spinscale::sim::report::percentile;

use super::kafka::Kafka;
use super::keda::{Pollers, Streams};
use super::{FleetPlan, Probes, REGISTER_LIMIT, SETTLE, kafka_ref, kafka_rows};
use crate::report::{Report, ms, ms_value};
use crate::server::ServerProcess;
use crate::{Rng, schedule};

/// The goal of issue 15: p99 on the real broker.
const GOAL_P99: Duration = Duration::from_millis(50);

pub async fn run(plan: &FleetPlan, report: &mut Report) -> anyhow::Result<()> {
    let Some(kafka) = Kafka::tansu().await? else {
        report.add_note("record → push on the real broker: not measured, no `tansu` binary".into());
        return Ok(());
    };
    let n = plan.idle;
    eprintln!("bench: fleet: record → push, {n} idle Kafka apps on {}", kafka.name());
    let topics: Vec<String> = (0..n).map(|i| format!("wake-{i}")).collect();
    kafka.create_topics(&topics).await?;
    let server = ServerProcess::start_with(&plan.config()).await?;
    let client = server.connect().await?;
    let refs: Vec<_> = (0..n)
        .map(|i| kafka_ref(&format!("wake-{i}"), &kafka.bootstrap, &format!("wake-group-{i}"), &topics[i]))
        .collect();
    super::keda::register(&client, &refs, REGISTER_LIMIT).await?;
    let streams = Streams::open(&client, &refs).await?;
    let pollers = Pollers::start(&client, &refs, plan.poll, 0x3a4e);
    // Every source reads its group idle again, so the tail follows its partition.
    tokio::time::sleep(SETTLE).await;
    let http = reqwest::Client::new();
    let probes = Probes::kafka_only(server.pid(), &http, &kafka);
    let idle = probes.window(plan.window).await?;
    kafka_rows(report, &idle, n, &kafka, plan.poll, &format!("{n} idle Kafka apps"));
    let early = (0..n).filter(|i| streams.first_true[*i].get().is_some()).count();

    // The apps woken: `wakeups` of the idle ones, in a shuffled order.
    let mut rng = Rng(0x0dd_ba11);
    let mut order: Vec<(f64, usize)> = (0..n).map(|i| (rng.unit(), i)).collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let woken: Vec<usize> = order.iter().take(plan.wakeups.min(n)).map(|(_, i)| *i).collect();
    let floor = Floor::start(&kafka, &topics, plan.fetch_wait())?;
    let producer = kafka.producer()?;
    let mut events = vec![None; woken.len()];
    let acks: Arc<Vec<OnceLock<Instant>>> = Arc::new(woken.iter().map(|_| OnceLock::new()).collect());
    let start = tokio::time::Instant::now();
    for (at, k) in schedule(woken.len(), plan.spread, 0xfeed_f00d) {
        tokio::time::sleep_until(start + at).await;
        events[k] = Some(Instant::now());
        let delivery = producer
            .send_result(FutureRecord::<(), _>::to(&topics[woken[k]]).payload("wake up"))
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        let acks = acks.clone();
        tokio::spawn(async move {
            if let Ok(Ok(_)) = delivery.await {
                let _ = acks[k].set(Instant::now());
            }
        });
    }
    let seen =
        |k: usize| streams.first_true[woken[k]].get().is_some() && pollers.first_active[woken[k]].get().is_some();
    let deadline = Instant::now() + plan.poll + Duration::from_secs(10);
    while Instant::now() < deadline && !(0..woken.len()).all(seen) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // From each record's send to `first(k)`, sorted.
    let latencies = |first: &dyn Fn(usize) -> Option<Instant>| {
        let mut l: Vec<Duration> =
            (0..woken.len()).filter_map(|k| Some(first(k)?.saturating_duration_since(events[k]?))).collect();
        l.sort();
        l
    };
    let pushed = latencies(&|k| streams.first_true[woken[k]].get().copied());
    let polled = latencies(&|k| pollers.first_active[woken[k]].get().copied());
    let acked = latencies(&|k| acks[k].get().copied());
    let consumed = latencies(&|k| floor.seen[woken[k]].get().copied());
    drop(floor);
    // spinscale's own account, from the record seen at the tail (or the reading) to the push.
    let own = own_push_latency(&http, &server.metrics).await.unwrap_or_default();
    let wait = plan.fetch_wait();
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        let (ours, theirs) = (percentile(&pushed, p), percentile(&polled, p));
        let goal = if name == "p99" { format!("; goal ≤ {}", ms(GOAL_P99)) } else { String::new() };
        report.row(
            &format!("Kafka record → stream true on {}, {n} idle apps, tailFetchWait {wait:?}, {name}", kafka.name()),
            ms(ours),
            format!("{} (poll {:?}{goal})", ms(theirs), plan.poll),
            Some(theirs.as_secs_f64() / ours.as_secs_f64().max(1e-6)),
        );
    }
    report.figure(
        "fleet_wakeup",
        json!({
            "broker": kafka.name(), "idle_apps": n, "records": woken.len(), "pushed": pushed.len(),
            "polled": polled.len(), "active_before_record": early, "tail_fetch_wait_ms": wait.as_millis() as u64,
            "push_p50_ms": ms_value(percentile(&pushed, 0.5)), "push_p99_ms": ms_value(percentile(&pushed, 0.99)),
            "push_max_ms": ms_value(pushed.last().copied().unwrap_or_default()),
            "poll_p50_ms": ms_value(percentile(&polled, 0.5)), "poll_p99_ms": ms_value(percentile(&polled, 0.99)),
            "ack_p50_ms": ms_value(percentile(&acked, 0.5)), "ack_p99_ms": ms_value(percentile(&acked, 0.99)),
            "push_ms": pushed.iter().map(|d| ms_value(*d)).collect::<Vec<_>>(),
            "idle_window": idle.json(),
        }),
    );
    report.add_note(format!(
        "record → push on {}: {} records to {} of {n} idle apps over {:?}, {} pushed, {} seen by the poll, \
         {early} apps active before their record; collectors.tailFetchWait {wait:?}; the broker acknowledged \
         the records after {} (p50) / {} (p99); spinscale's own push latency histogram (reading → push) puts \
         p50 ≤ {} and p99 ≤ {}; a plain consumer in the bench (the same fetch wait, librdkafka's \
         defaults otherwise) on the same partitions saw the records after {} (p50) / {} (p99)",
        kafka.name(),
        woken.len(),
        woken.len(),
        plan.spread,
        pushed.len(),
        polled.len(),
        ms(percentile(&acked, 0.5)),
        ms(percentile(&acked, 0.99)),
        ms(own.0),
        ms(own.1),
        ms(percentile(&consumed, 0.5)),
        ms(percentile(&consumed, 0.99)),
    ));
    Ok(())
}

/// The p50 and p99 of spinscale's `spinscale_push_latency_seconds` histogram, each as the upper
/// bound of the bucket it falls in.
async fn own_push_latency(http: &reqwest::Client, metrics: &str) -> anyhow::Result<(Duration, Duration)> {
    let text = http.get(metrics).timeout(Duration::from_secs(5)).send().await?.text().await?;
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("spinscale_push_latency_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, rest) = l.split_once('"')?;
            Some((le.parse().unwrap_or(f64::INFINITY), rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    let bound = |p: f64| {
        let le = buckets.iter().find(|(_, n)| *n >= p * total).map_or(f64::INFINITY, |b| b.0);
        Duration::try_from_secs_f64(le).unwrap_or(Duration::MAX)
    };
    Ok((bound(0.5), bound(0.99)))
}

/// A plain consumer on every idle app's partition, with the tail watch's fetch wait and
/// librdkafka's defaults otherwise: when the broker lets a consumer see each record at all.
struct Floor {
    seen: Arc<Vec<OnceLock<Instant>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Floor {
    fn start(kafka: &Kafka, topics: &[String], wait: Duration) -> anyhow::Result<Self> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::Message;
        let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", &kafka.bootstrap)
            .set("client.id", super::kafka::BENCH_CLIENT_ID)
            .set("group.id", "fleet-bench-floor")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", wait.as_millis().max(1).to_string())
            .set("fetch.min.bytes", "1")
            .set("socket.nagle.disable", "true")
            .create()?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        for topic in topics {
            assignment.add_partition_offset(topic, 0, rdkafka::Offset::Offset(0))?;
        }
        consumer.assign(&assignment)?;
        let index: std::collections::HashMap<String, usize> =
            topics.iter().enumerate().map(|(i, t)| (t.clone(), i)).collect();
        let seen: Arc<Vec<OnceLock<Instant>>> = Arc::new(topics.iter().map(|_| OnceLock::new()).collect());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (marks, stopping) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(wait)
                    && let Some(i) = index.get(m.topic())
                {
                    let _ = marks[*i].set(Instant::now());
                }
            }
        });
        Ok(Self { seen, stop, thread: Some(thread) })
    }
}

impl Drop for Floor {
    /// Stops the consumer within one fetch wait, before the broker goes.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
