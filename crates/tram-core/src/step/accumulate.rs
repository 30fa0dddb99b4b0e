//! How a step's micro-batches are grouped and their values summed into its report.

use std::ops::Range;

use tch::Tensor;

use super::StepCost;
use crate::report::StepReport;

/// Micro-batches whose gradients meet in one ascent: all of a step's micro-batches, or (m-sharpness) one
/// each. Every mean over them is weighted by the micro-batches' sizes.
#[derive(Debug, Clone)]
pub(super) struct Group<'s> {
    pub(super) micros: Range<usize>,
    /// The sizes of all the step's micro-batches (indexed by micro-batch).
    sizes: &'s [f64],
    /// The group's number of examples.
    pub(super) total: f64,
}

impl<'s> Group<'s> {
    pub(super) fn new(micros: Range<usize>, sizes: &'s [f64]) -> Self {
        let total = sizes[micros.clone()].iter().sum();
        Self { micros, sizes, total }
    }

    /// The groups of a step: one per micro-batch with m-sharpness, otherwise one for all.
    pub(super) fn split(sizes: &'s [f64], per_micro_batch: bool) -> Vec<Self> {
        if per_micro_batch {
            (0..sizes.len()).map(|i| Group::new(i..i + 1, sizes)).collect()
        } else {
            vec![Group::new(0..sizes.len(), sizes)]
        }
    }

    pub(super) fn micros(&self) -> Range<usize> {
        self.micros.clone()
    }

    /// Micro-batch `i`'s weight in the group's mean.
    pub(super) fn weight(&self, i: usize) -> f64 {
        self.sizes[i] / self.total
    }

    /// Micro-batch `i`'s term of the group's mean of `value`.
    pub(super) fn term(&self, value: f64, i: usize) -> f64 {
        value * self.sizes[i] / self.total
    }
}

/// The report's values, summed as the groups of a step run.
pub(super) struct Sums<'s> {
    /// The whole step, for the means over all micro-batches.
    pub(super) step: Group<'s>,
    /// Number of groups, the divisor of the per-group means.
    groups: f64,
    loss: f64,
    perturbed_loss: Option<f64>,
    divergence: Option<f64>,
    radius: Option<f64>,
    eps_norm: Option<f64>,
    grad_norm: f64,
    /// With several groups, their pass-2 gradients summed (the gradients are cleared after each group).
    pub(super) grads: Option<Vec<Option<Tensor>>>,
}

/// ‖g‖₂, r and ‖ε‖₂ of one ascent.
pub(super) struct AscentNorms {
    pub(super) grad: f64,
    pub(super) radius: f64,
    pub(super) eps: f64,
}

impl<'s> Sums<'s> {
    pub(super) fn new(step: Group<'s>, groups: usize) -> Self {
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

    pub(super) fn add_loss(&mut self, loss: f64, i: usize) {
        self.loss += self.step.term(loss, i);
    }

    pub(super) fn add_perturbed_loss(&mut self, loss: f64, i: usize) {
        add(&mut self.perturbed_loss, self.step.term(loss, i));
    }

    /// A group's d and ‖g‖ (d's mean over groups is taken term by term, ‖g‖'s in the report).
    pub(super) fn add_group(&mut self, divergence: Option<f64>, grad_norm: f64) {
        if let Some(d) = divergence {
            add(&mut self.divergence, d / self.groups);
        }
        self.grad_norm += grad_norm;
    }

    /// A group's ascent radius and ‖ε‖.
    pub(super) fn add_ascent(&mut self, norms: &AscentNorms) {
        add(&mut self.radius, norms.radius / self.groups);
        add(&mut self.eps_norm, norms.eps / self.groups);
    }

    /// Adds a group's gradients to the sum over groups.
    pub(super) fn accumulate(&mut self, grads: Vec<Option<Tensor>>) {
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

    pub(super) fn report(&self, step: u64, lr: f64, descent_grad_norm: f64, cost: StepCost) -> StepReport {
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
            loss_scale: None,
        }
    }
}

/// `slot += value`, starting from 0.
pub(super) fn add(slot: &mut Option<f64>, value: f64) {
    *slot.get_or_insert(0.0) += value;
}
