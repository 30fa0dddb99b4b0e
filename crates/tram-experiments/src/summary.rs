//! What `summary.json` holds: a finished run's outcome, the one result type every table, plot, statistic and
//! the long CSV read.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tram_core::{MethodConfig, StepReport};
use tram_task::{Diverged, Domain, Evaluation, Metric, RunResult, RunSettings, Split};

/// A finished run's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub run_id: String,
    /// The method entry's identity (`sam`, `sam-rho0.1`): runs of one entry differ by seed only.
    pub method_id: String,
    pub method: MethodConfig,
    pub seed: u64,
    pub config_hash: String,
    pub device: String,
    pub metric: Metric,
    pub steps: u64,
    pub skipped_steps: u64,
    /// The epoch whose evaluations are reported (the last, or the best validation loss).
    pub selected_epoch: usize,
    /// Mean pass-1 loss of the last epoch.
    pub final_train_loss: f64,
    /// The first steps' reports: a fingerprint of the start of training that rounding barely touches.
    pub early_steps: Vec<StepReport>,
    pub last_step_loss: f64,
    /// The reported epoch's evaluations (per-example values in `examples.csv`).
    pub evaluations: Vec<Evaluation>,
    pub forward_passes_per_step: f64,
    pub backward_passes_per_step: f64,
    pub param_bytes: usize,
    pub extra_memory_bytes: usize,
    /// The most bytes the device's tensors held at once during the run (CUDA's `max_memory_allocated`, or the
    /// CPU's counted tensors); absent where not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_tensor_bytes: Option<u64>,
    /// The process's peak resident memory during the run (Linux's VmHWM); absent where not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_resident_bytes: Option<u64>,
    /// σ of the method's input noise as applied (a `sigma_relative` resolved against the model's scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_sigma: Option<f64>,
    pub train_seconds: f64,
    /// Set when the run stopped because its loss or an evaluation stopped being finite: it reports no
    /// evaluation, and the tables show it as diverged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged: Option<Diverged>,
}

/// How many first steps the summary keeps.
pub const EARLY_STEPS: usize = 3;

impl Summary {
    /// The summary of a run's result: the reported epoch's evaluations without their per-example values (none for
    /// a diverged run), the passes per step averaged over the steps not skipped. `metric` is the task's.
    pub fn from_result(
        run_id: &str,
        method_id: &str,
        run: &RunSettings,
        config_hash: String,
        metric: Metric,
        result: &RunResult,
    ) -> Result<Summary> {
        let (selected_epoch, evaluations) = match &result.diverged {
            Some(_) => (0, vec![]),
            None => {
                let selected = result.selected_epoch().context("the run evaluated no epoch")?;
                if selected.evals.is_empty() {
                    bail!("run {run_id}: the task returned no evaluation");
                }
                (
                    selected.epoch,
                    selected.evals.iter().map(|e| Evaluation { per_example: vec![], ..e.clone() }).collect(),
                )
            }
        };
        let done: Vec<&StepReport> = result.steps.iter().filter(|s| !s.skipped).collect();
        let per = |f: &dyn Fn(&StepReport) -> f64| {
            if done.is_empty() {
                f64::NAN
            } else {
                done.iter().map(|s| f(s)).sum::<f64>() / done.len() as f64
            }
        };
        Ok(Summary {
            run_id: run_id.to_string(),
            method_id: method_id.to_string(),
            method: run.optimizer.method.clone(),
            seed: run.seed(),
            config_hash,
            device: result.device.clone(),
            metric,
            steps: result.steps.len() as u64,
            skipped_steps: (result.steps.len() - done.len()) as u64,
            selected_epoch,
            final_train_loss: result.epochs.last().map_or(f64::NAN, |e| e.train_loss),
            early_steps: result.steps.iter().take(EARLY_STEPS).cloned().collect(),
            last_step_loss: result.steps.last().map_or(f64::NAN, |s| s.loss),
            evaluations,
            forward_passes_per_step: per(&|s| s.forward_passes as f64 / s.micro_batches as f64),
            backward_passes_per_step: per(&|s| s.backward_passes as f64 / s.micro_batches as f64),
            param_bytes: result.param_bytes,
            extra_memory_bytes: result.extra_memory_bytes,
            peak_tensor_bytes: result.peak_tensor_bytes,
            peak_resident_bytes: result.peak_resident_bytes,
            noise_sigma: result.noise_sigma,
            train_seconds: result.epochs.iter().map(|e| e.train_seconds).sum(),
            diverged: result.diverged.clone(),
        })
    }

    /// The in-domain test evaluation.
    pub fn in_domain(&self) -> Option<&Evaluation> {
        self.evaluations.iter().find(|e| e.domain == Domain::InDomain && e.split == Split::Test)
    }

    /// The test evaluation of the set `set`.
    pub fn test(&self, set: &str) -> Option<&Evaluation> {
        self.evaluations.iter().find(|e| e.set == set && e.split == Split::Test)
    }

    /// The zero-shot test evaluations, in the task's order.
    pub fn zero_shot(&self) -> impl Iterator<Item = &Evaluation> {
        self.evaluations.iter().filter(|e| e.domain == Domain::ZeroShot && e.split == Split::Test)
    }

    /// The macro-average over the zero-shot sets (the paper's "ZS Avg."); NaN without any.
    pub fn zero_shot_mean(&self) -> f64 {
        let v: Vec<f64> = self.zero_shot().map(|e| e.value).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }
}

/// The runs of one method entry among `runs`, in their order (summaries, or Table 6's analysed runs).
pub fn runs_of<'a, R: OfMethod>(runs: &'a [R], method_id: &str) -> Vec<&'a R> {
    runs.iter().filter(|r| r.method_id() == method_id).collect()
}

/// A run's record that names its method entry.
pub trait OfMethod {
    fn method_id(&self) -> &str;
}

impl OfMethod for Summary {
    fn method_id(&self) -> &str {
        &self.method_id
    }
}

#[cfg(test)]
impl Summary {
    /// A run of `method` (a method name: `base`, `tram-prev`) with one step report and the given evaluations;
    /// every other number is 1 (or the step's 2 passes).
    pub(crate) fn fixture(method: &str, seed: u64, metric: Metric, evaluations: Vec<Evaluation>) -> Summary {
        let report = StepReport {
            step: 0,
            lr: 0.1,
            loss: 2.0,
            perturbed_loss: Some(2.1),
            divergence: None,
            radius: Some(0.05),
            eps_norm: Some(0.05),
            grad_norm: 1.0,
            descent_grad_norm: 1.1,
            forward_passes: 2,
            backward_passes: 2,
            micro_batches: 1,
            skipped: false,
            loss_scale: None,
        };
        Summary {
            run_id: format!("{method}-s{seed}"),
            method_id: method.into(),
            method: toml::from_str(&format!("name = \"{method}\"")).expect("a method name"),
            seed,
            config_hash: "h".into(),
            device: "Cpu".into(),
            metric,
            steps: 1,
            skipped_steps: 0,
            selected_epoch: 1,
            final_train_loss: 1.0,
            early_steps: vec![report],
            last_step_loss: 1.0,
            evaluations,
            forward_passes_per_step: 2.0,
            backward_passes_per_step: 2.0,
            param_bytes: 4,
            extra_memory_bytes: 4,
            peak_tensor_bytes: None,
            peak_resident_bytes: None,
            noise_sigma: None,
            train_seconds: 1.0,
            diverged: None,
        }
    }

    /// A test evaluation of `set` with 10 examples and loss 1.
    pub(crate) fn eval(set: &str, domain: Domain, metric: Metric, value: f64) -> Evaluation {
        Evaluation {
            set: set.into(),
            domain,
            split: Split::Test,
            metric,
            value,
            loss: 1.0,
            examples: 10,
            per_example: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_back_every_value_it_wrote_nan_and_infinities_included() {
        let mut s = Summary::fixture("sam", 0, Metric::Perplexity, vec![]);
        s.last_step_loss = f64::NAN;
        s.final_train_loss = f64::INFINITY;
        s.early_steps[0].perturbed_loss = Some(f64::NEG_INFINITY);
        s.diverged = Some(Diverged { steps: 1, what: "the training loss of step 0 is NaN".into() });
        let path = std::env::temp_dir().join(format!("tram-summary-{}.json", std::process::id()));
        crate::json::write(&path, &s).unwrap();
        let back: Summary = crate::json::read(&path).unwrap();
        assert!(back.last_step_loss.is_nan() && back.final_train_loss == f64::INFINITY);
        assert_eq!(back.early_steps, s.early_steps);
        assert_eq!(back.diverged, s.diverged);
        assert_eq!(crate::json::to_string(&back).unwrap(), std::fs::read_to_string(&path).unwrap());
        std::fs::remove_file(&path).ok();
    }
}
