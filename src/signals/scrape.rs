//! Direct exposition scrape: a counter read straight from `/metrics` endpoints, its rate computed
//! here. The fast path: a 1 s (or faster) scrape of a gateway sees the first request seconds
//! before a Prometheus rule would.
//!
//! [`matching_series`] and [`CounterRate`] are pure (tested on strings and synthetic times);
//! [`scrape`] does the HTTP round trips.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

use super::body::{Answer, ReadError, fetch};
use spinscale_core::spec::ScrapeSource;

/// Why a scrape gave no counter; one failing endpoint fails the whole scrape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScrapeError {
    /// No HTTP answer (connection refused, timeout, ...).
    #[error("{url}: request failed: {cause}")]
    Request {
        /// The endpoint.
        url: String,
        /// The error and its causes.
        cause: String,
    },
    /// An HTTP error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The endpoint.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The metric is exposed, but not as a counter.
    #[error("{url}: metric {metric:?} is a {kind}, not a counter")]
    NotACounter {
        /// The endpoint.
        url: String,
        /// The trigger's metric name.
        metric: String,
        /// What it is instead: `gauge`, `histogram` or `summary`.
        kind: &'static str,
    },
    /// The body has text but no sample ([`BodyError::NotAnExposition`]).
    #[error("{url}: the body is not a Prometheus exposition (no line of it is a sample; {answer})")]
    NotAnExposition {
        /// The endpoint.
        url: String,
        /// The answer's status, content type and length: never its content.
        answer: String,
    },
    /// The body is longer than `limits.maxResponseBytes`.
    #[error("{url}: the response body is longer than limits.maxResponseBytes ({limit} bytes)")]
    TooLarge {
        /// The endpoint.
        url: String,
        /// The limit, in bytes.
        limit: usize,
    },
}

/// Why an exposition body gave no counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Lines that are not comments, and not one of them a sample: an error page, JSON, a sign-in
    /// form behind an auth proxy. Read as "no series", it would be a silent rate of 0.
    NotAnExposition,
    /// The metric is a gauge, histogram or summary.
    NotACounter(&'static str),
}

/// The counter value of every matching series in one exposition body (text format or OpenMetrics),
/// keyed by its sorted label set. A body that holds no sample at all but other text is refused;
/// a blank or comments-only body is a valid exposition without series.
pub fn matching_series(body: &str, metric: &str, labels: &[(String, String)]) -> Result<Vec<(String, f64)>, BodyError> {
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = Scrape::parse(lines).map_err(|_| BodyError::NotAnExposition)?;
    if scrape.samples.is_empty() && body.lines().map(str::trim).any(|l| !l.is_empty() && !l.starts_with('#')) {
        return Err(BodyError::NotAnExposition);
    }
    let open_metrics_name = format!("{metric}_total");
    let mut series = Vec::new();
    for sample in scrape.samples {
        if sample.metric != metric && sample.metric != open_metrics_name {
            continue;
        }
        if !labels.iter().all(|(k, v)| sample.labels.get(k) == Some(v.as_str())) {
            continue;
        }
        let value = match sample.value {
            Value::Counter(v) | Value::Untyped(v) => v,
            Value::Gauge(_) => return Err(BodyError::NotACounter("gauge")),
            Value::Histogram(_) => return Err(BodyError::NotACounter("histogram")),
            Value::Summary(_) => return Err(BodyError::NotACounter("summary")),
        };
        if value.is_finite() {
            series.push((sample.labels.to_string(), value));
        }
    }
    Ok(series)
}

/// Fetches every URL of `source` concurrently; the series of all of them, keyed by URL and labels.
/// A body longer than `max_body` bytes fails the scrape.
pub async fn scrape(
    http: &reqwest::Client,
    source: &ScrapeSource,
    timeout: Duration,
    max_body: usize,
) -> Result<HashMap<String, f64>, ScrapeError> {
    let fetches = source.urls.iter().map(|url| fetch_exposition(http, url, timeout, max_body));
    let bodies = futures_util::future::join_all(fetches).await;
    let mut all = HashMap::new();
    for (url, body) in source.urls.iter().zip(bodies) {
        let answer = body?;
        let body = String::from_utf8_lossy(&answer.body);
        let series = matching_series(&body, &source.metric, &source.labels).map_err(|e| match e {
            BodyError::NotACounter(kind) => {
                ScrapeError::NotACounter { url: url.clone(), metric: source.metric.clone(), kind }
            }
            BodyError::NotAnExposition => ScrapeError::NotAnExposition { url: url.clone(), answer: answer.describe() },
        })?;
        for (labels, value) in series {
            *all.entry(format!("{url}{{{labels}}}")).or_insert(0.0) += value;
        }
    }
    Ok(all)
}

async fn fetch_exposition(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, ScrapeError> {
    let request = http
        .get(url)
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .timeout(timeout);
    let answer = fetch(request, max_body).await.map_err(|e| match e {
        ReadError::Request(cause) => ScrapeError::Request { url: url.to_string(), cause },
        ReadError::TooLarge { limit } => ScrapeError::TooLarge { url: url.to_string(), limit },
    })?;
    if !answer.status.is_success() {
        return Err(ScrapeError::Status { url: url.to_string(), status: answer.status.as_u16() });
    }
    Ok(answer)
}

/// Rate of a set of counters from successive snapshots: Δcounter/Δt summed over series, over a
/// sliding window. A reset (value below the last one) counts the new value as the increase; a
/// series that appears counts its whole value (it started at 0 since the last scrape); one that
/// vanishes counts nothing.
#[derive(Debug)]
pub struct CounterRate {
    window: Duration,
    last: Option<(Duration, HashMap<String, f64>)>,
    /// (interval length, increase over it), newest last.
    recent: VecDeque<(Duration, f64)>,
}

impl CounterRate {
    /// No snapshot yet; rates are averaged over `window`.
    pub fn new(window: Duration) -> Self {
        Self { window, last: None, recent: VecDeque::new() }
    }

    /// Takes the snapshot seen at `at` (time since any fixed origin); the rate in per-second units,
    /// or `None` for the first snapshot, which only sets the baseline.
    pub fn observe(&mut self, at: Duration, series: HashMap<String, f64>) -> Option<f64> {
        let (then, previous) = self.last.replace((at, series))?;
        let (_, current) = self.last.as_ref()?;
        let increase: f64 = current
            .iter()
            .map(|(key, &now)| match previous.get(key) {
                Some(&before) if now >= before => now - before,
                _ => now,
            })
            .sum();
        self.recent.push_back((at.saturating_sub(then), increase));
        let mut span = self.recent.iter().map(|(d, _)| *d).sum::<Duration>();
        while span > self.window && self.recent.len() > 1 {
            if let Some((d, _)) = self.recent.pop_front() {
                span -= d;
            }
        }
        let total: f64 = self.recent.iter().map(|(_, inc)| inc).sum();
        Some(if span.is_zero() { 0.0 } else { total / span.as_secs_f64() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn snapshot(pairs: &[(&str, f64)]) -> HashMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn text_format_series_are_matched_by_name_and_labels() {
        let body = "# HELP requests_total Requests.\n# TYPE requests_total counter\n\
                    requests_total{app=\"a\",code=\"200\"} 10\nrequests_total{app=\"a\",code=\"500\"} 2\n\
                    requests_total{app=\"b\",code=\"200\"} 7\nother_total 99\n";
        let mut all = matching_series(body, "requests_total", &[]).unwrap();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(all.iter().map(|(_, v)| *v).collect::<Vec<_>>(), vec![10.0, 2.0, 7.0]);
        let only_a = matching_series(body, "requests_total", &[("app".into(), "a".into())]).unwrap();
        assert_eq!(only_a.iter().map(|(_, v)| v).sum::<f64>(), 12.0);
        let none = matching_series(body, "requests_total", &[("app".into(), "c".into())]).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn open_metrics_counters_are_found_by_family_name() {
        let body = "# TYPE requests counter\nrequests_total{app=\"a\"} 5.0\nrequests_created{app=\"a\"} 1.7e9\n# EOF\n";
        assert_eq!(matching_series(body, "requests", &[]).unwrap(), vec![("app=\"a\"".to_string(), 5.0)]);
        assert_eq!(matching_series(body, "requests_total", &[]).unwrap().len(), 1);
    }

    #[test]
    fn a_gauge_is_refused_by_kind() {
        assert_eq!(
            matching_series("# TYPE queue gauge\nqueue 3\n", "queue", &[]),
            Err(BodyError::NotACounter("gauge"))
        );
    }

    /// Found by `tests/faults.rs`: a sign-in page answered with 200 read as "no series", a rate of 0.
    #[test]
    fn a_body_without_a_single_sample_is_not_an_exposition() {
        for body in [
            "<html>\n<body><form action=\"/login\">Sign in</form></body>\n</html>\n",
            "{\"status\": \"ok\"}",
            "Service Unavailable",
            "requests_total lots\n",
        ] {
            assert_eq!(matching_series(body, "requests_total", &[]), Err(BodyError::NotAnExposition), "{body}");
        }
        // An exposition without the metric (not counted yet), without samples, or empty, is no series.
        for body in ["# TYPE requests_total counter\nother_total 3\n", "# TYPE requests_total counter\n", "", "\n"] {
            assert_eq!(matching_series(body, "requests_total", &[]), Ok(vec![]), "{body:?}");
        }
    }

    #[test]
    fn rate_is_increase_over_time_with_resets_and_series_that_come_and_go() {
        let mut rate = CounterRate::new(Duration::from_secs(10));
        assert_eq!(rate.observe(at(0), snapshot(&[("a", 100.0), ("b", 50.0)])), None, "baseline only");
        assert_eq!(rate.observe(at(1), snapshot(&[("a", 110.0), ("b", 50.0)])), Some(10.0));
        // b resets to 4 (counts 4), a grows 10: 24 over 2 s in the window.
        assert_eq!(rate.observe(at(2), snapshot(&[("a", 120.0), ("b", 4.0)])), Some(12.0));
        // c appears with 6, b vanishes: 6 + 0 from a.
        assert_eq!(rate.observe(at(3), snapshot(&[("a", 120.0), ("c", 6.0)])), Some(10.0));
    }

    #[test]
    fn the_first_increase_after_idleness_shows_at_once() {
        let mut rate = CounterRate::new(Duration::from_secs(10));
        rate.observe(at(0), snapshot(&[("a", 7.0)]));
        for s in 1..30 {
            assert_eq!(rate.observe(at(s), snapshot(&[("a", 7.0)])), Some(0.0));
        }
        let first = rate.observe(at(30), snapshot(&[("a", 8.0)])).unwrap();
        assert!(first > 0.0, "one request after 30 s idle: {first}");
    }

    #[test]
    fn the_window_forgets_old_increases() {
        let mut rate = CounterRate::new(Duration::from_secs(3));
        rate.observe(at(0), snapshot(&[("a", 0.0)]));
        rate.observe(at(1), snapshot(&[("a", 30.0)]));
        for s in 2..=4 {
            rate.observe(at(s), snapshot(&[("a", 30.0)]));
        }
        assert_eq!(rate.observe(at(5), snapshot(&[("a", 30.0)])), Some(0.0));
    }
}
