//! The paper's statistics over finished runs: paired differences by seed with their 95% interval (Table 3), the
//! Wilcoxon signed-rank test over seeds (Table 5: "p < 0.01 Wilcoxon test"), the two-sample Kolmogorov–Smirnov
//! test over per-example losses (Table 4: "p < 0.01 Kolmogorov-Smirnov test"), all computed with `tram-stats`.

use anyhow::Result;
use polars::prelude::*;
use tram_core::MethodConfig;
use tram_stats::{
    ks_2samp, ks_detectable_shift, paired_difference, variance_sources, wilcoxon, Alternative, KsMethod,
    VarianceSources,
};
use tram_task::Metric;

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
    /// Two-sided Wilcoxon signed-rank p-value over the paired seeds (1 when every difference is 0).
    pub wilcoxon_p: Option<f64>,
    /// Two-sided two-sample KS test of the per-example values (perplexity tasks: per-block losses), pooled over
    /// the paired seeds: (D, p).
    pub ks: Option<(f64, f64)>,
    /// With `ks`: the smallest shift of `b`'s per-example values that KS detects at [`ALPHA`]
    /// ([`ks_detectable_shift`]); for per-block losses, `exp` of it is the perplexity ratio a uniform change needs.
    pub ks_detectable_shift: Option<f64>,
    /// Whether `a`'s mean is the better one by the metric's direction.
    pub a_better: bool,
    /// Accuracy with at least two pairs and every run's per-example correctness: how much of the paired
    /// difference's variance over seeds the test sets' size explains, and what more seeds or larger sets would
    /// give.
    pub sources: Option<VarianceSources>,
}

impl Comparison {
    /// The test that decides significance: Wilcoxon over seeds when there are at least two pairs, else KS over
    /// examples (the paper's one-seed language-model runs).
    pub fn p(&self) -> Option<f64> {
        if self.pairs >= 2 {
            self.wilcoxon_p
        } else {
            self.ks.map(|k| k.1)
        }
    }

    pub fn test_name(&self) -> &'static str {
        if self.pairs >= 2 {
            "Wilcoxon"
        } else {
            "KS"
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
    let wilcoxon_p = match wilcoxon(&xa, &xb, Alternative::TwoSided) {
        Ok(w) => Some(w.pvalue),
        Err(tram_stats::StatsError::AllZeroDifferences) => Some(1.0),
        Err(_) => None,
    };
    // KS compares distributions of per-example losses; 0/1 correctness is no continuous sample.
    let ks = (metric == Metric::Perplexity)
        .then(|| {
            let pooled = |runs: &mut dyn Iterator<Item = &Summary>| -> Vec<f64> {
                runs.flat_map(|s| {
                    let sets: Vec<String> = match q {
                        Quantity::InDomain => s.in_domain().map(|e| e.key()).into_iter().collect(),
                        Quantity::ZsAvg => s.zero_shot().map(|e| e.key()).collect(),
                    };
                    let by_set = per_example.get(&s.run_id);
                    sets.into_iter().flat_map(move |set| by_set.and_then(|m| m.get(&set)).cloned().unwrap_or_default())
                })
                .collect()
            };
            let ya = pooled(&mut pairs.iter().map(|p| p.0));
            let yb = pooled(&mut pairs.iter().map(|p| p.1));
            let ks = ks_2samp(&ya, &yb, Alternative::TwoSided, KsMethod::Auto).ok()?;
            Some((ks.statistic, ks.pvalue, ks_detectable_shift(&yb, ALPHA).ok().flatten()))
        })
        .flatten();
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
        a_better: metric.better(tram_stats::mean(&xa), tram_stats::mean(&xb)),
        sources,
    })
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
    let test = tested[0].test_name();
    let n = tested.iter().map(|c| c.pairs).min().unwrap_or(0);
    let unit = if test == "KS" { "examples".to_string() } else { format!("{n} seeds") };
    format!("better than {better}, worse than {worse} of {} (p<{ALPHA}, {test}, {unit})", tested.len())
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
        Column::new("better".into(), comparisons.iter().map(|c| c.a_better).collect::<Vec<_>>()),
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
    fn one_seed_perplexity_falls_back_to_ks_over_blocks() {
        let s =
            vec![run("base", 0, Metric::Perplexity, 20.0, 30.0), run("tram-prev", 0, Metric::Perplexity, 19.0, 29.0)];
        let mut pe = PerExample::new();
        pe.entry("base-s0".into()).or_default().insert("a".into(), (0..200).map(|i| 3.0 + 0.01 * i as f64).collect());
        pe.entry("tram-prev-s0".into())
            .or_default()
            .insert("a".into(), (0..200).map(|i| 2.0 + 0.01 * i as f64).collect());
        let c = compare("tram-prev", "base", Quantity::InDomain, &s, &pe, Metric::Perplexity).unwrap();
        assert_eq!(c.pairs, 1);
        assert_eq!(c.test_name(), "KS");
        let (d, p) = c.ks.unwrap();
        assert!((d - 0.5).abs() < 0.01 && p < 1e-10, "shifted by half the range: D ≈ 0.5 ({d}), p {p}");
        assert!(c.a_better && c.significant(), "lower perplexity is better");
        // 200 evenly spaced losses 0.01 apart: KS at 0.01 needs D = k/200 with k the first significant count.
        let shift = c.ks_detectable_shift.unwrap();
        assert!(shift > 0.05 && shift < 0.5, "{shift}");
        assert_eq!(Some(shift), ks_detectable_shift(&pe["base-s0"]["a"], ALPHA).unwrap());
        assert_eq!(format_diff(Metric::Perplexity, &c), "−1.0");
    }
}
