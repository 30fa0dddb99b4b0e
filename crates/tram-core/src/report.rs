//! What a step reports: its values ([`StepReport`]) and where its time went ([`StepTiming`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step index (0-based) this report is for.
    pub step: u64,
    pub lr: f64,
    /// Task loss of pass 1 (the clean batch at θ; x + z for TRAM-Fisher), without any regulariser.
    pub loss: f64,
    /// Task loss of pass 2 at θ + ε, for ascent methods.
    pub perturbed_loss: Option<f64>,
    /// The divergence d (pass 1) for TRAM and the regularisers.
    pub divergence: Option<f64>,
    /// The ascent radius used (ρ, γ, or TRAM's d after any cap).
    pub radius: Option<f64>,
    /// ‖ε‖₂ (over all micro-batch groups, the mean).
    pub eps_norm: Option<f64>,
    /// ‖g‖₂ of the pass-1 gradient.
    pub grad_norm: f64,
    /// ‖∇‖₂ of the descent gradient, before clipping.
    pub descent_grad_norm: f64,
    pub forward_passes: u32,
    pub backward_passes: u32,
    pub micro_batches: u32,
    /// The step produced a non-finite value and was skipped (no parameter or state changed).
    pub skipped: bool,
    /// With `precision = "fp16"`: the loss scale the step's backward passes used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
}

/// Where the time of the last step went (wall clock; on CUDA, kernels run asynchronously, so synchronise
/// before reading it if you need exact figures).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTiming {
    pub total: Duration,
    /// Inside the model's forward, loss and backward calls.
    pub model: Duration,
}

impl StepTiming {
    /// The optimizer's own work (ascent, copies, restore, descent, target update) as a share of the step.
    pub fn optimizer_share(&self) -> f64 {
        let total = self.total.as_secs_f64();
        if total > 0.0 {
            (total - self.model.as_secs_f64()).max(0.0) / total
        } else {
            0.0
        }
    }
}
