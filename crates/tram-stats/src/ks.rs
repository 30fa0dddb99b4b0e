//! Two-sample Kolmogorov–Smirnov test, as `scipy.stats.ks_2samp`.

use crate::kolmogorov::kstwo_sf;
use crate::{Alternative, StatsError};

/// Largest sample size for which `method="auto"` attempts the exact distribution (SciPy's `MAX_AUTO_N`).
const MAX_AUTO_N: usize = 10_000;

/// How the p-value of [`ks_2samp`] is obtained (SciPy's `method=`); [`KsResult::method`] says which one ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KsMethod {
    /// `"auto"`: [`KsMethod::Exact`] when both samples have at most 10 000 values, else [`KsMethod::Asymp`].
    Auto,
    /// `"exact"`: the exact null distribution of the two-sample statistic (lattice-path counting); falls back to
    /// [`KsMethod::Asymp`] when it cannot be computed in double precision (SciPy warns there), which in practice
    /// is the one-sided test with unequal sizes and `n₁ + n₂` above about 1030.
    Exact,
    /// `"asymp"`: two-sided, `P(D_N ≥ d)` of the one-sample distribution ([`kstwo_sf`]) with
    /// `N = round(n₁n₂/(n₁+n₂))`; one-sided, Hodges' (1958) approximation (his eq. 5.3)
    /// `exp(−2z² − 2z(m + 2n)/(3√(mn(m+n))))`, `z = d √(mn/(m+n))`, `m ≥ n`.
    /// As in SciPy, the two-sided p-value is NaN for `n₁ = n₂ = 1` (`N` rounds to 0).
    Asymp,
}

/// Result of [`ks_2samp`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsResult {
    /// `D` (two-sided), `D⁺ = max(F₁ − F₂)` (greater) or `D⁻ = max(F₂ − F₁)` (less), on the pooled sample.
    pub statistic: f64,
    /// The p-value.
    pub pvalue: f64,
    /// The method that produced the p-value ([`KsMethod::Exact`] or [`KsMethod::Asymp`]).
    pub method: KsMethod,
    /// +1 if the statistic is `max(F₁ − F₂)`, −1 if it is `max(F₂ − F₁)` (SciPy's `statistic_sign`).
    pub statistic_sign: i8,
}

/// Two-sample Kolmogorov–Smirnov test of "`x` and `y` come from the same continuous distribution",
/// `scipy.stats.ks_2samp(x, y, alternative=..., method=...)`.
///
/// The statistic compares the empirical CDFs `F₁`, `F₂` at every pooled value (ties handled as SciPy does, by
/// evaluating right-continuous CDFs at the data points). P-values (see [`KsMethod`]):
/// * exact, two-sided: the proportion of monotone lattice paths from `(0, 0)` to `(n₁, n₂)` that leave the band
///   `|x/n₁ − y/n₂| < d` — for `n₁ = n₂` by the alternating binomial series (Horner form), otherwise by Hodges'
///   "inside" recursion in Viehmann's (2021) form that carries `1 − p` and stays in `[0, 1]`;
/// * exact, one-sided: `C(2n, n − h)/C(2n, n)` as a product for `n₁ = n₂`, otherwise Hodges' count of paths that
///   cross the line (binomial coefficients in double precision; a non-finite count falls back to asymp);
/// * asymptotic: see [`KsMethod::Asymp`].
///
/// `method=Auto` therefore uses exact p-values for samples up to 10 000 values each — the small (n ≤ 50) and the
/// few-thousand cases alike, apart from the one-sided test with unequal sizes above `n₁ + n₂ ≈ 1030` — and the
/// asymptotic ones above. These exact algorithms and [`kstwo_sf`] are written here: `statrs` offers no
/// Kolmogorov–Smirnov distribution.
///
/// # Errors
/// An empty sample or a NaN / infinite value.
pub fn ks_2samp(x: &[f64], y: &[f64], alternative: Alternative, method: KsMethod) -> Result<KsResult, StatsError> {
    crate::check_finite("x", x)?;
    crate::check_finite("y", y)?;
    let mut d1 = x.to_vec();
    let mut d2 = y.to_vec();
    d1.sort_by(f64::total_cmp);
    d2.sort_by(f64::total_cmp);
    let (n1, n2) = (d1.len(), d2.len());

    // F₁ − F₂ at every pooled value, with right-continuous CDFs (numpy.searchsorted(side="right")).
    let (mut max_s, mut min_diff) = (f64::NEG_INFINITY, f64::INFINITY);
    for v in d1.iter().chain(d2.iter()) {
        let c1 = d1.partition_point(|a| a <= v);
        let c2 = d2.partition_point(|a| a <= v);
        let diff = c1 as f64 / n1 as f64 - c2 as f64 / n2 as f64;
        max_s = max_s.max(diff);
        min_diff = min_diff.min(diff);
    }
    let min_s = (-min_diff).clamp(0.0, 1.0);
    let (mut d, sign) = if alternative == Alternative::Less || (alternative == Alternative::TwoSided && min_s > max_s) {
        (min_s, -1)
    } else {
        (max_s, 1)
    };

    let g = gcd(n1 as u64, n2 as u64);
    let (n1g, n2g) = (n1 as u64 / g, n2 as u64 / g);
    let mut mode = match method {
        KsMethod::Auto if n1.max(n2) <= MAX_AUTO_N => KsMethod::Exact,
        KsMethod::Auto => KsMethod::Asymp,
        // lcm(n₁, n₂) must fit the 32-bit lattice SciPy counts on.
        KsMethod::Exact if n1g as f64 >= f64::from(i32::MAX) / n2g as f64 => KsMethod::Asymp,
        other => other,
    };

    let mut prob = f64::NAN;
    if mode == KsMethod::Exact {
        let (ok, d_exact, p) = attempt_exact(n1 as u64, n2 as u64, g, d, alternative);
        d = d_exact;
        if ok {
            prob = p;
        } else {
            mode = KsMethod::Asymp;
        }
    }
    if mode == KsMethod::Asymp {
        let (m, n) = if n1 >= n2 { (n1 as f64, n2 as f64) } else { (n2 as f64, n1 as f64) };
        let en = m * n / (m + n);
        prob = match alternative {
            Alternative::TwoSided => kstwo_sf(en.round_ties_even() as u64, d),
            _ => {
                let z = en.sqrt() * d;
                let expt = -2.0 * (z * z) - 2.0 * z * (m + 2.0 * n) / (m * n * (m + n)).sqrt() / 3.0;
                expt.exp()
            }
        };
    }
    Ok(KsResult { statistic: d, pvalue: prob.clamp(0.0, 1.0), method: mode, statistic_sign: sign })
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Exact p-value on the lattice of step `1/lcm(n₁, n₂)`: `(success, d snapped to the lattice, p)`.
fn attempt_exact(n1: u64, n2: u64, g: u64, d: f64, alternative: Alternative) -> (bool, f64, f64) {
    let lcm = (n1 / g) * n2;
    let h = (d * lcm as f64).round_ties_even() as u64;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return (true, d, 1.0);
    }
    let prob = match alternative {
        Alternative::TwoSided if n1 == n2 => prob_outside_square(n1, h),
        Alternative::TwoSided => outer_prob_inside(n1, n2, g, h),
        _ if n1 == n2 => {
            // C(2n, n − h) / C(2n, n) = Π_{j<h} (n − j)/(n + j + 1)
            (0..h).map(|j| (n1 as f64 - j as f64) / ((n1 + j) as f64 + 1.0)).product()
        }
        _ => {
            // Every binomial coefficient in the count is at most C(n₁ + n₂, n₁): if that one overflows (SciPy
            // then gives up, as for any overflow on the way), skip the O(n²) count.
            let total = binom((n1 + n2) as f64, n1 as f64);
            if !total.is_finite() {
                return (false, d, f64::NAN);
            }
            let num_paths = count_paths_outside(n1, n2, g, h);
            if !num_paths.is_finite() || num_paths > total {
                return (false, d, f64::NAN);
            }
            num_paths / total
        }
    };
    if !(0.0..=1.0).contains(&prob) {
        return (false, d, prob);
    }
    (true, d, prob)
}

/// `P(D_{n,n} ≥ h/n)`, the proportion of paths to `(n, n)` that touch `x − y = ±h`:
/// `2 Σ_{k≥1} (−1)^{k+1} C(2n, n − kh)/C(2n, n)`, evaluated as `2A₁(1 − A₂(1 − A₃(…)))` with
/// `A_k = C(2n, n − kh)/C(2n, n − (k−1)h)` to avoid cancellation.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as i64, h as i64);
    let mut p = 0.0;
    let mut k = n / h;
    while k >= 0 {
        let mut p1 = 1.0;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// Proportion of lattice paths from `(0, 0)` to `(m, n)` that do *not* stay strictly inside
/// `|x/m − y/n| < h/lcm(m, n)` (two-sided exact p-value, `m ≠ n`).
///
/// Hodges' "inside" recursion `A(x, y) = A(x − 1, y) + A(x, y − 1)` over the band, column by column on a sliding
/// window, rewritten as Viehmann (2021, arXiv:2102.08037) does so that each entry is `1 −` the proportion of
/// paths to that point that stayed inside, a number in `[0, 1]`: no overflow and no final subtraction.
fn outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (m, n, g, h) = (m as i64, n as i64, g as i64, h as i64);
    let mg = m / g;
    let ng = n / g;
    let ceil_div = |a: i64, b: i64| (a + b - 1).div_euclid(b);
    let mut minj = 0i64;
    let mut maxj = ceil_div(h, mg).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len_a];
    for e in a.iter_mut().take(maxj as usize) {
        *e = 0.0;
    }
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((ng * i - h).div_euclid(mg) + 1).max(0).min(n);
        maxj = ceil_div(ng * i + h, mg).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let fi = i as f64;
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            val = (a[(jj + minj - lastminj) as usize] * fi + val * j as f64) / (i + j) as f64;
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let lo = (maxj - minj) as usize;
            let hi = (lo + (lastlen - curlen) as usize).min(len_a);
            a[lo..hi].iter_mut().for_each(|e| *e = 1.0);
        }
    }
    a[(maxj - minj - 1) as usize]
}

/// Number of lattice paths from `(0, 0)` to `(m, n)` that reach `m y ≤ n x − h g` somewhere (one-sided exact
/// count, Hodges 1958 after Drion / Gnedenko / Korolyuk): the first-passage counts `B_j` at the crossing points
/// `(x_j, j)` by inclusion–exclusion, each times the number of ways on to `(m, n)`. In double precision; may
/// overflow (the caller checks).
fn count_paths_outside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (m, n, g, h) = (m as i64, n as i64, g as i64, h as i64);
    let mg = m / g;
    let ng = n / g;
    let lxj = n + (mg - h).div_euclid(mg);
    if lxj <= 0 {
        return binom((m + n) as f64, n as f64);
    }
    let xj: Vec<i64> = (0..lxj).map(|j| (h + mg * j + ng - 1).div_euclid(ng)).collect();
    let mut b = vec![0.0f64; lxj as usize];
    b[0] = 1.0;
    for j in 1..lxj as usize {
        let mut bj = binom((xj[j] + j as i64) as f64, j as f64);
        for i in 0..j {
            let c = binom((xj[j] - xj[i] + (j - i) as i64) as f64, (j - i) as f64);
            bj -= c * b[i];
        }
        b[j] = bj;
    }
    let mut num_paths = 0.0;
    for (j, &bj) in b.iter().enumerate() {
        let c = binom(((m - xj[j]) + (n - j as i64)) as f64, (n - j as i64) as f64);
        num_paths += bj * c;
    }
    num_paths
}

/// Binomial coefficient `C(n, k)` for integer-valued `0 ≤ k`, in double precision: the product
/// `Π_{i=1}^{k} (n − k + i)/i` over the smaller of `k`, `n − k` (each partial product is itself a binomial
/// coefficient, so it overflows only if the result does). 0 for `k > n`.
fn binom(n: f64, k: f64) -> f64 {
    if k < 0.0 || k > n {
        return 0.0;
    }
    let k = k.min(n - k);
    let mut c = 1.0;
    let mut i = 1.0;
    while i <= k {
        c = c * (n - k + i) / i;
        i += 1.0;
    }
    c
}

/// The smallest location shift `δ ≥ 0` that the two-sided two-sample KS test ([`ks_2samp`], `method="auto"`)
/// detects at level `alpha` on samples like `x`: the infimum of the `δ` for which `ks_2samp(x, x + δ)` has a
/// p-value below `alpha` (`D` only grows with `δ`, so bisection finds it, to 1e-12 of `x`'s range). What a one-seed
/// comparison of per-block losses can resolve: a shift smaller than this is never significant, whatever the
/// samples' other differences. `None` when even `x` against a copy beyond its range (`D = 1`) is not significant.
///
/// # Errors
/// An empty sample, a NaN / infinite value, or `alpha` outside `(0, 1)`.
pub fn ks_detectable_shift(x: &[f64], alpha: f64) -> Result<Option<f64>, StatsError> {
    crate::check_finite("x", x)?;
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(StatsError::InvalidPValue(alpha));
    }
    let (lo, hi) = x.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    let range = (hi - lo).max(f64::MIN_POSITIVE);
    let p = |delta: f64| -> Result<f64, StatsError> {
        let y: Vec<f64> = x.iter().map(|v| v + delta).collect();
        Ok(ks_2samp(x, &y, Alternative::TwoSided, KsMethod::Auto)?.pvalue)
    };
    let (mut below, mut above) = (0.0, range * (1.0 + 1e-9));
    if p(above)? >= alpha {
        return Ok(None);
    }
    while above - below > 1e-12 * range {
        let mid = 0.5 * (below + above);
        if p(mid)? < alpha {
            above = mid;
        } else {
            below = mid;
        }
    }
    Ok(Some(above))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectable_shift_of_an_even_grid() {
        // x = 0, 1, …, 99 against x + δ: D = ⌈δ⌉/100, so the smallest detected shift is k − 1 (approached from
        // above), k the smallest integer shift whose D = k/100 is significant.
        let x: Vec<f64> = (0..100).map(f64::from).collect();
        let p = |k: f64| {
            ks_2samp(&x, &x.iter().map(|v| v + k).collect::<Vec<_>>(), Alternative::TwoSided, KsMethod::Auto)
                .unwrap()
                .pvalue
        };
        let k = (1..100).map(f64::from).find(|&k| p(k) < 0.01).unwrap();
        assert!(p(k - 1.0) >= 0.01);
        let d = ks_detectable_shift(&x, 0.01).unwrap().unwrap();
        assert!(d > k - 1.0 && d - (k - 1.0) < 1e-9, "{d} vs {k}");
        // Two values cannot reach p < 0.01 even fully separated (exact p = 1/3).
        assert_eq!(ks_detectable_shift(&[0.0, 1.0], 0.01).unwrap(), None);
        assert!(ks_detectable_shift(&x, 1.5).is_err());
    }

    /// Proportion of monotone lattice paths from (0, 0) to (m, n) that at some point satisfy `crosses(x, y)`,
    /// counted exactly in integers (u128, so m + n ≤ 120).
    fn brute_force(m: usize, n: usize, crosses: impl Fn(i64, i64) -> bool) -> f64 {
        // a[x][y] = number of paths to (x, y) that have not crossed yet
        let mut a = vec![vec![0u128; n + 1]; m + 1];
        for x in 0..=m {
            for y in 0..=n {
                if crosses(x as i64, y as i64) {
                    continue;
                }
                a[x][y] = if x == 0 && y == 0 {
                    1
                } else {
                    (if x > 0 { a[x - 1][y] } else { 0 }) + (if y > 0 { a[x][y - 1] } else { 0 })
                };
            }
        }
        let total = (1..=n as u128).fold(1u128, |c, i| c * (m as u128 + i) / i);
        (total - a[m][n]) as f64 / total as f64
    }

    #[test]
    fn exact_p_values_match_lattice_path_counting() {
        for &(m, n) in &[(5usize, 5usize), (8, 8), (6, 9), (10, 12), (7, 13), (10, 20), (12, 18), (30, 45)] {
            let g = gcd(m as u64, n as u64);
            let lcm = (m as u64 / g * n as u64) as i64;
            let (mg, ng) = ((m as u64 / g) as i64, (n as u64 / g) as i64);
            for h in 1..=lcm {
                // |x/m − y/n| ≥ h/lcm  ⇔  |n x − m y| / g ≥ h
                let two = brute_force(m, n, |x, y| (ng * x - mg * y).abs() >= h);
                let got = if m == n {
                    prob_outside_square(m as u64, h as u64)
                } else {
                    outer_prob_inside(m as u64, n as u64, g, h as u64)
                };
                assert!((got - two).abs() <= 1e-11 * two, "two-sided m={m} n={n} h={h}: {got} vs {two}");
                let one = brute_force(m, n, |x, y| ng * x - mg * y >= h);
                let got = if m == n {
                    (0..h as u64).map(|j| (m as f64 - j as f64) / ((m as u64 + j) as f64 + 1.0)).product()
                } else {
                    count_paths_outside(m as u64, n as u64, g, h as u64) / binom((m + n) as f64, m as f64)
                };
                assert!((got - one).abs() <= 1e-11 * one, "one-sided m={m} n={n} h={h}: {got} vs {one}");
            }
        }
    }

    #[test]
    fn statistic_by_hand() {
        // x = {1, 2, 3}, y = {2.5, 4}: F₁ − F₂ at 1, 2, 2.5, 3, 4 = 1/3, 2/3, 1/6, 1/2, 0 → D⁺ = 2/3, D⁻ = 0.
        let r = ks_2samp(&[3.0, 1.0, 2.0], &[4.0, 2.5], Alternative::TwoSided, KsMethod::Auto).unwrap();
        assert!((r.statistic - 2.0 / 3.0).abs() < 1e-15 && r.statistic_sign == 1 && r.method == KsMethod::Exact);
        // p = share of the C(5, 2) = 10 interleavings whose path reaches |2x − 3y| ≥ 4 (D ≥ 2/3).
        let expected = brute_force(3, 2, |x, y| (2 * x - 3 * y).abs() >= 4);
        assert!((r.pvalue - expected).abs() < 1e-15, "{} vs {expected}", r.pvalue);
        let less = ks_2samp(&[3.0, 1.0, 2.0], &[4.0, 2.5], Alternative::Less, KsMethod::Auto).unwrap();
        assert_eq!((less.statistic, less.pvalue, less.statistic_sign), (0.0, 1.0, -1));
        // identical samples: D = 0, p = 1
        let same = ks_2samp(&[1.0, 2.0], &[1.0, 2.0], Alternative::TwoSided, KsMethod::Exact).unwrap();
        assert_eq!((same.statistic, same.pvalue), (0.0, 1.0));
    }

    #[test]
    fn auto_switches_to_asymp_above_ten_thousand_and_for_large_one_sided() {
        let x: Vec<f64> = (0..10_001).map(|i| f64::from(i) * 0.5).collect();
        let y: Vec<f64> = (0..50).map(f64::from).collect();
        let r = ks_2samp(&x, &y, Alternative::TwoSided, KsMethod::Auto).unwrap();
        assert_eq!(r.method, KsMethod::Asymp);
        let x: Vec<f64> = (0..600).map(|i| f64::from(i) * 0.37).collect();
        let y: Vec<f64> = (0..500).map(|i| f64::from(i) * 0.41).collect();
        assert_eq!(ks_2samp(&x, &y, Alternative::Greater, KsMethod::Auto).unwrap().method, KsMethod::Asymp);
        assert_eq!(ks_2samp(&x, &y, Alternative::TwoSided, KsMethod::Auto).unwrap().method, KsMethod::Exact);
    }

    #[test]
    fn errors() {
        assert_eq!(ks_2samp(&[], &[1.0], Alternative::TwoSided, KsMethod::Auto), Err(StatsError::Empty("x")));
        assert_eq!(
            ks_2samp(&[1.0], &[f64::INFINITY], Alternative::TwoSided, KsMethod::Auto),
            Err(StatsError::NonFinite("y"))
        );
    }
}
