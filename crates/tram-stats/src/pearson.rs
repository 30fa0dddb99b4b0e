//! Pearson correlation, as `scipy.stats.pearsonr`.

use crate::{Alternative, StatsError};

/// Result of [`pearsonr`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pearson {
    /// Correlation coefficient `r`.
    pub r: f64,
    /// p-value for the null hypothesis of independent normal samples.
    pub pvalue: f64,
    /// Number of pairs.
    pub n: usize,
}

/// Pearson correlation coefficient and its p-value, `scipy.stats.pearsonr(x, y, alternative=...)`.
///
/// `r = Σ (xᵢ − x̄)(yᵢ − ȳ) / (‖x − x̄‖ ‖y − ȳ‖)`, clipped to `[−1, 1]`. Under the null hypothesis `r` follows a
/// beta distribution on `(−1, 1)` with `a = b = n/2 − 1`, which is the statement that
/// `t = r √((n − 2)/(1 − r²))` follows Student's t with `n − 2` degrees of freedom; like SciPy, the p-value is
/// taken from the beta form (`statrs`' regularized incomplete beta `I`), which keeps small p-values accurate:
/// two-sided `2 I_{(1−|r|)/2}(a, a)`, greater `I_{(1−r)/2}(a, a)`, less `I_{(1+r)/2}(a, a)`.
/// For `n = 2`, as SciPy, `r` is rounded to ±1 and the p-value is 1.
///
/// # Errors
/// Different lengths, fewer than 2 pairs, a NaN / infinite value, or a constant input (SciPy warns and returns
/// NaN there).
pub fn pearsonr(x: &[f64], y: &[f64], alternative: Alternative) -> Result<Pearson, StatsError> {
    if x.len() != y.len() {
        return Err(StatsError::LengthMismatch { left: x.len(), right: y.len() });
    }
    crate::check_finite("x", x)?;
    crate::check_finite("y", y)?;
    let n = x.len();
    if n < 2 {
        return Err(StatsError::TooFew { what: "pearsonr", need: 2, got: n });
    }
    if x.iter().all(|v| *v == x[0]) {
        return Err(StatsError::ConstantInput("x"));
    }
    if y.iter().all(|v| *v == y[0]) {
        return Err(StatsError::ConstantInput("y"));
    }
    let xm = crate::mean(x);
    let ym = crate::mean(y);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - xm, b - ym);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let r = (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0);
    if n == 2 {
        return Ok(Pearson { r: r.round(), pvalue: 1.0, n });
    }
    let ab = n as f64 / 2.0 - 1.0;
    // I_x(a, a) for x ≤ ½ is the lower tail evaluated directly (no 1 − … cancellation).
    let lower = |x: f64| statrs::function::beta::beta_reg(ab, ab, x.clamp(0.0, 1.0));
    let pvalue = match alternative {
        Alternative::TwoSided => 2.0 * lower(1.0 - (r.abs() + 1.0) / 2.0),
        Alternative::Greater => lower(1.0 - (r + 1.0) / 2.0),
        Alternative::Less => lower((r + 1.0) / 2.0),
    };
    Ok(Pearson { r, pvalue: pvalue.clamp(0.0, 1.0), n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n3_by_hand() {
        // For n = 3, a = b = ½ (arcsine law): two-sided p = 1 − (2/π) asin|r|.
        let r = pearsonr(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0], Alternative::TwoSided).unwrap();
        assert!((r.r - 0.5).abs() < 1e-15);
        let expected = 1.0 - 2.0 / std::f64::consts::PI * 0.5f64.asin();
        assert!((r.pvalue - expected).abs() < 1e-14, "{} vs {expected}", r.pvalue);
        // one-sided halves it when r > 0
        let g = pearsonr(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0], Alternative::Greater).unwrap();
        assert!((g.pvalue - expected / 2.0).abs() < 1e-14);
    }

    #[test]
    fn perfect_and_degenerate() {
        let r = pearsonr(&[1.0, 2.0, 3.0, 4.0], &[-2.0, -4.0, -6.0, -8.0], Alternative::TwoSided).unwrap();
        assert!(r.r + 1.0 <= 4.0 * f64::EPSILON && r.pvalue < 1e-15, "{r:?}");
        let r = pearsonr(&[1.0, 2.0], &[5.0, 3.0], Alternative::Greater).unwrap();
        assert_eq!((r.r, r.pvalue), (-1.0, 1.0));
        assert_eq!(
            pearsonr(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0], Alternative::Less),
            Err(StatsError::ConstantInput("x"))
        );
        assert!(matches!(pearsonr(&[1.0], &[1.0], Alternative::Less), Err(StatsError::TooFew { .. })));
    }
}
