//! Load at scale: unary `GetMetrics` + `IsActive` latency with many registered targets and
//! concurrent callers on one connection (baseline: the gRPC health check, a call that does
//! nothing), then many open `StreamIsActive` streams: server memory and push fan-out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::report::{Report, ms, ms_value};
use super::server::ServerProcess;
use super::{Plan, Rng, percentile};
use spinscale::grpc::scaled_object_ref;
use spinscale::proto::external_scaler_client::ExternalScalerClient;
use spinscale::proto::{GetMetricsRequest, ScaledObjectRef};
use spinscale_testkit::Exposition;

type Client = ExternalScalerClient<Channel>;

pub async fn run(server: &ServerProcess, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let rss_idle = server.rss_mib()?;
    report
        .add_note(format!("load phase: a fresh `spinscale serve` child process, {rss_idle:.0} MiB resident at start"));
    let mut endpoints = Vec::with_capacity(plan.sources);
    for _ in 0..plan.sources {
        endpoints.push(Exposition::start("requests_total 0\n").await?);
    }
    let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{}/metrics", e.addr)).collect();
    let refs: Arc<Vec<ScaledObjectRef>> =
        Arc::new((0..plan.targets).map(|i| scrape_ref(&format!("unary-{i}"), &urls[i % urls.len()])).collect());
    let channel = server.channel().await?;
    let client = ExternalScalerClient::new(channel.clone());
    let registering = Instant::now();
    register(&client, &refs, plan.callers).await?;
    let registered_in = registering.elapsed();
    let rss_targets = server.rss_mib()?;

    // Each phase runs once unmeasured first: connections, buffers and caches warm up.
    let warm_up = Plan { unary_for: Duration::from_millis(500), ..*plan };
    unary_latencies(&client, &refs, &warm_up).await?;
    let unary = unary_latencies(&client, &refs, plan).await?;
    health_latencies(&channel, &warm_up).await?;
    let health = health_latencies(&channel, plan).await?;
    for (p, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")] {
        let (ours, base) = (percentile(&unary, p), percentile(&health, p));
        report.row(
            &format!("unary GetMetrics/IsActive, {} targets, {} callers, {name}", plan.targets, plan.callers),
            ms(ours),
            format!("{} (health check)", ms(base)),
            Some(base.as_secs_f64() / ours.as_secs_f64().max(1e-9)),
        );
    }
    report.figure(
        "unary",
        serde_json::json!({
            "targets": plan.targets, "sources": plan.sources, "callers": plan.callers,
            "calls": unary.len(), "calls_per_s": unary.len() as f64 / plan.unary_for.as_secs_f64(),
            "p50_ms": ms_value(percentile(&unary, 0.5)), "p99_ms": ms_value(percentile(&unary, 0.99)),
            "p999_ms": ms_value(percentile(&unary, 0.999)),
            "health_p50_ms": ms_value(percentile(&health, 0.5)), "health_p99_ms": ms_value(percentile(&health, 0.99)),
            "health_p999_ms": ms_value(percentile(&health, 0.999)),
            "registration_s": registered_in.as_secs_f64(),
        }),
    );

    streams(server, &client, plan, report, [rss_idle, rss_targets]).await
}

fn scrape_ref(name: &str, url: &str) -> ScaledObjectRef {
    scaled_object_ref(
        "bench",
        name,
        &[("scalerAddress", "bench"), ("scrapeUrl", url), ("scrapeMetric", "requests_total")],
    )
}

/// Registers every target as KEDA's first poll does: GetMetricSpec, then GetMetrics.
async fn register(client: &Client, refs: &Arc<Vec<ScaledObjectRef>>, callers: usize) -> anyhow::Result<()> {
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (mut client, refs) = (client.clone(), refs.clone());
            tokio::spawn(async move {
                for r in refs.iter().skip(c).step_by(callers) {
                    client.get_metric_spec(r.clone()).await?;
                    client.get_metrics(metrics_request(r)).await?;
                }
                Ok::<_, tonic::Status>(())
            })
        })
        .collect();
    for t in tasks {
        t.await?.context("registering targets")?;
    }
    Ok(())
}

fn metrics_request(r: &ScaledObjectRef) -> GetMetricsRequest {
    GetMetricsRequest { scaled_object_ref: Some(r.clone()), metric_name: "spinscale-replicas".into() }
}

/// `callers` tasks, each calling GetMetrics then IsActive on random targets for the plan's time.
async fn unary_latencies(
    client: &Client,
    refs: &Arc<Vec<ScaledObjectRef>>,
    plan: &Plan,
) -> anyhow::Result<Vec<Duration>> {
    let until = Instant::now() + plan.unary_for;
    let tasks: Vec<_> = (0..plan.callers)
        .map(|c| {
            let (mut client, refs) = (client.clone(), refs.clone());
            tokio::spawn(async move {
                let mut rng = Rng(0x1234_5678 + c as u64);
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let r = &refs[(rng.unit() * refs.len() as f64) as usize % refs.len()];
                    let started = Instant::now();
                    client.get_metrics(metrics_request(r)).await?;
                    latencies.push(started.elapsed());
                    let started = Instant::now();
                    client.is_active(r.clone()).await?;
                    latencies.push(started.elapsed());
                }
                Ok::<_, tonic::Status>(latencies)
            })
        })
        .collect();
    collect(tasks).await
}

async fn health_latencies(channel: &Channel, plan: &Plan) -> anyhow::Result<Vec<Duration>> {
    let until = Instant::now() + plan.unary_for;
    let tasks: Vec<_> = (0..plan.callers)
        .map(|_| {
            let mut client = HealthClient::new(channel.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    client.check(HealthCheckRequest { service: String::new() }).await?;
                    latencies.push(started.elapsed());
                }
                Ok::<_, tonic::Status>(latencies)
            })
        })
        .collect();
    collect(tasks).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<Duration>, tonic::Status>>>,
) -> anyhow::Result<Vec<Duration>> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    Ok(all)
}

/// Opens one stream per target of a single shared source, then one counter increase on that
/// source activates them all: how much memory, and how long until the last `true` arrives.
async fn streams(
    server: &ServerProcess,
    client: &Client,
    plan: &Plan,
    report: &mut Report,
    [rss_idle, rss_targets]: [f64; 2],
) -> anyhow::Result<()> {
    let source = Exposition::start("requests_total 0\n").await?;
    let url = format!("http://{}/metrics", source.addr);
    let refs: Arc<Vec<ScaledObjectRef>> =
        Arc::new((0..plan.targets).map(|i| scrape_ref(&format!("stream-{i}"), &url)).collect());
    register(client, &refs, plan.callers).await?;
    let (trues, mut received) = mpsc::unbounded_channel();
    let mut watchers = Vec::with_capacity(refs.len());
    for r in refs.iter() {
        let mut stream = client.clone().stream_is_active(r.clone()).await?.into_inner();
        let trues = trues.clone();
        watchers.push(tokio::spawn(async move {
            if let Ok(Some(m)) = stream.message().await
                && m.result
            {
                let _ = trues.send(Instant::now());
            }
            // Keep the stream open until the bench ends.
            std::future::pending::<()>().await;
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_streams = server.rss_mib()?;

    let event = Instant::now();
    source.set("requests_total 1\n");
    let (mut first, mut last) = (None, None);
    let mut count = 0;
    while count < refs.len() {
        match tokio::time::timeout(Duration::from_secs(10), received.recv()).await {
            Ok(Some(at)) => {
                first.get_or_insert(at);
                last = Some(at);
                count += 1;
            }
            _ => break,
        }
    }
    watchers.iter().for_each(tokio::task::JoinHandle::abort);
    let to_first = first.map(|f| f - event).unwrap_or_default();
    let fan_out = first.zip(last).map(|(f, l)| l - f).unwrap_or_default();
    let n = plan.targets;
    report.row(
        &format!("server RSS: {n} targets with open streams (+ {n} unary targets)"),
        format!("{rss_streams:.0} MiB"),
        format!("{rss_idle:.0} MiB at start, {rss_targets:.0} MiB with the {n} unary targets"),
        None,
    );
    report.row(
        &format!("one source event → all {n} streams true (received {count})"),
        format!("{} (fan-out {} after the first)", ms(to_first + fan_out), ms(fan_out)),
        "scrape interval 1 s".into(),
        None,
    );
    report.figure(
        "streams",
        serde_json::json!({
            "streams": n, "received": count,
            "rss_start_mib": rss_idle, "rss_targets_mib": rss_targets, "rss_streams_mib": rss_streams,
            "event_to_first_ms": ms_value(to_first), "fan_out_ms": ms_value(fan_out),
            "event_to_last_ms": ms_value(to_first + fan_out),
        }),
    );
    Ok(())
}
