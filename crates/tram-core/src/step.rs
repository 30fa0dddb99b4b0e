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

mod accumulate;

use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use self::accumulate::{add, AscentNorms, Group, Sums};
use crate::ascent::{global_norm, Ascent};
use crate::base::{tensor_bytes, BaseOptimizer};
pub use crate::config::{OptimizerConfig, DEFAULT_MAX_CONSECUTIVE_SKIPS};
use crate::error::{config_err, Error, Result};
use crate::method::{Method, Role, Target, TargetMode, TrustRegion};
use crate::model::{copy_into, snapshot, Model, Variables};
use crate::noise::{InputNoise, NoiseSpec};
use crate::precision::LossScale;
pub use crate::report::{StepReport, StepTiming};

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
    /// Where the parameters live: the device of the passes' autocast regions.
    device: Device,
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
    /// fp16's dynamic loss scale (none in the other precisions).
    pub loss_scale: Option<LossScale>,
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

/// Passes run and time spent inside the model during the current step.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StepCost {
    forward_passes: u32,
    backward_passes: u32,
    model_time: Duration,
}

/// What pass 1 leaves for the ascent.
struct PassOne {
    /// The logits of each micro-batch of the group, detached; kept only where TRAM's radius needs them (else
    /// each would stay alive through the group's later passes).
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
        let method = config.method.build()?.with_noise_scale(model.noise_scale())?;
        let vars = Variables::of(model.var_store())?;
        let device = vars.params[0].device();
        config.precision.prepare(device)?;
        let base = BaseOptimizer::new(config.base.clone(), &vars.params)?;
        let saved = if method.saves_parameters() { snapshot(&vars.params) } else { Vec::new() };
        let target = method.holds_target_copy().then(|| snapshot(&vars.params));
        let progress = Progress { loss_scale: LossScale::for_precision(config.precision), ..Progress::default() };
        Ok(Self {
            config,
            method,
            vars,
            base,
            saved,
            target,
            progress,
            device,
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

    /// Copies of the trained parameters the driver of `method` holds beyond the model from its construction: saved
    /// θ, the target, the base optimizer's slots; [`StepDriver::extra_memory_bytes`] is this many times
    /// [`StepDriver::param_bytes`].
    pub fn parameter_copies(method: &Method, base: &crate::BaseConfig) -> usize {
        usize::from(method.saves_parameters()) + usize::from(method.holds_target_copy()) + base.slots().len()
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
            self.unscale_grads();
            let Some(rule) = self.method.ascent else {
                sums.add_group(pass1.divergence, grad_norm(&self.grads()));
                continue;
            };
            let after_pass1 = snapshot(&self.vars.buffers);
            let radius = self.radius(model, micro_batches, group, &pass1.logits, &after_pass1); // 2.
            let divergence = radius.as_ref().map(|d| d.double_value(&[])).or(pass1.divergence);
            let norms = self.ascend(rule, radius.as_ref())?; // 3.
            self.pass_two(model, micro_batches, group, &mut target_outputs, &mut sums); // 4.
            self.unscale_grads();
            self.restore(&after_pass1); // 5. (restore)
            sums.add_group(divergence, norms.grad);
            sums.add_ascent(&norms);
            if groups.len() > 1 {
                sums.accumulate(self.grads());
                self.zero_grad();
            }
        }
        let grads = sums.grads.take().unwrap_or_else(|| self.grads());
        let mut report = sums.report(self.progress.step, lr, grad_norm(&grads), self.cost);
        report.loss_scale = self.progress.loss_scale.map(|s| s.scale);
        if report.skipped || (self.progress.loss_scale.is_some() && !report.grad_norm.is_finite()) {
            report.skipped = true;
            return self.skip(report, &start_buffers);
        }
        self.progress.consecutive_skips = 0;
        if let Some(scale) = self.progress.loss_scale.as_mut() {
            scale.stepped();
        }
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
        let keep_logits = self.method.trust_region.is_some_and(|tr| tr.role == Role::Radius);
        for i in group.micros() {
            let noise = self.method.ascent_noise.map(|spec| self.noise(spec, i));
            let pass = self.pass(model, &batches[i], i, noise.as_ref(), group.weight(i), &mut target_outputs[i]);
            sums.add_loss(pass.loss, i);
            if let Some(d) = pass.divergence {
                add(&mut out.divergence, group.term(d, i));
            }
            if keep_logits {
                out.logits.push(pass.logits);
            }
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
        // fp16: a finite loss at θ with a non-finite value after it is an overflow of the scaled gradients.
        if let (Some(scale), true) = (p.loss_scale.as_mut(), report.loss.is_finite()) {
            scale.overflowed();
            if scale.scale < LossScale::FLOOR {
                return Err(Error::NonFinite { count: p.consecutive_skips + 1, step: p.step - 1 });
            }
            return Ok(report);
        }
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
        let task = {
            let _region = self.config.precision.autocast(self.device);
            self.timed(|| model.loss(&logits, batch))
        };
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
        // fp16 backpropagates the scaled loss; [`Self::unscale_grads`] divides the scale out again.
        let scale = self.progress.loss_scale.map_or(1.0, |s| s.scale);
        self.timed(|| (objective * (weight * scale)).backward());
        self.cost.backward_passes += 1;
        if let Some(b) = restore_buffers {
            copy_into(&mut self.vars.buffers, &b);
        }
        Pass { loss: task.double_value(&[]), logits: logits.detach(), divergence }
    }

    /// Outputs of the parameter target (θ_{t−1}, θ_0 or the EMA) on `(micro-batch index, batch)` pairs, without
    /// gradient, in train mode with the same seeds as pass 1 (or, `target_mode = "released-code"`, in eval mode).
    /// θ is swapped out and back; buffers are left unchanged.
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
        let train = self.method.trust_region.is_none_or(|tr| tr.target_mode == TargetMode::Train);
        let outs =
            batches.into_iter().map(|(i, b)| tch::no_grad(|| self.forward_in(model, b, i, None, train))).collect();
        for (p, o) in self.vars.params.iter_mut().zip(&own) {
            p.set_data(o);
        }
        copy_into(&mut self.vars.buffers, &buffers);
        outs
    }

    /// A train-mode forward of micro-batch `micro`, seeded with its stream 0 (so every pass of the step draws the
    /// same dropout masks), counted and timed.
    fn forward<M: Model>(&mut self, model: &M, batch: &M::Batch, micro: usize, noise: Option<&InputNoise>) -> Tensor {
        self.forward_in(model, batch, micro, noise, true)
    }

    /// [`Self::forward`] in train or eval mode.
    fn forward_in<M: Model>(
        &mut self,
        model: &M,
        batch: &M::Batch,
        micro: usize,
        noise: Option<&InputNoise>,
        train: bool,
    ) -> Tensor {
        tch::manual_seed(forward_seed(self.config.seed, self.progress.step, micro, 0));
        self.cost.forward_passes += 1;
        // One autocast region per pass (none in float32): its end drops the casts of θ, which the ascent, the
        // restore and the target swap change between passes.
        let _region = self.config.precision.autocast(self.device);
        self.timed(|| model.forward(batch, train, noise))
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

    /// fp16: the gradients of the passes so far back to the loss's scale (a power of two: exact).
    fn unscale_grads(&mut self) {
        let Some(scale) = self.progress.loss_scale.map(|s| s.scale) else { return };
        tch::no_grad(|| {
            for g in self.grads().into_iter().flatten() {
                let _ = g.detach().g_div_scalar_(scale);
            }
        });
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
            Target::PreviousStep if tr.target_mode == TargetMode::ReleasedCode => copy_into(target, &self.vars.params),
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
