//! The keys every experiment profile has, whatever the task: what the training loop and every task read.

use serde::{Deserialize, Serialize};
use tram_core::OptimizerConfig;

use crate::device::DeviceChoice;
use crate::error::{config_err, Result};
use crate::result::Selection;

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
