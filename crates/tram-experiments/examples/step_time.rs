//! Per-method step time of an experiment profile's task in float32 and under bfloat16 autocast (docs/precision.md),
//! measured interleaved: every (method, precision) pair takes one step per round on the same batch, and the medians
//! over rounds are compared as ratios within this one process, so that other load on the machine affects both
//! sides alike (`tram_task::time_interleaved` through `Task::time_steps`, as Table 2's step times).
//!
//! ```text
//! cargo run --release -p tram-experiments --example step_time -- experiments/table4.toml embedded \
//!     --methods base,sam,tram-prev,tram-x --rounds 10 --out results/step-time-cpu.csv
//! ```
//!
//! Prints one line per method (float32 ms, bfloat16 ms, their ratio, the optimizer's share of the step) and, with
//! `--out`, appends the rows to a CSV (experiment, profile, machine, threads, method, fp32_ms, bf16_ms, ratio).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use tram_core::{MethodConfig, Precision};
use tram_experiments::experiment::{Experiment, Profile, TaskSpec};
use tram_task::DeviceChoice;

struct Args {
    experiment: PathBuf,
    profile: String,
    methods: Vec<String>,
    rounds: usize,
    out: Option<PathBuf>,
}

fn parse() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let usage = "usage: step_time EXPERIMENT PROFILE [--methods a,b] [--rounds N] [--out CSV]";
    let experiment = PathBuf::from(it.next().context(usage)?);
    let profile = it.next().context(usage)?;
    let mut args = Args { experiment, profile, methods: vec![], rounds: 10, out: None };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value; {usage}"))?;
        match flag.as_str() {
            "--methods" => args.methods = value.split(',').map(str::to_string).collect(),
            "--rounds" => args.rounds = value.parse().with_context(|| format!("--rounds {value}"))?,
            "--out" => args.out = Some(PathBuf::from(value)),
            other => bail!("unknown option {other}; {usage}"),
        }
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    Ok(args)
}

fn main() -> Result<()> {
    tram_native::keep_freed_memory();
    let args = parse()?;
    let exp = Experiment::load(&args.experiment)?;
    let profile: Profile<TaskSpec> = exp.profile(&args.profile, &[])?;
    let methods: Vec<MethodConfig> = if args.methods.is_empty() {
        profile.methods.clone()
    } else {
        args.methods
            .iter()
            .map(|m| toml::from_str(&format!("name = \"{m}\"")).with_context(|| format!("method {m}")))
            .collect::<Result<_>>()?
    };
    let task = profile.task.build()?;
    println!("{}", task.describe());
    let device = DeviceChoice::Cpu;
    let run = profile.run_settings(&methods[0], 0, device);
    let precisions = [Precision::Fp32, Precision::Bf16];
    let configs: Vec<_> = methods
        .iter()
        .flat_map(|m| {
            precisions.iter().map(|&p| {
                let mut o = profile.run_settings(m, 0, device).optimizer;
                o.precision = p;
                o
            })
        })
        .collect();
    let timings = task.time_steps(&run, &configs, args.rounds)?;
    let threads = tch::get_num_threads();
    let machine = machine();
    println!("{machine}, {threads} threads, {} interleaved rounds", args.rounds);
    println!("{:<12} {:>10} {:>10} {:>10} {:>14}", "method", "fp32 ms", "bf16 ms", "bf16/fp32", "opt. share fp32");
    let (mut names, mut fp32, mut bf16) = (vec![], vec![], vec![]);
    for (m, pair) in methods.iter().zip(timings.chunks(2)) {
        let name = tram_experiments::experiment::method_id(m);
        println!(
            "{name:<12} {:>10.1} {:>10.1} {:>10.3} {:>13.1}%",
            pair[0].median_ms,
            pair[1].median_ms,
            pair[1].median_ms / pair[0].median_ms,
            100.0 * pair[0].optimizer_share
        );
        names.push(name);
        fp32.push(pair[0].median_ms);
        bf16.push(pair[1].median_ms);
    }
    if let Some(out) = &args.out {
        let n = names.len();
        let ratio: Vec<f64> = fp32.iter().zip(&bf16).map(|(a, b)| b / a).collect();
        let mut df = DataFrame::new(vec![
            Column::new("experiment".into(), vec![exp.file.name.clone(); n]),
            Column::new("profile".into(), vec![args.profile.clone(); n]),
            Column::new("machine".into(), vec![machine.clone(); n]),
            Column::new("threads".into(), vec![threads as u64; n]),
            Column::new("rounds".into(), vec![args.rounds as u64; n]),
            Column::new("method".into(), names),
            Column::new("fp32_ms".into(), fp32),
            Column::new("bf16_ms".into(), bf16),
            Column::new("bf16_over_fp32".into(), ratio),
        ])?;
        append_csv(out, &mut df)?;
        println!("appended to {}", out.display());
    }
    Ok(())
}

/// The CPU's model name (Linux), for the CSV: step times belong to a machine.
fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Appends `df` to the CSV at `path` (written whole, atomically), creating it with a header.
fn append_csv(path: &Path, df: &mut DataFrame) -> Result<()> {
    let mut all = if path.exists() {
        let old = tram_experiments::atomic::read_csv(path)?;
        old.vstack(df).with_context(|| format!("{}: not the columns this example writes", path.display()))?
    } else {
        df.clone()
    };
    tram_experiments::atomic::write_csv(path, &mut all)
}
