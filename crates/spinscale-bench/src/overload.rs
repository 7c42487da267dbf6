//! Overload (`--overload`): unary calls offered at ten times the rate the server sustains, with
//! load shedding (`limits.maxConcurrentCalls`) against the same flood without it; then server
//! memory across many stream open/cancel cycles.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tonic::Code;
use tonic::transport::Channel;

use super::percentile;
use super::report::{Report, ms, ms_value};
use super::server::{CONFIG, ServerProcess};
use spinscale::grpc::scaled_object_ref;
use spinscale::proto::ScaledObjectRef;
use spinscale::proto::external_scaler_client::ExternalScalerClient;
use spinscale_testkit::Exposition;

/// Unary calls admitted at once by the shedding server.
const LIMIT: usize = 32;
/// Connections the load is spread over (KEDA uses one; several keep the client from being the bottleneck).
const CONNECTIONS: usize = 4;

/// The sizes of one overload run.
pub struct OverloadPlan {
    pub phase: Duration,
    pub stream_cycles: usize,
}

impl OverloadPlan {
    pub fn of(quick: bool) -> Self {
        if quick {
            Self { phase: Duration::from_secs(2), stream_cycles: 20_000 }
        } else {
            Self { phase: Duration::from_secs(5), stream_cycles: 100_000 }
        }
    }
}

/// What an open-loop flood got back.
struct Flood {
    offered_per_s: f64,
    /// Latencies of the admitted calls, from sending to the answer.
    admitted: Vec<Duration>,
    shed: usize,
    other_errors: usize,
}

impl Flood {
    fn calls(&self) -> usize {
        self.admitted.len() + self.shed + self.other_errors
    }

    fn figures(&self) -> serde_json::Value {
        serde_json::json!({
            "achieved_offered_per_s": self.offered_per_s,
            "ok": self.admitted.len(), "shed": self.shed, "errors": self.other_errors, "calls": self.calls(),
            "p50_ms": ms_value(percentile(&self.admitted, 0.5)),
            "p99_ms": ms_value(percentile(&self.admitted, 0.99)),
        })
    }
}

pub async fn run(plan: &OverloadPlan, report: &mut Report) -> anyhow::Result<()> {
    let source = Exposition::start("requests_total 0\n").await?;
    let url = format!("http://{}/metrics", source.addr);
    let target = scaled_object_ref("bench", "overload", &[("scrapeUrl", &url), ("scrapeMetric", "requests_total")]);

    let shedding = ServerProcess::start_with(&format!("{CONFIG}limits:\n  maxConcurrentCalls: {LIMIT}\n")).await?;
    let clients = connect(&shedding).await?;
    clients[0].clone().get_metric_spec(target.clone()).await?;
    let sustained = closed_loop(&clients, &target, plan.phase).await?;
    let offered = sustained * 10.0;
    eprintln!("bench: sustained {sustained:.0} calls/s; flooding at {offered:.0} calls/s");
    let with_shedding = flood(&clients, &target, sustained, plan.phase).await;

    let unlimited = ServerProcess::start_with(&format!("{CONFIG}limits:\n  maxConcurrentCalls: 100000000\n")).await?;
    let base_clients = connect(&unlimited).await?;
    base_clients[0].clone().get_metric_spec(target.clone()).await?;
    let without = flood(&base_clients, &target, sustained, plan.phase).await;
    drop(unlimited);

    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        let (ours, base) = (percentile(&with_shedding.admitted, p), percentile(&without.admitted, p));
        report.row(
            &format!("10× overload ({offered:.0} calls/s, {} callers), admitted calls' {name}", LIMIT * 10),
            ms(ours),
            format!("{} (no shedding)", ms(base)),
            Some(base.as_secs_f64() / ours.as_secs_f64().max(1e-9)),
        );
    }
    report.row(
        "10× overload: calls sent / answered OK / shed (RESOURCE_EXHAUSTED)",
        format!("{} / {} / {}", with_shedding.calls(), with_shedding.admitted.len(), with_shedding.shed),
        format!("{} / {} / {} (no shedding)", without.calls(), without.admitted.len(), without.shed),
        None,
    );

    let (before, after) = stream_churn(&shedding, &clients, &target, plan.stream_cycles).await?;
    report.row(
        &format!("server RSS across {} stream open/cancel cycles", plan.stream_cycles),
        format!("{after:.1} MiB after"),
        format!("{before:.1} MiB before"),
        None,
    );
    report.figure(
        "overload",
        serde_json::json!({
            "sustained_calls_per_s": sustained,
            "offered_calls_per_s": offered,
            "max_concurrent_calls": LIMIT,
            "shedding": with_shedding.figures(),
            "no_shedding": without.figures(),
            "stream_cycles": plan.stream_cycles, "rss_before_mib": before, "rss_after_mib": after,
        }),
    );
    Ok(())
}

type Client = ExternalScalerClient<Channel>;

async fn connect(server: &ServerProcess) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(server.connect().await?);
    }
    Ok(clients)
}

/// Calls per second that `LIMIT` callers in a closed loop get answered: what the server sustains.
async fn closed_loop(clients: &[Client], target: &ScaledObjectRef, phase: Duration) -> anyhow::Result<f64> {
    let until = Instant::now() + phase;
    let mut callers = JoinSet::new();
    for c in 0..LIMIT {
        let (mut client, target) = (clients[c % clients.len()].clone(), target.clone());
        callers.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < until {
                client.is_active(target.clone()).await?;
                done += 1;
            }
            Ok::<_, tonic::Status>(done)
        });
    }
    let mut total = 0;
    while let Some(done) = callers.join_next().await {
        total += done??;
    }
    Ok(total as f64 / phase.as_secs_f64())
}

/// Ten times the sustaining callers, each calling at the pace one caller kept while the server
/// sustained its rate: ten times the load, in flight at most one call per caller (as KEDA's
/// workers). A caller whose call is still out when its next is due skips that turn.
async fn flood(clients: &[Client], target: &ScaledObjectRef, sustained: f64, phase: Duration) -> Flood {
    let callers = LIMIT * 10;
    let pace = Duration::from_secs_f64(LIMIT as f64 / sustained.max(1.0));
    let started = Instant::now();
    let until = started + phase;
    let mut tasks = JoinSet::new();
    for c in 0..callers {
        let (mut client, target) = (clients[c % clients.len()].clone(), target.clone());
        // Spread the callers' turns over one pace.
        let first = started + pace.mul_f64(c as f64 / callers as f64);
        tasks.spawn(async move {
            let mut out = Flood { offered_per_s: 0.0, admitted: Vec::new(), shed: 0, other_errors: 0 };
            let mut turn = first;
            let mut calls = 0u32;
            while turn < until {
                tokio::time::sleep_until(turn.into()).await;
                let sent = Instant::now();
                calls += 1;
                match client.is_active(target.clone()).await {
                    Ok(_) => out.admitted.push(sent.elapsed()),
                    Err(status) if status.code() == Code::ResourceExhausted => out.shed += 1,
                    Err(_) => out.other_errors += 1,
                }
                while turn <= Instant::now() {
                    turn += pace;
                }
            }
            out.offered_per_s = f64::from(calls);
            out
        });
    }
    let mut all = Flood { offered_per_s: 0.0, admitted: Vec::new(), shed: 0, other_errors: 0 };
    while let Some(Ok(one)) = tasks.join_next().await {
        all.offered_per_s += one.offered_per_s;
        all.admitted.extend(one.admitted);
        all.shed += one.shed;
        all.other_errors += one.other_errors;
    }
    all.offered_per_s /= started.elapsed().as_secs_f64();
    all.admitted.sort();
    all
}

/// Server memory before and after `cycles` streams opened and cancelled (KEDA reconnecting).
async fn stream_churn(
    server: &ServerProcess,
    clients: &[Client],
    target: &ScaledObjectRef,
    cycles: usize,
) -> anyhow::Result<(f64, f64)> {
    let cycle = |n: usize| {
        let mut tasks = JoinSet::new();
        for client in clients {
            let (mut client, target) = (client.clone(), target.clone());
            tasks.spawn(async move {
                for _ in 0..n / CONNECTIONS.max(1) {
                    let stream = client.stream_is_active(target.clone()).await?;
                    drop(stream);
                }
                Ok::<_, tonic::Status>(())
            });
        }
        tasks
    };
    let mut warm = cycle(2_000);
    while let Some(done) = warm.join_next().await {
        done??;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_mib()?;
    let mut churn = cycle(cycles);
    while let Some(done) = churn.join_next().await {
        done??;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((before, server.rss_mib()?))
}
