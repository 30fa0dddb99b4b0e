//! What `tram run`, `tram tables` and `tram slurm` do, as functions of their arguments: load the experiment, then
//! sweep (train what is not finished) or collect (read what is), then report. An analysis experiment (Table 6)
//! takes the same path with its own measurement and report. Generic over the profile's task table so that a task
//! the [`TaskSpec`] enum does not name can be driven through the same code (`docs/adding-a-task.md`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use tram_task::{DeviceChoice, Evaluation, Task, Timing};

use crate::analysis_table::AnalysisProfile;
use crate::cli::{SlurmOptions, SweepArgs};
use crate::experiment::{Experiment, Profile, TableKind, TaskConfig, TaskSpec};
use crate::report::{self, ReportInput};
use crate::slurm;
use crate::summary::Summary;
use crate::sweep::{self, Shard, SweepOptions, SweepOutcome};

/// What a report reads besides the runs: the pre-trained model's row and the step times.
struct Extras {
    pretrained: Option<Vec<Evaluation>>,
    timings: Option<Vec<Timing>>,
}

/// One profile of a sweep experiment, loaded and checked.
struct Loaded<T> {
    exp: Experiment,
    name: String,
    profile: Profile<T>,
}

impl<T: TaskConfig> Loaded<T> {
    fn load(exp: Experiment, args: &SweepArgs) -> Result<Self> {
        let name = args.profile.clone().unwrap_or_else(|| exp.file.default_profile.clone());
        let profile = exp.profile(&name, &args.overrides)?;
        Ok(Self { exp, name, profile })
    }

    /// The profile's run folders (`<results>/runs/<experiment>/<profile>`).
    fn runs_dir(&self, args: &SweepArgs) -> PathBuf {
        args.results.join("runs").join(&self.exp.file.name).join(&self.name)
    }

    fn options(&self, args: &SweepArgs, device: DeviceChoice, fresh: bool, shard: Shard) -> SweepOptions {
        SweepOptions { results: args.results.clone(), profile: self.name.clone(), device, fresh, shard }
    }

    /// The pre-trained row and the step times a report needs: each read from the runs folder where a process
    /// stored it, else computed with `task` (the step times only when `measure_timing`) and stored there.
    fn report_inputs(
        &self,
        args: &SweepArgs,
        device: DeviceChoice,
        task: Option<&dyn Task>,
        measure_timing: bool,
    ) -> Result<Extras> {
        let runs_dir = self.runs_dir(args);
        let first_run = self.profile.run_settings(&self.profile.methods[0], self.profile.seeds[0], device);
        let pretrained = report::pretrained(&runs_dir, &self.profile, task, &first_run)?;
        let measure = task.filter(|_| measure_timing).map(|t| (t, device));
        let timings = match self.exp.file.table {
            TableKind::Variants => report::timings(&runs_dir, &self.profile, measure)?,
            TableKind::Transfer | TableKind::Analysis => None,
        };
        Ok(Extras { pretrained, timings })
    }

    fn write_tables(&self, args: &SweepArgs, summaries: &[Summary], extras: Extras) -> Result<()> {
        let Extras { pretrained, timings } = extras;
        let runs_dir = self.runs_dir(args);
        let input = ReportInput {
            exp: &self.exp,
            runs_dir: &runs_dir,
            profile_name: &self.name,
            profile: &self.profile,
            results: &args.results,
            paper_dir: &args.paper,
            timings,
            pretrained,
        };
        report::write(input, summaries)
    }
}

/// `tram run`: check the sweep, run what is not finished (this shard's share), then write the tables once every
/// run of the sweep is finished. `T` is the profiles' task table ([`TaskSpec`] for the `tram` binary).
pub fn run<T: TaskConfig>(args: &SweepArgs, fresh: bool, shard: Option<&str>) -> Result<()> {
    let exp = Experiment::load(&args.experiment)?;
    if exp.file.table == TableKind::Analysis {
        sweep::check_results_folder(&args.results)?;
        return analyse::<T>(&exp, args);
    }
    let sweep = Loaded::<T>::load(exp, args)?;
    let device = DeviceChoice::parse(&args.device)?;
    let shard = shard.map(Shard::parse).transpose()?.unwrap_or(Shard::ALL);
    sweep::check_results_folder(&args.results)?;
    let (exp, profile_name, profile) = (&sweep.exp, &sweep.name, &sweep.profile);
    tracing::info!("{}: {} (profile {profile_name})", exp.file.name, exp.file.description);
    let task = profile.task.build().context("loading the task")?;
    tracing::info!("task: {}", task.describe());
    let outcome = sweep::run_profile(exp, profile, &sweep.options(args, device, fresh, shard), task.as_ref())?;
    // One process measures step times: the whole sweep's, or shard 0 of a sharded one.
    let inputs = sweep.report_inputs(args, device, Some(task.as_ref()), shard.index == 0)?;
    let tables_command = tables_command(args, profile_name);
    if !outcome.missing.is_empty() {
        print_missing(&outcome);
        println!("the tables are written by the sweep that finishes the last run, or by `{tables_command}`");
        return Ok(());
    }
    if exp.file.table == TableKind::Variants && inputs.timings.is_none() {
        println!("every run is finished; the table is written once shard 0 has measured the step times");
        println!("(by shard 0, or by `{tables_command}`)");
        return Ok(());
    }
    sweep.write_tables(args, &outcome.summaries, inputs)
}

/// `tram tables`: the tables from the finished runs of a sweep (sharded, interrupted or still going), and the
/// runs still missing.
pub fn tables<T: TaskConfig>(args: &SweepArgs) -> Result<()> {
    let exp = Experiment::load(&args.experiment)?;
    if exp.file.table == TableKind::Analysis {
        return analyse::<T>(&exp, args);
    }
    let sweep = Loaded::<T>::load(exp, args)?;
    let device = DeviceChoice::parse(&args.device)?;
    let (exp, profile_name) = (&sweep.exp, &sweep.name);
    let outcome = sweep::collect(&sweep::plan(exp, &sweep.profile, &sweep.options(args, device, false, Shard::ALL)))?;
    if outcome.summaries.is_empty() {
        print_missing(&outcome);
        anyhow::bail!(
            "no run of {} (profile {profile_name}) has finished in {}; start the sweep with `tram run {} --profile {profile_name} --results {}`",
            exp.file.name,
            args.results.display(),
            args.experiment.display(),
            args.results.display()
        );
    }
    let mut extras = sweep.report_inputs(args, device, None, false)?;
    if exp.file.table == TableKind::Variants && extras.timings.is_none() {
        tracing::info!("no step times measured yet: loading the task to measure them");
        let task = sweep.profile.task.build().context("loading the task")?;
        extras.timings = report::timings(&sweep.runs_dir(args), &sweep.profile, Some((task.as_ref(), device)))?;
    }
    sweep.write_tables(args, &outcome.summaries, extras)?;
    if outcome.missing.is_empty() {
        println!("all {} runs are finished", outcome.summaries.len());
    } else {
        print_missing(&outcome);
        println!("the tables above are over the {} finished runs", outcome.summaries.len());
    }
    Ok(())
}

/// An analysis experiment (Table 6), for `run` and `tables` alike: measure the source sweep's finished runs not
/// measured yet, then write the report.
fn analyse<T: TaskConfig>(exp: &Experiment, args: &SweepArgs) -> Result<()> {
    let name = args.profile.clone().unwrap_or_else(|| exp.file.default_profile.clone());
    let device = DeviceChoice::parse(&args.device)?;
    let profile = AnalysisProfile::load(exp, &name, &args.overrides)?;
    let source = profile.source::<T>(exp, &args.results, device)?;
    let analysed = crate::analysis_table::measure(exp, &name, &profile, &source, device)?;
    report::write_analysis(exp, &name, &profile, &source.profile, &analysed, &args.results, &args.paper)
}

fn tables_command(args: &SweepArgs, profile: &str) -> String {
    let sets: String = args.overrides.iter().map(|o| format!(" --set '{o}'")).collect();
    format!("tram tables {} --profile {profile} --results {}{sets}", args.experiment.display(), args.results.display())
}

fn print_missing(outcome: &SweepOutcome) {
    let total = outcome.summaries.len() + outcome.missing.len();
    println!("{} of {total} runs have no results yet:", outcome.missing.len());
    for (id, why) in &outcome.missing {
        println!("  {id}: {why}");
    }
}

/// `tram slurm`: checks the sweep's profile and the results folder, then writes the array script.
pub fn slurm(opts: &SlurmOptions) -> Result<()> {
    let sweep = Loaded::<TaskSpec>::load(Experiment::load(&opts.sweep.experiment)?, &opts.sweep)?;
    DeviceChoice::parse(&opts.sweep.device)?;
    sweep::check_results_folder(&opts.sweep.results)?;
    let runs = sweep.profile.runs().len();
    let mut opts = opts.clone();
    if opts.time.is_none() {
        // Where the plan cannot say (steps that depend on the data's size), Slurm gets the former default.
        let time = planned_time(&opts, &sweep.profile, runs).unwrap_or_else(|e| {
            println!("--time 24:00:00 (the default: {e:#})");
            "24:00:00".into()
        });
        opts.time = Some(time);
    }
    let path = slurm::write_script(&opts, &sweep.exp.file.name, &sweep.name, runs)?;
    println!("wrote {} ({runs} runs); submit it with `sbatch {}`", path.display(), path.display());
    Ok(())
}

/// `--time` from `tram plan`: the slowest method's run times the runs a task trains, with the margin of
/// [`slurm::time_limit`].
fn planned_time(opts: &SlurmOptions, profile: &Profile<TaskSpec>, runs: usize) -> Result<String> {
    let cuda = !matches!(DeviceChoice::parse(&opts.sweep.device)?, DeviceChoice::Cpu);
    let here = if cuda && tch::Cuda::is_available() { tch::Device::Cuda(0) } else { tch::Device::Cpu };
    let throughput = match opts.throughput {
        Some(t) => t,
        None => {
            if cuda && !here.is_cuda() {
                tracing::warn!("no CUDA device here: --time is planned at this CPU's rate (give --throughput)");
            }
            crate::plan::measure_throughput(here, profile.precision)?
        }
    };
    let target =
        crate::plan::PlanTarget { cuda, precision: profile.precision, throughput: Some(throughput), memory: None };
    let plan = crate::plan::ProfilePlan::new(profile, &target)?;
    let slowest = plan.methods.iter().map(|m| plan.seconds_per_run(m)).collect::<Option<Vec<f64>>>();
    let Some(slowest) = slowest.and_then(|s| s.into_iter().reduce(f64::max)) else {
        anyhow::bail!("the plan cannot say how long a run takes (steps per run depend on the data): give --time");
    };
    let per_task = runs.div_ceil(opts.tasks.unwrap_or(runs).clamp(1, runs));
    let time = slurm::time_limit(slowest * per_task as f64);
    println!(
        "--time {time}: {per_task} run(s) per task, the slowest {:.1} h at {throughput:.3e} FLOP/s, doubled",
        slowest / 3600.0
    );
    Ok(time)
}
