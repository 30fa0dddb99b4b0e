//! The paper's two analyses of a fine-tuned model (arXiv 2310.03646 v2, §4.3, App. B.7–B.8, Table 6):
//! ε-sharpness of the loss around the trained parameters, and linear CKA between two models' representations.
//!
//! # ε-sharpness (Keskar et al. 2017; Eqs. 10–11)
//!
//! ```text
//! φ(ε, A) = (max_{y ∈ C_ε} ℓ(x + A y) − ℓ(x)) / (1 + ℓ(x)) × 100
//! C_ε     = { y : |y_i| ≤ ε (|(A⁺x)_i| + 1) for every i }
//! ```
//!
//! `x` is every trainable parameter of the model (each var-store tensor that requires a gradient; buffers such as
//! batch-norm statistics are not perturbed), and `A = I` over them: the whole model is measured, each scalar
//! parameter in its own interval `x_i ± ε(|x_i| + 1)`. `ℓ` is the example-weighted mean loss over the given
//! batches in eval mode (no dropout, running statistics), so it is deterministic.
//!
//! The maximum is approximated as the paper does (following Juneja et al. 2023): SGD gradient *ascent* with
//! learning rate 8e-5 on micro-batches (the caller makes them of 32 examples) with the gradient accumulated over 4
//! of them, each update followed by a projection (clamp) onto the box around the original parameters, ε = 1e-5.
//! The paper does not state how many updates it takes; here that is the caller's choice, and it must be reported
//! next to the numbers: [`SharpnessConfig::evaluate_at`] lists the update counts after which `ℓ(x + y)` is
//! evaluated on the whole set, and [`Sharpness::points`] gives φ at each, so a table can show that more updates
//! do not change a ranking.
//!
//! Each update moves a parameter by lr·|g_i|, which for fine-tuned language models is far below the box's
//! half-width ε(|x_i| + 1): a few SGD updates stay deep inside the box, and what they measure grows with their
//! number (≈ lr·k·‖∇ℓ‖², a gradient-norm proxy), not the maximum. So the box's own maximiser is measured too:
//! [`Sharpness::corner`] is `ℓ` at `x + ε(|x| + 1) ⊙ sign(∇ℓ(x))` (the gradient over the whole set), the exact
//! maximiser of the loss's first-order approximation over the box, reached in one projected step.
//!
//! # Linear CKA (Kornblith et al. 2019; Eq. 12)
//!
//! ```text
//! CKA(X, Y) = ‖Yᵀ X‖_F² / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)      X [n, p1], Y [n, p2], columns centred
//! ```
//!
//! In the paper `X` and `Y` are the pre-trained and the fine-tuned model's representations of the same `n`
//! examples (the output before the classification head), per language of the XNLI validation set.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use tram_core::Model;

use crate::error::{config_err, Result};

/// The paper's box half-width factor ε (App. B.7).
pub const PAPER_EPSILON: f64 = 1e-5;
/// The paper's SGD learning rate for the ascent (App. B.7).
pub const PAPER_LR: f64 = 8e-5;
/// The paper's micro-batch size for the ascent (App. B.7); the caller makes the batches.
pub const PAPER_BATCH_SIZE: usize = 32;
/// The paper's number of micro-batches per ascent update (App. B.7).
pub const PAPER_ACCUMULATE: usize = 4;

/// How to approximate the maximum in Eq. 10.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharpnessConfig {
    /// Box half-width factor: `|y_i| ≤ ε (|x_i| + 1)`.
    pub epsilon: f64,
    /// SGD learning rate of the ascent.
    pub lr: f64,
    /// Micro-batches whose gradients make one update (example-weighted, as one big batch would).
    pub accumulate: usize,
    /// Update counts after which the whole-set loss is evaluated, strictly increasing; the last one is the
    /// number of updates taken. 0 may come first (the unperturbed point, φ = 0).
    pub evaluate_at: Vec<usize>,
}

impl SharpnessConfig {
    /// The paper's settings (ε = 1e-5, lr = 8e-5, 4 micro-batches per update), evaluated after the given update
    /// counts, which the paper does not state and the caller must.
    pub fn paper(evaluate_at: Vec<usize>) -> Self {
        Self { epsilon: PAPER_EPSILON, lr: PAPER_LR, accumulate: PAPER_ACCUMULATE, evaluate_at }
    }

    fn validate(&self) -> Result<()> {
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err(config_err(format!("ε-sharpness: epsilon must be positive and finite, not {}", self.epsilon)));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(config_err(format!("ε-sharpness: lr must be positive and finite, not {}", self.lr)));
        }
        if self.accumulate == 0 {
            return Err(config_err("ε-sharpness: accumulate must be at least 1 micro-batch per update"));
        }
        if self.evaluate_at.is_empty() {
            return Err(config_err("ε-sharpness: evaluate_at is empty; give the update counts to evaluate after"));
        }
        if self.evaluate_at.windows(2).any(|w| w[0] >= w[1]) {
            return Err(config_err(format!(
                "ε-sharpness: evaluate_at must be strictly increasing, not {:?}",
                self.evaluate_at
            )));
        }
        Ok(())
    }
}

/// The loss around the parameters after a number of ascent updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharpnessPoint {
    /// Ascent updates taken.
    pub steps: usize,
    /// `ℓ(x + y)` at the current point of the ascent.
    pub loss: f64,
    /// The largest loss seen so far (including `ℓ(x)`, since `y = 0` is in the box): the estimate of the max in
    /// Eq. 10.
    pub max_loss: f64,
    /// φ in percent (Eq. 10) from `max_loss`.
    pub sharpness: f64,
}

/// ε-sharpness with its trajectory over the ascent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sharpness {
    /// `ℓ(x)`, the loss at the model's own parameters.
    pub base_loss: f64,
    /// Examples in the batches (the weights of the mean loss).
    pub examples: usize,
    /// One point per entry of [`SharpnessConfig::evaluate_at`], in order.
    pub points: Vec<SharpnessPoint>,
    /// `ℓ` and φ at the box's corner along the signs of the whole set's gradient (the linearised loss's
    /// maximiser; `steps` is 1: one projected step). Absent in measurements made before it existed.
    #[serde(default)]
    pub corner: Option<SharpnessPoint>,
}

impl Sharpness {
    /// The point after the most updates: the reported sharpness.
    ///
    /// # Panics
    /// If `points` is empty, which [`epsilon_sharpness`] never returns.
    pub fn last(&self) -> &SharpnessPoint {
        self.points.last().expect("epsilon_sharpness returns at least one point")
    }
}

/// φ in percent (Eq. 10) from the maximised and the base loss.
pub fn sharpness_percent(max_loss: f64, base_loss: f64) -> f64 {
    (max_loss - base_loss) / (1.0 + base_loss) * 100.0
}

/// ε-sharpness (Eqs. 10–11) of `model` on `batches`, by projected SGD ascent as the module documentation
/// describes.
///
/// Micro-batches are taken cyclically in the given order (update `k` uses the next `accumulate` of them, wrapping
/// around), so the result is deterministic. The ascent runs in the parameters' dtype and never touches their
/// `.grad`; losses are summed in f64. Every variable of the model (parameters and buffers) is restored bit for bit
/// before this returns, also when it returns an error or a panic unwinds through it. Besides the model it holds a
/// copy of every variable, the box's two bounds and the gradient sum: about four times the parameters' memory.
pub fn epsilon_sharpness<M: Model>(model: &M, batches: &[M::Batch], config: &SharpnessConfig) -> Result<Sharpness> {
    config.validate()?;
    if batches.is_empty() {
        return Err(config_err("ε-sharpness: no batches to measure the loss on"));
    }
    let sizes: Vec<usize> = batches.iter().map(|b| model.batch_size(b)).collect();
    let examples: usize = sizes.iter().sum();
    if examples == 0 {
        return Err(config_err(format!("ε-sharpness: the {} batches hold no examples", batches.len())));
    }
    let mut named: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let variables: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
    let mut params: Vec<Tensor> = variables.iter().filter(|t| t.requires_grad()).map(Tensor::shallow_clone).collect();
    if params.is_empty() {
        return Err(config_err(
            "ε-sharpness: the model has no trainable parameters (every variable is frozen or the var store is empty)",
        ));
    }

    let _restore = Restore::new(variables);
    let base_loss = mean_loss(model, batches, &sizes, examples)?;
    if !base_loss.is_finite() {
        return Err(config_err(format!("ε-sharpness: the loss at the model's own parameters is {base_loss}")));
    }
    // The box C_ε around the original parameters (Eq. 11, A = I), in the parameters' dtype.
    let (lower, upper): (Vec<Tensor>, Vec<Tensor>) = tch::no_grad(|| {
        params
            .iter()
            .map(|p| {
                let half_width = (p.abs() + 1.0) * config.epsilon;
                (p - &half_width, p + &half_width)
            })
            .unzip()
    });

    // The corner first, from x itself: the SGD ascent below then starts at x as it always has.
    let corner = box_corner(model, batches, (&sizes, examples), &mut params, (&lower, &upper), base_loss)?;
    let mut points = Vec::with_capacity(config.evaluate_at.len());
    let mut max_loss = base_loss;
    let mut next_batch = 0;
    let mut steps = 0;
    for &target in &config.evaluate_at {
        while steps < target {
            let group: Vec<usize> = (0..config.accumulate).map(|k| (next_batch + k) % batches.len()).collect();
            next_batch = (next_batch + config.accumulate) % batches.len();
            let grads = accumulated_gradient(model, batches, &sizes, &group, &params)?;
            tch::no_grad(|| {
                for (((p, g), lo), hi) in params.iter_mut().zip(&grads).zip(&lower).zip(&upper) {
                    // Ascent, then projection onto the box.
                    let _ = p.g_add_(&(g * config.lr));
                    let _ = p.clamp_tensor_(Some(lo), Some(hi));
                }
            });
            steps += 1;
        }
        let loss = if steps == 0 { base_loss } else { mean_loss(model, batches, &sizes, examples)? };
        if !loss.is_finite() {
            return Err(config_err(format!("ε-sharpness: the loss became {loss} after {steps} ascent updates")));
        }
        max_loss = max_loss.max(loss);
        points.push(SharpnessPoint { steps, loss, max_loss, sharpness: sharpness_percent(max_loss, base_loss) });
    }
    Ok(Sharpness { base_loss, examples, points, corner: Some(corner) })
}

/// `ℓ` and φ at the corner of the box along the signs of the whole set's gradient at `x`: each parameter at the
/// bound its gradient points at (a zero gradient leaves it at `x`). The parameters are back at `x` afterwards.
fn box_corner<M: Model>(
    model: &M,
    batches: &[M::Batch],
    (sizes, examples): (&[usize], usize),
    params: &mut [Tensor],
    (lower, upper): (&[Tensor], &[Tensor]),
    base_loss: f64,
) -> Result<SharpnessPoint> {
    let x: Vec<Tensor> = tch::no_grad(|| params.iter().map(|p| p.detach().copy()).collect());
    let all: Vec<usize> = (0..batches.len()).collect();
    let grads = accumulated_gradient(model, batches, sizes, &all, params)?;
    tch::no_grad(|| {
        for ((((p, g), lo), hi), x) in params.iter_mut().zip(&grads).zip(lower).zip(upper).zip(&x) {
            p.copy_(&hi.where_self(&g.gt(0.0), &lo.where_self(&g.lt(0.0), x)));
        }
    });
    let loss = mean_loss(model, batches, sizes, examples);
    tch::no_grad(|| {
        for (p, x) in params.iter_mut().zip(&x) {
            p.copy_(x);
        }
    });
    let loss = loss?;
    if !loss.is_finite() {
        return Err(config_err(format!("ε-sharpness: the loss at the box's corner is {loss}")));
    }
    let max_loss = loss.max(base_loss);
    Ok(SharpnessPoint { steps: 1, loss, max_loss, sharpness: sharpness_percent(max_loss, base_loss) })
}

/// Copies the variables back from their snapshot when dropped, on every exit path.
struct Restore {
    variables: Vec<Tensor>,
    originals: Vec<Tensor>,
}

impl Restore {
    fn new(variables: Vec<Tensor>) -> Self {
        let originals = tch::no_grad(|| variables.iter().map(|t| t.detach().copy()).collect());
        Self { variables, originals }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        tch::no_grad(|| {
            for (v, o) in self.variables.iter_mut().zip(&self.originals) {
                v.copy_(o);
            }
        });
    }
}

/// The example-weighted mean eval-mode loss over all batches, without gradients, summed in f64.
fn mean_loss<M: Model>(model: &M, batches: &[M::Batch], sizes: &[usize], examples: usize) -> Result<f64> {
    tch::no_grad(|| {
        let mut total = 0.0;
        for (b, &n) in batches.iter().zip(sizes) {
            if n > 0 {
                total += n as f64 * scalar(&model.loss(&model.forward(b, false, None), b))?;
            }
        }
        Ok(total / examples as f64)
    })
}

/// The gradient of the example-weighted mean eval-mode loss over the micro-batches `group`, one backward pass per
/// micro-batch (as gradient accumulation does), in the parameters' dtype; `.grad` is left untouched.
fn accumulated_gradient<M: Model>(
    model: &M,
    batches: &[M::Batch],
    sizes: &[usize],
    group: &[usize],
    params: &[Tensor],
) -> Result<Vec<Tensor>> {
    let total: usize = group.iter().map(|&k| sizes[k]).sum();
    let mut sum: Vec<Tensor> = tch::no_grad(|| params.iter().map(Tensor::zeros_like).collect());
    if total == 0 {
        return Ok(sum);
    }
    for &k in group.iter().filter(|&&k| sizes[k] > 0) {
        let (b, weight) = (&batches[k], sizes[k] as f64 / total as f64);
        let grads = tch::with_grad(|| {
            let loss = model.loss(&model.forward(b, false, None), b);
            one_number(&loss)?;
            Ok::<_, crate::Error>(Tensor::f_run_backward(&[loss * weight], params, false, false)?)
        })?;
        tch::no_grad(|| {
            for (s, g) in sum.iter_mut().zip(&grads) {
                // A parameter the loss does not use gets no gradient.
                if g.defined() {
                    let _ = s.g_add_(g);
                }
            }
        });
    }
    Ok(sum)
}

/// An error unless the model's loss is one number.
fn one_number(loss: &Tensor) -> Result<()> {
    if loss.numel() != 1 {
        return Err(config_err(format!("the model's loss has shape {:?}; it must be one number", loss.size())));
    }
    Ok(())
}

/// The value of a one-element loss tensor.
fn scalar(loss: &Tensor) -> Result<f64> {
    one_number(loss)?;
    Ok(loss.f_reshape([])?.f_double_value(&[])?)
}

/// Linear CKA (Eq. 12) between representations `x` `[n, p1]` and `y` `[n, p2]` of the same `n` examples, computed
/// in float64 (on the inputs' device; on the CPU for MPS, which has no float64) after centring the columns.
///
/// 1 for representations equal up to an orthogonal transform, isotropic scaling and a constant offset; near 0
/// for unrelated ones. Costs `O(n (p1 + p2)²)`.
pub fn linear_cka(x: &Tensor, y: &Tensor) -> Result<f64> {
    let (xs, ys) = (x.size(), y.size());
    if xs.len() != 2 || ys.len() != 2 {
        return Err(config_err(format!(
            "linear CKA: representations must be 2-D [examples, features], not {xs:?} and {ys:?}"
        )));
    }
    if xs[0] != ys[0] {
        return Err(config_err(format!(
            "linear CKA: the representations must be of the same examples, but X has {} rows and Y {}",
            xs[0], ys[0]
        )));
    }
    if xs[0] < 2 {
        return Err(config_err(format!("linear CKA: needs at least 2 examples, not {}", xs[0])));
    }
    let device = match x.device() {
        Device::Mps => Device::Cpu,
        d => d,
    };
    tch::no_grad(|| {
        let x = centred(x, device, "X")?;
        let y = centred(y, device, "Y")?;
        let cross = y.tr().matmul(&x).square().sum(Kind::Double).double_value(&[]);
        let xx = x.tr().matmul(&x).norm().double_value(&[]);
        let yy = y.tr().matmul(&y).norm().double_value(&[]);
        Ok(cross / (xx * yy))
    })
}

/// `t` in float64 on `device`, columns centred; an error when it is not finite or the same in every row.
fn centred(t: &Tensor, device: Device, name: &str) -> Result<Tensor> {
    let t = t.detach().f_to_device(device)?.f_to_kind(Kind::Double)?;
    if !bool::try_from(t.isfinite().all())? {
        return Err(config_err(format!("linear CKA: {name} holds non-finite values")));
    }
    // Compared with the first row, not the mean, whose rounding would leave noise in a constant column.
    if !bool::try_from((&t - t.narrow(0, 0, 1)).ne(0.0).any())? {
        return Err(config_err(format!(
            "linear CKA: {name} is the same for every example (zero once centred), so CKA is undefined"
        )));
    }
    Ok(&t - t.mean_dim(0, true, Kind::Double))
}
