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

pub(super) fn no_host() -> Response<ProxyBody> {
    text(StatusCode::BAD_REQUEST, "the request has no Host".into())
}

pub(super) fn no_route(host: &str, path: &str) -> Response<ProxyBody> {
    text(StatusCode::NOT_FOUND, format!("no route for host {host:?} (path {path:?})"))
}

pub(super) fn full(target: &str, max_held: usize) -> Response<ProxyBody> {
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{target} is starting and already holds {max_held} requests (maxHeld); retry"),
    );
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

pub(super) fn shutting_down(target: &str) -> Response<ProxyBody> {
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the activator is shutting down before {target} became ready; retry"),
    );
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

pub(super) fn timed_out(target: &str, waited: Duration) -> Response<ProxyBody> {
    text(
        StatusCode::GATEWAY_TIMEOUT,
        format!("{target} had no ready backend after waiting {} ms (holdTimeout)", waited.as_millis()),
    )
}

pub(super) fn bad_gateway(target: &str, backend: &http::Uri, error: &dyn std::error::Error) -> Response<ProxyBody> {
    let mut cause = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        cause = format!("{cause}: {inner}");
        source = inner.source();
    }
    text(StatusCode::BAD_GATEWAY, format!("backend {backend} of {target} failed: {cause}"))
}
