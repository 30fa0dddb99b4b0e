//! A run's checkpoints, so that a killed run resumes where it stopped and ends as if it had never stopped.
//!
//! `<dir>/step-<N>/` is a tram-core checkpoint (model, base-optimizer state, TRAM targets, step counter) whose
//! caller metadata is the training loop's position: the epoch and the batches of it already used, the epoch's
//! running sums, and the run's result so far (step reports, evaluations: what best-validation selection reads).
//! Each save writes a new folder atomically, then removes the older ones, so a kill at any moment leaves at
//! least one complete checkpoint. A checkpoint counts once its `SHA256SUMS` is written (last): the checksums of
//! its files, checked before it is resumed, and, when the caller gives one, `identity.toml`, the identity of the run
//! it was trained for (what can change its result: task, data, settings), compared with the resuming run's
//! whatever else the run's folder says. No random state is stored: the step driver seeds dropout and noise from its
//! step counter, and the task's data order and augmentation depend on (seed, epoch, batch), not on history.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tram_core::{Model, StepDriver};

use crate::device::DeviceChoice;
use crate::error::{config_err, Error, Result};
use crate::result::RunResult;
use crate::settings::RunSettings;

/// Version of the loop state inside a checkpoint's metadata.
const FORMAT: u32 = 1;
const PREFIX: &str = "step-";
/// The checksums of a checkpoint's files, written last: a folder without them was cut short.
const SUMS: &str = "SHA256SUMS";
/// The identity of the run a checkpoint was trained for.
const IDENTITY: &str = "identity.toml";
/// What tram-core writes into a checkpoint folder.
const CORE_FILES: [&str; 3] = ["state.safetensors", "manifest.json", "extra.json"];

/// Periodic checkpoints of a run in the folder `dir`: every `every_steps` optimizer steps (0: never inside an
/// epoch) and at the end of every epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoints {
    pub dir: PathBuf,
    pub every_steps: u64,
    /// The run's identity, stored with every checkpoint and required of the one it resumes from.
    pub identity: Option<toml::Value>,
}

/// The latest complete checkpoint, its files checked against their checksums.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// The optimizer steps taken before it.
    pub step: u64,
    pub folder: PathBuf,
    /// The identity of the run it was trained for (none: written without one).
    pub identity: Option<toml::Value>,
}

/// Where the training loop stands, as a checkpoint stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LoopState {
    /// The epoch in progress (1-based) and the batches of it already used; `(e + 1, 0)` once epoch e is evaluated.
    pub epoch: usize,
    pub batch: usize,
    /// The epoch's running sums: pass-1 losses of the steps not skipped, seconds training and waiting for data.
    pub loss_sum: f64,
    pub losses: usize,
    pub train_seconds: f64,
    pub wait_seconds: f64,
    /// What the run was started with (device left out: a run may resume elsewhere), checked on resume.
    pub run: RunSettings,
    pub steps_per_epoch: usize,
    /// Step reports and evaluations so far.
    pub result: RunResult,
}

impl LoopState {
    pub fn start(run: &RunSettings, steps_per_epoch: usize, result: RunResult) -> Self {
        let run = RunSettings { device: DeviceChoice::Auto, ..run.clone() };
        Self {
            epoch: 1,
            batch: 0,
            loss_sum: 0.0,
            losses: 0,
            train_seconds: 0.0,
            wait_seconds: 0.0,
            run,
            steps_per_epoch,
            result,
        }
    }

    /// Moves to the start of the next epoch.
    pub fn next_epoch(&mut self) {
        self.epoch += 1;
        self.batch = 0;
        self.loss_sum = 0.0;
        self.losses = 0;
        self.train_seconds = 0.0;
        self.wait_seconds = 0.0;
    }
}

/// The metadata text: JSON (what tram-core stores) around TOML, which keeps every float exactly, NaN included.
#[derive(Serialize, Deserialize)]
struct Extra {
    tram_task_loop: u32,
    toml: String,
}

impl Checkpoints {
    pub fn new(dir: impl Into<PathBuf>, every_steps: u64) -> Self {
        Self { dir: dir.into(), every_steps, identity: None }
    }

    /// The same checkpoints, stored with (and resumed only under) the run identity `identity`.
    pub fn with_identity(self, identity: toml::Value) -> Self {
        Self { identity: Some(identity), ..self }
    }

    fn folder(&self, step: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{step:08}"))
    }

    /// The complete checkpoints in the folder, by step (a folder counts once its checksums are written).
    fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut found = vec![];
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(step) = name.strip_prefix(PREFIX).and_then(|n| n.parse::<u64>().ok()) {
                if entry.path().join(SUMS).exists() {
                    found.push((step, entry.path()));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// The latest checkpoint: the step it was taken after, and its folder (not checked: see [`Self::check`]).
    pub fn latest(&self) -> Result<Option<(u64, PathBuf)>> {
        Ok(self.list()?.pop())
    }

    /// The latest checkpoint with its files checked against their checksums and its identity read; a file that
    /// changed since it was written is an [`crate::Error::Changed`] naming it.
    pub fn check(&self) -> Result<Option<Latest>> {
        let Some((step, folder)) = self.latest()? else { return Ok(None) };
        crate::kit::checksum::verify_list(&folder, SUMS)?;
        let identity = match std::fs::read_to_string(folder.join(IDENTITY)) {
            Ok(text) => Some(toml::from_str(&text).map_err(|e| Error::Changed {
                path: folder.join(IDENTITY),
                message: format!("does not read ({e})"),
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Some(Latest { step, folder, identity }))
    }

    /// Saves the driver and the loop's position as `step-<N>`, then removes every other checkpoint and anything
    /// an interrupted save left behind (the caller is the only writer of the folder).
    pub(crate) fn save(&self, driver: &StepDriver, state: &LoopState) -> Result<()> {
        let toml = toml::to_string(state).map_err(|e| config_err(format!("checkpoint metadata: {e}")))?;
        let extra = serde_json::to_string(&Extra { tram_task_loop: FORMAT, toml })
            .map_err(|e| config_err(format!("checkpoint metadata: {e}")))?;
        let step = driver.steps_done();
        let folder = self.folder(step);
        driver.save_checkpoint_with(&folder, &extra)?;
        let mut files = CORE_FILES.to_vec();
        if let Some(identity) = &self.identity {
            let text = toml::to_string(identity).map_err(|e| config_err(format!("checkpoint identity: {e}")))?;
            crate::kit::atomic::write_bytes(&folder.join(IDENTITY), text.as_bytes())?;
            files.push(IDENTITY);
        }
        crate::kit::checksum::write_list(&folder, SUMS, &files)?;
        self.prune(step)
    }

    /// Removes every checkpoint but `keep`'s, and the debris of interrupted saves (`.step-*`).
    fn prune(&self, keep: u64) -> Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let old = name.strip_prefix(PREFIX).and_then(|n| n.parse::<u64>().ok()).is_some_and(|s| s != keep);
            if old || name.starts_with(&format!(".{PREFIX}")) {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    /// Every checkpoint of the run (once its results are written elsewhere).
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// The driver and the loop's position from the latest checkpoint, if there is one; an error when it was
    /// written for other settings.
    pub(crate) fn resume<M: Model>(
        &self,
        model: &M,
        run: &RunSettings,
        steps_per_epoch: usize,
    ) -> Result<Option<(StepDriver, LoopState)>> {
        let checked = self.check().map_err(|e| match e {
            Error::Changed { path, message } => Error::Changed {
                path,
                message: format!(
                    "{message}: the checkpoint is damaged; delete {} to start the run over",
                    self.dir.display()
                ),
            },
            e => e,
        })?;
        let Some(Latest { folder, identity, .. }) = checked else { return Ok(None) };
        if let (Some(mine), Some(theirs)) = (&self.identity, &identity) {
            if mine != theirs {
                return Err(config_err(format!(
                    "checkpoint {} was trained for another run ({}); delete {} to start this run over",
                    folder.display(),
                    differences(theirs, mine, 8).join("; "),
                    self.dir.display()
                )));
            }
        }
        let (driver, extra) = StepDriver::resume_with(model, &folder)?;
        let bad = |what: String| config_err(format!("checkpoint {}: {what}", folder.display()));
        let extra = extra.ok_or_else(|| bad("no position in the data (extra.json is missing)".into()))?;
        let extra: Extra = serde_json::from_str(&extra).map_err(|e| bad(format!("extra.json: {e}")))?;
        if extra.tram_task_loop != FORMAT {
            return Err(bad(format!("loop format {} is not supported (expected {FORMAT})", extra.tram_task_loop)));
        }
        let state: LoopState = toml::from_str(&extra.toml).map_err(|e| bad(format!("extra.json: {e}")))?;
        let expected = LoopState::start(run, steps_per_epoch, state.result.clone());
        let mut differ = differing_keys(&state.run, &expected.run);
        if state.steps_per_epoch != steps_per_epoch {
            differ.push(format!("steps per epoch: {} → {steps_per_epoch}", state.steps_per_epoch));
        }
        if !differ.is_empty() {
            return Err(config_err(format!(
                "checkpoint {} was written by a run with other settings ({}); delete {} to start the run over",
                folder.display(),
                differ.join("; "),
                self.dir.display()
            )));
        }
        Ok(Some((driver, state)))
    }
}

/// The keys of two settings that differ, as `key: old → new`.
fn differing_keys(old: &RunSettings, new: &RunSettings) -> Vec<String> {
    match (toml::Value::try_from(old), toml::Value::try_from(new)) {
        (Ok(a), Ok(b)) => differences(&a, &b, usize::MAX),
        _ => vec!["the run settings".into()],
    }
}

/// The keys whose values differ between two configurations, as `key: old → new` (at most `limit`): what a
/// refusal to reuse a run or a checkpoint names.
pub fn differences(old: &toml::Value, new: &toml::Value, limit: usize) -> Vec<String> {
    fn walk(prefix: &str, old: Option<&toml::Value>, new: Option<&toml::Value>, out: &mut Vec<String>) {
        match (old, new) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&p, a.get(k), b.get(k), out);
                }
            }
            (a, b) if a != b => {
                let show = |v: Option<&toml::Value>| v.map_or_else(|| "(absent)".to_string(), |v| v.to_string());
                out.push(format!("{prefix}: {} → {}", show(a), show(b)));
            }
            _ => {}
        }
    }
    let mut out = vec![];
    walk("", Some(old), Some(new), &mut out);
    out.truncate(limit);
    out
}
