//! Base optimizers (SGD, Adam, AdamW) written over tch tensors, so that their state can be saved, loaded and
//! measured. The update rules follow `torch.optim` exactly (same operation order), which the reference-parity
//! tests check.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use std::path::Path;

use crate::error::{checkpoint_err, config_err, Result};

/// Which base optimizer takes the descent step, with its hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum BaseConfig {
    /// `torch.optim.SGD`: L2 weight decay added to the gradient, heavy-ball or Nesterov momentum.
    Sgd {
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        dampening: f64,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f64,
    },
    /// `torch.optim.Adam`: L2 weight decay added to the gradient.
    Adam {
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "adam_eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    /// `torch.optim.AdamW`: decoupled weight decay.
    AdamW {
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "adam_eps")]
        eps: f64,
        #[serde(default = "adamw_wd")]
        weight_decay: f64,
    },
}

fn beta1() -> f64 {
    0.9
}
/// The paper's language runs use (0.9, 0.99) (arXiv 2310.03646 v2, App. B.2); torch's default is 0.999.
fn beta2() -> f64 {
    0.99
}
fn adam_eps() -> f64 {
    1e-8
}
fn adamw_wd() -> f64 {
    0.01
}

impl BaseConfig {
    pub fn sgd() -> Self {
        BaseConfig::Sgd { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 }
    }
    pub fn sgd_momentum(momentum: f64) -> Self {
        BaseConfig::Sgd { momentum, dampening: 0.0, nesterov: false, weight_decay: 0.0 }
    }
    pub fn adam() -> Self {
        BaseConfig::Adam { beta1: beta1(), beta2: beta2(), eps: adam_eps(), weight_decay: 0.0 }
    }
    pub fn adamw() -> Self {
        BaseConfig::AdamW { beta1: beta1(), beta2: beta2(), eps: adam_eps(), weight_decay: adamw_wd() }
    }

    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, v: f64, lo: f64, hi: f64, hi_open: bool| {
            let ok = v.is_finite() && v >= lo && if hi_open { v < hi } else { v <= hi };
            if ok {
                Ok(())
            } else {
                let close = if hi_open { ")" } else { "]" };
                Err(config_err(format!("base optimizer {name} must be in [{lo}, {hi}{close}, got {v}")))
            }
        };
        match *self {
            BaseConfig::Sgd { momentum, dampening, nesterov, weight_decay } => {
                check("momentum", momentum, 0.0, 1.0, true)?;
                check("dampening", dampening, 0.0, 1.0, false)?;
                check("weight_decay", weight_decay, 0.0, f64::MAX, false)?;
                if nesterov && (momentum <= 0.0 || dampening != 0.0) {
                    return Err(config_err("Nesterov momentum needs momentum > 0 and dampening = 0"));
                }
            }
            BaseConfig::Adam { beta1, beta2, eps, weight_decay }
            | BaseConfig::AdamW { beta1, beta2, eps, weight_decay } => {
                check("beta1", beta1, 0.0, 1.0, true)?;
                check("beta2", beta2, 0.0, 1.0, true)?;
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(config_err(format!("base optimizer eps must be > 0, got {eps}")));
                }
                check("weight_decay", weight_decay, 0.0, f64::MAX, false)?;
            }
        }
        Ok(())
    }

    /// Names of the per-parameter state tensors this optimizer keeps.
    pub fn slots(&self) -> &'static [&'static str] {
        match self {
            BaseConfig::Sgd { momentum, .. } if *momentum > 0.0 => &["momentum_buffer"],
            BaseConfig::Sgd { .. } => &[],
            BaseConfig::Adam { .. } | BaseConfig::AdamW { .. } => &["exp_avg", "exp_avg_sq"],
        }
    }
}

/// A base optimizer with its state: per parameter, the step count and the slot tensors.
#[derive(Debug)]
pub struct BaseOptimizer {
    config: BaseConfig,
    /// Per parameter: how many updates it has received (torch counts per parameter, skipping absent grads).
    steps: Vec<u64>,
    /// Per parameter: slot tensors, allocated with the optimizer (zeros; SGD's momentum buffer takes the first
    /// update's direction, as torch's does).
    state: Vec<Vec<Tensor>>,
}

impl BaseOptimizer {
    /// The optimizer of `params`, its state allocated now rather than at the first update (as torch does): a run
    /// holds from its start the memory `tram plan` counts for it, so one that does not fit fails before its first
    /// step rather than after it.
    pub fn new(config: BaseConfig, params: &[Tensor]) -> Result<Self> {
        config.validate()?;
        let slots = config.slots().len();
        let state = tch::no_grad(|| params.iter().map(|p| (0..slots).map(|_| p.zeros_like()).collect()).collect());
        Ok(Self { config, steps: vec![0; params.len()], state })
    }

    pub fn config(&self) -> &BaseConfig {
        &self.config
    }

    /// One update of every parameter that has a gradient. Runs under `no_grad`.
    pub fn step(&mut self, params: &mut [Tensor], grads: &[Option<Tensor>], lr: f64) {
        tch::no_grad(|| {
            for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
                if let Some(g) = g {
                    self.update_one(i, p, g, lr);
                }
            }
        })
    }

    fn update_one(&mut self, i: usize, p: &mut Tensor, g: &Tensor, lr: f64) {
        self.steps[i] += 1;
        let t = self.steps[i];
        let state = &mut self.state[i];
        // In-place updates with 0-dim scalar tensors as factors avoid a temporary per operation.
        let scalar = |v: f64| Tensor::from(v).to_kind(p.kind()).to_device(p.device());
        match self.config {
            BaseConfig::Sgd { momentum, dampening, nesterov, weight_decay } => {
                let mut d_p = if weight_decay != 0.0 { g + &*p * weight_decay } else { g.shallow_clone() };
                if momentum != 0.0 {
                    if state.is_empty() {
                        state.push(d_p.detach().copy());
                    } else if t == 1 {
                        state[0].copy_(&d_p);
                    } else {
                        let buf = &mut state[0];
                        let _ = buf.g_mul_scalar_(momentum);
                        let _ = buf.addcmul_(&d_p, &scalar(1.0 - dampening));
                    }
                    d_p = if nesterov { d_p + &state[0] * momentum } else { state[0].shallow_clone() };
                }
                let _ = p.addcmul_(&d_p, &scalar(-lr));
            }
            BaseConfig::Adam { beta1, beta2, eps, weight_decay }
            | BaseConfig::AdamW { beta1, beta2, eps, weight_decay } => {
                let decoupled = matches!(self.config, BaseConfig::AdamW { .. });
                let mut grad = g.shallow_clone();
                if weight_decay != 0.0 {
                    if decoupled {
                        let _ = p.g_mul_scalar_(1.0 - lr * weight_decay);
                    } else {
                        grad = &grad + &*p * weight_decay;
                    }
                }
                if state.is_empty() {
                    state.push(p.zeros_like());
                    state.push(p.zeros_like());
                }
                let (m, v) = state.split_at_mut(1);
                let (m, v) = (&mut m[0], &mut v[0]);
                // torch: exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                let _ = m.lerp_(&grad, 1.0 - beta1);
                let _ = v.g_mul_scalar_(beta2);
                let _ = v.addcmul_(&grad, &(&grad * (1.0 - beta2)));
                let bc1 = 1.0 - beta1.powi(t as i32);
                let bc2 = 1.0 - beta2.powi(t as i32);
                // p -= lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps)
                let mut denom = v.sqrt();
                let _ = denom.g_mul_scalar_(1.0 / bc2.sqrt());
                let _ = denom.g_add_scalar_(eps);
                let _ = denom.g_mul_scalar_(-bc1 / lr);
                if lr != 0.0 {
                    let _ = p.addcdiv_(m, &denom);
                }
            }
        }
    }

    /// Bytes held in optimizer state.
    pub fn state_bytes(&self) -> usize {
        self.state.iter().flatten().map(tensor_bytes).sum()
    }

    /// State as named tensors (`base.<param index>.<slot>`) plus the per-parameter step counts.
    pub(crate) fn export(&self) -> (Vec<(String, Tensor)>, Vec<u64>) {
        let slots = self.config.slots();
        let mut named = Vec::new();
        for (i, st) in self.state.iter().enumerate() {
            for (slot, t) in slots.iter().zip(st) {
                named.push((format!("base.{i}.{slot}"), t.shallow_clone()));
            }
        }
        (named, self.steps.clone())
    }

    /// Restores state exported by [`BaseOptimizer::export`] from the checkpoint in `dir`. `lookup` returns the
    /// tensor stored under a name.
    pub(crate) fn import(
        &mut self,
        steps: Vec<u64>,
        mut lookup: impl FnMut(&str) -> Option<Tensor>,
        dir: &Path,
    ) -> Result<()> {
        if steps.len() != self.steps.len() {
            let reason = format!("optimizer state has {} parameters, the model has {}", steps.len(), self.steps.len());
            return Err(checkpoint_err(dir, reason));
        }
        let slots = self.config.slots();
        for (i, (state, &param_steps)) in self.state.iter_mut().zip(&steps).enumerate() {
            let found: Vec<Option<Tensor>> = slots.iter().map(|s| lookup(&format!("base.{i}.{s}"))).collect();
            *state = if found.iter().all(Option::is_some) {
                found.into_iter().flatten().collect()
            } else if found.iter().all(Option::is_none) {
                Vec::new()
            } else {
                return Err(checkpoint_err(dir, format!("optimizer state for parameter {i} is incomplete")));
            };
            if state.is_empty() && !slots.is_empty() && param_steps > 0 {
                return Err(checkpoint_err(dir, format!("optimizer state for parameter {i} is missing")));
            }
        }
        self.steps = steps;
        Ok(())
    }
}

pub(crate) fn tensor_bytes(t: &Tensor) -> usize {
    t.numel() * t.kind().elt_size_in_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn state_is_allocated_with_the_optimizer_and_sgd_momentum_starts_from_the_first_direction() {
        let params =
            || vec![Tensor::ones([3, 2], (Kind::Float, Device::Cpu)), Tensor::ones([5], (Kind::Float, Device::Cpu))];
        let adam =
            BaseOptimizer::new(BaseConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }, &params())
                .unwrap();
        assert_eq!(adam.state_bytes(), 2 * 11 * 4, "two moments of every parameter before any update");
        let plain = BaseOptimizer::new(BaseConfig::sgd(), &params()).unwrap();
        assert_eq!(plain.state_bytes(), 0, "plain SGD keeps nothing");
        // torch: the momentum buffer is the first step's d_p itself (not 0.9·0 + d_p·(1 − dampening)).
        let mut p = params();
        let config = BaseConfig::Sgd { momentum: 0.9, dampening: 0.5, nesterov: false, weight_decay: 0.0 };
        let mut sgd = BaseOptimizer::new(config, &p).unwrap();
        assert_eq!(sgd.state_bytes(), 11 * 4);
        let g = |v: f64| p.iter().map(|t| Some(t.ones_like() * v)).collect::<Vec<_>>();
        let (g1, g2) = (g(2.0), g(4.0));
        sgd.step(&mut p, &g1, 0.1);
        assert!(p[0].allclose(&Tensor::full([3, 2], 1.0 - 0.1 * 2.0, (Kind::Float, Device::Cpu)), 1e-6, 1e-7, false));
        sgd.step(&mut p, &g2, 0.1);
        // buf = 0.9 · 2 + (1 − 0.5) · 4 = 3.8
        let expected = 1.0 - 0.1 * 2.0 - 0.1 * 3.8;
        assert!(p[1].allclose(&Tensor::full([5], expected, (Kind::Float, Device::Cpu)), 1e-6, 1e-7, false));
    }
}
