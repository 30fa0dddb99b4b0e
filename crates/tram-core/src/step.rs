//! The step driver: one training step of any method, following the protocol of the design notes.
//!
//! 1. Pass 1: forward the clean batch in train mode, loss (+ λ·d for regularisers), backward: g at θ.
//! 2. TRAM: the target's output without gradient and d(target ‖ current).
//! 3. Ascent: ε from the rule; save θ; θ ← θ + ε.
//! 4. Pass 2 at θ + ε: forward, backward. Buffers (batch norm) end the step as pass 1 left them.
//! 5. Restore θ by copy (bit-exact), clip (optional), then the base optimizer steps with the pass-2 gradient.
//! 6. Update the target (θ_{t−1} ← the θ this step started from; EMA ← decay·EMA + (1 − decay)·θ).
//!
//! Randomness is seeded per step and micro-batch (see [`forward_seed`]), so dropout masks agree between the
//! passes of a step, resumed runs repeat bit for bit, and a reference implementation can reproduce the noise.

use std::cell::Cell;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::ascent::global_norm;
use crate::base::{tensor_bytes, BaseConfig, BaseOptimizer};
use crate::error::{config_err, Error, Result};
use crate::method::{Method, MethodConfig, Role, Target, TrustRegion};
use crate::model::{copy_into, snapshot, Model, Variables};
use crate::noise::{InputNoise, NoiseSpec};
use crate::schedule::LrSchedule;

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
    #[serde(default = "default_max_skips")]
    pub max_consecutive_skips: u32,
    /// Seed of the per-step randomness (dropout, input noise).
    #[serde(default)]
    pub seed: u64,
}

fn default_max_skips() -> u32 {
    5
}

impl OptimizerConfig {
    pub fn new(method: MethodConfig, base: BaseConfig, schedule: LrSchedule) -> Self {
        Self { method, base, schedule, clip_grad_norm: None, m_sharpness: false, max_consecutive_skips: 5, seed: 0 }
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
    step: u64,
    consecutive_skips: u32,
    skipped_total: u64,
    /// Time spent inside the model's forward, loss and backward during the current step.
    model_time: Cell<Duration>,
    last_timing: StepTiming,
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

struct Counters {
    fwd: u32,
    bwd: u32,
}

impl StepDriver {
    pub fn new<M: Model>(model: &M, config: OptimizerConfig) -> Result<Self> {
        let method = config.method.build()?;
        config.schedule.validate()?;
        if let Some(c) = config.clip_grad_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(config_err(format!("clip_grad_norm must be > 0, got {c}")));
            }
        }
        if config.max_consecutive_skips == 0 {
            return Err(config_err("max_consecutive_skips must be at least 1"));
        }
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
            step: 0,
            consecutive_skips: 0,
            skipped_total: 0,
            model_time: Cell::new(Duration::ZERO),
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
        self.step
    }

    pub fn skipped_total(&self) -> u64 {
        self.skipped_total
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

    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.model_time.set(self.model_time.get() + start.elapsed());
        out
    }

    /// One training step over `micro_batches` (gradient accumulation when there are several).
    pub fn step<M: Model>(&mut self, model: &M, micro_batches: &[M::Batch]) -> Result<StepReport> {
        let start = Instant::now();
        self.model_time.set(Duration::ZERO);
        let out = self.step_inner(model, micro_batches);
        self.last_timing = StepTiming { total: start.elapsed(), model: self.model_time.get() };
        out
    }

    fn step_inner<M: Model>(&mut self, model: &M, micro_batches: &[M::Batch]) -> Result<StepReport> {
        if micro_batches.is_empty() {
            return Err(config_err("a step needs at least one micro-batch"));
        }
        let sizes: Vec<f64> = micro_batches.iter().map(|b| model.batch_size(b) as f64).collect();
        let total: f64 = sizes.iter().sum();
        if total <= 0.0 {
            return Err(config_err("the micro-batches of a step hold no examples"));
        }
        let lr = self.config.schedule.lr(self.step);
        let pre_buffers = snapshot(&self.vars.buffers);
        if !self.saved.is_empty() {
            copy_into(&mut self.saved, &self.vars.params);
        }
        self.zero_grad();
        let mut c = Counters { fwd: 0, bwd: 0 };
        let n = micro_batches.len();
        let groups: Vec<Vec<usize>> = if self.config.m_sharpness && self.method.ascent.is_some() {
            (0..n).map(|i| vec![i]).collect()
        } else {
            vec![(0..n).collect()]
        };

        let mut loss1 = 0.0f64;
        let mut loss2 = None;
        let mut div_sum = None;
        let mut radius_sum = None;
        let mut eps_sum = None;
        let mut grad_norm_sum = 0.0;
        // Cached target outputs per micro-batch (parameter targets do not move within a step).
        let mut target_cache: Vec<Option<Tensor>> = (0..n).map(|_| None).collect();
        let mut accum: Option<Vec<Option<Tensor>>> = None;

        for group in &groups {
            let group_total: f64 = group.iter().map(|&i| sizes[i]).sum();
            let has_ascent = self.method.ascent.is_some();
            let pass1_weight = |i: usize| if has_ascent { sizes[i] / group_total } else { sizes[i] / total };
            // ---- pass 1 ----
            let mut logits1 = Vec::with_capacity(group.len());
            let mut div1 = 0.0;
            let mut has_div = false;
            for &i in group {
                let noise = self.method.ascent_noise.map(|spec| self.noise(spec, i));
                let out = self.pass(
                    model,
                    &micro_batches[i],
                    i,
                    noise.as_ref(),
                    pass1_weight(i),
                    &mut target_cache[i],
                    &mut c,
                )?;
                loss1 += out.loss * sizes[i] / total;
                if let Some(d) = out.divergence {
                    div1 += d * sizes[i] / group_total;
                    has_div = true;
                }
                logits1.push(out.logits);
            }
            let Some(rule) = self.method.ascent else {
                if has_div {
                    div_sum = Some(div1);
                }
                grad_norm_sum += grad_norm(&self.grads());
                continue;
            };
            let mid_buffers = snapshot(&self.vars.buffers);
            // ---- TRAM: radius d from the target ----
            let d = match self.method.trust_region {
                Some(tr @ TrustRegion { role: Role::Radius, .. }) => {
                    let d =
                        self.radius_divergence(model, micro_batches, group, &logits1, tr, &sizes, group_total, &mut c);
                    div1 = d.double_value(&[]);
                    has_div = true;
                    copy_into(&mut self.vars.buffers, &mid_buffers);
                    Some(d)
                }
                _ => None,
            };
            if has_div {
                *div_sum.get_or_insert(0.0) += div1 / groups.len() as f64;
            }
            // ---- ascent ----
            let grads = self.grads();
            let pert = rule.perturbation(&self.vars.params, &grads, d.as_ref());
            let scalars = Vec::<f64>::try_from(Tensor::stack(&[&pert.grad_norm, &pert.radius, &pert.eps_norm], 0).to_kind(Kind::Double))?;
            grad_norm_sum += scalars[0];
            *radius_sum.get_or_insert(0.0) += scalars[1] / groups.len() as f64;
            *eps_sum.get_or_insert(0.0) += scalars[2] / groups.len() as f64;
            pert.apply(&mut self.vars.params);
            drop(pert);
            self.zero_grad();
            // ---- pass 2 at θ + ε ----
            for &i in group {
                let out =
                    self.pass(model, &micro_batches[i], i, None, sizes[i] / total, &mut target_cache[i], &mut c)?;
                *loss2.get_or_insert(0.0) += out.loss * sizes[i] / total;
            }
            copy_into(&mut self.vars.params, &self.saved);
            copy_into(&mut self.vars.buffers, &mid_buffers);
            if groups.len() > 1 {
                let grads = self.grads();
                match &mut accum {
                    None => accum = Some(grads.iter().map(|g| g.as_ref().map(|g| g.detach().copy())).collect()),
                    Some(acc) => tch::no_grad(|| {
                        for (a, g) in acc.iter_mut().zip(&grads) {
                            match (a.as_mut(), g) {
                                (Some(a), Some(g)) => {
                                    let _ = a.g_add_(g);
                                }
                                (None, Some(g)) => *a = Some(g.detach().copy()),
                                _ => {}
                            }
                        }
                    }),
                }
                self.zero_grad();
            }
        }

        let mut grads = accum.unwrap_or_else(|| self.grads());
        let descent_norm = grad_norm(&grads);
        let finite = [loss1, loss2.unwrap_or(0.0), div_sum.unwrap_or(0.0), descent_norm].iter().all(|v| v.is_finite());
        let report = StepReport {
            step: self.step,
            lr,
            loss: loss1,
            perturbed_loss: loss2,
            divergence: div_sum,
            radius: radius_sum,
            eps_norm: eps_sum,
            grad_norm: grad_norm_sum / groups.len() as f64,
            descent_grad_norm: descent_norm,
            forward_passes: c.fwd,
            backward_passes: c.bwd,
            micro_batches: n as u32,
            skipped: !finite,
        };
        if !finite {
            if !self.saved.is_empty() {
                copy_into(&mut self.vars.params, &self.saved);
            }
            copy_into(&mut self.vars.buffers, &pre_buffers);
            self.zero_grad();
            self.step += 1;
            self.skipped_total += 1;
            self.consecutive_skips += 1;
            if self.consecutive_skips >= self.config.max_consecutive_skips {
                return Err(Error::NonFinite { count: self.consecutive_skips, step: self.step - 1 });
            }
            return Ok(report);
        }
        self.consecutive_skips = 0;
        if let Some(max) = self.config.clip_grad_norm {
            let coef = max / (descent_norm + 1e-6);
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
        self.update_target();
        self.step += 1;
        Ok(report)
    }

    /// One forward (plus the regulariser's forwards) and one backward of `batch`, gradient weighted by `weight`.
    #[allow(clippy::too_many_arguments)]
    fn pass<M: Model>(
        &mut self,
        model: &M,
        batch: &M::Batch,
        micro: usize,
        noise: Option<&InputNoise>,
        weight: f64,
        target_cache: &mut Option<Tensor>,
        c: &mut Counters,
    ) -> Result<PassOut> {
        let regulariser = match self.method.trust_region {
            Some(tr @ TrustRegion { role: Role::Regulariser { lambda }, .. }) => Some((tr, lambda)),
            _ => None,
        };
        // A parameter target's output comes first: swapping parameters after the forward would invalidate
        // the autograd graph.
        if let Some((tr, _)) = regulariser {
            if tr.target.holds_parameters() && target_cache.is_none() {
                *target_cache = Some(self.target_forward(model, std::slice::from_ref(batch), &[micro], c).remove(0));
            }
        }
        tch::manual_seed(forward_seed(self.config.seed, self.step, micro, 0));
        let logits = self.timed(|| model.forward(batch, true, noise));
        c.fwd += 1;
        let task = self.timed(|| model.loss(&logits, batch));
        let mut objective = task.shallow_clone();
        let mut divergence = None;
        let mut restore_buffers = None;
        if let Some((tr, lambda)) = regulariser {
            let mask = model.divergence_mask(batch);
            let d = match tr.target {
                Target::InputNoise(spec) => {
                    // R3F: the noised forward keeps its gradient (Aghajanyan et al.); its buffer updates are
                    // undone after the backward (the graph holds the buffers, so not before).
                    restore_buffers = Some(snapshot(&self.vars.buffers));
                    let noise = self.noise(spec, micro);
                    tch::manual_seed(forward_seed(self.config.seed, self.step, micro, 0));
                    let noised = self.timed(|| model.forward(batch, true, Some(&noise)));
                    c.fwd += 1;
                    tr.divergence.compute(&noised, &logits, mask.as_ref())
                }
                _ => tr.divergence.compute(target_cache.as_ref().expect("target output"), &logits, mask.as_ref()),
            };
            divergence = Some(d.double_value(&[]));
            objective = objective + d * lambda;
        }
        self.timed(|| (objective * weight).backward());
        c.bwd += 1;
        if let Some(b) = restore_buffers {
            copy_into(&mut self.vars.buffers, &b);
        }
        Ok(PassOut { loss: task.double_value(&[]), logits: logits.detach(), divergence })
    }

    /// d(target ‖ current) over the micro-batches of a group, weighted by size (TRAM's radius).
    #[allow(clippy::too_many_arguments)]
    fn radius_divergence<M: Model>(
        &mut self,
        model: &M,
        batches: &[M::Batch],
        group: &[usize],
        logits1: &[Tensor],
        tr: TrustRegion,
        sizes: &[f64],
        group_total: f64,
        c: &mut Counters,
    ) -> Tensor {
        let targets: Vec<Tensor> = match tr.target {
            Target::InputNoise(spec) => group
                .iter()
                .map(|&i| {
                    let noise = self.noise(spec, i);
                    tch::manual_seed(forward_seed(self.config.seed, self.step, i, 0));
                    c.fwd += 1;
                    self.timed(|| tch::no_grad(|| model.forward(&batches[i], true, Some(&noise))))
                })
                .collect(),
            _ => {
                let bs: Vec<&M::Batch> = group.iter().map(|&i| &batches[i]).collect();
                self.target_forward_refs(model, &bs, group, c)
            }
        };
        let mut d: Option<Tensor> = None;
        for (k, &i) in group.iter().enumerate() {
            let mask = model.divergence_mask(&batches[i]);
            let di = tr.divergence.compute(&targets[k], &logits1[k], mask.as_ref()) * (sizes[i] / group_total);
            d = Some(match d {
                None => di,
                Some(d) => d + di,
            });
        }
        d.expect("a group has at least one micro-batch").detach()
    }

    fn target_forward<M: Model>(
        &mut self,
        model: &M,
        batches: &[M::Batch],
        micros: &[usize],
        c: &mut Counters,
    ) -> Vec<Tensor> {
        let refs: Vec<&M::Batch> = batches.iter().collect();
        self.target_forward_refs(model, &refs, micros, c)
    }

    /// Outputs of the parameter target (θ_{t−1}, θ_0 or the EMA) on `batches`, without gradient, in train
    /// mode with the same seeds as pass 1. θ is swapped out and back by copy; buffers are left unchanged.
    fn target_forward_refs<M: Model>(
        &mut self,
        model: &M,
        batches: &[&M::Batch],
        micros: &[usize],
        c: &mut Counters,
    ) -> Vec<Tensor> {
        // The swap re-points each parameter at the target's storage and back (as `p.data = t` in PyTorch):
        // no copy, and the parameters' own storage is never written.
        let target = self.target.as_ref().expect("parameter target");
        let buffers = snapshot(&self.vars.buffers);
        let own: Vec<Tensor> = self.vars.params.iter().map(Tensor::detach).collect();
        for (p, t) in self.vars.params.iter_mut().zip(target) {
            p.set_data(t);
        }
        let outs = batches
            .iter()
            .zip(micros)
            .map(|(b, &i)| {
                tch::manual_seed(forward_seed(self.config.seed, self.step, i, 0));
                c.fwd += 1;
                self.timed(|| tch::no_grad(|| model.forward(b, true, None)))
            })
            .collect();
        for (p, o) in self.vars.params.iter_mut().zip(&own) {
            p.set_data(o);
        }
        copy_into(&mut self.vars.buffers, &buffers);
        outs
    }

    fn noise(&self, spec: NoiseSpec, micro: usize) -> InputNoise {
        InputNoise {
            spec,
            seed: forward_seed(self.config.seed, self.step, micro, 1),
            resume_seed: forward_seed(self.config.seed, self.step, micro, 0),
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

    // ---- checkpoint access ----
    pub(crate) fn parts(&self) -> (&Variables, &BaseOptimizer, Option<&Vec<Tensor>>, u64, u32, u64) {
        (&self.vars, &self.base, self.target.as_ref(), self.step, self.consecutive_skips, self.skipped_total)
    }

    pub(crate) fn parts_mut(&mut self) -> (&mut Variables, &mut BaseOptimizer, Option<&mut Vec<Tensor>>) {
        (&mut self.vars, &mut self.base, self.target.as_mut())
    }

    pub(crate) fn set_counters(&mut self, step: u64, consecutive_skips: u32, skipped_total: u64) {
        self.step = step;
        self.consecutive_skips = consecutive_skips;
        self.skipped_total = skipped_total;
    }
}

struct PassOut {
    loss: f64,
    logits: Tensor,
    divergence: Option<f64>,
}

fn grad_norm(grads: &[Option<Tensor>]) -> f64 {
    let Some(first) = grads.iter().flatten().next() else { return 0.0 };
    tch::no_grad(|| global_norm(grads.iter().flatten(), &Tensor::zeros([], (Kind::Double, first.device()))).double_value(&[]))
}
