//! Trace loaders: Azure Functions 2019 (invitro samples), NASA-HTTP per minute, and a generic
//! `timestamp,count[,series]` CSV (the Wikipedia hourly file reads as one). Each gives a dense grid
//! of counts per step, plus which steps are scored (missing rows and outages are not).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use super::SimError;

/// One replayable trace.
#[derive(Clone, Debug)]
pub struct Trace {
    /// Shown in reports and output file names: the Azure prefix's file name, the CSV's stem, or
    /// `nasa_http_1995`, with ` (thinned ×F)` under `--thin`.
    pub name: String,
    /// Time between two counts.
    pub step: Duration,
    /// Wall-clock time of the first step, Unix seconds (local time for NASA, as its daily pattern is local).
    pub start_wall: f64,
    /// Its functions or services, each with a count for every step.
    pub series: Vec<Series>,
}

/// One function or service.
#[derive(Clone, Debug)]
pub struct Series {
    /// The function's hash (Azure), `nasa`, or the CSV's third column (`series` without one).
    pub name: String,
    /// Invocations (requests) started in each step.
    pub counts: Vec<u32>,
    /// Steps that count in the score; `None` = all.
    pub scored: Option<Vec<bool>>,
    /// Memory of one warm instance, MB (`AverageAllocatedMb` for Azure).
    pub memory_mb: f64,
    /// Whether `memory_mb` comes from the trace (then the engine is told it) or from `--memory-mb`.
    pub memory_measured: bool,
}

impl Series {
    /// Whether step `t` counts in the score.
    pub fn is_scored(&self, t: usize) -> bool {
        self.scored.as_ref().is_none_or(|s| s[t])
    }
}

/// How to load and shape a trace.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Keep each request with this probability (creates idle stretches).
    pub thin: Option<f64>,
    /// Keep the first N series.
    pub functions: Option<usize>,
    /// Keep steps on or after this day.
    pub from: Option<NaiveDate>,
    /// Keep steps before the end of this day.
    pub to: Option<NaiveDate>,
    /// Memory of one instance when the trace has none.
    pub memory_mb: f64,
    /// Seed of the thinning's generator: the same seed thins the same requests.
    pub seed: u64,
}

/// Loads `azure:PREFIX`, `nasa:FILE` or `csv:FILE`.
pub fn load(spec: &str, opts: &LoadOptions) -> Result<Trace, SimError> {
    let (kind, path) = spec.split_once(':').ok_or_else(|| SimError::TraceSpec(spec.to_string()))?;
    let mut trace = match kind {
        "azure" => azure(Path::new(path))?,
        "nasa" => nasa(Path::new(path), opts)?,
        "csv" => csv(Path::new(path), opts)?,
        _ => return Err(SimError::TraceSpec(spec.to_string())),
    };
    window(&mut trace, opts);
    if let Some(n) = opts.functions {
        trace.series.truncate(n);
    }
    if let Some(f) = opts.thin {
        thin(&mut trace, f, opts.seed);
        trace.name = format!("{} (thinned ×{f})", trace.name);
    }
    if trace.series.is_empty() || trace.series[0].counts.is_empty() {
        return Err(SimError::Empty(spec.to_string()));
    }
    Ok(trace)
}

fn read(path: &Path) -> Result<String, SimError> {
    std::fs::read_to_string(path).map_err(|source| SimError::Read { path: path.display().to_string(), source })
}

fn bad(path: &Path, line: usize, what: impl Into<String>) -> SimError {
    SimError::Parse { path: path.display().to_string(), line, message: what.into() }
}

fn azure(prefix: &Path) -> Result<Trace, SimError> {
    let with = |suffix: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let mem_path = with("_mem.csv");
    let mut memory: HashMap<String, f64> = HashMap::new();
    let text = read(&mem_path)?;
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, h)| h).unwrap_or_default();
    let col = header
        .split(',')
        .position(|c| c == "AverageAllocatedMb")
        .ok_or_else(|| bad(&mem_path, 1, "no AverageAllocatedMb column"))?;
    for (i, line) in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let mb = fields
            .get(col)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| bad(&mem_path, i + 1, "AverageAllocatedMb is not a number"))?;
        memory.insert(fields[0].to_string(), mb);
    }
    let inv_path = with("_inv.csv");
    let text = read(&inv_path)?;
    let mut series = Vec::new();
    let mut width = None;
    for (i, line) in text.lines().enumerate().skip(1) {
        let mut fields = line.split(',');
        let function = fields.next().unwrap_or_default().to_string();
        let app = fields.next().unwrap_or_default().to_string();
        let _owner = fields.next();
        let counts = fields
            .map(|v| v.trim().parse::<u32>().map_err(|_| bad(&inv_path, i + 1, format!("count {v:?} is not a number"))))
            .collect::<Result<Vec<u32>, _>>()?;
        if *width.get_or_insert(counts.len()) != counts.len() {
            return Err(bad(&inv_path, i + 1, "row has a different number of minutes"));
        }
        let memory_mb = memory.get(&app).copied().ok_or_else(|| bad(&mem_path, 0, format!("no row for app {app}")))?;
        series.push(Series { name: function, counts, scored: None, memory_mb, memory_measured: true });
    }
    let name = prefix.file_name().map_or_else(|| prefix.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(Trace { name, step: Duration::from_secs(60), start_wall: 0.0, series })
}

fn nasa(path: &Path, opts: &LoadOptions) -> Result<Trace, SimError> {
    let text = read(path)?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(stamp), Some(index), Some(requests), Some(flag)) = (f.first(), f.get(1), f.get(2), f.get(3)) else {
            return Err(bad(path, i + 1, "expected minute_start_local,minute_index,requests,flag"));
        };
        let local = DateTime::parse_from_rfc3339(stamp)
            .map_err(|e| bad(path, i + 1, format!("timestamp {stamp:?}: {e}")))?
            .naive_local();
        let index: usize = index.parse().map_err(|_| bad(path, i + 1, format!("minute_index {index:?}")))?;
        let requests: u32 = requests.parse().map_err(|_| bad(path, i + 1, format!("requests {requests:?}")))?;
        rows.push((local, index, requests, *flag == "ok"));
    }
    let Some(&(first, first_index, _, _)) = rows.first() else { return Err(bad(path, 0, "no rows")) };
    let len = rows.last().map_or(0, |r| r.1 - first_index + 1);
    let mut counts = vec![0; len];
    let mut scored = vec![false; len];
    for (_, index, requests, ok) in rows {
        counts[index - first_index] = requests;
        scored[index - first_index] = ok;
    }
    let series = vec![Series {
        name: "nasa".into(),
        counts,
        scored: Some(scored),
        memory_mb: opts.memory_mb,
        memory_measured: false,
    }];
    let start_wall = first.and_utc().timestamp() as f64;
    Ok(Trace { name: "nasa_http_1995".into(), step: Duration::from_secs(60), start_wall, series })
}

/// `timestamp,count[,series]` (or `;`-separated), an optional header; timestamps as Unix seconds or
/// `YYYY-MM-DD HH:MM:SS`. The step is the shortest spacing; missing steps are zeros, not scored.
fn csv(path: &Path, opts: &LoadOptions) -> Result<Trace, SimError> {
    let text = read(path)?;
    let mut by_series: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split([',', ';']).map(str::trim).collect();
        let parsed = f.get(1).and_then(|c| c.parse::<f64>().ok()).zip(f.first().and_then(|t| timestamp(t)));
        let Some((count, at)) = parsed else {
            if i == 0 {
                continue; // a header
            }
            return Err(bad(path, i + 1, "expected timestamp,count[,series]"));
        };
        let name = f.get(2).map_or("series", |s| s).to_string();
        // Duplicated timestamps: the first one counts.
        by_series.entry(name).or_default().entry(at).or_insert(count.max(0.0));
    }
    let stamps = || by_series.values().flat_map(|s| s.keys().copied());
    let (Some(start), Some(end)) = (stamps().min(), stamps().max()) else { return Err(bad(path, 0, "no rows")) };
    let step = by_series
        .values()
        .flat_map(|s| s.keys().zip(s.keys().skip(1)).map(|(a, b)| b - a))
        .filter(|d| *d > 0)
        .min()
        .unwrap_or(60);
    let len = ((end - start) / step + 1) as usize;
    let mut series = Vec::new();
    for (name, points) in by_series {
        let mut counts = vec![0; len];
        let mut scored = vec![false; len];
        // Partial dumps show as implausibly low values: a tenth of the median or less is not scored.
        let mut values: Vec<f64> = points.values().copied().collect();
        values.sort_by(f64::total_cmp);
        let median = values.get(values.len() / 2).copied().unwrap_or(0.0);
        for (at, count) in points {
            let t = ((at - start) / step) as usize;
            counts[t] = count.round().min(u32::MAX as f64) as u32;
            scored[t] = !(median > 0.0 && count <= median / 10.0);
        }
        series.push(Series { name, counts, scored: Some(scored), memory_mb: opts.memory_mb, memory_measured: false });
    }
    let name = path.file_stem().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(Trace { name, step: Duration::from_secs(step as u64), start_wall: start as f64, series })
}

fn timestamp(text: &str) -> Option<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return Some(secs);
    }
    ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc().timestamp())
        .or_else(|| DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp()))
}

/// Keeps the steps between `from` and the end of `to`.
fn window(trace: &mut Trace, opts: &LoadOptions) {
    let step = trace.step.as_secs_f64();
    let day_start = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map_or(0.0, |t| t.and_utc().timestamp() as f64);
    let len = trace.series.first().map_or(0, |s| s.counts.len());
    let first = opts.from.map_or(0, |d| (((day_start(d) - trace.start_wall) / step).ceil().max(0.0)) as usize);
    let end = opts.to.map_or(len, |d| (((day_start(d) + 86_400.0 - trace.start_wall) / step).ceil().max(0.0)) as usize);
    let (first, end) = (first.min(len), end.min(len).max(first.min(len)));
    if (first, end) == (0, len) {
        return;
    }
    for s in &mut trace.series {
        s.counts = s.counts[first..end].to_vec();
        s.scored = s.scored.as_ref().map(|v| v[first..end].to_vec());
    }
    trace.start_wall += first as f64 * step;
}

/// Keeps each request with probability `f` (a fixed-seed generator: runs repeat exactly).
fn thin(trace: &mut Trace, f: f64, seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    for s in &mut trace.series {
        for c in &mut s.counts {
            *c = if *c > 10_000 {
                (*c as f64 * f).round() as u32
            } else {
                (0..*c).filter(|_| uniform() < f).count() as u32
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LoadOptions {
        LoadOptions { thin: None, functions: None, from: None, to: None, memory_mb: 128.0, seed: 1 }
    }

    #[test]
    fn a_generic_csv_fills_missing_steps_and_skips_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "timestamp;views\n2010-05-01 00:00:00;100\n2010-05-01 02:00:00;120\n2010-05-01 02:00:00;5\n2010-05-01 03:00:00;130\n").unwrap();
        let trace = load(&format!("csv:{}", path.display()), &opts()).unwrap();
        assert_eq!(trace.step, Duration::from_secs(3600));
        let s = &trace.series[0];
        assert_eq!(s.counts, vec![100, 0, 120, 130], "a duplicated hour keeps its first value");
        assert_eq!(s.scored, Some(vec![true, false, true, true]), "the missing hour is not scored");
    }

    #[test]
    fn a_bad_trace_spec_or_row_is_an_error_not_a_panic() {
        assert!(matches!(load("azure", &opts()), Err(SimError::TraceSpec(_))));
        assert!(matches!(load("zip:x", &opts()), Err(SimError::TraceSpec(_))));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "1,2\nx,y\n").unwrap();
        let err = load(&format!("csv:{}", path.display()), &opts()).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn thinning_keeps_about_the_given_fraction() {
        let mut trace = Trace {
            name: "t".into(),
            step: Duration::from_secs(60),
            start_wall: 0.0,
            series: vec![Series {
                name: "s".into(),
                counts: vec![100; 100],
                scored: None,
                memory_mb: 1.0,
                memory_measured: false,
            }],
        };
        thin(&mut trace, 0.1, 7);
        let kept: u32 = trace.series[0].counts.iter().sum();
        assert!((800..1200).contains(&kept), "{kept}");
    }
}
