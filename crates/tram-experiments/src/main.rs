//! `tram`: runs the TRAM paper's experiments from TOML files and writes their tables as CSV.

mod atomic;
mod compare;
mod doctor;
mod experiment;
mod meta;
mod plot;
mod report;
mod runs;
mod significance;
mod sweep;
mod tables;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tram_task::DeviceChoice;

use crate::experiment::{Experiment, TableKind};
use crate::sweep::SweepOptions;

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
    /// Run an experiment profile and write its table (skips runs that finished earlier).
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
        /// Move finished runs whose configuration changed (or whose summary does not read) aside and run them again.
        #[arg(long)]
        fresh: bool,
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
    let result = match Cli::parse().command {
        Command::Run { experiment, profile, overrides, device, results, paper, fresh } => {
            run(&experiment, profile, &overrides, &device, results, &paper, fresh)
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

/// `tram run`: check the sweep, run what is not finished, measure step times (variants), write the tables.
fn run(
    experiment: &std::path::Path,
    profile: Option<String>,
    overrides: &[String],
    device: &str,
    results: PathBuf,
    paper: &std::path::Path,
    fresh: bool,
) -> Result<()> {
    let exp = Experiment::load(experiment)?;
    let profile_name = profile.unwrap_or_else(|| exp.file.default_profile.clone());
    let profile = exp.profile(&profile_name, overrides)?;
    let device = DeviceChoice::parse(device)?;
    tracing::info!("{}: {} (profile {profile_name})", exp.file.name, exp.file.description);
    let task = profile.task.build().context("loading the task")?;
    tracing::info!("task: {}", task.describe());
    let opts = SweepOptions { results: results.clone(), profile: profile_name.clone(), device, fresh };
    let summaries = sweep::run_profile(&exp, &profile, &opts, task.as_ref())?;
    let first_run = profile.run_settings(&profile.methods[0], profile.seeds[0], device);
    let timings = match exp.file.table {
        TableKind::Variants => {
            Some(sweep::measure_timing(&profile, task.as_ref(), device, profile.timing_rounds.unwrap_or(10))?)
        }
        TableKind::Transfer => None,
    };
    let runs_dir = results.join("runs").join(&exp.file.name).join(&profile_name);
    let pretrained = report::pretrained(&runs_dir, &profile, Some(task.as_ref()), &first_run)?;
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
    report::write(input, &summaries)
}
