//! The one training loop (nanoGPT's `train.py` as a function): per epoch, [`StepDriver::step`] over the task's
//! batches, then the task's evaluation; the reported epoch chosen by [`Selection`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use tram_core::{Model, StepDriver, StepReport};

use crate::checkpoints::{Checkpoints, LoopState};
use crate::error::{config_err, Error, Result};
use crate::metric::Evaluation;
use crate::result::{Diverged, EpochEval, RunResult};
use crate::settings::RunSettings;

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
/// A run stops early, with [`RunResult::diverged`] saying where and why, once its numbers are no longer numbers:
/// the step driver's limit of non-finite steps in a row (each one skipped, changing nothing, until then), or a
/// non-finite evaluation (e.g. batch-norm statistics gone to NaN).
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
    let device = model.var_store().device();
    // What an earlier run's steps left in the heap goes back to the kernel; the peaks count this run's.
    tram_native::release_freed_memory();
    let resident_counted = tram_native::reset_peak_resident_bytes();
    tram_native::reset_peak_tensor_bytes(device);
    let mut optimizer = run.optimizer.clone();
    optimizer.schedule = optimizer.schedule.with_total_steps_if_unset((steps_per_epoch * run.epochs) as u64);
    let evaluate = |data: &mut dyn TrainData<M>, epoch, steps, train_loss, train_seconds, data_wait_seconds| {
        let t = Instant::now();
        // Evaluation computes in the run's precision too (an autocast region in bf16 and fp16).
        let evals = {
            let _region = run.optimizer.precision.autocast(model.var_store().device());
            data.evaluate(model)?
        };
        Ok::<_, Error>(EpochEval {
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
                peak_tensor_bytes: None,
                peak_resident_bytes: None,
                noise_sigma: driver.method().noise_specs().first().map(|s| s.sigma),
                diverged: None,
            };
            let mut at = LoopState::start(run, steps_per_epoch, result);
            if run.eval_before_training {
                at.result.epochs.push(evaluate(data, 0, 0, f64::NAN, 0.0, 0.0)?);
            }
            (driver, at)
        }
    };
    at.result.device = format!("{device:?}");
    let every = ctx.checkpoints.as_ref().map_or(0, |c| c.every_steps);
    'epochs: while at.epoch <= run.epochs {
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
            let report = match driver.step(model, &micro) {
                Ok(r) => r,
                Err(tram_core::Error::NonFinite { count, step }) => {
                    let what =
                        format!("{count} steps in a row had a non-finite loss or gradient (the last: step {step})");
                    at.result.diverged = Some(Diverged { steps: driver.steps_done(), what });
                    break 'epochs;
                }
                Err(e) => return Err(e.into()),
            };
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
            let broken = evaluated.evals.iter().find(|e| !(e.loss.is_finite() && e.value.is_finite()));
            if let Some(e) = broken {
                let what = format!(
                    "the evaluation of {} after epoch {epoch} gives loss {} ({} {})",
                    e.key(),
                    e.loss,
                    e.metric.as_str(),
                    e.value
                );
                at.result.diverged = Some(Diverged { steps: driver.steps_done(), what });
                at.result.epochs.push(evaluated);
                break 'epochs;
            }
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
    result.peak_tensor_bytes = tram_native::peak_tensor_bytes(device);
    result.peak_resident_bytes = resident_counted.then(tram_native::peak_resident_bytes).flatten();
    Ok(result)
}

/// The model's trainable parameters as safetensors, written atomically, then `<path>.sha256`.
fn save_parameters<M: Model>(model: &M, path: &Path) -> Result<()> {
    let named: Vec<(String, tch::Tensor)> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, t)| (n, t.detach()))
        .collect();
    crate::kit::atomic::write_with(path, |tmp| Ok::<_, Error>(tch::Tensor::write_safetensors(&named, tmp)?))?;
    // Its checksum, checked by whoever loads it (Table 6's analyses).
    crate::kit::checksum::write_sidecar(path)
}
