//! An SVG chart of cold-start p75 against wasted memory (or replica-hours): one point per policy.

use std::fmt::Write as _;

use super::report::PolicySummary;
use crate::status::escape;

const W: f64 = 640.0;
const H: f64 = 420.0;
const PAD: f64 = 60.0;

/// The chart as a standalone SVG document. `by_memory`: x is GB-h/day wasted, else replica-h/day.
pub fn svg(title: &str, summaries: &[PolicySummary], by_memory: bool) -> String {
    let x_of = |s: &PolicySummary| if by_memory { s.wasted_gb_hours_per_day } else { s.replica_hours_per_day };
    let x_max = summaries.iter().map(x_of).fold(0.0, f64::max).max(1e-9) * 1.1;
    let y_max = summaries.iter().map(|s| 100.0 * s.p75).fold(0.0, f64::max).max(1.0) * 1.1;
    let px = |x: f64| PAD + x / x_max * (W - 2.0 * PAD);
    let py = |y: f64| H - PAD - y / y_max * (H - 2.0 * PAD);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ =
        writeln!(out, r#"<text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>"#, W / 2.0, escape(title));
    let (x0, y0, x1, y1) = (px(0.0), py(0.0), px(x_max), py(y_max));
    let _ = writeln!(out, r#"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>"#);
    let _ = writeln!(out, r#"<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>"#);
    let x_label = if by_memory { "wasted memory (GB-h/day)" } else { "replica-hours/day" };
    let _ = writeln!(out, r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#, W / 2.0, H - 15.0);
    let _ = writeln!(
        out,
        r#"<text x="15" y="{}" text-anchor="middle" transform="rotate(-90 15 {})">cold-start rate p75 (%)</text>"#,
        H / 2.0,
        H / 2.0
    );
    for k in 0..=4 {
        let (xv, yv) = (x_max * k as f64 / 4.0, y_max * k as f64 / 4.0);
        let _ = writeln!(out, r#"<text x="{}" y="{}" text-anchor="middle">{:.0}</text>"#, px(xv), y0 + 16.0, xv);
        let _ = writeln!(out, r#"<text x="{}" y="{}" text-anchor="end">{:.1}</text>"#, x0 - 6.0, py(yv) + 4.0, yv);
    }
    for s in summaries {
        let (cx, cy) = (px(x_of(s)), py(100.0 * s.p75));
        let color = if s.policy.starts_with("spinscale") { "#c0392b" } else { "#2c3e50" };
        let _ = writeln!(out, r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="5" fill="{color}"/>"#);
        let _ = writeln!(out, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, cx + 8.0, cy - 6.0, escape(&s.policy));
    }
    out.push_str("</svg>\n");
    out
}
