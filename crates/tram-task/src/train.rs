//! The one training loop (nanoGPT's `train.py` as a function): per epoch, [`StepDriver::step`] over the task's
//! batches, then the task's evaluation; the reported epoch chosen by [`Selection`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tram_core::{Model, OptimizerConfig, StepDriver, StepReport};

use crate::checkpoints::{Checkpoints, LoopState};
use crate::device::DeviceChoice;
use crate::error::{config_err, Result};
use crate::metric::Evaluation;
use crate::result::{EpochEval, RunResult, Selection};

/// The keys every experiment profile has, whatever the task; the task's own keys live in its config type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// Method, base optimizer, schedule (a schedule without `total_steps` gets the run's length), clipping,
    /// m-sharpness, skip limit. Its `seed` is the run's seed: it seeds the task's initialisation, data order and
    /// augmentation, and the driver's dropout and noise.
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub device: DeviceChoice,
    pub epochs: usize,
    /// Examples per batch.
    pub batch_size: usize,
    /// Batches per optimizer step (gradient accumulation; with `m_sharpness`, one ascent per batch).
    #[serde(default = "one")]
    pub accumulate: usize,
    /// Cap on training batches per epoch (quick runs); `None`: the whole training set.
    #[serde(default)]
    pub max_train_batches: Option<usize>,
    /// Evaluate once before the first step (reported as epoch 0).
    #[serde(default)]
    pub eval_before_training: bool,
    #[serde(default)]
    pub selection: Selection,
    /// Evaluate after every epoch (the epoch curve, and what best-validation selection needs); `false`: after the
    /// last epoch only, which saves the evaluations' time when the last model is reported (`selection = "last"`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub eval_every_epoch: bool,
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

impl RunSettings {
    pub fn new(optimizer: OptimizerConfig, epochs: usize, batch_size: usize) -> Self {
        Self {
            optimizer,
            device: DeviceChoice::Auto,
            epochs,
            batch_size,
            accumulate: 1,
            max_train_batches: None,
            eval_before_training: false,
            selection: Selection::Last,
            eval_every_epoch: true,
        }
    }

    pub fn seed(&self) -> u64 {
        self.optimizer.seed
    }

    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.accumulate == 0 {
            return Err(config_err(format!(
                "epochs, batch_size and accumulate must be at least 1 (got {}, {}, {})",
                self.epochs, self.batch_size, self.accumulate
            )));
        }
        if self.max_train_batches == Some(0) {
            return Err(config_err("max_train_batches = 0 would train nothing; leave it out for whole epochs"));
        }
        if !self.eval_every_epoch && self.selection != Selection::Last {
            return Err(config_err(
                "selection by validation loss needs every epoch evaluated: leave eval_every_epoch out (true)",
            ));
        }
        Ok(())
    }

    /// Optimizer steps per epoch for a training set of `examples`: whole batches, capped by `max_train_batches`,
    /// grouped `accumulate` to a step. An error when not one step fits.
    pub fn steps_per_epoch(&self, examples: usize) -> Result<usize> {
        self.validate()?;
        let full = examples / self.batch_size;
        let batches = self.max_train_batches.map_or(full, |m| m.min(full));
        let steps = batches / self.accumulate;
        if steps == 0 {
            return Err(config_err(format!(
                "the training set ({examples} examples) is smaller than one step of {} × {} examples",
                self.accumulate, self.batch_size
            )));
        }
        Ok(steps)
    }
}

/// How the runner follows and keeps a run: a callback per step, where the selected model's weights go, and
/// where the run's checkpoints go.
pub struct RunContext<'a> {
    pub on_step: &'a mut dyn FnMut(&StepReport),
    /// Write the reported model's trainable parameters there (safetensors, Hugging Face-style names of the
    /// task's model), e.g. for the sharpness and CKA analysis of Table 6.
    pub save_model: Option<PathBuf>,
    /// Checkpoint the run there, and resume from the latest checkpoint found there.
    pub checkpoints: Option<Checkpoints>,
}

impl<'a> RunContext<'a> {
    pub fn new(on_step: &'a mut dyn FnMut(&StepReport)) -> Self {
        Self { on_step, save_model: None, checkpoints: None }
    }
}

/// The batches of one epoch, in order.
pub type EpochBatches<'a, B> = Box<dyn Iterator<Item = Result<B>> + 'a>;

/// A task's training batches and evaluation, as [`train()`] asks for them.
pub trait TrainData<M: Model> {
    /// The training batches of `epoch` (1-based), from batch `start` on (0 from the beginning). Batch k of an
    /// epoch is the same whatever `start` is, so a resumed run sees the data it would have seen.
    fn epoch(&mut self, epoch: usize, start: usize) -> Result<EpochBatches<'_, M::Batch>>;

    /// Every evaluation set, in eval mode without gradient.
    fn evaluate(&mut self, model: &M) -> Result<Vec<Evaluation>>;
}

/// Fine-tunes `model` with `run.optimizer` for `run.epochs` epochs of `steps_per_epoch` steps, evaluating after
/// each, and returns every step's report and evaluation. The schedule's length, if unset, is the run's.
///
/// With `ctx.checkpoints`, the run is checkpointed every `every_steps` steps and after every epoch's evaluation,
/// and starts from the latest checkpoint there: the result is the one an uninterrupted run gives, bit for bit on
/// the CPU (the model's initial parameters are replaced by the checkpoint's).
pub fn train<M: Model>(
    model: &M,
    run: &RunSettings,
    steps_per_epoch: usize,
    data: &mut dyn TrainData<M>,
    ctx: &mut RunContext<'_>,
) -> Result<RunResult> {
    run.validate()?;
    if steps_per_epoch == 0 {
        return Err(config_err("an epoch of 0 steps trains nothing"));
    }
    let mut optimizer = run.optimizer.clone();
    optimizer.schedule = optimizer.schedule.with_total_steps_if_unset((steps_per_epoch * run.epochs) as u64);
    let evaluate = |data: &mut dyn TrainData<M>, epoch, steps, train_loss, train_seconds, data_wait_seconds| {
        let t = Instant::now();
        // Evaluation computes in the run's precision too (an autocast region in bf16 and fp16).
        let evals = {
            let _region = run.optimizer.precision.autocast(model.var_store().device());
            data.evaluate(model)?
        };
        Ok::<_, crate::Error>(EpochEval {
            epoch,
            steps,
            train_loss,
            train_seconds,
            data_wait_seconds,
            eval_seconds: t.elapsed().as_secs_f64(),
            evals,
        })
    };
    let resumed = match &ctx.checkpoints {
        Some(c) => c.resume(model, run, steps_per_epoch)?,
        None => None,
    };
    let (mut driver, mut at) = match resumed {
        Some(r) => r,
        None => {
            let driver = StepDriver::new(model, optimizer)?;
            let result = RunResult {
                device: String::new(),
                steps: Vec::new(),
                epochs: Vec::new(),
                selected: 0,
                skipped_examples: Vec::new(),
                param_bytes: driver.param_bytes(),
                extra_memory_bytes: driver.extra_memory_bytes(),
            };
            let mut at = LoopState::start(run, steps_per_epoch, result);
            if run.eval_before_training {
                at.result.epochs.push(evaluate(data, 0, 0, f64::NAN, 0.0, 0.0)?);
            }
            (driver, at)
        }
    };
    at.result.device = format!("{:?}", model.var_store().device());
    let every = ctx.checkpoints.as_ref().map_or(0, |c| c.every_steps);
    while at.epoch <= run.epochs {
        let epoch = at.epoch;
        let start = Instant::now();
        let seconds_before = at.train_seconds;
        let mut batches = data.epoch(epoch, at.batch)?;
        'steps: for k in at.batch / run.accumulate..steps_per_epoch {
            let mut micro = Vec::with_capacity(run.accumulate);
            while micro.len() < run.accumulate {
                let waited = Instant::now();
                let next = batches.next();
                at.wait_seconds += waited.elapsed().as_secs_f64();
                match next {
                    Some(b) => micro.push(b?),
                    None => break 'steps,
                }
            }
            let report = driver.step(model, &micro)?;
            at.batch += run.accumulate;
            if !report.skipped {
                at.loss_sum += report.loss;
                at.losses += 1;
            }
            (ctx.on_step)(&report);
            at.result.steps.push(report);
            // The epoch's last step is followed by its evaluation and the epoch's checkpoint.
            if every > 0 && driver.steps_done() % every == 0 && k + 1 < steps_per_epoch {
                at.train_seconds = seconds_before + start.elapsed().as_secs_f64();
                if let Some(c) = &ctx.checkpoints {
                    c.save(&driver, &at)?;
                }
            }
        }
        drop(batches);
        let train_loss = if at.losses > 0 { at.loss_sum / at.losses as f64 } else { f64::NAN };
        let train_seconds = seconds_before + start.elapsed().as_secs_f64();
        if run.eval_every_epoch || epoch == run.epochs {
            let evaluated = evaluate(data, epoch, driver.steps_done(), train_loss, train_seconds, at.wait_seconds)?;
            at.result.epochs.push(evaluated);
            let selected = RunResult::select(&at.result.epochs, run.selection);
            if selected == at.result.epochs.len() - 1 {
                if let Some(path) = &ctx.save_model {
                    save_parameters(model, path)?;
                }
            }
            at.next_epoch();
        } else {
            // The next evaluation's seconds cover every epoch since the previous one (the run's total adds up).
            let waited = at.wait_seconds;
            at.next_epoch();
            (at.train_seconds, at.wait_seconds) = (train_seconds, waited);
        }
        if let Some(c) = &ctx.checkpoints {
            c.save(&driver, &at)?;
        }
    }
    let mut result = at.result;
    result.selected = RunResult::select(&result.epochs, run.selection);
    result.extra_memory_bytes = driver.extra_memory_bytes();
    Ok(result)
}

/// The model's trainable parameters as safetensors, written beside `path`, flushed to disk and renamed into place
/// (the temporary file is removed on any error).
fn save_parameters<M: Model>(model: &M, path: &Path) -> Result<()> {
    let named: Vec<(String, tch::Tensor)> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, t)| (n, t.detach()))
        .collect();
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = path.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| -> Result<()> {
        tch::Tensor::write_safetensors(&named, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(parent)?.sync_all()?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
