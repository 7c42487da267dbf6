//! Admission for unary gRPC calls: at most `limits.maxConcurrentCalls` at once, each bounded by
//! `limits.callTimeout`. A call over the limit is refused at once with `RESOURCE_EXHAUSTED`
//! instead of queueing: under a flood the admitted calls stay fast, and KEDA simply asks again at
//! its next poll. Streams are long-lived and bounded by `limits.maxStreams` instead.
//!
//! Within the crate it may use [`grpc`](crate::grpc) and [`registry`](crate::registry); nothing
//! else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use crate::grpc::UNARY_PATHS;
use crate::registry::Registry;
use spinscale_core::duration;

/// The layer; limits are read from the registry's config on every call, so reloads apply.
#[derive(Clone)]
pub struct AdmissionLayer {
    registry: Arc<Registry>,
    in_flight: Arc<AtomicUsize>,
}

impl AdmissionLayer {
    /// A layer with no call in flight, reading its limits from `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry, in_flight: Arc::default() }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission { inner, layer: self.clone() }
    }
}

/// The service [`AdmissionLayer`] wraps around the gRPC server: unary calls are admitted or
/// refused, and timed out; streams pass straight through.
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

/// Releases an admitted call's slot when the call ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, B> Service<http::Request<B>> for Admission<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !UNARY_PATHS.contains(&request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let limits = self.layer.registry.config().limits.clone();
        let in_flight = self.layer.in_flight.clone();
        if in_flight.fetch_add(1, Ordering::AcqRel) >= limits.max_concurrent_calls {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            let status = Status::resource_exhausted(format!(
                "spinscale is serving {} calls at once (limits.maxConcurrentCalls); try again",
                limits.max_concurrent_calls
            ));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let slot = Slot(in_flight);
        let call = self.inner.call(request);
        Box::pin(async move {
            let _slot = slot;
            match tokio::time::timeout(limits.call_timeout.0, call).await {
                Ok(response) => response,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "no answer within {} (limits.callTimeout)",
                    duration::format(limits.call_timeout.0)
                ))
                .into_http()),
            }
        })
    }
}
