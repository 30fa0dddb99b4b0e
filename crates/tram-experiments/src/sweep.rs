//! Running an experiment profile: every (method, seed) as its own run folder, after checking the whole sweep.
//! Each run is claimed by one process before it trains ([`crate::lock`]), so sweeps and shards started on one
//! results folder share the work and never train a run twice; each run is checkpointed and resumes where a
//! killed process left it. Then, for the variants table, the interleaved step-time measurement.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tram_task::{DeviceChoice, RunContext, Task, Timing};

use crate::atomic::now_s;
use crate::experiment::{method_id, run_id, Experiment, Profile, TaskConfig, TaskSpec};
use crate::lock::{Claim, Holder, RunLock};
use crate::run_dir::{RunConfig, RunDir, RunState, Status, WriteContext, WEIGHTS};
use crate::summary::Summary;

/// `K/N`: the runs whose position in the sweep is K modulo N (positions from 0, in the profile's order: method
/// by method, seed by seed), so that N processes, e.g. the tasks of a Slurm job array, split a sweep without
/// talking to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole sweep.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn parse(text: &str) -> Result<Self> {
        let expected = "expected K/N with 0 ≤ K < N, e.g. --shard 0/4 \
                        (in a Slurm job array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)";
        let (k, n) = text.split_once('/').with_context(|| format!("--shard {text}: {expected}"))?;
        let (Ok(index), Ok(count)) = (k.trim().parse::<usize>(), n.trim().parse::<usize>()) else {
            bail!("--shard {text}: {expected}");
        };
        if count == 0 || index >= count {
            bail!("--shard {text}: {expected}");
        }
        Ok(Self { index, count })
    }

    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

pub struct SweepOptions {
    pub results: PathBuf,
    pub profile: String,
    pub device: DeviceChoice,
    pub fresh: bool,
    pub shard: Shard,
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

/// One run of the sweep.
pub struct Planned<T = TaskSpec> {
    pub id: String,
    pub method_id: String,
    pub dir: RunDir,
    pub config: RunConfig<T>,
}

/// What a sweep has: the finished runs' summaries in the profile's order, and the runs without one (and why).
pub struct SweepOutcome {
    pub summaries: Vec<Summary>,
    pub missing: Vec<(String, String)>,
}

/// The results folder exists (or is created) and takes a file; the error names the folder.
pub fn check_results_folder(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("creating the results folder {}", root.display()))?;
    let probe = root.join(format!(".tram-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("the results folder {} is not writable", root.display()))?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

/// Every run of the profile, in its order, with its folder and configuration.
pub fn plan<T: TaskConfig>(exp: &Experiment, profile: &Profile<T>, opts: &SweepOptions) -> Vec<Planned<T>> {
    profile
        .runs()
        .into_iter()
        .map(|(method, seed)| {
            let id = run_id(&method, seed);
            let run = profile.run_settings(&method, seed, opts.device);
            let config = RunConfig { run, task: profile.task.clone() };
            let dir = RunDir::new(&opts.results, &exp.file.name, &opts.profile, &id);
            Planned { id, method_id: method_id(&method), dir, config }
        })
        .collect()
}

/// Checks every run's settings against the task before the first step: steps per epoch, the optimizer, the
/// schedule over the run's length.
pub fn check<T>(planned: &[Planned<T>], task: &dyn Task) -> Result<()> {
    for p in planned {
        let run = &p.config.run;
        let steps = task.steps_per_epoch(run).with_context(|| format!("run {}", p.id))?;
        let mut optimizer = run.optimizer.clone();
        optimizer.schedule = optimizer.schedule.with_total_steps_if_unset((steps * run.epochs) as u64);
        optimizer.validate().with_context(|| format!("run {}: over {} steps", p.id, steps * run.epochs))?;
    }
    Ok(())
}

/// The runs' state as their folders say, changing nothing.
pub fn collect<T: TaskConfig>(planned: &[Planned<T>]) -> Result<SweepOutcome> {
    let mut outcome = SweepOutcome { summaries: vec![], missing: vec![] };
    for p in planned {
        let why = match p.dir.status(&p.config)? {
            Status::Finished(s) => {
                outcome.summaries.push(*s);
                continue;
            }
            Status::Unfinished => p.dir.describe_unfinished()?,
            Status::Changed { finished, keys } => {
                format!("{} under another configuration ({keys})", if finished { "finished" } else { "started" })
            }
            Status::Unreadable(e) => format!("its summary.json does not read ({e})"),
            Status::Damaged(file, why) => format!("{}: {why}", file.display()),
        };
        outcome.missing.push((p.id.clone(), why));
    }
    Ok(outcome)
}

/// Trains this shard's runs that are not finished, each once it is claimed; runs another process holds are
/// left for the end and waited for (and trained here if that process stops without finishing them). Returns
/// the state of the whole sweep.
pub fn run_profile<T: TaskConfig>(
    exp: &Experiment,
    profile: &Profile<T>,
    opts: &SweepOptions,
    task: &dyn Task,
) -> Result<SweepOutcome> {
    let planned = plan(exp, profile, opts);
    check(&planned, task)?;
    let mine: Vec<&Planned<T>> =
        planned.iter().enumerate().filter(|(i, _)| opts.shard.owns(*i)).map(|(_, p)| p).collect();
    let mut todo = vec![];
    for p in &mine {
        if let RunState::Todo = p.dir.state(&p.config, opts.fresh)? {
            todo.push(*p);
        }
    }
    let share =
        if opts.shard == Shard::ALL { String::new() } else { format!(", {} in shard {}", mine.len(), opts.shard) };
    tracing::info!("{} runs{share}: {} finished earlier, {} to do", planned.len(), mine.len() - todo.len(), todo.len());
    let mp = MultiProgress::new();
    let sweep = mp.add(ProgressBar::new(todo.len() as u64));
    sweep
        .set_style(bar_style("{prefix:>12} [{bar:30}] {pos}/{len} runs  elapsed {elapsed_precise}  eta {eta_precise}"));
    sweep.set_prefix(format!("{}/{}", exp.file.name, opts.profile));
    let trainer = Trainer { exp, profile, opts, task, mp: &mp };
    let mut held_elsewhere = vec![];
    for p in todo {
        match p.dir.try_claim()? {
            Claim::Claimed(lock, stale) => trainer.run(p, lock, stale)?,
            Claim::Busy(holder) => {
                let who = holder.map_or_else(|| "another process".into(), |h| h.to_string());
                mp.suspend(|| tracing::info!("{}: being trained by {who}; skipped for now", p.id));
                held_elsewhere.push(p);
            }
        }
        sweep.inc(1);
    }
    for p in held_elsewhere {
        mp.suspend(|| tracing::info!("{}: waiting for the process that trains it", p.id));
        let (lock, stale) = p.dir.claim_waiting()?;
        trainer.run(p, lock, stale)?;
    }
    sweep.finish();
    collect(&planned)
}

/// What training one run needs.
struct Trainer<'a, T> {
    exp: &'a Experiment,
    profile: &'a Profile<T>,
    opts: &'a SweepOptions,
    task: &'a dyn Task,
    mp: &'a MultiProgress,
}

impl<T: TaskConfig> Trainer<'_, T> {
    /// Trains a claimed run (from its checkpoint, if it has one) and writes its folder, unless another process
    /// finished it meanwhile.
    fn run(&self, p: &Planned<T>, mut lock: RunLock, stale: Option<Holder>) -> Result<()> {
        if let RunState::Done = p.dir.state(&p.config, false)? {
            self.mp.suspend(|| tracing::info!("{}: finished by another process meanwhile", p.id));
            return Ok(());
        }
        if let Some(h) = stale {
            self.mp.suspend(|| tracing::warn!("{}: taking over from {h}, which stopped while training it", p.id));
        }
        let checkpoints = p.dir.checkpoints(self.profile.checkpoint_every).with_identity(p.config.identity());
        let resumed_from = checkpoints.latest()?.map(|(step, _)| step);
        if resumed_from.is_none() {
            if let Some(from) = self.finished_elsewhere(p)? {
                p.dir.adopt(&from)?;
                lock.finish()?;
                self.mp.suspend(|| {
                    tracing::info!("{}: reused the finished run {} (same configuration)", p.id, from.dir.display())
                });
                return Ok(());
            }
        }
        lock.training()?;
        p.dir.begin(&p.config, &lock.holder, resumed_from)?;
        let steps = self.task.steps_per_epoch(&p.config.run)?;
        let bar = self.mp.add(ProgressBar::new((steps * p.config.run.epochs) as u64));
        bar.set_style(bar_style("{prefix:>12} [{bar:30}] {pos}/{len} steps  {msg}  eta {eta_precise}"));
        bar.set_prefix(p.id.clone());
        bar.enable_steady_tick(Duration::from_millis(500));
        match resumed_from {
            Some(step) => {
                bar.set_position(step);
                self.mp.suspend(|| tracing::info!("{}: resuming from its checkpoint after step {step}", p.id));
            }
            None => self.mp.suspend(|| tracing::info!("{}: training", p.id)),
        }
        let start_s = now_s();
        let kill_at = kill_at_step();
        let mut on_step = |r: &tram_core::StepReport| {
            if kill_at == Some(r.step) {
                kill_this_process();
            }
            bar.inc(1);
            bar.set_message(format!("loss {:.3}", r.loss));
        };
        let mut ctx = RunContext::new(&mut on_step);
        if self.profile.keep_weights {
            ctx.save_model = Some(p.dir.dir.join(WEIGHTS));
        }
        ctx.checkpoints = Some(checkpoints);
        let result = self.task.run(&p.config.run, &mut ctx).with_context(|| format!("run {}", p.id))?;
        bar.finish_and_clear();
        let write = WriteContext { experiment: &self.exp.file.name, profile: &self.opts.profile, start_s };
        let summary = p.dir.write(&write, &p.config, &p.method_id, self.task.metric(), &result)?;
        lock.finish()?;
        if let Some(d) = &summary.diverged {
            self.mp.suspend(|| tracing::warn!("{}: {d}; recorded as diverged ({})", p.id, p.dir.dir.display()));
            return Ok(());
        }
        let metric = summary.metric;
        self.mp.suspend(|| {
            tracing::info!(
                "{}: in-domain {}, zero-shot mean {}, {:.0} s ({})",
                p.id,
                summary.in_domain().map_or_else(|| "—".into(), |e| metric.format(e.value)),
                metric.format(summary.zero_shot_mean()),
                summary.train_seconds,
                p.dir.dir.display()
            )
        });
        Ok(())
    }
}

impl<T: TaskConfig> Trainer<'_, T> {
    /// The same run (id and configuration), finished in another profile's folder of this experiment, if any (the
    /// first by profile name); with `keep_weights`, only one that kept its weights. A profile that extends another
    /// with more seeds or methods trains only what is new.
    fn finished_elsewhere(&self, p: &Planned<T>) -> Result<Option<RunDir>> {
        let experiment = self.opts.results.join("runs").join(&self.exp.file.name);
        let Ok(entries) = std::fs::read_dir(&experiment) else { return Ok(None) };
        let mut profiles: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| *name != self.opts.profile)
            .collect();
        profiles.sort();
        for profile in profiles {
            let other = RunDir::new(&self.opts.results, &self.exp.file.name, &profile, &p.id);
            if self.profile.keep_weights && !other.dir.join(WEIGHTS).exists() {
                continue;
            }
            if let Status::Finished(_) = other.status(&p.config)? {
                return Ok(Some(other));
            }
        }
        Ok(None)
    }
}

/// The variable that makes a sweep SIGKILL itself when a run reports the step it names (0-based): the kill and
/// resume tests stop a run at an exact point this way (a kill timed from outside races the run's checkpoints).
/// With `checkpoint_every = 1`, the run's latest checkpoint is then `step-<N>`.
pub const KILL_AT_STEP: &str = "TRAM_TEST_KILL_AT_STEP";

fn kill_at_step() -> Option<u64> {
    std::env::var(KILL_AT_STEP).ok().and_then(|v| v.parse().ok())
}

/// Ends this process as a kill does: no destructor runs, the run's lock record still says `training`.
fn kill_this_process() -> ! {
    let _ = std::process::Command::new("kill").args(["-KILL", &std::process::id().to_string()]).status();
    std::process::abort()
}

/// Each method's step time, measured interleaved on one batch ([`Task::time_steps`]).
pub fn measure_timing<T>(
    profile: &Profile<T>,
    task: &dyn Task,
    device: DeviceChoice,
    rounds: usize,
) -> Result<Vec<Timing>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_a_sweep_into_disjoint_shares_that_cover_it() {
        let shards: Vec<Shard> = (0..3).map(|k| Shard::parse(&format!("{k}/3")).unwrap()).collect();
        for position in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.owns(position)).count(), 1, "position {position}");
        }
        assert_eq!((0..10).filter(|&i| shards[1].owns(i)).collect::<Vec<_>>(), [1, 4, 7]);
        assert!((0..10).all(|i| Shard::ALL.owns(i)));
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2", "1/2/3"] {
            let err = Shard::parse(bad).unwrap_err().to_string();
            assert!(err.contains("expected K/N"), "{bad}: {err}");
        }
    }
}
