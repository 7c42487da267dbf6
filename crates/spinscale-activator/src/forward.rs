//! Forwarding one request to the app's backend: streamed bodies, rewritten headers, one
//! retry for idempotent requests whose body was not sent, and protocol switches (WebSocket)
//! tunnelled after the backend's `101`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Activator;
use super::app::{App, Settings};
use super::body::{Lender, ProxyBody};
use super::headers::{add_forwarded, strip_hop_by_hop, wants_upgrade};
use super::limits::BodySize;
use super::proxy::until_ready;
use super::reply;
use super::routes::BackendProtocol;
use super::stats::InFlight;

/// Added to responses of held requests: how long they were held, in milliseconds.
static COLD_START: HeaderName = HeaderName::from_static("x-spinscale-cold-start");

/// A request whose backend went away before it was sent is held again at most this often.
const MAX_RE_HOLDS: u32 = 3;

/// A forward of one client request.
pub(super) struct Forward<'a> {
    /// The activator, for its backend client.
    pub activator: &'a Activator,
    /// The app the request is routed to.
    pub app: &'a Arc<App>,
    /// The app's route as the request found it.
    pub settings: &'a Settings,
    /// The client's address, for `X-Forwarded-For`.
    pub peer: SocketAddr,
    /// How long the request was held, if it was.
    pub held: Option<Duration>,
    /// The request body's size, should it be held again.
    pub body: BodySize,
    /// When the request arrived; the hold timeout counts from here.
    pub arrived: Instant,
    /// Ends switched (upgraded) connections on shutdown.
    pub shutdown: &'a CancellationToken,
}

impl Forward<'_> {
    /// Sends the request to the backend (holding it again if the backend went away before it was
    /// sent) and returns the response to give the client.
    pub async fn run(mut self, mut request: Request<Incoming>) -> Response<ProxyBody> {
        let upgrade = wants_upgrade(&request);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();
        let mut headers = parts.headers;
        let host = headers.get(header::HOST).cloned().or_else(|| authority_value(&parts.uri));
        strip_hop_by_hop(&mut headers, upgrade);
        if let Some(host) = &host
            && !headers.contains_key(header::HOST)
        {
            headers.insert(header::HOST, host.clone());
        }
        add_forwarded(&mut headers, self.peer.ip(), host);
        let uri = match self.backend_uri(&parts.uri) {
            Ok(uri) => uri,
            Err(e) => return reply::bad_gateway(&self.app.id, &self.settings.route.backend, &e),
        };

        let body = Lender::new(body);
        let idempotent =
            matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE);
        let mut retried = false;
        let mut re_holds = 0;
        let (client, version) = match self.settings.route.backend_protocol {
            BackendProtocol::Http1 => (&self.activator.client, Version::HTTP_11),
            BackendProtocol::H2c => (&self.activator.h2c_client, Version::HTTP_2),
        };
        loop {
            let mut outgoing = Request::new(body.lend());
            *outgoing.method_mut() = parts.method.clone();
            *outgoing.uri_mut() = uri.clone();
            *outgoing.version_mut() = version;
            *outgoing.headers_mut() = headers.clone();
            let in_flight = self.app.stats.start();
            let error = match client.request(outgoing).await {
                Ok(response) => return self.respond(response, in_flight, client_upgrade),
                Err(error) => error,
            };
            drop(in_flight);
            if error.is_connect() && self.app.hold.close() {
                info!(target = %self.app.id, backend = %self.settings.address, %error, "backend went away; holding new requests");
            }
            // Nothing reached the backend (it scaled to zero, or its pod is gone): hold this request
            // too, as if it had arrived now, rather than fail it.
            if error.is_connect() && body.unsent() && re_holds < MAX_RE_HOLDS {
                re_holds += 1;
                match until_ready(self.activator, self.app, self.settings, self.body, self.arrived).await {
                    Ok(waited) => {
                        self.held = waited.or(self.held);
                        continue;
                    }
                    Err(refusal) => {
                        let gone = || reply::bad_gateway(&self.app.id, &self.settings.route.backend, &error);
                        return refusal.reply(self.app, self.settings, self.arrived, gone);
                    }
                }
            }
            if idempotent && !retried && body.unsent() {
                debug!(target = %self.app.id, %error, "retrying once");
                retried = true;
                continue;
            }
            return reply::bad_gateway(&self.app.id, &self.settings.route.backend, &error);
        }
    }

    fn backend_uri(&self, original: &Uri) -> Result<Uri, http::Error> {
        let path = original.path_and_query().map_or("/", |p| p.as_str());
        Uri::builder()
            .scheme(http::uri::Scheme::HTTP)
            .authority(self.settings.authority.clone())
            .path_and_query(path)
            .build()
    }

    fn respond(
        &self,
        mut response: Response<Incoming>,
        in_flight: InFlight,
        client_upgrade: Option<OnUpgrade>,
    ) -> Response<ProxyBody> {
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let tunnel = match client_upgrade {
            Some(client) if switching => Some((client, hyper::upgrade::on(&mut response))),
            _ => None,
        };
        let (mut parts, body) = response.into_parts();
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers, tunnel.is_some());
        if let Some(held) = self.held
            && self.settings.route.cold_start_header
        {
            parts.headers.insert(COLD_START.clone(), HeaderValue::from(held.as_millis() as u64));
        }
        let body = match tunnel {
            Some((client, backend)) => {
                tokio::spawn(splice(client, backend, in_flight, self.shutdown.clone()));
                ProxyBody::empty()
            }
            None => ProxyBody::Backend { body, _in_flight: in_flight },
        };
        Response::from_parts(parts, body)
    }
}

fn authority_value(uri: &Uri) -> Option<HeaderValue> {
    uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

/// Copies bytes both ways between the client's and the backend's switched connections until
/// either side closes or the activator shuts down.
async fn splice(client: OnUpgrade, backend: OnUpgrade, _in_flight: InFlight, shutdown: CancellationToken) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(e) => {
            debug!(error = %e, "protocol switch failed");
            return;
        }
    };
    let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
            if let Err(e) = copied {
                debug!(error = %e, "switched connection ended");
            }
        }
        _ = shutdown.cancelled() => {}
    }
}
