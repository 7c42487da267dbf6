//! spinscale: a KEDA external-push scaler for SpinKube apps.
//!
//! KEDA asks, per ScaledObject, "is this app active?" and "what is its metric?"; spinscale answers
//! from signals it watches itself (Prometheus request rate, Kafka consumer lag) and pushes
//! "active" over `StreamIsActive` the moment an app must wake up.
//!
//! The flow, one way: trigger spec (`spinscale_core::spec`) → [`signals`] → engine
//! (`spinscale_core::engine`) → [`registry`] → [`grpc`] / [`telemetry`] and [`status`] / the
//! activator (`spinscale_activator`) → [`server`].
//!
//! - [`config`]: the tuning file and its defaults; [`reload`]: following it live;
//! - [`signals`]: one collector per distinct source (Prometheus, exposition scrape, Kafka);
//! - [`registry`]: live targets, their tasks and decision channels, activator routes, peer demand;
//! - [`grpc`]: KEDA's `ExternalScaler` service; [`admission`]: its load shedding;
//! - [`telemetry`]: the `/metrics` families; [`history`]: the last hour per target; [`status`]: the page;
//! - [`ingresses`]: which namespace serves which host (`--watch-ingresses`);
//! - [`ingresses`]: which namespace serves which host (`--watch-ingresses`);
//! - [`outbound`]: the HTTP client for outbound calls (CA roots that never fail the start);
//! - [`peers`]: demand shared between replicas; [`tls`]: certificates that reload;
//! - [`server`]: wiring and graceful shutdown;
//! - [`sim`]: `spinscale simulate`, trace replay through the engine on a virtual clock;
//! - [`convert`]: `spinscale convert`, KEDA prometheus/kafka manifests rewritten for spinscale.
//!
//! Module arrows point one way; `docs/architecture.md` lists who may use whom.

#![deny(missing_docs)]

pub mod admission;
pub mod codec;
pub mod config;
pub mod convert;
pub mod grpc;
pub mod history;
pub mod ingresses;
pub mod outbound;
pub mod peers;
pub mod registry;
pub mod reload;
pub mod server;
pub mod signals;
pub mod sim;
pub mod status;
pub mod telemetry;
pub mod tls;

/// KEDA's `externalscaler.proto`, generated at build time.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("externalscaler");
}
