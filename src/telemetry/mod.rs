//! spinscale's own metrics (`/metrics`, prometheus-client, OpenMetrics text).
//!
//! Events (pushes, calls, reloads, collector cycles) are counted where they happen. Everything that
//! describes the present (targets, their signals and decisions, sources) is read from the registry
//! at scrape time (a collector the registry hands to [`Telemetry::new`]), so a target dropped from the registry leaves the exporter with it and
//! the hot paths pay nothing for it.
//!
//! Within the crate it may use no other module (a leaf).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;

use prometheus_client::collector::Collector;

/// Labels of one gRPC method and status code.
pub type CallLabels = [(&'static str, &'static str); 2];
type OneLabel = [(&'static str, &'static str); 1];

/// The exporter's metric families.
pub struct Telemetry {
    registry: prometheus_client::registry::Registry,
    /// `true` sent on a `StreamIsActive` stream.
    pub pushes: Counter,
    /// Source reading → `true` sent, for activations caused by a signal.
    pub push_latency: Histogram,
    /// Activations no open stream could carry: KEDA sees them only at its next poll.
    pub push_failures: Counter,
    grpc_requests: Family<CallLabels, Counter>,
    grpc_duration: Family<OneLabel, Histogram>,
    config_reloads: Family<OneLabel, Counter>,
    source_cycle: Family<OneLabel, Histogram>,
}

impl ReloadResult {
    /// The `result` label value.
    pub const fn label(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Rejected => "rejected",
        }
    }
}

/// How a config reload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new config was applied (`result="success"`).
    Success,
    /// The new config was refused and the previous one stays (`result="rejected"`).
    Rejected,
}

impl Telemetry {
    /// The metric families, plus `live`: the collector that reads the present (targets, signals,
    /// decisions) at scrape time from whoever owns it.
    pub fn new(live: Box<dyn Collector>) -> Arc<Self> {
        let mut r = prometheus_client::registry::Registry::default();
        r.register("spinscale_build", "The running spinscale", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        let pushes = Counter::default();
        r.register("spinscale_pushes", "StreamIsActive true messages sent", pushes.clone());
        let push_latency = Histogram::new(exponential_buckets(0.000_25, 2.0, 17));
        r.register(
            "spinscale_push_latency_seconds",
            "From the source reading that activated a target to the true sent on its streams",
            push_latency.clone(),
        );
        let push_failures = Counter::default();
        r.register(
            "spinscale_push_failures",
            "Activations while the target had no open StreamIsActive stream (KEDA learns at its next poll)",
            push_failures.clone(),
        );
        let grpc_requests = Family::default();
        r.register("spinscale_grpc_requests", "gRPC calls by method and status code", grpc_requests.clone());
        let grpc_duration = Family::<OneLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.5, 14))
        });
        r.register(
            "spinscale_grpc_request_duration_seconds",
            "gRPC call latency to the response headers (for streams: until the stream opens)",
            grpc_duration.clone(),
        );
        let config_reloads = Family::<OneLabel, Counter>::default();
        r.register("spinscale_config_reload", "Config reloads by result (success, rejected)", config_reloads.clone());
        // Every known label value exists at 0 from the start, so `increase()` sees the first event.
        for result in [ReloadResult::Success, ReloadResult::Rejected] {
            let _ = config_reloads.get_or_create(&[("result", result.label())]);
        }
        let source_cycle =
            Family::<OneLabel, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 15)));
        r.register("spinscale_source_cycle_seconds", "One poll of a source, by kind", source_cycle.clone());
        r.register_collector(live);
        Arc::new(Self {
            registry: r,
            pushes,
            push_latency,
            push_failures,
            grpc_requests,
            grpc_duration,
            config_reloads,
            source_cycle,
        })
    }

    /// The histogram of one kind of source's poll times (`prometheus`, `scrape`, `kafka`).
    pub fn source_cycle(&self, kind: &'static str) -> Histogram {
        self.source_cycle.get_or_create(&[("kind", kind)]).clone()
    }

    /// Counts one gRPC call by method and status code, and times it.
    pub fn observe_call(&self, method: &'static str, code: &'static str, took: Duration) {
        self.grpc_requests.get_or_create(&[("method", method), ("code", code)]).inc();
        self.grpc_duration.get_or_create(&[("method", method)]).observe(took.as_secs_f64());
    }

    /// Counts one config reload by its result (`spinscale_config_reload_total`).
    pub fn count_reload(&self, result: ReloadResult) {
        self.config_reloads.get_or_create(&[("result", result.label())]).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; a collector error would only cut the text short.
        let _ = text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Telemetry::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
