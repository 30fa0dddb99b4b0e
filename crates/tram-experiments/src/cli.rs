//! The command line (clap): `tram run | tables | slurm | plan | gpu-check | compare | check | expectations | doctor`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tram",
    version,
    about = "Reproduce the TRAM paper's tables (Trust Region Aware Minimization, ICLR 2024)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Which sweep, where its runs and tables go: what `run`, `tables` and `slurm` share.
#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// The experiment file, e.g. experiments/table2.toml.
    pub experiment: PathBuf,
    /// embedded (default: offline, CPU-sized), quick (a CI-sized subset) or paper (your own downloads, a GPU).
    #[arg(long)]
    pub profile: Option<String>,
    /// Override a key of the profile, e.g. --set task.model.dir=/data/vit-base-patch16-224 (repeatable; part of
    /// the runs' identity, so `tram tables` takes the sweep's own).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Where run folders and tables go.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Where the paper's own tables are.
    #[arg(long, default_value = "results/paper")]
    pub paper: PathBuf,
    /// auto (CUDA if libtorch sees one), cpu, cuda or cuda:N: where runs train and step times are measured.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run an experiment profile and write its table: skips runs that finished earlier and runs another process
    /// is training, resumes interrupted runs from their checkpoints.
    Run {
        #[command(flatten)]
        sweep: SweepArgs,
        /// Move runs whose configuration changed (or whose summary does not read) aside and run them again.
        #[arg(long)]
        fresh: bool,
        /// Run only the share K of N of the sweep (runs at positions K, K+N, ...), e.g. one task of a job array.
        #[arg(long, value_name = "K/N")]
        shard: Option<String>,
    },
    /// Write the tables of a profile from the runs finished so far, and list the runs still missing.
    Tables {
        #[command(flatten)]
        sweep: SweepArgs,
    },
    /// Write an `sbatch --array` script whose tasks run shards of the sweep on one shared results folder.
    Slurm(SlurmOptions),
    /// Compare methods across runs from tidy CSVs (the *-long.csv files): mean, 95% CI and n per metric and set,
    /// or, with --baseline (--baseline-profile), paired differences to one method (profile) with their 95% interval
    /// and Wilcoxon p-value.
    Compare {
        csv: Vec<PathBuf>,
        /// Only metrics containing this text.
        #[arg(long)]
        metric: Option<String>,
        /// Pair every other method with this one by seed (a method id of the `method` column, e.g. base).
        #[arg(long, conflicts_with = "baseline_profile")]
        baseline: Option<String>,
        /// Pair every method of the other profiles with the same method of this profile, by seed (e.g. a `bf16`
        /// sweep with its float32 `embedded` one: give both long CSVs).
        #[arg(long)]
        baseline_profile: Option<String>,
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
    /// What each method of a profile costs before it runs: parameters, memory (weights, gradients, optimizer
    /// state, the method's copies, activations), passes and FLOPs per step, time per step, run and table.
    Plan(PlanArgs),
    /// On a CUDA machine: the device, then each method's step time and peak CUDA memory in fp32, TF32 and bf16
    /// at a profile's shapes, beside the plan's memory (rows appended to a CSV). Fails at once without CUDA.
    GpuCheck(crate::gpu_check::GpuCheckArgs),
    /// libtorch version, CUDA devices, and which offline assets are present (each group with its fetch command).
    Doctor,
}

/// What the script asks Slurm for, and what its tasks run (`tram slurm`'s arguments).
#[derive(Args, Debug, Clone)]
pub struct SlurmOptions {
    #[command(flatten)]
    pub sweep: SweepArgs,
    /// Array tasks, each a shard of the sweep (default: one per run).
    #[arg(long)]
    pub tasks: Option<usize>,
    /// At most this many tasks at once (`--array=0-N%P`).
    #[arg(long)]
    pub parallel: Option<usize>,
    #[arg(long)]
    pub gpus_per_task: Option<u32>,
    #[arg(long, default_value_t = 4)]
    pub cpus_per_task: u32,
    /// Memory per task, e.g. 32G.
    #[arg(long)]
    pub mem: Option<String>,
    /// Time limit per task (a task that hits it leaves its run checkpointed: submit the script again). Default:
    /// from `tram plan`, four times the predicted training time of the task's share of runs (the plan's matmul
    /// rate is an upper bound on a step's: rehearsed steps took up to 3.4 times the plan; evaluation is not
    /// counted), at least an hour; 24:00:00 where the plan cannot say (steps per run that depend on the data's
    /// size).
    #[arg(long)]
    pub time: Option<String>,
    /// The runs' device's matmul rate in FLOP/s for the planned --time (default: measured here on --device, or
    /// on the CPU when it is not here).
    #[arg(long)]
    pub throughput: Option<f64>,
    #[arg(long)]
    pub partition: Option<String>,
    /// Another #SBATCH option, e.g. --sbatch=--account=proj (repeatable).
    #[arg(long, value_name = "OPTION")]
    pub sbatch: Vec<String>,
    /// Where to write the script (default: <results>/slurm/<experiment>-<profile>.sbatch).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `tram plan`'s arguments.
#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    /// The experiment file, e.g. experiments/table4.toml.
    pub experiment: PathBuf,
    /// The profile to plan (default: every profile of the experiment).
    #[arg(long)]
    pub profile: Option<String>,
    /// Override a key of the profile, as for `tram run` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// cpu, cuda or cuda:N (the runs' device: CUDA's fused attention keeps no T×T matrices), or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// fp32, tf32, bf16 or fp16 (default: the profile's `precision`).
    #[arg(long, value_parser = parse_precision)]
    pub precision: Option<tram_core::Precision>,
    /// The device's dense matmul rate in FLOP/s, e.g. 4e14 (default: measured here, on --device, when it is here).
    #[arg(long)]
    pub throughput: Option<f64>,
    /// Memory the runs may use, e.g. 24GiB (default: this machine's on the CPU; none on CUDA).
    #[arg(long)]
    pub memory: Option<String>,
    /// CSV rows instead of tables.
    #[arg(long)]
    pub csv: bool,
}

fn parse_precision(s: &str) -> Result<tram_core::Precision, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("`{s}`: expected fp32, tf32, bf16 or fp16"))
}
