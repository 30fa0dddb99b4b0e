//! Running an experiment profile: every (method, seed) as its own run folder, with progress bars, after checking
//! the whole sweep; then, for the variants table, the interleaved step-time measurement.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tram_task::{DeviceChoice, RunContext, Task, Timing};

use crate::experiment::{method_id, run_id, Experiment, Profile};
use crate::runs::{now_s, RunConfig, RunDir, RunState, Summary, WriteContext};

pub struct SweepOptions {
    pub results: PathBuf,
    pub profile: String,
    pub device: DeviceChoice,
    pub fresh: bool,
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

/// One planned run.
struct Planned {
    id: String,
    method_id: String,
    dir: RunDir,
    config: RunConfig,
    steps: usize,
    done: Option<Summary>,
}

/// Checks every run before the first step: its settings against the task, the results folder, and what a
/// previous sweep left in its folder.
fn plan(exp: &Experiment, profile: &Profile, opts: &SweepOptions, task: &dyn Task) -> Result<Vec<Planned>> {
    let root = &opts.results;
    std::fs::create_dir_all(root).with_context(|| format!("creating the results folder {}", root.display()))?;
    let probe = root.join(format!(".tram-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("the results folder {} is not writable", root.display()))?;
    std::fs::remove_file(&probe).ok();
    let mut planned = vec![];
    for (method, seed) in profile.runs() {
        let id = run_id(&method, seed);
        let run = profile.run_settings(&method, seed, opts.device);
        let steps = task.steps_per_epoch(&run).with_context(|| format!("run {id}"))?;
        let schedule = run.optimizer.schedule.clone().with_total_steps_if_unset((steps * run.epochs) as u64);
        schedule.validate().with_context(|| format!("run {id}: the schedule over {} steps", steps * run.epochs))?;
        let config = RunConfig { run, task: profile.task.clone() };
        let dir = RunDir::new(root, &exp.file.name, &opts.profile, &id);
        let done = match dir.state(&config, opts.fresh)? {
            RunState::Done(s) => Some(*s),
            RunState::Todo => None,
        };
        planned.push(Planned { id, method_id: method_id(&method), dir, config, steps, done });
    }
    Ok(planned)
}

/// Runs (or skips, when finished) every run of the profile; returns the summaries in the profile's order.
pub fn run_profile(exp: &Experiment, profile: &Profile, opts: &SweepOptions, task: &dyn Task) -> Result<Vec<Summary>> {
    let planned = plan(exp, profile, opts, task)?;
    let todo = planned.iter().filter(|p| p.done.is_none()).count();
    tracing::info!("{} runs: {} finished earlier, {todo} to do", planned.len(), planned.len() - todo);
    let mp = MultiProgress::new();
    let sweep = mp.add(ProgressBar::new(planned.len() as u64));
    sweep
        .set_style(bar_style("{prefix:>12} [{bar:30}] {pos}/{len} runs  elapsed {elapsed_precise}  eta {eta_precise}"));
    sweep.set_prefix(format!("{}/{}", exp.file.name, opts.profile));
    let mut summaries = Vec::with_capacity(planned.len());
    for p in planned {
        if let Some(s) = p.done {
            mp.suspend(|| tracing::info!("{}: finished earlier, skipped ({})", p.id, p.dir.dir.display()));
            summaries.push(s);
            sweep.inc(1);
            continue;
        }
        let bar = mp.add(ProgressBar::new((p.steps * p.config.run.epochs) as u64));
        bar.set_style(bar_style("{prefix:>12} [{bar:30}] {pos}/{len} steps  {msg}  eta {eta_precise}"));
        bar.set_prefix(p.id.clone());
        bar.enable_steady_tick(Duration::from_millis(500));
        let start_s = now_s();
        let mut on_step = |r: &tram_core::StepReport| {
            bar.inc(1);
            bar.set_message(format!("loss {:.3}", r.loss));
        };
        let mut ctx = RunContext::new(&mut on_step);
        if profile.keep_weights {
            ctx.save_model = Some(p.dir.dir.join("model.safetensors"));
        }
        let result = task.run(&p.config.run, &mut ctx).with_context(|| format!("run {}", p.id))?;
        bar.finish_and_clear();
        let write = WriteContext { experiment: &exp.file.name, profile: &opts.profile, start_s };
        let summary = p.dir.write(&write, &p.config, &p.method_id, &result)?;
        let metric = summary.metric;
        mp.suspend(|| {
            tracing::info!(
                "{}: in-domain {}, zero-shot mean {}, {:.0} s ({})",
                p.id,
                summary.in_domain().map_or_else(|| "—".into(), |e| metric.format(e.value)),
                metric.format(summary.zero_shot_mean()),
                summary.train_seconds,
                p.dir.dir.display()
            )
        });
        summaries.push(summary);
        sweep.inc(1);
    }
    sweep.finish();
    Ok(summaries)
}

/// Each method's step time, measured interleaved on one batch ([`Task::time_steps`]).
pub fn measure_timing(profile: &Profile, task: &dyn Task, device: DeviceChoice, rounds: usize) -> Result<Vec<Timing>> {
    if rounds == 0 {
        bail!("timing_rounds must be at least 1");
    }
    let run = profile.run_settings(&profile.methods[0], 0, device);
    let configs: Vec<_> = profile.methods.iter().map(|m| profile.run_settings(m, 0, device).optimizer).collect();
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!("timing: {rounds} interleaved rounds of one step per method"));
    spinner.enable_steady_tick(Duration::from_millis(200));
    let timings = task.time_steps(&run, &configs, rounds)?;
    spinner.finish_and_clear();
    Ok(timings)
}
