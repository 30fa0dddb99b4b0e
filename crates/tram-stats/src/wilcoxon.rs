//! Wilcoxon signed-rank test, as `scipy.stats.wilcoxon` with its defaults
//! (`zero_method="wilcox"`, `correction=False`, `method="auto"`; SciPy ≥ 1.15 behaviour, checked on 1.17).

use crate::{Alternative, StatsError};

/// Largest sample (counting zero differences) for which SciPy's `method="auto"` uses an exact null distribution.
const EXACT_MAX_N: usize = 50;
/// Largest sample (counting zero differences) whose 2ⁿ sign flips SciPy's `method="auto"` enumerates when there
/// are ties or zeros (`2¹³ ≤ 9999`, the default `n_resamples` of `scipy.stats.permutation_test`).
const PERMUTATION_MAX_N: usize = 13;

/// How the p-value was obtained; `method="auto"` picks it from the data exactly as SciPy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WilcoxonMethod {
    /// No ties, no zeros and `n ≤ 50`: the exact null distribution of `R⁺` (2ⁿ equally likely sign patterns).
    Exact,
    /// Ties or zeros and `n ≤ 13` (zeros counted): every one of the 2ⁿ sign flips of the observed differences,
    /// with the tied (average) ranks — the deterministic `scipy.stats.permutation_test` SciPy runs.
    Permutation,
    /// Otherwise (`n > 50`, or ties / zeros with `n > 13`): normal approximation with the tie correction and
    /// no continuity correction.
    Asymptotic,
}

/// Result of [`wilcoxon`] / [`wilcoxon_differences`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wilcoxon {
    /// SciPy's `statistic`: `min(R⁺, R⁻)` for the two-sided test, `R⁺` for a one-sided one.
    pub statistic: f64,
    /// SciPy's `pvalue`.
    pub pvalue: f64,
    /// How the p-value was computed.
    pub method: WilcoxonMethod,
    /// Number of non-zero differences (zeros are dropped, `zero_method="wilcox"`).
    pub n_nonzero: usize,
    /// Sum of the (average) ranks of `|d|` over the positive differences.
    pub r_plus: f64,
    /// Sum of the (average) ranks of `|d|` over the negative differences.
    pub r_minus: f64,
    /// The standardized statistic `(R⁺ − n(n+1)/4) / σ` (tie-corrected σ); set for [`WilcoxonMethod::Asymptotic`].
    pub z: Option<f64>,
}

/// Wilcoxon signed-rank test on paired samples, `scipy.stats.wilcoxon(x, y, alternative=...)`: the test of
/// [`wilcoxon_differences`] on `dᵢ = xᵢ − yᵢ` (pair `i` is one seed). [`Alternative::Greater`] means that `x`
/// tends to exceed `y`.
///
/// # Errors
/// Different lengths, empty input, a NaN / infinite value, or no non-zero difference.
pub fn wilcoxon(x: &[f64], y: &[f64], alternative: Alternative) -> Result<Wilcoxon, StatsError> {
    if x.len() != y.len() {
        return Err(StatsError::LengthMismatch { left: x.len(), right: y.len() });
    }
    crate::check_finite("x", x)?;
    crate::check_finite("y", y)?;
    let d: Vec<f64> = x.iter().zip(y).map(|(a, b)| a - b).collect();
    wilcoxon_differences(&d, alternative)
}

/// Wilcoxon signed-rank test of "the differences `d` are symmetric about zero", `scipy.stats.wilcoxon(d, ...)`.
///
/// Zero differences are dropped (`zero_method="wilcox"`), the rest are ranked by `|dᵢ|` (average ranks for
/// ties), and `R⁺` is the rank sum of the positive ones. The method follows SciPy's `method="auto"` (see
/// [`WilcoxonMethod`]); the exact one rounds a non-integral `R⁺` up for the lower tail and down for the upper tail
/// (gh-19872), the two-sided p-value is twice the smaller tail, capped at 1.
///
/// The exact null distribution (the number of subsets of `{1, …, n}` with each rank sum, counted in integers)
/// and the sign-flip enumeration are written here: `statrs` has no signed-rank distribution. Both are exact in
/// integers, so these p-values equal SciPy's bit for bit; the normal tail uses `libm`'s `erf` / `erfc`.
///
/// # Errors
/// Empty input, a NaN / infinite value, or no non-zero difference.
pub fn wilcoxon_differences(d: &[f64], alternative: Alternative) -> Result<Wilcoxon, StatsError> {
    crate::check_finite("d", d)?;
    let n_total = d.len();
    let nonzero: Vec<f64> = d.iter().copied().filter(|v| *v != 0.0).collect();
    let n = nonzero.len();
    if n == 0 {
        return Err(StatsError::AllZeroDifferences);
    }
    let has_zeros = n < n_total;

    // Average ranks of |d|, doubled so that they are integers: a tie group over sorted positions i..=j
    // (1-based) has rank (i + j) / 2.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| nonzero[a].abs().total_cmp(&nonzero[b].abs()));
    let mut rank2 = vec![0u64; n];
    let mut tie_sizes = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = start;
        while end + 1 < n && nonzero[order[end + 1]].abs() == nonzero[order[start]].abs() {
            end += 1;
        }
        for &k in &order[start..=end] {
            rank2[k] = (start + 1 + end + 1) as u64;
        }
        tie_sizes.push(end - start + 1);
        start = end + 1;
    }
    let has_ties = tie_sizes.iter().any(|&t| t > 1);
    let r_plus2: u64 = (0..n).filter(|&k| nonzero[k] > 0.0).map(|k| rank2[k]).sum();
    let r_minus2: u64 = (0..n).filter(|&k| nonzero[k] < 0.0).map(|k| rank2[k]).sum();
    let r_plus = r_plus2 as f64 / 2.0;
    let r_minus = r_minus2 as f64 / 2.0;

    let method = if n_total > EXACT_MAX_N {
        WilcoxonMethod::Asymptotic
    } else if !(has_ties || has_zeros) {
        WilcoxonMethod::Exact
    } else if n_total <= PERMUTATION_MAX_N {
        WilcoxonMethod::Permutation
    } else {
        WilcoxonMethod::Asymptotic
    };

    let mut z = None;
    let pvalue = match method {
        WilcoxonMethod::Exact => {
            // No ties: ranks are 1..=n and R⁺ is an integer.
            let counts = signed_rank_counts(n);
            let total = 2f64.powi(n as i32);
            let k = (r_plus2 / 2) as usize;
            let cdf = counts[..=k].iter().sum::<u64>() as f64 / total;
            let sf = counts[k..].iter().sum::<u64>() as f64 / total;
            tail_pvalue(alternative, cdf, sf)
        }
        WilcoxonMethod::Permutation => {
            // Flipping the sign of dᵢ keeps every rank; zeros stay zero, so they only double each count.
            let (mut le, mut ge) = (0u64, 0u64);
            for mask in 0u32..(1u32 << n) {
                let s: u64 = (0..n).filter(|&k| mask & (1 << k) != 0).map(|k| rank2[k]).sum();
                le += u64::from(s <= r_plus2);
                ge += u64::from(s >= r_plus2);
            }
            let total = f64::from(1u32 << n);
            tail_pvalue(alternative, le as f64 / total, ge as f64 / total)
        }
        WilcoxonMethod::Asymptotic => {
            let count = n as f64;
            let mn = count * (count + 1.0) * 0.25;
            let se = count * (count + 1.0) * (2.0 * count + 1.0);
            let tie_correct: f64 = tie_sizes.iter().map(|&t| (t as f64).powi(3) - t as f64).sum();
            let se = ((se - tie_correct / 2.0) / 24.0).sqrt();
            let zz = (r_plus - mn) / se;
            z = Some(zz);
            match alternative {
                Alternative::TwoSided => 2.0 * ndtr(-zz.abs()),
                Alternative::Greater => ndtr(-zz),
                Alternative::Less => ndtr(zz),
            }
        }
    };

    let statistic = match alternative {
        Alternative::TwoSided => r_plus.min(r_minus),
        _ => r_plus,
    };
    Ok(Wilcoxon { statistic, pvalue, method, n_nonzero: n, r_plus, r_minus, z })
}

/// p-value from the lower tail `P(T ≤ t)` and upper tail `P(T ≥ t)` of a null distribution.
fn tail_pvalue(alternative: Alternative, cdf: f64, sf: f64) -> f64 {
    match alternative {
        Alternative::Less => cdf,
        Alternative::Greater => sf,
        Alternative::TwoSided => (2.0 * cdf.min(sf)).clamp(0.0, 1.0),
    }
}

/// `counts[s]` = number of subsets of `{1, …, n}` whose sum is `s`, for `s = 0 ..= n(n+1)/2`: the exact null
/// distribution of the signed-rank statistic is `counts / 2ⁿ`. Exact in `u64` for `n ≤ 63`.
pub(crate) fn signed_rank_counts(n: usize) -> Vec<u64> {
    let max = n * (n + 1) / 2;
    let mut counts = vec![0u64; max + 1];
    counts[0] = 1;
    for k in 1..=n {
        let top = k * (k + 1) / 2;
        for s in (k..=top).rev() {
            counts[s] += counts[s - k];
        }
    }
    counts
}

/// Standard normal CDF, evaluated as `scipy.special.ndtr` does: `½ + ½ erf(x/√2)` near zero, `½ erfc(|x|/√2)`
/// (reflected) in the tails. `erf` / `erfc` come from the `libm` crate (musl's, below 1 ulp): `statrs`' ones
/// are off by up to 1e-10 relative.
pub(crate) fn ndtr(a: f64) -> f64 {
    let x = a * std::f64::consts::FRAC_1_SQRT_2;
    let z = x.abs();
    if z < std::f64::consts::FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(x)
    } else {
        let y = 0.5 * libm::erfc(z);
        if x > 0.0 {
            1.0 - y
        } else {
            y
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_all_positive_n8() {
        // R⁺ = 36 is attained only by the all-positive pattern: one-sided 1/2⁸, two-sided 2/2⁸.
        let d = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let two = wilcoxon_differences(&d, Alternative::TwoSided).unwrap();
        assert_eq!((two.method, two.statistic, two.pvalue), (WilcoxonMethod::Exact, 0.0, 0.0078125));
        let greater = wilcoxon_differences(&d, Alternative::Greater).unwrap();
        assert_eq!((greater.statistic, greater.pvalue), (36.0, 1.0 / 256.0));
        assert_eq!(wilcoxon_differences(&d, Alternative::Less).unwrap().pvalue, 1.0);
    }

    #[test]
    fn exact_small_distribution_by_hand() {
        // n = 3: subsets of {1,2,3} by sum: 0:{} 1:{1} 2:{2} 3:{3},{1,2} 4:{1,3} 5:{2,3} 6:{1,2,3}.
        assert_eq!(signed_rank_counts(3), vec![1, 1, 1, 2, 1, 1, 1]);
        // d = (-1, 2, 3): R⁺ = 5, P(R⁺ ≥ 5) = 2/8, P(R⁺ ≤ 5) = 7/8.
        let r = wilcoxon_differences(&[-1.0, 2.0, 3.0], Alternative::Greater).unwrap();
        assert_eq!((r.r_plus, r.r_minus, r.pvalue), (5.0, 1.0, 0.25));
        let r = wilcoxon_differences(&[-1.0, 2.0, 3.0], Alternative::TwoSided).unwrap();
        assert_eq!((r.statistic, r.pvalue), (1.0, 0.5));
        // Σ counts = 2ⁿ
        assert_eq!(signed_rank_counts(20).iter().sum::<u64>(), 1 << 20);
    }

    #[test]
    fn permutation_with_a_zero_and_a_tie() {
        // d = (0, 1, -1, 2): zero dropped, |1| = |−1| tie at ranks 1.5, 2 has rank 3. R⁺ = 4.5.
        // Sign patterns of the three non-zero values give R⁺ ∈ {0, 1.5, 1.5, 3, 3, 4.5, 4.5, 6}: P(R⁺ ≥ 4.5) = 3/8.
        let r = wilcoxon_differences(&[0.0, 1.0, -1.0, 2.0], Alternative::Greater).unwrap();
        assert_eq!((r.method, r.n_nonzero, r.r_plus, r.pvalue), (WilcoxonMethod::Permutation, 3, 4.5, 0.375));
    }

    #[test]
    fn asymptotic_normal_tail() {
        // 60 distinct positive differences: R⁺ = 1830, mean 915, σ² = 60·61·121/24, z = 915/σ.
        let d: Vec<f64> = (1..=60).map(f64::from).collect();
        let r = wilcoxon_differences(&d, Alternative::Greater).unwrap();
        let z = 915.0 / (60.0f64 * 61.0 * 121.0 / 24.0).sqrt();
        assert_eq!(r.method, WilcoxonMethod::Asymptotic);
        assert!((r.z.unwrap() - z).abs() < 1e-12);
        assert!(r.pvalue > 0.0 && r.pvalue < 1e-10);
        assert_eq!((ndtr(0.0), ndtr(1.959963984540054)), (0.5, 0.975));
    }

    #[test]
    fn errors() {
        assert_eq!(wilcoxon_differences(&[0.0, 0.0], Alternative::TwoSided), Err(StatsError::AllZeroDifferences));
        assert_eq!(
            wilcoxon(&[1.0, 2.0], &[1.0], Alternative::TwoSided),
            Err(StatsError::LengthMismatch { left: 2, right: 1 })
        );
        assert_eq!(wilcoxon_differences(&[], Alternative::TwoSided), Err(StatsError::Empty("d")));
        assert_eq!(wilcoxon_differences(&[1.0, f64::NAN], Alternative::Less), Err(StatsError::NonFinite("d")));
    }
}
