//! `tram gpu-check`: on a CUDA machine, each method's step time and peak CUDA memory (the caching allocator's
//! `max_memory_allocated`) at a profile's shapes in fp32, TF32 and bf16, beside what `tram plan` predicts, as rows of
//! a CSV. Without a CUDA device it says so in one line and fails before anything is loaded or written.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use tram_core::Precision;
use tram_task::DeviceChoice;

use crate::experiment::{method_id, Experiment, Profile, TaskConfig, TaskSpec};
use crate::plan::{self, PlanTarget};

/// `tram gpu-check`'s arguments.
#[derive(Args, Debug, Clone)]
pub struct GpuCheckArgs {
    /// The experiment file, e.g. experiments/table4.toml (without one: only the device is reported).
    pub experiment: Option<PathBuf>,
    #[arg(long)]
    pub profile: Option<String>,
    /// Override a key of the profile, as for `tram run` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Timed steps per method and precision (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The CSV rows are appended here (with a header when the file is new).
    #[arg(long, default_value = "results/gpu-check.csv")]
    pub out: PathBuf,
}

const PRECISIONS: [Precision; 3] = [Precision::Fp32, Precision::Tf32, Precision::Bf16];

/// The device line: CUDA devices, the CUDA runtime libtorch was built with, cuDNN; an error without CUDA.
pub fn device_line() -> Result<String> {
    if !tch::Cuda::is_available() {
        bail!(
            "gpu-check: libtorch sees no CUDA device here (CUDA runtime {}); nothing run, nothing written",
            tram_native::cuda_runtime_version().unwrap_or_else(|| "absent".into())
        );
    }
    Ok(format!(
        "gpu-check: {} CUDA device(s); libtorch built with CUDA {}; cuDNN {}",
        tch::Cuda::device_count(),
        tram_native::cuda_runtime_version().unwrap_or_else(|| "unknown".into()),
        if tch::Cuda::cudnn_is_available() { "available" } else { "absent" }
    ))
}

pub fn run(args: &GpuCheckArgs) -> Result<()> {
    println!("{}", device_line()?);
    let Some(experiment) = &args.experiment else { return Ok(()) };
    let exp = Experiment::load(experiment)?;
    let name = args.profile.clone().unwrap_or_else(|| exp.file.default_profile.clone());
    let profile: Profile<TaskSpec> = exp.profile(&name, &args.overrides)?;
    let shape = profile.task.shape().context("describing the task's model")?;
    println!("{} {name}: {}", exp.file.name, shape.description);
    let task = profile.task.build().context("loading the task")?;
    let mut rows = String::new();
    for precision in PRECISIONS {
        let target = PlanTarget { cuda: true, precision, throughput: None, memory: None };
        for method in &profile.methods {
            let mut run = profile.run_settings(method, profile.seeds[0], DeviceChoice::Cuda(0));
            run.optimizer.precision = precision;
            let planned = plan::method_plan(&profile, method, &shape, &target)?;
            tram_native::cuda_reset_peak_memory(0);
            let timing = task
                .time_steps(&run, std::slice::from_ref(&run.optimizer), args.rounds)
                .with_context(|| format!("timing {} in {precision:?}", method_id(method)))?;
            let peak = tram_native::cuda_max_memory_allocated(0).context("reading CUDA's peak memory")?;
            let t = &timing[0];
            let line = format!(
                "{},{name},{},{precision:?},{},{},{},{:.3},{peak},{:.0},{:.3}",
                exp.file.name,
                method_id(method),
                profile.batch_size,
                t.forward_passes,
                t.backward_passes,
                t.median_ms / 1000.0,
                planned.total().unwrap_or(f64::NAN),
                peak as f64 / planned.total().unwrap_or(f64::NAN),
            );
            println!("{line}");
            writeln!(rows, "{line}").expect("writing to a String");
            // Each method's tensors go before the next one's peak is measured.
            tch::Cuda::synchronize(0);
        }
    }
    let header = !args.out.exists();
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut text = if header {
        "experiment,profile,method,precision,micro_batch,forward_passes,backward_passes,seconds_per_step,\
         peak_cuda_bytes,planned_bytes,peak_over_planned\n"
            .to_string()
    } else {
        std::fs::read_to_string(&args.out)?
    };
    text += &rows;
    crate::atomic::write_bytes(&args.out, text.as_bytes())?;
    println!("wrote {}", args.out.display());
    Ok(())
}
