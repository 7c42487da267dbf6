//! The figures of `spinscale simulate` (total cold starts, the invocation-weighted rate, per-series
//! percentiles, wasted and total memory, quartiles of daily invocations) on hand-made traces whose
//! every figure is counted by hand, and `--sweep` on a tiny trace, end to end. No real trace needed.

use std::process::Command;
use std::time::Duration;

use spinscale::sim::policy::PolicyKind;
use spinscale::sim::report::{Figures, PolicySummary};
use spinscale::sim::sweep::Axis;
use spinscale::sim::trace::{Series, Trace};
use spinscale::sim::{simulate, simulate_sweep};
use spinscale_core::engine::EngineSettings;
use spinscale_core::spec::RateRules;

const STEPS: usize = 60;

/// A series of `STEPS` one-minute steps with `(step, count)` invocations and `memory_mb` per instance.
fn series(name: &str, memory_mb: f64, invocations: &[(usize, u32)]) -> Series {
    let mut counts = vec![0; STEPS];
    for &(t, c) in invocations {
        counts[t] = c;
    }
    Series { name: name.into(), counts, scored: None, memory_mb, memory_measured: true }
}

/// Six functions over one hour. Under `fixed-10m` a step is warm for the 10 steps after a step with
/// invocations (activity in step a: warm in a+1..=a+10). Counted by hand:
///
/// | series | memory | invocations (step: count) | invocations | cold starts | rate | busy | idle warm |
/// |---|---|---|---|---|---|---|---|
/// | a | 1024 | 0: 1, 5: 2, 30: 1 | 4 | 2 (0, 30) | 1/2 | 3 | 1..=15 but 5, 31..=40: 24 |
/// | b | 512 | every step: 10 | 600 | 1 (0) | 1/600 | 60 | 0 |
/// | c | 2048 | 50: 3 | 3 | 1 | 1/3 | 1 | 51..=59: 9 (the trace ends) |
/// | d | 256 | none | 0 | 0 | none | 0 | 0 |
/// | e | 1024 | 0: 1, 20: 1, 40: 1 | 3 | 3 (gaps of 20) | 1 | 3 | 3 × 10: 30 |
/// | f | 1024 | 10: 2, 15: 2 | 4 | 1 (10) | 1/4 | 2 | 11..=25 but 15: 14 |
fn hand_made() -> Trace {
    Trace {
        name: "hand-made".into(),
        step: Duration::from_secs(60),
        start_wall: 0.0,
        series: vec![
            series("a", 1024.0, &[(0, 1), (5, 2), (30, 1)]),
            series("b", 512.0, &(0..STEPS).map(|t| (t, 10)).collect::<Vec<_>>()),
            series("c", 2048.0, &[(50, 3)]),
            series("d", 256.0, &[]),
            series("e", 1024.0, &[(0, 1), (20, 1), (40, 1)]),
            series("f", 1024.0, &[(10, 2), (15, 2)]),
        ],
    }
}

fn run(trace: &Trace, policy: &str) -> PolicySummary {
    let rate = RateRules { target_rps: 1.0, activation_rps: 0.0 };
    let policy = PolicyKind::parse(policy).expect("a policy name");
    let mut result = simulate(trace, &[policy], &EngineSettings::default(), &rate, Duration::ZERO);
    result.policies.remove(0)
}

/// MB held for one one-minute step, in GB-h per day of a one-hour replay: 1/1024 GB × 1/60 h × 24.
fn gb_h_per_day(mb_steps: f64) -> f64 {
    mb_steps / 1024.0 / 60.0 * 24.0
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn totals_rates_and_percentiles_are_counted_as_documented() {
    let s = run(&hand_made(), "fixed-10m");
    assert_eq!(s.invocations, 4 + 600 + 3 + 3 + 4);
    assert_eq!(s.cold_starts, 2 + 1 + 1 + 3 + 1, "one per cold step, however many invocations it holds");
    assert!(close(s.cold_start_rate, 8.0 / 614.0), "weighted by invocations: {}", s.cold_start_rate);
    // Per-series rates over the five series with invocations: 1/600, 1/4, 1/3, 1/2, 1; lower
    // nearest rank, sorted[floor(p × 4)]: p50 index 2, p75 3, p90 3, p99 3.
    assert!(close(s.p50, 1.0 / 3.0), "p50 {}", s.p50);
    assert_eq!((s.p75, s.p90, s.p99), (0.5, 0.5, 0.5));
    // Every series starts cold in its first active step; only a, b and e have one in step 0.
    assert_eq!(s.cold_starts_late, 8 - 3);
}

#[test]
fn wasted_memory_is_idle_warm_time_and_total_adds_the_busy_steps() {
    let s = run(&hand_made(), "fixed-10m");
    let wasted = 24.0 * 1024.0 + 9.0 * 2048.0 + 30.0 * 1024.0 + 14.0 * 1024.0;
    let busy = 3.0 * 1024.0 + 60.0 * 512.0 + 2048.0 + 3.0 * 1024.0 + 2.0 * 1024.0;
    assert!(close(s.wasted_gb_hours_per_day, gb_h_per_day(wasted)), "{}", s.wasted_gb_hours_per_day);
    assert!(close(s.wasted_gb_hours_per_day, 34.4), "88,064 MB-minutes in an hour: 34.4 GB-h/day");
    assert!(close(s.memory_gb_hours_per_day, gb_h_per_day(wasted + busy)), "{}", s.memory_gb_hours_per_day);
    assert!(close(s.memory_gb_hours_per_day, 50.4));
}

#[test]
fn quartiles_split_the_series_by_invocations_and_add_up() {
    let s = run(&hand_made(), "fixed-10m");
    // By invocations: d 0, c 3, e 3, a 4, f 4, b 600 (ties in trace order); the i-th of 6 in
    // quartile floor(4i/6) + 1: d and c in Q1, e in Q2, a and f in Q3, b in Q4.
    let q = |n: usize| &s.quartiles[n - 1].figures;
    assert_eq!(s.quartiles.iter().map(|q| q.quartile).collect::<Vec<_>>(), [1, 2, 3, 4]);
    // c and d; d has no invocations, so no rate, but it is one of the series.
    let f = q(1);
    assert_eq!((f.series, f.invocations, f.cold_starts), (2, 3, 1));
    assert_eq!(
        (f.cold_start_rate, f.p50, f.p75, f.p90, f.p99),
        (1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0)
    );
    assert!(f.invocations_per_day_min == 0.0 && close(f.invocations_per_day_max, 3.0 * 24.0), "{f:?}");
    assert!(close(f.wasted_gb_hours_per_day, gb_h_per_day(9.0 * 2048.0)), "{f:?}");
    assert!(close(f.memory_gb_hours_per_day, gb_h_per_day(10.0 * 2048.0)), "{f:?}");
    assert_eq!((q(2).series, q(2).invocations, q(2).cold_starts, q(2).p75), (1, 3, 3, 1.0), "e alone");
    assert!(close(q(2).wasted_gb_hours_per_day, 12.0));
    assert_eq!((q(3).series, q(3).invocations, q(3).cold_starts), (2, 8, 3), "a and f");
    assert_eq!(q(3).cold_start_rate, 3.0 / 8.0);
    assert_eq!((q(3).p50, q(3).p75, q(3).p99), (0.25, 0.25, 0.25), "two rates, 1/4 and 1/2: index floor(p × 1) = 0");
    assert!(close(q(3).wasted_gb_hours_per_day, gb_h_per_day(38.0 * 1024.0)));
    assert_eq!((q(4).series, q(4).invocations, q(4).cold_starts, q(4).wasted_gb_hours_per_day), (1, 600, 1, 0.0));
    assert!(close(q(4).memory_gb_hours_per_day, gb_h_per_day(60.0 * 512.0)), "b is busy every step");
    assert!(close(q(4).invocations_per_day_min, 600.0 * 24.0) && close(q(4).invocations_per_day_max, 600.0 * 24.0));
    // The quartiles add up to the whole trace.
    let total = |f: fn(&Figures) -> f64| s.quartiles.iter().map(|q| f(&q.figures)).sum::<f64>();
    assert_eq!(total(|f| f.cold_starts as f64), s.cold_starts as f64);
    assert_eq!(total(|f| f.invocations as f64), s.invocations as f64);
    assert!(close(total(|f| f.wasted_gb_hours_per_day), s.wasted_gb_hours_per_day));
    assert!(close(total(|f| f.memory_gb_hours_per_day), s.memory_gb_hours_per_day));
    assert_eq!(s.figures().series, 6);
}

#[test]
fn a_longer_keep_alive_trades_memory_for_cold_starts_where_the_gaps_are() {
    // fixed-20m covers e's 20-step gaps (warm in 1..=20): e drops from 3 cold starts to 1; a's
    // 25-step gap (5 to 30) stays cold. b, busy every step, is the same under both.
    let (ten, twenty) = (run(&hand_made(), "fixed-10m"), run(&hand_made(), "fixed-20m"));
    assert_eq!(twenty.cold_starts, ten.cold_starts - 2);
    assert_eq!(twenty.quartiles[1].figures.cold_starts, 1, "Q2 (e) is where the keep-alive pays");
    assert!(twenty.wasted_gb_hours_per_day > ten.wasted_gb_hours_per_day);
    assert_eq!(twenty.quartiles[3].figures, ten.quartiles[3].figures, "Q4 (b) does not change");
}

#[test]
fn the_outputs_carry_the_new_figures() {
    let s = run(&hand_made(), "fixed-10m");
    let table = spinscale::sim::report::table("t", std::slice::from_ref(&s));
    for column in ["cold/inv%", "p99%", "waste GBh/d", "total GBh/d", "by quartile of invocations per day"] {
        assert!(table.contains(column), "{column}: {table}");
    }
    let csv = spinscale::sim::report::summary_csv(std::slice::from_ref(&s));
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 1 + 5, "a header, the whole trace, four quartiles");
    assert!(rows[1].starts_with("fixed-10m,all,6,0.000,14400.000,614,8,"), "{}", rows[1]);
    assert!(rows[3].starts_with("fixed-10m,Q2,1,72.000,72.000,3,3,1.000000"), "{}", rows[3]);
    let series = spinscale::sim::report::series_csv(&s);
    assert!(series.lines().next().is_some_and(|h| {
        h.ends_with(",busy_steps,quartile,invocations_per_day,wasted_gb_hours_per_day,memory_gb_hours_per_day")
    }));
    assert!(
        series.lines().nth(1).is_some_and(|r| r.starts_with("a,4,2,0.500000,24,1024,") && r.contains(",3,3,96.000,")),
        "{series}"
    );
    let json = serde_json::to_value(&s).expect("serializes");
    assert_eq!(json["quartiles"][3]["invocations"], 600);
    assert_eq!(json["memory_gb_hours_per_day"].as_f64().map(|v| (v * 10.0).round()), Some(504.0));
}

#[test]
fn a_sweep_replays_the_engine_per_setting_and_the_references_once() {
    let trace = hand_made();
    let rate = RateRules { target_rps: 1.0, activation_rps: 0.0 };
    let swept = [PolicyKind::parse("spinscale").unwrap()];
    let references = [PolicyKind::parse("fixed-10m").unwrap(), PolicyKind::parse("hybrid").unwrap()];
    let axes = [Axis::parse("coldStartBudget=0..0.5:3").unwrap()];
    let result = simulate_sweep(&trace, &swept, &references, &EngineSettings::default(), &axes, &rate, Duration::ZERO)
        .expect("a valid sweep");
    let sweep = result.sweep.as_ref().expect("a sweep");
    let settings: Vec<&str> = sweep.points.iter().map(|p| p.setting.as_str()).collect();
    assert_eq!(settings, ["coldStartBudget=0", "coldStartBudget=0.25", "coldStartBudget=0.5"]);
    assert!(sweep.points.iter().all(|p| p.policies.len() == 1 && p.policies[0].policy == "spinscale"));
    assert_eq!(result.policies.iter().map(|p| p.policy.as_str()).collect::<Vec<_>>(), ["fixed-10m", "hybrid"]);
    assert_eq!(result.policies[0].cold_starts, 8, "the references as without --sweep");
    assert_eq!(sweep.reference_frontier.len(), 2);
    // Each setting is the engine with that budget, as a --config would give it.
    let settings = EngineSettings { cold_start_budget: 0.5, ..EngineSettings::default() };
    let direct = simulate(&trace, &swept, &settings, &rate, Duration::ZERO);
    assert_eq!(sweep.points[2].policies[0].cold_starts, direct.policies[0].cold_starts);
    assert_eq!(sweep.points[2].policies[0].wasted_gb_hours_per_day, direct.policies[0].wasted_gb_hours_per_day);
}

/// The hand-made trace as a `timestamp,count,series` CSV, every step written (a zero too).
fn write_csv(dir: &std::path::Path) -> std::path::PathBuf {
    let mut text = String::from("timestamp,count,series\n");
    for s in hand_made().series {
        for (t, c) in s.counts.iter().enumerate() {
            text.push_str(&format!("{},{c},{}\n", t * 60, s.name));
        }
    }
    let path = dir.join("tiny.csv");
    std::fs::write(&path, text).expect("written");
    path
}

#[test]
fn the_sweep_command_prints_rows_writes_json_csv_and_a_frontier_chart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let csv = write_csv(dir.path());
    let json = dir.path().join("out.json");
    let out = dir.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_spinscale"))
        .args(["simulate", "--trace"])
        .arg(format!("csv:{}", csv.display()))
        .args(["--policy", "spinscale,fixed-10m,fixed-20m,hybrid", "--sweep", "coldStartBudget=0..0.1:3", "--json"])
        .arg(&json)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("spinscale runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("sweep of coldStartBudget (3 settings) on tiny"), "{table}");
    for row in ["coldStartBudget=0 ", "coldStartBudget=0.05 ", "coldStartBudget=0.1 "] {
        assert_eq!(
            table.lines().filter(|l| l.starts_with(row) && l.contains("spinscale")).count(),
            1,
            "{row}: {table}"
        );
    }
    for reference in ["fixed-10m", "fixed-20m", "hybrid"] {
        assert!(table.lines().any(|l| l.starts_with("reference") && l.contains(reference)), "{reference}: {table}");
    }
    assert!(table.contains("cold Q4"), "six series: quartile columns: {table}");
    let parsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("valid JSON");
    let sweep = &parsed[0]["sweep"];
    assert_eq!(sweep["knobs"], serde_json::json!(["coldStartBudget"]));
    assert_eq!(sweep["points"].as_array().map(Vec::len), Some(3));
    assert_eq!(sweep["points"][1]["values"]["coldStartBudget"], 0.05);
    assert_eq!(sweep["points"][1]["policies"][0]["policy"], "spinscale");
    assert!(sweep["points"][1]["policies"][0]["quartiles"].as_array().is_some_and(|q| q.len() == 4));
    assert_eq!(parsed[0]["policies"].as_array().map(Vec::len), Some(3), "the references");
    // 128 MB instances (the CSV has no memory), the hand-made counts: fixed-10m's 8 cold starts.
    assert_eq!(parsed[0]["policies"][0]["cold_starts"], 8);
    let sweep_csv = std::fs::read_to_string(out.join("tiny.sweep.csv")).expect("sweep csv");
    assert_eq!(sweep_csv.lines().count(), 1 + 3 + 3);
    let svg = std::fs::read_to_string(out.join("tiny.sweep.svg")).expect("frontier chart");
    assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("fixed-20m"));
    assert!(out.join("tiny.summary.csv").is_file());
}

#[test]
fn bad_sweeps_are_errors_that_name_them() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let csv = write_csv(dir.path());
    let trace = format!("csv:{}", csv.display());
    let cases: [(&[&str], &str); 4] = [
        (&["--sweep", "magic=0..1"], "unknown knob"),
        (&["--sweep", "coldStartBudget=0..2:3"], "engine.coldStartBudget"),
        (&["--sweep", "coldStartBudget=0..0.1:x"], "steps"),
        (&["--sweep", "coldStartBudget=0..0.1", "--policy", "fixed-10m"], "--sweep"),
    ];
    for (args, named) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_spinscale"))
            .args(["simulate", "--trace", &trace])
            .args(args)
            .output()
            .expect("runs");
        assert!(!output.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}
