//! Summary statistics and the hypothesis tests used to compare optimizers across seeds in the TRAM paper
//! tables, each matched against the SciPy function named in its documentation.
//!
//! * [`mean`], [`std_dev`], [`median`], [`ci95_half_width`], [`summarize`] — per-method summaries;
//! * [`paired_difference`] — paired (same seed) differences with their 95 % confidence interval;
//! * [`wilcoxon`], [`wilcoxon_differences`], [`wilcoxon_counts`] — `scipy.stats.wilcoxon` (`method` auto, exact
//!   or asymptotic), the last on accuracies given as counts so that equal differences tie exactly;
//! * [`ks_2samp`] — `scipy.stats.ks_2samp`, exact and asymptotic, with [`kstwo_sf`] and [`smirnov_sf`]
//!   (`scipy.stats.kstwo.sf`, `scipy.special.smirnov`) behind it; [`ks_detectable_shift`], the smallest location
//!   shift it detects on a given sample;
//! * [`pearsonr`] — `scipy.stats.pearsonr`;
//! * [`holm`] — Holm's step-down adjustment for many comparisons;
//! * [`variance_sources`] — how much of a paired difference's variance over seeds comes from the test sets' size,
//!   and how many seeds a given 95 % half-width needs.
//!
//! Distributions come from [`statrs`] (Student's t, regularized incomplete beta) and [`libm`] (`erf` / `erfc`
//! for the normal tail). What no maintained crate offers is written here and says so: the exact null
//! distribution of the Wilcoxon signed-rank statistic, the exact two-sample Smirnov distribution, and the
//! finite-n one-sample Kolmogorov distributions.
//! `tests/scipy_parity.rs` checks every function against values SciPy wrote (`reference/scipy_reference.py`).

mod error;
mod holm;
mod kolmogorov;
mod ks;
mod pearson;
mod power;
mod summary;
mod wilcoxon;

pub use error::StatsError;
pub use holm::holm;
pub use kolmogorov::{kstwo_sf, smirnov_sf};
pub use ks::{ks_2samp, ks_detectable_shift, KsMethod, KsResult};
pub use pearson::{pearsonr, Pearson};
pub use power::{variance_sources, VarianceSources};
pub use summary::{
    ci95_half_width, mean, median, paired_difference, std_dev, student_t_quantile, summarize, Paired, Summary,
};
pub use wilcoxon::{wilcoxon, wilcoxon_counts, wilcoxon_differences, Wilcoxon, WilcoxonMethod, WilcoxonMode};

/// The alternative hypothesis of a test, named as SciPy's `alternative=` argument.
///
/// For a paired test on `x - y`, [`Alternative::Greater`] means "`x` tends to be larger than `y`".
/// For [`ks_2samp`], SciPy's convention holds: `Greater` means that the empirical CDF of the first sample lies
/// above that of the second somewhere (the first sample tends to be *smaller*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alternative {
    /// `alternative="two-sided"`.
    TwoSided,
    /// `alternative="greater"`.
    Greater,
    /// `alternative="less"`.
    Less,
}

impl Alternative {
    /// SciPy's spelling: `"two-sided"`, `"greater"` or `"less"`.
    pub fn as_scipy_str(self) -> &'static str {
        match self {
            Alternative::TwoSided => "two-sided",
            Alternative::Greater => "greater",
            Alternative::Less => "less",
        }
    }
}

impl std::str::FromStr for Alternative {
    type Err = StatsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "two-sided" => Ok(Alternative::TwoSided),
            "greater" => Ok(Alternative::Greater),
            "less" => Ok(Alternative::Less),
            other => Err(StatsError::UnknownAlternative(other.to_string())),
        }
    }
}

/// Rejects empty input and NaN / infinite values.
pub(crate) fn check_finite(what: &'static str, values: &[f64]) -> Result<(), StatsError> {
    if values.is_empty() {
        return Err(StatsError::Empty(what));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(StatsError::NonFinite(what));
    }
    Ok(())
}
