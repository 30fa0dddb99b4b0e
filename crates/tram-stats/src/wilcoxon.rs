//! Wilcoxon signed-rank test, as `scipy.stats.wilcoxon` with `zero_method="wilcox"` and `correction=False` (its
//! defaults) and `method` "auto", "exact" or "asymptotic" (rules checked against SciPy 1.17.1).

use crate::{Alternative, StatsError};

/// Largest sample (counting zero differences) for which SciPy's `method="auto"` uses an exact null distribution.
const EXACT_MAX_N: usize = 50;
/// Largest sample (counting zero differences) whose 2ⁿ sign flips SciPy's `method="auto"` enumerates when there
/// are ties or zeros (`2¹³ ≤ 9999`, the default `n_resamples` of `scipy.stats.permutation_test`).
const PERMUTATION_MAX_N: usize = 13;

/// Which null distribution to use: SciPy's `method=` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WilcoxonMode {
    /// `method="auto"` (SciPy 1.17.1): [`WilcoxonMethod::Asymptotic`] above 50 differences (zeros counted); else
    /// [`WilcoxonMethod::Exact`] without ties or zeros; else [`WilcoxonMethod::Permutation`] up to 13
    /// differences; else [`WilcoxonMethod::Asymptotic`].
    Auto,
    /// `method="exact"`: the tie-free null distribution of `n` non-zero differences even with ties or zeros, a
    /// half-integral `R⁺` rounded up for the lower tail and down for the upper one (SciPy's gh-19872 rule).
    Exact,
    /// `method="asymptotic"`: the normal approximation with the tie correction.
    Asymptotic,
}

/// How the p-value was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WilcoxonMethod {
    /// The null distribution of `R⁺` over the 2ⁿ equally likely sign patterns of ranks `1..=n` (`n` non-zero
    /// differences).
    Exact,
    /// Every one of the 2ⁿ sign flips of the observed differences, with the tied (average) ranks — the
    /// deterministic `scipy.stats.permutation_test` SciPy's `method="auto"` runs.
    Permutation,
    /// Normal approximation with the tie correction and no continuity correction.
    Asymptotic,
}

/// Result of [`wilcoxon`], [`wilcoxon_counts`] and [`wilcoxon_differences`].
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

/// Wilcoxon signed-rank test on paired samples, `scipy.stats.wilcoxon(x, y, alternative=...)` (`method="auto"`):
/// the test of [`wilcoxon_differences`] on `dᵢ = xᵢ − yᵢ` (pair `i` is one seed). [`Alternative::Greater`] means
/// that `x` tends to exceed `y`. For accuracies use [`wilcoxon_counts`]: `k/n − k'/n` in floating point splits
/// equal differences.
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
    wilcoxon_differences(&d, alternative, WilcoxonMode::Auto)
}

/// Wilcoxon signed-rank test on paired accuracies given as counts: pair `j` compares `Σᵢ x[j][i]/sizes[i] / K`
/// with `Σᵢ y[j][i]/sizes[i] / K`, the macro-average over the same `K` sets (`K = 1`: one set), exactly.
///
/// Each difference is formed in integers, `Σᵢ (x[j][i] − y[j][i]) · L/sizes[i]` with `L = lcm(sizes)`: the
/// exact difference times `K·L`, a factor shared by every pair that changes no rank. Equal differences are
/// thus equal numbers and tie, as in `scipy.stats.wilcoxon` on the exact values (`i128 as f64` is exact below
/// 2⁵³ and monotone above, so the order is kept).
///
/// # Errors
/// Different numbers of pairs or of sets, no pair or set, a set of size 0, a count above its set's size, an
/// `i128` overflow of `L` or a difference, or no non-zero difference.
pub fn wilcoxon_counts(
    x: &[Vec<u64>],
    y: &[Vec<u64>],
    sizes: &[u64],
    alternative: Alternative,
    mode: WilcoxonMode,
) -> Result<Wilcoxon, StatsError> {
    if x.len() != y.len() {
        return Err(StatsError::LengthMismatch { left: x.len(), right: y.len() });
    }
    if x.is_empty() {
        return Err(StatsError::Empty("x"));
    }
    if sizes.is_empty() {
        return Err(StatsError::Empty("sizes"));
    }
    let overflow = StatsError::Overflow("the common denominator of the counts' differences");
    let mut lcm: i128 = 1;
    for &n in sizes {
        if n == 0 {
            return Err(StatsError::Empty("a set"));
        }
        let n = i128::from(n);
        lcm = (lcm / gcd(lcm, n)).checked_mul(n).ok_or_else(|| overflow.clone())?;
    }
    let mut d = Vec::with_capacity(x.len());
    for (a, b) in x.iter().zip(y) {
        for row in [a, b] {
            if row.len() != sizes.len() {
                return Err(StatsError::LengthMismatch { left: row.len(), right: sizes.len() });
            }
        }
        let mut sum: i128 = 0;
        for ((&ka, &kb), &n) in a.iter().zip(b).zip(sizes) {
            for k in [ka, kb] {
                if k > n {
                    return Err(StatsError::CountAboveSize { count: k, size: n });
                }
            }
            let term = (i128::from(ka) - i128::from(kb)).checked_mul(lcm / i128::from(n));
            sum = term.and_then(|t| sum.checked_add(t)).ok_or_else(|| overflow.clone())?;
        }
        d.push(sum as f64);
    }
    wilcoxon_differences(&d, alternative, mode)
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Wilcoxon signed-rank test of "the differences `d` are symmetric about zero", `scipy.stats.wilcoxon(d, ...,
/// method=...)`.
///
/// Zero differences are dropped (`zero_method="wilcox"`), the rest are ranked by `|dᵢ|` (average ranks for
/// ties), and `R⁺` is the rank sum of the positive ones; the two-sided p-value is twice the smaller tail, capped
/// at 1. Ties and zeros are exact `f64` equality, as in SciPy: differences must be formed so that equal ones are
/// equal numbers (counts: [`wilcoxon_counts`]).
///
/// The null distribution of `R⁺` is SciPy's recursion over `n` (`_get_wilcoxon_distr`), exact in `f64` up to
/// `n = 53`; the sign-flip enumeration sums integers; the normal tail uses `libm`'s `erf` / `erfc`. `statrs`
/// has no signed-rank distribution.
///
/// # Errors
/// Empty input, a NaN / infinite value, or no non-zero difference.
pub fn wilcoxon_differences(d: &[f64], alternative: Alternative, mode: WilcoxonMode) -> Result<Wilcoxon, StatsError> {
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

    let method = match mode {
        WilcoxonMode::Exact => WilcoxonMethod::Exact,
        WilcoxonMode::Asymptotic => WilcoxonMethod::Asymptotic,
        WilcoxonMode::Auto if n_total > EXACT_MAX_N => WilcoxonMethod::Asymptotic,
        WilcoxonMode::Auto if !(has_ties || has_zeros) => WilcoxonMethod::Exact,
        WilcoxonMode::Auto if n_total <= PERMUTATION_MAX_N => WilcoxonMethod::Permutation,
        WilcoxonMode::Auto => WilcoxonMethod::Asymptotic,
    };

    let mut z = None;
    let pvalue = match method {
        WilcoxonMethod::Exact => {
            // Without ties R⁺ is an integer; with them (mode Exact) its floor / ceiling (gh-19872).
            let dist = SignedRankDistribution::new(n);
            let (floor, ceil) = ((r_plus2 / 2) as usize, r_plus2.div_ceil(2) as usize);
            tail_pvalue(alternative, dist.cdf(ceil), dist.sf(floor))
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

/// The null distribution of `R⁺` for `n` untied non-zero differences, as SciPy's `WilcoxonDistribution`.
struct SignedRankDistribution {
    pmf: Vec<f64>,
    mean: f64,
}

impl SignedRankDistribution {
    fn new(n: usize) -> Self {
        Self { pmf: signed_rank_pmf(n), mean: (n * (n + 1)) as f64 / 4.0 }
    }

    /// `P(R⁺ ≤ k)`, summing the nearer tail as SciPy does (`1 − sf(k + 1)` above the mean).
    fn cdf(&self, k: usize) -> f64 {
        if k as f64 <= self.mean {
            self.pmf[..=k].iter().sum()
        } else {
            1.0 - self.pmf[k + 1..].iter().sum::<f64>()
        }
    }

    /// `P(R⁺ ≥ k)` (`1 − cdf(k − 1)` above the mean).
    fn sf(&self, k: usize) -> f64 {
        if k as f64 <= self.mean {
            self.pmf[k..].iter().sum()
        } else {
            1.0 - self.pmf[..k].iter().sum::<f64>()
        }
    }
}

/// `pmf[s] = P(R⁺ = s)` for `s = 0 ..= n(n+1)/2`: SciPy's recursion, adding rank `k` to half of the patterns.
/// Every value is `count / 2ⁿ`, exact in `f64` (and so are the tail sums) while `2ⁿ ≤ 2⁵³`.
fn signed_rank_pmf(n: usize) -> Vec<f64> {
    let mut pmf = vec![0.0; n * (n + 1) / 2 + 1];
    pmf[0] = 1.0;
    for k in 1..=n {
        let top = k * (k + 1) / 2;
        for s in (0..=top).rev() {
            let without = pmf[s] * 0.5;
            let with = if s >= k { pmf[s - k] * 0.5 } else { 0.0 };
            pmf[s] = without + with;
        }
    }
    pmf
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

    fn auto(d: &[f64], alternative: Alternative) -> Wilcoxon {
        wilcoxon_differences(d, alternative, WilcoxonMode::Auto).unwrap()
    }

    #[test]
    fn exact_all_positive_n8() {
        // R⁺ = 36 is attained only by the all-positive pattern: one-sided 1/2⁸, two-sided 2/2⁸.
        let d = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let two = auto(&d, Alternative::TwoSided);
        assert_eq!((two.method, two.statistic, two.pvalue), (WilcoxonMethod::Exact, 0.0, 0.0078125));
        let greater = auto(&d, Alternative::Greater);
        assert_eq!((greater.statistic, greater.pvalue), (36.0, 1.0 / 256.0));
        assert_eq!(auto(&d, Alternative::Less).pvalue, 1.0);
    }

    #[test]
    fn exact_small_distribution_by_hand() {
        // n = 3: subsets of {1,2,3} by sum: 0:{} 1:{1} 2:{2} 3:{3},{1,2} 4:{1,3} 5:{2,3} 6:{1,2,3}.
        assert_eq!(signed_rank_pmf(3), [1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0].map(|c| c / 8.0));
        // d = (-1, 2, 3): R⁺ = 5, P(R⁺ ≥ 5) = 2/8, P(R⁺ ≤ 5) = 7/8.
        let r = auto(&[-1.0, 2.0, 3.0], Alternative::Greater);
        assert_eq!((r.r_plus, r.r_minus, r.pvalue), (5.0, 1.0, 0.25));
        let r = auto(&[-1.0, 2.0, 3.0], Alternative::TwoSided);
        assert_eq!((r.statistic, r.pvalue), (1.0, 0.5));
        // Σ pmf = 1 exactly while 2ⁿ ≤ 2⁵³; both tails of a symmetric law agree.
        let dist = SignedRankDistribution::new(20);
        assert_eq!(dist.pmf.iter().sum::<f64>(), 1.0);
        assert_eq!((dist.cdf(60), dist.sf(150)), (dist.sf(150), dist.cdf(60)));
        assert_eq!(dist.cdf(210), 1.0);
    }

    #[test]
    fn permutation_with_a_zero_and_a_tie() {
        // d = (0, 1, -1, 2): zero dropped, |1| = |−1| tie at ranks 1.5, 2 has rank 3. R⁺ = 4.5.
        // Sign patterns of the three non-zero values give R⁺ ∈ {0, 1.5, 1.5, 3, 3, 4.5, 4.5, 6}: P(R⁺ ≥ 4.5) = 3/8.
        let r = auto(&[0.0, 1.0, -1.0, 2.0], Alternative::Greater);
        assert_eq!((r.method, r.n_nonzero, r.r_plus, r.pvalue), (WilcoxonMethod::Permutation, 3, 4.5, 0.375));
    }

    #[test]
    fn exact_mode_with_a_zero_and_a_tie_rounds_the_statistic() {
        // The same d under method="exact": the untied law of n = 3, R⁺ = 4.5 taken as 4 for the upper tail
        // (P(R⁺ ≥ 4) = 3/8) and as 5 for the lower one (P(R⁺ ≤ 5) = 7/8).
        let d = [0.0, 1.0, -1.0, 2.0];
        let p = |alternative| wilcoxon_differences(&d, alternative, WilcoxonMode::Exact).unwrap();
        assert_eq!(p(Alternative::Greater).method, WilcoxonMethod::Exact);
        assert_eq!(
            [Alternative::Greater, Alternative::Less, Alternative::TwoSided].map(|a| p(a).pvalue),
            [0.375, 0.875, 0.75]
        );
    }

    #[test]
    fn asymptotic_normal_tail() {
        // 60 distinct positive differences: R⁺ = 1830, mean 915, σ² = 60·61·121/24, z = 915/σ.
        let d: Vec<f64> = (1..=60).map(f64::from).collect();
        let r = auto(&d, Alternative::Greater);
        let z = 915.0 / (60.0f64 * 61.0 * 121.0 / 24.0).sqrt();
        assert_eq!(r.method, WilcoxonMethod::Asymptotic);
        assert!((r.z.unwrap() - z).abs() < 1e-12);
        assert!(r.pvalue > 0.0 && r.pvalue < 1e-10);
        assert_eq!((ndtr(0.0), ndtr(1.959963984540054)), (0.5, 0.975));
        // Forced on a small tie-free sample: the normal tail, not the exact 1/2⁸.
        let r = wilcoxon_differences(&d[..8], Alternative::Greater, WilcoxonMode::Asymptotic).unwrap();
        assert_eq!(r.method, WilcoxonMethod::Asymptotic);
        assert!((r.pvalue - ndtr(-18.0 / (8.0f64 * 9.0 * 17.0 / 24.0).sqrt())).abs() < 1e-15);
    }

    #[test]
    fn counts_tie_where_float_differences_do_not() {
        // 3/334 − 2/334 and 4/334 − 3/334 differ in floating point although both are 1/334.
        let n = 334.0;
        assert_ne!(3.0 / n - 2.0 / n, 4.0 / n - 3.0 / n);
        let x = [3, 4, 9, 1, 5].map(|k| vec![k]);
        let y = [2, 3, 7, 1, 7].map(|k| vec![k]);
        let r = wilcoxon_counts(&x, &y, &[334], Alternative::TwoSided, WilcoxonMode::Auto).unwrap();
        // Δk = (1, 1, 2, 0, −2): one zero, |2| twice, |1| twice: the sign-flip enumeration on those differences.
        assert_eq!(r, auto(&[1.0, 1.0, 2.0, 0.0, -2.0], Alternative::TwoSided));
        assert_eq!((r.method, r.n_nonzero, r.r_plus, r.r_minus), (WilcoxonMethod::Permutation, 4, 6.5, 3.5));
        let float: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a[0] as f64 / n - b[0] as f64 / n).collect();
        assert_ne!(auto(&float, Alternative::TwoSided).r_plus, r.r_plus, "the float differences split the ties");
    }

    #[test]
    fn counts_over_sets_of_different_sizes_tie_exactly() {
        // Sets of 3 and 6 (L = 6): 1/3 + 0/6 and 0/3 + 2/6 are the same difference (numerator 2 over K·L = 12);
        // 0/3 − 1/6 is −1 and 2/3 + 6/6 is 10: ranks 2.5, 2.5, 1, 4.
        let x = [vec![1, 0], vec![0, 2], vec![0, 0], vec![2, 6]];
        let y = [vec![0, 0], vec![0, 0], vec![0, 1], vec![0, 0]];
        let r = wilcoxon_counts(&x, &y, &[3, 6], Alternative::Greater, WilcoxonMode::Exact).unwrap();
        assert_eq!(
            r,
            wilcoxon_differences(&[2.0, 2.0, -1.0, 10.0], Alternative::Greater, WilcoxonMode::Exact).unwrap()
        );
        assert_eq!((r.r_plus, r.r_minus), (9.0, 1.0));
        let err = |x: &[Vec<u64>], y: &[Vec<u64>], sizes: &[u64]| {
            wilcoxon_counts(x, y, sizes, Alternative::TwoSided, WilcoxonMode::Auto).unwrap_err()
        };
        assert_eq!(err(&x, &y[..3], &[3, 6]), StatsError::LengthMismatch { left: 4, right: 3 });
        assert_eq!(err(&x, &y, &[3]), StatsError::LengthMismatch { left: 2, right: 1 });
        assert_eq!(err(&x, &y, &[3, 5]), StatsError::CountAboveSize { count: 6, size: 5 });
        assert_eq!(err(&x, &y, &[3, 0]), StatsError::Empty("a set"));
        assert_eq!(err(&x[..1], &x[..1], &[3, 6]), StatsError::AllZeroDifferences);
        // Pairwise-coprime sizes near 2³² make lcm exceed i128.
        let primes = [4_294_967_291, 4_294_967_279, 4_294_967_231, 4_294_967_197];
        let one = [vec![1; 4]];
        assert!(matches!(err(&one, &[vec![0; 4]], &primes), StatsError::Overflow(_)));
    }

    #[test]
    fn errors() {
        let e = |d: &[f64]| wilcoxon_differences(d, Alternative::TwoSided, WilcoxonMode::Auto).unwrap_err();
        assert_eq!(e(&[0.0, 0.0]), StatsError::AllZeroDifferences);
        assert_eq!(
            wilcoxon(&[1.0, 2.0], &[1.0], Alternative::TwoSided),
            Err(StatsError::LengthMismatch { left: 2, right: 1 })
        );
        assert_eq!(e(&[]), StatsError::Empty("d"));
        assert_eq!(e(&[1.0, f64::NAN]), StatsError::NonFinite("d"));
    }
}
