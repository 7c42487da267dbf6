//! The activator's own answers: each names what it could not do, for the person reading it.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use super::body::ProxyBody;

fn text(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::text(format!("spinscale activator: {message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// `400`: neither a `Host` header nor an authority in the URI.
pub(super) fn no_host() -> Response<ProxyBody> {
    text(StatusCode::BAD_REQUEST, "the request has no Host".into())
}

/// `404`: no route covers the host and path (or the route was removed while the request waited).
pub(super) fn no_route(host: &str, path: &str) -> Response<ProxyBody> {
    text(StatusCode::NOT_FOUND, format!("no route for host {host:?} (path {path:?})"))
}

/// `503` with `Retry-After`: the app's hold queue is full.
pub(super) fn full(app: &str, max_held: usize) -> Response<ProxyBody> {
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{app} is starting and already holds {max_held} requests (maxHeld); retry"),
    );
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `503` with `Retry-After`: the activator shut down while the request waited.
pub(super) fn shutting_down(app: &str) -> Response<ProxyBody> {
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the activator is shutting down before {app} became ready; retry"),
    );
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `504`: the app's backend was not ready within the hold timeout.
pub(super) fn timed_out(app: &str, waited: Duration) -> Response<ProxyBody> {
    text(
        StatusCode::GATEWAY_TIMEOUT,
        format!("{app} had no ready backend after waiting {} ms (holdTimeout)", waited.as_millis()),
    )
}

/// `502`: the backend failed; the message gives the whole error chain.
pub(super) fn bad_gateway(app: &str, backend: &http::Uri, error: &dyn std::error::Error) -> Response<ProxyBody> {
    let mut cause = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        cause = format!("{cause}: {inner}");
        source = inner.source();
    }
    text(StatusCode::BAD_GATEWAY, format!("backend {backend} of {app} failed: {cause}"))
}
