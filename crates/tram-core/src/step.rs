//! The step driver: one training step of any method, Algorithm 1 of the paper (arXiv 2310.03646 v2, App. B.6)
//! generalised to the whole family.
//!
//! 1. Pass 1: forward the clean batch in train mode, loss (+ λ·d for regularisers), backward: g at θ.
//! 2. TRAM: the target's output without gradient and d(target ‖ current) (Eq. 4 or Eq. 5).
//! 3. Ascent: ε from the rule (Eq. 2, 7 or 8); θ ← θ + ε.
//! 4. Pass 2 at θ + ε: forward, backward (Eq. 6). Buffers (batch norm) end the step as pass 1 left them.
//! 5. Restore θ by copy (bit-exact), clip (optional), then the base optimizer steps with the pass-2 gradient.
//! 6. Update the target (θ_{t−1} ← the θ this step started from; EMA ← decay·EMA + (1 − decay)·θ).
//!
//! With m-sharpness, steps 1–4 and the restore run once per micro-batch, and their pass-2 gradients are summed
//! for one base step.
//! Randomness is seeded per step and micro-batch (see [`forward_seed`]), so dropout masks agree between the
//! passes of a step, resumed runs repeat bit for bit, and a reference implementation can reproduce the noise.

use std::ops::Range;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::ascent::{global_norm, Ascent};
use crate::base::{tensor_bytes, BaseConfig, BaseOptimizer};
use crate::error::{config_err, Error, Result};
use crate::method::{Method, MethodConfig, Role, Target, TrustRegion};
use crate::model::{copy_into, snapshot, Model, Variables};
use crate::noise::{InputNoise, NoiseSpec};
use crate::schedule::LrSchedule;

/// Consecutive non-finite steps tolerated before [`Error::NonFinite`], unless configured.
pub const DEFAULT_MAX_CONSECUTIVE_SKIPS: u32 = 5;

/// Everything that configures training with one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    pub method: MethodConfig,
    pub base: BaseConfig,
    pub schedule: LrSchedule,
    /// Clip the descent gradient to this global L2 norm (before the base step only; the ascent is normalised).
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// m-sharpness: one ascent per micro-batch (of size m) instead of one for the whole step.
    #[serde(default)]
    pub m_sharpness: bool,
    /// Fail after this many consecutive steps with a non-finite loss or gradient (each one is skipped).
    #[serde(default = "default_max_consecutive_skips")]
    pub max_consecutive_skips: u32,
    /// Seed of the per-step randomness (dropout, input noise).
    #[serde(default)]
    pub seed: u64,
}

fn default_max_consecutive_skips() -> u32 {
    DEFAULT_MAX_CONSECUTIVE_SKIPS
}

impl OptimizerConfig {
    pub fn new(method: MethodConfig, base: BaseConfig, schedule: LrSchedule) -> Self {
        Self {
            method,
            base,
            schedule,
            clip_grad_norm: None,
            m_sharpness: false,
            max_consecutive_skips: DEFAULT_MAX_CONSECUTIVE_SKIPS,
            seed: 0,
        }
    }

    /// Refuses what [`StepDriver::new`] would refuse without needing the model (the method, the base optimizer,
    /// the schedule, clipping, the skip limit), so that a runner can check a whole sweep before its first step.
    pub fn validate(&self) -> Result<()> {
        self.method.build()?;
        self.base.validate()?;
        self.schedule.validate()?;
        if let Some(c) = self.clip_grad_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(config_err(format!("clip_grad_norm must be > 0, got {c}")));
            }
        }
        if self.max_consecutive_skips == 0 {
            return Err(config_err("max_consecutive_skips must be at least 1"));
        }
        Ok(())
    }
}

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
}

/// The seed of the forward pass of micro-batch `micro` at `step` (stream 0) and of its input noise (stream 1):
/// `(seed mod 10⁶)·10⁹ + step·10³ + 2·micro + stream`.
pub fn forward_seed(seed: u64, step: u64, micro: usize, stream: u64) -> i64 {
    ((seed % 1_000_000) * 1_000_000_000 + step * 1_000 + 2 * micro as u64 + stream) as i64
}

/// Trains a model with one method. Build it once per run; call [`StepDriver::step`] per batch.
#[derive(Debug)]
pub struct StepDriver {
    config: OptimizerConfig,
    method: Method,
    vars: Variables,
    base: BaseOptimizer,
    /// θ at the start of the current step (allocated once).
    saved: Vec<Tensor>,
    /// θ_{t−1}, θ_0 or the EMA, when the target holds parameters.
    target: Option<Vec<Tensor>>,
    progress: Progress,
    /// Passes and model time of the current step so far.
    cost: StepCost,
    last_timing: StepTiming,
}

/// Where a run stands: what a checkpoint stores besides the tensors and the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Progress {
    /// Steps taken so far, skipped ones included: the schedule position and the seeds' step.
    pub step: u64,
    pub consecutive_skips: u32,
    pub skipped_total: u64,
}

/// The driver's state as a checkpoint reads it.
pub(crate) struct DriverState<'a> {
    pub vars: &'a Variables,
    pub base: &'a BaseOptimizer,
    pub target: Option<&'a [Tensor]>,
    pub progress: Progress,
}

/// The driver's state as a resume writes it.
pub(crate) struct DriverStateMut<'a> {
    pub vars: &'a mut Variables,
    pub base: &'a mut BaseOptimizer,
    pub target: Option<&'a mut [Tensor]>,
    pub progress: &'a mut Progress,
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

/// Passes run and time spent inside the model during the current step.
#[derive(Debug, Clone, Copy, Default)]
struct StepCost {
    forward_passes: u32,
    backward_passes: u32,
    model_time: Duration,
}

/// Micro-batches whose gradients meet in one ascent: all of a step's micro-batches, or (m-sharpness) one
/// each. Every mean over them is weighted by the micro-batches' sizes.
#[derive(Debug, Clone)]
struct Group<'s> {
    micros: Range<usize>,
    /// The sizes of all the step's micro-batches (indexed by micro-batch).
    sizes: &'s [f64],
    /// The group's number of examples.
    total: f64,
}

impl<'s> Group<'s> {
    fn new(micros: Range<usize>, sizes: &'s [f64]) -> Self {
        let total = sizes[micros.clone()].iter().sum();
        Self { micros, sizes, total }
    }

    /// The groups of a step: one per micro-batch with m-sharpness, otherwise one for all.
    fn split(sizes: &'s [f64], per_micro_batch: bool) -> Vec<Self> {
        if per_micro_batch {
            (0..sizes.len()).map(|i| Group::new(i..i + 1, sizes)).collect()
        } else {
            vec![Group::new(0..sizes.len(), sizes)]
        }
    }

    fn micros(&self) -> Range<usize> {
        self.micros.clone()
    }

    /// Micro-batch `i`'s weight in the group's mean.
    fn weight(&self, i: usize) -> f64 {
        self.sizes[i] / self.total
    }

    /// Micro-batch `i`'s term of the group's mean of `value`.
    fn term(&self, value: f64, i: usize) -> f64 {
        value * self.sizes[i] / self.total
    }
}

/// The report's values, summed as the groups of a step run.
struct Sums<'s> {
    /// The whole step, for the means over all micro-batches.
    step: Group<'s>,
    /// Number of groups, the divisor of the per-group means.
    groups: f64,
    loss: f64,
    perturbed_loss: Option<f64>,
    divergence: Option<f64>,
    radius: Option<f64>,
    eps_norm: Option<f64>,
    grad_norm: f64,
    /// With several groups, their pass-2 gradients summed (the gradients are cleared after each group).
    grads: Option<Vec<Option<Tensor>>>,
}

/// ‖g‖₂, r and ‖ε‖₂ of one ascent.
struct AscentNorms {
    grad: f64,
    radius: f64,
    eps: f64,
}

impl<'s> Sums<'s> {
    fn new(step: Group<'s>, groups: usize) -> Self {
        Self {
            step,
            groups: groups as f64,
            loss: 0.0,
            perturbed_loss: None,
            divergence: None,
            radius: None,
            eps_norm: None,
            grad_norm: 0.0,
            grads: None,
        }
    }

    fn add_loss(&mut self, loss: f64, i: usize) {
        self.loss += self.step.term(loss, i);
    }

    fn add_perturbed_loss(&mut self, loss: f64, i: usize) {
        add(&mut self.perturbed_loss, self.step.term(loss, i));
    }

    /// A group's d and ‖g‖ (d's mean over groups is taken term by term, ‖g‖'s in the report).
    fn add_group(&mut self, divergence: Option<f64>, grad_norm: f64) {
        if let Some(d) = divergence {
            add(&mut self.divergence, d / self.groups);
        }
        self.grad_norm += grad_norm;
    }

    /// A group's ascent radius and ‖ε‖.
    fn add_ascent(&mut self, norms: &AscentNorms) {
        add(&mut self.radius, norms.radius / self.groups);
        add(&mut self.eps_norm, norms.eps / self.groups);
    }

    /// Adds a group's gradients to the sum over groups.
    fn accumulate(&mut self, grads: Vec<Option<Tensor>>) {
        let Some(sum) = &mut self.grads else {
            self.grads = Some(grads.iter().map(|g| g.as_ref().map(|g| g.detach().copy())).collect());
            return;
        };
        tch::no_grad(|| {
            for (s, g) in sum.iter_mut().zip(&grads) {
                match (s.as_mut(), g) {
                    (Some(s), Some(g)) => {
                        let _ = s.g_add_(g);
                    }
                    (None, Some(g)) => *s = Some(g.detach().copy()),
                    _ => {}
                }
            }
        })
    }

    fn report(&self, step: u64, lr: f64, descent_grad_norm: f64, cost: StepCost) -> StepReport {
        let values = [self.loss, self.perturbed_loss.unwrap_or(0.0), self.divergence.unwrap_or(0.0), descent_grad_norm];
        StepReport {
            step,
            lr,
            loss: self.loss,
            perturbed_loss: self.perturbed_loss,
            divergence: self.divergence,
            radius: self.radius,
            eps_norm: self.eps_norm,
            grad_norm: self.grad_norm / self.groups,
            descent_grad_norm,
            forward_passes: cost.forward_passes,
            backward_passes: cost.backward_passes,
            micro_batches: self.step.micros.len() as u32,
            skipped: !values.iter().all(|v| v.is_finite()),
        }
    }
}

/// `slot += value`, starting from 0.
fn add(slot: &mut Option<f64>, value: f64) {
    *slot.get_or_insert(0.0) += value;
}

/// What pass 1 leaves for the ascent.
struct PassOne {
    /// The logits of each micro-batch of the group, detached.
    logits: Vec<Tensor>,
    /// The regulariser's d, the group's mean.
    divergence: Option<f64>,
}

/// What one forward-backward of a micro-batch gives.
struct Pass {
    loss: f64,
    logits: Tensor,
    divergence: Option<f64>,
}

impl StepDriver {
    pub fn new<M: Model>(model: &M, config: OptimizerConfig) -> Result<Self> {
        config.validate()?;
        let method = config.method.build()?;
        let vars = Variables::of(model.var_store())?;
        let base = BaseOptimizer::new(config.base.clone(), vars.params.len())?;
        // θ is saved for the restore after an ascent, and to become θ_{t−1} after the step.
        let needs_saved =
            method.ascent.is_some() || method.trust_region.is_some_and(|t| t.target == Target::PreviousStep);
        let saved = if needs_saved { snapshot(&vars.params) } else { Vec::new() };
        let target = match method.trust_region {
            Some(TrustRegion { target, .. }) if target.holds_parameters() => Some(snapshot(&vars.params)),
            _ => None,
        };
        Ok(Self {
            config,
            method,
            vars,
            base,
            saved,
            target,
            progress: Progress::default(),
            cost: StepCost::default(),
            last_timing: StepTiming::default(),
        })
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Steps taken so far (including skipped ones); the schedule position.
    pub fn steps_done(&self) -> u64 {
        self.progress.step
    }

    pub fn skipped_total(&self) -> u64 {
        self.progress.skipped_total
    }

    /// Bytes the method holds beyond the model: saved θ, target copies, base-optimizer state.
    pub fn extra_memory_bytes(&self) -> usize {
        let copies: usize = self.saved.iter().chain(self.target.iter().flatten()).map(tensor_bytes).sum();
        copies + self.base.state_bytes()
    }

    /// Bytes of the model's trainable parameters.
    pub fn param_bytes(&self) -> usize {
        self.vars.param_bytes()
    }

    /// Timing of the last step.
    pub fn last_timing(&self) -> StepTiming {
        self.last_timing
    }

    /// One training step over `micro_batches` (gradient accumulation when there are several).
    pub fn step<M: Model>(&mut self, model: &M, micro_batches: &[M::Batch]) -> Result<StepReport> {
        let start = Instant::now();
        self.cost = StepCost::default();
        let out = self.step_inner(model, micro_batches);
        self.last_timing = StepTiming { total: start.elapsed(), model: self.cost.model_time };
        out
    }

    fn step_inner<M: Model>(&mut self, model: &M, micro_batches: &[M::Batch]) -> Result<StepReport> {
        let sizes = sizes_of(model, micro_batches)?;
        let groups = Group::split(&sizes, self.config.m_sharpness && self.method.ascent.is_some());
        let mut sums = Sums::new(Group::new(0..sizes.len(), &sizes), groups.len());
        // The parameter target's output per micro-batch, computed on first use (the target is fixed within a step).
        let mut target_outputs: Vec<Option<Tensor>> = micro_batches.iter().map(|_| None).collect();
        let lr = self.config.schedule.lr(self.progress.step);
        let start_buffers = self.begin();
        for group in &groups {
            let pass1 = self.pass_one(model, micro_batches, group, &mut target_outputs, &mut sums); // 1.
            let Some(rule) = self.method.ascent else {
                sums.add_group(pass1.divergence, grad_norm(&self.grads()));
                continue;
            };
            let after_pass1 = snapshot(&self.vars.buffers);
            let radius = self.radius(model, micro_batches, group, &pass1.logits, &after_pass1); // 2.
            let divergence = radius.as_ref().map(|d| d.double_value(&[])).or(pass1.divergence);
            let norms = self.ascend(rule, radius.as_ref())?; // 3.
            self.pass_two(model, micro_batches, group, &mut target_outputs, &mut sums); // 4.
            self.restore(&after_pass1); // 5. (restore)
            sums.add_group(divergence, norms.grad);
            sums.add_ascent(&norms);
            if groups.len() > 1 {
                sums.accumulate(self.grads());
                self.zero_grad();
            }
        }
        let grads = sums.grads.take().unwrap_or_else(|| self.grads());
        let report = sums.report(self.progress.step, lr, grad_norm(&grads), self.cost);
        if report.skipped {
            return self.skip(report, &start_buffers);
        }
        self.progress.consecutive_skips = 0;
        self.descend(grads, report.descent_grad_norm, lr); // 5. (clip, base step)
        self.update_target(); // 6.
        self.progress.step += 1;
        Ok(report)
    }

    /// Saves θ (for the restore and θ_{t−1}) and clears the gradients; returns the buffers, for a skipped step.
    fn begin(&mut self) -> Vec<Tensor> {
        let buffers = snapshot(&self.vars.buffers);
        if !self.saved.is_empty() {
            copy_into(&mut self.saved, &self.vars.params);
        }
        self.zero_grad();
        buffers
    }

    /// Pass 1 over a group at θ (on x + z for TRAM-Fisher): each micro-batch's gradient weighted by its share of
    /// the group, whose summed gradient is the ascent's g.
    fn pass_one<M: Model>(
        &mut self,
        model: &M,
        batches: &[M::Batch],
        group: &Group,
        target_outputs: &mut [Option<Tensor>],
        sums: &mut Sums,
    ) -> PassOne {
        let mut out = PassOne { logits: Vec::with_capacity(group.micros.len()), divergence: None };
        for i in group.micros() {
            let noise = self.method.ascent_noise.map(|spec| self.noise(spec, i));
            let pass = self.pass(model, &batches[i], i, noise.as_ref(), group.weight(i), &mut target_outputs[i]);
            sums.add_loss(pass.loss, i);
            if let Some(d) = pass.divergence {
                add(&mut out.divergence, group.term(d, i));
            }
            out.logits.push(pass.logits);
        }
        out
    }

    /// TRAM's radius (Eq. 7's d): d(target ‖ θ) over the group, size-weighted, from the target's outputs and
    /// pass 1's logits. `None` unless the method's divergence is a radius. The buffers end as pass 1 left them.
    fn radius<M: Model>(
        &mut self,
        model: &M,
        batches: &[M::Batch],
        group: &Group,
        logits: &[Tensor],
        after_pass1: &[Tensor],
    ) -> Option<Tensor> {
        let tr = match self.method.trust_region {
            Some(tr @ TrustRegion { role: Role::Radius, .. }) => tr,
            _ => return None,
        };
        let targets: Vec<Tensor> = match tr.target {
            Target::InputNoise(spec) => group
                .micros()
                .map(|i| {
                    let noise = self.noise(spec, i);
                    tch::no_grad(|| self.forward(model, &batches[i], i, Some(&noise)))
                })
                .collect(),
            _ => self.target_forward(model, group.micros().map(|i| (i, &batches[i]))),
        };
        let mut d: Option<Tensor> = None;
        for (k, i) in group.micros().enumerate() {
            let mask = model.divergence_mask(&batches[i]);
            let di = tr.divergence.compute(&targets[k], &logits[k], mask.as_ref()) * group.weight(i);
            d = Some(match d {
                None => di,
                Some(d) => d + di,
            });
        }
        copy_into(&mut self.vars.buffers, after_pass1);
        Some(d.expect("a group has at least one micro-batch").detach())
    }

    /// θ ← θ + ε, with ε from the rule and pass 1's gradient; then clears the gradients for pass 2.
    fn ascend(&mut self, rule: Ascent, radius: Option<&Tensor>) -> Result<AscentNorms> {
        let grads = self.grads();
        let pert = rule.perturbation(&self.vars.params, &grads, radius);
        let norms = Tensor::stack(&[&pert.grad_norm, &pert.radius, &pert.eps_norm], 0).to_kind(Kind::Double);
        let norms = Vec::<f64>::try_from(norms)?;
        pert.apply(&mut self.vars.params);
        // The rule's direction may share storage with the gradients: drop it before they are cleared.
        drop(pert);
        self.zero_grad();
        Ok(AscentNorms { grad: norms[0], radius: norms[1], eps: norms[2] })
    }

    /// Pass 2 over a group at θ + ε, on clean inputs: each micro-batch's gradient weighted by its share of the
    /// step, so that the gradients sum to the descent gradient.
    fn pass_two<M: Model>(
        &mut self,
        model: &M,
        batches: &[M::Batch],
        group: &Group,
        target_outputs: &mut [Option<Tensor>],
        sums: &mut Sums,
    ) {
        for i in group.micros() {
            let pass = self.pass(model, &batches[i], i, None, sums.step.weight(i), &mut target_outputs[i]);
            sums.add_perturbed_loss(pass.loss, i);
        }
    }

    /// θ ← the θ of the step's start, bit for bit; the buffers ← as pass 1 left them.
    fn restore(&mut self, after_pass1: &[Tensor]) {
        copy_into(&mut self.vars.params, &self.saved);
        copy_into(&mut self.vars.buffers, after_pass1);
    }

    /// Clips the descent gradient (optional), then the base optimizer steps with the scheduled rate.
    fn descend(&mut self, mut grads: Vec<Option<Tensor>>, norm: f64, lr: f64) {
        if let Some(max) = self.config.clip_grad_norm {
            let coef = max / (norm + 1e-6);
            if coef < 1.0 {
                tch::no_grad(|| {
                    for g in grads.iter_mut().flatten() {
                        *g = &*g * coef;
                    }
                });
            }
        }
        self.base.step(&mut self.vars.params, &grads, lr);
        drop(grads);
        self.zero_grad();
    }

    /// A non-finite step changes nothing: θ and the buffers go back to the step's start. Too many in a row fail.
    fn skip(&mut self, report: StepReport, start_buffers: &[Tensor]) -> Result<StepReport> {
        if !self.saved.is_empty() {
            copy_into(&mut self.vars.params, &self.saved);
        }
        copy_into(&mut self.vars.buffers, start_buffers);
        self.zero_grad();
        let p = &mut self.progress;
        p.step += 1;
        p.skipped_total += 1;
        p.consecutive_skips += 1;
        if p.consecutive_skips >= self.config.max_consecutive_skips {
            return Err(Error::NonFinite { count: p.consecutive_skips, step: p.step - 1 });
        }
        Ok(report)
    }

    /// One forward (plus the regulariser's forwards) and one backward of `batch`, gradient weighted by `weight`.
    fn pass<M: Model>(
        &mut self,
        model: &M,
        batch: &M::Batch,
        micro: usize,
        noise: Option<&InputNoise>,
        weight: f64,
        target_output: &mut Option<Tensor>,
    ) -> Pass {
        let regulariser = match self.method.trust_region {
            Some(tr @ TrustRegion { role: Role::Regulariser { lambda }, .. }) => Some((tr, lambda)),
            _ => None,
        };
        // A parameter target's output comes first: swapping parameters after the forward would invalidate
        // the autograd graph.
        if let Some((tr, _)) = regulariser {
            if tr.target.holds_parameters() && target_output.is_none() {
                *target_output = self.target_forward(model, [(micro, batch)]).pop();
            }
        }
        let logits = self.forward(model, batch, micro, noise);
        let task = self.timed(|| model.loss(&logits, batch));
        let mut restore_buffers = None;
        let (objective, divergence) = match regulariser {
            None => (task.shallow_clone(), None),
            Some((tr, lambda)) => {
                let mask = model.divergence_mask(batch);
                let d = match tr.target {
                    Target::InputNoise(spec) => {
                        // R3F: the noised forward keeps its gradient (Aghajanyan et al.); its buffer updates are
                        // undone after the backward (the graph holds the buffers, so not before).
                        restore_buffers = Some(snapshot(&self.vars.buffers));
                        let noise = self.noise(spec, micro);
                        let noised = self.forward(model, batch, micro, Some(&noise));
                        tr.divergence.compute(&noised, &logits, mask.as_ref())
                    }
                    _ => tr.divergence.compute(target_output.as_ref().expect("target output"), &logits, mask.as_ref()),
                };
                let value = d.double_value(&[]);
                (&task + d * lambda, Some(value))
            }
        };
        self.timed(|| (objective * weight).backward());
        self.cost.backward_passes += 1;
        if let Some(b) = restore_buffers {
            copy_into(&mut self.vars.buffers, &b);
        }
        Pass { loss: task.double_value(&[]), logits: logits.detach(), divergence }
    }

    /// Outputs of the parameter target (θ_{t−1}, θ_0 or the EMA) on `(micro-batch index, batch)` pairs, without
    /// gradient, in train mode with the same seeds as pass 1. θ is swapped out and back; buffers are left unchanged.
    fn target_forward<'b, M: Model>(
        &mut self,
        model: &M,
        batches: impl IntoIterator<Item = (usize, &'b M::Batch)>,
    ) -> Vec<Tensor>
    where
        M::Batch: 'b,
    {
        // The swap re-points each parameter at the target's storage and back (as `p.data = t` in PyTorch):
        // no copy, and the parameters' own storage is never written.
        let target = self.target.as_ref().expect("parameter target");
        let buffers = snapshot(&self.vars.buffers);
        let own: Vec<Tensor> = self.vars.params.iter().map(Tensor::detach).collect();
        for (p, t) in self.vars.params.iter_mut().zip(target) {
            p.set_data(t);
        }
        let outs = batches.into_iter().map(|(i, b)| tch::no_grad(|| self.forward(model, b, i, None))).collect();
        for (p, o) in self.vars.params.iter_mut().zip(&own) {
            p.set_data(o);
        }
        copy_into(&mut self.vars.buffers, &buffers);
        outs
    }

    /// A train-mode forward of micro-batch `micro`, seeded with its stream 0 (so every pass of the step draws the
    /// same dropout masks), counted and timed.
    fn forward<M: Model>(&mut self, model: &M, batch: &M::Batch, micro: usize, noise: Option<&InputNoise>) -> Tensor {
        tch::manual_seed(forward_seed(self.config.seed, self.progress.step, micro, 0));
        self.cost.forward_passes += 1;
        self.timed(|| model.forward(batch, true, noise))
    }

    fn timed<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.cost.model_time += start.elapsed();
        out
    }

    fn noise(&self, spec: NoiseSpec, micro: usize) -> InputNoise {
        InputNoise {
            spec,
            seed: forward_seed(self.config.seed, self.progress.step, micro, 1),
            resume_seed: forward_seed(self.config.seed, self.progress.step, micro, 0),
        }
    }

    fn grads(&self) -> Vec<Option<Tensor>> {
        self.vars
            .params
            .iter()
            .map(|p| {
                let g = p.grad();
                g.defined().then_some(g)
            })
            .collect()
    }

    fn zero_grad(&mut self) {
        for p in self.vars.params.iter_mut() {
            p.zero_grad();
        }
    }

    fn update_target(&mut self) {
        let Some(tr) = self.method.trust_region else { return };
        let Some(target) = self.target.as_mut() else { return };
        match tr.target {
            Target::PreviousStep => std::mem::swap(target, &mut self.saved),
            Target::Pretrained | Target::InputNoise(_) => {}
            Target::Ema { decay } => tch::no_grad(|| {
                for (e, p) in target.iter_mut().zip(&self.vars.params) {
                    let _ = e.g_mul_scalar_(decay);
                    let _ = e.g_add_(&(p * (1.0 - decay)));
                }
            }),
        }
    }

    pub(crate) fn state(&self) -> DriverState<'_> {
        DriverState { vars: &self.vars, base: &self.base, target: self.target.as_deref(), progress: self.progress }
    }

    pub(crate) fn state_mut(&mut self) -> DriverStateMut<'_> {
        DriverStateMut {
            vars: &mut self.vars,
            base: &mut self.base,
            target: self.target.as_deref_mut(),
            progress: &mut self.progress,
        }
    }
}

/// The micro-batches' sizes, the weights of every mean over them.
fn sizes_of<M: Model>(model: &M, micro_batches: &[M::Batch]) -> Result<Vec<f64>> {
    if micro_batches.is_empty() {
        return Err(config_err("a step needs at least one micro-batch"));
    }
    let sizes: Vec<f64> = micro_batches.iter().map(|b| model.batch_size(b) as f64).collect();
    if sizes.iter().sum::<f64>() <= 0.0 {
        return Err(config_err("the micro-batches of a step hold no examples"));
    }
    Ok(sizes)
}

/// ‖g‖₂ over the parameters that have a gradient, in float64, read to the host.
fn grad_norm(grads: &[Option<Tensor>]) -> f64 {
    let Some(first) = grads.iter().flatten().next() else { return 0.0 };
    let like = Tensor::zeros([], (Kind::Double, first.device()));
    tch::no_grad(|| global_norm(grads.iter().flatten(), &like).double_value(&[]))
}
