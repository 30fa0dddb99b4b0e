//! `tram`: runs the TRAM paper's experiments from TOML files and writes their tables as CSV.

mod analysis;
mod atomic;
mod compare;
mod doctor;
mod experiment;
mod lock;
mod meta;
mod plot;
mod report;
mod runs;
mod significance;
mod slurm;
mod sweep;
mod tables;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tram_task::DeviceChoice;

use crate::experiment::{Experiment, Profile, TableKind};
use crate::sweep::{Shard, SweepOptions, SweepOutcome};

#[derive(Parser)]
#[command(
    name = "tram",
    version,
    about = "Reproduce the TRAM paper's tables (Trust Region Aware Minimization, ICLR 2024)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment profile and write its table: skips runs that finished earlier and runs another process
    /// is training, resumes interrupted runs from their checkpoints.
    Run {
        /// The experiment file, e.g. experiments/table2.toml.
        experiment: PathBuf,
        /// embedded (default: offline, CPU-sized), quick (a CI-sized subset) or paper (your own downloads, a GPU).
        #[arg(long)]
        profile: Option<String>,
        /// Override a key of the profile, e.g. --set task.model.dir=/data/vit-base-patch16-224 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// auto (CUDA if libtorch sees one), cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Where run folders and tables go.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Where the paper's own tables are.
        #[arg(long, default_value = "results/paper")]
        paper: PathBuf,
        /// Move runs whose configuration changed (or whose summary does not read) aside and run them again.
        #[arg(long)]
        fresh: bool,
        /// Run only the share K of N of the sweep (runs at positions K, K+N, ...), e.g. one task of a job array.
        #[arg(long, value_name = "K/N")]
        shard: Option<String>,
    },
    /// Write the tables of a profile from the runs finished so far, and list the runs still missing.
    Tables {
        experiment: PathBuf,
        #[arg(long)]
        profile: Option<String>,
        /// The same overrides as the sweep's `tram run` (they are part of the runs' identity).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        #[arg(long, default_value = "results")]
        results: PathBuf,
        #[arg(long, default_value = "results/paper")]
        paper: PathBuf,
        /// Where to measure step times when a variants table has none yet.
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Write an `sbatch --array` script whose tasks run shards of the sweep on one shared results folder.
    Slurm {
        experiment: PathBuf,
        #[arg(long)]
        profile: Option<String>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// The results folder the tasks share (on a file system every node mounts).
        #[arg(long, default_value = "results")]
        results: PathBuf,
        #[arg(long, default_value = "results/paper")]
        paper: PathBuf,
        #[arg(long, default_value = "auto")]
        device: String,
        /// Array tasks, each a shard of the sweep (default: one per run).
        #[arg(long)]
        tasks: Option<usize>,
        /// At most this many tasks at once.
        #[arg(long)]
        parallel: Option<usize>,
        #[arg(long)]
        gpus_per_task: Option<u32>,
        #[arg(long, default_value_t = 4)]
        cpus_per_task: u32,
        /// Memory per task, e.g. 32G.
        #[arg(long)]
        mem: Option<String>,
        /// Time limit per task (a task that hits it leaves its run checkpointed: submit the script again).
        #[arg(long, default_value = "24:00:00")]
        time: String,
        #[arg(long)]
        partition: Option<String>,
        /// Another #SBATCH option, e.g. --sbatch=--account=proj (repeatable).
        #[arg(long, value_name = "OPTION")]
        sbatch: Vec<String>,
        /// Where to write the script (default: <results>/slurm/<experiment>-<profile>.sbatch).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Compare methods across runs from tidy CSVs (the *-long.csv files): mean, 95% CI and n per metric and set,
    /// or, with --baseline, paired differences to one method with their 95% interval and Wilcoxon p-value.
    Compare {
        csv: Vec<PathBuf>,
        /// Only metrics containing this text.
        #[arg(long)]
        metric: Option<String>,
        /// Pair every other method with this one by seed (a method id of the `method` column, e.g. base).
        #[arg(long)]
        baseline: Option<String>,
    },
    /// Check a tidy CSV against expectations, each row within its own tolerance (the CI regression check).
    Check { actual: PathBuf, expected: PathBuf },
    /// Write regression expectations from a calibration sweep over several seeds: the rows of one seed with
    /// tolerances (exact counts, the first steps to rounding, outcomes to their seed spread).
    Expectations {
        /// The calibration sweep's long CSV (the same profile run with several seeds).
        calibration: PathBuf,
        /// The seed the regression runs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Smallest tolerance of an outcome, relative to its value.
        #[arg(long, default_value_t = 1e-6)]
        floor: f64,
        #[arg(long)]
        out: PathBuf,
    },
    /// libtorch version, CUDA devices, and which offline assets are present.
    Doctor,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    polars_display_defaults();
    // A step frees and allocates the same large temporaries (logits over a vocabulary) every time: keep them
    // mapped instead of returning them to the kernel and faulting them in again.
    tram_native::keep_freed_memory();
    let result = match Cli::parse().command {
        Command::Run { experiment, profile, overrides, device, results, paper, fresh, shard } => {
            run(&experiment, profile, &overrides, &device, results, &paper, fresh, shard.as_deref())
        }
        Command::Tables { experiment, profile, overrides, results, paper, device } => {
            tables(&experiment, profile, &overrides, &results, &paper, &device)
        }
        Command::Slurm {
            experiment,
            profile,
            overrides,
            results,
            paper,
            device,
            tasks,
            parallel,
            gpus_per_task,
            cpus_per_task,
            mem,
            time,
            partition,
            sbatch,
            out,
        } => {
            let opts = slurm::SlurmOptions {
                experiment,
                profile: profile.unwrap_or_default(),
                overrides,
                results,
                paper,
                device,
                tasks,
                parallel,
                gpus_per_task,
                cpus_per_task,
                mem,
                time,
                partition,
                sbatch,
                out,
            };
            write_slurm(opts)
        }
        Command::Compare { csv, metric, baseline } => compare::compare(&csv, metric.as_deref(), baseline.as_deref()),
        Command::Check { actual, expected } => compare::check(&actual, &expected),
        Command::Expectations { calibration, seed, floor, out } => {
            compare::expectations(&calibration, seed, floor, &out)
        }
        Command::Doctor => doctor::doctor(),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Tables printed whole, without column types.
fn polars_display_defaults() {
    for (k, v) in [
        ("POLARS_FMT_MAX_COLS", "-1"),
        ("POLARS_FMT_MAX_ROWS", "-1"),
        ("POLARS_FMT_STR_LEN", "48"),
        ("POLARS_TABLE_WIDTH", "250"),
        ("POLARS_FMT_TABLE_HIDE_COLUMN_DATA_TYPES", "1"),
        ("POLARS_FMT_TABLE_ROUNDED_CORNERS", "1"),
    ] {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
}

/// An analysis experiment (Table 6) and the chosen profile's name; `None` for a sweep.
fn analysis_experiment(experiment: &Path, profile: &Option<String>) -> Result<Option<(Experiment, String)>> {
    let exp = Experiment::load(experiment)?;
    if exp.file.table != TableKind::Analysis {
        return Ok(None);
    }
    let name = profile.clone().unwrap_or_else(|| exp.file.default_profile.clone());
    Ok(Some((exp, name)))
}

/// The experiment, the chosen profile's name and the profile with its overrides, checked.
fn load(experiment: &Path, profile: Option<String>, overrides: &[String]) -> Result<(Experiment, String, Profile)> {
    let exp = Experiment::load(experiment)?;
    let name = profile.unwrap_or_else(|| exp.file.default_profile.clone());
    let profile = exp.profile(&name, overrides)?;
    Ok((exp, name, profile))
}

/// `tram run`: check the sweep, run what is not finished (this shard's share), then write the tables once every
/// run of the sweep is finished.
#[allow(clippy::too_many_arguments)]
fn run(
    experiment: &Path,
    profile: Option<String>,
    overrides: &[String],
    device: &str,
    results: PathBuf,
    paper: &Path,
    fresh: bool,
    shard: Option<&str>,
) -> Result<()> {
    if let Some((exp, name)) = analysis_experiment(experiment, &profile)? {
        sweep::check_results_folder(&results)?;
        return analysis::run(&exp, &name, overrides, DeviceChoice::parse(device)?, &results, paper);
    }
    let (exp, profile_name, profile) = load(experiment, profile, overrides)?;
    let device = DeviceChoice::parse(device)?;
    let shard = shard.map(Shard::parse).transpose()?.unwrap_or(Shard::ALL);
    sweep::check_results_folder(&results)?;
    tracing::info!("{}: {} (profile {profile_name})", exp.file.name, exp.file.description);
    let task = profile.task.build().context("loading the task")?;
    tracing::info!("task: {}", task.describe());
    let opts = SweepOptions { results: results.clone(), profile: profile_name.clone(), device, fresh, shard };
    let outcome = sweep::run_profile(&exp, &profile, &opts, task.as_ref())?;
    let runs_dir = results.join("runs").join(&exp.file.name).join(&profile_name);
    let first_run = profile.run_settings(&profile.methods[0], profile.seeds[0], device);
    let pretrained = report::pretrained(&runs_dir, &profile, Some(task.as_ref()), &first_run)?;
    // One process measures step times: the whole sweep's, or shard 0 of a sharded one.
    let timings = match exp.file.table {
        TableKind::Variants => {
            report::timings(&runs_dir, &profile, (shard.index == 0).then_some((task.as_ref(), device)))?
        }
        TableKind::Transfer | TableKind::Analysis => None,
    };
    let tables_command = tables_command(experiment, &profile_name, overrides, &results);
    if !outcome.missing.is_empty() {
        print_missing(&outcome);
        println!("the tables are written by the sweep that finishes the last run, or by `{tables_command}`");
        return Ok(());
    }
    if exp.file.table == TableKind::Variants && timings.is_none() {
        println!("every run is finished; the table is written once shard 0 has measured the step times");
        println!("(by shard 0, or by `{tables_command}`)");
        return Ok(());
    }
    let input = report::ReportInput {
        exp: &exp,
        runs_dir: &runs_dir,
        profile_name: &profile_name,
        profile: &profile,
        results: &results,
        paper_dir: paper,
        timings,
        pretrained,
    };
    report::write(input, &outcome.summaries)
}

fn tables_command(experiment: &Path, profile: &str, overrides: &[String], results: &Path) -> String {
    let sets: String = overrides.iter().map(|o| format!(" --set '{o}'")).collect();
    format!("tram tables {} --profile {profile} --results {}{sets}", experiment.display(), results.display())
}

fn print_missing(outcome: &SweepOutcome) {
    let total = outcome.summaries.len() + outcome.missing.len();
    println!("{} of {total} runs have no results yet:", outcome.missing.len());
    for (id, why) in &outcome.missing {
        println!("  {id}: {why}");
    }
}

/// `tram tables`: the tables from the finished runs of a sweep (sharded, interrupted or still going), and the
/// runs still missing.
fn tables(
    experiment: &Path,
    profile: Option<String>,
    overrides: &[String],
    results: &Path,
    paper: &Path,
    device: &str,
) -> Result<()> {
    if let Some((exp, name)) = analysis_experiment(experiment, &profile)? {
        return analysis::run(&exp, &name, overrides, DeviceChoice::parse(device)?, results, paper);
    }
    let (exp, profile_name, profile) = load(experiment, profile, overrides)?;
    let device = DeviceChoice::parse(device)?;
    let opts = SweepOptions {
        results: results.to_path_buf(),
        profile: profile_name.clone(),
        device,
        fresh: false,
        shard: Shard::ALL,
    };
    let outcome = sweep::collect(&sweep::plan(&exp, &profile, &opts))?;
    if outcome.summaries.is_empty() {
        print_missing(&outcome);
        anyhow::bail!(
            "no run of {} (profile {profile_name}) has finished in {}; start the sweep with `tram run {} --profile {profile_name} --results {}`",
            exp.file.name,
            results.display(),
            experiment.display(),
            results.display()
        );
    }
    let runs_dir = results.join("runs").join(&exp.file.name).join(&profile_name);
    let first_run = profile.run_settings(&profile.methods[0], profile.seeds[0], device);
    let pretrained = report::pretrained(&runs_dir, &profile, None, &first_run)?;
    let timings = match exp.file.table {
        TableKind::Transfer | TableKind::Analysis => None,
        TableKind::Variants => match report::timings(&runs_dir, &profile, None)? {
            Some(t) => Some(t),
            None => {
                tracing::info!("no step times measured yet: loading the task to measure them");
                let task = profile.task.build().context("loading the task")?;
                report::timings(&runs_dir, &profile, Some((task.as_ref(), device)))?
            }
        },
    };
    let input = report::ReportInput {
        exp: &exp,
        runs_dir: &runs_dir,
        profile_name: &profile_name,
        profile: &profile,
        results,
        paper_dir: paper,
        timings,
        pretrained,
    };
    report::write(input, &outcome.summaries)?;
    if outcome.missing.is_empty() {
        println!("all {} runs are finished", outcome.summaries.len());
    } else {
        print_missing(&outcome);
        println!("the tables above are over the {} finished runs", outcome.summaries.len());
    }
    Ok(())
}

/// `tram slurm`: checks the sweep's profile and the results folder, then writes the array script.
fn write_slurm(mut opts: slurm::SlurmOptions) -> Result<()> {
    let profile = (!opts.profile.is_empty()).then(|| opts.profile.clone());
    let (exp, profile_name, profile) = load(&opts.experiment, profile, &opts.overrides)?;
    DeviceChoice::parse(&opts.device)?;
    sweep::check_results_folder(&opts.results)?;
    opts.profile = profile_name;
    let runs = profile.runs().len();
    let path = slurm::write_script(&opts, &exp.file.name, runs)?;
    println!("wrote {} ({runs} runs); submit it with `sbatch {}`", path.display(), path.display());
    Ok(())
}
