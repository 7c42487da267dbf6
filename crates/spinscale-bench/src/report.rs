//! The bench's table (stdout) and JSON (`--json`).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::BenchArgs;

/// Rows of figures, each next to its baseline.
pub struct Report {
    rows: Vec<[String; 4]>,
    notes: Vec<String>,
    json: Map<String, Value>,
}

impl Report {
    pub fn new(args: &BenchArgs) -> Self {
        let mut json = Map::new();
        json.insert("quick".into(), json!(args.quick));
        json.insert("poll_interval_s".into(), json!(args.poll.as_secs_f64()));
        json.insert("machine".into(), json!(machine()));
        Self { rows: Vec::new(), notes: Vec::new(), json }
    }

    /// One table row: what, spinscale's figure, the baseline's, and how many times better.
    pub fn row(&mut self, what: &str, ours: String, baseline: String, ratio: Option<f64>) {
        // Below 0.1 (spinscale asks more than the baseline), two significant digits.
        let ratio = ratio.map_or_else(|| "-".into(), |r| if r < 0.1 { format!("{r:.2}×") } else { format!("{r:.1}×") });
        // On stderr at once too: a long run that fails later keeps what it measured.
        eprintln!("bench: {what}: {ours} | {baseline} | {ratio}");
        self.rows.push([what.into(), ours, baseline, ratio]);
    }

    /// A figure for the JSON file.
    pub fn figure(&mut self, key: &str, value: Value) {
        self.json.insert(key.into(), value);
    }

    pub fn add_note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub fn print(&self) {
        let header = ["measurement", "spinscale", "baseline", "ratio"];
        let widths: Vec<usize> = (0..4)
            .map(|i| self.rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0))
            .collect();
        let line = |cells: [&str; 4]| {
            let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            println!("| {} |", padded.join(" | "));
        };
        println!();
        line(header);
        println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
        for r in &self.rows {
            line([&r[0], &r[1], &r[2], &r[3]]);
        }
        println!();
        for note in &self.notes {
            println!("- {note}");
        }
    }

    pub fn to_json(&self) -> anyhow::Result<String> {
        let mut all = self.json.clone();
        all.insert("notes".into(), json!(self.notes));
        Ok(serde_json::to_string_pretty(&Value::Object(all))?)
    }
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn ms_value(d: Duration) -> Value {
    json!((d.as_secs_f64() * 1e6).round() / 1e3)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(1);
    format!("{cores} cores, {cpu}")
}
