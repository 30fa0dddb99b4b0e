//! Where the seed-to-seed variance of a paired difference comes from, and how many seeds a given precision needs.
//!
//! A method pair is run on `S` seeds and evaluated on the same `n` test examples each time. Per seed `s` and
//! example `i`, `x_si` is what the example contributes to the difference (`1/0` correctness of `a` minus that of
//! `b` for accuracy), and the reported difference is the weighted mean `d_s = Σᵢ wᵢ x_si` (`wᵢ = 1/n` for one set;
//! `1/(K n_k)` for the macro-average over `K` sets). Its variance over seeds splits exactly into
//!
//! `Var(d) = Σᵢ wᵢ² Var(xᵢ) + Σ_{i≠j} wᵢ wⱼ Cov(xᵢ, xⱼ)`,
//!
//! the *per-example* part (examples flip independently from seed to seed: it falls as `1/n` when the test sets
//! grow) and the *shared* part (a seed moves many examples together: no test set makes it smaller, only more
//! seeds do). With sample (co)variances over the seeds the split is an identity, so both parts are estimated
//! from one set of runs.

use crate::{student_t_quantile, StatsError};

/// The split of `Var(d)` over seeds (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VarianceSources {
    /// Seeds `S`.
    pub seeds: usize,
    /// Examples `n` per seed.
    pub examples: usize,
    /// Mean of `d_s` over the seeds.
    pub mean: f64,
    /// Sample variance of `d_s` over the seeds (`S − 1` in the denominator).
    pub total: f64,
    /// `Σᵢ wᵢ² Var(xᵢ)`: the part that shrinks with larger test sets.
    pub per_example: f64,
    /// `total − per_example`: what the seed moves in common; an estimate, negative by chance when it is small.
    pub shared: f64,
}

impl VarianceSources {
    /// Predicted variance of `d` with test sets `scale` times as large, drawn like these:
    /// `per_example / scale + max(shared, 0)`.
    pub fn variance_at(&self, scale: f64) -> f64 {
        self.per_example / scale + self.shared.max(0.0)
    }

    /// The per-example part's share of the total, in `[0, 1]` (1 when the total is 0).
    pub fn per_example_share(&self) -> f64 {
        if self.total > 0.0 {
            (self.per_example / self.total).clamp(0.0, 1.0)
        } else {
            1.0
        }
    }

    /// Smallest number of seeds `S ≥ 2` whose paired-t 95 % half-width `t_{0.975, S−1} · √(V / S)` is at most
    /// `half_width`, with `V` = [`Self::variance_at`]`(scale)`; `None` if more than `max_seeds` would be needed.
    pub fn seeds_for(&self, half_width: f64, scale: f64, max_seeds: usize) -> Option<usize> {
        let v = self.variance_at(scale);
        (2..=max_seeds).find(|&s| half_width_at(v, s) <= half_width)
    }

    /// The smallest true difference a two-sided paired t-test at level 0.05 detects with 80 % power on `seeds`
    /// seeds: `(t_{0.975, S−1} + t_{0.8, S−1}) · √(V / S)`, `V` = [`Self::variance_at`]`(scale)`.
    pub fn detectable(&self, seeds: usize, scale: f64) -> f64 {
        if seeds < 2 {
            return f64::NAN;
        }
        let df = (seeds - 1) as f64;
        (student_t_quantile(0.975, df) + student_t_quantile(0.8, df)) * (self.variance_at(scale) / seeds as f64).sqrt()
    }
}

/// `t_{0.975, S−1} · √(V / S)`.
fn half_width_at(variance: f64, seeds: usize) -> f64 {
    student_t_quantile(0.975, (seeds - 1) as f64) * (variance / seeds as f64).sqrt()
}

/// The split of the variance of `d_s = Σᵢ wᵢ x_si` over seeds; `per_seed[s][i]` is `x_si` (the same examples, in
/// the same order, for every seed), `weights[i]` is `wᵢ`.
///
/// # Errors
/// Fewer than two seeds, no example, rows of different lengths or another length than `weights`, a NaN or
/// infinite value.
pub fn variance_sources(per_seed: &[Vec<f64>], weights: &[f64]) -> Result<VarianceSources, StatsError> {
    let seeds = per_seed.len();
    if seeds < 2 {
        return Err(StatsError::TooFew { what: "the variance over seeds", need: 2, got: seeds });
    }
    let n = weights.len();
    if n == 0 {
        return Err(StatsError::Empty("weights"));
    }
    crate::check_finite("weights", weights)?;
    for row in per_seed {
        if row.len() != n {
            return Err(StatsError::LengthMismatch { left: row.len(), right: n });
        }
        crate::check_finite("per-example values", row)?;
    }
    let d: Vec<f64> = per_seed.iter().map(|row| row.iter().zip(weights).map(|(x, w)| w * x).sum()).collect();
    let mean = crate::mean(&d);
    let total = d.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (seeds - 1) as f64;
    let mut per_example = 0.0;
    for (i, w) in weights.iter().enumerate() {
        let m = per_seed.iter().map(|row| row[i]).sum::<f64>() / seeds as f64;
        let var = per_seed.iter().map(|row| (row[i] - m) * (row[i] - m)).sum::<f64>() / (seeds - 1) as f64;
        per_example += w * w * var;
    }
    Ok(VarianceSources { seeds, examples: n, mean, total, per_example, shared: total - per_example })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_examples_three_seeds_by_hand() {
        // Example 0 is 1, 0, −1 over the seeds; example 1 is always 0.
        let x = vec![vec![1.0, 0.0], vec![0.0, 0.0], vec![-1.0, 0.0]];
        let v = variance_sources(&x, &[0.5, 0.5]).unwrap();
        // d = (0.5, 0, −0.5): variance 0.25; Var(x₀) = 1, weight² 0.25: everything is per example.
        assert_eq!((v.seeds, v.examples, v.mean, v.total, v.per_example, v.shared), (3, 2, 0.0, 0.25, 0.25, 0.0));
        // Both examples move together: Var(d) = 1, per-example part 0.25 + 0.25, the rest shared.
        let y = vec![vec![1.0, 1.0], vec![0.0, 0.0], vec![-1.0, -1.0]];
        let v = variance_sources(&y, &[0.5, 0.5]).unwrap();
        assert_eq!((v.total, v.per_example, v.shared), (1.0, 0.5, 0.5));
        assert_eq!(v.per_example_share(), 0.5);
        // Opposite moves cancel in d: total 0, a negative shared part, clamped in predictions.
        let z = vec![vec![1.0, -1.0], vec![0.0, 0.0], vec![-1.0, 1.0]];
        let v = variance_sources(&z, &[0.5, 0.5]).unwrap();
        assert_eq!((v.total, v.per_example, v.shared), (0.0, 0.5, -0.5));
        assert_eq!(v.variance_at(2.0), 0.25);
    }

    #[test]
    fn the_split_is_the_double_sum_of_covariances() {
        // Arbitrary values: Σᵢⱼ wᵢ wⱼ Cov(xᵢ, xⱼ) computed directly equals the total; its diagonal the first part.
        let x: Vec<Vec<f64>> = (0..5)
            .map(|s| (0..4).map(|i| ((s * 7 + i * 3) % 5) as f64 - 2.0 + 0.1 * (s * i) as f64).collect())
            .collect();
        let w = [0.1, 0.2, 0.3, 0.4];
        let v = variance_sources(&x, &w).unwrap();
        let col = |i: usize| x.iter().map(|r| r[i]).collect::<Vec<_>>();
        let cov = |a: &[f64], b: &[f64]| {
            let (ma, mb) = (crate::mean(a), crate::mean(b));
            a.iter().zip(b).map(|(p, q)| (p - ma) * (q - mb)).sum::<f64>() / (a.len() - 1) as f64
        };
        let (mut all, mut diag) = (0.0, 0.0);
        for i in 0..4 {
            for j in 0..4 {
                let c = w[i] * w[j] * cov(&col(i), &col(j));
                all += c;
                if i == j {
                    diag += c;
                }
            }
        }
        assert!((v.total - all).abs() < 1e-12 && (v.per_example - diag).abs() < 1e-12, "{v:?} vs {all}, {diag}");
    }

    #[test]
    fn seeds_and_detectable_differences_follow_the_t_quantiles() {
        let v = VarianceSources { seeds: 3, examples: 10, mean: 0.0, total: 4.0, per_example: 3.0, shared: 1.0 };
        // Variance 4: S seeds give t_{0.975, S−1} · 2 / √S; S = 18 is the first at most 1 (t_{0.975, 17} = 2.1098).
        assert_eq!(v.seeds_for(1.0, 1.0, 1000), Some(18));
        assert!(half_width_at(4.0, 17) > 1.0 && half_width_at(4.0, 18) <= 1.0);
        // Test sets 3× as large: variance 3 · ⅓ + 1 = 2; S = 11 (t_{0.975, 10} · √(2/11) = 0.950; 10 seeds 1.012).
        assert_eq!(v.variance_at(3.0), 2.0);
        assert_eq!(v.seeds_for(1.0, 3.0, 1000), Some(11));
        assert_eq!(v.seeds_for(0.01, 1.0, 1000), None);
        // SciPy: t.ppf(0.975, 7) = 2.364624251592784, t.ppf(0.8, 7) = 0.8960296443137653; √(4 / 8).
        let d = v.detectable(8, 1.0);
        assert!((d - (2.364624251592784 + 0.8960296443137653) * 0.5f64.sqrt()).abs() < 1e-12, "{d}");
        assert!(v.detectable(1, 1.0).is_nan());
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(variance_sources(&[vec![1.0]], &[1.0]), Err(StatsError::TooFew { .. })));
        assert!(matches!(
            variance_sources(&[vec![1.0], vec![2.0, 3.0]], &[1.0]),
            Err(StatsError::LengthMismatch { .. })
        ));
        assert!(matches!(variance_sources(&[vec![1.0], vec![f64::NAN]], &[1.0]), Err(StatsError::NonFinite(_))));
        assert!(matches!(variance_sources(&[vec![], vec![]], &[]), Err(StatsError::Empty(_))));
    }
}
