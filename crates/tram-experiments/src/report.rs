//! From finished runs to the files a reader opens: the long CSV, the paper-shaped table (variants, transfer or
//! analysis) with the paper's numbers beside, its companions (tests, standard deviations, correlations, the
//! plot), and the terminal view.

use std::path::Path;

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use tram_task::{DeviceChoice, Evaluation, Metric, RunSettings, Task, Timing};

use crate::analysis_table::{self, Analysed, AnalysisProfile};
use crate::atomic;
use crate::experiment::{method_id, Experiment, Profile, TableKind, TaskConfig};
use crate::json;
use crate::long_csv;
use crate::paper::{self, label};
use crate::run_csv;
use crate::significance;
use crate::summary::Summary;
use crate::tables;

/// The pre-trained model's own evaluation, kept beside the runs (computed once per task configuration).
#[derive(Debug, Serialize, Deserialize)]
struct Pretrained {
    task_hash: String,
    evaluations: Vec<Evaluation>,
}

/// The pre-trained row of a transfer table: read from `<runs>/pretrained.json` when it was computed for this task
/// configuration, else computed by the task (when given one) and written there.
pub fn pretrained<T: TaskConfig>(
    runs_dir: &Path,
    profile: &Profile<T>,
    task: Option<&dyn Task>,
    run: &RunSettings,
) -> Result<Option<Vec<Evaluation>>> {
    let path = runs_dir.join("pretrained.json");
    let hash = identity_hash(&profile.task.identity())?;
    if path.exists() {
        match json::read::<Pretrained>(&path) {
            Ok(p) if p.task_hash == hash => return Ok(Some(p.evaluations)),
            Ok(_) if task.is_none() => tracing::warn!(
                "{} was computed for another task configuration: no pre-trained row until `tram run` computes it",
                path.display()
            ),
            Ok(_) => {}
            Err(e) if task.is_none() => bail!(
                "{e:#}: the pre-trained row cannot be shown; delete it and run the sweep again (`tram run` with the \
                 same arguments computes it)"
            ),
            Err(e) => tracing::warn!("{e:#}; computing the pre-trained row again"),
        }
    }
    let Some(task) = task else { return Ok(None) };
    let Some(evaluations) = task.evaluate_pretrained(run)? else { return Ok(None) };
    let stripped: Vec<Evaluation> =
        evaluations.iter().map(|e| Evaluation { per_example: vec![], ..e.clone() }).collect();
    json::write(&path, &Pretrained { task_hash: hash, evaluations: stripped.clone() })?;
    Ok(Some(stripped))
}

/// The hash of an identity (a task's, a run's): what a record kept beside the runs was computed for.
fn identity_hash<V: Serialize>(identity: &V) -> Result<String> {
    let text = toml::to_string(&toml::Value::try_from(identity)?)?;
    Ok(format!("{:016x}", tram_task::fnv1a(0, text.as_bytes())))
}

/// Step times measured for a variants table, kept beside the runs so that any process can write the table.
#[derive(Debug, Serialize, Deserialize)]
struct StepTimes {
    /// The method entries measured, in the profile's order.
    methods: Vec<String>,
    device: String,
    /// What they were measured on: the task and the first method's run settings (batch size, base optimizer,
    /// ...), as [`identity_hash`] hashes them (absent: measured before this was recorded, so measured again).
    #[serde(default)]
    measured_for: String,
    timings: Vec<Timing>,
}

/// The step times of the profile's methods: read from `<runs>/timing.json` when it holds these methods (measured
/// on the same kind of device as `measure`'s, when given), else measured with `measure` (the task and the device)
/// and written there.
pub fn timings<T: TaskConfig>(
    runs_dir: &Path,
    profile: &Profile<T>,
    measure: Option<(&dyn Task, DeviceChoice)>,
) -> Result<Option<Vec<Timing>>> {
    let path = runs_dir.join("timing.json");
    let methods: Vec<String> = profile.methods.iter().map(method_id).collect();
    let device = measure.map(|(_, d)| d.resolve().map(|d| format!("{d:?}"))).transpose()?;
    let first = profile.run_settings(&profile.methods[0], 0, DeviceChoice::Auto);
    let measured_for = identity_hash(&crate::run_dir::RunConfig { run: first, task: profile.task.identity() })?;
    if path.exists() {
        match json::read::<StepTimes>(&path) {
            Ok(t) => {
                let same_device = device.as_ref().is_none_or(|d| *d == t.device);
                let same = t.methods == methods && t.timings.len() == methods.len() && t.measured_for == measured_for;
                if same && same_device {
                    return Ok(Some(t.timings));
                }
            }
            Err(e) => tracing::warn!("{e:#}; the step times are measured again"),
        }
    }
    let (Some((task, choice)), Some(device)) = (measure, device) else { return Ok(None) };
    let timings = crate::sweep::measure_timing(profile, task, choice, profile.timing_rounds.unwrap_or(10))?;
    json::write(&path, &StepTimes { methods, device, measured_for, timings: timings.clone() })?;
    Ok(Some(timings))
}

/// Removes what a killed report of `stem` left in `results` (`.<stem>….tmp-<pid>-<host>` of a dead process).
fn remove_debris(results: &Path, stem: &str) -> Result<()> {
    for path in tram_task::kit::atomic::remove_debris(results, stem)? {
        tracing::info!("removed {}, left by a killed process", path.display());
    }
    Ok(())
}

/// What the report needs besides the runs.
pub struct ReportInput<'a, T> {
    pub exp: &'a Experiment,
    /// The profile's run folders (`results/runs/<experiment>/<profile>`).
    pub runs_dir: &'a Path,
    pub profile_name: &'a str,
    pub profile: &'a Profile<T>,
    pub results: &'a Path,
    pub paper_dir: &'a Path,
    pub timings: Option<Vec<Timing>>,
    pub pretrained: Option<Vec<Evaluation>>,
}

/// Writes `<experiment>-<profile>-long.csv`, `<experiment>-<profile>.csv` and (transfer) the plot, and prints the
/// table.
pub fn write<T>(input: ReportInput<'_, T>, summaries: &[Summary]) -> Result<()> {
    let ReportInput { exp, runs_dir, profile_name, profile, results, paper_dir, timings, pretrained } = input;
    let stem = format!("{}-{profile_name}", exp.file.name);
    remove_debris(results, &stem)?;
    let long_path = results.join(format!("{stem}-long.csv"));
    let rows = long_csv::summary_rows(&exp.file.name, profile_name, summaries);
    atomic::write_csv(&long_path, &mut long_csv::frame(&rows)?)?;
    let paper = paper::tables(exp, paper_dir);
    let metric = summaries.first().context("no finished run to report")?.metric;
    let (mut table, shown) = match exp.file.table {
        TableKind::Analysis => anyhow::bail!("an analysis experiment's report is `write_analysis`"),
        TableKind::Variants => {
            let timings = timings.context("the variants table needs the step-time measurement")?;
            let t = tables::variants(&profile.methods, &timings, summaries, &profile.optimizer, &paper)?;
            let cols = variants_print(metric);
            let shown = printable(&t, &cols.iter().map(String::as_str).collect::<Vec<_>>())?;
            (t, shown)
        }
        TableKind::Transfer => {
            let per_example = run_csv::read_per_example(runs_dir, summaries)?;
            let comparisons = significance::compare_all(&profile.methods, summaries, &per_example, metric);
            let tests_path = results.join(format!("{stem}-tests.csv"));
            atomic::write_csv(&tests_path, &mut significance::frame(metric, &comparisons)?)?;
            let std_path = results.join(format!("{stem}-std.csv"));
            atomic::write_csv(
                &std_path,
                &mut tables::std_over_seeds(&profile.methods, summaries, &profile.optimizer)?,
            )?;
            println!("wrote {} and {}", tests_path.display(), std_path.display());
            if profile.methods.len() >= 3 && summaries.iter().any(|s| s.zero_shot().next().is_some()) {
                let path = results.join(format!("{stem}-correlations.csv"));
                atomic::write_csv(&path, &mut tables::correlations(&profile.methods, summaries)?)?;
                println!("wrote {}", path.display());
            }
            let t = tables::transfer(
                &profile.methods,
                summaries,
                pretrained.as_deref(),
                &profile.optimizer,
                &paper,
                &comparisons,
            )?;
            let entries: Vec<(String, String)> =
                profile.methods.iter().map(|m| (label(m, &profile.optimizer), method_id(m))).collect();
            let plot_stem = results.join(&stem);
            let title = format!("{} ({profile_name}): {}, mean ± 95% CI over seeds", exp.file.name, metric.label());
            if crate::plot::transfer_plot(
                &plot_stem,
                &title,
                metric,
                &crate::plot::series(&entries, metric, summaries),
            )? {
                println!(
                    "wrote {} and {}",
                    plot_stem.with_extension("png").display(),
                    plot_stem.with_extension("svg").display()
                );
            }
            let name = format!("{} ({profile_name})", exp.file.name);
            trust_region_report(runs_dir, results, &stem, &name, &entries, summaries)?;
            let shown = paper::without_paper(&t)?;
            (t, shown)
        }
    };
    let out = results.join(format!("{stem}.csv"));
    atomic::write_csv(&out, &mut table)?;
    println!("{shown}");
    println!("wrote {} and {}", out.display(), long_path.display());
    Ok(())
}

/// `<stem>-trust-region.csv` and its plot: each method's d and ‖ε‖ over training, medians over seeds (nothing
/// when no method measures either, e.g. only the base optimizer ran).
fn trust_region_report(
    runs_dir: &Path,
    results: &Path,
    stem: &str,
    title: &str,
    entries: &[(String, String)],
    summaries: &[Summary],
) -> Result<()> {
    let curves = crate::trust_region::curves(runs_dir, entries, summaries)?;
    if !curves.iter().any(|c| c.measures()) {
        return Ok(());
    }
    let stem = results.join(format!("{stem}-trust-region"));
    atomic::write_csv(&stem.with_extension("csv"), &mut crate::trust_region::frame(&curves)?)?;
    println!("wrote {}", stem.with_extension("csv").display());
    let title = format!("{title}: d and ‖ε‖ per step, median over seeds");
    let measured: Vec<_> = curves.into_iter().filter(|c| c.measures()).collect();
    if crate::plot::trust_region_plot(&stem, &title, &measured)? {
        println!("wrote {} and {}", stem.with_extension("png").display(), stem.with_extension("svg").display());
    }
    Ok(())
}

/// Table 6's report of analysed runs: `<experiment>-<profile>.csv` (the paper's layout, its numbers beside),
/// `-long.csv` (every run, set and ascent length) and `-steps.csv` (each method's means at every ascent length,
/// with ranks); prints the table.
pub fn write_analysis<T>(
    exp: &Experiment,
    profile_name: &str,
    profile: &AnalysisProfile,
    source: &Profile<T>,
    analysed: &[Analysed],
    results: &Path,
    paper_dir: &Path,
) -> Result<()> {
    let stem = format!("{}-{profile_name}", exp.file.name);
    remove_debris(results, &stem)?;
    let long_path = results.join(format!("{stem}-long.csv"));
    let rows = analysis_table::long_rows(&exp.file.name, profile_name, analysed);
    atomic::write_csv(&long_path, &mut long_csv::frame(&rows)?)?;
    let steps_path = results.join(format!("{stem}-steps.csv"));
    atomic::write_csv(&steps_path, &mut analysis_table::ascent_frame(source, analysed, &profile.sharpness_steps)?)?;
    let paper = paper::tables(exp, paper_dir);
    let mut table = analysis_table::table(source, analysed, &paper)?;
    let path = results.join(format!("{stem}.csv"));
    atomic::write_csv(&path, &mut table)?;
    println!("{}", paper::without_paper(&table)?);
    println!("wrote {}, {} and {}", path.display(), long_path.display(), steps_path.display());
    Ok(())
}

/// A compact copy of a table for the terminal: the given columns (those that exist), floats to 3 significant
/// digits.
pub fn printable(df: &DataFrame, columns: &[&str]) -> Result<DataFrame> {
    let mut out = Vec::new();
    for name in columns {
        let Ok(c) = df.column(name) else { continue };
        let col = match c.dtype() {
            DataType::Float64 => {
                let v: Vec<Option<String>> = c.f64()?.into_iter().map(|x| x.map(fmt3)).collect();
                Column::new((*name).into(), v)
            }
            _ => c.clone(),
        };
        out.push(col);
    }
    Ok(DataFrame::new(out)?)
}

fn fmt3(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The columns of the variants table printed on the terminal (the CSV has them all).
pub fn variants_print(metric: Metric) -> Vec<String> {
    let mut v: Vec<String> = [
        "variant",
        "trust_region_measurement",
        "eps",
        "passes_measured",
        "passes_paper",
        "passes_match",
        "step_ms_median",
        "ratio_to_base",
        "ratio_to_sam",
        "extra_memory_x_params",
    ]
    .map(String::from)
    .to_vec();
    v.push(format!("in_domain_{metric}"));
    v.push(format!("zs_mean_{metric}"));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use tram_core::MethodConfig;

    #[test]
    fn step_times_are_reused_only_for_the_same_methods() {
        let exp =
            Experiment::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/table2.toml")).unwrap();
        let profile: Profile = exp.profile("quick", &[]).unwrap();
        let dir = std::env::temp_dir().join(format!("tram-report-timing-{}", std::process::id()));
        assert!(timings(&dir, &profile, None).unwrap().is_none(), "nothing measured, nothing to measure with");
        let timing = |m: &MethodConfig| Timing {
            method: m.clone(),
            median_ms: 2.0,
            optimizer_share: 0.1,
            forward_passes: 2,
            backward_passes: 2,
            extra_memory_bytes: 8,
            param_bytes: 4,
        };
        let first = profile.run_settings(&profile.methods[0], 0, DeviceChoice::Auto);
        let stored = StepTimes {
            methods: profile.methods.iter().map(method_id).collect(),
            device: "Cpu".into(),
            measured_for: identity_hash(&crate::run_dir::RunConfig { run: first, task: profile.task.identity() })
                .unwrap(),
            timings: profile.methods.iter().map(timing).collect(),
        };
        json::write(&dir.join("timing.json"), &stored).unwrap();
        let read = timings(&dir, &profile, None).unwrap().expect("written by another process of the sweep");
        assert_eq!(read, stored.timings);
        let fewer: Profile = exp.profile("quick", &["methods=[{name=\"sam\"}]".into()]).unwrap();
        assert!(timings(&dir, &fewer, None).unwrap().is_none(), "measured for other methods");
        let larger: Profile = exp.profile("quick", &["task.image_size=64".into()]).unwrap();
        assert!(timings(&dir, &larger, None).unwrap().is_none(), "measured on other images");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_unreadable_pretrained_row_is_named_not_dropped() {
        let exp =
            Experiment::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/table4.toml")).unwrap();
        let profile: Profile = exp.profile("quick", &[]).unwrap();
        let dir = std::env::temp_dir().join(format!("tram-report-pretrained-{}", std::process::id()));
        let run = profile.run_settings(&profile.methods[0], 0, DeviceChoice::Cpu);
        assert!(pretrained(&dir, &profile, None, &run).unwrap().is_none(), "none computed yet");
        atomic::write_bytes(&dir.join("pretrained.json"), b"{\"task_hash\": \"0\", \"evaluations\": [").unwrap();
        let err = format!("{:#}", pretrained(&dir, &profile, None, &run).unwrap_err());
        assert!(err.contains("pretrained.json does not read") && err.contains("`tram run`"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn runs_that_report_no_evaluation_make_a_table_and_no_plot() {
        let exp =
            Experiment::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/table3.toml")).unwrap();
        let profile: Profile = exp.profile("quick", &["methods=[{name=\"base\"}, {name=\"sam\"}]".into()]).unwrap();
        let results = std::env::temp_dir().join(format!("tram-report-empty-{}", std::process::id()));
        let metric = tram_task::Metric::Accuracy;
        let eval = |v| Summary::eval("google", tram_task::Domain::InDomain, metric, v);
        let diverged = tram_task::Diverged { steps: 2, what: "the training loss of step 1 is NaN".into() };
        let summaries = vec![
            Summary { evaluations: vec![], ..Summary::fixture("base", 0, metric, vec![]) },
            Summary { diverged: Some(diverged.clone()), ..Summary::fixture("sam", 0, metric, vec![]) },
        ];
        let input = |profile| ReportInput {
            exp: &exp,
            runs_dir: &results,
            profile_name: "quick",
            profile,
            results: &results,
            paper_dir: &results,
            timings: None,
            pretrained: None,
        };
        // Used to spin forever drawing a plot of nothing.
        write(input(&profile), &summaries).unwrap();
        assert!(!results.join("table3-quick.png").exists());
        // A method whose every run diverged shows it; its run has a row that says after how many steps.
        let summaries = vec![
            Summary::fixture("base", 0, metric, vec![eval(0.5)]),
            Summary { diverged: Some(diverged), ..Summary::fixture("sam", 0, metric, vec![]) },
        ];
        write(input(&profile), &summaries).unwrap();
        let table = std::fs::read_to_string(results.join("table3-quick.csv")).unwrap();
        assert!(table.contains("\nSAM,0 (+1 diverged),diverged"), "{table}");
        let long = std::fs::read_to_string(results.join("table3-quick-long.csv")).unwrap();
        assert!(long.contains("sam-s0,sam,0,\"\",\"\",diverged_after_steps,2.0"), "{long}");
        std::fs::remove_dir_all(&results).ok();
    }
}
