//! Prometheus instant queries, with KEDA's prometheus-scaler result rules (docs/keda.md §3).
//!
//! [`interpret`] is the pure part (tested on strings); [`query`] does one HTTP round trip, and
//! [`fetch_query`] one for a query other than the source's own (a grouped one, see
//! [`grouping`](super::grouping)).

use std::time::Duration;

use serde_json::Value;

use super::body::{Answer, ReadError, fetch};
use super::prometheus_auth::{self, form_encode};
use spinscale_core::spec::PrometheusSource;

/// Why a query gave no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// No HTTP answer (connection refused, timeout, ...): the error and its causes.
    #[error("request failed: {0}")]
    Request(String),
    /// An HTTP error status without a Prometheus JSON body: the status, content type and length
    /// (never the content: the address is tenant input and may not be a Prometheus).
    #[error("{0} (not a Prometheus API answer)")]
    Status(String),
    /// The body is longer than `limits.maxResponseBytes`: the limit in bytes.
    #[error("the response body is longer than limits.maxResponseBytes ({0} bytes)")]
    TooLarge(usize),
    /// The body is not the Prometheus API's JSON, or lacks `data.result`: why, and the answer
    /// described without its content.
    #[error("response is not Prometheus API JSON: {0}")]
    Body(String),
    /// Prometheus answered with `status: error`: its message.
    #[error("query failed: {0}")]
    Query(String),
    /// The trigger's `prometheusConnection` could not be applied (a secret file missing, no AWS
    /// credentials, STS refused): the field and file, never a secret.
    #[error("{0}")]
    Connection(String),
    /// No series, without `ignoreNullValues`.
    #[error("the result is empty (the target may be lost; set ignoreNullValues: true to read it as 0)")]
    Empty,
    /// More than one series: how many.
    #[error("the query returned {0} series; it must return one (wrap it in sum(...))")]
    MultipleSeries(usize),
    /// The one series (or scalar) carries no `[time, value]` pair.
    #[error("the result has no value")]
    NoValue,
    /// NaN or ±Inf, without `ignoreNullValues`: the value as sent.
    #[error("the value {0:?} is not a finite number (set ignoreNullValues: true to read it as 0)")]
    NotFinite(String),
    /// The value does not parse as a number: the value as sent.
    #[error("the value {0:?} is not a number")]
    NotANumber(String),
}

/// Runs `source`'s query once and reads the value under KEDA's rules; a body longer than
/// `max_body` bytes is refused.
pub async fn query(
    http: &reqwest::Client,
    source: &PrometheusSource,
    timeout: Duration,
    max_body: usize,
) -> Result<f64, QueryError> {
    let answer = get(http, source, "query", &[], timeout, max_body).await?;
    interpret(&answer.body, source.ignore_null_values).map_err(|e| e.described(&answer))
}

/// The query's values over `[start, end]` (Unix seconds) every `step` seconds, for a restarted
/// server to learn the past: `(time, value)` pairs, non-finite and negative points left out.
pub async fn query_range(
    http: &reqwest::Client,
    source: &PrometheusSource,
    start: f64,
    end: f64,
    step: f64,
    timeout: Duration,
    max_body: usize,
) -> Result<Vec<(f64, f64)>, QueryError> {
    let (start, end, step) = (format!("{start:.3}"), format!("{end:.3}"), format!("{step}"));
    let range = [("start", start.as_str()), ("end", end.as_str()), ("step", step.as_str())];
    let answer = get(http, source, "query_range", &range, timeout, max_body).await?;
    interpret_range(&answer.body).map_err(|e| e.described(&answer))
}

/// A query longer than this (form-encoded, in bytes) goes in a `POST` body instead of the URL.
const POST_ABOVE: usize = 2048;

/// Runs `query` instead of the source's own, with the source's address, namespace, parameters,
/// headers; a long query is sent as a `POST` form. The answer is for [`read`] or
/// [`grouping::split`](super::grouping::split).
pub async fn fetch_query(
    http: &reqwest::Client,
    source: &PrometheusSource,
    query: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, QueryError> {
    let form = form_encode(query);
    let query = if form.len() <= POST_ABOVE { Query::InUrl(query) } else { Query::Form(format!("query={form}")) };
    send(http, source, "query", query, &[], timeout, max_body).await
}

/// An instant query's answer under KEDA's rules (see [`interpret`]).
pub fn read(answer: &Answer, ignore_null_values: bool) -> Result<f64, QueryError> {
    interpret(&answer.body, ignore_null_values).map_err(|e| e.described(answer))
}

impl QueryError {
    /// A body error with the answer described (status, content type, length) for the user.
    pub(super) fn described(self, answer: &Answer) -> Self {
        match self {
            QueryError::Body(why) => QueryError::Body(format!("{why}; the answer was {}", answer.describe())),
            other => other,
        }
    }
}

/// One GET of the HTTP API with the source's query, parameters and headers.
async fn get(
    http: &reqwest::Client,
    source: &PrometheusSource,
    endpoint: &str,
    extra: &[(&str, &str)],
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, QueryError> {
    send(http, source, endpoint, Query::InUrl(&source.query), extra, timeout, max_body).await
}

/// Where a request carries its query.
enum Query<'a> {
    /// In the URL, with the other parameters: a GET.
    InUrl(&'a str),
    /// The form-encoded body (`query=…`) of a POST; the other parameters stay in the URL.
    Form(String),
}

/// One request of the HTTP API with `query`, the source's parameters and headers, and its
/// connection's authentication. The query string is encoded strictly (SigV4's canonical form).
async fn send(
    http: &reqwest::Client,
    source: &PrometheusSource,
    endpoint: &str,
    query: Query<'_>,
    extra: &[(&str, &str)],
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, QueryError> {
    let connection =
        source.auth.as_ref().map(|auth| prometheus_auth::connection(source.connection.as_deref().unwrap_or(""), auth));
    let client = match &connection {
        Some(connection) => connection.client().map_err(QueryError::Connection)?,
        None => http.clone(),
    };
    let mut params: Vec<(&str, &str)> = Vec::new();
    if let Query::InUrl(query) = query {
        params.push(("query", query));
    }
    if let Some(ns) = &source.namespace {
        params.push(("namespace", ns));
    }
    params.extend(source.query_parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    params.extend_from_slice(extra);
    let mut url = format!("{}/api/v1/{endpoint}", source.address);
    for (i, (k, v)) in params.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&format!("{}={}", form_encode(k), form_encode(v)));
    }
    let mut request = match query {
        Query::InUrl(_) => client.get(url),
        Query::Form(form) => {
            client.post(url).header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(form)
        }
    };
    request = request.timeout(timeout);
    for (k, v) in &source.headers {
        request = request.header(k, v);
    }
    if let Some(connection) = &connection {
        request = connection.authorize(&client, request).await.map_err(QueryError::Connection)?;
    }
    let answer = fetch(request, max_body).await.map_err(|e| match e {
        // The URL (with the whole encoded query) would drown the cause; the source is named anyway.
        ReadError::Request(cause) => QueryError::Request(cause),
        ReadError::TooLarge { limit } => QueryError::TooLarge(limit),
    })?;
    // Prometheus answers 400/422/503 with a JSON error body that says more than the status.
    if !answer.status.is_success() && serde_json::from_slice::<Value>(&answer.body).is_err() {
        return Err(QueryError::Status(answer.describe()));
    }
    Ok(answer)
}

/// KEDA reads an answer without a `status` field as data; only `status: error` is a failure. Its
/// message is passed on only when it is shaped as the Prometheus API's (`errorType` and `error`).
pub(super) fn prometheus_error(doc: &Value) -> Result<(), QueryError> {
    if doc["status"] != "error" {
        return Ok(());
    }
    match (doc["errorType"].as_str(), doc["error"].as_str()) {
        (Some(_), Some(error)) => Err(QueryError::Query(error.chars().take(300).collect())),
        _ => Err(QueryError::Body("status is error, without the API's errorType and error".into())),
    }
}

/// Reads a `query_range` answer: one series (or none), its points as `(time, value)`.
pub fn interpret_range(body: &[u8]) -> Result<Vec<(f64, f64)>, QueryError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| QueryError::Body(e.to_string()))?;
    prometheus_error(&doc)?;
    let Value::Array(series) = &doc["data"]["result"] else {
        return Err(QueryError::Body("data.result is missing or not a list".into()));
    };
    let values = match series.as_slice() {
        [] => return Ok(Vec::new()),
        [one] => one["values"].as_array().ok_or(QueryError::NoValue)?,
        many => return Err(QueryError::MultipleSeries(many.len())),
    };
    let points = values.iter().filter_map(|point| match point.as_array().map(Vec::as_slice) {
        Some([Value::Number(t), Value::String(v)]) => Some((t.as_f64()?, v.parse::<f64>().ok()?)),
        _ => None,
    });
    Ok(points.filter(|(t, v)| t.is_finite() && v.is_finite() && *v >= 0.0).collect())
}

/// KEDA's result table: empty → 0 or error; more than one series → error; NaN/±Inf → 0 or error.
pub fn interpret(body: &[u8], ignore_null_values: bool) -> Result<f64, QueryError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| QueryError::Body(e.to_string()))?;
    prometheus_error(&doc)?;
    let result = &doc["data"]["result"];
    match (doc["data"]["resultType"].as_str(), result) {
        // A scalar is `[ts, "v"]` itself.
        (Some("scalar"), Value::Array(_)) => value_of(result, ignore_null_values),
        (_, Value::Array(series)) => interpret_series(series, ignore_null_values),
        _ => Err(QueryError::Body("data.result is missing or not a list".into())),
    }
}

/// KEDA's rules for a vector's series (`{"metric": …, "value": [time, "v"]}` each): none → 0 or
/// error; more than one → error; NaN/±Inf → 0 or error.
pub fn interpret_series(series: &[Value], ignore_null_values: bool) -> Result<f64, QueryError> {
    let value = match series {
        [] if ignore_null_values => return Ok(0.0),
        [] => return Err(QueryError::Empty),
        [one] => match one.get("value") {
            Some(v) => v,
            None if ignore_null_values => return Ok(0.0),
            None => return Err(QueryError::NoValue),
        },
        many => return Err(QueryError::MultipleSeries(many.len())),
    };
    value_of(value, ignore_null_values)
}

/// A `[time, "v"]` pair's value.
fn value_of(value: &Value, ignore_null_values: bool) -> Result<f64, QueryError> {
    let text = match value.as_array().map(Vec::as_slice) {
        Some([_, Value::String(text)]) => text,
        // KEDA: an empty value reads as 0 under ignoreNullValues.
        Some([]) if ignore_null_values => return Ok(0.0),
        _ => return Err(QueryError::NoValue),
    };
    let parsed: f64 = text.parse().map_err(|_| QueryError::NotANumber(text.clone()))?;
    match parsed.is_finite() {
        true => Ok(parsed),
        false if ignore_null_values => Ok(0.0),
        false => Err(QueryError::NotFinite(text.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(values: &[&str]) -> String {
        let series: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!(r#"{{"metric":{{"i":"{i}"}},"value":[1700000000.1,"{v}"]}}"#))
            .collect();
        format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#, series.join(","))
    }

    #[test]
    fn keda_result_rules() {
        let matrix =
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"3"]]}]}}"#;
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"4.5"]}}"#;
        let failed = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        // (what, body, ignoreNullValues, expected)
        let cases: Vec<(&str, String, bool, Result<f64, QueryError>)> = vec![
            ("one series", vector(&["12.5"]), true, Ok(12.5)),
            ("negative passes through (the engine clamps)", vector(&["-2"]), true, Ok(-2.0)),
            ("empty, ignoreNullValues", vector(&[]), true, Ok(0.0)),
            ("empty, strict", vector(&[]), false, Err(QueryError::Empty)),
            ("several series", vector(&["1", "2"]), true, Err(QueryError::MultipleSeries(2))),
            ("NaN, ignoreNullValues", vector(&["NaN"]), true, Ok(0.0)),
            ("NaN, strict", vector(&["NaN"]), false, Err(QueryError::NotFinite("NaN".into()))),
            ("+Inf, ignoreNullValues", vector(&["+Inf"]), true, Ok(0.0)),
            ("matrix has no value, ignoreNullValues", matrix.into(), true, Ok(0.0)),
            ("matrix has no value, strict", matrix.into(), false, Err(QueryError::NoValue)),
            ("scalar", scalar.into(), true, Ok(4.5)),
            ("not a number", vector(&["lots"]), true, Err(QueryError::NotANumber("lots".into()))),
            ("query error", failed.into(), true, Err(QueryError::Query("parse error at char 5".into()))),
            (
                "no status field (KEDA reads it)",
                r#"{"data":{"resultType":"vector","result":[{"metric":{},"value":[1,"7"]}]}}"#.into(),
                false,
                Ok(7.0),
            ),
            (
                "empty value, ignoreNullValues",
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[]}]}}"#.into(),
                true,
                Ok(0.0),
            ),
            (
                "empty value",
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[]}]}}"#.into(),
                false,
                Err(QueryError::NoValue),
            ),
            (
                "an error not shaped as the API's is not quoted",
                r#"{"status":"error","error":"AKIA-secret"}"#.into(),
                true,
                Err(QueryError::Body("status is error, without the API's errorType and error".into())),
            ),
        ];
        for (what, body, ignore_null, expected) in cases {
            assert_eq!(interpret(body.as_bytes(), ignore_null), expected, "{what}");
        }
    }

    /// A Prometheus that answers one series at 1 and hands over each request it got, as text.
    async fn recording() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Read until the head is in and the body is as long as it says.
                while let Ok(n) = socket.read(&mut buffer).await
                    && n > 0
                {
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request);
                    let complete = text.find("\r\n\r\n").is_some_and(|end| {
                        let length = text
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ")?.parse().ok())
                            .unwrap_or(0usize);
                        request.len() >= end + 4 + length
                    });
                    if complete {
                        break;
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&request).to_string());
                let body = vector(&["1"]);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        (address, rx)
    }

    #[tokio::test]
    async fn a_long_query_goes_as_a_post_form_with_the_other_parameters_in_the_url() {
        let (address, mut requests) = recording().await;
        let source = PrometheusSource {
            address,
            query: "unused".into(),
            ignore_null_values: false,
            timeout: None,
            headers: vec![("x-scope-orgid".into(), "team-a".into())],
            query_parameters: vec![("dedup".into(), "false".into())],
            namespace: Some("prod".into()),
            query_interval: None,
            connection: None,
            auth: None,
        };
        let http = reqwest::Client::new();
        let short = r#"sum(x{app=~"a|b"})"#;
        let answer = fetch_query(&http, &source, short, Duration::from_secs(5), 1 << 20).await.unwrap();
        assert_eq!(read(&answer, false), Ok(1.0));
        let request = requests.recv().await.unwrap();
        assert!(
            request
                .starts_with("GET /api/v1/query?query=sum%28x%7Bapp%3D~%22a%7Cb%22%7D%29&namespace=prod&dedup=false "),
            "{request}"
        );
        assert!(request.to_ascii_lowercase().contains("x-scope-orgid: team-a"), "{request}");

        let values: Vec<String> = (0..300).map(|i| format!("app-{i}")).collect();
        let long = format!(r#"sum by (app) (x{{app=~"{}"}})"#, values.join("|"));
        let answer = fetch_query(&http, &source, &long, Duration::from_secs(5), 1 << 20).await.unwrap();
        assert_eq!(read(&answer, false), Ok(1.0));
        let request = requests.recv().await.unwrap();
        assert!(request.starts_with("POST /api/v1/query?namespace=prod&dedup=false "), "{}", &request[..200]);
        let lower = request.to_ascii_lowercase();
        assert!(lower.contains("content-type: application/x-www-form-urlencoded"), "{request}");
        assert!(lower.contains("x-scope-orgid: team-a"), "{request}");
        let body = &request[request.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(body, format!("query={}", form_encode(&long)));
        assert!(body.starts_with("query=sum%20by%20%28app%29%20%28x%7Bapp%3D~%22app-0%7Capp-1%7C"), "{body}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for body in [
            "<html>502</html>",
            "",
            r#"{"status":"success","data":{}}"#,
            r#"{"status":"success","data":{"result":[{"value":[1]}]}}"#,
        ] {
            let err = interpret(body.as_bytes(), true).unwrap_err();
            assert!(matches!(err, QueryError::Body(_) | QueryError::NoValue), "{body}: {err}");
        }
    }

    #[test]
    fn a_range_keeps_the_usable_points_of_its_one_series() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[
            [1700000000,"1.5"],[1700000060,"NaN"],[1700000120,"-2"],[1700000180,"+Inf"],[1700000240,"0"],[1700000300,"x"]]}]}}"#;
        assert_eq!(interpret_range(body).unwrap(), vec![(1_700_000_000.0, 1.5), (1_700_000_240.0, 0.0)]);
        let empty = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(interpret_range(empty).unwrap(), vec![]);
        let two = br#"{"status":"success","data":{"resultType":"matrix","result":[{"values":[]},{"values":[]}]}}"#;
        assert_eq!(interpret_range(two).unwrap_err(), QueryError::MultipleSeries(2));
        let failed = br#"{"status":"error","errorType":"bad_data","error":"exceeded maximum resolution"}"#;
        assert_eq!(interpret_range(failed).unwrap_err(), QueryError::Query("exceeded maximum resolution".into()));
    }
}
