//! Run folders: `results/runs/<experiment>/<profile>/<run-id>/` hold the resolved config, `lock` (who trains or
//! trained it), `attempts.json` (every process that trained it, and from which step), `checkpoint/` while it
//! trains, then `meta.json`, `steps.csv`, `evals.csv`, `examples.csv`, with `keep_weights` `model.safetensors`
//! and its checksum, and, written last, `summary.json`, which marks the run as finished. Every file but `lock` is
//! written atomically. A sweep started again skips finished runs whose identity is unchanged, resumes unfinished
//! ones from their checkpoint (once its checksums and the identity it was trained under match), and refuses —
//! naming the keys that differ, or the damaged file — to overwrite a run (finished, or checkpointed) whose
//! identity changed; `--fresh` moves such a run aside.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tram_task::{Checkpoints, Metric, RunResult, RunSettings};

use crate::atomic::{self, now_s};
use crate::experiment::{TaskConfig, TaskSpec};
use crate::json;
use crate::lock::{self, Claim, Holder, RunLock};
use crate::run_csv::{evals_frame, examples_frame, steps_frame};
use crate::summary::Summary;

/// Everything that defines one run, as written to `config.resolved.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig<T = TaskSpec> {
    pub run: RunSettings,
    pub task: T,
}

impl<T: TaskConfig> RunConfig<T> {
    /// What can change the run's result: everything but the device choice and the task's decoding threads.
    pub fn identity(&self) -> toml::Value {
        let mut run = self.run.clone();
        run.device = tram_task::DeviceChoice::Auto;
        toml::Value::try_from(RunConfig { run, task: self.task.identity() }).expect("a run config serialises")
    }

    pub fn hash(&self) -> String {
        let text = toml::to_string(&self.identity()).expect("a run config serialises");
        format!("{:016x}", tram_task::fnv1a(0, text.as_bytes()))
    }
}

pub use tram_task::differences;

#[derive(Debug, Serialize)]
struct Meta<'a> {
    experiment: &'a str,
    profile: &'a str,
    run_id: &'a str,
    git_commit: String,
    tch_version: &'static str,
    libtorch_version: &'static str,
    device: String,
    cuda_available: bool,
    seed: u64,
    start_unix_s: u64,
    end_unix_s: u64,
    host_threads: i32,
    /// The process that finished the run (`attempts.json` lists every one that trained it).
    host: String,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    slurm_job: Option<String>,
    attempts: usize,
}

/// One process's turn at training a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub host: String,
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
    pub started_unix_s: u64,
    /// The checkpoint's step it started from (none: from the beginning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from_step: Option<u64>,
    /// When it wrote the run's results (none: it stopped before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix_s: Option<u64>,
}

pub struct RunDir {
    pub dir: PathBuf,
    pub run_id: String,
}

pub enum RunState {
    /// Finished with this identity.
    Done,
    /// Not started, or interrupted: (re)run it, from its checkpoint if it has one.
    Todo,
}

/// What a run folder holds, read without changing anything.
pub enum Status {
    /// Finished with this identity.
    Finished(Box<Summary>),
    /// Not started, being trained, or interrupted.
    Unfinished,
    /// Finished, or checkpointed, under another identity: `key: old → new` for the keys that differ.
    Changed { finished: bool, keys: String },
    /// `summary.json` does not read.
    Unreadable(String),
    /// A file the run needs (an unfinished run's checkpoint or `attempts.json`, a finished run's saved weights) is
    /// not what was written: the file, and what is wrong.
    Damaged(PathBuf, String),
}

pub const LOCK: &str = "lock";
pub const CHECKPOINT: &str = "checkpoint";
pub const ATTEMPTS: &str = "attempts.json";
/// The selected epoch's trainable parameters (with `keep_weights`), beside `model.safetensors.sha256`.
pub const WEIGHTS: &str = "model.safetensors";

impl RunDir {
    pub fn new(root: &Path, experiment: &str, profile: &str, run_id: &str) -> Self {
        Self { dir: root.join("runs").join(experiment).join(profile).join(run_id), run_id: run_id.to_string() }
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK)
    }

    /// The run's checkpoints (`checkpoint/`), taken every `every_steps` steps and at every epoch's end.
    pub fn checkpoints(&self, every_steps: u64) -> Checkpoints {
        Checkpoints::new(self.dir.join(CHECKPOINT), every_steps)
    }

    /// Claims the run for this process without waiting ([`lock::try_claim`]).
    pub fn try_claim(&self) -> Result<Claim> {
        lock::try_claim(&self.lock_path())
    }

    /// Claims the run, waiting for the process that holds it.
    pub fn claim_waiting(&self) -> Result<(RunLock, Option<Holder>)> {
        lock::claim_waiting(&self.lock_path())
    }

    /// The identity of the configuration the folder was started with, if it says.
    fn started_identity<T: TaskConfig>(&self) -> Option<toml::Value> {
        std::fs::read_to_string(self.dir.join("config.resolved.toml"))
            .ok()
            .and_then(|t| toml::from_str::<RunConfig<T>>(&t).ok())
            .map(|c| c.identity())
    }

    fn changed_keys<T: TaskConfig>(&self, config: &RunConfig<T>, old_hash: &str) -> String {
        match self.started_identity::<T>() {
            Some(old) => differences(&old, &config.identity(), 8).join("; "),
            None => format!("identity {old_hash} vs {}", config.hash()),
        }
    }

    /// What the folder holds for `config`. A checkpoint is checked against its checksums and judged by the
    /// identity stored with it (`config.resolved.toml` only for a checkpoint written without one).
    pub fn status<T: TaskConfig>(&self, config: &RunConfig<T>) -> Result<Status> {
        let summary_path = self.dir.join("summary.json");
        if !summary_path.exists() {
            if let Err(e) = self.attempts() {
                return Ok(Status::Damaged(self.dir.join(ATTEMPTS), format!("{:#}", e.root_cause())));
            }
            let latest = match self.checkpoints(0).check() {
                Ok(latest) => latest,
                Err(tram_task::Error::Changed { path, message }) => return Ok(Status::Damaged(path, message)),
                Err(e) => return Err(e.into()),
            };
            let Some(latest) = latest else { return Ok(Status::Unfinished) };
            if let Some(old) = latest.identity.or_else(|| self.started_identity::<T>()) {
                if old != config.identity() {
                    let keys = differences(&old, &config.identity(), 8).join("; ");
                    return Ok(Status::Changed { finished: false, keys });
                }
            }
            return Ok(Status::Unfinished);
        }
        let summary: Summary = match json::read(&summary_path) {
            Ok(s) => s,
            Err(e) => return Ok(Status::Unreadable(format!("{:#}", e.root_cause()))),
        };
        if summary.config_hash == config.hash() {
            match self.damaged_weights() {
                Some((file, why)) => Ok(Status::Damaged(file, why)),
                None => Ok(Status::Finished(Box::new(summary))),
            }
        } else {
            Ok(Status::Changed { finished: true, keys: self.changed_keys(config, &summary.config_hash) })
        }
    }

    /// Why an unfinished run has no results yet: being trained (by whom), interrupted (at which step), or not
    /// started.
    pub fn describe_unfinished(&self) -> Result<String> {
        if let Some(holder) = lock::held(&self.lock_path())? {
            return Ok(match holder {
                Some(h) => format!("being trained by {h}"),
                None => "being trained by another process".into(),
            });
        }
        Ok(match self.checkpoints(0).latest()? {
            Some((step, _)) => format!("interrupted after step {step}; a sweep resumes it from its checkpoint"),
            None if self.dir.join("config.resolved.toml").exists() => "interrupted before its first checkpoint".into(),
            None => "not started".into(),
        })
    }

    /// Moves the folder aside (kept as `<run-id>.old-<time>`), unless a live process trains in it.
    fn move_aside(&self) -> Result<()> {
        let _lock = match self.try_claim()? {
            Claim::Claimed(lock, _) => lock,
            Claim::Busy(h) => bail!(
                "{} is being trained by {}; stop that process before moving the run aside",
                self.dir.display(),
                h.map_or_else(|| "another process".to_string(), |h| h.to_string())
            ),
        };
        // A second move within the same second gets `-1`, `-2`, ...: nothing moved aside is overwritten.
        let stamp = now_s();
        let aside = (0..)
            .map(|k| match k {
                0 => self.dir.with_file_name(format!("{}.old-{stamp}", self.run_id)),
                k => self.dir.with_file_name(format!("{}.old-{stamp}-{k}", self.run_id)),
            })
            .find(|p| !p.exists())
            .expect("a free name");
        std::fs::rename(&self.dir, &aside).with_context(|| format!("moving {} aside", self.dir.display()))?;
        tracing::warn!("moved the earlier run to {}", aside.display());
        Ok(())
    }

    /// Whether the run is finished with `config`'s identity. With `fresh`, a run of another identity (finished
    /// or checkpointed), or one whose summary does not read, is moved aside (kept as `<run-id>.old-<time>`) and
    /// redone; without, it is an error that says so.
    pub fn state<T: TaskConfig>(&self, config: &RunConfig<T>, fresh: bool) -> Result<RunState> {
        match self.status(config)? {
            Status::Finished(_) => Ok(RunState::Done),
            Status::Unfinished => Ok(RunState::Todo),
            Status::Unreadable(e) if fresh => {
                tracing::warn!("{}: summary.json does not read ({e}); redoing the run", self.dir.display());
                self.move_aside()?;
                Ok(RunState::Todo)
            }
            Status::Changed { .. } if fresh => {
                self.move_aside()?;
                Ok(RunState::Todo)
            }
            Status::Damaged(file, why) if fresh => {
                tracing::warn!("{}: {why}; redoing the run", file.display());
                self.move_aside()?;
                Ok(RunState::Todo)
            }
            Status::Damaged(file, why) => bail!(
                "{}: {why}: the run cannot be used as it is; pass --fresh to move its folder aside (kept as \
                 {}.old-<time>) and run it again",
                file.display(),
                self.run_id
            ),
            Status::Unreadable(e) => bail!(
                "{} does not read ({e}): the run was cut short while finishing or the file was damaged; \
                 pass --fresh to move the folder aside and run it again",
                self.dir.join("summary.json").display()
            ),
            Status::Changed { finished: true, keys } => bail!(
                "{} holds a finished run of another configuration ({keys}); pass --fresh to move it aside \
                 (kept as {}.old-<time>) and run again",
                self.dir.display(),
                self.run_id
            ),
            Status::Changed { finished: false, keys } => bail!(
                "{} holds an unfinished run of another configuration ({keys}), checkpointed in {}; restore its \
                 configuration to resume it, or pass --fresh to move it aside (kept as {}.old-<time>) and start over",
                self.dir.display(),
                CHECKPOINT,
                self.run_id
            ),
        }
    }

    /// Takes over the finished run in `from` (another profile's folder, same run id and configuration): copies
    /// its files but the lock, `summary.json` last (it marks the run finished), each written atomically, and notes
    /// where they came from in `reused-from.txt`. The caller holds this run's lock.
    pub fn adopt(&self, from: &RunDir) -> Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let mut names: Vec<String> = std::fs::read_dir(&from.dir)
            .with_context(|| format!("reading {}", from.dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != LOCK && n != "summary.json" && !n.starts_with('.'))
            .collect();
        names.sort();
        names.push("summary.json".into());
        atomic::write_bytes(&self.dir.join("reused-from.txt"), format!("{}\n", from.dir.display()).as_bytes())?;
        for name in names {
            let bytes = std::fs::read(from.dir.join(&name)).with_context(|| format!("reading {name}"))?;
            atomic::write_bytes(&self.dir.join(&name), &bytes)?;
        }
        Ok(())
    }

    /// Prepares a claimed run for training: removes what killed writers left (`.<name>.tmp-<pid>`,
    /// `.<name>.old-<pid>`), records the configuration and this attempt.
    pub fn begin<T: TaskConfig>(
        &self,
        config: &RunConfig<T>,
        holder: &Holder,
        resumed_from_step: Option<u64>,
    ) -> Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        for folder in [self.dir.clone(), self.dir.join(CHECKPOINT)] {
            let Ok(entries) = std::fs::read_dir(&folder) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if atomic::is_debris(&name) || (name.starts_with('.') && name.contains(".old-")) {
                    let path = entry.path();
                    let removed =
                        if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
                    removed.with_context(|| format!("removing {}, left by a killed process", path.display()))?;
                }
            }
        }
        atomic::write_bytes(&self.dir.join("config.resolved.toml"), toml::to_string(config)?.as_bytes())?;
        let mut attempts = self.attempts()?;
        attempts.push(Attempt {
            host: holder.host.clone(),
            pid: holder.pid,
            slurm_job: holder.slurm_job.clone(),
            started_unix_s: holder.started_unix_s,
            resumed_from_step,
            finished_unix_s: None,
        });
        atomic::write_json(&self.dir.join(ATTEMPTS), &attempts)
    }

    /// Every process's turn at training the run, in order.
    pub fn attempts(&self) -> Result<Vec<Attempt>> {
        let path = self.dir.join(ATTEMPTS);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!("{} does not read; pass --fresh to move the run aside and start it over", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Why the saved weights (`model.safetensors`) cannot be trusted, if they cannot: the file, and what changed
    /// since it was written. Weights written before checksums were kept pass.
    pub fn damaged_weights(&self) -> Option<(PathBuf, String)> {
        match tram_task::kit::checksum::verify_sidecar(&self.dir.join(WEIGHTS)) {
            Ok(_) => None,
            Err(tram_task::Error::Changed { path, message }) => Some((path, message)),
            Err(e) => Some((self.dir.join(WEIGHTS), e.to_string())),
        }
    }

    /// Writes everything about a finished (or diverged) run; `summary.json` last. `metric` is the task's.
    pub fn write<T: TaskConfig>(
        &self,
        ctx: &WriteContext,
        config: &RunConfig<T>,
        method_id: &str,
        metric: Metric,
        result: &RunResult,
    ) -> Result<Summary> {
        let summary = Summary::from_result(&self.run_id, method_id, &config.run, config.hash(), metric, result)?;
        // A diverged run keeps no per-example values: its evaluations are not numbers.
        let selected = match &result.diverged {
            Some(_) => &[][..],
            None => &result.selected_epoch().context("the run evaluated no epoch")?.evals[..],
        };
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        atomic::write_bytes(&self.dir.join("config.resolved.toml"), toml::to_string(config)?.as_bytes())?;
        let meta = Meta {
            experiment: ctx.experiment,
            profile: ctx.profile,
            run_id: &self.run_id,
            git_commit: crate::meta::git_commit(),
            tch_version: crate::meta::TCH_VERSION,
            libtorch_version: crate::meta::LIBTORCH_VERSION,
            device: result.device.clone(),
            cuda_available: tch::Cuda::is_available(),
            seed: config.run.seed(),
            start_unix_s: ctx.start_s,
            end_unix_s: now_s(),
            host_threads: tch::get_num_threads(),
            host: crate::meta::host(),
            pid: std::process::id(),
            slurm_job: crate::meta::slurm_job(),
            attempts: self.attempts()?.len(),
        };
        atomic::write_json(&self.dir.join("meta.json"), &meta)?;
        atomic::write_csv(&self.dir.join("steps.csv"), &mut steps_frame(&result.steps)?)?;
        atomic::write_csv(&self.dir.join("evals.csv"), &mut evals_frame(result)?)?;
        atomic::write_csv(&self.dir.join("examples.csv"), &mut examples_frame(selected)?)?;
        let mut attempts = self.attempts()?;
        if let Some(mine) = attempts.iter_mut().rev().find(|a| a.pid == meta.pid && a.host == meta.host) {
            mine.finished_unix_s = Some(meta.end_unix_s);
            atomic::write_json(&self.dir.join(ATTEMPTS), &attempts)?;
        }
        json::write(&self.dir.join("summary.json"), &summary)?;
        // A kill before this line leaves a finished run with its last checkpoint: harmless, it is never resumed.
        self.checkpoints(0).remove().with_context(|| format!("removing {}", self.dir.join(CHECKPOINT).display()))?;
        Ok(summary)
    }
}

/// Where a run belongs, for `meta.json`.
pub struct WriteContext<'a> {
    pub experiment: &'a str,
    pub profile: &'a str,
    pub start_s: u64,
}

#[cfg(test)]
mod tests;
