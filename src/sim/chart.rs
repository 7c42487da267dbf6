//! SVG charts: what users feel (cold-start p75, total cold starts) against what it costs (wasted
//! memory, or replica-hours for single-series traces), one point per policy; for `--sweep`, a line
//! through the swept settings (the frontier) with the other policies as reference points.

use std::fmt::Write as _;

use super::report::PolicySummary;
use crate::status::escape;

const PANEL_W: f64 = 480.0;
const H: f64 = 440.0;
const PAD: f64 = 64.0;
const TOP: f64 = 56.0;

/// One point of a panel.
#[derive(Clone, Debug)]
pub struct Point {
    /// x value.
    pub x: f64,
    /// y value.
    pub y: f64,
    /// Text next to the point.
    pub label: String,
    /// Drawn in spinscale's colour (else as a reference).
    pub ours: bool,
    /// Labels are placed lowest first; one that would overlap a label already placed is left out.
    pub priority: u8,
}

/// One scatter plot: points, and lines through some of them.
#[derive(Clone, Debug, Default)]
pub struct Panel {
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// The points.
    pub points: Vec<Point>,
    /// Polylines, each through points in the given order.
    pub lines: Vec<Vec<(f64, f64)>>,
}

/// The axis' top for values up to `max`: four ticks of 1, 2, 2.5 or 5 × a power of ten.
fn axis_top(max: f64) -> f64 {
    let raw = (max.max(1e-9) * 1.05) / 4.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * power).find(|s| *s >= raw).unwrap_or(10.0 * power);
    4.0 * step
}

/// A tick's text, with as many decimals as the ticks' spacing (`top / 4`) needs.
fn tick(v: f64, top: f64) -> String {
    let step = top / 4.0;
    let decimals =
        (0..6).find(|&d| ((step * 10f64.powi(d)) - (step * 10f64.powi(d)).round()).abs() < 1e-6).unwrap_or(6);
    if decimals == 0 { super::report::thousands(v.round() as u64) } else { format!("{v:.0$}", decimals as usize) }
}

/// Where a label goes: right of its point, above or below, else left; `None` when every place
/// overlaps a label already placed (its point stays, unlabelled).
fn place(placed: &mut Vec<[f64; 4]>, cx: f64, cy: f64, text: &str) -> Option<(f64, f64, &'static str)> {
    let w = 5.6 * text.chars().count() as f64;
    let h = 10.0;
    let options = [
        (cx + 6.0, cy - 5.0, "start"),
        (cx + 6.0, cy + 13.0, "start"),
        (cx - 6.0, cy - 5.0, "end"),
        (cx - 6.0, cy + 13.0, "end"),
    ];
    for (x, y, anchor) in options {
        let left = if anchor == "start" { x } else { x - w };
        let b = [left, y - h, left + w, y];
        if placed.iter().all(|o| b[2] <= o[0] || o[2] <= b[0] || b[3] <= o[1] || o[3] <= b[1]) {
            placed.push(b);
            return Some((x, y, anchor));
        }
    }
    None
}

/// Panels side by side as a standalone SVG document.
pub fn panels(title: &str, panels: &[Panel]) -> String {
    let w = PANEL_W * panels.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{H}" fill="white"/>"#);
    let _ =
        writeln!(out, r#"<text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>"#, w / 2.0, escape(title));
    for (i, panel) in panels.iter().enumerate() {
        draw(&mut out, panel, i as f64 * PANEL_W);
    }
    out.push_str("</svg>\n");
    out
}

fn draw(out: &mut String, panel: &Panel, left: f64) {
    let xs = panel.points.iter().map(|p| p.x).chain(panel.lines.iter().flatten().map(|p| p.0));
    let ys = panel.points.iter().map(|p| p.y).chain(panel.lines.iter().flatten().map(|p| p.1));
    let x_max = axis_top(xs.fold(0.0, f64::max));
    let y_max = axis_top(ys.fold(0.0, f64::max));
    let px = |x: f64| left + PAD + x / x_max * (PANEL_W - 1.5 * PAD);
    let py = |y: f64| H - PAD - y / y_max * (H - PAD - TOP);
    let (x0, y0, x1, y1) = (px(0.0), py(0.0), px(x_max), py(y_max));
    let _ = writeln!(out, r#"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>"#);
    let _ = writeln!(out, r#"<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        H - 18.0,
        escape(&panel.x_label)
    );
    let (lx, ly) = (left + 14.0, (y0 + y1) / 2.0);
    let _ = writeln!(
        out,
        r#"<text x="{lx}" y="{ly}" text-anchor="middle" transform="rotate(-90 {lx} {ly})">{}</text>"#,
        escape(&panel.y_label)
    );
    for k in 0..=4 {
        let (xv, yv) = (x_max * k as f64 / 4.0, y_max * k as f64 / 4.0);
        let _ =
            writeln!(out, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, px(xv), y0 + 16.0, tick(xv, x_max));
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            x0 - 6.0,
            py(yv) + 4.0,
            tick(yv, y_max)
        );
    }
    for line in &panel.lines {
        let points: Vec<String> = line.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        let _ = writeln!(out, r##"<polyline points="{}" fill="none" stroke="#c0392b"/>"##, points.join(" "));
    }
    let color = |p: &Point| if p.ours { "#c0392b" } else { "#2c3e50" };
    for p in &panel.points {
        let _ = writeln!(out, r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/>"#, px(p.x), py(p.y), color(p));
    }
    // Labels that would overlap are left out, the lower priorities placed first.
    let mut order: Vec<usize> = (0..panel.points.len()).collect();
    order.sort_by_key(|&i| panel.points[i].priority);
    let mut placed = Vec::new();
    for i in order {
        let p = &panel.points[i];
        if let Some((x, y, anchor)) = place(&mut placed, px(p.x), py(p.y), &p.label) {
            let _ = writeln!(
                out,
                r#"<text x="{x:.1}" y="{y:.1}" font-size="10" text-anchor="{anchor}" fill="{}">{}</text>"#,
                color(p),
                escape(&p.label)
            );
        }
    }
}

/// The cost axis: wasted GB-h/day (`by_memory`) or replica-hours per day.
pub fn cost(s: &PolicySummary, by_memory: bool) -> f64 {
    if by_memory { s.wasted_gb_hours_per_day } else { s.replica_hours_per_day }
}

fn cost_label(by_memory: bool) -> &'static str {
    if by_memory { "wasted memory (GB-h/day)" } else { "replica-hours/day" }
}

/// One labelled summary of a chart: label, spinscale's colour, label priority.
type Labelled<'a> = (String, bool, u8, &'a PolicySummary);

/// The two panels of a set of labelled summaries: cold-start p75 and total cold starts against the cost.
fn two_panels(points: &[Labelled], lines: &[Vec<&PolicySummary>], by_memory: bool) -> [Panel; 2] {
    let panel = |y_label: &str, y: fn(&PolicySummary) -> f64| Panel {
        x_label: cost_label(by_memory).into(),
        y_label: y_label.into(),
        points: points
            .iter()
            .map(|(label, ours, priority, s)| Point {
                x: cost(s, by_memory),
                y: y(s),
                label: label.clone(),
                ours: *ours,
                priority: *priority,
            })
            .collect(),
        lines: lines.iter().map(|l| l.iter().map(|s| (cost(s, by_memory), y(s))).collect()).collect(),
    };
    [panel("cold-start rate p75 (%)", |s| 100.0 * s.p75), panel("cold starts (total)", |s| s.cold_starts as f64)]
}

/// The chart of one run: a point per policy in two panels, cold-start p75 and total cold starts
/// against wasted memory (`by_memory`) or replica-hours.
pub fn svg(title: &str, summaries: &[PolicySummary], by_memory: bool) -> String {
    let points: Vec<Labelled> =
        summaries.iter().map(|s| (s.policy.clone(), s.policy.starts_with("spinscale"), 0, s)).collect();
    panels(title, &two_panels(&points, &[], by_memory))
}

/// The chart of a sweep: each swept policy's settings as a line of labelled points (`swept`: one
/// list per policy, in sweep order, with each point's label), the reference policies as points.
pub fn frontier_svg(
    title: &str,
    references: &[PolicySummary],
    swept: &[Vec<(String, &PolicySummary)>],
    by_memory: bool,
) -> String {
    // References labelled first, then the ends of each line, then the rest.
    let mut points: Vec<Labelled> = references.iter().map(|s| (s.policy.clone(), false, 0, s)).collect();
    for line in swept {
        let end = line.len().saturating_sub(1);
        points.extend(
            line.iter()
                .enumerate()
                .map(|(i, (label, s))| (label.clone(), true, if i == 0 || i == end { 1 } else { 2 }, *s)),
        );
    }
    let lines: Vec<Vec<&PolicySummary>> = swept.iter().map(|l| l.iter().map(|(_, s)| *s).collect()).collect();
    panels(title, &two_panels(&points, &lines, by_memory))
}
