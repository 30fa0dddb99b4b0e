//! What a run and a timing measurement produce, as plain data (the runner writes it to CSV and JSON).

use serde::{Deserialize, Serialize};
use tram_core::{MethodConfig, StepReport};

use crate::metric::{Evaluation, Split};

/// The evaluation after one epoch (epoch 0: before training, when asked for).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochEval {
    pub epoch: usize,
    /// Optimizer steps taken so far.
    pub steps: u64,
    /// Mean pass-1 training loss over the epoch's steps that were not skipped (NaN for epoch 0).
    pub train_loss: f64,
    pub train_seconds: f64,
    /// Part of `train_seconds` spent waiting for the next batch (near 0 when the data keeps ahead of the model).
    pub data_wait_seconds: f64,
    pub eval_seconds: f64,
    pub evals: Vec<Evaluation>,
}

impl EpochEval {
    /// Mean loss over the validation sets, if there are any.
    pub fn validation_loss(&self) -> Option<f64> {
        let v: Vec<f64> = self.evals.iter().filter(|e| e.split == Split::Validation).map(|e| e.loss).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// Which epoch's model a run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// The final model, regardless of validation loss (the paper's vision setting, App. B.3).
    #[default]
    Last,
    /// The epoch with the lowest validation loss on the training domain (the paper's language setting, App. B.1).
    BestValidation,
}

/// Everything a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub device: String,
    pub steps: Vec<StepReport>,
    pub epochs: Vec<EpochEval>,
    /// Index into `epochs` of the reported model.
    pub selected: usize,
    /// Training examples left out (e.g. images that did not decode), with where they come from.
    pub skipped_examples: Vec<String>,
    pub param_bytes: usize,
    pub extra_memory_bytes: usize,
    /// The most bytes the device's tensors held at once while the run trained and evaluated (since it resumed,
    /// for a resumed run): CUDA's `max_memory_allocated`, or the CPU's counted tensors; `None` where the program
    /// does not count ([`tram_native::peak_tensor_bytes`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_tensor_bytes: Option<u64>,
    /// The process's peak resident memory while the run trained and evaluated (Linux's VmHWM, reset when training
    /// starts, after the heap's free memory was given back): on the CPU the tensors with the heap beside them and
    /// the runtime, what `tram plan`'s CPU total predicts. `None` where the kernel does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_resident_bytes: Option<u64>,
    /// σ of the method's (first) input noise as the steps applied it: a `sigma_relative` resolved against the
    /// model's measured scale ([`tram_core::Model::noise_scale`]). `None` for methods without input noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_sigma: Option<f64>,
    /// Set when the run stopped because its loss or an evaluation stopped being finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged: Option<Diverged>,
}

/// Where and why a run diverged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diverged {
    /// Optimizer steps taken when it was found.
    pub steps: u64,
    /// What was not finite, e.g. `the training loss of step 1 is NaN`.
    pub what: String,
}

impl std::fmt::Display for Diverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "diverged after {} steps: {}", self.steps, self.what)
    }
}

impl RunResult {
    /// The reported epoch.
    pub fn selected_epoch(&self) -> Option<&EpochEval> {
        self.epochs.get(self.selected)
    }

    /// Index of the epoch `selection` picks among those evaluated so far (0 when there is none).
    pub fn select(epochs: &[EpochEval], selection: Selection) -> usize {
        let last = epochs.len().saturating_sub(1);
        match selection {
            Selection::Last => last,
            Selection::BestValidation => epochs
                .iter()
                .enumerate()
                .filter(|(_, e)| e.epoch > 0)
                .filter_map(|(i, e)| e.validation_loss().map(|l| (i, l)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(last, |(i, _)| i),
        }
    }
}

/// One method's step time, measured interleaved with the others ([`crate::time_interleaved`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub method: MethodConfig,
    pub median_ms: f64,
    /// Median share of the step spent outside the model's forward, loss and backward (the optimizer's own work).
    pub optimizer_share: f64,
    pub forward_passes: u32,
    pub backward_passes: u32,
    pub extra_memory_bytes: usize,
    pub param_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::{Domain, Metric};

    fn epoch(epoch: usize, val_loss: Option<f64>) -> EpochEval {
        let eval = |split, loss| Evaluation {
            set: "s".into(),
            domain: Domain::InDomain,
            split,
            metric: Metric::Perplexity,
            value: f64::exp(loss),
            loss,
            examples: 1,
            per_example: vec![],
        };
        let mut evals = vec![eval(Split::Test, 9.0)];
        evals.extend(val_loss.map(|l| eval(Split::Validation, l)));
        EpochEval {
            epoch,
            steps: epoch as u64,
            train_loss: 1.0,
            train_seconds: 0.0,
            data_wait_seconds: 0.0,
            eval_seconds: 0.0,
            evals,
        }
    }

    #[test]
    fn selection_picks_the_lowest_validation_loss() {
        let epochs = vec![epoch(0, Some(0.1)), epoch(1, Some(3.0)), epoch(2, Some(2.0)), epoch(3, Some(2.5))];
        assert_eq!(RunResult::select(&epochs, Selection::Last), 3);
        assert_eq!(RunResult::select(&epochs, Selection::BestValidation), 2, "epoch 0 (before training) never");
        let none = vec![epoch(1, None), epoch(2, None)];
        assert_eq!(RunResult::select(&none, Selection::BestValidation), 1, "no validation set: the last");
        assert_eq!(RunResult::select(&[], Selection::Last), 0);
    }
}
