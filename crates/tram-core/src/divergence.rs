//! Divergences d(target || current) between two models' outputs, for the trust-region radius (TRAM) and the
//! trust-region regularisers (TRPO, R3F, MESA).
//!
//! Logits of any shape `[..., C]` are read as rows of `C` classes: `[N, C]` for classification, `[N, T, V]`
//! for language models (each token a row). The reduction is explicit:
//! - [`Reduction::PerRow`] (default, the paper's Eq. 4/5): the divergence of each row's distributions, then the
//!   mean over rows, so per example for classifiers and per token for language models. A mask (padding) drops rows.
//! - [`Reduction::ReleasedCode`]: the scale of the released TRAM code, `F.kl_div(..., reduction="mean")` (a mean
//!   over every element, so divided by the class count) and a further division by the batch size (the first dim).
//!   It exists to reproduce that code's numbers; its radius is orders of magnitude smaller.
//!
//! All divergences are computed in at least float32, whatever the logits' dtype.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which divergence measures the trust region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DivergenceKind {
    /// KL(P_target || P_current): the paper's choice (App. C.5).
    KlForward,
    /// KL(P_current || P_target).
    KlReverse,
    /// KL(P_target || P_current) + KL(P_current || P_target), as R3F uses it.
    KlSymmetric,
    /// Euclidean distance between the logit vectors of each row.
    L2,
    /// Squared maximum mean discrepancy between the rows of the two logit sets, inverse multiquadric kernel
    /// k(a, b) = Σ_h h / (h + ‖a − b‖²) over bandwidths h ∈ {0.1, 0.2, 0.5, 1, 2, 5, 10} (biased estimator).
    /// It compares the two batches as samples, so it is a single value per batch, not a per-row mean.
    Mmd,
}

/// How per-row divergences become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reduction {
    #[default]
    PerRow,
    ReleasedCode,
}

/// A divergence with its reduction and a multiplier (`scale`, 1 by default; the released code calls it
/// `logit_scale`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Divergence {
    pub kind: DivergenceKind,
    #[serde(default)]
    pub reduction: Reduction,
    #[serde(default = "one")]
    pub scale: f64,
}

fn one() -> f64 {
    1.0
}

const MMD_BANDWIDTHS: [f64; 7] = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

impl Divergence {
    pub const fn new(kind: DivergenceKind) -> Self {
        Self { kind, reduction: Reduction::PerRow, scale: 1.0 }
    }

    /// d(target || current) as a scalar tensor. `mask`, if given, has one entry per row (non-zero = counts).
    /// Gradients flow through both arguments; detach the target when it must not receive any.
    pub fn compute(&self, target: &Tensor, current: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let batch = target.size().first().copied().unwrap_or(1).max(1) as f64;
        let classes = *target.size().last().unwrap_or(&1);
        let kind = if target.kind() == Kind::Double { Kind::Double } else { Kind::Float };
        let t = target.to_kind(kind).reshape([-1, classes]);
        let c = current.to_kind(kind).reshape([-1, classes]);
        let (t, c) = match mask {
            Some(m) => {
                let keep = m.reshape([-1]).ne(0).nonzero().squeeze_dim(1);
                (t.index_select(0, &keep), c.index_select(0, &keep))
            }
            None => (t, c),
        };
        let rows = match self.kind {
            DivergenceKind::KlForward => kl_rows(&t, &c),
            DivergenceKind::KlReverse => kl_rows(&c, &t),
            DivergenceKind::KlSymmetric => kl_rows(&t, &c) + kl_rows(&c, &t),
            DivergenceKind::L2 => (&c - &t).square().sum_dim_intlist(-1, false, kind).sqrt(),
            DivergenceKind::Mmd => return mmd_imq(&t, &c) * self.scale,
        };
        let d = match self.reduction {
            Reduction::PerRow => rows.mean(kind),
            Reduction::ReleasedCode => match self.kind {
                // F.kl_div(reduction="mean") averages over every element, then the code divides by the batch.
                DivergenceKind::KlForward | DivergenceKind::KlReverse | DivergenceKind::KlSymmetric => {
                    rows.mean(kind) / (classes as f64 * batch)
                }
                _ => rows.mean(kind) / batch,
            },
        };
        d * self.scale
    }
}

/// KL(P || Q) per row from logits p, q; clamped at 0, which rounding can undercut by a few ulps (a negative
/// radius would turn TRAM's ascent into a descent).
fn kl_rows(p: &Tensor, q: &Tensor) -> Tensor {
    let lp = p.log_softmax(-1, None);
    let lq = q.log_softmax(-1, None);
    if lp.requires_grad() || lq.requires_grad() {
        return (lp.exp() * (&lp - lq)).sum_dim_intlist(-1, false, None).clamp_min(0.0);
    }
    // No graph to keep (TRAM's radius): two full-size temporaries instead of five, the same numbers bit for bit
    // (lp + (−lq) is lp − lq in IEEE arithmetic). A language model's logits are [tokens, vocabulary]: 100 MB each
    // for 508 tokens of a 49k vocabulary, 1.6 GB for 8 × 1024 tokens of GPT-2's.
    let (mut p_prob, mut diff) = (lp, lq);
    let _ = diff.neg_().g_add_(&p_prob);
    let _ = p_prob.exp_().g_mul_(&diff);
    p_prob.sum_dim_intlist(-1, false, None).clamp_min(0.0)
}

fn mmd_imq(x: &Tensor, y: &Tensor) -> Tensor {
    let sq = |a: &Tensor, b: &Tensor| {
        let aa = a.square().sum_dim_intlist(-1, true, None);
        let bb = b.square().sum_dim_intlist(-1, true, None);
        (aa + bb.transpose(0, 1) - a.matmul(&b.transpose(0, 1)) * 2.0).clamp_min(0.0)
    };
    let kernel = |d: &Tensor| {
        let mut k = d.zeros_like();
        for h in MMD_BANDWIDTHS {
            k += (d + h).reciprocal() * h;
        }
        k
    };
    let kind = x.kind();
    kernel(&sq(x, x)).mean(kind) + kernel(&sq(y, y)).mean(kind) - kernel(&sq(x, y)).mean(kind) * 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f64], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).reshape(shape)
    }

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    /// Closed form: KL between two explicit distributions, written out by hand.
    fn kl(p: &[f64], q: &[f64]) -> f64 {
        p.iter().zip(q).map(|(a, b)| a * (a / b).ln()).sum()
    }

    fn softmax(l: &[f64]) -> Vec<f64> {
        let z: f64 = l.iter().map(|x| x.exp()).sum();
        l.iter().map(|x| x.exp() / z).collect()
    }

    #[test]
    fn kl_directions_match_closed_forms() {
        let (lt, lc) = ([1.0, 0.0, -1.0, 0.3, 2.0, -0.5], [0.2, 0.1, 0.0, -1.0, 1.0, 1.5]);
        let (target, current) = (t(&lt, &[2, 3]), t(&lc, &[2, 3]));
        let pt: Vec<Vec<f64>> = lt.chunks(3).map(softmax).collect();
        let pc: Vec<Vec<f64>> = lc.chunks(3).map(softmax).collect();
        let fwd = (kl(&pt[0], &pc[0]) + kl(&pt[1], &pc[1])) / 2.0;
        let rev = (kl(&pc[0], &pt[0]) + kl(&pc[1], &pt[1])) / 2.0;
        let d = |k| Divergence::new(k).compute(&target, &current, None).double_value(&[]);
        close(d(DivergenceKind::KlForward), fwd, 1e-12);
        close(d(DivergenceKind::KlReverse), rev, 1e-12);
        close(d(DivergenceKind::KlSymmetric), fwd + rev, 1e-12);
        assert!((fwd - rev).abs() > 1e-3, "the test needs asymmetric inputs");
    }

    #[test]
    fn kl_without_a_graph_equals_kl_with_one_bit_for_bit() {
        let p = Tensor::randn([7, 300], (Kind::Float, tch::Device::Cpu)) * 3.0;
        let q = &p + Tensor::randn([7, 300], (Kind::Float, tch::Device::Cpu)) * 0.1;
        let inplace = tch::no_grad(|| kl_rows(&p, &q));
        let graph = kl_rows(&p.set_requires_grad(true), &q);
        assert!(graph.requires_grad() && !inplace.requires_grad());
        assert!(graph.detach().equal(&inplace), "max diff {}", (graph - &inplace).abs().max().double_value(&[]));
        assert!(inplace.min().double_value(&[]) > 0.0);
        // The inputs are untouched.
        assert!(tch::no_grad(|| kl_rows(&p, &q)).equal(&inplace));
    }

    #[test]
    fn kl_of_gaussian_like_two_point_distributions() {
        // Two classes: logits (0, a) give Bernoulli(sigmoid(a)); KL has a closed form in the probabilities.
        let (a, b) = (0.7f64, -1.3f64);
        let (p, q) = (1.0 / (1.0 + (-a).exp()), 1.0 / (1.0 + (-b).exp()));
        let expect = p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - q)).ln();
        let d =
            Divergence::new(DivergenceKind::KlForward).compute(&t(&[0.0, a], &[1, 2]), &t(&[0.0, b], &[1, 2]), None);
        close(d.double_value(&[]), expect, 1e-12);
    }

    #[test]
    fn identical_outputs_have_zero_divergence() {
        let x = Tensor::randn([5, 7], (Kind::Double, tch::Device::Cpu));
        for k in [
            DivergenceKind::KlForward,
            DivergenceKind::KlReverse,
            DivergenceKind::KlSymmetric,
            DivergenceKind::L2,
            DivergenceKind::Mmd,
        ] {
            close(Divergence::new(k).compute(&x, &x, None).double_value(&[]), 0.0, 1e-12);
        }
    }

    #[test]
    fn sequences_reduce_per_token_and_mask_drops_rows() {
        let target = Tensor::randn([2, 3, 5], (Kind::Double, tch::Device::Cpu));
        let current = Tensor::randn([2, 3, 5], (Kind::Double, tch::Device::Cpu));
        let div = Divergence::new(DivergenceKind::KlForward);
        let per_token = kl_rows(&target.reshape([6, 5]), &current.reshape([6, 5]));
        close(
            div.compute(&target, &current, None).double_value(&[]),
            per_token.mean(Kind::Double).double_value(&[]),
            1e-12,
        );
        let mask = t(&[1.0, 1.0, 0.0, 1.0, 0.0, 0.0], &[2, 3]);
        let keep: f64 = [0usize, 1, 3].iter().map(|&i| per_token.double_value(&[i as i64])).sum::<f64>() / 3.0;
        close(div.compute(&target, &current, Some(&mask)).double_value(&[]), keep, 1e-12);
    }

    #[test]
    fn released_code_reduction_divides_by_classes_and_batch() {
        let target = Tensor::randn([4, 10], (Kind::Double, tch::Device::Cpu));
        let current = Tensor::randn([4, 10], (Kind::Double, tch::Device::Cpu));
        let paper = Divergence::new(DivergenceKind::KlForward).compute(&target, &current, None).double_value(&[]);
        let code = Divergence { reduction: Reduction::ReleasedCode, ..Divergence::new(DivergenceKind::KlForward) }
            .compute(&target, &current, None)
            .double_value(&[]);
        close(code, paper / 40.0, 1e-12);
    }

    #[test]
    fn l2_and_mmd_closed_forms() {
        let a = t(&[0.0, 0.0, 1.0, 1.0], &[2, 2]);
        let b = t(&[3.0, 4.0, 1.0, 1.0], &[2, 2]);
        close(Divergence::new(DivergenceKind::L2).compute(&a, &b, None).double_value(&[]), 2.5, 1e-12);
        // One row each: MMD² = k(x,x) + k(y,y) − 2k(x,y), with k(a,a) = Σ_h h/h = 7 and ‖x−y‖² = 5.
        let (x, y) = (t(&[0.0, 0.0], &[1, 2]), t(&[1.0, 2.0], &[1, 2]));
        let cross: f64 = MMD_BANDWIDTHS.iter().map(|h| h / (h + 5.0)).sum();
        close(Divergence::new(DivergenceKind::Mmd).compute(&x, &y, None).double_value(&[]), 14.0 - 2.0 * cross, 1e-12);
    }
}
