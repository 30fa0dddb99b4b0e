//! `tram`: runs the TRAM paper's experiments from TOML files and writes their tables as CSV.

use clap::Parser;
use tram_experiments::cli::{Cli, Command};
use tram_experiments::experiment::TaskSpec;
use tram_experiments::{commands, compare, doctor, gpu_check, plan_report, regress};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    polars_display_defaults();
    // A step frees and allocates the same large temporaries (logits over a vocabulary) every time: keep them
    // mapped instead of returning them to the kernel and faulting them in again (TRAM_KEEP_FREED_MEMORY=0: glibc's
    // defaults, which return them; docs/precision.md, "The allocator, before and after").
    tram_native::keep_freed_memory();
    // CPU tensors counted, for each run's peak tensor memory (summary.json's peak_tensor_bytes).
    tram_native::count_cpu_tensors();
    let result = match Cli::parse().command {
        Command::Run { sweep, fresh, shard } => commands::run::<TaskSpec>(&sweep, fresh, shard.as_deref()),
        Command::Tables { sweep } => commands::tables::<TaskSpec>(&sweep),
        Command::Slurm(opts) => commands::slurm(&opts),
        Command::Compare { csv, metric, baseline, baseline_profile } => {
            let pairing = match (&baseline, &baseline_profile) {
                (Some(m), _) => Some(compare::Baseline::Method(m)),
                (None, Some(p)) => Some(compare::Baseline::Profile(p)),
                (None, None) => None,
            };
            compare::run(&csv, metric.as_deref(), pairing)
        }
        Command::Check { actual, expected } => regress::check(&actual, &expected),
        Command::Expectations { calibration, seed, floor, out } => {
            regress::expectations(&calibration, seed, floor, &out)
        }
        Command::Plan(args) => plan_report::run(&args),
        Command::GpuCheck(args) => gpu_check::run(&args),
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
