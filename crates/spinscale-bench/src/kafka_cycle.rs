//! The Kafka offsets cycle at scale: every watched group of one cluster read in one batched cycle
//! (one Metadata, one ListOffsets per leader broker, the groups' OffsetFetch written back to back
//! to their coordinator), against
//! reading each source on its own (its own Metadata, ListOffsets and OffsetFetch), one after another.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::mocking::MockCluster;

use super::report::{Report, ms, ms_value};
use super::{Plan, percentile};
use spinscale::signals::cluster::{Outcome, offsets_cycle};
use spinscale::signals::committed::CommittedReader;
use spinscale::signals::kafka::ClusterReader;
use spinscale_core::spec::KafkaSource;

const BROKERS: i32 = 3;
const PARTITIONS_PER_GROUP: i32 = 10;
const CYCLES: usize = 5;
/// Sources timed one at a time for the baseline.
const BASELINE_SAMPLE: usize = 20;

pub async fn run(plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let kafka = MockCluster::new(BROKERS).context("mock Kafka cluster")?;
    let groups = plan.kafka_groups;
    for i in 0..groups {
        kafka.create_topic(&format!("cycle-{i}"), PARTITIONS_PER_GROUP, 1)?;
    }
    let bootstrap = kafka.bootstrap_servers();
    let sources: Vec<KafkaSource> = (0..groups)
        .map(|i| KafkaSource {
            bootstrap_servers: bootstrap.clone(),
            consumer_group: format!("cycle-group-{i}"),
            topics: vec![format!("cycle-{i}")],
            partition_limitation: None,
            connection: None,
            security: None,
        })
        .collect();
    let (batched, alone) = tokio::task::spawn_blocking(move || measure(&sources)).await??;
    let partitions = groups * PARTITIONS_PER_GROUP as usize;
    let (ours, theirs) = (percentile(&batched, 0.5), percentile(&alone, 0.5));
    report.row(
        &format!("Kafka lag cycle, {partitions} partitions, {groups} groups, one cluster ({BROKERS} brokers), p50"),
        format!("{} (max {})", ms(ours), ms(batched.last().copied().unwrap_or_default())),
        format!("{} (one source at a time; {BASELINE_SAMPLE} timed, scaled to {groups})", ms(theirs)),
        Some(theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9)),
    );
    report.figure(
        "kafka_cycle",
        serde_json::json!({
            "partitions": partitions, "groups": groups, "brokers": BROKERS, "cycles": CYCLES,
            "batched_p50_ms": ms_value(ours), "batched_max_ms": ms_value(batched.last().copied().unwrap_or_default()),
            "per_source_p50_ms": ms_value(theirs),
        }),
    );
    drop(kafka);
    Ok(())
}

/// Cycle times, sorted: batched (all sources in one cycle), then the same reader asked about one
/// source at a time (each its own Metadata, ListOffsets and OffsetFetch), as unbatched readers would.
fn measure(sources: &[KafkaSource]) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let bootstrap = &sources[0].bootstrap_servers;
    let mut reader = Cycle {
        offsets: Some(ClusterReader::new(bootstrap, None, Duration::from_secs(10))?),
        committed: CommittedReader::new(bootstrap, None, Duration::from_secs(10)),
        runtime: tokio::runtime::Handle::current(),
    };
    warm_up(&mut reader, sources)?;
    let mut batched = Vec::with_capacity(CYCLES);
    for _ in 0..CYCLES {
        let started = Instant::now();
        check(&reader.poll(sources))?;
        batched.push(started.elapsed());
    }
    // Reading every source alone takes minutes at this size: a sample of them is timed and the
    // cycle scaled to all of them (the row says so).
    let sample = &sources[..sources.len().min(BASELINE_SAMPLE)];
    let scale = sources.len() as f64 / sample.len() as f64;
    let mut one_by_one = Vec::with_capacity(CYCLES);
    for _ in 0..2 {
        let started = Instant::now();
        for source in sample {
            check(&reader.poll(std::slice::from_ref(source)))?;
        }
        one_by_one.push(started.elapsed().mul_f64(scale));
    }
    batched.sort();
    one_by_one.sort();
    Ok((batched, one_by_one))
}

/// The two readers of one cycle, as the cluster task runs them.
struct Cycle {
    offsets: Option<ClusterReader>,
    committed: CommittedReader,
    runtime: tokio::runtime::Handle,
}

impl Cycle {
    fn poll(&mut self, sources: &[KafkaSource]) -> Vec<Outcome> {
        let reader = self.offsets.take();
        let cycle = offsets_cycle(&mut self.committed, reader, "", None, Duration::from_secs(10), sources.to_vec());
        let (kept, results) = self.runtime.block_on(cycle);
        self.offsets = kept;
        results
    }
}

/// The first cycle looks up every group's coordinator: repeated until every source answers, and
/// not timed.
fn warm_up(reader: &mut Cycle, sources: &[KafkaSource]) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        match check(&reader.poll(sources)) {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() > Duration::from_secs(120) => return Err(e),
            Err(_) => {}
        }
    }
}

fn check(results: &[Outcome]) -> anyhow::Result<()> {
    match results.iter().find_map(|r| r.as_ref().err()) {
        Some(e) => anyhow::bail!("offsets cycle failed: {e}"),
        None => Ok(()),
    }
}
