//! `spinscale-bench`: spinscale's speed measured against a baseline in the same run.
//!
//! Run it from a release build: `cargo build --release && target/release/spinscale-bench`.
//! The server runs as a child process (`spinscale serve`, the `spinscale` binary next to this one), so its memory is its own; this
//! process plays KEDA, the load, an embedded Kafka (librdkafka's mock cluster) and the scraped
//! endpoints. Every figure is reported next to its baseline, as a ratio, since machines are noisy.

mod activator;
mod fleet;
mod kafka_cycle;
mod load;
mod overload;
mod report;
mod server;
mod wakeup;

use std::path::PathBuf;
use std::time::Duration;

use report::Report;

/// The same rank rule as `simulate`'s.
use spinscale::sim::report::percentile;

/// Measure activation latency, unary latency and streams at scale, each against a baseline.
#[derive(Clone, Debug, clap::Parser)]
#[command(version, about)]
pub struct BenchArgs {
    /// Fewer wake-ups and shorter load phases: done within a minute on 2 cores.
    #[arg(long)]
    pub quick: bool,
    /// The KEDA-style poller's interval the wake-ups are compared with (KEDA's pollingInterval).
    #[arg(long, default_value = "30s", value_parser = spinscale_core::duration::parse)]
    pub poll: Duration,
    /// Also write every figure to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Only the overload figures: a 10× flood of unary calls with and without load shedding,
    /// and server memory across stream open/cancel cycles.
    #[arg(long, conflicts_with_all = ["activator", "fleet"])]
    pub overload: bool,
    /// Only the HTTP activator figures: request → stream true and backend ready → held response
    /// (against a 500 ms poller and a 200 ms prober), proxying against nginx and direct,
    /// memory with 1,000 routes and 10,000 held requests, a flood of 3× `maxHeldRequests`
    /// (memory, refusals, gRPC latency at the limit against at rest), and SIGTERM under steady
    /// load (drain). Needs nginx (`apt-get install nginx`).
    #[arg(long, conflicts_with = "fleet")]
    pub activator: bool,
    /// Only the fleet figures: 10,000 apps of four kinds on one server (Prometheus queries that
    /// group and that cannot, scraped endpoints, Kafka apps on the real tansu broker), each
    /// upstream's requests/s against KEDA's one read per app per `--poll`, the server's threads,
    /// memory and CPU; then 10,000 Kafka apps alone, and record → push on tansu with
    /// 500 idle apps. `--quick` runs a tenth of it. Needs `prometheus` and `tansu`.
    #[arg(long)]
    pub fleet: bool,
    /// With `--fleet`: the server's `collectors.tailFetchWait` (default: the server's own default).
    #[arg(long, requires = "fleet", value_parser = spinscale_core::duration::parse)]
    pub tail_fetch_wait: Option<Duration>,
}

/// The sizes of one run.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Wake-ups per signal (Kafka and scrape), all on their own idle targets.
    wakeups: usize,
    /// Events are spread over this window.
    spread: Duration,
    /// Targets registered for the unary and stream phases.
    targets: usize,
    /// Distinct sources those targets share.
    sources: usize,
    /// Concurrent unary callers on one connection.
    callers: usize,
    /// How long each unary phase runs.
    unary_for: Duration,
    /// Consumer groups (of 10 partitions each) read in one Kafka offsets cycle.
    kafka_groups: usize,
}

impl Plan {
    fn of(args: &BenchArgs) -> Self {
        let full = Plan {
            wakeups: 200,
            spread: Duration::from_secs(20),
            targets: 10_000,
            sources: 100,
            callers: 64,
            unary_for: Duration::from_secs(15),
            kafka_groups: 500,
        };
        if args.quick {
            Plan {
                wakeups: 100,
                spread: Duration::from_secs(3),
                unary_for: Duration::from_secs(2),
                kafka_groups: 50,
                ..full
            }
        } else {
            full
        }
    }
}

/// Runs every measurement, prints the table and writes the JSON.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <BenchArgs as clap::Parser>::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,librdkafka=warn,rdkafka=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    run(args).await
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::of(&args);
    let mut report = Report::new(&args);
    if args.overload {
        eprintln!("bench: overload");
        overload::run(&overload::OverloadPlan::of(args.quick), &mut report).await?;
        return finish(&report, &args);
    }
    if args.activator {
        activator::run(&activator::ActivatorPlan::of(args.quick), &mut report).await?;
        return finish(&report, &args);
    }
    if args.fleet {
        fleet::run(&fleet::FleetPlan::of(args.quick, args.poll, args.tail_fetch_wait), &mut report).await?;
        return finish(&report, &args);
    }
    eprintln!("bench: wake-ups ({} Kafka, {} scrape; about {:?})", plan.wakeups, plan.wakeups, plan.spread + args.poll);
    let server = server::ServerProcess::start().await?;
    wakeup::run(&server, &plan, args.poll, &mut report).await?;
    drop(server);
    // A fresh server, so its memory is that of the load phase alone.
    eprintln!("bench: {} targets, unary calls and streams", plan.targets);
    let server = server::ServerProcess::start().await?;
    load::run(&server, &plan, &mut report).await?;
    drop(server);
    eprintln!("bench: Kafka offsets cycle, {} groups", plan.kafka_groups);
    kafka_cycle::run(&plan, &mut report).await?;
    finish(&report, &args)
}

fn finish(report: &Report, args: &BenchArgs) -> anyhow::Result<()> {
    report.print();
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json()?)?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

/// `n` indices at shuffled offsets within `spread`, earliest first: the same schedule every run.
fn schedule(n: usize, spread: Duration, seed: u64) -> Vec<(Duration, usize)> {
    let mut rng = Rng(seed);
    let mut order: Vec<(Duration, usize)> = (0..n).map(|i| (spread.mul_f64(rng.unit()), i)).collect();
    order.sort();
    order
}

/// A small deterministic generator (xorshift): the same schedule every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}
