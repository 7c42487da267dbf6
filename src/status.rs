//! `/status` (a page a person reads, no JavaScript) and `/status.json`: one row per target.
//!
//! Within the crate it may use [`history`](crate::history), [`registry`](crate::registry) and
//! [`signals`](crate::signals); nothing else.

use std::fmt::Write;
use std::time::Instant;

use serde::Serialize;

use crate::history::{BUCKETS, Sample};
use crate::registry::Registry;
use crate::signals::SourceView;

/// One target, as the status page shows it.
#[derive(Debug, Serialize)]
pub struct TargetStatus {
    /// The ScaledObject's namespace.
    pub namespace: String,
    /// The ScaledObject's name.
    pub scaled_object: String,
    /// The latest decision: whether the app should run (KEDA's `IsActive`).
    pub active: bool,
    /// Why, e.g. `idle`, `rps`, `keep-alive`, `held-request`.
    pub reason: &'static str,
    /// Replicas wanted, the `spinscale-replicas` metric.
    pub desired_replicas: f64,
    /// Request rate, requests per second (0 without a rate source).
    pub rps: f64,
    /// Capped Kafka lag, messages (0 without a Kafka source).
    pub lag: f64,
    /// The latest rate forecast, requests per second (0 unless `predictive: full`).
    pub forecast: f64,
    /// Idle gaps the engine has learned (the backfilled past included).
    pub learned_gaps: u32,
    /// Times a signal rose while the target was inactive.
    pub cold_starts: u64,
    /// `StreamIsActive` streams open on the target.
    pub open_streams: usize,
    /// Why unary calls answer `UNAVAILABLE`, if they do.
    pub problem: Option<String>,
    /// Each signal source the target reads.
    pub sources: Vec<SourceStatus>,
    /// Likely mistakes in the trigger that are not errors (misspelt keys, ignored options).
    pub warnings: Vec<String>,
    /// The last hour in 30 s buckets, oldest first.
    pub history: Vec<Sample>,
}

/// One signal source of a target, as the status page shows it.
#[derive(Debug, Serialize)]
pub struct SourceStatus {
    /// `prometheus`, `scrape` or `kafka`.
    pub kind: &'static str,
    /// What it reads, e.g. `kafka BROKERS group "G" topic "T"` (never a secret).
    pub source: String,
    /// `ok`, `pending`, `failed` or `stale`.
    pub state: &'static str,
    /// Age of the last good reading, seconds; `None` before the first.
    pub reading_age_seconds: Option<f64>,
    /// Why the most recent poll failed, if it did.
    pub error: Option<String>,
}

/// Every live target, sorted by namespace and name.
pub fn snapshot(registry: &Registry) -> Vec<TargetStatus> {
    let stale_after = registry.config().collectors.stale_after.0;
    let now = Instant::now();
    let mut rows: Vec<TargetStatus> = registry
        .targets()
        .iter()
        .map(|t| {
            let state = t.state();
            let sources = t
                .sources()
                .into_iter()
                .map(|(key, s)| {
                    let age = s.last_good.as_ref().map(|(_, at)| now.saturating_duration_since(*at).as_secs_f64());
                    let state = match s.view(now, stale_after) {
                        SourceView::Fresh(_) => "ok",
                        SourceView::Pending => "pending",
                        SourceView::Failed(_) => "failed",
                        SourceView::Stale(_) => "stale",
                    };
                    let error = s.error.as_deref().map(str::to_string);
                    SourceStatus { kind: key.kind(), source: key.to_string(), state, reading_age_seconds: age, error }
                })
                .collect();
            let d = &state.decision;
            TargetStatus {
                namespace: t.key.namespace.clone(),
                scaled_object: t.key.name.clone(),
                active: d.active,
                reason: d.reason.as_str(),
                desired_replicas: d.desired_replicas,
                rps: d.rps,
                lag: d.lag,
                forecast: t.forecast(),
                learned_gaps: t.learned_gaps(),
                cold_starts: t.cold_starts(),
                open_streams: t.open_streams(),
                problem: state.problem.as_ref().map(ToString::to_string),
                sources,
                warnings: t.spec().warnings.clone(),
                history: t.history(),
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.scaled_object).cmp(&(&b.namespace, &b.scaled_object)));
    rows
}

/// The page: a table, one row per target, each with a chart of its last hour.
pub fn html(rows: &[TargetStatus]) -> String {
    let mut out = String::with_capacity(4096 + rows.len() * 4096);
    out.push_str(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"10\">",
        "<title>spinscale status</title><style>",
        "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}",
        "table{border-collapse:collapse}th,td{border-bottom:1px solid #ddd;padding:.4em .6em;text-align:left;vertical-align:top}",
        ".active{color:#0a0;font-weight:600}.idle{color:#777}.problem{color:#b00}.ok{color:#0a0}",
        ".failed,.stale{color:#b00}.pending{color:#a60}small{color:#666}ul{margin:0;padding-left:1em}",
        "</style></head><body>\n<h1>spinscale</h1>\n"
    ));
    let _ = writeln!(
        out,
        "<p id=\"summary\">{} targets; {} active. Charts: the last hour, request rate (blue), forecast (orange, dashed), lag (purple), active (green band).</p>",
        rows.len(),
        rows.iter().filter(|r| r.active).count()
    );
    out.push_str(concat!(
        "<table id=\"targets\"><thead><tr><th>ScaledObject</th><th>decision</th><th>signals</th>",
        "<th>sources</th><th>last hour</th></tr></thead><tbody>\n"
    ));
    for r in rows {
        let decision_class = if r.active { "active" } else { "idle" };
        let _ = write!(
            out,
            "<tr class=\"target\" data-namespace=\"{ns}\" data-name=\"{name}\"><td>{ns}/<b>{name}</b><br><small>{streams} open streams</small></td>",
            ns = escape(&r.namespace),
            name = escape(&r.scaled_object),
            streams = r.open_streams,
        );
        let _ = write!(
            out,
            "<td><span class=\"decision {decision_class}\">{}</span> <small>({})</small><br>{:.2} replicas",
            if r.active { "active" } else { "inactive" },
            r.reason,
            r.desired_replicas
        );
        if let Some(problem) = &r.problem {
            let _ = write!(out, "<br><span class=\"problem\">{}</span>", escape(problem));
        }
        for w in &r.warnings {
            let _ = write!(out, "<br><small>⚠ {}</small>", escape(w));
        }
        let _ = write!(
            out,
            "</td><td>{:.2} rps<br>lag {:.0}<br>forecast {:.2} rps<br><small>{} idle gaps learned, {} cold starts</small></td><td><ul>",
            r.rps, r.lag, r.forecast, r.learned_gaps, r.cold_starts
        );
        for s in &r.sources {
            let age = s.reading_age_seconds.map_or(String::new(), |a| format!(", {a:.1} s old"));
            let _ = write!(
                out,
                "<li><span class=\"{0}\">{0}</span> {1}<small>{2}</small>",
                s.state,
                escape(&s.source),
                age
            );
            if let Some(e) = &s.error {
                let _ = write!(out, "<br><small class=\"failed\">{}</small>", escape(e));
            }
            out.push_str("</li>");
        }
        out.push_str("</ul></td><td>");
        chart(&mut out, &r.history);
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody></table>\n</body></html>\n");
    out
}

/// Pixels per bucket.
const STEP: f64 = 3.0;
const CHART_W: f64 = BUCKETS as f64 * STEP;
const CHART_H: f64 = 60.0;

/// An inline SVG: active band, rate and forecast on one scale, lag on its own.
fn chart(out: &mut String, points: &[Sample]) {
    let _ = write!(
        out,
        "<svg class=\"chart\" width=\"{CHART_W}\" height=\"{CHART_H}\" viewBox=\"0 0 {CHART_W} {CHART_H}\" role=\"img\"><title>last hour</title><rect width=\"{CHART_W}\" height=\"{CHART_H}\" fill=\"#fafafa\" stroke=\"#ddd\"/>"
    );
    // Right-aligned: the newest bucket at the right edge.
    let x0 = CHART_W - points.len() as f64 * STEP;
    for (i, _) in points.iter().enumerate().filter(|(_, p)| p.active) {
        let _ = write!(
            out,
            "<rect class=\"band\" x=\"{}\" y=\"0\" width=\"{STEP}\" height=\"{CHART_H}\" fill=\"#c8f0c8\"/>",
            x0 + i as f64 * STEP
        );
    }
    let rate_max = points.iter().map(|p| p.rps.max(p.forecast)).fold(0.0, f64::max);
    let lag_max = points.iter().map(|p| p.lag).fold(0.0, f64::max);
    line(out, points, x0, rate_max, |p| p.rps, "#1f6feb", "");
    line(out, points, x0, rate_max, |p| p.forecast, "#e36209", " stroke-dasharray=\"3 2\"");
    line(out, points, x0, lag_max, |p| p.lag, "#8250df", "");
    out.push_str("</svg>");
}

fn line(out: &mut String, points: &[Sample], x0: f64, max: f64, value: fn(&Sample) -> f64, color: &str, extra: &str) {
    if max <= 0.0 || points.is_empty() {
        return;
    }
    let _ = write!(out, "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.2\"{extra} points=\"");
    for (i, p) in points.iter().enumerate() {
        let y = CHART_H - 2.0 - (value(p) / max) * (CHART_H - 4.0);
        let _ = write!(out, "{:.0},{y:.1} ", x0 + (i as f64 + 0.5) * STEP);
    }
    out.push_str("\"/>");
}

/// HTML (and SVG) text and attribute escaping.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_triggers_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn the_chart_draws_the_band_and_the_lines() {
        let points: Vec<Sample> = (0..10)
            .map(|i| Sample { at_secs: i as f64 * 30.0, rps: i as f64, lag: 0.0, forecast: 1.0, active: i > 5 })
            .collect();
        let mut svg = String::new();
        chart(&mut svg, &points);
        assert_eq!(svg.matches("class=\"band\"").count(), 4);
        assert_eq!(svg.matches("<polyline").count(), 2, "no lag line when lag stayed 0");
        assert!(svg.ends_with("</svg>"));
    }
}
