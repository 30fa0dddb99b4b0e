//! What an evaluation measures, metric-neutral: the tables, plots and regression checks read a metric's
//! direction, unit and formatting from here instead of guessing them from names.

use serde::{Deserialize, Serialize};

/// The metric a task reports (burn's `NumericAttributes`: a metric knows its direction and unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Top-1 accuracy, a fraction in [0, 1] (tables print it in %). Tables 3 and 5.
    Accuracy,
    /// exp of the token-weighted mean negative log-likelihood. Table 4.
    Perplexity,
}

impl Metric {
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Accuracy)
    }

    /// ↑ or ↓, as the paper's column headers print it.
    pub fn arrow(self) -> &'static str {
        if self.higher_is_better() {
            "↑"
        } else {
            "↓"
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Perplexity => "perplexity",
        }
    }

    /// An axis label.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Accuracy => "top-1 accuracy (%)",
            Metric::Perplexity => "perplexity",
        }
    }

    /// The value as tables show it (accuracy in %).
    pub fn shown(self, value: f64) -> f64 {
        match self {
            Metric::Accuracy => 100.0 * value,
            Metric::Perplexity => value,
        }
    }

    /// Decimals the paper prints: 2 for accuracy in % (Table 3), 1 for perplexity (Table 4).
    pub fn decimals(self) -> usize {
        match self {
            Metric::Accuracy => 2,
            Metric::Perplexity => 1,
        }
    }

    /// `value` shown and rounded as the paper prints it.
    pub fn format(self, value: f64) -> String {
        format!("{:.*}", self.decimals(), self.shown(value))
    }

    /// Whether `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        if self.higher_is_better() {
            a > b
        } else {
            a < b
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The paper's two kinds of evaluation set: the training domain, and the zero-shot domains ("ZS" columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Domain {
    InDomain,
    ZeroShot,
}

impl Domain {
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::InDomain => "in-domain",
            Domain::ZeroShot => "zero-shot",
        }
    }
}

/// Whether a set selects the model (validation, training domain only, as in the paper's App. B.1) or reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    Validation,
    #[default]
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

/// One evaluation set after one epoch, e.g. ("brown/news", in-domain, test, perplexity 31.2, loss 3.44, 40 blocks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub set: String,
    pub domain: Domain,
    #[serde(default)]
    pub split: Split,
    pub metric: Metric,
    pub value: f64,
    /// Mean loss per example (cross-entropy) or per token (negative log-likelihood).
    pub loss: f64,
    /// Examples (images, sentence pairs, fixed-length blocks of text) the value is computed from.
    pub examples: usize,
    /// Per example, what the metric is built from: 1/0 correctness for accuracy, the mean token negative
    /// log-likelihood of each block for perplexity. Significance tests read it (paired by example or as samples).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_example: Vec<f64>,
}

impl Evaluation {
    /// The set's name in tables and CSVs: the name for a test set, `"<name> (validation)"` for a validation set
    /// (a task may evaluate both splits of one domain, e.g. English validation for model selection and English
    /// test).
    pub fn key(&self) -> String {
        match self.split {
            Split::Test => self.set.clone(),
            Split::Validation => format!("{} (validation)", self.set),
        }
    }

    /// Accuracy from per-example correctness and losses.
    pub fn accuracy(set: impl Into<String>, domain: Domain, split: Split, correct: Vec<f64>, loss_sum: f64) -> Self {
        let n = correct.len();
        let mean = |s: f64| if n == 0 { f64::NAN } else { s / n as f64 };
        Self {
            set: set.into(),
            domain,
            split,
            metric: Metric::Accuracy,
            value: mean(correct.iter().sum()),
            loss: mean(loss_sum),
            examples: n,
            per_example: correct,
        }
    }

    /// Perplexity from per-block mean negative log-likelihoods and token counts (token-weighted).
    pub fn perplexity(
        set: impl Into<String>,
        domain: Domain,
        split: Split,
        block_nll: Vec<f64>,
        block_tokens: &[usize],
    ) -> Self {
        let tokens: usize = block_tokens.iter().sum();
        let nll_sum: f64 = block_nll.iter().zip(block_tokens).map(|(l, &t)| l * t as f64).sum();
        let loss = if tokens == 0 { f64::NAN } else { nll_sum / tokens as f64 };
        Self {
            set: set.into(),
            domain,
            split,
            metric: Metric::Perplexity,
            value: loss.exp(),
            loss,
            examples: block_nll.len(),
            per_example: block_nll,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_know_direction_and_format() {
        assert!(Metric::Accuracy.higher_is_better() && !Metric::Perplexity.higher_is_better());
        assert_eq!(Metric::Accuracy.format(0.71034), "71.03");
        assert_eq!(Metric::Perplexity.format(23.449), "23.4");
        assert!(Metric::Perplexity.better(20.0, 21.0) && Metric::Accuracy.better(0.6, 0.5));
        assert_eq!((Metric::Accuracy.arrow(), Metric::Perplexity.arrow()), ("↑", "↓"));
    }

    #[test]
    fn evaluations_from_examples() {
        let a = Evaluation::accuracy("s", Domain::InDomain, Split::Test, vec![1.0, 0.0, 1.0, 1.0], 2.0);
        assert_eq!((a.value, a.loss, a.examples), (0.75, 0.5, 4));
        // Two blocks, 3 and 1 tokens, mean NLL 1 and 3: token-weighted NLL (3 + 3) / 4 = 1.5.
        let p = Evaluation::perplexity("s", Domain::ZeroShot, Split::Test, vec![1.0, 3.0], &[3, 1]);
        assert_eq!(p.loss, 1.5);
        assert!((p.value - 1.5f64.exp()).abs() < 1e-12);
        let empty = Evaluation::accuracy("s", Domain::InDomain, Split::Test, vec![], 0.0);
        assert!(empty.value.is_nan(), "no examples is no number");
    }
}
