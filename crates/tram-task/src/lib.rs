//! # tram-task
//!
//! The contract between a task crate (tram-vision, tram-text) and the runner: what every fine-tuning task of the
//! TRAM paper (arXiv 2310.03646 v2, §4) shares, and nothing about images, text or tables.
//!
//! - [`Task`]: describe, train one (method, seed), time the methods' steps; the runner holds a `Box<dyn Task>`;
//! - [`RunSettings`]: the keys every experiment profile has, whatever the task;
//! - [`Metric`], [`Domain`], [`Split`], [`Evaluation`]: one evaluation set's outcome, metric-neutral;
//! - [`EpochEval`], [`RunResult`], [`Timing`]: what a run and a timing measurement produce;
//! - [`train()`]: the one training loop over [`tram_core::StepDriver`] (per epoch: steps, then evaluation), with
//!   [`Checkpoints`] from which a killed run resumes bit for bit;
//! - [`time_interleaved`]: the one step-timing loop (every method once per round, medians);
//! - [`DeviceChoice`], and [`hash_unit`] / [`SplitMix64`] for deterministic splits and shuffles.
//!
//! [`kit`] holds the tools the task crates share beside the contract: the offline asset cache, weights by name,
//! parquet cells, atomic writes, what a `config.json`'s activation names, and the paper's ε-sharpness and CKA
//! (Table 6).

mod checkpoints;
mod device;
mod error;
pub mod kit;
mod metric;
mod result;
mod rng;
mod settings;
pub mod shape;
mod timing;
mod train;

pub use checkpoints::{differences, Checkpoints, Latest};
pub use device::DeviceChoice;
pub use error::{Error, Result};
pub use metric::{Domain, Evaluation, Metric, Split};
pub use result::{Diverged, EpochEval, RunResult, Selection, Timing};
pub use rng::{fnv1a, hash_unit, SplitMix64};
pub use settings::RunSettings;
pub use shape::ModelShape;
pub use timing::time_interleaved;
pub use train::{train, EpochBatches, RunContext, TrainData};

use std::path::Path;

use serde::{Deserialize, Serialize};
use tram_core::OptimizerConfig;

/// A fine-tuning task of the paper: its data loaded once, then [`Task::run`] once per (method, seed).
///
/// Implementations build their model, hand [`train()`] their batches and their evaluation, and return what it
/// returns; they add no optimizer logic.
pub trait Task {
    /// One line for the log: data sizes, evaluation sets and their domains.
    fn describe(&self) -> String;

    /// The metric the task's evaluations report.
    fn metric(&self) -> Metric;

    /// Optimizer steps of one epoch under these settings (after `max_train_batches` and accumulation).
    fn steps_per_epoch(&self, run: &RunSettings) -> Result<usize>;

    /// Fine-tunes with `run.optimizer` and evaluates after every epoch.
    fn run(&self, run: &RunSettings, ctx: &mut RunContext<'_>) -> Result<RunResult>;

    /// Step time of each optimizer configuration on one training batch, measured with [`time_interleaved`].
    fn time_steps(&self, run: &RunSettings, methods: &[OptimizerConfig], rounds: usize) -> Result<Vec<Timing>>;

    /// The pre-trained model's own evaluation before any fine-tuning (Table 4's zero-shot row), where the task
    /// has one: a task that puts a new head on the model has none.
    fn evaluate_pretrained(&self, _run: &RunSettings) -> Result<Option<Vec<Evaluation>>> {
        Ok(None)
    }

    /// Table 6: ε-sharpness and CKA of a finished run's fine-tuned model (its parameters saved at `trained` by
    /// [`RunContext::save_model`]) on each of the task's analysis sets, where the task has them (none: `None`).
    fn analyse(
        &self,
        _run: &RunSettings,
        _trained: &Path,
        _with: &AnalysisSettings,
    ) -> Result<Option<Vec<SetAnalysis>>> {
        Ok(None)
    }
}

/// How [`Task::analyse`] measures (arXiv 2310.03646 v2 §4.3, App. B.7–B.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSettings {
    /// The ε-sharpness ascent: ε, learning rate, accumulation, and the update counts at which it is read.
    pub sharpness: kit::analysis::SharpnessConfig,
    /// Examples per micro-batch of the ascent (the paper: 32).
    pub batch_size: usize,
    pub device: DeviceChoice,
}

/// One fine-tuned model measured on one set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetAnalysis {
    /// The set (a language's validation set in Table 6).
    pub set: String,
    pub domain: Domain,
    pub examples: usize,
    /// ε-sharpness (Eq. 10) at each update count of the ascent.
    pub sharpness: kit::analysis::Sharpness,
    /// Linear CKA (Eq. 12) between the pre-trained and the fine-tuned model's representations of the set.
    pub cka: f64,
}
