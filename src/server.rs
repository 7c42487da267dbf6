//! Wiring: the gRPC server (ExternalScaler + health), the HTTP endpoints (`/healthz`, `/readyz`,
//! `/metrics`, `/status`, `/status.json`) and the live config, with graceful shutdown.
//!
//! [`Server::start`] takes bound listeners (tests bind port 0) and returns a handle; shutdown ends
//! every open stream with status OK, so KEDA reconnects after 2 s instead of a grown backoff.
//!
//! Within the crate it may use [`admission`](crate::admission), [`config`](crate::config),
//! [`grpc`](crate::grpc), [`peers`](crate::peers), [`proto`](crate::proto),
//! [`registry`](crate::registry), [`reload`], [`status`], [`telemetry`] and [`tls`]; nothing else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admission::AdmissionLayer;
use crate::config::Config;
use crate::grpc::GrpcMetricsLayer;
use crate::grpc::Scaler;
use crate::ingresses::{self, HostIndex};
use crate::peers::{self, Demand, PeerList, Peers};
use crate::proto::external_scaler_server::ExternalScalerServer;
use crate::registry::Registry;
use crate::reload::{self, ConfigSource};
use crate::status;
use crate::telemetry;
use crate::tls::{self, Certificates, TlsFiles};
use spinscale_activator::endpoints;

/// How long shutdown waits for connections to drain before giving up on them.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// What a server runs besides the gRPC service and the HTTP endpoints.
#[derive(Default)]
pub struct Options {
    /// The gRPC port speaks TLS (mTLS with a client CA); the files are re-read while serving.
    /// The HTTP port stays plain (probes, scrapes).
    pub tls: Option<TlsFiles>,
    /// The HTTP activator's listener: requests for apps at zero are held here while they wake.
    pub activator: Option<TcpListener>,
    /// Other replicas to tell of every request held here (and to hear from).
    pub peers: Option<PeerList>,
    /// In a cluster: watch EndpointSlices, so held requests go the moment a backend is ready.
    pub endpoints: Option<kube::Client>,
    /// In a cluster: watch Ingresses and HTTPRoutes, so a trigger may claim only the hosts its
    /// own namespace routes.
    pub ingresses: Option<kube::Client>,
}

/// A running spinscale server.
pub struct Server {
    /// Where the gRPC service (ExternalScaler, health) listens.
    pub grpc_addr: SocketAddr,
    /// Where the HTTP endpoints (probes, `/metrics`, `/status`, peer demand) listen.
    pub http_addr: SocketAddr,
    /// Where the HTTP activator listens, when it runs.
    pub activator_addr: Option<SocketAddr>,
    /// The live targets, shared with every endpoint.
    pub registry: Arc<Registry>,
    /// Cancelled on SIGTERM: `/readyz` fails, everything keeps serving for the drain period.
    draining: CancellationToken,
    /// Cancelled after the drain period: listeners close, streams end OK, the server stops.
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Starts serving plain-text gRPC on already-bound listeners.
    pub async fn start(config: Config, grpc: TcpListener, http: TcpListener) -> anyhow::Result<Self> {
        Self::start_with(config, grpc, http, Options::default()).await
    }

    /// Starts serving with [`Options`]: TLS on the gRPC port, the HTTP activator.
    pub async fn start_with(
        config: Config,
        grpc: TcpListener,
        http: TcpListener,
        options: Options,
    ) -> anyhow::Result<Self> {
        let certificates = options.tls.map(Certificates::load).transpose()?;
        let grpc_addr = grpc.local_addr()?;
        let http_addr = http.local_addr()?;
        let (draining, shutdown) = (CancellationToken::new(), CancellationToken::new());
        let drain_period = options.activator.as_ref().map_or(Duration::ZERO, |_| config.activator.drain_period.0);
        let registry = Registry::new(config)?;
        if let Some(list) = options.peers {
            let Some(token_file) = registry.config().activator.peer_token_file.clone() else {
                anyhow::bail!(
                    "--peers and --peer-service need activator.peerTokenFile in the config: replicas \
                     authenticate each other's demand with that shared token (POST /peer/demand would \
                     otherwise let anyone who reaches the port wake any app)"
                );
            };
            peers::read_token(&token_file).map_err(|e| anyhow::anyhow!("activator.peerTokenFile: {e}"))?;
            // The collectors' client: pooled, TCP_NODELAY, with the CA fallback of `outbound`.
            registry.set_peers(Peers::new(list, token_file, registry.hub().http().clone()));
        }
        let host_index = options.ingresses.map(|client| {
            let index = HostIndex::new();
            registry.set_host_owners(index.clone());
            (client, index)
        });
        // The activator and its config routes exist before the first gRPC call can ask for a route.
        let mut activator_addr = None;
        let mut activator_serve = None;
        if let Some(listener) = options.activator {
            activator_addr = Some(listener.local_addr()?);
            let activator = registry.enable_activator();
            let routes = &registry.config().routes;
            registry.apply_static_routes(&[], routes).map_err(|p| anyhow::anyhow!("config: {}", p.join("; ")))?;
            activator_serve = Some((activator, listener, options.endpoints));
        }

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<ExternalScalerServer<Scaler>>().await;
        let scaler = ExternalScalerServer::new(Scaler::new(registry.clone(), shutdown.clone()));
        let router = tonic::transport::Server::builder()
            .layer(GrpcMetricsLayer(registry.telemetry().clone()))
            .layer(AdmissionLayer::new(registry.clone()))
            .add_service(health_service)
            .add_service(scaler);
        let mut tasks = Vec::new();
        let until_shutdown = shutdown.clone().cancelled_owned();
        let grpc_task = match certificates {
            None => tokio::spawn(async move {
                // Without TCP_NODELAY a pushed message can wait for the client's delayed ACK (tens of ms).
                let incoming = TcpListenerStream::new(grpc).map(|conn| {
                    let conn = conn?;
                    conn.set_nodelay(true)?;
                    Ok::<_, std::io::Error>(conn)
                });
                router.serve_with_incoming_shutdown(incoming, until_shutdown).await?;
                Ok(())
            }),
            Some(certificates) => {
                let follow = certificates.clone().follow(shutdown.clone());
                tasks.push(tokio::spawn(async move {
                    follow.await;
                    Ok(())
                }));
                let incoming = tls::incoming(grpc, certificates, shutdown.clone());
                tokio::spawn(async move {
                    router.serve_with_incoming_shutdown(incoming, until_shutdown).await?;
                    Ok(())
                })
            }
        };
        tasks.push(grpc_task);

        let http_task = tokio::spawn({
            let (draining, shutdown) = (draining.clone(), shutdown.clone());
            let registry = registry.clone();
            async move {
                axum::serve(http, http_router(registry, draining))
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await?;
                Ok(())
            }
        });

        let evictions = tokio::spawn({
            let registry = registry.clone();
            let shutdown = shutdown.clone();
            async move {
                registry.run_evictions(shutdown).await;
                Ok(())
            }
        });
        if let Some((client, index)) = host_index {
            let follow = ingresses::follow(client, index, shutdown.clone());
            tasks.push(tokio::spawn(async move {
                follow.await;
                Ok(())
            }));
        }
        info!(grpc = %grpc_addr, http = %http_addr, "spinscale listening");
        tasks.extend([http_task, evictions]);
        if let Some((activator, listener, endpoints)) = activator_serve {
            if let Some(client) = endpoints {
                let follow = endpoints::follow(client, endpoints::poker(activator.clone()), shutdown.clone());
                tasks.push(tokio::spawn(async move {
                    follow.await;
                    Ok(())
                }));
            }
            tasks.push(tokio::spawn(activator.serve(listener, shutdown.clone())));
        }
        // SIGTERM → drain: /readyz fails at once, so load balancers stop sending, while every
        // listener keeps serving (held requests keep being released) for the drain period.
        tasks.push(tokio::spawn({
            let (draining, shutdown) = (draining.clone(), shutdown.clone());
            async move {
                tokio::select! {
                    _ = draining.cancelled() => {
                        if !drain_period.is_zero() {
                            info!("draining for {drain_period:?} before closing the listeners");
                            tokio::select! {
                                _ = tokio::time::sleep(drain_period) => {}
                                _ = shutdown.cancelled() => {}
                            }
                        }
                        shutdown.cancel();
                    }
                    _ = shutdown.cancelled() => {}
                }
                Ok(())
            }
        }));
        Ok(Self { grpc_addr, http_addr, activator_addr, registry, draining, shutdown, tasks })
    }

    /// Follows `source` and applies every change to the running server, until shutdown.
    pub fn follow_config(&mut self, source: ConfigSource) {
        let run = reload::follow(source, self.registry.clone(), self.shutdown.clone());
        self.tasks.push(tokio::spawn(async move {
            run.await;
            Ok(())
        }));
    }

    /// A token that, when cancelled, shuts the server down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Ends every stream with OK, stops accepting, and waits (bounded) for the servers to stop.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.draining.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after its shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.shutdown.cancelled().await;
        let all = futures_util::future::join_all(self.tasks);
        match tokio::time::timeout(DRAIN_DEADLINE, all).await {
            Ok(results) => {
                for result in results {
                    result??;
                }
                info!("spinscale stopped");
            }
            Err(_) => info!("spinscale stopped; some connections did not drain within {DRAIN_DEADLINE:?}"),
        }
        Ok(())
    }
}

/// A peer replica holds a request for a target.
async fn peer_demand(
    State(registry): State<Arc<Registry>>,
    headers: axum::http::HeaderMap,
    Json(demand): Json<Demand>,
) -> (StatusCode, &'static str) {
    let Some(token_file) = registry.config().activator.peer_token_file.clone() else {
        return (StatusCode::FORBIDDEN, "no peer token is configured (activator.peerTokenFile)\n");
    };
    let token = match peers::read_token(&token_file) {
        Ok(token) => token,
        Err(e) => {
            warn!("peer demand refused: {e}");
            return (StatusCode::SERVICE_UNAVAILABLE, "the peer token cannot be read\n");
        }
    };
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return (StatusCode::UNAUTHORIZED, "Authorization: Bearer <peer token> required\n");
    };
    if !peers::authorized(given, &token) {
        return (StatusCode::FORBIDDEN, "wrong peer token\n");
    }
    if registry.peer_id() != Some(demand.sender) {
        registry.peer_demand(&demand.target);
    }
    (StatusCode::NO_CONTENT, "")
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)], registry.telemetry().encode())
}

async fn status_json(State(registry): State<Arc<Registry>>) -> Json<Vec<status::TargetStatus>> {
    Json(status::snapshot(&registry))
}

async fn status_page(State(registry): State<Arc<Registry>>) -> Html<String> {
    Html(status::html(&status::snapshot(&registry)))
}

fn http_router(registry: Arc<Registry>, draining: CancellationToken) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let draining = draining.is_cancelled();
                async move {
                    if draining {
                        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                    } else {
                        (StatusCode::OK, "ready\n")
                    }
                }
            }),
        )
        .route("/metrics", get(metrics))
        .route("/status", get(status_page))
        .route("/status.json", get(status_json))
        .route("/peer/demand", post(peer_demand))
        .with_state(registry)
}
