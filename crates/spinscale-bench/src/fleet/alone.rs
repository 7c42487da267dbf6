//! Kafka apps alone at the fleet's largest count, on one cluster and a fresh server: threads,
//! memory (registered, then with a stream open per app) and CPU, and the Kafka requests where
//! they can be counted.

use serde_json::json;

use super::kafka::Kafka;
use super::keda::{Pollers, Streams};
use super::{FleetPlan, Probes, REGISTER_LIMIT, SETTLE, kafka_ref, kafka_rows, probe};
use crate::report::Report;
use crate::server::ServerProcess;

/// The goals of issue 15 for this many Kafka apps on one cluster.
const GOAL_THREADS: usize = 64;
const GOAL_RSS_MIB: f64 = 300.0;

pub async fn run(plan: &FleetPlan, report: &mut Report) -> anyhow::Result<()> {
    let n = plan.kafka_alone;
    // The real broker where it is installed; librdkafka's mock cluster otherwise.
    let kafka = match Kafka::tansu().await? {
        Some(tansu) => tansu,
        None => Kafka::mock()?,
    };
    eprintln!("bench: fleet: {n} Kafka apps alone on the {}", kafka.name());
    let topics: Vec<String> = (0..n).map(|i| format!("alone-{i}")).collect();
    kafka.create_topics(&topics).await?;
    let server = ServerProcess::start_with(&plan.config()).await?;
    let client = server.connect().await?;
    let at_start = probe::usage(server.pid())?;
    let refs: Vec<_> = (0..n)
        .map(|i| kafka_ref(&format!("alone-{i}"), &kafka.bootstrap, &format!("alone-group-{i}"), &topics[i]))
        .collect();
    let started = std::time::Instant::now();
    super::keda::register(&client, &refs, REGISTER_LIMIT).await?;
    let registered_in = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let registered = probe::usage(server.pid())?;
    let streams = Streams::open(&client, &refs).await?;
    let pollers = Pollers::start(&client, &refs, plan.poll, 0xa10e);
    tokio::time::sleep(SETTLE).await;
    let http = reqwest::Client::new();
    let probes = Probes::kafka_only(server.pid(), &http, &kafka);
    let w = probes.window(plan.window).await?;
    let what = format!("{n} Kafka apps alone, one cluster ({}), {n} streams", kafka.name());
    report.row(
        &format!("{what}: threads"),
        w.after.threads.to_string(),
        format!("goal ≤ {GOAL_THREADS} ({} at start)", at_start.threads),
        None,
    );
    report.row(
        &format!("{what}: RSS"),
        format!("{:.0} MiB ({:.0} MiB before the streams)", w.after.rss_mib, registered.rss_mib),
        format!("goal ≤ {GOAL_RSS_MIB:.0} MiB ({:.0} MiB at start)", at_start.rss_mib),
        None,
    );
    report.row(&format!("{what}: CPU"), format!("{:.0} % of a core", 100.0 * w.cores()), "-".into(), None);
    kafka_rows(report, &w, n, &kafka, plan.poll, &format!("{n} Kafka apps alone"));
    let calls = pollers.calls.load(std::sync::atomic::Ordering::Relaxed);
    let failed = pollers.failed.load(std::sync::atomic::Ordering::Relaxed);
    report.figure(
        "kafka_alone",
        json!({
            "apps": n, "broker": kafka.name(), "registration_s": registered_in.as_secs_f64(),
            "at_start": {"threads": at_start.threads, "rss_mib": at_start.rss_mib},
            "registered": {"threads": registered.threads, "rss_mib": registered.rss_mib},
            "window": w.json(), "keda_calls": calls, "keda_failed": failed,
        }),
    );
    report.add_note(format!(
        "Kafka alone: {n} apps registered in {:.1} s; KEDA polls {calls} calls, {failed} failed",
        registered_in.as_secs_f64()
    ));
    drop(streams);
    drop(pollers);
    Ok(())
}
