//! The paper's statistics over finished runs: paired differences by seed with their 95% interval (Table 3), the
//! Wilcoxon signed-rank test over seeds (Table 5: "p < 0.01 Wilcoxon test"), the two-sample Kolmogorov–Smirnov
//! test over per-example losses (Table 4: "p < 0.01 Kolmogorov-Smirnov test") and, beside it, the Wilcoxon
//! signed-rank test over the same blocks, paired, all computed with `tram-stats`.

use anyhow::Result;
use polars::prelude::*;
use tram_core::MethodConfig;
use tram_stats::{
    ks_2samp, ks_detectable_shift, paired_difference, variance_sources, wilcoxon, wilcoxon_counts,
    wilcoxon_differences, Alternative, KsMethod, StatsError, VarianceSources, Wilcoxon, WilcoxonMode,
};
use tram_task::{Evaluation, Metric};

use crate::experiment::method_id;
use crate::run_csv::PerExample;
use crate::summary::Summary;

/// The level at which the paper calls a difference significant.
pub const ALPHA: f64 = 0.01;

/// One accuracy point, the precision the power columns plan for.
const ONE_POINT: f64 = 0.01;
/// Beyond this many seeds the power columns say nothing (empty cell).
const MAX_SEEDS: usize = 10_000;

/// What of a run is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Quantity {
    /// The in-domain test value.
    InDomain,
    /// The macro-average over the zero-shot sets (the paper's "ZS Avg.").
    ZsAvg,
}

impl Quantity {
    pub fn as_str(self) -> &'static str {
        match self {
            Quantity::InDomain => "in-domain",
            Quantity::ZsAvg => "zs-avg",
        }
    }

    fn of(self, s: &Summary) -> Option<f64> {
        match self {
            Quantity::InDomain => s.in_domain().map(|e| e.value),
            Quantity::ZsAvg => Some(s.zero_shot_mean()).filter(|v| v.is_finite()),
        }
    }

    /// The evaluations `self` is computed from: the in-domain test set, or the zero-shot sets it averages.
    fn evaluations(self, s: &Summary) -> Vec<&Evaluation> {
        match self {
            Quantity::InDomain => s.in_domain().into_iter().collect(),
            Quantity::ZsAvg => s.zero_shot().collect(),
        }
    }
}

/// Method `a` against method `b` on one quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub quantity: Quantity,
    /// Seeds both methods ran.
    pub pairs: usize,
    /// Mean of `a − b` over the paired seeds, in the metric's own unit (a fraction for accuracy).
    pub mean_diff: f64,
    /// 95% half-width of `mean_diff` (paired t), NaN below two pairs.
    pub ci95: f64,
    /// Two-sided Wilcoxon signed-rank p-value over the paired seeds (1 when every difference is 0); for accuracy
    /// on the differences of the runs' counts, so that equal differences tie ([`wilcoxon_counts`]).
    pub wilcoxon_p: Option<f64>,
    /// Two-sided two-sample KS test of the per-example values (perplexity tasks: per-block losses), pooled over
    /// the paired seeds: (D, p).
    pub ks: Option<(f64, f64)>,
    /// With `ks`: the smallest shift of `b`'s per-example values that KS detects at [`ALPHA`]
    /// ([`ks_detectable_shift`]); for per-block losses, `exp` of it is the perplexity ratio a uniform change needs.
    pub ks_detectable_shift: Option<f64>,
    /// Perplexity tasks: the two-sided Wilcoxon signed-rank test over blocks, paired by block (set and index), of
    /// the per-block loss differences `a − b` averaged over the paired seeds: (blocks, p).
    pub blocks_wilcoxon: Option<(usize, f64)>,
    /// Whether `a`'s mean is the better one by the metric's direction.
    pub a_better: bool,
    /// Accuracy with at least two pairs and every run's per-example correctness: how much of the paired
    /// difference's variance over seeds the test sets' size explains, and what more seeds or larger sets would
    /// give.
    pub sources: Option<VarianceSources>,
}

impl Comparison {
    /// The test that decides significance: Wilcoxon over seeds when there are at least two pairs, else Wilcoxon
    /// over blocks (the paper's one-seed language-model runs): paired, where KS over pooled blocks ignores that
    /// every method is evaluated on the same blocks.
    pub fn p(&self) -> Option<f64> {
        if self.pairs >= 2 {
            self.wilcoxon_p
        } else {
            self.blocks_wilcoxon.map(|b| b.1)
        }
    }

    pub fn test_name(&self) -> &'static str {
        if self.pairs >= 2 {
            "paired Wilcoxon over seeds"
        } else {
            "paired Wilcoxon over blocks"
        }
    }

    pub fn significant(&self) -> bool {
        self.p().is_some_and(|p| p < ALPHA)
    }
}

/// Every ordered pair of method entries, on the in-domain value and the zero-shot average.
pub fn compare_all(
    methods: &[MethodConfig],
    summaries: &[Summary],
    per_example: &PerExample,
    metric: Metric,
) -> Vec<Comparison> {
    let ids: Vec<String> = methods.iter().map(method_id).collect();
    let mut out = vec![];
    for a in &ids {
        for b in ids.iter().filter(|b| *b != a) {
            for q in [Quantity::InDomain, Quantity::ZsAvg] {
                if let Some(c) = compare(a, b, q, summaries, per_example, metric) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// `a` against `b` on `q`, paired by seed; `None` when they share no seed with a value.
pub fn compare(
    a: &str,
    b: &str,
    q: Quantity,
    summaries: &[Summary],
    per_example: &PerExample,
    metric: Metric,
) -> Option<Comparison> {
    let run = |m: &str, seed: u64| summaries.iter().find(|s| s.method_id == m && s.seed == seed);
    let mut pairs = vec![];
    for sa in summaries.iter().filter(|s| s.method_id == a) {
        if let Some(sb) = run(b, sa.seed) {
            if let (Some(x), Some(y)) = (q.of(sa), q.of(sb)) {
                pairs.push((sa, sb, x, y));
            }
        }
    }
    if pairs.is_empty() {
        return None;
    }
    let (xa, xb): (Vec<f64>, Vec<f64>) = pairs.iter().map(|p| (p.2, p.3)).unzip();
    let paired = paired_difference(&xa, &xb).ok()?;
    let runs: Vec<(&Summary, &Summary)> = pairs.iter().map(|p| (p.0, p.1)).collect();
    let p_value = |w: Result<Wilcoxon, StatsError>| match w {
        Ok(w) => Some(w.pvalue),
        Err(StatsError::AllZeroDifferences) => Some(1.0),
        Err(_) => None,
    };
    let over_seeds = match (metric == Metric::Accuracy).then(|| counts(&runs, q)).flatten() {
        Some((x, y, sizes)) => wilcoxon_counts(&x, &y, &sizes, Alternative::TwoSided, WilcoxonMode::Auto),
        None => wilcoxon(&xa, &xb, Alternative::TwoSided),
    };
    let wilcoxon_p = p_value(over_seeds);
    // KS compares distributions of per-example losses; 0/1 correctness is no continuous sample.
    let ks = (metric == Metric::Perplexity)
        .then(|| {
            let pooled = |runs: &mut dyn Iterator<Item = &Summary>| -> Vec<f64> {
                runs.flat_map(|s| {
                    let by_set = per_example.get(&s.run_id);
                    q.evaluations(s)
                        .into_iter()
                        .flat_map(move |e| by_set.and_then(|m| m.get(&e.key())).cloned().unwrap_or_default())
                })
                .collect()
            };
            let ya = pooled(&mut pairs.iter().map(|p| p.0));
            let yb = pooled(&mut pairs.iter().map(|p| p.1));
            let ks = ks_2samp(&ya, &yb, Alternative::TwoSided, KsMethod::Auto).ok()?;
            Some((ks.statistic, ks.pvalue, ks_detectable_shift(&yb, ALPHA).ok().flatten()))
        })
        .flatten();
    let blocks_wilcoxon = (metric == Metric::Perplexity)
        .then(|| block_differences(&runs, q, per_example))
        .flatten()
        .and_then(|d| Some((d.len(), p_value(wilcoxon_differences(&d, Alternative::TwoSided, WilcoxonMode::Auto))?)));
    let sources = if metric == Metric::Accuracy && pairs.len() >= 2 {
        pairs
            .iter()
            .map(|(sa, sb, ..)| weighted_examples(sa, sb, q, per_example))
            .collect::<Option<Vec<_>>>()
            .filter(|rows| rows.iter().all(|r| r.1 == rows[0].1))
            .and_then(|rows| {
                let x: Vec<Vec<f64>> = rows.iter().map(|r| r.0.clone()).collect();
                variance_sources(&x, &rows[0].1).ok()
            })
    } else {
        None
    };
    Some(Comparison {
        a: a.to_string(),
        b: b.to_string(),
        quantity: q,
        pairs: paired.n,
        mean_diff: paired.mean_diff,
        ci95: paired.ci95,
        wilcoxon_p,
        ks: ks.map(|k| (k.0, k.1)),
        ks_detectable_shift: ks.and_then(|k| k.2),
        blocks_wilcoxon,
        a_better: metric.better(tram_stats::mean(&xa), tram_stats::mean(&xb)),
        sources,
    })
}

/// `a`'s counts per pair and set, `b`'s, and the sets' sizes.
pub(crate) type Counts = (Vec<Vec<u64>>, Vec<Vec<u64>>, Vec<u64>);

/// The correct examples `k` behind an accuracy `value` of `n` examples: the value is k/n in floating point, so k is
/// the nearest integer, well within 1e-6 of `value · n`. `None` when it is not, or when k is outside `0..=n`.
pub(crate) fn accuracy_count(value: f64, n: u64) -> Option<u64> {
    let k = value * n as f64;
    let r = k.round();
    ((k - r).abs() < 1e-6 && (0.0..=n as f64).contains(&r)).then_some(r as u64)
}

/// Accuracy as counts: per pair, the correct examples of `a`'s and of `b`'s run on each of `q`'s sets, and the
/// sets' sizes; `None` unless every run's value on every set is `k/n` of its set's `n` examples and the sets
/// (names and sizes) are the same in every run.
fn counts(runs: &[(&Summary, &Summary)], q: Quantity) -> Option<Counts> {
    let first = q.evaluations(runs.first()?.0);
    let sets: Vec<(String, usize)> = first.iter().map(|e| (e.key(), e.examples)).collect();
    let of = |s: &Summary| -> Option<Vec<u64>> {
        let evals = q.evaluations(s);
        (evals.len() == sets.len()).then_some(())?;
        evals
            .iter()
            .zip(&sets)
            .map(|(e, (key, n))| {
                (e.key() == *key && e.examples == *n).then(|| accuracy_count(e.value, *n as u64)).flatten()
            })
            .collect()
    };
    let (mut x, mut y) = (vec![], vec![]);
    for (a, b) in runs {
        x.push(of(a)?);
        y.push(of(b)?);
    }
    Some((x, y, sets.iter().map(|s| s.1 as u64).collect()))
}

/// Per block of `q`'s sets (the same set and index in every run), `a`'s loss minus `b`'s averaged over the
/// paired runs; `None` when a run lacks a set's per-block values or the runs' sets differ in size.
fn block_differences(runs: &[(&Summary, &Summary)], q: Quantity, per_example: &PerExample) -> Option<Vec<f64>> {
    let mut sum: Vec<f64> = vec![];
    for (a, b) in runs {
        let mut d = vec![];
        for e in q.evaluations(a) {
            let va = per_example.get(&a.run_id)?.get(&e.key())?;
            let vb = per_example.get(&b.run_id)?.get(&e.key())?;
            (va.len() == vb.len()).then_some(())?;
            d.extend(va.iter().zip(vb).map(|(x, y)| x - y));
        }
        if sum.is_empty() {
            sum = d;
        } else if sum.len() == d.len() {
            sum.iter_mut().zip(&d).for_each(|(s, v)| *s += v);
        } else {
            return None;
        }
    }
    (!sum.is_empty()).then(|| sum.iter().map(|s| s / runs.len() as f64).collect())
}

/// Per example of `q`'s sets, `a`'s value minus `b`'s, and the weight that makes their weighted sum `q`'s
/// difference (`1/n` for the in-domain set, `1/(K n_k)` for the macro-average over `K` zero-shot sets); `None`
/// when a run has no per-example values for a set or the two runs' sets differ in size.
fn weighted_examples(a: &Summary, b: &Summary, q: Quantity, per_example: &PerExample) -> Option<(Vec<f64>, Vec<f64>)> {
    let sets: Vec<String> = match q {
        Quantity::InDomain => vec![a.in_domain()?.key()],
        Quantity::ZsAvg => a.zero_shot().map(|e| e.key()).collect(),
    };
    let (mut x, mut w) = (vec![], vec![]);
    for set in &sets {
        let va = per_example.get(&a.run_id)?.get(set)?;
        let vb = per_example.get(&b.run_id)?.get(set)?;
        if va.len() != vb.len() || va.is_empty() {
            return None;
        }
        let weight = 1.0 / (sets.len() * va.len()) as f64;
        x.extend(va.iter().zip(vb).map(|(p, q)| p - q));
        w.extend(std::iter::repeat_n(weight, va.len()));
    }
    (!x.is_empty()).then_some((x, w))
}

/// `+1.23 [−0.50, +2.96]`: a paired difference and its 95% interval, shown as the metric prints.
pub fn format_diff(metric: Metric, c: &Comparison) -> String {
    let f = |v: f64| {
        let s = metric.format(v.abs());
        if v < 0.0 {
            format!("−{s}")
        } else {
            format!("+{s}")
        }
    };
    if c.ci95.is_nan() {
        f(c.mean_diff)
    } else {
        format!("{} [{}, {}]", f(c.mean_diff), f(c.mean_diff - c.ci95), f(c.mean_diff + c.ci95))
    }
}

/// One line per method: against how many other methods it is significantly better or worse on `q`.
pub fn verdict(method: &str, q: Quantity, comparisons: &[Comparison]) -> String {
    let mine: Vec<&Comparison> = comparisons.iter().filter(|c| c.a == method && c.quantity == q).collect();
    let tested: Vec<&&Comparison> = mine.iter().filter(|c| c.p().is_some()).collect();
    if tested.is_empty() {
        return "—".into();
    }
    let better = tested.iter().filter(|c| c.significant() && c.a_better).count();
    let worse = tested.iter().filter(|c| c.significant() && !c.a_better).count();
    let unit = if tested[0].pairs >= 2 {
        format!("{} seeds", tested.iter().map(|c| c.pairs).min().unwrap_or(0))
    } else {
        format!("{} blocks", tested.iter().filter_map(|c| c.blocks_wilcoxon.map(|b| b.0)).min().unwrap_or(0))
    };
    format!("better than {better}, worse than {worse} of {} (p<{ALPHA}, Wilcoxon, {unit})", tested.len())
}

/// The header of the column of [`verdict`]s on `q`, naming the test it counts.
pub fn verdict_header(q: Quantity, comparisons: &[Comparison]) -> String {
    let what = if q == Quantity::InDomain { "in-domain" } else { "ZS avg" };
    let mut tests: Vec<&str> =
        comparisons.iter().filter(|c| c.quantity == q && c.p().is_some()).map(|c| c.test_name()).collect();
    tests.sort_unstable();
    tests.dedup();
    if tests.is_empty() {
        format!("{what} vs the other methods")
    } else {
        format!("{what} vs the other methods ({}, p<{ALPHA})", tests.join(" / "))
    }
}

/// The comparisons as a table: one row per (a, b, quantity).
pub fn frame(metric: Metric, comparisons: &[Comparison]) -> Result<DataFrame> {
    let s = |f: &dyn Fn(&Comparison) -> String| comparisons.iter().map(f).collect::<Vec<String>>();
    let opt = |f: &dyn Fn(&Comparison) -> Option<f64>| comparisons.iter().map(f).collect::<Vec<Option<f64>>>();
    let seeds = |scale: f64| -> Vec<Option<u64>> {
        comparisons
            .iter()
            .map(|c| c.sources.and_then(|v| v.seeds_for(ONE_POINT, scale, MAX_SEEDS)).map(|s| s as u64))
            .collect()
    };
    Ok(DataFrame::new(vec![
        Column::new("method".into(), s(&|c| c.a.clone())),
        Column::new("versus".into(), s(&|c| c.b.clone())),
        Column::new("quantity".into(), s(&|c| c.quantity.as_str().into())),
        Column::new("metric".into(), s(&|_| metric.as_str().into())),
        Column::new("pairs".into(), comparisons.iter().map(|c| c.pairs as u64).collect::<Vec<_>>()),
        Column::new("mean_diff".into(), comparisons.iter().map(|c| c.mean_diff).collect::<Vec<_>>()),
        Column::new("ci95".into(), opt(&|c| Some(c.ci95).filter(|v| v.is_finite()))),
        Column::new("wilcoxon_p".into(), opt(&|c| c.wilcoxon_p)),
        Column::new("ks_statistic".into(), opt(&|c| c.ks.map(|k| k.0))),
        Column::new("ks_p".into(), opt(&|c| c.ks.map(|k| k.1))),
        Column::new("ks_detectable_shift".into(), opt(&|c| c.ks_detectable_shift)),
        Column::new(
            "blocks".into(),
            comparisons.iter().map(|c| c.blocks_wilcoxon.map(|b| b.0 as u64)).collect::<Vec<_>>(),
        ),
        Column::new("blocks_wilcoxon_p".into(), opt(&|c| c.blocks_wilcoxon.map(|b| b.1))),
        Column::new("better".into(), comparisons.iter().map(|c| c.a_better).collect::<Vec<_>>()),
        // Which p-value `significant` compares with ALPHA: wilcoxon_p (seeds) or blocks_wilcoxon_p (one seed).
        Column::new("test".into(), comparisons.iter().map(|c| c.p().map(|_| c.test_name())).collect::<Vec<_>>()),
        Column::new("significant".into(), comparisons.iter().map(|c| c.significant()).collect::<Vec<_>>()),
        // Accuracy: the paired difference's standard deviation over seeds, the share of its variance that the
        // test sets' size explains, the seeds a 95% half-width of one point (0.01) needs with these sets and with
        // sets 4× as large, and the difference these seeds detect (paired t, level 0.05, power 80%).
        Column::new("sd_over_seeds".into(), opt(&|c| c.sources.map(|v| v.total.sqrt()))),
        Column::new("test_set_share".into(), opt(&|c| c.sources.map(|v| v.per_example_share()))),
        Column::new("seeds_for_ci95_1pt".into(), seeds(1.0)),
        Column::new("seeds_for_ci95_1pt_sets_x4".into(), seeds(4.0)),
        Column::new("detectable_80pct".into(), opt(&|c| c.sources.map(|v| v.detectable(c.pairs, 1.0)))),
    ])?)
}

#[cfg(test)]
mod tests;
