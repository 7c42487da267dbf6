//! The HTTP upstreams of the fleet, counting what they are asked: one endpoint that serves
//! `http_requests_total{app="…"}` of every Prometheus app (scraped by a real Prometheus), and one
//! `requests_total` endpoint per scraped app (`/scrape/N`), each counter rising at its app's
//! steady rate, so every app's true request rate is known exactly.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The request rate of app `i` (of either kind): 0 to 3.5 per second, in steps of 0.5.
pub fn rate_of(i: usize) -> f64 {
    (i % 8) as f64 * 0.5
}

/// The endpoints, on one loopback port.
pub struct Upstreams {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    /// The `app` label of each Prometheus app, by index.
    prometheus_apps: Vec<String>,
    scraped_apps: usize,
    started: Instant,
    exposition_requests: AtomicU64,
    scrape_requests: AtomicU64,
}

impl Upstreams {
    pub async fn start(prometheus_apps: Vec<String>, scraped_apps: usize) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            prometheus_apps,
            scraped_apps,
            started: Instant::now(),
            exposition_requests: AtomicU64::new(0),
            scrape_requests: AtomicU64::new(0),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let answer = shared.answer(request.uri().path());
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// The URL a scraped app's trigger names.
    pub fn scrape_url(&self, i: usize) -> String {
        format!("http://{}/scrape/{i}", self.addr)
    }

    /// Scrapes of `/scrape/N` answered so far, all apps together.
    pub fn scrape_requests(&self) -> u64 {
        self.shared.scrape_requests.load(Ordering::Relaxed)
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        let t = self.started.elapsed().as_secs_f64();
        let body = if path == "/metrics" {
            self.exposition_requests.fetch_add(1, Ordering::Relaxed);
            let mut text = String::with_capacity(self.prometheus_apps.len() * 48 + 64);
            text.push_str("# TYPE http_requests_total counter\n");
            for (i, app) in self.prometheus_apps.iter().enumerate() {
                text.push_str(&format!("http_requests_total{{app=\"{app}\"}} {:.3}\n", rate_of(i) * t));
            }
            Some(text)
        } else {
            path.strip_prefix("/scrape/").and_then(|i| i.parse::<usize>().ok()).filter(|i| *i < self.scraped_apps).map(
                |i| {
                    self.scrape_requests.fetch_add(1, Ordering::Relaxed);
                    format!("# TYPE requests_total counter\nrequests_total {:.3}\n", rate_of(i) * t)
                },
            )
        };
        let mut response = Response::new(Full::new(Bytes::from(body.clone().unwrap_or_default())));
        if body.is_none() {
            *response.status_mut() = StatusCode::NOT_FOUND;
        }
        response
    }
}

/// Requests Prometheus has answered on its query endpoints, by its own counter
/// `prometheus_http_requests_total` (all status codes): `(/api/v1/query, /api/v1/query_range)`.
pub async fn prometheus_queries(http: &reqwest::Client, address: &str) -> anyhow::Result<(f64, f64)> {
    let text = http
        .get(format!("{address}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
        .context("reading Prometheus's own metrics")?;
    let sum = |handler: &str| -> f64 {
        let wanted = format!("handler=\"{handler}\"");
        text.lines()
            .filter(|l| l.starts_with("prometheus_http_requests_total{") && l.contains(&wanted))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok((sum("/api/v1/query"), sum("/api/v1/query_range")))
}

/// The value of `query`'s first series at Prometheus now (`None`: no series).
pub async fn prometheus_value(http: &reqwest::Client, address: &str, query: &str) -> anyhow::Result<Option<f64>> {
    let body = http
        .get(format!("{address}/api/v1/query"))
        .query(&[("query", query)])
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok()))
}
