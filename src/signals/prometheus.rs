//! Prometheus instant queries, with KEDA's prometheus-scaler result rules (KEDA.md §3).
//!
//! [`interpret`] is the pure part (tested on strings); [`query`] does one HTTP round trip.

use std::time::Duration;

use serde_json::Value;

use crate::target::PrometheusSource;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("response is not Prometheus API JSON: {0}")]
    Body(String),
    #[error("query failed: {0}")]
    Query(String),
    #[error("the result is empty (the target may be lost; set ignoreNullValues: true to read it as 0)")]
    Empty,
    #[error("the query returned {0} series; it must return one (wrap it in sum(...))")]
    MultipleSeries(usize),
    #[error("the result has no value")]
    NoValue,
    #[error("the value {0:?} is not a finite number (set ignoreNullValues: true to read it as 0)")]
    NotFinite(String),
    #[error("the value {0:?} is not a number")]
    NotANumber(String),
}

/// Runs `source`'s query once and reads the value under KEDA's rules.
pub async fn query(http: &reqwest::Client, source: &PrometheusSource, timeout: Duration) -> Result<f64, QueryError> {
    let mut params: Vec<(&str, &str)> = vec![("query", source.query.as_str())];
    if let Some(ns) = &source.namespace {
        params.push(("namespace", ns));
    }
    params.extend(source.query_parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut request = http.get(format!("{}/api/v1/query", source.address)).query(&params).timeout(timeout);
    for (k, v) in &source.headers {
        request = request.header(k, v);
    }
    // The URL (with the whole encoded query) would drown the cause; the source is named anyway.
    let failed = |e: reqwest::Error| QueryError::Request(super::error_chain(&e.without_url()));
    let response = request.send().await.map_err(failed)?;
    let status = response.status();
    let body = response.bytes().await.map_err(failed)?;
    // Prometheus answers 400/422/503 with a JSON error body that says more than the status.
    if !status.is_success() && serde_json::from_slice::<Value>(&body).is_err() {
        let text = String::from_utf8_lossy(&body);
        return Err(QueryError::Status { status: status.as_u16(), body: text.chars().take(200).collect() });
    }
    interpret(&body, source.ignore_null_values)
}

/// KEDA's result table: empty → 0 or error; more than one series → error; NaN/±Inf → 0 or error.
pub fn interpret(body: &[u8], ignore_null_values: bool) -> Result<f64, QueryError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| QueryError::Body(e.to_string()))?;
    if doc["status"] != "success" {
        let error = doc["error"].as_str().unwrap_or("no error message");
        return Err(QueryError::Query(error.to_string()));
    }
    let result = &doc["data"]["result"];
    let value = match (doc["data"]["resultType"].as_str(), result) {
        // A scalar is `[ts, "v"]` itself.
        (Some("scalar"), Value::Array(_)) => result,
        (_, Value::Array(series)) => match series.as_slice() {
            [] if ignore_null_values => return Ok(0.0),
            [] => return Err(QueryError::Empty),
            [one] => match one.get("value") {
                Some(v) => v,
                None if ignore_null_values => return Ok(0.0),
                None => return Err(QueryError::NoValue),
            },
            many => return Err(QueryError::MultipleSeries(many.len())),
        },
        _ => return Err(QueryError::Body("data.result is missing or not a list".into())),
    };
    let text = match value.as_array().map(Vec::as_slice) {
        Some([_, Value::String(text)]) => text,
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
        ];
        for (what, body, ignore_null, expected) in cases {
            assert_eq!(interpret(body.as_bytes(), ignore_null), expected, "{what}");
        }
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
}
