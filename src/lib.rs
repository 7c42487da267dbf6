//! spinscale: a KEDA external-push scaler for SpinKube apps.
//!
//! KEDA asks, per ScaledObject, "is this app active?" and "what is its metric?"; spinscale answers
//! from signals it watches itself (Prometheus request rate, Kafka consumer lag) and pushes
//! "active" over `StreamIsActive` the moment an app must wake up.
//!
//! - [`target`]: trigger metadata → a validated spec;
//! - [`signals`]: one collector per distinct source;
//! - [`engine`]: the pure decision;
//! - [`registry`]: live targets and their decision channels;
//! - [`grpc`]: KEDA's `ExternalScaler` service;
//! - [`telemetry`]: the `/metrics` exporter; [`history`]: the last hour per target;
//! - [`server`]: wiring and graceful shutdown; [`demo`]: everything embedded;
//! - [`sim`]: `spinscale simulate`, trace replay through the engine on a virtual clock;
//! - [`convert`]: `spinscale convert`, KEDA prometheus/kafka manifests rewritten for spinscale;
//! - [`activator`]: the HTTP reverse proxy that holds requests while an app wakes from zero.

#![forbid(unsafe_code)]

pub mod activator;
pub mod admission;
pub mod bench;
pub mod config;
pub mod convert;
pub mod demo;
pub mod duration;
pub mod embedded;
pub mod engine;
pub mod grpc;
pub mod history;
pub mod peers;
pub mod quantity;
pub mod registry;
pub mod reload;
pub mod server;
pub mod signals;
pub mod sim;
pub mod status;
pub mod target;
pub mod telemetry;
pub mod tls;

/// KEDA's `externalscaler.proto`, generated at build time.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("externalscaler");
}
