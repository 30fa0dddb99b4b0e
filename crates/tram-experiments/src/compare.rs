//! `tram compare`: methods across runs from long CSVs (mean, 95% CI and n per metric and set), or paired by seed
//! against a baseline method (difference, 95% interval, Wilcoxon p-value).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use polars::prelude::*;

use crate::long_csv;
use crate::significance::{accuracy_count, Counts};

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
    // Examples per (experiment, profile, set, method, seed): an accuracy is k/n of them, compared in counts.
    let mut examples: BTreeMap<(String, String, String, String, u64), f64> = BTreeMap::new();
    for r in long_csv::read_all(paths)? {
        if r.metric == "examples" {
            examples
                .insert((r.experiment.clone(), r.profile.clone(), r.set.clone(), r.method.clone(), r.seed), r.value);
        }
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
            let seeds: Vec<u64> = by_seed.keys().copied().filter(|s| base.contains_key(s)).collect();
            let (a, b): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
            let Ok(d) = tram_stats::paired_difference(&a, &b) else { continue };
            let n_of =
                |method: &str, seed: u64| examples.get(&(e.clone(), pr.clone(), set.clone(), method.to_string(), seed));
            let counts =
                (k == "accuracy").then(|| accuracy_counts(&a, &b, &seeds, |s| n_of(m, s), |s| n_of(baseline, s)));
            let test = match counts.flatten() {
                Some((x, y, n)) => tram_stats::wilcoxon_counts(
                    &x,
                    &y,
                    &n,
                    tram_stats::Alternative::TwoSided,
                    tram_stats::WilcoxonMode::Auto,
                ),
                None => tram_stats::wilcoxon(&a, &b, tram_stats::Alternative::TwoSided),
            };
            let w = match test {
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

/// Paired accuracies `a`, `b` (by `seeds`) as counts k of one test set's n examples, when every run of both
/// methods reports the same n: then equal differences tie as in SciPy on the exact values
/// ([`tram_stats::wilcoxon_counts`]). `None` otherwise (e.g. an average over sets, which has no examples row).
fn accuracy_counts<'a>(
    a: &[f64],
    b: &[f64],
    seeds: &[u64],
    n_a: impl Fn(u64) -> Option<&'a f64>,
    n_b: impl Fn(u64) -> Option<&'a f64>,
) -> Option<Counts> {
    let n = *n_a(*seeds.first()?)?;
    let same = seeds.iter().all(|&s| n_a(s) == Some(&n) && n_b(s) == Some(&n));
    if !(same && n >= 1.0 && n.fract() == 0.0) {
        return None;
    }
    let n = n as u64;
    let count = |acc: f64| accuracy_count(acc, n).map(|k| vec![k]);
    let x = a.iter().map(|&v| count(v)).collect::<Option<Vec<_>>>()?;
    let y = b.iter().map(|&v| count(v)).collect::<Option<Vec<_>>>()?;
    Some((x, y, vec![n]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracies_of_one_set_compare_in_counts_so_equal_differences_tie() {
        // 1/3 − 0/3 twice: as floats the two differences need not be equal; as counts they are 1 and 1.
        let (a, b) = (vec![1.0 / 3.0, 2.0 / 3.0, 1.0], vec![0.0, 1.0 / 3.0, 0.0]);
        let n = 3.0;
        let (x, y, size) = accuracy_counts(&a, &b, &[0, 1, 2], |_| Some(&n), |_| Some(&n)).unwrap();
        assert_eq!((x, y, size), (vec![vec![1], vec![2], vec![3]], vec![vec![0], vec![1], vec![0]], vec![3]));
        // Another set size for one run, or a value that is not k/n: no counts (the float test is used).
        let other = 4.0;
        assert!(accuracy_counts(&a, &b, &[0, 1, 2], |s| Some(if s == 1 { &other } else { &n }), |_| Some(&n)).is_none());
        assert!(accuracy_counts(&[0.5], &[0.0], &[0], |_| Some(&n), |_| Some(&n)).is_none());
    }
}
