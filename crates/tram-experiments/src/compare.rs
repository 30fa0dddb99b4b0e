//! `tram compare`: methods across runs from long CSVs (mean, 95% CI and n per metric and set), or paired by seed
//! against a baseline method (difference, 95% interval, Wilcoxon p-value).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use polars::prelude::*;

use crate::long_csv;

/// Mean, 95% CI and n per (experiment, profile, metric, set, method) across runs; with a `baseline` method, each
/// other method's paired difference to it (same seed), its 95% interval and the two-sided Wilcoxon p-value.
pub fn run(paths: &[PathBuf], metric: Option<&str>, baseline: Option<&str>) -> Result<()> {
    if let Some(b) = baseline {
        return paired(paths, metric, b);
    }
    if paths.is_empty() {
        bail!("give one or more tidy CSVs, e.g. results/table3-embedded-long.csv");
    }
    let mut groups: BTreeMap<(String, String, String, String, String), Vec<f64>> = BTreeMap::new();
    for r in long_csv::read_all(paths)? {
        if metric.is_none_or(|m| r.metric.contains(m)) {
            groups.entry((r.experiment, r.profile, r.metric, r.set, r.method)).or_default().push(r.value);
        }
    }
    if groups.is_empty() {
        bail!("no rows{}", metric.map_or(String::new(), |m| format!(" with a metric containing `{m}`")));
    }
    let mut cols: [Vec<String>; 5] = Default::default();
    let (mut n, mut mu, mut ci) = (vec![], vec![], vec![]);
    for ((e, p, k, s, m), v) in groups {
        for (c, x) in cols.iter_mut().zip([e, p, k, s, m]) {
            c.push(x);
        }
        n.push(v.len() as u64);
        mu.push(tram_stats::mean(&v));
        ci.push(tram_stats::ci95_half_width(&v));
    }
    let [e, p, k, s, m] = cols;
    let df = DataFrame::new(vec![
        Column::new("experiment".into(), e),
        Column::new("profile".into(), p),
        Column::new("metric".into(), k),
        Column::new("set".into(), s),
        Column::new("method".into(), m),
        Column::new("n".into(), n),
        Column::new("mean".into(), mu),
        Column::new("ci95".into(), ci),
    ])?;
    println!("{df}");
    Ok(())
}

fn paired(paths: &[PathBuf], metric: Option<&str>, baseline: &str) -> Result<()> {
    type Key = (String, String, String, String);
    let mut values: BTreeMap<Key, BTreeMap<String, BTreeMap<u64, f64>>> = BTreeMap::new();
    for r in long_csv::read_all(paths)? {
        if metric.is_none_or(|m| r.metric.contains(m)) {
            let key = (r.experiment, r.profile, r.metric, r.set);
            values.entry(key).or_default().entry(r.method).or_default().insert(r.seed, r.value);
        }
    }
    let mut cols: [Vec<String>; 5] = Default::default();
    let (mut n, mut diff): (Vec<u64>, Vec<f64>) = (vec![], vec![]);
    let (mut ci, mut p): (Vec<Option<f64>>, Vec<Option<f64>>) = (vec![], vec![]);
    let mut found = false;
    for ((e, pr, k, set), methods) in &values {
        let Some(base) = methods.get(baseline) else { continue };
        found = true;
        for (m, by_seed) in methods.iter().filter(|(m, _)| m.as_str() != baseline) {
            let pairs: Vec<(f64, f64)> = by_seed.iter().filter_map(|(s, v)| base.get(s).map(|b| (*v, *b))).collect();
            if pairs.is_empty() {
                continue;
            }
            let (a, b): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
            let Ok(d) = tram_stats::paired_difference(&a, &b) else { continue };
            let w = match tram_stats::wilcoxon(&a, &b, tram_stats::Alternative::TwoSided) {
                Ok(w) => Some(w.pvalue),
                Err(tram_stats::StatsError::AllZeroDifferences) => Some(1.0),
                Err(_) => None,
            };
            for (c, x) in cols.iter_mut().zip([e, pr, k, set, m]) {
                c.push(x.clone());
            }
            n.push(d.n as u64);
            diff.push(d.mean_diff);
            ci.push(Some(d.ci95).filter(|v| v.is_finite()));
            p.push(w);
        }
    }
    if !found {
        bail!("no rows of method `{baseline}` to compare with (methods are named as in the `method` column, e.g. base, sam-rho0.1)");
    }
    let [e, pr, k, set, m] = cols;
    let df = DataFrame::new(vec![
        Column::new("experiment".into(), e),
        Column::new("profile".into(), pr),
        Column::new("metric".into(), k),
        Column::new("set".into(), set),
        Column::new("method".into(), m),
        Column::new("pairs".into(), n),
        Column::new(format!("mean diff vs {baseline}").into(), diff),
        Column::new("ci95".into(), ci),
        Column::new("wilcoxon_p".into(), p),
    ])?;
    println!("{df}");
    Ok(())
}
