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
type Counts = (Vec<Vec<u64>>, Vec<Vec<u64>>, Vec<u64>);

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
                let k = e.value * *n as f64;
                // The value is k/n in floating point: k is the nearest integer, well within 1e-6 of it.
                (e.key() == *key && e.examples == *n && (k - k.round()).abs() < 1e-6 && k.round() >= 0.0)
                    .then_some(k.round() as u64)
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
mod tests {
    use super::*;
    use tram_stats::WilcoxonMethod;
    use tram_task::Domain;

    fn run(method: &str, seed: u64, metric: Metric, in_domain: f64, zs: f64) -> Summary {
        let evals = vec![
            Summary::eval("a", Domain::InDomain, metric, in_domain),
            Summary::eval("b", Domain::ZeroShot, metric, zs),
        ];
        Summary::fixture(method, seed, metric, evals)
    }

    #[test]
    fn wilcoxon_over_eight_seeds_all_better_is_significant() {
        let mut s = vec![];
        for seed in 0..8 {
            s.push(run("base", seed, Metric::Accuracy, 0.5, 0.40 + 0.01 * seed as f64));
            s.push(run("tram-x", seed, Metric::Accuracy, 0.5, 0.42 + 0.01 * seed as f64 + 0.001 * seed as f64));
        }
        let c = compare("tram-x", "base", Quantity::ZsAvg, &s, &PerExample::new(), Metric::Accuracy).unwrap();
        assert_eq!(c.pairs, 8);
        // Every difference positive: the exact two-sided p is 2/2⁸.
        assert_eq!(c.wilcoxon_p, Some(2.0 / 256.0));
        assert!(c.significant() && c.a_better);
        let same = compare("tram-x", "base", Quantity::InDomain, &s, &PerExample::new(), Metric::Accuracy).unwrap();
        assert_eq!((same.wilcoxon_p, same.significant()), (Some(1.0), false), "identical values: no difference");
        let all = compare_all(
            &["base", "tram-x"].map(|m| toml::from_str(&format!("name = \"{m}\"")).unwrap()),
            &s,
            &PerExample::new(),
            Metric::Accuracy,
        );
        assert_eq!(all.len(), 4);
        assert!(verdict("tram-x", Quantity::ZsAvg, &all).starts_with("better than 1, worse than 0 of 1"));
        assert!(verdict("base", Quantity::ZsAvg, &all).starts_with("better than 0, worse than 1 of 1"));
    }

    #[test]
    fn accuracy_differences_split_into_test_set_and_seed_parts() {
        // Four in-domain examples, three seeds; each run's accuracy is the mean of its correctness.
        let base = [[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]];
        let tram = [[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]];
        let (mut s, mut pe) = (vec![], PerExample::new());
        for seed in 0..3 {
            for (m, c) in [("base", base[seed]), ("tram-x", tram[seed])] {
                s.push(run(m, seed as u64, Metric::Accuracy, c.iter().sum::<f64>() / 4.0, 0.5));
                pe.entry(format!("{m}-s{seed}")).or_default().insert("a".into(), c.to_vec());
            }
        }
        let c = compare("tram-x", "base", Quantity::InDomain, &s, &pe, Metric::Accuracy).unwrap();
        let v = c.sources.expect("per-example values of every run");
        // Per seed, tram − base = (0, 0, 1, 0), (0, 1, 0, 0), (0, 0, 0, 1): d = ¼ each seed, so no variance at all,
        // while each of the last three examples varies (sample variance ⅓, weight ¹⁄₁₆): the per-example part is
        // 3 · ⅓ / 16 and the shared part its negative (the flips cancel).
        assert!((v.mean - 0.25).abs() < 1e-15 && v.total.abs() < 1e-15, "{v:?}");
        assert!((v.per_example - 1.0 / 16.0).abs() < 1e-15 && (v.shared + 1.0 / 16.0).abs() < 1e-15, "{v:?}");
        assert!((c.mean_diff - v.mean).abs() < 1e-15, "the same difference as the summaries'");
        // No per-example values for the zero-shot set: nothing to split.
        let zs = compare("tram-x", "base", Quantity::ZsAvg, &s, &pe, Metric::Accuracy).unwrap();
        assert!(zs.sources.is_none());
        let df = frame(Metric::Accuracy, &[c, zs]).unwrap();
        assert_eq!(df.column("test_set_share").unwrap().f64().unwrap().get(0), Some(1.0));
        assert_eq!(df.column("seeds_for_ci95_1pt").unwrap().u64().unwrap().get(1), None);
    }

    #[test]
    fn accuracy_differences_tie_by_their_counts() {
        // Table 5's in-domain accuracies of ASAM and TRAM-x (k of 334, 8 seeds): Δk = 1, 7, 6, −4, −6, 0, −5, −6.
        let asam = [160, 169, 155, 153, 159, 155, 146, 152];
        let tram = [159, 162, 149, 157, 165, 155, 151, 158];
        let mut s = vec![];
        for seed in 0..8 {
            for (m, k) in [("asam", asam[seed]), ("tram-x", tram[seed])] {
                let mut r = run(m, seed as u64, Metric::Accuracy, f64::from(k) / 334.0, 0.5);
                r.evaluations[0].examples = 334;
                s.push(r);
            }
        }
        let c = compare("asam", "tram-x", Quantity::InDomain, &s, &PerExample::new(), Metric::Accuracy).unwrap();
        // SciPy on the exact differences (one zero, |6| three times): the sign-flip enumeration, 0.953125.
        assert_eq!(c.wilcoxon_p, Some(0.953125));
        let (x, y): (Vec<f64>, Vec<f64>) = (0..8).map(|i| (asam[i] as f64 / 334.0, tram[i] as f64 / 334.0)).unzip();
        assert_eq!(wilcoxon(&x, &y, Alternative::TwoSided).unwrap().pvalue, 0.765625, "k/n − k′/n splits the ties");
        // A value that is no k/n leaves the counts aside: the values themselves are ranked.
        s[0].evaluations[0].value += 1e-3;
        let c = compare("asam", "tram-x", Quantity::InDomain, &s, &PerExample::new(), Metric::Accuracy).unwrap();
        let x0 = s[0].evaluations[0].value;
        let x: Vec<f64> = std::iter::once(x0).chain(x[1..].iter().copied()).collect();
        assert_eq!(c.wilcoxon_p, Some(wilcoxon(&x, &y, Alternative::TwoSided).unwrap().pvalue));
    }

    #[test]
    fn zero_shot_average_ties_over_sets_of_different_sizes() {
        // Two zero-shot sets of 3 and 7 examples: 1 vs 0 correct on the second set is the same ZS-avg difference
        // (1/14) as 5 vs 4 with the sign flipped, which floating point rounds apart: |(0 + 1/7)/2 − 0| ≠
        // |(0 + 4/7)/2 − (0 + 5/7)/2|.
        let counts = [((0, 1), (0, 0)), ((0, 4), (0, 5)), ((1, 0), (0, 0)), ((0, 0), (0, 2)), ((2, 7), (0, 0))];
        let mut s = vec![];
        for (seed, (ka, kb)) in counts.iter().enumerate() {
            for (m, (k1, k2)) in [("base", ka), ("sam", kb)] {
                let mut r = run(m, seed as u64, Metric::Accuracy, 0.5, 0.0);
                let mut second = r.evaluations[1].clone();
                r.evaluations[1].examples = 3;
                r.evaluations[1].value = f64::from(*k1) / 3.0;
                second.set = "c".into();
                second.examples = 7;
                second.value = f64::from(*k2) / 7.0;
                r.evaluations.push(second);
                s.push(r);
            }
        }
        let c = compare("base", "sam", Quantity::ZsAvg, &s, &PerExample::new(), Metric::Accuracy).unwrap();
        // Numerators over 2·lcm(3, 7) = 42: 3, −3, 7, −6, 2·7 + 7·3 = 35; five pairs with a tie: enumeration.
        let want =
            wilcoxon_differences(&[3.0, -3.0, 7.0, -6.0, 35.0], Alternative::TwoSided, WilcoxonMode::Auto).unwrap();
        assert_eq!((want.method, want.r_plus, want.r_minus), (WilcoxonMethod::Permutation, 10.5, 4.5));
        assert_eq!(c.wilcoxon_p, Some(want.pvalue));
        let (x, y): (Vec<f64>, Vec<f64>) =
            (0..5).map(|i| (s[2 * i].zero_shot_mean(), s[2 * i + 1].zero_shot_mean())).unzip();
        let float = wilcoxon(&x, &y, Alternative::TwoSided).unwrap();
        assert_eq!(float.method, WilcoxonMethod::Exact, "the float differences lose the tie");
        assert_ne!(float.pvalue, want.pvalue);
    }

    /// One run per method on an in-domain set `a` of 200 blocks and zero-shot sets `b` and `c` of 100 each.
    fn block_runs(offset: &dyn Fn(usize) -> f64) -> (Vec<Summary>, PerExample) {
        let mut s = vec![];
        let mut pe = PerExample::new();
        for (m, shift) in [("base", 0.0), ("tram-prev", 1.0)] {
            let mut r = run(m, 0, Metric::Perplexity, 20.0 - shift, 30.0 - shift);
            let mut c = r.evaluations[1].clone();
            c.set = "c".into();
            r.evaluations.push(c);
            s.push(r);
            let by_set = pe.entry(format!("{m}-s0")).or_default();
            // Losses spread over 3.0 .. 5.0 by block; tram-prev's differ from base's by offset(block).
            for (set, n, start) in [("a", 200, 0), ("b", 100, 200), ("c", 100, 300)] {
                let loss = |i: usize| 3.0 + 0.01 * ((i * 37) % 200) as f64 - shift * offset(start + i);
                by_set.insert(set.into(), (0..n).map(loss).collect());
            }
        }
        (s, pe)
    }

    #[test]
    fn one_seed_perplexity_pairs_blocks_beside_ks() {
        // Every block 0.01 lower (a tenth of a percent of perplexity, plus a little per block): KS over the
        // pooled losses cannot tell, the paired test over the same blocks can.
        let (s, pe) = block_runs(&|i| 0.01 + 1e-5 * (i % 7) as f64);
        let c = compare("tram-prev", "base", Quantity::InDomain, &s, &pe, Metric::Perplexity).unwrap();
        assert_eq!((c.pairs, c.test_name()), (1, "paired Wilcoxon over blocks"));
        let (d, ks_p) = c.ks.unwrap();
        assert!(d <= 0.02 && ks_p > 0.5, "KS sees nothing: D {d}, p {ks_p}");
        let (blocks, p) = c.blocks_wilcoxon.unwrap();
        // All 200 differences negative and distinct up to the 7 offsets' ties: the normal tail, far below 1e-30.
        assert_eq!(blocks, 200);
        assert!(p < 1e-30, "{p}");
        assert_eq!(c.p(), Some(p));
        assert!(c.a_better && c.significant());
        // The zero-shot average pairs the blocks of both sets: 200 of them.
        let zs = compare("tram-prev", "base", Quantity::ZsAvg, &s, &pe, Metric::Perplexity).unwrap();
        assert_eq!(zs.blocks_wilcoxon.map(|b| b.0), Some(200));
        let back = compare("base", "tram-prev", Quantity::ZsAvg, &s, &pe, Metric::Perplexity).unwrap();
        assert_eq!(back.blocks_wilcoxon.unwrap().1, zs.blocks_wilcoxon.unwrap().1, "symmetric");
        let all = vec![c, zs.clone(), back];
        assert_eq!(
            verdict("tram-prev", Quantity::ZsAvg, &all),
            "better than 1, worse than 0 of 1 (p<0.01, Wilcoxon, 200 blocks)"
        );
        assert_eq!(
            verdict_header(Quantity::ZsAvg, &all),
            "ZS avg vs the other methods (paired Wilcoxon over blocks, p<0.01)"
        );
        let df = frame(Metric::Perplexity, &all).unwrap();
        assert_eq!(df.column("blocks").unwrap().u64().unwrap().get(1), Some(200));
        assert_eq!(df.column("blocks_wilcoxon_p").unwrap().f64().unwrap().get(1), zs.blocks_wilcoxon.map(|b| b.1));
        assert_eq!(df.column("test").unwrap().str().unwrap().get(1), Some("paired Wilcoxon over blocks"));
        assert!(df.column("ks_p").unwrap().f64().unwrap().get(1).unwrap() > 0.5, "KS columns kept");
    }

    #[test]
    fn blocks_pair_by_identity_and_need_every_set() {
        // tram-prev's losses are base's in reverse block order: the same sample (KS D = 0), and the paired
        // differences are antisymmetric about the middle block, so the signed ranks balance exactly.
        let (mut s, mut pe) = block_runs(&|_| 0.0);
        let base_a = pe["base-s0"]["a"].clone();
        pe.get_mut("tram-prev-s0").unwrap().insert("a".into(), base_a.iter().rev().copied().collect());
        let c = compare("tram-prev", "base", Quantity::InDomain, &s, &pe, Metric::Perplexity).unwrap();
        assert_eq!(c.ks.unwrap().0, 0.0);
        assert_eq!(c.blocks_wilcoxon.unwrap().1, 1.0);
        // Identical losses: every difference zero, no evidence either way.
        let zs = compare("tram-prev", "base", Quantity::ZsAvg, &s, &pe, Metric::Perplexity).unwrap();
        assert_eq!(zs.blocks_wilcoxon, Some((200, 1.0)));
        // A zero-shot set without per-block values, or of another size, leaves the test out.
        pe.get_mut("base-s0").unwrap().get_mut("c").unwrap().pop();
        assert_eq!(
            compare("tram-prev", "base", Quantity::ZsAvg, &s, &pe, Metric::Perplexity).unwrap().blocks_wilcoxon,
            None
        );
        pe.get_mut("base-s0").unwrap().remove("c");
        let none = compare("tram-prev", "base", Quantity::ZsAvg, &s, &pe, Metric::Perplexity).unwrap();
        assert_eq!((none.blocks_wilcoxon, none.p()), (None, None));
        // Two seeds: each block's difference is averaged over the seeds before ranking.
        let (s1, pe1) = block_runs(&|i| if i < 100 { 0.02 } else { -0.01 });
        for r in s1 {
            s.push(Summary { run_id: r.run_id.replace("-s0", "-s1"), seed: 1, ..r });
        }
        for (run, sets) in pe1 {
            pe.insert(run.replace("-s0", "-s1"), sets);
        }
        let two = compare("tram-prev", "base", Quantity::InDomain, &s, &pe, Metric::Perplexity).unwrap();
        let d: Vec<f64> = (0..200)
            .map(|i| ((base_a[199 - i] - base_a[i]) + (pe["tram-prev-s1"]["a"][i] - pe["base-s1"]["a"][i])) / 2.0)
            .collect();
        let want = wilcoxon_differences(&d, Alternative::TwoSided, WilcoxonMode::Auto).unwrap().pvalue;
        assert_eq!((two.pairs, two.blocks_wilcoxon), (2, Some((200, want))));
        assert_eq!(two.test_name(), "paired Wilcoxon over seeds");
    }
}
