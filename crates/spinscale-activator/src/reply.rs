//! The activator's own answers: each names what it could not do, for the person reading it.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use tracing::warn;

use super::body::ProxyBody;
use super::limits::OverLimit;

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

/// `503` with `Retry-After`: the activator holds as many requests, or body bytes, as its limits
/// allow for all apps together.
pub(super) fn over_limit(app: &str, over: OverLimit) -> Response<ProxyBody> {
    let message = match over {
        OverLimit::Requests { max } => {
            format!("{app} is starting and the activator already holds {max} requests of all apps; retry")
        }
        OverLimit::BodyBytes { charge, max } => format!(
            "{app} is starting and holding this request's body ({charge} bytes) would pass the activator's \
             {max} bytes for the bodies of all held requests; retry"
        ),
    };
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `502`: the backend failed. The answer names the app and what went wrong in a few words,
/// never the backend's address (an internal one); the log has both and the whole error chain.
pub(super) fn bad_gateway(
    app: &str,
    backend: &http::Uri,
    error: &(dyn std::error::Error + 'static),
) -> Response<ProxyBody> {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        chain = format!("{chain}: {inner}");
        source = inner.source();
    }
    warn!(target = %app, %backend, error = %chain, "backend failed");
    text(StatusCode::BAD_GATEWAY, format!("the backend of {app} failed: {}", cause(error)))
}

/// What went wrong, in words that hold no address: the first cause in `error`'s chain that says
/// more than "failed".
fn cause(error: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused",
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => "connection reset",
                std::io::ErrorKind::TimedOut => "timed out",
                _ => "connection failed",
            };
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() {
                return "it closed the connection before answering";
            }
            if hyper.is_parse() || hyper.is_parse_status() {
                return "its answer is not valid HTTP";
            }
            if hyper.is_timeout() {
                return "timed out";
            }
            if hyper.is_body_write_aborted() {
                return "the request body could not be sent";
            }
        }
        if error.to_string() == "dns error" {
            return "its name does not resolve";
        }
        if error.is::<http::Error>() {
            return "its address is unusable";
        }
        next = error.source();
    }
    "no answer"
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[derive(Debug)]
    struct Chain(&'static str, Option<std::io::Error>);

    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_ref().map(|e| e as _)
        }
    }

    async fn body(response: Response<ProxyBody>) -> String {
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_502_names_the_app_and_the_cause_never_the_backend() {
        let backend: http::Uri = "http://api-function.default.svc.cluster.local:8080".parse().unwrap();
        let refused = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connect to 10.96.0.12:8080 (api-function.default.svc.cluster.local) refused",
        );
        let error = Chain("tcp connect error to http://api-function.default.svc.cluster.local:8080", Some(refused));
        let response = bad_gateway("default/api", &backend, &error);
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let text = body(response).await;
        assert_eq!(text, "spinscale activator: the backend of default/api failed: connection refused\n");
        let dns = Chain("dns error", Some(std::io::Error::other("api-function.default.svc: no such host")));
        assert!(body(bad_gateway("default/api", &backend, &dns)).await.ends_with("its name does not resolve\n"));
        let opaque = Chain("backend api-function.default.svc at 10.96.0.12 hung up", None);
        assert!(body(bad_gateway("default/api", &backend, &opaque)).await.ends_with(": no answer\n"));
    }
}
