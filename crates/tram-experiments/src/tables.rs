//! The paper's tables, built with Polars from what the runs measured: Table 2 (the variants: passes, step time,
//! memory, outcome), Tables 3–5 (transfer: each method in-domain and on every zero-shot set), and their companions
//! Table 13 (standard deviation over seeds) and Table 9 (correlations across methods). Nothing here knows a task:
//! every number comes from a run's [`Evaluation`]s and its [`Metric`], every label from [`crate::paper`].

use std::collections::BTreeMap;

use anyhow::Result;
use polars::prelude::*;
use tram_core::{BaseConfig, MethodConfig, MethodName};
use tram_task::{Evaluation, Metric, Timing};

use crate::atomic;
use crate::experiment::method_id;
use crate::paper::{self, label, PaperTable};
use crate::significance::{self, Comparison, Quantity};
use crate::summary::Summary;

/// The runs of one method entry, in the order they were given.
fn runs_of<'a>(summaries: &'a [Summary], method: &MethodConfig) -> Vec<&'a Summary> {
    crate::summary::runs_of(summaries, &method_id(method))
}

/// The runs of one method entry that report evaluations, and how many of its runs diverged instead.
fn reported<'a>(summaries: &'a [Summary], method: &MethodConfig) -> (Vec<&'a Summary>, usize) {
    let (diverged, reported): (Vec<&Summary>, Vec<&Summary>) =
        runs_of(summaries, method).into_iter().partition(|s| s.diverged.is_some());
    (reported, diverged.len())
}

/// The run whose evaluations name the table's sets: the first that did not diverge.
fn first_reported(summaries: &[Summary]) -> Option<&Summary> {
    summaries.iter().find(|s| s.diverged.is_none()).or(summaries.first())
}

/// `n`, or `n (+k diverged)`: the seeds a method's cells are over.
fn seeds_cell(reported: usize, diverged: usize) -> String {
    if diverged == 0 {
        reported.to_string()
    } else {
        format!("{reported} (+{diverged} diverged)")
    }
}

/// Table 2: the methods with their trust-region measurement, ε rule and domain, passes as measured beside the
/// paper's, step time relative to the base optimizer and to SAM, the memory they hold, and the outcome.
pub fn variants(
    methods: &[MethodConfig],
    timings: &[Timing],
    summaries: &[Summary],
    base: &BaseConfig,
    paper: &[PaperTable],
) -> Result<DataFrame> {
    let base_ms = timings.iter().find(|t| t.method.name == MethodName::Base).map(|t| t.median_ms);
    let sam_ms = timings.iter().find(|t| t.method.name == MethodName::Sam).map(|t| t.median_ms);
    let mut text: BTreeMap<&str, Vec<Option<String>>> = BTreeMap::new();
    let mut nums: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    let mut labels = vec![];
    let metric = summaries.first().map_or(Metric::Accuracy, |s| s.metric);
    for (m, t) in methods.iter().zip(timings) {
        let tram_core::method::Description { measure, rule, domain } = m.build()?.describe();
        let lab = label(m, base);
        let stated = m.name.paper_passes();
        let (runs, diverged) = reported(summaries, m);
        let mean = |f: &dyn Fn(&Summary) -> f64| {
            (!runs.is_empty()).then(|| tram_stats::mean(&runs.iter().map(|s| f(s)).collect::<Vec<_>>()))
        };
        text.entry("method").or_default().push(Some(method_id(m)));
        text.entry("trust_region_measurement").or_default().push(Some(measure));
        text.entry("eps").or_default().push(Some(rule));
        text.entry("domain").or_default().push(Some(domain));
        text.entry("passes_measured")
            .or_default()
            .push(Some(format!("{} →, {} ←", t.forward_passes, t.backward_passes)));
        text.entry("passes_paper").or_default().push(stated.map(|(f, b)| format!("{f} →, {b} ←")));
        text.entry("passes_match")
            .or_default()
            .push(stated.map(|s| (s == (t.forward_passes, t.backward_passes)).to_string()));
        let paper_row = paper.iter().find_map(|p| p.rows.get(&lab).map(|r| (p, r)));
        text.entry("paper_row")
            .or_default()
            .push(paper_row.map(|(p, r)| {
                p.columns.iter().zip(r).map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; ")
            }));
        nums.entry("step_ms_median").or_default().push(Some(t.median_ms));
        nums.entry("ratio_to_base").or_default().push(base_ms.map(|b| t.median_ms / b));
        nums.entry("ratio_to_sam").or_default().push(sam_ms.map(|s| t.median_ms / s));
        nums.entry("optimizer_share").or_default().push(Some(t.optimizer_share));
        nums.entry("extra_memory_mb").or_default().push(Some(t.extra_memory_bytes as f64 / 1e6));
        nums.entry("extra_memory_x_params").or_default().push(Some(t.extra_memory_bytes as f64 / t.param_bytes as f64));
        nums.entry("in_domain").or_default().push(mean(&|s| s.in_domain().map_or(f64::NAN, |e| e.value)));
        nums.entry("zs_mean").or_default().push(mean(&|s| s.zero_shot_mean()));
        labels.push(if runs.is_empty() && diverged > 0 { format!("{lab} (diverged)") } else { lab });
    }
    let mut columns = vec![Column::new("variant".into(), labels)];
    for k in ["method", "trust_region_measurement", "eps", "domain", "passes_measured", "passes_paper", "passes_match"]
    {
        columns.push(Column::new(k.into(), text.remove(k).unwrap_or_default()));
    }
    for k in [
        "step_ms_median",
        "ratio_to_base",
        "ratio_to_sam",
        "optimizer_share",
        "extra_memory_mb",
        "extra_memory_x_params",
    ] {
        columns.push(Column::new(k.into(), nums.remove(k).unwrap_or_default()));
    }
    columns.push(Column::new(format!("in_domain_{metric}").into(), nums.remove("in_domain").unwrap_or_default()));
    columns.push(Column::new(format!("zs_mean_{metric}").into(), nums.remove("zs_mean").unwrap_or_default()));
    columns.push(Column::new("paper_table2".into(), text.remove("paper_row").unwrap_or_default()));
    Ok(DataFrame::new(columns)?)
}

/// `mean±ci` of `values` shown as the metric prints (accuracy in %), the interval over seeds (Student's t).
pub fn mean_ci(metric: Metric, values: &[f64]) -> String {
    let m = metric.format(tram_stats::mean(values));
    let ci = tram_stats::ci95_half_width(values);
    if ci.is_nan() {
        m
    } else {
        format!("{m}±{}", metric.format(ci))
    }
}

/// The test evaluation of `set` among `evals`.
fn test_of<'a>(evals: &'a [Evaluation], set: &str) -> Option<&'a Evaluation> {
    evals.iter().find(|e| e.set == set && e.split == tram_task::Split::Test)
}

/// Tables 3, 4 and 5: each method's metric on the in-domain set and on every zero-shot set, mean ± 95% CI over
/// seeds, and the zero-shot average (↑ or ↓ by the metric); the pre-trained model's own row first where the task
/// has one; the paper's numbers beside.
pub fn transfer(
    methods: &[MethodConfig],
    summaries: &[Summary],
    pretrained: Option<&[Evaluation]>,
    base: &BaseConfig,
    paper: &[PaperTable],
    comparisons: &[Comparison],
) -> Result<DataFrame> {
    let Some(first) = first_reported(summaries) else { anyhow::bail!("no finished run to tabulate") };
    let metric = first.metric;
    let in_set = first.in_domain().map(|e| e.set.clone());
    let zs_sets: Vec<String> = first.zero_shot().map(|e| e.set.clone()).collect();
    let mut header = vec!["method".to_string(), "seeds".to_string()];
    header.extend(in_set.iter().map(|s| format!("{s} (in-domain)")));
    header.extend(zs_sets.iter().cloned());
    if !zs_sets.is_empty() {
        header.push(format!("ZS avg {}", metric.arrow()));
    }
    // Paired differences against the base optimizer and SAM (same seed: same initial head, same data order).
    let references: Vec<(String, String)> = methods
        .iter()
        .filter(|m| matches!(m.name, MethodName::Base | MethodName::Sam) && method_id(m) == m.name.as_str())
        .map(|m| (method_id(m), label(m, base)))
        .collect();
    let quantities: Vec<Quantity> = [Quantity::InDomain, Quantity::ZsAvg]
        .into_iter()
        .filter(|q| *q == Quantity::InDomain || !zs_sets.is_empty())
        .collect();
    let seeds = summaries.iter().map(|s| s.seed).collect::<std::collections::BTreeSet<_>>().len();
    let paired = seeds >= 2;
    if paired {
        for (_, lab) in &references {
            for q in &quantities {
                header.push(format!(
                    "Δ {} vs {lab} (95% CI)",
                    if *q == Quantity::InDomain { "in-domain" } else { "ZS avg" }
                ));
            }
        }
    }
    let significance_column = !comparisons.is_empty() && !zs_sets.is_empty();
    if significance_column {
        header.push(significance::verdict_header(Quantity::ZsAvg, comparisons));
    }
    for p in paper {
        header.extend(p.headers());
    }
    let mut rows: Vec<Vec<String>> = vec![];
    if let Some(evals) = pretrained {
        let value = |set: &str| test_of(evals, set).map_or_else(String::new, |e| metric.format(e.value));
        let mut row = vec!["pre-trained (no fine-tuning)".to_string(), String::new()];
        row.extend(in_set.iter().map(|s| value(s)));
        row.extend(zs_sets.iter().map(|s| value(s)));
        if !zs_sets.is_empty() {
            let zs: Vec<f64> = zs_sets.iter().filter_map(|s| test_of(evals, s).map(|e| e.value)).collect();
            row.push(metric.format(tram_stats::mean(&zs)));
        }
        if paired {
            row.extend(std::iter::repeat_n(String::new(), references.len() * quantities.len()));
        }
        if significance_column {
            row.push(String::new());
        }
        row.extend(
            paper
                .iter()
                .flat_map(|p| p.pretrained_row().cloned().unwrap_or_else(|| vec![String::new(); p.columns.len()])),
        );
        rows.push(row);
    }
    for m in methods {
        let (runs, diverged) = reported(summaries, m);
        let lab = label(m, base);
        let of_set = |set: &str| -> Vec<f64> { runs.iter().filter_map(|s| s.test(set).map(|e| e.value)).collect() };
        // A method whose every run diverged has no number to show.
        let cell = |values: Vec<f64>| {
            if values.is_empty() && diverged > 0 {
                "diverged".to_string()
            } else {
                mean_ci(metric, &values)
            }
        };
        let mut row = vec![lab.clone(), seeds_cell(runs.len(), diverged)];
        row.extend(in_set.iter().map(|s| cell(of_set(s))));
        row.extend(zs_sets.iter().map(|s| cell(of_set(s))));
        if !zs_sets.is_empty() {
            row.push(cell(runs.iter().map(|s| s.zero_shot_mean()).collect()));
        }
        let id = method_id(m);
        if paired {
            for (reference, _) in &references {
                for q in &quantities {
                    let c = comparisons.iter().find(|c| c.a == id && &c.b == reference && c.quantity == *q);
                    row.push(c.map_or_else(String::new, |c| significance::format_diff(metric, c)));
                }
            }
        }
        if significance_column {
            row.push(significance::verdict(&id, Quantity::ZsAvg, comparisons));
        }
        row.extend(paper::cells(paper, &lab));
        rows.push(row);
    }
    text_frame(&header, &rows)
}

/// A table of text cells: one column per header, `rows` in order.
pub fn text_frame(header: &[String], rows: &[Vec<String>]) -> Result<DataFrame> {
    let columns = header
        .iter()
        .enumerate()
        .map(|(j, h)| Column::new(h.as_str().into(), rows.iter().map(|r| r[j].clone()).collect::<Vec<_>>()))
        .collect();
    Ok(DataFrame::new(columns)?)
}

/// Table 13's companion to a transfer table: the standard deviation over seeds of each method's value on every
/// set, as the metric is shown (accuracy in points).
pub fn std_over_seeds(methods: &[MethodConfig], summaries: &[Summary], base: &BaseConfig) -> Result<DataFrame> {
    let Some(first) = first_reported(summaries) else { anyhow::bail!("no finished run to tabulate") };
    let metric = first.metric;
    let sets: Vec<String> =
        first.evaluations.iter().filter(|e| e.split == tram_task::Split::Test).map(|e| e.set.clone()).collect();
    let mut columns = vec![
        Column::new("method".into(), methods.iter().map(|m| label(m, base)).collect::<Vec<_>>()),
        Column::new("seeds".into(), methods.iter().map(|m| reported(summaries, m).0.len() as u64).collect::<Vec<_>>()),
    ];
    for set in &sets {
        let v: Vec<Option<f64>> = methods
            .iter()
            .map(|m| {
                let vals: Vec<f64> = reported(summaries, m)
                    .0
                    .iter()
                    .filter_map(|s| s.test(set).map(|e| metric.shown(e.value)))
                    .collect();
                Some(tram_stats::std_dev(&vals)).filter(|v| v.is_finite())
            })
            .collect();
        columns.push(Column::new(set.as_str().into(), v));
    }
    Ok(DataFrame::new(columns)?)
}

/// Table 9: for each zero-shot set, the Pearson correlation across methods between the in-domain value and that
/// set's value (each method's mean over its seeds), with its two-sided p-value: do the domains that move with the
/// training domain under different optimizers also improve with it? A set on which every method scores the same
/// has no correlation (empty cells).
pub fn correlations(methods: &[MethodConfig], summaries: &[Summary]) -> Result<DataFrame> {
    let Some(first) = first_reported(summaries) else { anyhow::bail!("no finished run to correlate") };
    let Some(in_set) = first.in_domain().map(|e| e.set.clone()) else {
        anyhow::bail!("the runs have no in-domain evaluation to correlate with")
    };
    let zs_sets: Vec<String> = first.zero_shot().map(|e| e.set.clone()).collect();
    let mean_of = |m: &MethodConfig, set: &str| -> Option<f64> {
        let v: Vec<f64> = runs_of(summaries, m).iter().filter_map(|s| s.test(set).map(|e| e.value)).collect();
        (!v.is_empty()).then(|| tram_stats::mean(&v))
    };
    let (mut set, mut r, mut p, mut n) = (vec![], vec![], vec![], vec![]);
    for z in &zs_sets {
        let pairs: Vec<(f64, f64)> =
            methods.iter().filter_map(|m| Some((mean_of(m, &in_set)?, mean_of(m, z)?))).collect();
        let (x, y): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
        let c = tram_stats::pearsonr(&x, &y, tram_stats::Alternative::TwoSided).ok();
        set.push(z.clone());
        r.push(c.map(|c| atomic::round_sig(c.r)));
        p.push(c.map(|c| atomic::round_sig(c.pvalue)));
        n.push(pairs.len() as u64);
    }
    Ok(DataFrame::new(vec![
        Column::new("set".into(), set),
        Column::new("correlated_with".into(), vec![in_set; zs_sets.len()]),
        Column::new("methods".into(), n),
        Column::new("pearson_r".into(), r),
        Column::new("p_value".into(), p),
    ])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tram_task::Domain;

    fn eval(set: &str, domain: Domain, metric: Metric, value: f64) -> Evaluation {
        Summary::eval(set, domain, metric, value)
    }

    #[test]
    fn table9_correlates_each_zero_shot_set_with_the_in_domain_value_across_methods() {
        let p = Metric::Perplexity;
        let runs = [
            summary("base", 0, p, [30.0, 40.0, 50.0]),
            summary("sam", 0, p, [29.0, 39.0, 50.0]),
            summary("tram-prev", 0, p, [27.0, 37.5, 50.0]),
            summary("tram-prev", 1, p, [27.0, 36.5, 50.0]),
        ];
        let df = correlations(&methods(&["base", "sam", "tram-prev"]), &runs).unwrap();
        let r = df.column("pearson_r").unwrap().f64().unwrap();
        // fiction: (30, 40), (29, 39), (27, 37) — the tram-prev seeds averaged — lie on a line.
        assert!((r.get(0).unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(df.column("methods").unwrap().u64().unwrap().get(0), Some(3));
        assert_eq!(r.get(1), None, "humor is the same for every method: no correlation");
        assert_eq!(df.column("set").unwrap().str().unwrap().get(1), Some("humor"));
    }

    fn summary(method: &str, seed: u64, metric: Metric, values: [f64; 3]) -> Summary {
        let evals = vec![
            eval("news", Domain::InDomain, metric, values[0]),
            eval("fiction", Domain::ZeroShot, metric, values[1]),
            eval("humor", Domain::ZeroShot, metric, values[2]),
        ];
        Summary::fixture(method, seed, metric, evals)
    }

    fn methods(names: &[&str]) -> Vec<MethodConfig> {
        names.iter().map(|n| toml::from_str(&format!("name = \"{n}\"")).unwrap()).collect()
    }

    fn cell(df: &DataFrame, col: &str, row: usize) -> String {
        df.column(col).unwrap().get(row).unwrap().get_str().unwrap_or_default().to_string()
    }

    #[test]
    fn transfer_table_for_perplexity() {
        let s = vec![
            summary("base", 0, Metric::Perplexity, [20.0, 30.0, 40.0]),
            summary("base", 1, Metric::Perplexity, [22.0, 32.0, 42.0]),
            summary("tram-prev", 0, Metric::Perplexity, [18.0, 28.0, 39.0]),
        ];
        let pre = vec![
            eval("news", Domain::InDomain, Metric::Perplexity, 25.0),
            eval("fiction", Domain::ZeroShot, Metric::Perplexity, 31.0),
            eval("humor", Domain::ZeroShot, Metric::Perplexity, 41.0),
        ];
        let m = methods(&["base", "tram-prev"]);
        let c = significance::compare_all(&m, &s, &Default::default(), Metric::Perplexity);
        let df = transfer(&m, &s, Some(&pre), &BaseConfig::adam(), &[], &c).unwrap();
        let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            [
                "method",
                "seeds",
                "news (in-domain)",
                "fiction",
                "humor",
                "ZS avg ↓",
                "Δ in-domain vs Adam (95% CI)",
                "Δ ZS avg vs Adam (95% CI)",
                "ZS avg vs the other methods"
            ]
        );
        assert_eq!(cell(&df, "Δ in-domain vs Adam (95% CI)", 2), "−2.0", "one pair: seed 0 only, no interval");
        assert_eq!(cell(&df, "Δ in-domain vs Adam (95% CI)", 1), "", "no difference of a method with itself");
        assert_eq!(cell(&df, "method", 0), "pre-trained (no fine-tuning)");
        assert_eq!(cell(&df, "ZS avg ↓", 0), "36.0");
        assert_eq!(cell(&df, "method", 1), "Adam");
        assert_eq!(cell(&df, "seeds", 1), "2");
        // Two seeds: mean 21, sd √2, t(1) = 12.706 → ±12.706·√2/√2 = 12.7.
        assert_eq!(cell(&df, "news (in-domain)", 1), "21.0±12.7");
        assert_eq!(cell(&df, "ZS avg ↓", 2), "33.5", "one seed: no interval");
        assert_eq!(cell(&df, "method", 2), "TRAM-θ_{t−1}");
    }

    #[test]
    fn transfer_table_for_accuracy_with_the_paper_beside() {
        let s = vec![summary("sam", 0, Metric::Accuracy, [0.7, 0.6, 0.5])];
        let paper = PaperTable {
            name: "table5".into(),
            columns: vec!["En".into(), "ZS Avg ↑".into()],
            rows: [("SAM".to_string(), vec!["84.8".to_string(), "73.7".to_string()])].into_iter().collect(),
        };
        let df = transfer(&methods(&["sam"]), &s, None, &BaseConfig::adam(), &[paper], &[]).unwrap();
        assert_eq!(cell(&df, "news (in-domain)", 0), "70.00");
        assert_eq!(cell(&df, "ZS avg ↑", 0), "55.00");
        assert_eq!(cell(&df, "paper table5: ZS Avg ↑", 0), "73.7");
    }
}
