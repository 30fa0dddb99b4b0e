//! `tram`: runs the TRAM paper's experiments from TOML files and writes their tables as CSV.

mod atomic;
mod compare;
mod doctor;
mod experiment;
mod plot;
mod runs;
mod stats;
mod sweep;
mod tables;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tram_vision::task::DeviceChoice;

use crate::experiment::{Experiment, TableKind};
use crate::sweep::SweepOptions;

pub const TCH_VERSION: &str = "0.24.0";
pub const LIBTORCH_VERSION: &str = match option_env!("TRAM_LIBTORCH_VERSION") {
    Some(v) => v,
    None => "unknown",
};

#[derive(Parser)]
#[command(name = "tram", version, about = "Reproduce the TRAM paper's tables (Trust Region Aware Minimization, ICLR 2024)")]
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
        /// Override a key of the profile, e.g. --set model.dir=/data/vit-base-patch16-224 (repeatable).
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
        /// Move finished runs whose configuration changed aside instead of stopping.
        #[arg(long)]
        fresh: bool,
    },
    /// Compare methods across runs from tidy CSVs (the *-long.csv files): mean, 95% CI and n per metric.
    Compare {
        csv: Vec<PathBuf>,
        /// Only metrics containing this text.
        #[arg(long)]
        metric: Option<String>,
    },
    /// Check a tidy CSV against an expected one within tolerances (the CI regression check).
    Check {
        actual: PathBuf,
        expected: PathBuf,
        /// Absolute tolerance for accuracies (fractions; 0.005 is about 2 of 382 images). CPU runs repeat bit
        /// for bit on one machine; the tolerance absorbs libtorch kernel differences between CPUs.
        #[arg(long, default_value_t = 0.005)]
        acc_tol: f64,
        /// Relative tolerance for losses (first step, last step, epoch mean).
        #[arg(long, default_value_t = 1e-3)]
        loss_tol: f64,
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
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
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
    match Cli::parse().command {
        Command::Run { experiment, profile, overrides, device, results, paper, fresh } => {
            let exp = Experiment::load(&experiment)?;
            let profile_name = profile.unwrap_or_else(|| exp.file.default_profile.clone());
            let profile = exp.profile(&profile_name, &overrides)?;
            let device = DeviceChoice::parse(&device)?;
            let opts = SweepOptions { results: results.clone(), profile: profile_name.clone(), device, fresh };
            tracing::info!("{}: {} (profile {profile_name})", exp.file.name, exp.file.description);
            let data = sweep::load_data(&profile.data).context("loading the data set")?;
            tracing::info!(
                "data: {} training images, {} in-domain test, OOD sets {:?}, {} classes",
                data.train.len(),
                data.test.len(),
                data.ood.iter().map(|d| format!("{} ({})", d.name, d.len())).collect::<Vec<_>>(),
                data.classes.len()
            );
            let summaries = sweep::run_profile(&exp, &profile, &opts, &data)?;
            let stem = format!("{}-{profile_name}", exp.file.name);
            let mut long = tables::long_frame(&exp.file.name, &profile_name, &summaries)?;
            atomic::write_csv(&results.join(format!("{stem}-long.csv")), &mut long)?;
            let mut table = match exp.file.table {
                TableKind::Table2 => {
                    let rounds = profile.timing_rounds.unwrap_or(10);
                    tracing::info!("timing: {rounds} interleaved rounds of one step per method");
                    let timings = sweep::measure_timing(&profile, &data, device, rounds)?;
                    tables::table2(&timings, &summaries, &profile.base, &paper)?
                }
                TableKind::Table3 => {
                    let labels: Vec<String> = profile.methods.iter().map(|m| tables::label(m, &profile.base)).collect();
                    let names: Vec<&str> = profile.methods.iter().map(|m| m.name.as_str()).collect();
                    let stem = results.join(&stem);
                    let title = format!("{} ({profile_name}): top-1 accuracy, mean ± 95% CI over seeds", exp.file.name);
                    if plot::accuracy_plot(&stem, &title, &plot::series(&labels, &names, &summaries))? {
                        println!("wrote {} and {}", stem.with_extension("png").display(), stem.with_extension("svg").display());
                    }
                    tables::table3(&profile.methods, &summaries, &profile.base, &paper)?
                }
            };
            let out = results.join(format!("{stem}.csv"));
            atomic::write_csv(&out, &mut table)?;
            let shown = match exp.file.table {
                TableKind::Table2 => tables::printable(&table, &tables::TABLE2_PRINT)?,
                TableKind::Table3 => table.clone(),
            };
            println!("{shown}");
            println!("wrote {} and {}", out.display(), results.join(format!("{stem}-long.csv")).display());
            Ok(())
        }
        Command::Compare { csv, metric } => compare::compare(&csv, metric.as_deref()),
        Command::Check { actual, expected, acc_tol, loss_tol } => compare::check(&actual, &expected, acc_tol, loss_tol),
        Command::Doctor => doctor::doctor(),
    }
}
