//! KEDA's `ExternalScaler` service (docs/keda.md §7), answered from the registry's watch channels.
//!
//! Every error becomes a `tonic::Status` in one place, [`status_of`]. Unary calls never wait on an
//! upstream: only a brand-new target's first call waits (bounded) for its first readings.
//!
//! Within the crate it may use [`proto`](crate::proto), [`registry`](crate::registry) and
//! [`telemetry`](crate::telemetry); nothing else.

mod layer;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::proto::external_scaler_server::ExternalScaler;
use crate::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec, MetricValue,
    ScaledObjectRef,
};
use crate::registry::{Refused, Registry, SourceProblem, Target, TargetState};
use crate::telemetry::Telemetry;
use spinscale_core::engine::Reason;
use spinscale_core::spec::MetricName;

pub use layer::GrpcMetricsLayer;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The HTTP paths of the ExternalScaler methods that answer once.
pub const UNARY_PATHS: [&str; 3] = [
    "/externalscaler.ExternalScaler/IsActive",
    "/externalscaler.ExternalScaler/GetMetricSpec",
    "/externalscaler.ExternalScaler/GetMetrics",
];

/// The HTTP paths of its streaming methods.
pub const STREAM_PATHS: [&str; 2] =
    ["/externalscaler.ExternalScaler/StreamIsActive", "/externalscaler.ExternalScaler/StreamMetricSpec"];

/// The gRPC service. Cheap to clone.
#[derive(Clone)]
pub struct Scaler {
    registry: Arc<Registry>,
    shutdown: CancellationToken,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The registry would not take the target (bad metadata, a route, a limit).
    #[error("{0}")]
    Refused(#[from] Refused),
    /// The request has no `scaledObjectRef`, or it lacks a name or namespace.
    #[error("scaledObjectRef.{field} is empty")]
    MissingField {
        /// The empty field: `name` or `namespace`.
        field: &'static str,
    },
    /// `GetMetrics` asked for a metric this trigger does not report.
    #[error("unknown metricName {name:?} for {target}: this trigger reports {known}")]
    UnknownMetric {
        /// The metric name asked for.
        name: String,
        /// The target, as `namespace/name`.
        target: String,
        /// The metrics the trigger does report, comma-separated.
        known: String,
    },
    /// The target's sources give no usable reading, so no answer would be true.
    #[error("{target}: signal source unavailable: {problem}")]
    Unavailable {
        /// The target, as `namespace/name`.
        target: String,
        /// What is wrong with its sources (the most telling problem when several are).
        problem: SourceProblem,
    },
    /// `limits.maxStreams` streams are already open.
    #[error("spinscale already holds {limit} open streams (limits.maxStreams); refusing another")]
    TooManyStreams {
        /// The configured `limits.maxStreams`.
        limit: usize,
    },
}

/// The one mapping from errors to gRPC status codes.
pub fn status_of(error: CallError) -> Status {
    let message = error.to_string();
    match error {
        CallError::Refused(Refused::Full { .. }) | CallError::TooManyStreams { .. } => {
            Status::resource_exhausted(message)
        }
        CallError::Refused(_) | CallError::MissingField { .. } => Status::invalid_argument(message),
        CallError::UnknownMetric { .. } => Status::not_found(message),
        CallError::Unavailable { .. } => Status::unavailable(message),
    }
}

impl Scaler {
    /// The service over `registry`; `shutdown` ends its open streams (with status OK).
    pub fn new(registry: Arc<Registry>, shutdown: CancellationToken) -> Self {
        Self { registry, shutdown }
    }

    fn target(&self, r: Option<&ScaledObjectRef>) -> Result<Arc<Target>, CallError> {
        let r = r.ok_or(CallError::MissingField { field: "name" })?;
        if r.name.is_empty() {
            return Err(CallError::MissingField { field: "name" });
        }
        if r.namespace.is_empty() {
            return Err(CallError::MissingField { field: "namespace" });
        }
        Ok(self.registry.target(&r.namespace, &r.name, &r.scaler_metadata)?)
    }

    fn stream_room(&self) -> Result<(), CallError> {
        let limit = self.registry.config().limits.max_streams;
        if self.registry.open_streams() >= limit {
            return Err(CallError::TooManyStreams { limit });
        }
        Ok(())
    }

    async fn settled(&self, target: &Target) -> TargetState {
        target.settled(self.registry.config().targets.first_reading_wait.0).await
    }

    async fn activity(&self, r: &ScaledObjectRef) -> Result<bool, CallError> {
        let target = self.target(Some(r))?;
        let state = self.settled(&target).await;
        // A healthy source that shows activity is enough to say so; "inactive" needs every source.
        match (state.decision.active, state.problem) {
            (true, _) => Ok(true),
            (false, Some(problem)) => Err(CallError::Unavailable { target: target.key.to_string(), problem }),
            (false, None) => Ok(false),
        }
    }

    async fn metrics(&self, request: &GetMetricsRequest) -> Result<MetricValue, CallError> {
        let target = self.target(request.scaled_object_ref.as_ref())?;
        let metrics = target.spec().metric_targets();
        let Some((metric, _)) = metrics.iter().find(|(m, _)| m.as_str() == request.metric_name) else {
            let known: Vec<&str> = metrics.iter().map(|(m, _)| m.as_str()).collect();
            return Err(CallError::UnknownMetric {
                name: request.metric_name.clone(),
                target: target.key.to_string(),
                known: known.join(", "),
            });
        };
        let state = self.settled(&target).await;
        if let Some(problem) = state.problem {
            return Err(CallError::Unavailable { target: target.key.to_string(), problem });
        }
        Ok(metric_value(*metric, state.decision.metric_value(*metric)))
    }
}

/// Both fields, consistent: KEDA < 2.17 reads only the int, later ones the float when > 0.
fn metric_value(metric: MetricName, value: f64) -> MetricValue {
    MetricValue {
        metric_name: metric.as_str().to_string(),
        metric_value: value.ceil() as i64,
        metric_value_float: value,
    }
}

fn metric_specs(target: &Target) -> GetMetricSpecResponse {
    let metric_specs = target
        .spec()
        .metric_targets()
        .into_iter()
        .map(|(metric, size)| MetricSpec {
            metric_name: metric.as_str().to_string(),
            // An int target of 0 breaks the HPA of KEDA < 2.17.
            target_size: (size.round() as i64).max(1),
            target_size_float: size,
        })
        .collect();
    GetMetricSpecResponse { metric_specs }
}

#[tonic::async_trait]
impl ExternalScaler for Scaler {
    async fn is_active(&self, request: Request<ScaledObjectRef>) -> Result<Response<IsActiveResponse>, Status> {
        let result = self.activity(request.get_ref()).await.map_err(status_of)?;
        Ok(Response::new(IsActiveResponse { result }))
    }

    type StreamIsActiveStream = ResponseStream<IsActiveResponse>;

    /// `true` at once if active, then on every rising edge; never `false`. Ends with OK on shutdown.
    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let target = self.target(Some(request.get_ref())).map_err(status_of)?;
        self.stream_room().map_err(status_of)?;
        let stream = RisingEdges {
            state: target.watch(),
            was_active: false,
            telemetry: self.registry.telemetry().clone(),
            shutdown: self.shutdown.clone(),
            _open: target.open_stream(),
        };
        Ok(Response::new(Box::pin(futures_util::stream::unfold(stream, RisingEdges::next))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let target = self.target(Some(request.get_ref())).map_err(status_of)?;
        Ok(Response::new(metric_specs(&target)))
    }

    async fn get_metrics(&self, request: Request<GetMetricsRequest>) -> Result<Response<GetMetricsResponse>, Status> {
        let value = self.metrics(request.get_ref()).await.map_err(status_of)?;
        Ok(Response::new(GetMetricsResponse { metric_values: vec![value] }))
    }

    type StreamMetricSpecStream = ResponseStream<GetMetricSpecResponse>;

    /// The specs on open. A target's specs follow from its metadata alone, so they never change
    /// while the stream is open; it stays open (KEDA keeps it) until cancel or shutdown.
    async fn stream_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        let target = self.target(Some(request.get_ref())).map_err(status_of)?;
        self.stream_room().map_err(status_of)?;
        let first = metric_specs(&target);
        let shutdown = self.shutdown.clone();
        let open = target.open_stream();
        let until_shutdown = futures_util::stream::once(async move {
            shutdown.cancelled().await;
            drop(open);
        })
        .filter_map(|()| async { None::<Result<GetMetricSpecResponse, Status>> });
        Ok(Response::new(Box::pin(futures_util::stream::once(async { Ok(first) }).chain(until_shutdown))))
    }
}

/// The state of one `StreamIsActive` stream.
struct RisingEdges {
    state: tokio::sync::watch::Receiver<TargetState>,
    was_active: bool,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
    _open: crate::registry::StreamGuard,
}

impl RisingEdges {
    async fn next(mut self) -> Option<(Result<IsActiveResponse, Status>, Self)> {
        loop {
            let (active, caused_by_signal, observed_at) = {
                let state = self.state.borrow_and_update();
                let reason = state.decision.reason;
                (
                    state.decision.active,
                    matches!(reason, Reason::Rps | Reason::Lag | Reason::HeldRequest),
                    state.observed_at,
                )
            };
            let rising = active && !self.was_active;
            self.was_active = active;
            if rising {
                self.telemetry.pushes.inc();
                if let Some(at) = observed_at.filter(|_| caused_by_signal) {
                    self.telemetry.push_latency.observe(at.elapsed().as_secs_f64());
                }
                return Some((Ok(IsActiveResponse { result: true }), self));
            }
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return None,
                changed = self.state.changed() => if changed.is_err() { return None },
            }
        }
    }
}

/// Metadata of a `ScaledObjectRef`, for tests and the demo's client.
pub fn scaled_object_ref(namespace: &str, name: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    let scaler_metadata: HashMap<String, String> =
        metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ScaledObjectRef { name: name.to_string(), namespace: namespace.to_string(), scaler_metadata }
}
