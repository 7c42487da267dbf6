//! The `spinscale` command: `serve`, `demo` and `simulate`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use spinscale::config::Config;
use spinscale::server::Server;
use tokio::net::TcpListener;
use tracing::info;

/// A KEDA external-push scaler for SpinKube apps: Prometheus request rate and Kafka lag,
/// pushed activation.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text", env = "SPINSCALE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve KEDA's ExternalScaler gRPC protocol (and /healthz, /readyz over HTTP).
    Serve {
        /// gRPC address KEDA connects to (the trigger's `scalerAddress`).
        #[arg(long, default_value = "0.0.0.0:9500", env = "SPINSCALE_GRPC_LISTEN")]
        grpc_listen: SocketAddr,
        /// HTTP address for /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:9501", env = "SPINSCALE_HTTP_LISTEN")]
        http_listen: SocketAddr,
        /// Tuning file (YAML): trigger defaults, collector and target settings. Built-in defaults without it.
        #[arg(long, env = "SPINSCALE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Measure activation latency, unary latency and streams at scale, each against a baseline.
    Bench {
        /// A shorter run (within a minute on 2 cores).
        #[arg(long)]
        quick: bool,
        /// The KEDA-style poller's interval the wake-ups are compared with (KEDA's pollingInterval).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        poll: Duration,
        /// Also write every figure to this file as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Run everything embedded (server, Kafka, load, a KEDA-like client) and print a live timeline.
    Demo {
        /// How long to run, as a Go duration (e.g. 60s, 2m).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Replay a trace through the engine and baseline policies on a virtual clock, and compare them.
    Simulate(spinscale::sim::SimulateArgs),
    /// Rewrite ScaledObjects with KEDA's prometheus/kafka triggers (and their SpinApps) for spinscale.
    Convert {
        /// Multi-document YAML file, or `-` for standard input. The result goes to standard output.
        input: String,
        /// The `scalerAddress` written into the spinscale triggers.
        #[arg(long)]
        scaler_address: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    spinscale::duration::parse(s)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { grpc_listen, http_listen, config } => {
            init_logging(cli.log_format, "info");
            let config = match &config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            let grpc = TcpListener::bind(grpc_listen)
                .await
                .with_context(|| format!("cannot listen on --grpc-listen {grpc_listen}"))?;
            let http = TcpListener::bind(http_listen)
                .await
                .with_context(|| format!("cannot listen on --http-listen {http_listen}"))?;
            let server = Server::start(config, grpc, http).await?;
            let shutdown = server.shutdown_token();
            tokio::spawn(async move {
                wait_for_signal().await;
                info!("signal received: ending streams and stopping");
                shutdown.cancel();
            });
            server.wait().await
        }
        Command::Bench { quick, poll, json } => {
            init_logging(cli.log_format, "error");
            spinscale::bench::run(spinscale::bench::BenchArgs { quick, poll, json }).await
        }
        Command::Demo { duration } => {
            init_logging(cli.log_format, "warn");
            spinscale::demo::run(duration).await
        }
        Command::Simulate(args) => Ok(spinscale::sim::run(&args)?),
        Command::Convert { input, scaler_address } => spinscale::convert::run(&input, scaler_address),
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},librdkafka=warn,rdkafka=warn"))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the process can only be killed; keep serving.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
