//! Holm's step-down correction for a family of tests.

use crate::StatsError;

/// Holm–Bonferroni adjusted p-values, in the order given.
///
/// With the `m` p-values sorted ascending, `p̃₍ᵢ₎ = max_{j ≤ i} min(1, (m − j + 1) p₍ⱼ₎)`; rejecting every test
/// with `p̃ ≤ α` controls the family-wise error rate at `α` under any dependence. This is
/// `statsmodels.stats.multitest.multipletests(p, method="holm")[1]` (SciPy has no Holm correction; the unit
/// tests check it by hand). Ties keep their input order, which does not change the adjusted values.
///
/// # Errors
/// A p-value outside `[0, 1]` or NaN. An empty slice gives an empty vector.
pub fn holm(pvalues: &[f64]) -> Result<Vec<f64>, StatsError> {
    if let Some(&bad) = pvalues.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        return Err(StatsError::InvalidPValue(bad));
    }
    let m = pvalues.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| pvalues[a].total_cmp(&pvalues[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * pvalues[i]).min(1.0));
        adjusted[i] = running;
    }
    Ok(adjusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // sorted 0.01, 0.02, 0.03, 0.04 × (4, 3, 2, 1) = 0.04, 0.06, 0.06, 0.04 → running max 0.04, 0.06, 0.06, 0.06
        let adj = holm(&[0.03, 0.01, 0.04, 0.02]).unwrap();
        let expected = [0.06, 0.04, 0.06, 0.06];
        for (a, e) in adj.iter().zip(expected) {
            assert!((a - e).abs() < 1e-15, "{adj:?}");
        }
        // capped at 1, and a single test is unchanged
        assert_eq!(holm(&[0.5, 0.6]).unwrap(), vec![1.0, 1.0]);
        assert_eq!(holm(&[0.3]).unwrap(), vec![0.3]);
        assert!(holm(&[]).unwrap().is_empty());
        assert!(matches!(holm(&[0.1, f64::NAN]), Err(StatsError::InvalidPValue(p)) if p.is_nan()));
        assert_eq!(holm(&[0.1, 1.5]), Err(StatsError::InvalidPValue(1.5)));
    }
}
