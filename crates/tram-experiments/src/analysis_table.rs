//! Table 6 (arXiv 2310.03646 v2 §4.3, App. B.7–B.8): ε-sharpness and CKA of the fine-tuned models of another
//! experiment's finished runs, measured without retraining (`table = "analysis"`). Each run's measurement is kept
//! in its folder (`analysis-<profile>.json`), so an interrupted analysis resumes and a second one is free; the
//! report (`report::write_analysis`) writes the table, the long CSV and the ascent-length CSV.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use tram_stats::Alternative;
use tram_task::kit::analysis::SharpnessConfig;
use tram_task::{AnalysisSettings, DeviceChoice, Domain, SetAnalysis, Task};

use crate::atomic;
use crate::experiment::{method_id, Experiment, Profile, TaskConfig};
use crate::json;
use crate::long_csv::{self, RunRows};
use crate::paper::{self, label, PaperTable};
use crate::summary::{runs_of, OfMethod};
use crate::sweep::{self, Planned, Shard, SweepOptions};

/// An analysis profile: whose runs, and how the ascent measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisProfile {
    /// The sweep whose finished runs are analysed (in the same results folder).
    pub runs: Source,
    /// Update counts of the ε-sharpness ascent at which it is read (increasing); the table reports the last, the
    /// steps CSV every one (the paper does not state its count).
    pub sharpness_steps: Vec<usize>,
    /// Box half-width factor ε (the paper: 1e-5).
    #[serde(default = "epsilon")]
    pub epsilon: f64,
    /// Learning rate of the SGD ascent (the paper: 8e-5).
    #[serde(default = "lr")]
    pub lr: f64,
    /// Examples per micro-batch (the paper: 32).
    #[serde(default = "batch_size")]
    pub batch_size: usize,
    /// Micro-batches per ascent update (the paper: 4).
    #[serde(default = "accumulate")]
    pub accumulate: usize,
}

/// The analysed sweep: `experiments/<experiment>.toml` (beside this file) and its profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub experiment: String,
    pub profile: String,
    /// Overrides of that profile, as its sweep was run with (`--set` values, e.g. `"seeds=[0,1,2]"`).
    #[serde(default)]
    pub set: Vec<String>,
}

fn epsilon() -> f64 {
    tram_task::kit::analysis::PAPER_EPSILON
}
fn lr() -> f64 {
    tram_task::kit::analysis::PAPER_LR
}
fn batch_size() -> usize {
    tram_task::kit::analysis::PAPER_BATCH_SIZE
}
fn accumulate() -> usize {
    tram_task::kit::analysis::PAPER_ACCUMULATE
}

impl AnalysisProfile {
    pub fn settings(&self, device: DeviceChoice) -> AnalysisSettings {
        AnalysisSettings {
            sharpness: SharpnessConfig {
                epsilon: self.epsilon,
                lr: self.lr,
                accumulate: self.accumulate,
                evaluate_at: self.sharpness_steps.clone(),
            },
            batch_size: self.batch_size,
            device,
        }
    }
}

/// What a run's folder keeps: the settings measured with (not the device) and the measurement.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    sharpness: SharpnessConfig,
    batch_size: usize,
    sets: Vec<SetAnalysis>,
}

/// One analysed run.
pub struct Analysed {
    pub run_id: String,
    pub method_id: String,
    pub seed: u64,
    pub sets: Vec<SetAnalysis>,
}

impl OfMethod for Analysed {
    fn method_id(&self) -> &str {
        &self.method_id
    }
}

/// The analysed sweep, loaded: its experiment and profile, and its runs, every one finished.
pub struct SourceSweep<T> {
    pub experiment: Experiment,
    pub profile: Profile<T>,
    pub planned: Vec<Planned<T>>,
}

impl AnalysisProfile {
    /// The profile `name` of the analysis experiment `exp`, with overrides, checked before anything is
    /// measured: ascent lengths of at least one update, in increasing order; a positive ε, learning rate,
    /// batch size and accumulation; a source named by plain names.
    pub fn load(exp: &Experiment, name: &str, overrides: &[String]) -> Result<AnalysisProfile> {
        let profile: AnalysisProfile = exp.profile_as(name, overrides)?;
        let at = format!("{} [profiles.{name}]", exp.path.display());
        let steps = &profile.sharpness_steps;
        if steps.is_empty() || steps[0] == 0 || steps.windows(2).any(|w| w[0] >= w[1]) {
            bail!(
                "{at}: sharpness_steps = {steps:?}: the ascent lengths at which ε-sharpness is read, each at least 1 \
                 update, increasing (an ascent of 0 updates measures nothing: sharpness 0)"
            );
        }
        if profile.batch_size == 0 || profile.accumulate == 0 {
            bail!(
                "{at}: batch_size and accumulate must be at least 1 (got {}, {})",
                profile.batch_size,
                profile.accumulate
            );
        }
        for (key, v) in [("epsilon", profile.epsilon), ("lr", profile.lr)] {
            if !(v.is_finite() && v > 0.0) {
                bail!("{at}: {key} = {v}: must be a finite number > 0");
            }
        }
        crate::experiment::check_name("runs.experiment", &profile.runs.experiment).with_context(|| at.clone())?;
        crate::experiment::check_name("runs.profile", &profile.runs.profile).with_context(|| at.clone())?;
        Ok(profile)
    }

    /// The sweep whose runs this profile analyses (`experiments/<experiment>.toml` beside `exp`), once every run
    /// of it in `results` is finished with its weights kept; else an error with the command that finishes it.
    /// `device` is where the runs' settings say they are analysed.
    pub fn source<T: TaskConfig>(
        &self,
        exp: &Experiment,
        results: &Path,
        device: DeviceChoice,
    ) -> Result<SourceSweep<T>> {
        let source_path = exp.path.parent().unwrap_or(Path::new(".")).join(format!("{}.toml", self.runs.experiment));
        let source = Experiment::load(&source_path)?;
        let sweep_profile: Profile<T> = source.profile(&self.runs.profile, &self.runs.set)?;
        let run_command = format!(
            "tram run {} --profile {} --results {}",
            source_path.display(),
            self.runs.profile,
            results.display()
        );
        if !sweep_profile.keep_weights {
            bail!(
                "{} [profiles.{}] keeps no weights (`keep_weights = false`): set it to true and run `{run_command}`",
                source_path.display(),
                self.runs.profile
            );
        }
        let opts = SweepOptions {
            results: results.to_path_buf(),
            profile: self.runs.profile.clone(),
            device,
            fresh: false,
            shard: Shard::ALL,
        };
        let planned = sweep::plan(&source, &sweep_profile, &opts);
        let outcome = sweep::collect(&planned)?;
        if !outcome.missing.is_empty() {
            for (id, why) in &outcome.missing {
                println!("  {id}: {why}");
            }
            bail!(
                "{} of {} runs of {} (profile {}) are not finished; run `{run_command}` first",
                outcome.missing.len(),
                planned.len(),
                source.file.name,
                self.runs.profile
            );
        }
        Ok(SourceSweep { experiment: source, profile: sweep_profile, planned })
    }
}

/// Every run of `source` measured: read from its folder's `analysis-<name>.json` when it was measured with these
/// settings, else analysed now (the task is loaded once, at the first run that needs it) and stored there.
pub fn measure<T: TaskConfig>(
    exp: &Experiment,
    name: &str,
    profile: &AnalysisProfile,
    source: &SourceSweep<T>,
    device: DeviceChoice,
) -> Result<Vec<Analysed>> {
    let planned = &source.planned;
    tracing::info!(
        "{}: {} ({} runs of {} profile {}; ε-sharpness read after {:?} ascent updates)",
        exp.file.name,
        exp.file.description,
        planned.len(),
        source.experiment.file.name,
        profile.runs.profile,
        profile.sharpness_steps
    );
    let settings = profile.settings(device);
    let mut task: Option<Box<dyn Task>> = None;
    let mut analysed = vec![];
    let start = Instant::now();
    for (i, p) in planned.iter().enumerate() {
        let path = p.dir.dir.join(format!("analysis-{name}.json"));
        let stored = path.exists().then(|| json::read::<Stored>(&path)).transpose().unwrap_or_else(|e| {
            tracing::warn!("{e:#}; measuring the run again");
            None
        });
        let sets = match stored {
            Some(st) if st.sharpness == settings.sharpness && st.batch_size == settings.batch_size => st.sets,
            _ => {
                let weights = p.dir.dir.join(crate::run_dir::WEIGHTS);
                if !weights.exists() {
                    bail!(
                        "run {}: no saved weights at {} (was it run with keep_weights = true?)",
                        p.id,
                        weights.display()
                    );
                }
                if let Some((file, why)) = p.dir.damaged_weights() {
                    bail!(
                        "run {}: {}: {why}; redo it with `tram run {} --profile {}{} --fresh` (which moves it aside)",
                        p.id,
                        file.display(),
                        source.experiment.path.display(),
                        profile.runs.profile,
                        profile.runs.set.iter().map(|o| format!(" --set '{o}'")).collect::<String>()
                    );
                }
                if task.is_none() {
                    let t = source.profile.task.build().context("loading the task")?;
                    tracing::info!("task: {}", t.describe());
                    task = Some(t);
                }
                let t = task.as_ref().expect("built above");
                let run_start = Instant::now();
                let sets = t
                    .analyse(&p.config.run, &weights, &settings)
                    .with_context(|| format!("analysing run {}", p.id))?
                    .with_context(|| format!("the {} task has no analysis", source.experiment.file.name))?;
                json::write(
                    &path,
                    &Stored {
                        sharpness: settings.sharpness.clone(),
                        batch_size: settings.batch_size,
                        sets: sets.clone(),
                    },
                )?;
                let en = sets.first().map(|a| a.sharpness.last().sharpness).unwrap_or(f64::NAN);
                tracing::info!(
                    "[{}/{}] {}: {} sets, first ({}) sharpness {en:.4}, CKA {:.4}; {:.1} s (total {:.0} s)",
                    i + 1,
                    planned.len(),
                    p.id,
                    sets.len(),
                    sets.first().map_or("", |a| a.set.as_str()),
                    sets.first().map_or(f64::NAN, |a| a.cka),
                    run_start.elapsed().as_secs_f64(),
                    start.elapsed().as_secs_f64()
                );
                sets
            }
        };
        let seed = p.config.run.seed();
        analysed.push(Analysed { run_id: p.id.clone(), method_id: p.method_id.clone(), seed, sets });
    }
    Ok(analysed)
}

/// The rows of the long CSV (`tram compare`, `tram check` read it): per run and set, the loss, the CKA, the
/// examples and the sharpness after each ascent length (`sharpness_<updates>`).
pub fn long_rows(experiment: &str, profile: &str, analysed: &[Analysed]) -> Vec<long_csv::Row> {
    let mut rows = vec![];
    for a in analysed {
        let mut run =
            RunRows { experiment, profile, run_id: &a.run_id, method: &a.method_id, seed: a.seed, rows: &mut rows };
        for s in &a.sets {
            let domain = s.domain.as_str();
            run.push(&s.set, domain, "examples", s.examples as f64);
            run.push(&s.set, domain, "loss", s.sharpness.base_loss);
            run.push(&s.set, domain, "cka", s.cka);
            for p in &s.sharpness.points {
                run.push(&s.set, domain, format!("sharpness_{}", p.steps), p.sharpness);
            }
            if let Some(c) = &s.sharpness.corner {
                run.push(&s.set, domain, "sharpness_corner", c.sharpness);
            }
        }
    }
    rows
}

/// Per run: (in-domain value, zero-shot values in set order) of `f` on its sets.
fn split_values(a: &Analysed, f: &dyn Fn(&SetAnalysis) -> f64) -> (f64, Vec<f64>) {
    let en = a.sets.iter().find(|s| s.domain == Domain::InDomain).map_or(f64::NAN, f);
    (en, a.sets.iter().filter(|s| s.domain == Domain::ZeroShot).map(f).collect())
}

fn sharpness_at(steps: usize) -> impl Fn(&SetAnalysis) -> f64 {
    move |s| s.sharpness.points.iter().find(|p| p.steps == steps).map_or(f64::NAN, |p| p.sharpness)
}

/// φ at the box's corner along the whole set's gradient signs (NaN where it was not measured).
fn sharpness_corner(s: &SetAnalysis) -> f64 {
    s.sharpness.corner.as_ref().map_or(f64::NAN, |c| c.sharpness)
}

/// A method's mean over its runs of the in-domain value, and per zero-shot set (in order) the mean over runs.
fn method_means(runs: &[&Analysed], f: &dyn Fn(&SetAnalysis) -> f64) -> (f64, Vec<f64>) {
    let per_run: Vec<(f64, Vec<f64>)> = runs.iter().map(|a| split_values(a, f)).collect();
    let en = tram_stats::mean(&per_run.iter().map(|r| r.0).collect::<Vec<_>>());
    let sets = per_run.first().map_or(0, |r| r.1.len());
    let zs = (0..sets).map(|j| tram_stats::mean(&per_run.iter().map(|r| r.1[j]).collect::<Vec<_>>())).collect();
    (en, zs)
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        String::new()
    }
}

/// The paper's Table 6 layout: (a) ε-sharpness En, ZS avg ± std across languages, Pearson ρ between a run's En
/// and ZS-avg sharpness across runs; (b) CKA En, ZS avg ± std across languages; the sharpness at the box's
/// corner along the gradient signs (the linearised maximum of Eq. 10, beside the ascent's); each method's
/// zero-shot sharpness and CKA against the base optimizer's, paired by seed (Wilcoxon, two-sided).
pub fn table<T>(profile: &Profile<T>, analysed: &[Analysed], paper: &[PaperTable]) -> Result<DataFrame> {
    let last =
        analysed.first().and_then(|a| a.sets.first()).map(|s| s.sharpness.last().steps).context("no analysed run")?;
    let sharp = sharpness_at(last);
    let cka = |s: &SetAnalysis| s.cka;
    let base_id = profile.methods.iter().find(|m| method_id(m) == "base").map(method_id);
    let mut header: Vec<String> = [
        "method",
        "runs",
        "sharpness En",
        "sharpness ZS avg ± std (languages)",
        "Pearson ρ En vs ZS (p)",
        "CKA En",
        "CKA ZS avg ± std (languages)",
        "corner sharpness En",
        "corner sharpness ZS avg",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if base_id.is_some() {
        header.push("ZS sharpness vs Adam: Δ (Wilcoxon p)".into());
        header.push("ZS CKA vs Adam: Δ (Wilcoxon p)".into());
    }
    for p in paper {
        header.extend(p.headers());
    }
    let zs_avg = |a: &Analysed, f: &dyn Fn(&SetAnalysis) -> f64| tram_stats::mean(&split_values(a, f).1);
    let versus_base = |runs: &[&Analysed], f: &dyn Fn(&SetAnalysis) -> f64| -> String {
        let Some(base) = &base_id else { return String::new() };
        let base_runs = runs_of(analysed, base);
        let pairs: Vec<(f64, f64)> = runs
            .iter()
            .filter_map(|a| base_runs.iter().find(|b| b.seed == a.seed).map(|b| (zs_avg(a, f), zs_avg(b, f))))
            .collect();
        if pairs.is_empty() || runs.first().is_some_and(|a| &a.method_id == base) {
            return String::new();
        }
        let (x, y): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
        let d = tram_stats::mean(&x) - tram_stats::mean(&y);
        match tram_stats::wilcoxon(&x, &y, Alternative::TwoSided) {
            Ok(w) => format!("{d:+.4} (p={:.3})", w.pvalue),
            Err(_) => format!("{d:+.4}"),
        }
    };
    let mut rows = vec![];
    for m in &profile.methods {
        let id = method_id(m);
        let runs = runs_of(analysed, &id);
        let lab = label(m, &profile.optimizer);
        let (s_en, s_zs) = method_means(&runs, &sharp);
        let (c_en, c_zs) = method_means(&runs, &cka);
        let (k_en, k_zs) = method_means(&runs, &sharpness_corner);
        let ens: Vec<f64> = runs.iter().map(|a| split_values(a, &sharp).0).collect();
        let zss: Vec<f64> = runs.iter().map(|a| zs_avg(a, &sharp)).collect();
        let rho = match tram_stats::pearsonr(&ens, &zss, Alternative::TwoSided) {
            Ok(p) => format!("{:.2} ({:.3})", p.r, p.pvalue),
            Err(_) => String::new(),
        };
        let mut row = vec![
            lab.clone(),
            runs.len().to_string(),
            fmt(s_en, 4),
            format!("{} ± {}", fmt(tram_stats::mean(&s_zs), 4), fmt(tram_stats::std_dev(&s_zs), 4)),
            rho,
            fmt(c_en, 3),
            format!("{} ± {}", fmt(tram_stats::mean(&c_zs), 3), fmt(tram_stats::std_dev(&c_zs), 3)),
            fmt(k_en, 4),
            fmt(tram_stats::mean(&k_zs), 4),
        ];
        if base_id.is_some() {
            row.push(versus_base(&runs, &sharp));
            row.push(versus_base(&runs, &cka));
        }
        row.extend(paper::cells(paper, &lab));
        rows.push(row);
    }
    crate::tables::text_frame(&header, &rows)
}

/// Each method's mean En and ZS-avg sharpness after every ascent length, with its rank among the methods (1 =
/// smoothest): whether a longer ascent changes the ranking.
pub fn ascent_frame<T>(profile: &Profile<T>, analysed: &[Analysed], steps: &[usize]) -> Result<DataFrame> {
    let (mut k, mut method, mut en, mut zs, mut rank_en, mut rank_zs) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for &n in steps {
        let f = sharpness_at(n);
        let means: Vec<(String, f64, f64)> = profile
            .methods
            .iter()
            .map(|m| {
                let (e, z) = method_means(&runs_of(analysed, &method_id(m)), &f);
                (label(m, &profile.optimizer), e, tram_stats::mean(&z))
            })
            .collect();
        let rank = |v: f64, all: &mut dyn Iterator<Item = f64>| 1 + all.filter(|&o| o < v).count() as u64;
        for (lab, e, z) in &means {
            k.push(n as u64);
            method.push(lab.clone());
            en.push(atomic::round_sig(*e));
            zs.push(atomic::round_sig(*z));
            rank_en.push(rank(*e, &mut means.iter().map(|m| m.1)));
            rank_zs.push(rank(*z, &mut means.iter().map(|m| m.2)));
        }
    }
    Ok(DataFrame::new(vec![
        Column::new("ascent_steps".into(), k),
        Column::new("method".into(), method),
        Column::new("sharpness_en".into(), en),
        Column::new("sharpness_zs_avg".into(), zs),
        Column::new("rank_en".into(), rank_en),
        Column::new("rank_zs".into(), rank_zs),
    ])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascent_settings_that_measure_nothing_are_refused_before_any_run() {
        let exp =
            Experiment::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/table6.toml")).unwrap();
        assert!(AnalysisProfile::load(&exp, "quick", &[]).is_ok());
        let err = |o: &str| format!("{:#}", AnalysisProfile::load(&exp, "quick", &[o.to_string()]).unwrap_err());
        assert!(err("sharpness_steps=[0]").contains("sharpness_steps = [0]: the ascent lengths"));
        assert!(err("sharpness_steps=[2, 1]").contains("increasing"));
        assert!(err("sharpness_steps=[]").contains("sharpness_steps = []"));
        assert!(err("batch_size=0").contains("batch_size and accumulate must be at least 1"));
        assert!(err("epsilon=0.0").contains("epsilon = 0: must be a finite number > 0"));
        assert!(err("runs.experiment=\"../table5\"").contains("runs.experiment `../table5`"));
    }
}
