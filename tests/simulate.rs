//! `spinscale simulate` on the real traces of `../shared/traces` (or `$SPINSCALE_TRACES`): the check
//! of the definitions against the published `fixed-10m` numbers, and the CLI end to end.
//!
//! Without the traces a test prints `SKIPPED: ...` and passes, unless `CI` or
//! `SPINSCALE_REQUIRE_COMPONENTS` is set: then it fails.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use spinscale::sim::hindsight;
use spinscale::sim::policy::PolicyKind;
use spinscale::sim::trace::{self, LoadOptions};
use spinscale::sim::{SimulateArgs, simulate, simulate_sweep, sweep};
use spinscale_core::engine::EngineSettings;
use spinscale_core::spec::RateRules;

/// The traces folder, or `None` (after printing why) when it is missing outside CI.
fn traces() -> Option<PathBuf> {
    let dir = std::env::var_os("SPINSCALE_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces"));
    if dir.join("azure2019/azure2019_invitro_sample1000_inv.csv").is_file() {
        return Some(dir);
    }
    let required = std::env::var_os("CI").is_some() || std::env::var_os("SPINSCALE_REQUIRE_COMPONENTS").is_some();
    assert!(!required, "traces not found at {} (set SPINSCALE_TRACES)", dir.display());
    eprintln!("SKIPPED: traces not found at {} (set SPINSCALE_TRACES)", dir.display());
    None
}

fn options() -> LoadOptions {
    LoadOptions { thin: None, functions: None, from: None, to: None, memory_mb: 128.0, seed: 1 }
}

fn within(value: f64, expected: f64, tolerance: f64) -> bool {
    (value - expected).abs() <= tolerance * expected.abs()
}

#[test]
fn fixed_ten_minutes_on_the_1000_function_sample_matches_the_published_definitions() {
    let Some(dir) = traces() else { return };
    let spec = format!("azure:{}", dir.join("azure2019/azure2019_invitro_sample1000").display());
    let trace = trace::load(&spec, &options()).expect("the sample loads");
    assert_eq!(trace.series.len(), 1000);
    let rate = RateRules { target_rps: 1.0, activation_rps: 0.0 };
    let fixed = PolicyKind::parse("fixed-10m").expect("a policy name");
    let result = simulate(&trace, &[fixed], &EngineSettings::default(), &rate, Duration::ZERO);
    let s = &result.policies[0];
    assert_eq!(s.cold_starts, 8_819, "cold minutes, first minute counted");
    assert!(s.cold_starts_late < s.cold_starts, "leaving the first minute out counts fewer");
    assert!(within(s.p50, 0.0714, 0.01), "p50 {}", s.p50);
    assert!(within(s.p75, 0.378, 0.01), "p75 {}", s.p75);
    assert!(within(s.wasted_gb_hours_per_day, 5_404.0, 0.01), "wasted {} GB-h/day", s.wasted_gb_hours_per_day);
}

/// spinscale against hybrid and fixed-10m with the default engine on an Azure sample, in one run: it
/// matches or beats hybrid on all three axes (cold-start p75, cold starts in all, wasted memory, issue
/// 18), and halves fixed-10m's p75.
fn beats_hybrid_on_all_three_axes(sample: &str) {
    let Some(dir) = traces() else { return };
    let spec = format!("azure:{}", dir.join("azure2019").join(sample).display());
    let trace = trace::load(&spec, &options()).expect("the sample loads");
    let rate = RateRules { target_rps: 1.0, activation_rps: 0.0 };
    let policies = ["spinscale", "hybrid", "fixed-10m"].map(|p| PolicyKind::parse(p).expect("a policy name"));
    let result = simulate(&trace, &policies, &EngineSettings::default(), &rate, Duration::ZERO);
    let (ours, hybrid, fixed) = (&result.policies[0], &result.policies[1], &result.policies[2]);
    assert!(ours.p75 <= hybrid.p75, "p75 {} vs hybrid {}", ours.p75, hybrid.p75);
    assert!(
        ours.cold_starts <= hybrid.cold_starts,
        "cold starts {} vs hybrid {}",
        ours.cold_starts,
        hybrid.cold_starts
    );
    let (waste, hybrid_waste) = (ours.wasted_gb_hours_per_day, hybrid.wasted_gb_hours_per_day);
    assert!(waste < hybrid_waste, "wasted {waste} vs hybrid {hybrid_waste} GB-h/day");
    assert!(ours.p75 < fixed.p75 / 2.0, "p75 {} vs fixed-10m {}", ours.p75, fixed.p75);
}

#[test]
fn the_spinscale_policy_beats_hybrid_on_all_three_axes_on_the_tuning_sample() {
    beats_hybrid_on_all_three_axes("azure2019_invitro_sample100");
}

#[test]
fn the_spinscale_policy_beats_hybrid_on_all_three_axes_on_the_held_out_sample() {
    beats_hybrid_on_all_three_axes("azure2019_invitro_sample1000");
}

#[test]
fn no_policy_in_the_replay_beats_the_hindsight_bounds() {
    // The bounds are what a policy knowing each function's whole day could reach: every policy of
    // the replay that keeps p75 below a rate wastes at least as much as the bound for that rate.
    let Some(dir) = traces() else { return };
    let spec = format!("azure:{}", dir.join("azure2019/azure2019_invitro_sample1000").display());
    let trace = trace::load(&spec, &options()).expect("the sample loads");
    let rate = RateRules { target_rps: 1.0, activation_rps: 0.0 };
    let names = ["spinscale", "hybrid", "fixed-10m", "fixed-20m", "fixed-4h", "fixed-24h", "keda", "knative"];
    let policies = names.map(|p| PolicyKind::parse(p).expect("a policy name"));
    let result = simulate(&trace, &policies, &EngineSettings::default(), &rate, Duration::ZERO);
    for below in [0.08, 0.1, 0.15, 0.3, 0.4, 0.6] {
        let b = hindsight::bounds(&trace, below, 0.75);
        let [floor, warm, window, keep] =
            [b.floor, b.keep_warm, b.one_window, b.one_keep_alive].map(|v| v.expect("within reach"));
        // A keep-alive is one way to stay warm through gaps, and one window; both beat no foresight.
        assert!(floor <= warm && warm <= keep && floor <= window && window <= keep, "below {below}: {b:?}");
        for p in result.policies.iter().filter(|p| p.p75 < below) {
            let waste = p.wasted_gb_hours_per_day;
            assert!(waste >= floor * 0.999, "{} wastes {waste} GB-h/day for p75 {}: {b:?}", p.policy, p.p75);
            if p.policy.starts_with("fixed-") || p.policy == "keda" || p.policy == "knative" {
                // One keep-alive for every function is one of the keep-alives the bound chooses from.
                assert!(waste >= keep * 0.999, "{} wastes {waste} GB-h/day for p75 {}: {b:?}", p.policy, p.p75);
            }
            // Under its own cold starts as the cap too, every series counts; the same holds.
            let c = hindsight::capped(&trace, below, 0.75, p.cold_starts);
            let [floor, warm, window, keep] =
                [c.floor, c.keep_warm, c.one_window, c.one_keep_alive].map(|v| v.expect("within reach"));
            let at_most = |a: f64, b: f64| a <= b * (1.0 + 1e-9);
            assert!(at_most(floor, warm.min(window)) && at_most(window, keep), "below {below}, {}: {c:?}", p.policy);
            assert!(waste >= floor * 0.999, "{} wastes {waste} GB-h/day: {c:?}", p.policy);
            if p.policy.starts_with("fixed-") || p.policy == "keda" || p.policy == "knative" {
                assert!(waste >= keep * 0.999, "{} wastes {waste} GB-h/day: {c:?}", p.policy);
            }
        }
    }
}

#[test]
fn the_command_writes_a_table_json_csv_and_a_chart() {
    let Some(dir) = traces() else { return };
    let out = tempfile::tempdir().expect("a temp dir");
    let json = out.path().join("out.json");
    let status = Command::new(env!("CARGO_BIN_EXE_spinscale"))
        .arg("simulate")
        .arg("--trace")
        .arg(format!("azure:{}", dir.join("azure2019/azure2019_invitro_sample100").display()))
        .args([
            "--policy",
            "spinscale,fixed-10m,hybrid,keda,knative",
            "--functions",
            "20",
            "--hindsight",
            "0.2",
            "--hindsight-cold",
            "60",
            "--json",
        ])
        .arg(&json)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("spinscale runs");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let table = String::from_utf8_lossy(&status.stdout);
    for policy in ["spinscale", "fixed-10m", "hybrid", "keda", "knative"] {
        assert!(table.contains(policy), "{table}");
    }
    let parsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("valid JSON");
    assert_eq!(parsed[0]["policies"].as_array().map(Vec::len), Some(5));
    assert_eq!(parsed[0]["series"], 20);
    assert!(table.contains("hindsight, p75 below 20.0 %"), "{table}");
    assert_eq!(parsed[0]["hindsight"]["needed"], 15, "floor(0.75 × 19) + 1 of 20 functions");
    assert!(table.contains("and with at most 60 cold starts over all series"), "{table}");
    assert_eq!(parsed[0]["hindsight"]["capped"]["cold_starts"], 60);
    let svg = std::fs::read_to_string(out.path().join("azure2019_invitro_sample100.svg")).expect("chart written");
    assert!(svg.starts_with("<svg") && svg.contains("hybrid"));
    let csv = std::fs::read_to_string(out.path().join("azure2019_invitro_sample100.spinscale.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 21, "a header and a row per function");
}

#[test]
fn a_sweep_through_the_default_keep_alive_reproduces_the_default_run_on_the_tuning_sample() {
    // The sweep of the README's frontier, on the sample it was drawn from: the row at the default
    // keep-alive is the plain default run, and each row's quartiles add up to its totals.
    let Some(dir) = traces() else { return };
    let spec = format!("azure:{}", dir.join("azure2019/azure2019_invitro_sample100").display());
    let trace = trace::load(&spec, &options()).expect("the sample loads");
    let rate = RateRules { target_rps: 1.0, activation_rps: 0.0 };
    let spinscale = [PolicyKind::parse("spinscale").expect("a policy name")];
    let hybrid = [PolicyKind::parse("hybrid").expect("a policy name")];
    let axes = [sweep::Axis::parse("keepAlive=1h,2h,4h,6h,8h").expect("a sweep")];
    let defaults = EngineSettings::default();
    assert_eq!(axes[0].values.last(), Some(&defaults.keep_alive.0.as_secs_f64()), "the sweep ends at the default");
    let result =
        simulate_sweep(&trace, &spinscale, &hybrid, &defaults, &axes, &rate, Duration::ZERO).expect("a valid sweep");
    let plain = simulate(&trace, &spinscale, &defaults, &rate, Duration::ZERO);
    let points = &result.sweep.as_ref().expect("a sweep").points;
    assert_eq!(points.len(), 5);
    let (last, plain) = (&points[4].policies[0], &plain.policies[0]);
    assert_eq!((last.cold_starts, last.p75), (plain.cold_starts, plain.p75));
    assert_eq!(last.wasted_gb_hours_per_day, plain.wasted_gb_hours_per_day);
    for s in points.iter().flat_map(|p| &p.policies).chain(&result.policies) {
        assert_eq!(s.quartiles.iter().map(|q| q.figures.series).sum::<usize>(), 100);
        assert_eq!(s.quartiles.iter().map(|q| q.figures.cold_starts).sum::<u64>(), s.cold_starts, "{}", s.policy);
        let wasted: f64 = s.quartiles.iter().map(|q| q.figures.wasted_gb_hours_per_day).sum();
        assert!(within(wasted, s.wasted_gb_hours_per_day, 1e-9), "{}: {wasted}", s.policy);
        assert!(s.memory_gb_hours_per_day > s.wasted_gb_hours_per_day);
    }
}

#[test]
fn bad_arguments_are_errors_that_name_them() {
    let cases: [(&[&str], &str); 6] = [
        (&["--trace", "zip:x"], "zip:x"),
        (&["--trace", "csv:/nonexistent/t.csv"], "/nonexistent/t.csv"),
        (&["--trace", "csv:/dev/null", "--policy", "magic"], "magic"),
        (&["--trace", "csv:/dev/null", "--hindsight", "2"], "--hindsight 2"),
        (&["--trace", "csv:/dev/null", "--hindsight", "0.1", "--lead", "1m"], "--lead 0s"),
        (&["--trace", "csv:/dev/null", "--hindsight-cold", "100"], "--hindsight"),
    ];
    for (args, named) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_spinscale")).arg("simulate").args(args).output().expect("runs");
        assert!(!output.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

/// `SimulateArgs` is what `main` parses; keep it constructible from the library.
#[test]
fn simulate_args_are_a_clap_args_type() {
    use clap::Args;
    let cmd = SimulateArgs::augment_args(clap::Command::new("simulate"));
    assert!(cmd.get_arguments().any(|a| a.get_id() == "trace"));
}
