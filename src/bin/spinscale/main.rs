//! The `spinscale` command: `serve`, `check-config`, `demo`, `simulate` and `convert`.
//!
//! `demo` lives here, not in the library: it is the only part that embeds test components
//! (a mock Kafka cluster, a Prometheus process), so the library stays the product alone.

mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use spinscale::config::Config;
use spinscale::peers::PeerList;
use spinscale::reload::{self, ConfigSource};
use spinscale::server::{Options, Server};
use spinscale::tls::TlsFiles;
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
    /// Serve KEDA's ExternalScaler gRPC protocol (and /healthz, /readyz, /metrics, /status over HTTP).
    Serve {
        /// gRPC address KEDA connects to (the trigger's `scalerAddress`).
        #[arg(long, default_value = "0.0.0.0:9500", env = "SPINSCALE_GRPC_LISTEN")]
        grpc_listen: SocketAddr,
        /// HTTP address for /healthz, /readyz, /metrics, /status and /status.json.
        #[arg(long, default_value = "0.0.0.0:9501", env = "SPINSCALE_HTTP_LISTEN")]
        http_listen: SocketAddr,
        /// Tuning file (YAML): trigger defaults, profiles, collector, target and engine settings.
        /// Re-read while serving: a valid change applies live, an invalid one is logged and ignored.
        /// Built-in defaults without it.
        #[arg(long, env = "SPINSCALE_CONFIG")]
        config: Option<PathBuf>,
        /// Read the tuning config from this ConfigMap's `config.yaml` key (NAMESPACE/NAME) and watch
        /// it through the Kubernetes API (in-cluster credentials or the kubeconfig).
        #[arg(long, env = "SPINSCALE_CONFIGMAP", conflicts_with = "config", value_parser = parse_configmap)]
        configmap: Option<(String, String)>,
        /// Serve gRPC over TLS with this PEM certificate chain (re-read when it changes).
        #[arg(long, env = "SPINSCALE_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, env = "SPINSCALE_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require client certificates signed by this PEM CA (mTLS; KEDA's `tlsClientCert`).
        #[arg(long, env = "SPINSCALE_TLS_CLIENT_CA", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        /// Serve the HTTP activator here: requests for apps at zero are held while they wake, and
        /// counted (triggers with `hosts` and `backend`). Off unless given.
        #[arg(long, env = "SPINSCALE_ACTIVATOR_LISTEN")]
        activator_listen: Option<SocketAddr>,
        /// Other spinscale replicas' HTTP ports (HOST:PORT, comma list): a request held here is
        /// announced to them at once, so a KEDA stream held by any replica sees it.
        #[arg(long, env = "SPINSCALE_PEERS", value_delimiter = ',', conflicts_with = "peer_service")]
        peers: Vec<String>,
        /// The replicas as a headless Service's DNS name and HTTP port (NAME:PORT), resolved on use.
        #[arg(long, env = "SPINSCALE_PEER_SERVICE", value_parser = spinscale::peers::parse_service)]
        peer_service: Option<PeerList>,
        /// Watch EndpointSlices through the Kubernetes API (in-cluster credentials or the
        /// kubeconfig): held requests go the moment their backend Service has a ready endpoint.
        #[arg(long, env = "SPINSCALE_WATCH_ENDPOINTS", requires = "activator_listen")]
        watch_endpoints: bool,
        /// Watch Ingresses and Gateway API HTTPRoutes through the Kubernetes API: a trigger may
        /// claim in `hosts` only a host that an Ingress or HTTPRoute of its own namespace serves.
        #[arg(long, env = "SPINSCALE_WATCH_INGRESSES", requires = "activator_listen")]
        watch_ingresses: bool,
    },
    /// Validate a tuning config file offline; exits non-zero with every reason when it is not valid.
    CheckConfig {
        /// The config file (`-` for stdin).
        file: PathBuf,
    },
    /// Run everything embedded (server, Kafka, load, a KEDA-like client) and print a live timeline.
    Demo {
        /// How long to run, as a Go duration (e.g. 60s, 2m).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
        /// The HTTP activator instead: bursts of requests to an app at zero, held and answered.
        #[arg(long)]
        activator: bool,
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
        /// Put spinscale's activator in front of HTTP apps: an Ingress that routes to an app's
        /// Service points at the activator, and the app's trigger gains `hosts` and `backend`.
        #[arg(long)]
        activator: bool,
        /// Write spinscale's connections and its Deployment patch, for the converted credentials,
        /// to this file instead of standard error.
        #[arg(long, value_name = "FILE")]
        config_out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    spinscale_core::duration::parse(s)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            grpc_listen,
            http_listen,
            config,
            configmap,
            tls_cert,
            tls_key,
            tls_client_ca,
            activator_listen,
            peers,
            peer_service,
            watch_endpoints,
            watch_ingresses,
        } => {
            init_logging(cli.log_format, "info");
            let (initial, source) = match (config, configmap) {
                (Some(path), _) => (Config::load(&path)?, Some(ConfigSource::File(path))),
                (None, Some((namespace, name))) => {
                    let client = kube::Client::try_default()
                        .await
                        .context("--configmap needs Kubernetes credentials (in-cluster or a kubeconfig)")?;
                    let initial = reload::fetch_configmap(client.clone(), &namespace, &name).await?;
                    (initial, Some(ConfigSource::ConfigMap { client, namespace, name }))
                }
                (None, None) => (Config::default(), None),
            };
            let grpc = TcpListener::bind(grpc_listen)
                .await
                .with_context(|| format!("cannot listen on --grpc-listen {grpc_listen}"))?;
            let http = TcpListener::bind(http_listen)
                .await
                .with_context(|| format!("cannot listen on --http-listen {http_listen}"))?;
            let tls = tls_cert.zip(tls_key).map(|(cert, key)| TlsFiles { cert, key, client_ca: tls_client_ca });
            let activator = match activator_listen {
                Some(addr) => Some(
                    TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("cannot listen on --activator-listen {addr}"))?,
                ),
                None => None,
            };
            let peers = peer_service.or((!peers.is_empty()).then_some(PeerList::Static(peers)));
            let mut client = match &source {
                Some(ConfigSource::ConfigMap { client, .. }) => Some(client.clone()),
                _ => None,
            };
            let endpoints = match watch_endpoints {
                true => Some(kube_client(&mut client, "--watch-endpoints").await?),
                false => None,
            };
            let ingresses = match watch_ingresses {
                true => Some(kube_client(&mut client, "--watch-ingresses").await?),
                false => None,
            };
            let options = Options { tls, activator, peers, endpoints, ingresses };
            let mut server = Server::start_with(initial, grpc, http, options).await?;
            if let Some(source) = source {
                server.follow_config(source);
            }
            let shutdown = server.shutdown_token();
            tokio::spawn(async move {
                wait_for_signal().await;
                info!("signal received: ending streams and stopping");
                shutdown.cancel();
            });
            server.wait().await
        }
        Command::Demo { duration, activator } => {
            init_logging(cli.log_format, "warn");
            match activator {
                true => demo::http::run(duration.min(Duration::from_secs(600))).await,
                false => demo::run(duration).await,
            }
        }
        Command::Simulate(args) => Ok(spinscale::sim::run(&args)?),
        Command::CheckConfig { file } => check_config(&file),
        Command::Convert { input, scaler_address, activator, config_out } => {
            spinscale::convert::run(&input, scaler_address, activator, config_out.as_deref())
        }
    }
}

/// The one Kubernetes client of the process, created on first need for `flag`.
async fn kube_client(client: &mut Option<kube::Client>, flag: &str) -> anyhow::Result<kube::Client> {
    if let Some(client) = client {
        return Ok(client.clone());
    }
    let created = kube::Client::try_default()
        .await
        .with_context(|| format!("{flag} needs Kubernetes credentials (in-cluster or a kubeconfig)"))?;
    *client = Some(created.clone());
    Ok(created)
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let checked = if file.as_os_str() == "-" {
        let text = std::io::read_to_string(std::io::stdin()).context("reading the config from stdin")?;
        Config::parse(&text)
    } else {
        Config::load(file)
    };
    match checked {
        Ok(config) => {
            println!(
                "{}: valid ({} default keys, {} profiles)",
                file.display(),
                config.defaults.len(),
                config.profiles.len()
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

fn parse_configmap(s: &str) -> Result<(String, String), String> {
    spinscale::config::split_namespaced(s)
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
        .ok_or_else(|| format!("{s:?} is not NAMESPACE/NAME"))
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
