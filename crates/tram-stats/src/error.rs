/// Why a statistic could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// An input sample is empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// An input holds NaN or an infinity.
    #[error("{0} holds a NaN or infinite value")]
    NonFinite(&'static str),
    /// Paired inputs of different lengths.
    #[error("paired samples differ in length: {left} vs {right}")]
    LengthMismatch { left: usize, right: usize },
    /// Too few observations for the statistic.
    #[error("{what} needs at least {need} observations, got {got}")]
    TooFew { what: &'static str, need: usize, got: usize },
    /// Every paired difference is zero: the signed-rank statistic is undefined.
    #[error("the Wilcoxon signed-rank test needs at least one non-zero difference")]
    AllZeroDifferences,
    /// A count of correct examples above its set's size.
    #[error("count {count} exceeds its set's size {size}")]
    CountAboveSize { count: u64, size: u64 },
    /// An exact integer computation does not fit its type.
    #[error("{0} overflows")]
    Overflow(&'static str),
    /// An input is constant, so the correlation coefficient is undefined.
    #[error("{0} is constant: the correlation coefficient is undefined")]
    ConstantInput(&'static str),
    /// A p-value outside [0, 1] (or NaN) was given to a correction.
    #[error("p-value {0} is not in [0, 1]")]
    InvalidPValue(f64),
    /// An `alternative` string other than SciPy's three.
    #[error("unknown alternative {0:?}: expected \"two-sided\", \"greater\" or \"less\"")]
    UnknownAlternative(String),
}
